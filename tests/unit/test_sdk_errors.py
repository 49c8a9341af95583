"""Exception classes and codes (reference §1.7) and the status -> exception table (§1.8)."""

from __future__ import annotations

import inspect

import pytest

import durakv.exceptions as exc
from durakv._backend import KVRequest, Op
from durakv._errors import KVStatus, kv_exception, management_exception

CODES = {
    "RequestCanceledException": 2,
    "InvalidArgumentException": 3,
    "ServiceUnavailableException": 4,
    "InternalServerFailureException": 5,
    "AuthenticationException": 6,
    "TemporaryFailException": 7,
    "ParsingFailedException": 8,
    "CasMismatchException": 9,
    "BucketNotFoundException": 10,
    "CollectionNotFoundException": 11,
    "UnsupportedOperationException": 12,
    "AmbiguousTimeoutException": 13,
    "UnAmbiguousTimeoutException": 14,
    "FeatureUnavailableException": 15,
    "ScopeNotFoundException": 16,
    "RateLimitedException": 21,
    "QuotaLimitedException": 22,
    "DocumentNotFoundException": 101,
    "DocumentUnretrievableException": 102,
    "DocumentLockedException": 103,
    "ValueTooLargeException": 104,
    "DocumentExistsException": 105,
    "DurabilityInvalidLevelException": 107,
    "DurabilityImpossibleException": 108,
    "DurabilitySyncWriteAmbiguousException": 109,
    "DurabilitySyncWriteInProgressException": 110,
    "PathNotFoundException": 113,
    "PathMismatchException": 114,
    "PathInvalidException": 115,
    "PathTooBigException": 116,
    "PathTooDeepException": 117,
    "ValueTooDeepException": 118,
    "InvalidValueException": 119,
    "DocumentNotJsonException": 120,
    "NumberTooBigException": 121,
    "DeltaInvalidException": 122,
    "PathExistsException": 123,
    "DocumentNotLockedException": 131,
    "MutationTokenOutdatedException": 133,
    "RangeScanCompletedException": 134,
}


@pytest.mark.parametrize("name, code", sorted(CODES.items()))
def test_exception_class_has_couchbase_error_code(name, code):
    cls = getattr(exc, name)
    assert issubclass(cls, exc.CouchbaseException)
    assert cls().error_code == code


def test_every_exception_class_derives_from_root():
    classes = [c for _, c in inspect.getmembers(exc, inspect.isclass) if issubclass(c, Exception)]
    assert len(classes) > 50
    assert all(issubclass(c, exc.CouchbaseException) for c in classes)


def test_timeouts_are_not_timeout_exception_subclasses():
    assert not issubclass(exc.AmbiguousTimeoutException, exc.TimeoutException)
    assert not issubclass(exc.UnAmbiguousTimeoutException, exc.TimeoutException)


def test_aliases():
    assert exc.CASMismatchException is exc.CasMismatchException
    assert exc.DurakvException is exc.CouchbaseException


def test_bucket_does_not_exist_is_also_bucket_not_found():
    assert issubclass(exc.BucketDoesNotExistException, exc.BucketNotFoundException)


def test_exception_fields():
    inner = ValueError("x")
    context = exc.KeyValueErrorContext(key="k", bucket_name="b", retry_attempts=2, retry_reasons={"r"})
    error = exc.DocumentNotFoundException("gone", context=context, inner_cause=inner, error_code=77)
    assert error.message == "gone"
    assert error.error_code == 77
    assert error.error_context is context
    assert error.context is context
    assert error.inner_cause is inner
    assert context.key == "k"
    assert context.retry_attempts == 2
    assert context.retry_reasons == {"r"}


def test_exception_without_context_has_empty_context():
    assert isinstance(exc.CouchbaseException().error_context, exc.ErrorContext)


def test_kv_status_matches_engine_status_table():
    from durakv.engine.errors import Status

    assert {s.name: int(s) for s in Status} == {s.name: int(s) for s in KVStatus}


def _request(op: Op) -> KVRequest:
    return KVRequest(op, "bkt", "scp", "col", b"the-key")


S = KVStatus
MUTATIONS = [Op.UPSERT, Op.REPLACE, Op.REMOVE, Op.APPEND, Op.PREPEND, Op.INCREMENT, Op.TOUCH]

TABLE = [
    (S.KEY_ENOENT, Op.GET, exc.DocumentNotFoundException),
    (S.KEY_ENOENT, Op.REPLACE, exc.DocumentNotFoundException),
    (S.KEY_ENOENT, Op.GET_ANY_REPLICA, exc.DocumentUnretrievableException),
    (S.KEY_ENOENT, Op.GET_ALL_REPLICAS, exc.DocumentNotFoundException),
    (S.KEY_EEXISTS, Op.INSERT, exc.DocumentExistsException),
    *[(S.KEY_EEXISTS, op, exc.CasMismatchException) for op in MUTATIONS],
    (S.E2BIG, Op.UPSERT, exc.ValueTooLargeException),
    (S.EINVAL, Op.GET, exc.InvalidArgumentException),
    (S.NOT_STORED, Op.INSERT, exc.DocumentExistsException),
    (S.NOT_STORED, Op.APPEND, exc.DocumentNotFoundException),
    (S.NOT_STORED, Op.PREPEND, exc.DocumentNotFoundException),
    (S.DELTA_BADVAL, Op.INCREMENT, exc.DeltaInvalidException),
    (S.LOCKED, Op.UNLOCK, exc.CasMismatchException),
    (S.LOCKED, Op.GET_AND_LOCK, exc.DocumentLockedException),
    (S.NOT_LOCKED, Op.UNLOCK, exc.DocumentNotLockedException),
    (S.TMPFAIL, Op.UPSERT, exc.TemporaryFailException),
    (S.ENOMEM, Op.UPSERT, exc.TemporaryFailException),
    (S.EBUSY, Op.GET, exc.TemporaryFailException),
    (S.UNKNOWN_COLLECTION, Op.GET, exc.CollectionNotFoundException),
    (S.UNKNOWN_SCOPE, Op.GET, exc.ScopeNotFoundException),
    (S.DURABILITY_INVALID_LEVEL, Op.UPSERT, exc.DurabilityInvalidLevelException),
    (S.DURABILITY_IMPOSSIBLE, Op.UPSERT, exc.DurabilityImpossibleException),
    (S.SYNC_WRITE_IN_PROGRESS, Op.UPSERT, exc.DurabilitySyncWriteInProgressException),
    (S.SYNC_WRITE_AMBIGUOUS, Op.UPSERT, exc.DurabilitySyncWriteAmbiguousException),
    (S.AUTH_ERROR, Op.GET, exc.AuthenticationException),
    (S.EACCESS, Op.GET, exc.AuthenticationException),
    (S.NOT_SUPPORTED, Op.GET, exc.FeatureUnavailableException),
    (S.EINTERNAL, Op.GET, exc.InternalServerFailureException),
    (S.BUCKET_EXISTS, Op.GET, exc.BucketAlreadyExistsException),
    (S.BUCKET_NOT_FOUND, Op.GET, exc.BucketNotFoundException),
    (S.SCOPE_EXISTS, Op.GET, exc.ScopeAlreadyExistsException),
    (S.COLLECTION_EXISTS, Op.GET, exc.CollectionAlreadyExistsException),
]


@pytest.mark.parametrize("status, op, expected", TABLE, ids=lambda v: getattr(v, "name", str(v)))
def test_kv_status_maps_to_exception(status, op, expected):
    error = kv_exception(status, _request(op), "refused")
    assert type(error) is expected
    context = error.error_context
    assert isinstance(context, exc.KeyValueErrorContext)
    assert (context.key, context.bucket_name, context.scope_name, context.collection_name) == (
        "the-key",
        "bkt",
        "scp",
        "col",
    )
    assert context.status_code == status


def test_value_too_large_carries_code_104_and_is_catchable_as_root():
    error = kv_exception(S.E2BIG, _request(Op.UPSERT))
    assert isinstance(error, exc.CouchbaseException)
    assert error.error_code == 104


def test_recommit_in_progress_is_plain_exception_with_code_111():
    error = kv_exception(S.SYNC_WRITE_RECOMMIT_IN_PROGRESS, _request(Op.GET))
    assert type(error) is exc.CouchbaseException
    assert error.error_code == 111


def test_unknown_status_is_plain_couchbase_exception():
    error = kv_exception(0x7E, _request(Op.GET))
    assert type(error) is exc.CouchbaseException
    assert error.error_context.status_code == 0x7E


def test_kv_exception_records_retries():
    error = kv_exception(S.KEY_ENOENT, _request(Op.GET), retry_attempts=3, retry_reasons={"key_value_locked"})
    assert error.error_context.retry_attempts == 3
    assert error.error_context.retry_reasons == {"key_value_locked"}


@pytest.mark.parametrize(
    "status, expected",
    [
        (S.BUCKET_EXISTS, exc.BucketAlreadyExistsException),
        (S.BUCKET_NOT_FOUND, exc.BucketDoesNotExistException),
        (S.SCOPE_EXISTS, exc.ScopeAlreadyExistsException),
        (S.COLLECTION_EXISTS, exc.CollectionAlreadyExistsException),
        (S.UNKNOWN_SCOPE, exc.ScopeNotFoundException),
        (S.UNKNOWN_COLLECTION, exc.CollectionNotFoundException),
        (S.EINVAL, exc.InvalidArgumentException),
    ],
)
def test_management_status_maps_to_exception(status, expected):
    error = management_exception(status, "create_scope", bucket_name="b", scope_name="s")
    assert type(error) is expected
    assert isinstance(error.error_context, exc.ManagementErrorContext)
    assert error.error_context.status_code == status

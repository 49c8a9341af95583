"""KV status codes and the exception each one becomes, with its error context.

The node answers a refused request with a status numbered as Couchbase's KV binary protocol
numbers them (`KVStatus`, a copy of the engine's table: the client must not import the engine,
which the remote mode does not have). `kv_exception` turns (status, operation) into the SDK
exception exactly as reference §1.8 maps it -- some statuses depend on the operation (EEXISTS
is DocumentExists for insert but CasMismatch otherwise; LOCKED is CasMismatch for unlock).
Every KV exception carries a `KeyValueErrorContext`. Retried statuses are decided in
`_retry.py`; by the time a status reaches this module it is final.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from . import exceptions as exc
from ._backend import Op


class KVStatus(IntEnum):
    """KV response statuses (values as in Couchbase's status.h and durakv.engine.errors.Status)."""

    SUCCESS = 0x00
    KEY_ENOENT = 0x01
    KEY_EEXISTS = 0x02
    E2BIG = 0x03
    EINVAL = 0x04
    NOT_STORED = 0x05
    DELTA_BADVAL = 0x06
    NOT_MY_VBUCKET = 0x07
    LOCKED = 0x09
    NOT_LOCKED = 0x0E
    AUTH_ERROR = 0x20
    RANGE_ERROR = 0x22
    ROLLBACK = 0x23
    EACCESS = 0x24
    ENOMEM = 0x82
    NOT_SUPPORTED = 0x83
    EINTERNAL = 0x84
    EBUSY = 0x85
    TMPFAIL = 0x86
    UNKNOWN_COLLECTION = 0x88
    UNKNOWN_SCOPE = 0x8C
    DURABILITY_INVALID_LEVEL = 0xA0
    DURABILITY_IMPOSSIBLE = 0xA1
    SYNC_WRITE_IN_PROGRESS = 0xA2
    SYNC_WRITE_AMBIGUOUS = 0xA3
    SYNC_WRITE_RECOMMIT_IN_PROGRESS = 0xA4
    # durakv management outcomes, above the KV range
    BUCKET_EXISTS = 0x1001
    BUCKET_NOT_FOUND = 0x1002
    SCOPE_EXISTS = 0x1003
    COLLECTION_EXISTS = 0x1004


# Couchbase core error codes for which the Python SDK has no class: raised as a plain
# CouchbaseException carrying the code.
ERROR_CODE_VALUE_TOO_LARGE = 104
ERROR_CODE_RECOMMIT_IN_PROGRESS = 111

# Statuses whose exception does not depend on the operation.
_FIXED: dict[int, type[exc.CouchbaseException]] = {
    KVStatus.KEY_ENOENT: exc.DocumentNotFoundException,
    # Couchbase raises CouchbaseException(error_code=104); durakv raises a subclass of it
    # with that code so callers can catch oversized values specifically.
    KVStatus.E2BIG: exc.ValueTooLargeException,
    KVStatus.EINVAL: exc.InvalidArgumentException,
    KVStatus.RANGE_ERROR: exc.InvalidArgumentException,
    KVStatus.DELTA_BADVAL: exc.DeltaInvalidException,
    KVStatus.LOCKED: exc.DocumentLockedException,
    KVStatus.NOT_LOCKED: exc.DocumentNotLockedException,
    KVStatus.AUTH_ERROR: exc.AuthenticationException,
    KVStatus.EACCESS: exc.AuthenticationException,
    KVStatus.ENOMEM: exc.TemporaryFailException,
    KVStatus.EBUSY: exc.TemporaryFailException,
    KVStatus.TMPFAIL: exc.TemporaryFailException,
    KVStatus.NOT_SUPPORTED: exc.FeatureUnavailableException,
    KVStatus.EINTERNAL: exc.InternalServerFailureException,
    KVStatus.UNKNOWN_COLLECTION: exc.CollectionNotFoundException,
    KVStatus.UNKNOWN_SCOPE: exc.ScopeNotFoundException,
    KVStatus.DURABILITY_INVALID_LEVEL: exc.DurabilityInvalidLevelException,
    KVStatus.DURABILITY_IMPOSSIBLE: exc.DurabilityImpossibleException,
    KVStatus.SYNC_WRITE_IN_PROGRESS: exc.DurabilitySyncWriteInProgressException,
    KVStatus.SYNC_WRITE_AMBIGUOUS: exc.DurabilitySyncWriteAmbiguousException,
    KVStatus.BUCKET_EXISTS: exc.BucketAlreadyExistsException,
    KVStatus.BUCKET_NOT_FOUND: exc.BucketNotFoundException,
    KVStatus.SCOPE_EXISTS: exc.ScopeAlreadyExistsException,
    KVStatus.COLLECTION_EXISTS: exc.CollectionAlreadyExistsException,
}

_INSERT_OPS = frozenset({Op.INSERT})
_REPLICA_READS = frozenset({Op.GET_ANY_REPLICA, Op.GET_ALL_REPLICAS})


def kv_exception_class(status: int, op: Op) -> tuple[type[exc.CouchbaseException], int | None]:
    """The exception class for a final KV status of `op`, and an error_code override if any."""
    if status == KVStatus.KEY_EEXISTS:
        return (exc.DocumentExistsException if op in _INSERT_OPS else exc.CasMismatchException), None
    if status == KVStatus.NOT_STORED:
        return (exc.DocumentExistsException if op in _INSERT_OPS else exc.DocumentNotFoundException), None
    if status == KVStatus.LOCKED and op is Op.UNLOCK:
        return exc.CasMismatchException, None
    if status == KVStatus.KEY_ENOENT and op is Op.GET_ANY_REPLICA:
        return exc.DocumentUnretrievableException, None
    if status == KVStatus.SYNC_WRITE_RECOMMIT_IN_PROGRESS:
        return exc.CouchbaseException, ERROR_CODE_RECOMMIT_IN_PROGRESS
    cls = _FIXED.get(status)
    if cls is None:
        return exc.CouchbaseException, None
    return cls, None


def kv_context(
    request: Any,
    *,
    status: int | None = None,
    retry_attempts: int = 0,
    retry_reasons: set[str] | None = None,
) -> exc.KeyValueErrorContext:
    """The error context of a KV request (`request` is a KVRequest)."""
    key = request.key
    if isinstance(key, (bytes, bytearray)):
        key = bytes(key).decode("utf-8", "replace")
    return exc.KeyValueErrorContext(
        key=key,
        bucket_name=request.bucket,
        scope_name=request.scope,
        collection_name=request.collection,
        status_code=status,
        retry_attempts=retry_attempts,
        retry_reasons=set(retry_reasons or ()),
    )


def kv_exception(
    status: int,
    request: Any,
    message: str = "",
    *,
    retry_attempts: int = 0,
    retry_reasons: set[str] | None = None,
) -> exc.CouchbaseException:
    """The exception for a final KV status of one request, with its KeyValueErrorContext."""
    cls, code = kv_exception_class(status, request.op)
    context = kv_context(request, status=status, retry_attempts=retry_attempts, retry_reasons=retry_reasons)
    return cls(message or _status_name(status), error_code=code, context=context)


def management_exception(status: int, action: str, message: str = "", **fields: Any) -> exc.CouchbaseException:
    """The exception for a refused management action, with a ManagementErrorContext."""
    if status == KVStatus.BUCKET_NOT_FOUND:
        cls: type[exc.CouchbaseException] = exc.BucketDoesNotExistException
    else:
        cls = _FIXED.get(status, exc.CouchbaseException)
    context = exc.ManagementErrorContext(status_code=status, path=action, **fields)
    return cls(message or _status_name(status), context=context)


def _status_name(status: int) -> str:
    try:
        return KVStatus(status).name
    except ValueError:
        return f"status 0x{status:02x}"

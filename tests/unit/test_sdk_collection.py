"""Collection and BinaryCollection over a recording fake backend: what each call sends and returns."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

import pytest

import durakv._retry as retry
import durakv.exceptions as exc
from durakv._backend import BackendStatusError, KVRequest, KVResponse, Op
from durakv._errors import KVStatus
from durakv.cluster import Cluster
from durakv.durability import ClientDurability, DurabilityLevel, ReplicateTo, ServerDurability
from durakv.options import (
    ClusterOptions,
    ClusterTimeoutOptions,
    DeltaValue,
    GetAndLockOptions,
    GetOptions,
    IncrementOptions,
    SignedInt64,
    UpsertOptions,
)
from durakv.transcoder import FMT_BYTES, FMT_JSON, RawBinaryTranscoder


class FakeBackend:
    """Records every request; answers from `answers[op]` (a value, an exception, or a callable)."""

    def __init__(self) -> None:
        self.requests: list[KVRequest] = []
        self.answers: dict[Op, object] = {}

    def execute(self, request: KVRequest):
        self.requests.append(dataclasses.replace(request))
        answer = self.answers.get(request.op, KVResponse(cas=1, value=b'{"a": 1}', flags=FMT_JSON))
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def bucket_names(self) -> list[str]:
        return ["default"]

    def close(self) -> None:
        pass

    @property
    def last(self) -> KVRequest:
        return self.requests[-1]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(retry, "sleep", lambda s: None)


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def coll(backend):
    return Cluster.from_backend(backend).bucket("default").scope("inventory").collection("items")


# --- get ------------------------------------------------------------------------------------


def test_get_without_options_sends_plain_request(backend, coll):
    result = coll.get("k1")
    req = backend.last
    assert (req.op, req.bucket, req.scope, req.collection, req.key) == (Op.GET, "default", "inventory", "items", b"k1")
    assert (req.timeout_s, req.with_expiry, req.durability_level) == (2.5, False, 0)
    assert (result.key, result.cas, result.content_as[dict]) == ("k1", 1, {"a": 1})


def test_get_uses_cluster_kv_timeout(backend):
    opts = ClusterOptions(None, timeout_options=ClusterTimeoutOptions(kv_timeout=timedelta(seconds=1)))
    Cluster.from_backend(backend, opts).bucket("default").default_collection().get("k")
    assert backend.last.timeout_s == 1.0
    assert (backend.last.scope, backend.last.collection) == ("_default", "_default")


def test_get_accepts_bytes_key(backend, coll):
    coll.get(b"\x00raw")
    assert backend.last.key == b"\x00raw"


@pytest.mark.parametrize("key", ["", b"", 5, None])
def test_get_invalid_key_is_invalid_argument_without_request(backend, coll, key):
    with pytest.raises(exc.InvalidArgumentException) as info:
        coll.get(key)
    assert backend.requests == []
    assert isinstance(info.value.error_context, exc.KeyValueErrorContext)
    assert info.value.error_context.collection_name == "items"


def test_get_options_and_kwarg_override(backend, coll):
    coll.get("k", GetOptions(timeout=timedelta(seconds=5)), timeout=timedelta(seconds=3))
    assert backend.last.timeout_s == 3.0


def test_get_with_expiry(backend, coll):
    backend.answers[Op.GET] = KVResponse(cas=1, value=b"1", flags=FMT_JSON, expiry=1_900_000_000)
    result = coll.get("k", with_expiry=True)
    assert backend.last.with_expiry is True
    assert result.expiry_time is not None
    assert int(result.expiry_time.timestamp()) == 1_900_000_000


def test_get_project_picks_paths_and_skips_missing(backend, coll):
    backend.answers[Op.GET] = KVResponse(
        cas=1, flags=FMT_JSON, value=b'{"name": "n", "geo": {"lat": 1, "lon": 2}, "tags": ["x", "y"], "z": 0}'
    )
    result = coll.get("k", project=["name", "geo.lat", "tags[1]", "missing", "geo.nope"])
    assert result.content_as[dict] == {"name": "n", "geo": {"lat": 1}, "tags": ["y"]}


@pytest.mark.parametrize("project", ["name", ("name",), ["name", 3]])
def test_get_project_not_list_of_str_is_invalid_argument(backend, coll, project):
    with pytest.raises(exc.InvalidArgumentException):
        coll.get("k", GetOptions(project=project))
    assert backend.requests == []


def test_get_project_on_non_json_document(backend, coll):
    backend.answers[Op.GET] = KVResponse(cas=1, flags=FMT_JSON, value=b"7")
    with pytest.raises(exc.DocumentNotJsonException):
        coll.get("k", project=["a"])


def test_get_with_transcoder_option(backend, coll):
    backend.answers[Op.GET] = KVResponse(cas=1, flags=FMT_BYTES, value=b"\x01")
    assert coll.get("k", transcoder=RawBinaryTranscoder()).value == b"\x01"
    with pytest.raises(exc.ValueFormatException):
        coll.get("k").value  # noqa: B018


def test_get_missing_document(backend, coll):
    backend.answers[Op.GET] = BackendStatusError(KVStatus.KEY_ENOENT)
    with pytest.raises(exc.DocumentNotFoundException) as info:
        coll.get("gone")
    context = info.value.error_context
    assert (context.key, context.bucket_name, context.scope_name, context.collection_name) == (
        "gone",
        "default",
        "inventory",
        "items",
    )


# --- writes ---------------------------------------------------------------------------------


def test_upsert_sends_encoded_value_expiry_and_returns_token(backend, coll):
    backend.answers[Op.UPSERT] = KVResponse(cas=9, seqno=4, vbucket=7, vbucket_uuid=55)
    result = coll.upsert("k", {"b": 2}, UpsertOptions(expiry=timedelta(seconds=60), preserve_expiry=True))
    req = backend.last
    assert (req.op, req.value, req.flags, req.expiry, req.preserve_expiry) == (
        Op.UPSERT,
        b'{"b": 2}',
        FMT_JSON,
        60,
        True,
    )
    assert result.cas == 9
    assert result.mutation_token().as_tuple() == (7, 55, 4, "default")


def test_mutation_token_absent_without_seqno_or_when_disabled(backend):
    backend.answers[Op.UPSERT] = KVResponse(cas=9, seqno=0)
    coll = Cluster.from_backend(backend).bucket("default").default_collection()
    assert coll.upsert("k", 1).mutation_token() is None
    backend.answers[Op.UPSERT] = KVResponse(cas=9, seqno=3)
    quiet = Cluster.from_backend(backend, enable_mutation_tokens=False).bucket("default").default_collection()
    assert quiet.upsert("k", 1).mutation_token() is None


def test_upsert_bytes_with_default_transcoder_is_value_format_error(backend, coll):
    with pytest.raises(exc.ValueFormatException):
        coll.upsert("k", b"raw")
    assert backend.requests == []


def test_upsert_with_transcoder_option(backend, coll):
    coll.upsert("k", b"raw", transcoder=RawBinaryTranscoder())
    assert (backend.last.value, backend.last.flags) == (b"raw", FMT_BYTES)


def test_insert_never_preserves_expiry(backend, coll):
    coll.insert("k", 1, preserve_expiry=True)
    assert backend.last.op is Op.INSERT
    assert backend.last.preserve_expiry is False


def test_insert_existing_is_document_exists(backend, coll):
    backend.answers[Op.INSERT] = BackendStatusError(KVStatus.KEY_EEXISTS)
    with pytest.raises(exc.DocumentExistsException):
        coll.insert("k", 1)


def test_replace_sends_cas(backend, coll):
    coll.replace("k", 1, cas=1234)
    assert (backend.last.op, backend.last.cas) == (Op.REPLACE, 1234)


def test_replace_cas_mismatch(backend, coll):
    backend.answers[Op.REPLACE] = BackendStatusError(KVStatus.KEY_EEXISTS)
    with pytest.raises(exc.CasMismatchException):
        coll.replace("k", 1, cas=1)


def test_replace_with_expiry_and_preserve_expiry_is_invalid_argument(backend, coll):
    with pytest.raises(exc.InvalidArgumentException):
        coll.replace("k", 1, expiry=timedelta(seconds=5), preserve_expiry=True)
    assert backend.requests == []


def test_replace_with_zero_expiry_and_preserve_expiry_is_allowed(backend, coll):
    coll.replace("k", 1, expiry=timedelta(0), preserve_expiry=True)
    assert backend.last.preserve_expiry is True


def test_remove_sends_cas(backend, coll):
    result = coll.remove("k", cas=77)
    assert (backend.last.op, backend.last.cas) == (Op.REMOVE, 77)
    assert result.cas == 1


def test_touch_and_get_and_touch_send_expiry(backend, coll):
    coll.touch("k", timedelta(seconds=30))
    assert (backend.last.op, backend.last.expiry) == (Op.TOUCH, 30)
    result = coll.get_and_touch("k", timedelta(seconds=0))
    assert (backend.last.op, backend.last.expiry) == (Op.GET_AND_TOUCH, 0)
    assert result.content_as[dict] == {"a": 1}


@pytest.mark.parametrize("bad", [30, None])
def test_touch_expiry_must_be_timedelta(backend, coll, bad):
    with pytest.raises(exc.InvalidArgumentException):
        coll.touch("k", bad)


def test_get_and_lock_sends_lock_time(backend, coll):
    backend.answers[Op.GET_AND_LOCK] = KVResponse(cas=42, value=b"1", flags=FMT_JSON)
    result = coll.get_and_lock("k", timedelta(seconds=10), GetAndLockOptions(timeout=timedelta(seconds=1)))
    assert (backend.last.op, backend.last.lock_time_s, backend.last.timeout_s) == (Op.GET_AND_LOCK, 10, 1.0)
    assert result.cas == 42


def test_unlock_sends_cas_and_returns_none(backend, coll):
    assert coll.unlock("k", 42) is None
    assert (backend.last.op, backend.last.cas) == (Op.UNLOCK, 42)


def test_unlock_wrong_cas_is_cas_mismatch(backend, coll):
    backend.answers[Op.UNLOCK] = BackendStatusError(KVStatus.LOCKED)
    with pytest.raises(exc.CasMismatchException):
        coll.unlock("k", 41)
    assert len(backend.requests) == 1


def test_unlock_not_locked(backend, coll):
    backend.answers[Op.UNLOCK] = BackendStatusError(KVStatus.NOT_LOCKED)
    with pytest.raises(exc.DocumentNotLockedException):
        coll.unlock("k", 41)


def test_unlock_cas_must_be_int(backend, coll):
    with pytest.raises(exc.InvalidArgumentException):
        coll.unlock("k", "42")


# --- durability ------------------------------------------------------------------------------


def test_server_durability_sets_level_and_timeouts(backend, coll):
    coll.upsert("k", 1, durability=ServerDurability(DurabilityLevel.MAJORITY_AND_PERSIST_TO_ACTIVE))
    req = backend.last
    assert (req.durability_level, req.timeout_s, req.durability_timeout_ms) == (2, 10.0, 9000)


def test_bare_durability_level_runs_plain_write_and_warns(backend, coll, caplog):
    with caplog.at_level(logging.WARNING, logger="durakv.durability"):
        coll.upsert("k", 1, durability=DurabilityLevel.MAJORITY)
    req = backend.last
    assert (req.durability_level, req.durability_timeout_ms, req.timeout_s) == (0, None, 2.5)
    assert caplog.records


def test_client_durability_requirement_travels_with_the_request(backend, coll):
    # The stand-in backend cannot observe replicas: the write is made, then that is said.
    with pytest.raises(exc.FeatureUnavailableException):
        coll.upsert("k", 1, durability=ClientDurability(replicate_to=ReplicateTo.ONE))
    assert backend.last.client_durability == (1, 0) and backend.last.durability_level == 0


def test_client_durability_none_is_plain_write(backend, coll):
    coll.remove("k", durability=ClientDurability())
    assert backend.last.durability_level == 0


# --- exists and replicas ---------------------------------------------------------------------


def test_exists(backend, coll):
    backend.answers[Op.EXISTS] = KVResponse(cas=5, exists=True)
    assert (coll.exists("k").exists, coll.exists("k").cas) == (True, 5)
    backend.answers[Op.EXISTS] = KVResponse(cas=5, exists=False)
    assert (coll.exists("k").exists, coll.exists("k").cas) == (False, 0)
    backend.answers[Op.EXISTS] = BackendStatusError(KVStatus.KEY_ENOENT)
    assert coll.exists("k").exists is False


def test_get_any_replica(backend, coll):
    backend.answers[Op.GET_ANY_REPLICA] = KVResponse(cas=3, value=b"1", flags=FMT_JSON, is_replica=True)
    result = coll.get_any_replica("k")
    assert (result.is_replica, result.content_as[int]) == (True, 1)
    backend.answers[Op.GET_ANY_REPLICA] = BackendStatusError(KVStatus.KEY_ENOENT)
    with pytest.raises(exc.DocumentUnretrievableException):
        coll.get_any_replica("k")


def test_get_all_replicas(backend, coll):
    backend.answers[Op.GET_ALL_REPLICAS] = [
        KVResponse(cas=3, value=b"1", flags=FMT_JSON),
        KVResponse(cas=3, value=b"1", flags=FMT_JSON, is_replica=True),
    ]
    assert [r.is_replica for r in coll.get_all_replicas("k")] == [False, True]
    backend.answers[Op.GET_ALL_REPLICAS] = []
    with pytest.raises(exc.DocumentNotFoundException):
        coll.get_all_replicas("k")


# --- binary ----------------------------------------------------------------------------------


def test_increment_defaults_create_with_zero(backend, coll):
    backend.answers[Op.INCREMENT] = KVResponse(cas=2, counter=1)
    result = coll.binary().increment("ctr")
    assert (backend.last.op, backend.last.delta, backend.last.initial) == (Op.INCREMENT, 1, 0)
    assert result.content == 1


def test_decrement_with_values(backend, coll):
    coll.binary().decrement("ctr", IncrementOptions(delta=DeltaValue(5), initial=SignedInt64(10)))
    assert (backend.last.op, backend.last.delta, backend.last.initial) == (Op.DECREMENT, 5, 10)


def test_negative_initial_means_do_not_create(backend, coll):
    coll.binary().increment("ctr", initial=SignedInt64(-1))
    assert backend.last.initial is None


@pytest.mark.parametrize("kwargs", [{"delta": 5}, {"initial": 5}, {"delta": SignedInt64(1)}])
def test_plain_int_counter_values_are_invalid_argument(backend, coll, kwargs):
    with pytest.raises(exc.InvalidArgumentException):
        coll.binary().increment("ctr", **kwargs)
    assert backend.requests == []


def test_plain_zero_counter_values_mean_default(backend, coll):
    coll.binary().increment("ctr", delta=0, initial=0)
    assert (backend.last.delta, backend.last.initial) == (1, 0)


def test_counter_durability_keeps_kv_timeout_and_sends_expiry(backend, coll):
    coll.binary().increment("ctr", durability=ServerDurability(DurabilityLevel.MAJORITY), expiry=timedelta(seconds=9))
    assert (backend.last.timeout_s, backend.last.durability_timeout_ms, backend.last.expiry) == (2.5, 2250, 9)


def test_counter_on_non_number(backend, coll):
    backend.answers[Op.INCREMENT] = BackendStatusError(KVStatus.DELTA_BADVAL)
    with pytest.raises(exc.DeltaInvalidException):
        coll.binary().increment("ctr")


def test_append_prepend_values(backend, coll):
    coll.binary().append("k", "é", cas=3)
    assert (backend.last.op, backend.last.value, backend.last.cas) == (Op.APPEND, "é".encode(), 3)
    coll.binary().prepend("k", bytearray(b"\x00"))
    assert (backend.last.op, backend.last.value) == (Op.PREPEND, b"\x00")
    with pytest.raises(ValueError):
        coll.binary().append("k", 5)


def test_append_missing_document(backend, coll):
    backend.answers[Op.APPEND] = BackendStatusError(KVStatus.NOT_STORED)
    with pytest.raises(exc.DocumentNotFoundException):
        coll.binary().append("k", b"x")


# --- multi -----------------------------------------------------------------------------------


def test_get_multi_collects_results_and_exceptions(backend, coll):
    def answer(req):
        return BackendStatusError(KVStatus.KEY_ENOENT) if req.key == b"b" else KVResponse(cas=1, value=b"1")

    backend.answers[Op.GET] = answer
    multi = coll.get_multi(["a", "b"])
    assert multi.all_ok is False
    assert multi.results["a"].content_as[int] == 1
    assert isinstance(multi.exceptions["b"], exc.DocumentNotFoundException)
    with pytest.raises(exc.DocumentNotFoundException):
        coll.get_multi(["a", "b"], return_exceptions=False)


def test_upsert_multi_with_per_key_options(backend, coll):
    multi = coll.upsert_multi(
        {"a": 1, "b": 2},
        expiry=timedelta(seconds=5),
        per_key_options={"b": UpsertOptions(expiry=timedelta(seconds=7))},
    )
    assert multi.all_ok
    assert [(r.key, r.expiry) for r in backend.requests] == [(b"a", 5), (b"b", 7)]


def test_remove_multi(backend, coll):
    assert set(coll.remove_multi(["a", "b"]).results) == {"a", "b"}
    assert [r.op for r in backend.requests] == [Op.REMOVE, Op.REMOVE]

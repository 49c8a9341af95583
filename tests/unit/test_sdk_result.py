"""Result classes (reference §1.6)."""

from __future__ import annotations

from datetime import datetime

from durakv.exceptions import DocumentNotFoundException
from durakv.result import (
    CounterResult,
    ExistsResult,
    GetReplicaResult,
    GetResult,
    MultiGetResult,
    MutationResult,
    MutationToken,
)
from durakv.transcoder import FMT_JSON, JSONTranscoder


class CountingTranscoder(JSONTranscoder):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def decode_value(self, value, flags):
        self.calls += 1
        return super().decode_value(value, flags)


def test_get_result_decodes_lazily_once():
    tc = CountingTranscoder()
    result = GetResult("k", 5, FMT_JSON, b'{"a": 1}', tc)
    assert tc.calls == 0
    assert result.value == {"a": 1}
    assert result.content_as[dict] == {"a": 1}
    assert result.content == {"a": 1}
    assert tc.calls == 1


def test_get_result_content_as_converts():
    result = GetResult("k", 5, FMT_JSON, b"12", JSONTranscoder())
    assert result.content_as[str] == "12"
    assert result.content_as[int] == 12


def test_get_result_fields():
    result = GetResult("k", 5, FMT_JSON, b"1", JSONTranscoder())
    assert (result.key, result.cas, result.flags, result.success) == ("k", 5, FMT_JSON, True)


def test_get_result_expiry_time_is_naive_datetime():
    result = GetResult("k", 5, FMT_JSON, b"1", JSONTranscoder(), expiry=1_900_000_000)
    assert result.expiry_time == datetime.fromtimestamp(1_900_000_000)
    assert result.expiry_time.tzinfo is None
    assert result.expiryTime == result.expiry_time


def test_get_result_expiry_time_none_when_not_requested_or_unset():
    assert GetResult("k", 5, FMT_JSON, b"1", JSONTranscoder()).expiry_time is None
    assert GetResult("k", 5, FMT_JSON, b"1", JSONTranscoder(), expiry=0).expiry_time is None


def test_get_result_has_no_instance_dict():
    assert not hasattr(GetResult("k", 5, FMT_JSON, b"1", JSONTranscoder()), "__dict__")


def test_replica_result_flags():
    result = GetReplicaResult("k", 5, FMT_JSON, b"1", JSONTranscoder(), is_replica=True)
    assert result.is_replica is True
    assert result.is_active is False
    assert result.content_as[int] == 1


def test_exists_result():
    assert ExistsResult("k", False).exists is False
    assert ExistsResult("k", True, 9).cas == 9


def test_mutation_result_token():
    token = MutationToken(3, 77, 12, "b")
    result = MutationResult("k", 9, token)
    assert result.mutation_token() is token
    assert MutationResult("k", 9).mutation_token() is None


def test_mutation_token_fields_and_equality():
    token = MutationToken(3, 77, 12, "b")
    assert (token.partition_id, token.partition_uuid, token.sequence_number, token.bucket_name) == (3, 77, 12, "b")
    assert token.as_tuple() == (3, 77, 12, "b")
    assert token.as_dict() == {"partition_id": 3, "partition_uuid": 77, "sequence_number": 12, "bucket_name": "b"}
    assert token == MutationToken(3, 77, 12, "b")
    assert token != MutationToken(3, 77, 13, "b")
    assert len({token, MutationToken(3, 77, 12, "b")}) == 1


def test_counter_result_content():
    result = CounterResult("k", 9, 42)
    assert result.content == 42
    assert result.cas == 9


def test_multi_result_splits_results_and_exceptions():
    ok = GetResult("a", 1, FMT_JSON, b"1", JSONTranscoder())
    error = DocumentNotFoundException()
    multi = MultiGetResult({"a": ok, "b": error})
    assert multi.all_ok is False
    assert multi.results == {"a": ok}
    assert multi.exceptions == {"b": error}
    assert MultiGetResult({"a": ok}).all_ok is True

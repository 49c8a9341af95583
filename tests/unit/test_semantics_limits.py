"""Input limits and argument types through the SDK (reference §1.2, §1.7, §5.2, §5.3; DESIGN §9).

Each refusal is checked for its exception type and for having changed nothing: the document
keeps its value and CAS, and no vbucket took a seqno.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from durakv.exceptions import (
    CouchbaseException,
    InvalidArgumentException,
    ValueTooLargeException,
)
from durakv.options import (
    GetOptions,
    InsertOptions,
    RemoveOptions,
    ReplaceOptions,
    UpsertOptions,
)
from durakv.transcoder import RawBinaryTranscoder

VALUE_SIZE_MAX = 20 * 1024 * 1024
ERROR_CODE_VALUE_TOO_LARGE = 104  # Couchbase's core code for an oversized value
RAW = RawBinaryTranscoder()


@pytest.fixture
def stored(coll, probe):
    """A document 'k' = {"v": 1}; yields a check that it is unchanged and nothing was written."""
    result = coll.upsert("k", {"v": 1})
    before = probe.high_seqno_total()

    def unchanged() -> None:
        got = coll.get("k")
        assert got.cas == result.cas
        assert got.content_as[dict] == {"v": 1}
        assert probe.high_seqno_total() == before

    return unchanged


# -- value size (reference §5.3) ----------------------------------------------------------------


def test_value_of_exactly_20_mib_is_accepted_and_read_back(coll):
    value = b"\x01" * VALUE_SIZE_MAX
    coll.upsert("big", value, transcoder=RAW)
    assert coll.get("big", transcoder=RAW).value == value


def test_value_of_20_mib_plus_one_raises_value_too_large_and_writes_nothing(coll, stored):
    value = b"\x01" * (VALUE_SIZE_MAX + 1)
    for write in (
        lambda: coll.upsert("k", value, transcoder=RAW),
        lambda: coll.replace("k", value, ReplaceOptions(transcoder=RAW)),
        lambda: coll.insert("new", value, InsertOptions(transcoder=RAW)),
    ):
        with pytest.raises(ValueTooLargeException) as caught:
            write()
        assert isinstance(caught.value, CouchbaseException)
        assert caught.value.error_code == ERROR_CODE_VALUE_TOO_LARGE
    stored()
    assert coll.exists("new").exists is False


def test_append_past_20_mib_raises_value_too_large_and_keeps_the_document(coll, probe):
    first = coll.upsert("big", b"\x02" * VALUE_SIZE_MAX, transcoder=RAW)
    before = probe.high_seqno_total()
    with pytest.raises(ValueTooLargeException):
        coll.binary().append("big", b"x")
    assert probe.high_seqno_total() == before
    assert coll.get("big", transcoder=RAW).cas == first.cas


def test_json_document_over_20_mib_raises_value_too_large(coll, stored):
    with pytest.raises(ValueTooLargeException):
        coll.upsert("k", {"blob": "x" * VALUE_SIZE_MAX})
    stored()


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        lambda c: c.get(""),
        lambda c: c.get("", GetOptions(timeout=timedelta(seconds=1))),
        lambda c: c.exists(""),
        lambda c: c.insert("", {"v": 1}),
        lambda c: c.upsert("", {"v": 1}),
        lambda c: c.replace("", {"v": 1}),
        lambda c: c.remove(""),
        lambda c: c.touch("", timedelta(hours=1)),
        lambda c: c.get_and_lock("", timedelta(seconds=5)),
        lambda c: c.unlock("", 1),
        lambda c: c.binary().increment(""),
        lambda c: c.binary().append("", b"x"),
    ],
    ids=[
        "get",
        "get_opts",
        "exists",
        "insert",
        "upsert",
        "replace",
        "remove",
        "touch",
        "get_and_lock",
        "unlock",
        "increment",
        "append",
    ],
)
def test_empty_key_raises_invalid_argument(coll, stored, op):
    with pytest.raises(InvalidArgumentException):
        op(coll)
    stored()


@pytest.mark.parametrize("key", [None, 42, 4.2, ["k"]], ids=["none", "int", "float", "list"])
def test_key_that_is_not_a_string_raises_invalid_argument(coll, stored, key):
    with pytest.raises(InvalidArgumentException):
        coll.upsert(key, {"v": 1})
    with pytest.raises(InvalidArgumentException):
        coll.get(key, timeout=timedelta(seconds=1))
    stored()


# -- argument types (reference §1.2) ------------------------------------------------------------


@pytest.mark.parametrize("cas", ["12345", 1.5, b"\x00" * 8, [1]], ids=["str", "float", "bytes", "list"])
def test_cas_of_the_wrong_type_raises_invalid_argument(coll, stored, cas):
    for write in (
        lambda: coll.replace("k", {"v": 2}, cas=cas),
        lambda: coll.replace("k", {"v": 2}, ReplaceOptions(cas=cas)),
        lambda: coll.remove("k", RemoveOptions(cas=cas)),
        lambda: coll.unlock("k", cas),
        lambda: coll.binary().append("k", b"x", cas=cas),
    ):
        with pytest.raises(InvalidArgumentException):
            write()
    stored()


@pytest.mark.parametrize("cas", [-1, 2**64], ids=["negative", "beyond_64_bits"])
def test_cas_out_of_64_bit_range_raises_invalid_argument(coll, stored, cas):
    with pytest.raises(InvalidArgumentException):
        coll.replace("k", {"v": 2}, cas=cas)
    with pytest.raises(InvalidArgumentException):
        coll.remove("k", cas=cas)
    stored()


@pytest.mark.parametrize("timeout", [5, 2.5, "5s", timedelta(seconds=-1)], ids=["int", "float", "str", "negative"])
def test_timeout_of_the_wrong_type_raises_invalid_argument(coll, stored, timeout):
    for op in (
        lambda: coll.get("k", timeout=timeout),
        lambda: coll.get("k", GetOptions(timeout=timeout)),
        lambda: coll.exists("k", timeout=timeout),
        lambda: coll.upsert("k", {"v": 2}, UpsertOptions(timeout=timeout)),
        lambda: coll.replace("k", {"v": 2}, timeout=timeout),
        lambda: coll.remove("k", timeout=timeout),
        lambda: coll.touch("k", timedelta(hours=1), timeout=timeout),
        lambda: coll.binary().increment("k", timeout=timeout),
    ):
        with pytest.raises(InvalidArgumentException):
            op()
    stored()


def test_options_argument_that_is_not_an_options_object_raises_invalid_argument(coll, stored):
    with pytest.raises(InvalidArgumentException):
        coll.upsert("k", {"v": 2}, timedelta(seconds=1))
    stored()


def test_lock_time_that_is_not_a_timedelta_raises_invalid_argument(coll, stored):
    with pytest.raises(InvalidArgumentException):
        coll.get_and_lock("k", 5)
    stored()
    assert coll.get("k").cas != 2**64 - 1  # not locked

"""Counters, append/prepend and transcoders through the SDK (reference §1.5, §1.6).

Counter traps kept on purpose, as the Couchbase SDK has them: with no `initial` a missing
counter is created with 0; a negative `initial` means "do not create"; `delta`/`initial` must be
`DeltaValue`/`SignedInt64`, not plain ints. Decrement stops at 0, increment wraps at 2**64.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from durakv.exceptions import (
    CasMismatchException,
    DeltaInvalidException,
    DocumentLockedException,
    DocumentNotFoundException,
    InvalidArgumentException,
    ValueFormatException,
)
from durakv.options import (
    AppendOptions,
    DecrementOptions,
    DeltaValue,
    GetOptions,
    IncrementOptions,
    PrependOptions,
    SignedInt64,
    UpsertOptions,
)
from durakv.result import CounterResult, MutationToken
from durakv.transcoder import (
    JSONTranscoder,
    LegacyTranscoder,
    RawBinaryTranscoder,
    RawJSONTranscoder,
    RawStringTranscoder,
)

SHORT_TIMEOUT = timedelta(milliseconds=300)
UINT64_MAX = 2**64 - 1


# -- increment / decrement ----------------------------------------------------------------------


def test_increment_missing_key_creates_it_with_zero_by_default(coll):
    result = coll.binary().increment("c")
    assert isinstance(result, CounterResult)
    assert result.content == 0
    assert result.cas > 0
    assert coll.get("c").content_as[int] == 0
    assert coll.binary().increment("c").content == 1


def test_decrement_missing_key_creates_it_with_zero_by_default(coll):
    assert coll.binary().decrement("c").content == 0
    assert coll.get("c").content_as[int] == 0


def test_increment_missing_key_with_initial_creates_it_with_initial_not_plus_delta(coll):
    opts = IncrementOptions(delta=DeltaValue(5), initial=SignedInt64(10))
    assert coll.binary().increment("c", opts).content == 10
    assert coll.binary().increment("c", opts).content == 15
    assert coll.get("c").content_as[int] == 15


def test_increment_and_decrement_by_delta(coll):
    coll.binary().increment("c", initial=SignedInt64(100))
    assert coll.binary().increment("c", delta=DeltaValue(7)).content == 107
    assert coll.binary().decrement("c", DecrementOptions(delta=DeltaValue(50))).content == 57


def test_counter_delta_kwarg_overrides_options(coll):
    coll.binary().increment("c")
    result = coll.binary().increment("c", IncrementOptions(delta=DeltaValue(5)), delta=DeltaValue(7))
    assert result.content == 7


@pytest.mark.parametrize("op", ["increment", "decrement"])
def test_counter_negative_initial_on_missing_key_raises_document_not_found(coll, probe, op):
    before = probe.high_seqno_total()
    with pytest.raises(DocumentNotFoundException):
        getattr(coll.binary(), op)("c", initial=SignedInt64(-1))
    assert coll.exists("c").exists is False
    assert probe.high_seqno_total() == before


def test_counter_negative_initial_on_existing_key_just_counts(coll):
    coll.binary().increment("c", initial=SignedInt64(5))
    assert coll.binary().increment("c", initial=SignedInt64(-1)).content == 6


def test_decrement_stops_at_zero(coll):
    coll.binary().increment("c", initial=SignedInt64(3))
    assert coll.binary().decrement("c", delta=DeltaValue(10)).content == 0
    assert coll.binary().decrement("c").content == 0
    assert coll.get("c").content_as[int] == 0


def test_increment_wraps_at_2_to_the_64(coll):
    coll.upsert("c", UINT64_MAX)  # a JSON number: the counter's own format
    assert coll.binary().increment("c").content == 0
    coll.upsert("c", UINT64_MAX - 1)
    assert coll.binary().increment("c", delta=DeltaValue(3)).content == 1


def test_increment_of_a_json_number_written_by_upsert(coll):
    coll.upsert("c", 41)
    assert coll.binary().increment("c").content == 42
    assert coll.get("c").value == 42


@pytest.mark.parametrize(
    "value", [{"a": 1}, "text", -5, 1.5, [1]], ids=["object", "string", "negative", "float", "list"]
)
def test_counter_on_non_numeric_document_raises_delta_invalid_and_changes_nothing(coll, value):
    stored = coll.upsert("c", value)
    with pytest.raises(DeltaInvalidException):
        coll.binary().increment("c")
    with pytest.raises(DeltaInvalidException):
        coll.binary().decrement("c")
    got = coll.get("c")
    assert got.cas == stored.cas
    assert got.value == value


@pytest.mark.parametrize(
    "kwargs",
    [{"delta": 5}, {"initial": 10}, {"delta": 5, "initial": SignedInt64(0)}, {"delta": SignedInt64(5)}],
    ids=["int_delta", "int_initial", "int_delta_with_initial", "signed_delta"],
)
def test_counter_with_plain_int_delta_or_initial_raises_invalid_argument(coll, probe, kwargs):
    before = probe.high_seqno_total()
    with pytest.raises(InvalidArgumentException):
        coll.binary().increment("c", **kwargs)
    with pytest.raises(InvalidArgumentException):
        coll.binary().decrement("c", DecrementOptions(**kwargs))
    assert probe.high_seqno_total() == before
    assert coll.exists("c").exists is False


@pytest.mark.parametrize(
    "make", [lambda: DeltaValue(-1), lambda: DeltaValue(2**63), lambda: SignedInt64(2**63), lambda: DeltaValue("1")]
)
def test_out_of_range_counter_values_raise_invalid_argument(make):
    with pytest.raises(InvalidArgumentException):
        make()


def test_counter_result_has_cas_and_mutation_token_and_new_cas_each_time(coll):
    first = coll.binary().increment("c")
    second = coll.binary().increment("c")
    assert second.cas != first.cas
    assert coll.get("c").cas == second.cas
    token = second.mutation_token()
    assert isinstance(token, MutationToken)
    assert token.sequence_number == first.mutation_token().sequence_number + 1


def test_counter_created_with_expiry(coll):
    coll.binary().increment("c", IncrementOptions(expiry=timedelta(hours=1)))
    assert coll.get("c", GetOptions(with_expiry=True)).expiry_time is not None


def test_counter_on_locked_document_raises_document_locked(coll):
    coll.binary().increment("c")
    coll.get_and_lock("c", timedelta(seconds=10))
    with pytest.raises(DocumentLockedException):
        coll.binary().increment("c", timeout=SHORT_TIMEOUT)


# -- append / prepend ---------------------------------------------------------------------------


def test_append_and_prepend_bytes_on_binary_document(coll):
    coll.upsert("b", b"mid", transcoder=RawBinaryTranscoder())
    coll.binary().append("b", b"-end")
    coll.binary().prepend("b", b"start-", PrependOptions(timeout=timedelta(seconds=2)))
    got = coll.get("b", transcoder=RawBinaryTranscoder())
    assert got.value == b"start-mid-end"


def test_append_str_on_string_document_keeps_it_a_string(coll):
    coll.upsert("s", "hello", UpsertOptions(transcoder=RawStringTranscoder()))
    coll.binary().append("s", " world")
    coll.binary().prepend("s", "¡")
    assert coll.get("s", GetOptions(transcoder=RawStringTranscoder())).value == "¡hello world"


@pytest.mark.parametrize("op", ["append", "prepend"])
def test_append_or_prepend_to_missing_document_raises_document_not_found(coll, probe, op):
    before = probe.high_seqno_total()
    with pytest.raises(DocumentNotFoundException):
        getattr(coll.binary(), op)("missing", b"x")
    assert coll.exists("missing").exists is False
    assert probe.high_seqno_total() == before


def test_append_with_cas(coll):
    stored = coll.upsert("b", b"a", transcoder=RawBinaryTranscoder())
    with pytest.raises(CasMismatchException):
        coll.binary().append("b", b"x", AppendOptions(cas=stored.cas + 1))
    appended = coll.binary().append("b", b"b", cas=stored.cas)
    assert appended.cas != stored.cas
    got = coll.get("b", transcoder=RawBinaryTranscoder())
    assert got.value == b"ab"
    assert got.cas == appended.cas


def test_append_changes_cas_and_keeps_expiry(coll):
    stored = coll.upsert("b", b"a", transcoder=RawBinaryTranscoder(), expiry=timedelta(hours=1))
    before = coll.get("b", with_expiry=True, transcoder=RawBinaryTranscoder()).expiry_time
    appended = coll.binary().append("b", b"b")
    assert appended.cas != stored.cas
    assert coll.get("b", with_expiry=True, transcoder=RawBinaryTranscoder()).expiry_time == before


# -- transcoders --------------------------------------------------------------------------------


def test_raw_binary_transcoder_round_trips_every_byte(coll):
    value = bytes(range(256)) * 4
    coll.upsert("b", value, transcoder=RawBinaryTranscoder())
    got = coll.get("b", transcoder=RawBinaryTranscoder())
    assert got.value == value
    assert got.content_as[bytes] == value


def test_raw_string_transcoder_round_trips_unicode(coll):
    value = "naïve ☃ 日本語 \U0001f600"
    coll.upsert("s", value, transcoder=RawStringTranscoder())
    got = coll.get("s", transcoder=RawStringTranscoder())
    assert got.value == value
    assert got.content_as[str] == value


def test_raw_json_transcoder_stores_json_text_readable_by_the_default(coll):
    coll.upsert("j", '{"a": 1}', transcoder=RawJSONTranscoder())
    assert coll.get("j").content_as[dict] == {"a": 1}
    assert coll.get("j", transcoder=RawJSONTranscoder()).value == b'{"a": 1}'


def test_default_json_transcoder_refuses_bytes_and_writes_nothing(coll, probe):
    before = probe.high_seqno_total()
    with pytest.raises(ValueFormatException):
        coll.upsert("b", b"raw")
    with pytest.raises(ValueFormatException):
        coll.insert("b", bytearray(b"raw"))
    assert probe.high_seqno_total() == before
    assert coll.exists("b").exists is False


def test_default_json_transcoder_refuses_to_decode_binary_and_string_documents(coll):
    coll.upsert("b", b"raw", transcoder=RawBinaryTranscoder())
    coll.upsert("s", "text", transcoder=RawStringTranscoder())
    with pytest.raises(ValueFormatException):
        coll.get("b").value  # noqa: B018 -- decoding is lazy
    with pytest.raises(ValueFormatException):
        coll.get("s").content_as[str]


def test_raw_transcoders_refuse_the_wrong_type(coll):
    with pytest.raises(ValueFormatException):
        coll.upsert("b", "text", transcoder=RawBinaryTranscoder())
    with pytest.raises(ValueFormatException):
        coll.upsert("s", b"raw", transcoder=RawStringTranscoder())
    coll.upsert("j", {"a": 1})
    with pytest.raises(ValueFormatException):
        coll.get("j", transcoder=RawBinaryTranscoder()).value  # noqa: B018


def test_content_as_converts_json_values(coll):
    coll.upsert("d", {"a": 1})
    coll.upsert("l", [1, 2])
    coll.upsert("i", 7)
    coll.upsert("f", 2.5)
    coll.upsert("t", "text")
    assert coll.get("d").content_as[dict] == {"a": 1}
    assert coll.get("l").content_as[list] == [1, 2]
    assert coll.get("i").content_as[int] == 7
    assert coll.get("i").content_as[str] == "7"
    assert coll.get("f").content_as[float] == 2.5
    assert coll.get("t").content_as[str] == "text"


def test_transcoder_kwarg_overrides_options_transcoder(coll):
    coll.upsert("b", b"raw", UpsertOptions(transcoder=JSONTranscoder()), transcoder=RawBinaryTranscoder())
    assert coll.get("b", GetOptions(transcoder=JSONTranscoder()), transcoder=RawBinaryTranscoder()).value == b"raw"


def test_legacy_transcoder_round_trips_str_bytes_and_json(coll):
    for key, value in [("s", "text"), ("b", b"raw"), ("d", {"a": [1]})]:
        coll.upsert(key, value, transcoder=LegacyTranscoder())
        assert coll.get(key, transcoder=LegacyTranscoder()).value == value

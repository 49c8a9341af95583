"""Transcoders: formats, flags and ValueFormatException (reference §1.6)."""

from __future__ import annotations

import pickle

import pytest

from durakv.exceptions import ValueFormatException
from durakv.transcoder import (
    FMT_BYTES,
    FMT_JSON,
    FMT_PICKLE,
    FMT_UTF8,
    JSONTranscoder,
    LegacyTranscoder,
    RawBinaryTranscoder,
    RawJSONTranscoder,
    RawStringTranscoder,
    Serializer,
    Transcoder,
    get_decode_format,
)


def test_flag_constants():
    assert (FMT_JSON, FMT_PICKLE, FMT_BYTES, FMT_UTF8) == (0x02000000, 0x01000001, 0x03000002, 0x04000004)


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None, True]}, [1, "x"], "text", 7, 1.5, True, None, (1, 2)])
def test_json_transcoder_round_trips_json_types(value):
    tc = JSONTranscoder()
    data, flags = tc.encode_value(value)
    assert flags == FMT_JSON
    expected = list(value) if isinstance(value, tuple) else value
    assert tc.decode_value(data, flags) == expected


def test_json_transcoder_keeps_non_ascii_as_utf8():
    data, _ = JSONTranscoder().encode_value({"name": "Zoë"})
    assert "Zoë".encode() in data


@pytest.mark.parametrize("value", [b"raw", bytearray(b"raw")])
def test_json_transcoder_refuses_bytes(value):
    with pytest.raises(ValueFormatException):
        JSONTranscoder().encode_value(value)


def test_json_transcoder_refuses_arbitrary_objects():
    with pytest.raises(ValueFormatException):
        JSONTranscoder().encode_value(object())


@pytest.mark.parametrize("flags", [FMT_BYTES, FMT_UTF8, FMT_PICKLE])
def test_json_transcoder_refuses_non_json_documents(flags):
    with pytest.raises(ValueFormatException):
        JSONTranscoder().decode_value(b"abc", flags)


def test_json_transcoder_flags_zero_decode_as_json():
    assert JSONTranscoder().decode_value(b"42", 0) == 42


def test_json_transcoder_invalid_json_comes_back_as_bytes():
    assert JSONTranscoder().decode_value(b"{not json", FMT_JSON) == b"{not json"


@pytest.mark.parametrize("data", [b' {"a": 1}', b'{"a": 1} ', b"\n[1]\n"])
def test_json_transcoder_decodes_documents_with_whitespace(data):
    import json

    assert JSONTranscoder().decode_value(data, FMT_JSON) == json.loads(data)


def test_json_transcoder_trailing_garbage_is_not_json():
    assert JSONTranscoder().decode_value(b'{"a": 1} x', FMT_JSON) == b'{"a": 1} x'


def test_json_transcoder_decodes_memoryview():
    assert JSONTranscoder().decode_value(memoryview(b'{"a": 1}'), FMT_JSON) == {"a": 1}


def test_json_transcoder_custom_serializer_used():
    class Upper(Serializer):
        def serialize(self, value):
            return str(value).upper().encode()

        def deserialize(self, value):
            return value.decode().lower()

    tc = JSONTranscoder(Upper())
    assert tc.encode_value("abc") == (b"ABC", FMT_JSON)
    assert tc.decode_value(b"ABC", FMT_JSON) == "abc"


def test_raw_json_transcoder_passes_bytes_through():
    tc = RawJSONTranscoder()
    assert tc.encode_value('{"a":1}') == (b'{"a":1}', FMT_JSON)
    assert tc.encode_value(b"[1]") == (b"[1]", FMT_JSON)
    assert tc.decode_value(b"[1]", FMT_JSON) == b"[1]"
    with pytest.raises(ValueFormatException):
        tc.encode_value({"a": 1})
    with pytest.raises(ValueFormatException):
        tc.decode_value(b"x", FMT_BYTES)


def test_raw_string_transcoder():
    tc = RawStringTranscoder()
    assert tc.encode_value("hé") == ("hé".encode(), FMT_UTF8)
    assert tc.decode_value("hé".encode(), FMT_UTF8) == "hé"
    with pytest.raises(ValueFormatException):
        tc.encode_value(b"x")
    with pytest.raises(ValueFormatException):
        tc.decode_value(b"1", FMT_JSON)


def test_raw_binary_transcoder():
    tc = RawBinaryTranscoder()
    assert tc.encode_value(bytearray(b"\x00\x01")) == (b"\x00\x01", FMT_BYTES)
    assert tc.decode_value(b"\x00\x01", FMT_BYTES) == b"\x00\x01"
    with pytest.raises(ValueFormatException):
        tc.encode_value("text")
    with pytest.raises(ValueFormatException):
        tc.decode_value(b"1", FMT_JSON)


def test_legacy_transcoder_formats():
    tc = LegacyTranscoder()
    assert tc.encode_value("s")[1] == FMT_UTF8
    assert tc.encode_value(b"b")[1] == FMT_BYTES
    assert tc.encode_value({"a": 1})[1] == FMT_JSON
    data, flags = tc.encode_value({1, 2})
    assert flags == FMT_PICKLE
    assert tc.decode_value(data, flags) == {1, 2}
    assert pickle.loads(data) == {1, 2}
    assert tc.decode_value(b"s", FMT_UTF8) == "s"
    assert tc.decode_value(b"b", FMT_BYTES) == b"b"


def test_decode_format_from_legacy_and_common_flags():
    assert get_decode_format(FMT_JSON) == FMT_JSON
    assert get_decode_format(0) == FMT_JSON
    assert get_decode_format(2) == FMT_BYTES  # legacy low bits only
    assert get_decode_format(0x05000000) is None


def test_duck_typed_transcoder_is_a_transcoder():
    class Mine:
        def encode_value(self, value):
            return b"", 0

        def decode_value(self, value, flags):
            return None

    assert isinstance(Mine(), Transcoder)
    assert not isinstance(object(), Transcoder)

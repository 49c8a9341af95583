"""Transcoders: Python values <-> (bytes, flags), with Couchbase's common flags.

The flags' top byte is the "common flags" format (JSON, binary, UTF-8 string, pickle) and the
low 3 bits are the legacy Python SDK format, so documents are interchangeable with what the
Couchbase SDKs write. `JSONTranscoder` is the default: it refuses bytes on encode and refuses
to decode documents flagged binary or UTF-8 (`ValueFormatException`). `LegacyTranscoder`
falls back to pickle for other objects -- only use it with data you trust, since unpickling
runs code.

`JSONTranscoder.decode_value` has a fast path (flags JSON or 0, default serializer) because
every `get` result goes through it.
"""

from __future__ import annotations

import json
import pickle
from abc import ABC, abstractmethod
from typing import Any

from .exceptions import ValueFormatException

FMT_JSON = 0x02000000
FMT_PICKLE = 0x01000001
FMT_BYTES = 0x03000002
FMT_UTF8 = 0x04000004
FMT_COMMON_MASK = 0xFF000000
FMT_LEGACY_MASK = 0x00000007

_UNIFIED_FORMATS = (FMT_JSON, FMT_BYTES, FMT_UTF8, FMT_PICKLE)
_COMMON_TO_UNIFIED = {fmt & FMT_COMMON_MASK: fmt for fmt in _UNIFIED_FORMATS}
_LEGACY_TO_UNIFIED = {fmt & FMT_LEGACY_MASK: fmt for fmt in _UNIFIED_FORMATS}

_json_dumps = json.dumps
_raw_decode = json.JSONDecoder().raw_decode
_full_decode = json.JSONDecoder().decode


def _json_loads(data: bytes) -> Any:
    """`json.loads` for UTF-8 bytes, about twice as fast on the common (compact) case."""
    text = str(data, "utf-8")
    try:
        value, end = _raw_decode(text)
        if end == len(text):
            return value
    except ValueError:
        pass  # leading whitespace or invalid: let the full decoder decide
    return _full_decode(text)


def get_decode_format(flags: int | None) -> int | None:
    """The unified format a document's flags name, or None if unknown."""
    if flags is None:
        return None
    common = flags & FMT_COMMON_MASK
    if common:
        return _COMMON_TO_UNIFIED.get(common)
    return _LEGACY_TO_UNIFIED.get(flags & FMT_LEGACY_MASK)


class Serializer(ABC):
    """Turns Python values into JSON bytes and back (used by `JSONTranscoder`)."""

    @abstractmethod
    def serialize(self, value: Any) -> bytes: ...

    @abstractmethod
    def deserialize(self, value: bytes) -> Any: ...


class DefaultJsonSerializer(Serializer):
    """The standard library's json, UTF-8, non-ASCII kept as is."""

    def serialize(self, value: Any) -> bytes:
        return _json_dumps(value, ensure_ascii=False).encode("utf-8")

    def deserialize(self, value: bytes) -> Any:
        return _json_loads(value)


class Transcoder(ABC):
    """What a custom transcoder implements."""

    @abstractmethod
    def encode_value(self, value: Any) -> tuple[bytes, int]: ...

    @abstractmethod
    def decode_value(self, value: bytes, flags: int) -> Any: ...

    @classmethod
    def __subclasshook__(cls, subclass: type) -> bool:
        return callable(getattr(subclass, "encode_value", None)) and callable(getattr(subclass, "decode_value", None))


class JSONTranscoder(Transcoder):
    """JSON documents (the default). Bytes are refused; use RawBinaryTranscoder for them."""

    def __init__(self, serializer: Serializer | None = None) -> None:
        self._serializer = serializer
        self._loads = _json_loads if serializer is None else serializer.deserialize
        self._dumps = DefaultJsonSerializer().serialize if serializer is None else serializer.serialize

    def encode_value(self, value: Any) -> tuple[bytes, int]:
        if isinstance(value, (bytes, bytearray)):
            raise ValueFormatException("JSONTranscoder (the default) does not encode binary data")
        if not (value is None or isinstance(value, (str, list, tuple, dict, bool, int, float))):
            raise ValueFormatException(f"JSONTranscoder cannot encode a {type(value).__name__}")
        return self._dumps(value), FMT_JSON

    def decode_value(self, value: bytes, flags: int) -> Any:
        # fast path: almost every document is flagged JSON (or 0, which means JSON too)
        fmt = FMT_JSON if flags == FMT_JSON or flags == 0 else get_decode_format(flags)
        if fmt == FMT_JSON or fmt is None:  # unknown formats are tried as JSON, as Couchbase does
            try:
                return self._loads(value)
            except Exception:
                return value  # as Couchbase: undecodable JSON comes back as bytes
        if fmt == FMT_BYTES:
            raise ValueFormatException("JSONTranscoder (the default) does not decode binary documents")
        if fmt == FMT_UTF8:
            raise ValueFormatException("JSONTranscoder (the default) does not decode string documents")
        raise ValueFormatException(f"JSONTranscoder does not decode documents with flags 0x{flags:08x}")


class RawJSONTranscoder(Transcoder):
    """Already-serialized JSON: str or bytes in, bytes out; no parsing."""

    def encode_value(self, value: str | bytes | bytearray) -> tuple[bytes, int]:
        if isinstance(value, str):
            return value.encode("utf-8"), FMT_JSON
        if isinstance(value, (bytes, bytearray)):
            return bytes(value), FMT_JSON
        raise ValueFormatException("RawJSONTranscoder encodes only str and bytes")

    def decode_value(self, value: bytes, flags: int) -> bytes:
        fmt = get_decode_format(flags)
        if fmt == FMT_JSON:
            return bytes(value)
        if fmt == FMT_BYTES:
            raise ValueFormatException("RawJSONTranscoder does not decode binary documents")
        if fmt == FMT_UTF8:
            raise ValueFormatException("RawJSONTranscoder does not decode string documents")
        raise ValueFormatException(f"RawJSONTranscoder does not decode documents with flags 0x{flags:08x}")


class RawStringTranscoder(Transcoder):
    """UTF-8 strings, flagged as such (not JSON)."""

    def encode_value(self, value: str) -> tuple[bytes, int]:
        if isinstance(value, str):
            return value.encode("utf-8"), FMT_UTF8
        raise ValueFormatException("RawStringTranscoder encodes only str")

    def decode_value(self, value: bytes, flags: int) -> str:
        fmt = get_decode_format(flags)
        if fmt == FMT_UTF8:
            return bytes(value).decode("utf-8")
        if fmt == FMT_BYTES:
            raise ValueFormatException("RawStringTranscoder does not decode binary documents")
        if fmt == FMT_JSON:
            raise ValueFormatException("RawStringTranscoder does not decode JSON documents")
        raise ValueFormatException(f"RawStringTranscoder does not decode documents with flags 0x{flags:08x}")


class RawBinaryTranscoder(Transcoder):
    """Opaque bytes, flagged binary."""

    def encode_value(self, value: bytes | bytearray) -> tuple[bytes, int]:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value), FMT_BYTES
        raise ValueFormatException("RawBinaryTranscoder encodes only bytes")

    def decode_value(self, value: bytes, flags: int) -> bytes:
        fmt = get_decode_format(flags)
        if fmt == FMT_BYTES:
            return bytes(value)
        if fmt == FMT_UTF8:
            raise ValueFormatException("RawBinaryTranscoder does not decode string documents")
        if fmt == FMT_JSON:
            raise ValueFormatException("RawBinaryTranscoder does not decode JSON documents")
        raise ValueFormatException(f"RawBinaryTranscoder does not decode documents with flags 0x{flags:08x}")


class LegacyTranscoder(Transcoder):
    """The 2.x behaviour: str -> UTF-8, bytes -> binary, JSON types -> JSON, anything else -> pickle."""

    def encode_value(self, value: Any) -> tuple[bytes, int]:
        if isinstance(value, str):
            return value.encode("utf-8"), FMT_UTF8
        if isinstance(value, (bytes, bytearray)):
            return bytes(value), FMT_BYTES
        if value is None or isinstance(value, (list, tuple, dict, bool, int, float)):
            return _json_dumps(value, ensure_ascii=False).encode("utf-8"), FMT_JSON
        return pickle.dumps(value), FMT_PICKLE

    def decode_value(self, value: bytes, flags: int) -> Any:
        fmt = get_decode_format(flags)
        if fmt == FMT_JSON or fmt is None:
            try:
                return _json_loads(value)
            except Exception:
                return value
        if fmt == FMT_UTF8:
            return bytes(value).decode("utf-8")
        if fmt == FMT_PICKLE:
            return pickle.loads(value)  # opt-in transcoder, see the module docstring
        return value

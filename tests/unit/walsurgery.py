"""Byte-surgery helpers for WAL tests: build segments, then damage them at exact offsets.

Each helper returns new bytes (segments are small in tests), so one base segment can be
cut up many ways. `fix_crc` re-seals a record after a field was changed on purpose,
to test the checks that come after the CRC (LSN, length, kind).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from durakv.engine.wal import codec

_RECORD = struct.Struct("<IIQB")
_FIELDS = {"crc": (0, "<I"), "length": (4, "<I"), "lsn": (8, "<Q"), "kind": (16, "<B")}


def build_segment(start_lsn: int, records: list[tuple[int, bytes]]) -> tuple[bytes, list[int]]:
    """A clean segment holding `records` (kind, payload), and each record's file offset."""
    parts = [codec.encode_segment_header(start_lsn)]
    offsets = []
    offset = codec.SEGMENT_HEADER_SIZE
    for kind, payload in records:
        offsets.append(offset)
        encoded = codec.encode_record(start_lsn + offset - codec.SEGMENT_HEADER_SIZE, kind, payload)
        parts.append(encoded)
        offset += len(encoded)
    return b"".join(parts), offsets


def record_offsets(data: bytes) -> list[int]:
    """File offsets of the records of a clean segment."""
    offsets = []
    offset = codec.SEGMENT_HEADER_SIZE
    while offset < len(data):
        offsets.append(offset)
        offset += codec.RECORD_HEADER_SIZE + _RECORD.unpack_from(data, offset)[1]
    assert offset == len(data), "not a clean segment"
    return offsets


def set_bytes(data: bytes, offset: int, new: bytes) -> bytes:
    assert offset + len(new) <= len(data)
    return data[:offset] + new + data[offset + len(new) :]


def flip_byte(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return set_bytes(data, offset, bytes([data[offset] ^ mask]))


def set_field(data: bytes, record_offset: int, field: str, value: int) -> bytes:
    """Overwrite one header field of the record at `record_offset` (its CRC is left stale)."""
    delta, fmt = _FIELDS[field]
    return set_bytes(data, record_offset + delta, struct.pack(fmt, value))


def fix_crc(data: bytes, record_offset: int, payload_length: int) -> bytes:
    """Recompute the CRC of the record at `record_offset` over `payload_length` payload bytes."""
    end = record_offset + codec.RECORD_HEADER_SIZE + payload_length
    return set_field(data, record_offset, "crc", zlib.crc32(data[record_offset + 4 : end]))


def set_header_field(data: bytes, offset: int, fmt: str, value: int, *, reseal: bool) -> bytes:
    """Overwrite a segment-header field; `reseal` recomputes the header CRC afterwards."""
    data = set_bytes(data, offset, struct.pack(fmt, value))
    if reseal:
        data = set_bytes(data, 24, struct.pack("<I", zlib.crc32(data[:24])))
    return data


def segment_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def rewrite(path: Path, surgery) -> None:
    """Apply `surgery(bytes) -> bytes` to a file in place."""
    path.write_bytes(surgery(path.read_bytes()))

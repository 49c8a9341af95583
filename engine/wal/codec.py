"""The WAL byte format (see FORMAT.md): encoding, decoding and the recovery decision.

Owns: segment file names, the segment header, record framing, and the rule that tells
a torn tail (cut it) from corruption (refuse to start) -- rows S1..S7 and R1..R6/T1..T4
of FORMAT.md's decision table.

Must never: open files, read a clock, or change anything; it takes a segment's bytes
and returns what they hold. The shell (`log.py`) acts on the answer.

Invariants: a record's LSN equals `start_lsn + (offset - SEGMENT_HEADER_SIZE)`; the
records of a scan are contiguous; `valid_size` is always a record boundary.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import NamedTuple

from durakv.engine import limits
from durakv.engine.errors import FormatVersionError, WalCorruptError

MAGIC = b"DURAKVWL"
FORMAT_VERSION = 1
SEGMENT_HEADER_SIZE = 32
RECORD_HEADER_SIZE = 17
KIND_MIN = 1
KIND_MAX = 255

_HEADER_BODY = struct.Struct("<8sIIQ")  # magic, version, reserved, start_lsn: what header_crc covers
_HEADER = struct.Struct("<8sIIQII")  # ... + header_crc, pad
_RECORD = struct.Struct("<IIQB")  # crc, length, lsn, kind
_RECORD_BODY = struct.Struct("<IQB")  # length, lsn, kind: the part of the header the crc covers
_CRC = struct.Struct("<I")
_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")
_LSN_MAX = 2**64 - 1
# The search for a later valid record looks for the upper six bytes of the expected
# LSN field, which stay the same for 2**16 consecutive offsets.
_WINDOW_BITS = 16

assert _HEADER.size == SEGMENT_HEADER_SIZE
assert _RECORD.size == RECORD_HEADER_SIZE


class WalFormatVersionError(FormatVersionError):
    """A WAL segment was written by a format version this build does not know."""

    def __init__(self, path: str, version: int) -> None:
        super().__init__(f"WAL segment {path} has format version {version}; this build knows {FORMAT_VERSION}")
        self.path = path
        self.version = version


class WalRecord(NamedTuple):
    """One decoded record: where it starts and ends in LSN space, and the engine's bytes."""

    lsn: int
    end: int
    kind: int
    payload: bytes


class SegmentScan(NamedTuple):
    """What a segment holds, up to its first bad record if it is the torn last segment.

    `valid_size` is the file size to keep (0: the header itself is torn, recreate the
    file); `torn_reason` is None when the segment ended cleanly.
    """

    start_lsn: int
    end_lsn: int
    valid_size: int
    records: list[WalRecord]
    torn_reason: str | None


def segment_file_name(start_lsn: int) -> str:
    assert 0 <= start_lsn <= _LSN_MAX
    return f"{start_lsn:020d}.wal"


def parse_segment_file_name(name: str) -> int | None:
    """The start LSN a segment file name carries, or None if the name is not a segment's."""
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


def encode_segment_header(start_lsn: int) -> bytes:
    assert 0 <= start_lsn <= _LSN_MAX
    body = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION, 0, start_lsn)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, start_lsn, zlib.crc32(body), 0)


def check_record_input(kind: int, payload: bytes) -> None:
    """Refuse what can never be encoded; the log calls this before taking its lock."""
    if not KIND_MIN <= kind <= KIND_MAX:
        raise ValueError(f"WAL record kind must be in {KIND_MIN}..{KIND_MAX}, got {kind}")
    if len(payload) > limits.WAL_RECORD_SIZE_MAX:
        raise ValueError(f"WAL record payload of {len(payload)} bytes exceeds {limits.WAL_RECORD_SIZE_MAX}")


def encode_record(lsn: int, kind: int, payload: bytes) -> bytes:
    """The record's bytes; its end LSN is `lsn + len(result)`."""
    check_record_input(kind, payload)
    body = _RECORD_BODY.pack(len(payload), lsn, kind)
    return b"".join((_CRC.pack(zlib.crc32(payload, zlib.crc32(body))), body, payload))


def decode_record(record: bytes) -> WalRecord:
    """Decode one record that this process encoded itself (trusted: asserts, no checks)."""
    crc, length, lsn, kind = _RECORD.unpack_from(record, 0)
    assert len(record) == RECORD_HEADER_SIZE + length and zlib.crc32(memoryview(record)[4:]) == crc
    return WalRecord(lsn, lsn + len(record), kind, record[RECORD_HEADER_SIZE:])


def scan_segment(
    data: bytes,
    path: str,
    *,
    start_lsn: int,
    last: bool,
    previous_end_lsn: int | None = None,
    keep_records: bool = True,
) -> SegmentScan:
    """Decode one segment and apply the recovery table.

    `start_lsn` comes from the file name; `previous_end_lsn` is the end of the segment
    before it (None for the oldest). Raises WalCorruptError or WalFormatVersionError;
    returns a torn scan only for the last segment. `keep_records=False` validates
    without building the record list (recovery of large segments).
    """
    size = len(data)
    if previous_end_lsn is not None and start_lsn != previous_end_lsn:  # S7
        raise WalCorruptError(path, 0, f"segment starts at LSN {start_lsn}, previous ends at {previous_end_lsn}")
    if size < SEGMENT_HEADER_SIZE:  # S1
        if not last:
            raise WalCorruptError(path, 0, f"segment header torn ({size} bytes) in a sealed segment")
        return SegmentScan(start_lsn, start_lsn, 0, [], f"segment header torn ({size} bytes)")
    magic, version, reserved, header_start_lsn, header_crc, pad = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        if last and data.count(0) == size:  # S2: created, never written
            return SegmentScan(start_lsn, start_lsn, 0, [], "segment is all zero bytes")
        raise WalCorruptError(path, 0, f"bad magic {magic!r}")  # S3 (and S2 of a sealed segment)
    if version != FORMAT_VERSION:  # S4, before the CRC: another version's header may differ
        raise WalFormatVersionError(path, version)
    if header_crc != zlib.crc32(data[: _HEADER_BODY.size]) or reserved != 0 or pad != 0:  # S5
        raise WalCorruptError(path, 0, "segment header CRC mismatch or nonzero reserved bytes")
    if header_start_lsn != start_lsn:  # S6
        raise WalCorruptError(path, 0, f"header start LSN {header_start_lsn} differs from file name")

    records: list[WalRecord] = []
    view = memoryview(data)
    offset = SEGMENT_HEADER_SIZE
    lsn = start_lsn
    while offset < size:
        reason = _bad_record_reason(data, view, offset, lsn)
        if reason is not None:
            if not last:  # T3: a sealed segment was fully fsynced, nothing in it may be torn
                raise WalCorruptError(path, offset, reason)
            later = find_valid_record(data, start_lsn, offset + 1)
            if later is not None:  # T2
                raise WalCorruptError(path, offset, f"{reason}; a valid record follows at offset {later}")
            return SegmentScan(start_lsn, lsn, offset, records, reason)  # T1
        length = _RECORD.unpack_from(data, offset)[1]
        end = offset + RECORD_HEADER_SIZE + length
        if keep_records:
            kind = data[offset + 16]
            records.append(WalRecord(lsn, lsn + end - offset, kind, bytes(view[offset + RECORD_HEADER_SIZE : end])))
        lsn += end - offset
        offset = end
    assert offset == size
    return SegmentScan(start_lsn, lsn, size, records, None)  # T4


def _bad_record_reason(data: bytes, view: memoryview, offset: int, lsn_expected: int) -> str | None:
    """Which of R1..R6 the bytes at `offset` fail first, or None for a valid record."""
    if len(data) - offset < RECORD_HEADER_SIZE:
        return f"record header truncated ({len(data) - offset} bytes left)"  # R1
    crc, length, lsn, kind = _RECORD.unpack_from(data, offset)
    if length > limits.WAL_RECORD_SIZE_MAX:
        return f"record length {length} exceeds {limits.WAL_RECORD_SIZE_MAX}"  # R2
    if lsn != lsn_expected:
        return f"record LSN {lsn} where {lsn_expected} was expected"  # R3
    end = offset + RECORD_HEADER_SIZE + length
    if end > len(data):
        return f"record of {length} payload bytes runs past the end of the file"  # R4
    if zlib.crc32(view[offset + 4 : end]) != crc:
        return "record CRC mismatch"  # R5
    if kind == 0:
        return "record kind 0"  # R6
    return None


def find_valid_record(data: bytes, start_lsn: int, from_offset: int) -> int | None:
    """The first offset >= from_offset holding a valid record (FORMAT.md), or None.

    Every offset is a candidate, but a record at offset p must carry the LSN
    start_lsn + p - 32, whose upper six bytes are the same for each run of 2**16
    offsets. So each run costs one C-speed `bytes.find` of that six-byte pattern, and
    only the offsets where it matches get the full check.
    """
    view = memoryview(data)
    offset = max(from_offset, SEGMENT_HEADER_SIZE)
    offset_last = len(data) - RECORD_HEADER_SIZE  # a record needs at least its header
    while offset <= offset_last:
        lsn = start_lsn + offset - SEGMENT_HEADER_SIZE
        high = lsn >> _WINDOW_BITS
        window_last = min(offset_last, offset + ((high + 1) << _WINDOW_BITS) - lsn - 1)
        pattern = high.to_bytes(8 - _WINDOW_BITS // 8, "little")
        # The LSN field sits at +8 and its upper bytes at +10; the pattern found at
        # `position` belongs to a candidate record at `position - 10`.
        search_end = window_last + 10 + len(pattern)
        position = data.find(pattern, offset + 10, search_end)
        while position != -1:
            candidate = position - 10
            expected = start_lsn + candidate - SEGMENT_HEADER_SIZE
            if _bad_record_reason(data, view, candidate, expected) is None:
                return candidate
            position = data.find(pattern, position + 1, search_end)
        offset = window_last + 1
    return None

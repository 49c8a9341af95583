"""The WAL codec: encoding round trips and every row of FORMAT.md's recovery table."""

from __future__ import annotations

import os
import struct
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durakv.engine import limits
from durakv.engine.errors import FormatVersionError, WalCorruptError
from durakv.engine.wal import codec
from durakv.engine.wal.codec import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE

try:
    import walsurgery as ws
except ImportError:  # tests/unit became a package
    from tests.unit import walsurgery as ws

PATH = "seg.wal"
START = 1000  # not 0, so that offsets and LSNs differ
PAYLOADS = [(1, b"alpha"), (2, b""), (3, bytes(range(256))), (4, b"delta" * 20), (255, b"last one")]
BASE, OFFSETS = ws.build_segment(START, PAYLOADS)
LAST = OFFSETS[-1]
LAST_LENGTH = len(PAYLOADS[-1][1])


def scan(data: bytes, *, last: bool = True, start_lsn: int = START, previous_end_lsn: int | None = None):
    return codec.scan_segment(data, PATH, start_lsn=start_lsn, last=last, previous_end_lsn=previous_end_lsn)


def assert_corrupt(data: bytes, offset: int, **kwargs) -> WalCorruptError:
    with pytest.raises(WalCorruptError) as caught:
        scan(data, **kwargs)
    assert (caught.value.path, caught.value.offset) == (PATH, offset)
    return caught.value


def assert_torn(data: bytes, valid_size: int, record_count: int, **kwargs) -> None:
    result = scan(data, **kwargs)
    assert result.torn_reason is not None
    assert result.valid_size == valid_size
    assert len(result.records) == record_count
    assert result.end_lsn == START + max(valid_size, SEGMENT_HEADER_SIZE) - SEGMENT_HEADER_SIZE


# ---- encoding ----------------------------------------------------------------------


def test_codec_record_round_trip_keeps_lsn_kind_payload() -> None:
    result = scan(BASE)
    assert result.torn_reason is None
    assert result.valid_size == len(BASE)
    assert [(r.kind, r.payload) for r in result.records] == PAYLOADS
    assert [r.lsn for r in result.records] == [START + o - SEGMENT_HEADER_SIZE for o in OFFSETS]
    for record, next_record in zip(result.records, result.records[1:], strict=False):
        assert record.end == next_record.lsn
    assert result.end_lsn == result.records[-1].end == START + len(BASE) - SEGMENT_HEADER_SIZE


def test_codec_decode_record_inverts_encode() -> None:
    encoded = codec.encode_record(77, 9, b"payload")
    assert codec.decode_record(encoded) == codec.WalRecord(77, 77 + len(encoded), 9, b"payload")
    assert len(encoded) == RECORD_HEADER_SIZE + len(b"payload")


@pytest.mark.parametrize("kind", [0, 256, -1])
def test_codec_encode_bad_kind_raises_value_error(kind: int) -> None:
    with pytest.raises(ValueError):
        codec.encode_record(0, kind, b"x")


def test_codec_payload_at_limit_is_valid_and_limit_plus_one_is_refused() -> None:
    payload = bytes(limits.WAL_RECORD_SIZE_MAX)
    data, _ = ws.build_segment(0, [(1, payload)])
    assert scan(data, start_lsn=0).records[0].payload == payload
    with pytest.raises(ValueError):
        codec.encode_record(0, 1, payload + b"x")


def test_codec_segment_header_round_trip_and_names() -> None:
    header = codec.encode_segment_header(2**40 + 5)
    assert len(header) == SEGMENT_HEADER_SIZE and header.startswith(codec.MAGIC)
    assert scan(header, start_lsn=2**40 + 5).end_lsn == 2**40 + 5
    assert codec.segment_file_name(42) == "00000000000000000042.wal"
    assert codec.parse_segment_file_name("00000000000000000042.wal") == 42
    assert codec.parse_segment_file_name("42.wal") is None
    assert codec.parse_segment_file_name("00000000000000000042.wal.tmp") is None


# ---- segment header: rows S1..S7 ---------------------------------------------------


@pytest.mark.parametrize("size", range(SEGMENT_HEADER_SIZE))
def test_codec_s1_short_header_in_last_segment_is_torn(size: int) -> None:
    assert_torn(BASE[:size], valid_size=0, record_count=0)


def test_codec_s1_short_header_in_sealed_segment_is_corrupt() -> None:
    assert_corrupt(BASE[:10], 0, last=False)


@pytest.mark.parametrize("size", [SEGMENT_HEADER_SIZE, 4096])
def test_codec_s2_all_zero_last_segment_is_torn(size: int) -> None:
    assert_torn(bytes(size), valid_size=0, record_count=0)


def test_codec_s2_all_zero_sealed_segment_is_corrupt() -> None:
    assert_corrupt(bytes(64), 0, last=False)


@pytest.mark.parametrize("last", [True, False])
def test_codec_s3_bad_magic_is_corrupt_at_offset_0(last: bool) -> None:
    assert_corrupt(ws.flip_byte(BASE, 3), 0, last=last)


def test_codec_s3_zero_header_with_records_after_is_corrupt() -> None:
    assert_corrupt(bytes(SEGMENT_HEADER_SIZE) + BASE[SEGMENT_HEADER_SIZE:], 0)


@pytest.mark.parametrize("last", [True, False])
def test_codec_s4_unknown_version_raises_format_version_error_naming_file(last: bool) -> None:
    data = ws.set_header_field(BASE, 8, "<I", 2, reseal=False)
    with pytest.raises(FormatVersionError) as caught:
        scan(data, last=last)
    assert isinstance(caught.value, codec.WalFormatVersionError)
    assert (caught.value.path, caught.value.version) == (PATH, 2)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: ws.flip_byte(d, 17),  # start_lsn byte, header CRC now stale
        lambda d: ws.flip_byte(d, 25),  # the header CRC itself
        lambda d: ws.set_header_field(d, 12, "<I", 1, reseal=True),  # reserved
        lambda d: ws.set_bytes(d, 28, b"\x01"),  # pad
    ],
    ids=["start_lsn", "crc", "reserved", "pad"],
)
def test_codec_s5_bad_header_crc_or_reserved_is_corrupt(damage) -> None:
    assert_corrupt(damage(BASE), 0)


def test_codec_s6_header_start_lsn_not_matching_name_is_corrupt() -> None:
    assert_corrupt(BASE, 0, start_lsn=START + 1)


@pytest.mark.parametrize("data", [BASE, BASE[:5]], ids=["whole", "torn_header"])
def test_codec_s7_gap_after_previous_segment_is_corrupt(data: bytes) -> None:
    assert_corrupt(data, 0, previous_end_lsn=START - 1)
    assert scan(data, previous_end_lsn=START).start_lsn == START


# ---- records: rows R1..R6 x T1..T4 -------------------------------------------------


def test_codec_t4_header_only_segment_is_clean() -> None:
    result = scan(BASE[:SEGMENT_HEADER_SIZE])
    assert (result.torn_reason, result.valid_size, result.records) == (None, SEGMENT_HEADER_SIZE, [])


@pytest.mark.parametrize("cut", range(LAST + 1, len(BASE)))
def test_codec_t1_last_record_torn_at_every_offset_is_cut(cut: int) -> None:
    assert_torn(BASE[:cut], valid_size=LAST, record_count=len(PAYLOADS) - 1)


@pytest.mark.parametrize("cut", OFFSETS)
def test_codec_cut_at_record_boundary_is_clean(cut: int) -> None:
    result = scan(BASE[:cut])
    assert result.torn_reason is None and len(result.records) == OFFSETS.index(cut)


@pytest.mark.parametrize("zeros", [1, 16, 17, 18, 100, 70_000])
def test_codec_t1_zero_filled_tail_is_cut(zeros: int) -> None:
    assert_torn(BASE + bytes(zeros), valid_size=len(BASE), record_count=len(PAYLOADS))


def test_codec_t1_garbage_tail_is_cut() -> None:
    assert_torn(BASE + os.urandom(5000), valid_size=len(BASE), record_count=len(PAYLOADS))


LAST_RECORD_DAMAGE = {
    "r2_length_over_limit": lambda d: ws.set_field(d, LAST, "length", limits.WAL_RECORD_SIZE_MAX + 1),
    "r3_wrong_lsn": lambda d: ws.fix_crc(ws.set_field(d, LAST, "lsn", 5), LAST, LAST_LENGTH),
    "r4_length_past_end": lambda d: ws.set_field(d, LAST, "length", LAST_LENGTH + 1),
    "r5_crc_payload": lambda d: ws.flip_byte(d, LAST + RECORD_HEADER_SIZE + 2),
    "r5_crc_field": lambda d: ws.flip_byte(d, LAST),
    "r5_crc_kind": lambda d: ws.flip_byte(d, LAST + 16),
    "r6_kind_zero": lambda d: ws.fix_crc(ws.set_field(d, LAST, "kind", 0), LAST, LAST_LENGTH),
}


@pytest.mark.parametrize("damage", LAST_RECORD_DAMAGE.values(), ids=LAST_RECORD_DAMAGE.keys())
def test_codec_t1_bad_last_record_is_cut(damage) -> None:
    assert_torn(damage(BASE), valid_size=LAST, record_count=len(PAYLOADS) - 1)


@pytest.mark.parametrize("damage", LAST_RECORD_DAMAGE.values(), ids=LAST_RECORD_DAMAGE.keys())
def test_codec_t2_bad_record_followed_by_valid_one_is_corrupt_at_its_offset(damage) -> None:
    # The same damage, then one more valid record after it: now it cannot be a torn tail.
    follower = codec.encode_record(START + len(BASE) - SEGMENT_HEADER_SIZE, 7, b"follower")
    error = assert_corrupt(damage(BASE) + follower, LAST)
    assert error.reason


@pytest.mark.parametrize("index", range(len(OFFSETS) - 1))
def test_codec_t2_bad_crc_in_middle_record_is_corrupt(index: int) -> None:
    assert_corrupt(ws.flip_byte(BASE, OFFSETS[index] + RECORD_HEADER_SIZE - 1), OFFSETS[index])


def test_codec_t2_zeroed_middle_record_is_corrupt() -> None:
    # Write-back lost a middle page but kept a later one: breaks the suffix assumption.
    start, end = OFFSETS[1], OFFSETS[3]
    assert_corrupt(ws.set_bytes(BASE, start, bytes(end - start)), start)


@pytest.mark.parametrize(
    ("damage", "offset"),
    [
        (lambda d: ws.flip_byte(d, OFFSETS[2] + 20), OFFSETS[2]),
        (lambda d: ws.flip_byte(d, LAST + 20), LAST),
        (lambda d: d[:-1], LAST),
        (lambda d: d + bytes(40), len(BASE)),
    ],
    ids=["middle_crc", "last_crc", "truncated", "zero_tail"],
)
def test_codec_t3_any_bad_record_in_sealed_segment_is_corrupt(damage, offset: int) -> None:
    assert_corrupt(damage(BASE), offset, last=False)


def test_codec_record_with_max_plus_one_length_and_valid_crc_is_bad() -> None:
    payload = bytes(limits.WAL_RECORD_SIZE_MAX + 1)
    body = struct.pack("<IQB", len(payload), 0, 1) + payload
    oversized = struct.pack("<I", zlib.crc32(body)) + body
    header = codec.encode_segment_header(0)
    assert scan(header + oversized, start_lsn=0).valid_size == SEGMENT_HEADER_SIZE
    follower = codec.encode_record(len(oversized), 1, b"x")
    with pytest.raises(WalCorruptError) as caught:
        scan(header + oversized + follower, start_lsn=0)
    assert caught.value.offset == SEGMENT_HEADER_SIZE


# ---- the search for a later valid record -------------------------------------------


def _naive_find(data: bytes, start_lsn: int, from_offset: int) -> int | None:
    """Check every offset the slow, obvious way."""
    for offset in range(max(from_offset, SEGMENT_HEADER_SIZE), len(data) - RECORD_HEADER_SIZE + 1):
        crc, length, lsn, kind = struct.unpack_from("<IIQB", data, offset)
        end = offset + RECORD_HEADER_SIZE + length
        if (
            length <= limits.WAL_RECORD_SIZE_MAX
            and lsn == start_lsn + offset - SEGMENT_HEADER_SIZE
            and end <= len(data)
            and zlib.crc32(data[offset + 4 : end]) == crc
            and kind != 0
        ):
            return offset
    return None


@settings(max_examples=300, deadline=None)
@given(
    start_lsn=st.sampled_from([0, 2**16 - 40, 2**16 - 300, 2**24 - 100, 2**32 - 70, 2**48 - 200, 2**63]),
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=12),
    damage_at=st.integers(0, 10_000),
    damage=st.binary(min_size=1, max_size=40),
    from_offset=st.integers(0, 10_000),
)
def test_codec_find_valid_record_matches_naive_search(
    start_lsn: int, sizes: list[int], damage_at: int, damage: bytes, from_offset: int
) -> None:
    data, _ = ws.build_segment(start_lsn, [(1, bytes([n]) * n) for n in sizes])
    at = SEGMENT_HEADER_SIZE + damage_at % (len(data) - SEGMENT_HEADER_SIZE)
    data = data[:at] + damage + data[at + len(damage) :]
    from_offset %= len(data) + 1
    assert codec.find_valid_record(data, start_lsn, from_offset) == _naive_find(data, start_lsn, from_offset)


def test_codec_find_valid_record_finds_record_across_64k_lsn_boundary() -> None:
    # Records straddling LSN 2**16 must be found whichever side of it they start on.
    start_lsn = 2**16 - 100
    data, offsets = ws.build_segment(start_lsn, [(1, bytes(30))] * 8)
    for offset in offsets:
        assert codec.find_valid_record(data, start_lsn, offset) == offset
        assert codec.find_valid_record(data, start_lsn, offset - 1) == offset


@pytest.mark.parametrize("filler", ["zeros", "random"])
def test_codec_torn_tail_of_64mib_segment_is_decided_fast(filler: str) -> None:
    size = 64 * 1024 * 1024
    head, _ = ws.build_segment(0, [(1, b"kept")])
    tail = bytes(size - len(head)) if filler == "zeros" else os.urandom(size - len(head))
    started_s = time.monotonic()
    result = codec.scan_segment(head + tail, PATH, start_lsn=0, last=True)
    elapsed_s = time.monotonic() - started_s
    assert (result.valid_size, len(result.records)) == (len(head), 1)
    assert elapsed_s < 10, f"scan took {elapsed_s:.1f} s"

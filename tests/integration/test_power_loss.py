"""Power loss (DESIGN §8's testbed fault) under a mixed-durability workload.

The writer process runs with an fsync policy that leaves plenty unsynced ("never": only
persist-level writes ask for an fdatasync; "interval=200"), then, on command, calls
`WriteAheadLog.power_loss()` -- every WAL byte not fdatasynced is dropped -- and exits at once
with 137. Variants then damage the tail as a real disk could after a power cut, keeping a
prefix of the bytes that were written but never synced (saved by the writer from the page
cache just before an fdatasync it never let happen):

- `torn`: the prefix ends inside a record (a half-written record);
- `torn-zeros`: the same, then zeros up to the next 4 KiB page (size updated, data not);
- `garbage`: whole records, then random bytes.

Each run proves: the WAL reopens cutting exactly the partial tail (its end is the last whole
record kept); every write acknowledged at a persist level -- and every write acknowledged
before a later persist-level write began -- is present with its CAS or superseded; the store
takes a durable write and closes and reopens cleanly. Acknowledged NONE/MAJORITY writes that
were lost are counted and printed, not asserted: losing them is what those levels allow.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from durakv.engine.wal import WriteAheadLog
from durakv.engine.wal.codec import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE

from .writer import EXIT_POWER_LOSS, PERSIST_LEVELS, WriterProcess, verify_reopened

WAL_SEGMENT_SIZE_SMALL = 64 * 1024
PAGE_SIZE = 4096
ACK_DEADLINE_S = 30.0
ACKS_BEFORE_POWER_LOSS = 1500

SCENARIOS = [
    # (id, fsync policy, tail damage, seed, small segments + frequent checkpoints)
    ("plain-never", "never", None, 11, False),
    ("plain-interval-checkpoints", "interval=200", None, 12, True),
    ("torn-never", "never", "torn", 13, False),
    ("torn-zeros-interval-checkpoints", "interval=200", "torn-zeros", 14, True),
    ("garbage-never", "never", "garbage", 15, False),
]

SCENARIO_IDS = [scenario[0] for scenario in SCENARIOS]


def record_bounds(tail: bytes) -> list[int]:
    """Offsets in `tail` where a whole record ends (it starts at a record boundary)."""
    bounds, offset = [], 0
    while offset + RECORD_HEADER_SIZE <= len(tail):
        end = offset + RECORD_HEADER_SIZE + int.from_bytes(tail[offset + 4 : offset + 8], "little")
        if end > len(tail):
            break
        bounds.append(end)
        offset = end
    return bounds


def damage_tail(segment: Path, tail: bytes, damage: str, rng: random.Random) -> int:
    """Append to `segment` what a disk might hold after the power cut; returns how many of the
    appended bytes are whole records that recovery must keep."""
    starts = [0, *record_bounds(tail)]
    assert len(starts) >= 2, f"the unsynced tail holds no whole record ({len(tail)} bytes)"
    index = rng.randrange(len(starts) - 1)  # the record to tear, or the first garbage position
    record_start, record_end = starts[index], starts[index + 1]
    if damage == "garbage":
        appended = tail[:record_start] + rng.randbytes(rng.randrange(RECORD_HEADER_SIZE, 200))
    else:
        appended = tail[: rng.randrange(record_start + 1, record_end)]
        if damage == "torn-zeros":
            size = segment.stat().st_size + len(appended)
            appended += bytes(PAGE_SIZE - size % PAGE_SIZE)
    with open(segment, "ab") as file:
        file.write(appended)
    return record_start


@pytest.mark.parametrize(("policy", "damage", "seed", "small"), [s[1:] for s in SCENARIOS], ids=SCENARIO_IDS)
def test_power_loss_persisted_acknowledgements_survive(tmp_path, policy, damage, seed, small):
    data_dir = tmp_path / "data"
    wal_dir = data_dir / "buckets" / "default" / "wal"
    tail_path = tmp_path / "unsynced.bin"
    options = ["--seed", str(seed), "--fsync-policy", policy, "--persist-fraction", "0.2"]
    if small:
        options += ["--segment-size", str(WAL_SEGMENT_SIZE_SMALL), "--checkpoint-interval-s", "0.1"]
    with WriterProcess(data_dir, tmp_path, *options) as writer:
        if small:
            writer.wait_for(lambda j: j.checkpoints >= 2, ACK_DEADLINE_S, "two checkpoints")
        acks_wanted = writer.journal.acks + ACKS_BEFORE_POWER_LOSS
        writer.wait_for(lambda j: j.acks >= acks_wanted, ACK_DEADLINE_S, f"{ACKS_BEFORE_POWER_LOSS} acks")
        writer.send("power_loss" + (f" {tail_path}" if damage else ""))
        code = writer.finish()
        assert code == EXIT_POWER_LOSS, f"the writer ended with {code}\n{writer.stderr_tail()}"
        # A SyncWrite that its last fdatasync satisfied commits while the power goes: the commit
        # record is refused by the closed WAL, and the writer hears "ambiguous". Nothing else fails.
        errors = {e.error for e in writer.journal.errors}
        assert errors <= {"DurabilitySyncWriteAmbiguousException"}, writer.journal.errors[:3]
    journal = writer.journal

    wal_end_expected = None
    if damage:
        assert tail_path.exists(), "the writer saved no unsynced tail"
        saved = json.loads(tail_path.with_suffix(".json").read_text())
        segment = wal_dir / saved["segment"]
        assert segment == max(wal_dir.glob("*.wal")), "power loss left a segment after the one being written"
        assert segment.stat().st_size == saved["offset"], "power loss did not cut the WAL at its last fdatasync"
        kept = damage_tail(segment, tail_path.read_bytes(), damage, random.Random(seed))
        wal_end_expected = int(segment.stem) + saved["offset"] - SEGMENT_HEADER_SIZE + kept
        wal = WriteAheadLog.open(wal_dir)  # recovery alone: no flusher, nothing appended
        try:
            assert wal.end_lsn == wal_end_expected, "recovery did not cut exactly the torn tail"
        finally:
            wal.close()

    verdict = verify_reopened(data_dir, journal)
    persisted, appended = (int(x) for x in next(s[1:] for s in journal.status if s[0] == "power_loss"))
    print(f"acks: {journal.acks}; unpersisted at the cut: ~{appended - persisted} WAL bytes; {verdict.summary()}")
    assert not verdict.violations, "\n".join(verdict.violations)
    assert sum(verdict.required[level] for level in PERSIST_LEVELS) > 0

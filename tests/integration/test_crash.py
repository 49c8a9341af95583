"""SIGKILL of a process writing at every durability level: what it acknowledged survives.

A real writer process (`writer.py`: 8 threads, one key each, upserts and removes at NONE,
MAJORITY, MAJORITY_AND_PERSIST_TO_ACTIVE and PERSIST_TO_MAJORITY) is killed with SIGKILL
early, after checkpoints have moved data into LMDB and released WAL segments, and during
heavy writing. The data directory is then reopened in this process and checked against the
writer's journal (rules in `writer.check`): every write acknowledged at a persist level is
there with its CAS or superseded by a later write of its key, and so is every write
acknowledged before a later persist-level acknowledgement began; the store opens cleanly,
takes a durable write, and closes and reopens cleanly.

SIGKILL keeps the page cache, but not the process's memory: a NONE or MAJORITY write is
acknowledged once its record is in the WAL's in-memory buffer (DESIGN §3.1, "received"), so
the acknowledgements of the last moments before the kill may be lost. The checks allow that
and count it; `test_crash_every_acknowledged_write_survives_sigkill` pins the stronger claim
that DESIGN §8 makes, and shows it does not hold.
"""

from __future__ import annotations

from .writer import LEVELS, PERSIST_LEVELS, WriterProcess, verify_reopened

WAL_SEGMENT_SIZE_SMALL = 64 * 1024
ACK_DEADLINE_S = 30.0


def wal_segment_starts(data_dir) -> list[int]:
    return sorted(int(path.stem) for path in (data_dir / "buckets" / "default" / "wal").glob("*.wal"))


def kill(writer: WriterProcess) -> None:
    writer.kill()
    code = writer.finish()
    assert code == -9, f"the writer ended with {code}, not by SIGKILL\n{writer.stderr_tail()}"
    assert not writer.journal.errors, f"writes failed before any fault: {writer.journal.errors[:3]}"


def kill_and_verify(writer: WriterProcess, data_dir, *, every_ack_required: bool = False):
    kill(writer)
    verdict = verify_reopened(data_dir, writer.journal, every_ack_required=every_ack_required)
    print(f"acknowledged before SIGKILL: {writer.journal.acks}; {verdict.summary()}")
    return verdict


def test_crash_early_persisted_acknowledgements_survive(tmp_path):
    data_dir = tmp_path / "data"
    with WriterProcess(data_dir, tmp_path, "--seed", "1") as writer:
        writer.wait_for(lambda j: j.acks >= 25, ACK_DEADLINE_S, "25 acknowledgements")
        verdict = kill_and_verify(writer, data_dir)
    assert not verdict.violations, "\n".join(verdict.violations)


def test_crash_after_checkpoints_persisted_acknowledgements_survive(tmp_path):
    data_dir = tmp_path / "data"
    options = ["--seed", "2", "--segment-size", str(WAL_SEGMENT_SIZE_SMALL), "--checkpoint-interval-s", "0.1"]
    with WriterProcess(data_dir, tmp_path, *options) as writer:
        writer.wait_for(lambda j: j.checkpoints >= 3, ACK_DEADLINE_S, "three checkpoints")
        writer.wait_for(lambda j: wal_segment_starts(data_dir)[0] > 0, ACK_DEADLINE_S, "a WAL segment released")
        acks_at_checkpoint = writer.journal.acks
        writer.wait_for(lambda j: j.acks >= acks_at_checkpoint + 300, ACK_DEADLINE_S, "300 more acknowledgements")
        kill(writer)
    # Recovery must start from LMDB: the WAL no longer holds the first records.
    assert wal_segment_starts(data_dir)[0] > 0, "no WAL segment was released by a checkpoint"
    verdict = verify_reopened(data_dir, writer.journal)
    print(f"acknowledged before SIGKILL: {writer.journal.acks}; {verdict.summary()}")
    assert not verdict.violations, "\n".join(verdict.violations)
    assert sum(verdict.required[level] for level in PERSIST_LEVELS) > 0


def test_crash_during_heavy_writing_persisted_acknowledgements_survive(tmp_path):
    data_dir = tmp_path / "data"
    options = ["--seed", "3", "--segment-size", str(WAL_SEGMENT_SIZE_SMALL), "--value-size-max", "4000"]
    options += ["--checkpoint-interval-s", "0.05"]  # the kill may land inside a checkpoint
    with WriterProcess(data_dir, tmp_path, *options) as writer:
        writer.wait_for(lambda j: j.acks >= 3000, ACK_DEADLINE_S, "3000 acknowledgements")
        verdict = kill_and_verify(writer, data_dir)
    assert not verdict.violations, "\n".join(verdict.violations)
    assert all(verdict.acked[level] > 0 for level in LEVELS)

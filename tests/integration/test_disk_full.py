"""A full disk under a mixed-durability workload: clean refusals, working reads, self-recovery.

The writer process lowers its own RLIMIT_FSIZE (SIGXFSZ ignored) so that the current WAL
segment can grow by 64 KiB more and then every write extending it fails with EFBIG -- a real
OS error from the kernel, as ENOSPC would be. Two threads write at NONE only, six at mixed
levels, each operation with a 1.5 s timeout. As the disk fills, one PERSIST_TO_MAJORITY write
is held in the log (see `Workload.fill_disk`). The test waits until that write ends ambiguous
and the workload's writes are refused cleanly, reads every key, then raises the limit back to
the hard limit and lets the node recover by itself; at the end it closes the node cleanly
and checks the reopened store against the journal.

One scenario runs once (module fixture); each test checks one claim about it.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from .writer import EXIT_POWER_LOSS, PERSIST_LEVELS, Journal, State, Verdict, WriterProcess, check, verify_reopened

ROOM_BYTES = 64 * 1024  # how much more the WAL segment may grow once the disk is "full"
VOLATILE_THREADS = 2  # key-0 and key-1 are written at NONE only
OP_TIMEOUT_S = 1.5
PERSIST_ACKS_BEFORE = 60
DEADLINE_S = 20.0
EVERY_KEY_RECOVERY_DEADLINE_S = 6.0  # > op timeout + WAL retry interval, with room to spare
# Refused cleanly (TMPFAIL until the deadline), or not known (the SyncWrite's fate, or a retry
# of SYNC_WRITE_IN_PROGRESS that reached its deadline).
EXPECTED_ERRORS = {"TemporaryFailException", "DurabilitySyncWriteAmbiguousException", "AmbiguousTimeoutException"}


@dataclass
class DiskFullRun:
    journal: Journal
    in_flight: str  # how the SyncWrite logged as the disk filled ended
    errors_while_full: Counter[str]
    wal_while_full: str
    reads_while_full: dict[str, tuple[str, str]]
    journal_at_reads: Journal
    probe_outcomes: list[str] = field(default_factory=list)
    volatile_keys_recovered: bool = False
    keys_not_recovered: list[str] = field(default_factory=list)
    verdict: Verdict | None = None


def persist_acks(journal: Journal) -> int:
    return sum(1 for writes in journal.writes.values() for w in writes if w.acked and w.level in PERSIST_LEVELS)


def statuses(journal: Journal, name: str) -> list[list[str]]:
    return [entry[1:] for entry in journal.status if entry[0] == name]


@pytest.fixture(scope="module")
def disk_full_run(tmp_path_factory) -> DiskFullRun:
    base = tmp_path_factory.mktemp("disk-full")
    data_dir = base / "data"
    options = ["--seed", "21", "--op-timeout-s", str(OP_TIMEOUT_S), "--volatile-threads", str(VOLATILE_THREADS)]
    options += ["--checkpoint-interval-s", "600"]  # keep the checkpointer out of the full period
    with WriterProcess(data_dir, base, *options) as writer:
        journal = writer.journal
        writer.wait_for(lambda j: persist_acks(j) >= PERSIST_ACKS_BEFORE, DEADLINE_S, "persist-level acknowledgements")
        writer.send(f"disk_full {ROOM_BYTES}")
        writer.wait_for(lambda j: j.has_status("disk_full"), DEADLINE_S, "the lower file size limit")
        writer.wait_for(lambda j: statuses(j, "in_flight"), DEADLINE_S, "the SyncWrite logged as the disk filled")
        writer.wait_for(lambda j: any(e.error == "TemporaryFailException" for e in j.errors), DEADLINE_S, "a refusal")

        writer.send("read")
        writer.wait_for(lambda j: j.has_status("read_done"), DEADLINE_S, "reads while the disk is full")
        run = DiskFullRun(
            journal=journal,
            in_flight=statuses(journal, "in_flight")[0][0],
            errors_while_full=Counter(e.error for e in journal.errors),
            wal_while_full=statuses(journal, "wal")[-1][0],
            reads_while_full=dict(journal.reads),
            journal_at_reads=copy.deepcopy(journal),
        )
        acks_before = journal.acks_by_key()

        writer.send("disk_ok")
        writer.wait_for(lambda j: j.has_status("disk_ok"), DEADLINE_S, "the limit raised back")
        deadline = time.monotonic() + DEADLINE_S
        while "ok" not in run.probe_outcomes and time.monotonic() < deadline:
            sent = len(statuses(journal, "probe"))
            writer.send("probe")
            writer.wait_for(lambda j: len(statuses(j, "probe")) > sent, DEADLINE_S, "a probe write")  # noqa: B023
            run.probe_outcomes.append(statuses(journal, "probe")[-1][0])

        def recovered(j: Journal, keys: list[str]) -> bool:
            acks = j.acks_by_key()
            return all(acks[key] > acks_before[key] for key in keys)

        volatile = [f"key-{t}" for t in range(VOLATILE_THREADS)]
        writer.wait_for(lambda j: recovered(j, volatile), DEADLINE_S, "NONE-only keys acknowledged again")
        run.volatile_keys_recovered = True
        try:
            writer.wait_for(lambda j: recovered(j, list(acks_before)), EVERY_KEY_RECOVERY_DEADLINE_S, "every key")
        except AssertionError:
            pass
        run.keys_not_recovered = sorted(k for k, n in journal.acks_by_key().items() if n <= acks_before[k])

        writer.send("stop")
        writer.wait_for(lambda j: j.has_status("stopped"), DEADLINE_S, "the writer threads stopped")
        writer.send("close")
        code = writer.finish()
        assert code == 0, f"the writer did not close cleanly ({code})\n{writer.stderr_tail()}"
    run.verdict = verify_reopened(data_dir, journal, every_ack_required=True)
    errors = Counter(e.error for e in journal.errors)
    print(
        f"\nin flight: {run.in_flight}; errors while full: {dict(run.errors_while_full)}; all errors: {dict(errors)}"
        f"\nprobes: {run.probe_outcomes}; keys not recovered: {run.keys_not_recovered}"
        f"\nacks: {journal.acks}; {run.verdict.summary()}"
    )
    return run


def test_disk_full_wal_fails_with_the_os_error(disk_full_run):
    assert disk_full_run.wal_while_full == "EFBIG"


def test_disk_full_writes_fail_with_typed_exceptions(disk_full_run):
    errors = Counter(e.error for e in disk_full_run.journal.errors)
    assert set(errors) <= EXPECTED_ERRORS, errors
    assert disk_full_run.errors_while_full["TemporaryFailException"] > 0
    # A SyncWrite whose prepare was logged but never persisted cannot be aborted either.
    assert disk_full_run.in_flight == "DurabilitySyncWriteAmbiguousException"
    # NONE-only keys never see an ambiguity: their writes are refused (TMPFAIL) or acknowledged.
    volatile = {f"key-{t}" for t in range(VOLATILE_THREADS)}
    assert {e.error for e in disk_full_run.journal.errors if e.key in volatile} <= {"TemporaryFailException"}


def test_disk_full_reads_keep_working(disk_full_run):
    reads = disk_full_run.reads_while_full
    journal = disk_full_run.journal_at_reads
    assert sorted(reads) == sorted(journal.writes)
    failed = {key: value for key, (value, _cas) in reads.items() if value == "!"}
    assert not failed, f"reads failed while the disk was full: {failed}"
    states = {
        key: State(True, int(value), int(cas)) if value != "-" else State(False, tombstone_known=False)
        for key, (value, cas) in reads.items()
    }
    verdict = check(journal, states, every_ack_required=True)  # in memory, everything acknowledged
    assert not verdict.violations, "\n".join(verdict.violations)
    assert sum(verdict.lost.values()) == 0


def test_disk_full_node_recovers_by_itself(disk_full_run):
    assert "ok" in disk_full_run.probe_outcomes, disk_full_run.probe_outcomes
    assert disk_full_run.volatile_keys_recovered


def test_disk_full_every_key_accepts_writes_after_recovery(disk_full_run):
    stuck = disk_full_run.keys_not_recovered
    writes = disk_full_run.journal.writes
    last_errors = {key: [(w.error, w.retry_reasons) for w in writes[key] if w.error][-1:] for key in stuck}
    assert not stuck, f"keys refusing writes after the disk recovered: {last_errors}"


def test_disk_full_acknowledged_writes_survive_reopen(disk_full_run):
    verdict = disk_full_run.verdict
    assert not verdict.violations, "\n".join(verdict.violations)
    assert sum(verdict.lost.values()) == 0


def test_disk_full_power_loss_while_full_keeps_persisted_acknowledgements(tmp_path):
    # The node may die before the disk comes back: what it acknowledged as persisted must be
    # on disk already, whatever it still held in memory for the failed WAL to rewrite.
    data_dir = tmp_path / "data"
    options = ["--seed", "22", "--op-timeout-s", str(OP_TIMEOUT_S), "--volatile-threads", str(VOLATILE_THREADS)]
    options += ["--checkpoint-interval-s", "600"]
    with WriterProcess(data_dir, tmp_path, *options) as writer:
        writer.wait_for(lambda j: persist_acks(j) >= PERSIST_ACKS_BEFORE, DEADLINE_S, "persist-level acknowledgements")
        writer.send(f"disk_full {ROOM_BYTES}")
        writer.wait_for(lambda j: j.errors, DEADLINE_S, "writes failing")
        writer.send("power_loss")
        code = writer.finish()
        assert code == EXIT_POWER_LOSS, f"the writer ended with {code}\n{writer.stderr_tail()}"
    verdict = verify_reopened(data_dir, writer.journal)
    print(f"acks: {writer.journal.acks}; {verdict.summary()}")
    assert not verdict.violations, "\n".join(verdict.violations)
    assert sum(verdict.required[level] for level in PERSIST_LEVELS) >= PERSIST_ACKS_BEFORE

"""A fault-test workload, its journal, and the check of a data directory against that journal.

Run as a program (`python writer.py DATA_DIR [options]`) it opens `Cluster.embedded(DATA_DIR)`
and starts `--threads` threads; thread t owns the key `key-t`, so the writes to a key are
sequential and their journal gives their order. Each write is an upsert or a remove at a
random durability level. It is journaled on stdout, one line per event, each line one
`write(2)` (a SIGKILL never leaves half a line): `B` before the call, then `A` when it is
acknowledged or `E` when it raises. One global counter stamps the `B` and `A` lines, so a
checker knows which writes were acknowledged before which others began. Commands on stdin
inject the faults (see `_control`); EOF on stdin means the test is gone, and the writer exits.

Imported by the tests, it is also the other side of that protocol: `WriterProcess` starts the
program and reads its journal, `Journal` parses it, `observe` reads what a reopened store
holds, and `check` decides, per key, whether that state is one the acknowledgements allow.

What a key's state may be. Let the write the store shows be write m of the key (found by the
value's write index, or by a tombstone's CAS; m = -1 when the key never existed). A write W is
*required* when its acknowledgement promised persistence: it was acknowledged at a persist level,
or it was acknowledged before some persist-level write P (of any key) began and P was
acknowledged -- P's prepare then sits after W's records in the WAL, and the WAL is persisted as
a prefix. The check: m is at or after every required write of its key; if the write m was
acknowledged, the store has its CAS; m never names a write refused cleanly (TMPFAIL). An
acknowledged write after m is *lost* (counted per level; allowed only if it was not required).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

LEVELS = ("NONE", "MAJORITY", "MAJORITY_AND_PERSIST_TO_ACTIVE", "PERSIST_TO_MAJORITY")
PERSIST_LEVELS = frozenset(LEVELS[2:])
# Errors after which the write certainly changed nothing (every attempt was refused).
CLEAN_FAILURES = frozenset({"TemporaryFailException", "DocumentNotFoundException"})
BUCKET = "default"
WRITER_PATH = Path(__file__).resolve()
EXIT_POWER_LOSS = 137
EXIT_ORPHANED = 3
POLL_S = 0.05


# ---- the workload program ------------------------------------------------------------------


class _PowerCut(BaseException):
    """Raised on the WAL flusher thread to stop it dead: no rewind, no further write or fsync."""


class Workload:
    def __init__(self, args: argparse.Namespace) -> None:
        from durakv.cluster import Cluster

        self.args = args
        self.cluster = Cluster.embedded(args.data_dir, fsync_policy=args.fsync_policy)
        self.bucket = self.cluster._backend.node.bucket(BUCKET)  # the EmbeddedBucket
        self.collection = self.cluster.bucket(BUCKET).default_collection()
        self.stop = threading.Event()
        self._emit_lock = threading.Lock()
        self._seq = itertools.count()
        self.threads = [
            threading.Thread(target=self._write_loop, args=(t,), name=f"writer-{t}", daemon=True)
            for t in range(args.threads)
        ]

    def emit(self, *fields: object) -> None:
        line = (" ".join(map(str, fields)) + "\n").encode()
        with self._emit_lock:
            os.write(1, line)  # < PIPE_BUF: one atomic write

    def _write_loop(self, thread_index: int) -> None:
        from durakv.durability import DurabilityLevel, ServerDurability
        from durakv.exceptions import CouchbaseException

        rng = random.Random(self.args.seed * 1000 + thread_index)
        key = f"key-{thread_index}"
        timeout = timedelta(seconds=self.args.op_timeout_s)
        volatile = thread_index < self.args.volatile_threads  # writes at NONE only
        known_present = False  # whether the last write was an acknowledged upsert
        for index in itertools.count():
            if self.stop.is_set():
                return
            if volatile:
                level = "NONE"
            else:
                persist = rng.random() < self.args.persist_fraction
                level = rng.choice(LEVELS[2:] if persist else LEVELS[:2])
            op = "remove" if known_present and rng.random() < 0.15 else "upsert"
            options: dict[str, Any] = {"timeout": timeout}
            if level != "NONE":
                options["durability"] = ServerDurability(DurabilityLevel[level])
            self.emit("B", next(self._seq), key, index, op, level)
            try:
                if op == "upsert":
                    value = {"key": key, "i": index, "pad": "x" * rng.randrange(self.args.value_size_max)}
                    result = self.collection.upsert(key, value, **options)
                else:
                    result = self.collection.remove(key, **options)
            except CouchbaseException as exc:
                reasons = getattr(exc.error_context, "retry_reasons", None)
                self.emit("E", next(self._seq), key, index, type(exc).__name__, ",".join(sorted(reasons or ())) or "-")
                known_present = False
                continue
            except Exception as exc:  # a bug: journal it, keep the traceback for the test's report
                import traceback

                traceback.print_exc()
                self.emit("E", next(self._seq), key, index, type(exc).__name__, "-")
                known_present = False
                continue
            self.emit("A", next(self._seq), key, index, result.cas)
            known_present = op == "upsert"

    def _report_checkpoints(self) -> None:
        seen = 0
        while not self.stop.wait(0.02):
            count = self.bucket.checkpoint_count
            if count != seen:
                seen = count
                self.emit("C", count)

    def run(self) -> None:
        if self.args.slow_write_ms:
            delay_s = self.args.slow_write_ms / 1000
            self.bucket.wal.fault_hook = lambda point: time.sleep(delay_s) if point == "write" else None
        for thread in self.threads:
            thread.start()
        threading.Thread(target=self._report_checkpoints, daemon=True).start()
        self.emit("S", "ready")
        for line in sys.stdin:
            if line.strip():
                self._control(line.split())
        os._exit(EXIT_ORPHANED)

    def _control(self, words: list[str]) -> None:
        command, rest = words[0], words[1:]
        if command == "power_loss":
            self.cut_power(Path(rest[0]) if rest else None)
        elif command == "disk_full":
            self.fill_disk(int(rest[0]))
        elif command == "disk_ok":
            import resource

            _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
            self.emit("S", "disk_ok")
        elif command == "read":
            self.read_all()
        elif command == "probe":
            self.probe()
        elif command == "stop":
            self.stop.set()
            for thread in self.threads:
                thread.join()
            self.emit("S", "stopped")
        elif command == "close":
            self.cluster.close()
            self.emit("S", "closed")
            os._exit(0)
        else:
            raise SystemExit(f"unknown command {words!r}")

    def cut_power(self, tail_path: Path | None) -> None:
        """The testbed power loss: drop every unsynced WAL byte, then die at once.

        With `tail_path`, first stop the flusher just before an fdatasync and save the bytes
        it had written but not synced, so the test can put back a prefix of them, as a disk
        whose write-back had persisted part of the batch would."""
        wal = self.bucket.wal
        self.emit("S", "power_loss", wal.persisted_lsn, wal.end_lsn)
        if tail_path is not None:
            captured = threading.Event()

            def at_fsync(point: str) -> None:
                if point == "fsync" and not captured.is_set():
                    _save_unsynced_tail(wal, self.bucket.directory / "wal", tail_path)
                    captured.set()
                    raise _PowerCut

            wal.fault_hook = at_fsync
            wal.request_sync(wal.end_lsn)
            if not captured.wait(5.0):
                wal.fault_hook = None
        wal.power_loss()
        os._exit(EXIT_POWER_LOSS)

    def fill_disk(self, room_bytes: int) -> None:
        """Let the current WAL segment grow by `room_bytes` more, then fail with EFBIG.

        Which SyncWrites the failing write carries is a race with the workload, so the disk
        fills with one known SyncWrite in the log: the flusher is held before its next write,
        a PERSIST_TO_MAJORITY upsert of key `in-flight` bigger than the room is logged, and
        the flusher let go. That write can then only end ambiguous (status `in_flight`)."""
        import resource

        wal = self.bucket.wal
        at_write, release = threading.Event(), threading.Event()

        def hold(point: str) -> None:
            if point == "write":
                at_write.set()
                release.wait(10.0)

        wal.fault_hook = hold
        try:
            if not at_write.wait(10.0):
                raise SystemExit("the WAL flusher never wrote")
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            segment = max((self.bucket.directory / "wal").glob("*.wal"))  # names sort in LSN order
            limit = segment.stat().st_size + room_bytes
            _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            logged_from = wal.end_lsn
            threading.Thread(target=self._write_in_flight, args=(2 * room_bytes,), daemon=True).start()
            deadline = time.monotonic() + 10.0
            while wal.end_lsn - logged_from < 2 * room_bytes and time.monotonic() < deadline:
                time.sleep(0.001)
        finally:
            wal.fault_hook = None
            release.set()
        self.emit("S", "disk_full", limit)

    def _write_in_flight(self, size: int) -> None:
        from durakv.durability import DurabilityLevel, ServerDurability
        from durakv.exceptions import CouchbaseException

        durability = ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY)
        timeout = timedelta(seconds=self.args.op_timeout_s)
        try:
            self.collection.upsert("in-flight", {"pad": "x" * size}, durability=durability, timeout=timeout)
        except CouchbaseException as exc:
            self.emit("S", "in_flight", type(exc).__name__)
        else:
            self.emit("S", "in_flight", "ok")

    def read_all(self) -> None:
        from durakv.exceptions import CouchbaseException, DocumentNotFoundException

        timeout = timedelta(seconds=self.args.op_timeout_s)
        for thread_index in range(self.args.threads):
            key = f"key-{thread_index}"
            try:
                got = self.collection.get(key, timeout=timeout)
            except DocumentNotFoundException:
                self.emit("R", key, "-", 0)
            except CouchbaseException as exc:
                self.emit("R", key, "!", type(exc).__name__)
            else:
                self.emit("R", key, got.content_as[dict]["i"], got.cas)
        self.emit("S", "wal", self.wal_state())
        self.emit("S", "read_done")

    def probe(self) -> None:
        """One PERSIST_TO_MAJORITY upsert of a key no thread writes: does the node persist again?"""
        from durakv.durability import DurabilityLevel, ServerDurability
        from durakv.exceptions import CouchbaseException

        durability = ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY)
        try:
            self.collection.upsert("probe", {"probe": True}, durability=durability,
                                   timeout=timedelta(seconds=self.args.op_timeout_s))  # fmt: skip
        except CouchbaseException as exc:
            self.emit("S", "probe", type(exc).__name__, self.wal_state())
        else:
            self.emit("S", "probe", "ok", self.wal_state())

    def wal_state(self) -> str:
        """'ok', or the errno name (EFBIG, ENOSPC, ...) of the error the WAL is failed by."""
        import errno

        failed = self.bucket.wal.failed
        if failed is None:
            return "ok"
        return errno.errorcode.get(getattr(failed, "errno", None) or 0, type(failed).__name__)


def _save_unsynced_tail(wal: Any, wal_dir: Path, tail_path: Path) -> None:
    # Runs on the flusher thread, before its fdatasync: the current segment is the last file,
    # and everything in it past the persisted position was written but never synced.
    from durakv.engine.wal.codec import SEGMENT_HEADER_SIZE

    segment = max(wal_dir.glob("*.wal"))
    offset = SEGMENT_HEADER_SIZE + wal.persisted_lsn - int(segment.stem)
    with open(segment, "rb") as file:
        file.seek(offset)
        tail = file.read()
    tail_path.write_bytes(tail)
    tail_path.with_suffix(".json").write_text(json.dumps({"segment": segment.name, "offset": offset}))


def _use_test_settings(args: argparse.Namespace) -> None:
    """Small WAL segments and a short checkpoint interval, so that a short run rolls segments,
    checkpoints into LMDB and releases segments (the same code paths, sooner)."""
    from durakv.engine import embedded

    if args.checkpoint_interval_s:
        embedded.CHECKPOINT_INTERVAL_S = args.checkpoint_interval_s
    if args.segment_size:
        base = embedded.WriteAheadLog

        class SmallSegmentLog(base):  # type: ignore[misc,valid-type]
            @classmethod
            def open(cls, directory: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("segment_size_max", args.segment_size)
                return super().open(directory, **kwargs)

        embedded.WriteAheadLog = SmallSegmentLog


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fsync-policy", default="always")
    parser.add_argument("--persist-fraction", type=float, default=0.5, help="share of writes at a persist level")
    parser.add_argument("--volatile-threads", type=int, default=0, help="how many threads write at NONE only")
    parser.add_argument("--slow-write-ms", type=int, default=0, help="delay before each WAL write (slow disk)")
    parser.add_argument("--op-timeout-s", type=float, default=5.0)
    parser.add_argument("--value-size-max", type=int, default=1500, help="bytes of padding, at most")
    parser.add_argument("--segment-size", type=int, default=0, help="WAL segment size limit (0: the default)")
    parser.add_argument("--checkpoint-interval-s", type=float, default=0.0, help="0: the default")
    args = parser.parse_args(argv)
    _use_test_settings(args)
    Workload(args).run()


# ---- the journal ---------------------------------------------------------------------------


@dataclass
class Write:
    key: str
    index: int
    op: str
    level: str
    begin_seq: int
    ack_seq: int | None = None
    cas: int | None = None
    error: str | None = None
    retry_reasons: str = ""  # as the SDK's error context lists them, comma-separated

    @property
    def acked(self) -> bool:
        return self.ack_seq is not None

    @property
    def refused(self) -> bool:
        return self.error in CLEAN_FAILURES


@dataclass
class Journal:
    writes: dict[str, list[Write]] = field(default_factory=dict)
    acks: int = 0
    errors: list[Write] = field(default_factory=list)
    checkpoints: int = 0
    status: list[list[str]] = field(default_factory=list)
    reads: dict[str, tuple[str, str]] = field(default_factory=dict)

    def feed(self, line: str) -> None:
        kind, *rest = line.split()
        if kind == "B":
            seq, key, index, op, level = rest
            writes = self.writes.setdefault(key, [])
            assert int(index) == len(writes), f"journal out of order: {line!r}"
            writes.append(Write(key, int(index), op, level, int(seq)))
        elif kind == "A":
            seq, key, index, cas = rest
            write = self.writes[key][int(index)]
            write.ack_seq, write.cas = int(seq), int(cas)
            self.acks += 1
        elif kind == "E":
            _seq, key, index, error, reasons = rest
            write = self.writes[key][int(index)]
            write.error, write.retry_reasons = error, reasons
            self.errors.append(write)
        elif kind == "C":
            self.checkpoints = int(rest[0])
        elif kind == "R":
            self.reads[rest[0]] = (rest[1], rest[2])
        elif kind == "S":
            self.status.append(rest)

    def has_status(self, *words: str) -> bool:
        return any(entry[: len(words)] == list(words) for entry in self.status)

    def acks_by_key(self) -> Counter[str]:
        return Counter(w.key for writes in self.writes.values() for w in writes if w.acked)


class WriterProcess:
    """The workload program as a child process: its journal, its commands, its death."""

    def __init__(self, data_dir: Path, log_dir: Path, *options: str) -> None:
        self.stderr_path = log_dir / f"writer-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER_PATH), str(data_dir), *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.journal = Journal()
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._eof = False
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw)
        self._lines.put(None)

    def _pump(self, timeout_s: float) -> None:
        try:
            raw = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            return
        while True:
            if raw is None:
                self._eof = True
                return
            if raw.endswith(b"\n"):  # a line cut by the kill is no acknowledgement
                self.journal.feed(raw.decode())
            try:
                raw = self._lines.get_nowait()
            except queue.Empty:
                return

    def wait_for(self, condition: Any, deadline_s: float, what: str) -> None:
        """Read the journal until `condition(journal)` holds; fail at the deadline or at exit."""
        deadline = time.monotonic() + deadline_s
        while not condition(self.journal):
            if self._eof:
                raise AssertionError(f"the writer exited ({self.proc.wait()}) before {what}\n{self.stderr_tail()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {deadline_s} s\n{self.stderr_tail()}")
            self._pump(POLL_S)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def finish(self, deadline_s: float = 20.0) -> int:
        """Wait for the exit, then read every journal line still in the pipe; the exit code."""
        try:
            code = self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the writer did not exit within {deadline_s} s\n{self.stderr_tail()}") from None
        self.wait_for(lambda _journal: self._eof, deadline_s, "end of the journal")
        return code

    def stderr_tail(self, size: int = 4000) -> str:
        self._stderr.flush()
        return "writer stderr (tail):\n" + self.stderr_path.read_bytes()[-size:].decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._stderr.close()

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---- what the store holds, and whether the journal allows it -------------------------------


@dataclass(frozen=True)
class State:
    present: bool
    index: int | None = None  # the write whose value is shown (present only)
    cas: int | None = None  # the document's CAS, or the tombstone's; None when never written
    tombstone_known: bool = True  # False: absent through the SDK, tombstone not looked at


def observe(cluster: Any, keys: list[str]) -> dict[str, State]:
    """Each key's state as a reopened node shows it: through the SDK, and for a missing
    document the tombstone's CAS from the engine (the SDK hides it)."""
    from durakv.engine.document import store_key
    from durakv.engine.keys import vbucket_of
    from durakv.exceptions import DocumentNotFoundException

    collection = cluster.bucket(BUCKET).default_collection()
    embedded = cluster._backend.node.bucket(BUCKET)
    states = {}
    for key in keys:
        try:
            got = collection.get(key)
        except DocumentNotFoundException:
            raw = key.encode()
            skey = store_key(vbucket_of(raw, embedded.config.num_vbuckets), 0, raw)
            with embedded.lock:
                tomb = embedded.engine.committed(skey)
            assert tomb is None or tomb.deleted, f"{key}: get found nothing, the engine holds {tomb}"
            states[key] = State(False, cas=tomb.cas if tomb is not None else None)
        else:
            value = got.content_as[dict]
            assert value["key"] == key, f"{key} holds the value of {value['key']}"
            states[key] = State(True, value["i"], got.cas)
    return states


@dataclass
class Verdict:
    acked: Counter[str] = field(default_factory=Counter)
    required: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    unacked_applied: int = 0  # in flight or ambiguous, and found applied
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        levels = ", ".join(f"{lv}: acked {self.acked[lv]} lost {self.lost[lv]}" for lv in LEVELS)
        return f"{levels}; unacknowledged writes found applied: {self.unacked_applied}"


def check(journal: Journal, states: dict[str, State], *, every_ack_required: bool = False) -> Verdict:
    verdict = Verdict()
    everything = [w for writes in journal.writes.values() for w in writes]
    # A write acknowledged before this seq is persisted: a persist-level ack followed it in the WAL.
    covered_below = max((w.begin_seq for w in everything if w.acked and w.level in PERSIST_LEVELS), default=-1)
    for key, writes in journal.writes.items():
        floor = -1
        for w in writes:
            if w.acked:
                verdict.acked[w.level] += 1
                if every_ack_required or w.level in PERSIST_LEVELS or w.ack_seq < covered_below:
                    verdict.required[w.level] += 1
                    floor = w.index
        m = _resolve(key, writes, states[key], verdict.violations)
        if m is None:
            continue
        if m < floor:
            w = writes[floor]
            verdict.violations.append(
                f"{key}: shows write {m}, but write {floor} ({w.op} at {w.level}, cas {w.cas}) was acknowledged "
                "as persisted (or before a later persist-level write began)"
            )
        if m >= 0 and not writes[m].acked:
            verdict.unacked_applied += 1
        for w in writes[m + 1 :]:
            if w.acked:
                verdict.lost[w.level] += 1
    return verdict


def _resolve(key: str, writes: list[Write], state: State, violations: list[str]) -> int | None:
    """The index of the write `state` shows (-1: none ever applied), or None after a violation."""
    if state.present:
        if not 0 <= state.index < len(writes) or writes[state.index].op != "upsert":
            violations.append(f"{key}: shows write {state.index}, which is no upsert the writer began")
            return None
        w = writes[state.index]
        if w.refused:
            violations.append(f"{key}: shows write {w.index}, which was refused with {w.error}")
        if w.acked and w.cas != state.cas:
            violations.append(f"{key}: write {w.index} was acknowledged with CAS {w.cas}, the store has {state.cas}")
        return w.index
    removes = [w for w in writes if w.op == "remove" and not w.refused]
    if not state.tombstone_known:
        return max((w.index for w in removes), default=-1)
    if state.cas is None:
        return -1
    for w in removes:
        if w.acked and w.cas == state.cas:
            return w.index
    unacked = [w.index for w in removes if not w.acked]
    if not unacked:
        violations.append(f"{key}: a tombstone with CAS {state.cas} that no remove the writer began explains")
        return None
    return max(unacked)


def verify_reopened(data_dir: Path, journal: Journal, *, every_ack_required: bool = False) -> Verdict:
    """Reopen the data directory in this process, check it against the journal, then prove it
    takes durable writes again and closes and reopens cleanly."""
    from durakv.cluster import Cluster
    from durakv.durability import DurabilityLevel, ServerDurability

    cluster = Cluster.embedded(data_dir)
    try:
        states = observe(cluster, sorted(journal.writes))
        verdict = check(journal, states, every_ack_required=every_ack_required)
        collection = cluster.bucket(BUCKET).default_collection()
        durability = ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY)
        after = collection.upsert("after-reopen", {"ok": True}, durability=durability)
    finally:
        cluster.close()
    cluster = Cluster.embedded(data_dir)
    try:
        got = cluster.bucket(BUCKET).default_collection().get("after-reopen")
        assert (got.cas, got.content_as[dict]) == (after.cas, {"ok": True})
        assert observe(cluster, sorted(journal.writes)) == states, "a clean close and reopen changed the documents"
    finally:
        cluster.close()
    return verdict


if __name__ == "__main__":
    main()

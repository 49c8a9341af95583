"""The WAL shell: segment files, fsync and the group-commit flusher thread.

Owns the WAL directory: recovery at open (acting on codec.scan_segment's verdicts),
appends into an in-memory buffer, and one flusher thread that writes, rolls segments,
fdatasyncs per the fsync policy and publishes the persisted position.

Must never: decide what bytes mean (codec.py does); do I/O in `append`; report a
position as persisted (`persisted_lsn`, `on_persisted`) before it was fdatasynced; or
retry a failed write/fsync as if nothing happened (after a failure the page cache state
is unknown, so the flusher truncates back to the last fsynced size and rewrites from
memory).

Invariants:
- `persisted_lsn <= end_lsn`; neither goes back.
- `_unpersisted` holds exactly the encoded records in [persisted_lsn, end_lsn), in order.
- Only the flusher thread writes files while it runs (`close`/`power_loss` stop it first).
- Every segment but the current one is fully fsynced (sealed before the next is created),
  so only the current segment can hold unsynced bytes.

Beside it: segments.py (creating, listing and fsyncing segment files, each step of
FORMAT.md's writing rules) and fsync_policy.py (`FsyncPolicy`, re-exported here).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from durakv.engine import limits
from durakv.engine.errors import WalFailedError
from durakv.engine.wal import codec
from durakv.engine.wal.codec import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, WalRecord
from durakv.engine.wal.fsync_policy import FsyncPolicy
from durakv.engine.wal.segments import create_segment, fsync_directory, list_segments, make_directory, pwrite_all

__all__ = ["FsyncPolicy", "WalBackpressureError", "WalClosedError", "WalRecord", "WriteAheadLog"]


class WalBackpressureError(WalFailedError):
    """Too many appended bytes wait for the disk; the caller answers TMPFAIL and retries."""


class WalClosedError(WalFailedError):
    """The log was closed (or lost power); it accepts no more appends."""


class WriteAheadLog:
    """A segmented, group-committed log of opaque (kind, payload) records addressed by LSN."""

    def __init__(
        self,
        directory: str,
        fsync_policy: FsyncPolicy,
        segment_size_max: int,
        buffer_size_max: int,
        segment_starts: list[int],
        fd: int,
        segment_size: int,
    ) -> None:
        # Use WriteAheadLog.open(); this only wires up state that open() recovered.
        self._directory = directory
        self._policy = fsync_policy
        self._segment_size_max = segment_size_max
        self._buffer_size_max = buffer_size_max
        self._unsynced_size_max = max(1, min(limits.WAL_UNSYNCED_SIZE_MAX, buffer_size_max // 4))
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the flusher waits here
        self._persisted = threading.Condition(self._lock)  # wait_persisted() waits here
        # Shared state, guarded by _lock.
        self._segments = segment_starts  # start LSNs, oldest first; the last is the current one
        end_lsn = segment_starts[-1] + segment_size - SEGMENT_HEADER_SIZE
        self._end_lsn = end_lsn
        self._persisted_lsn = end_lsn
        self._unpersisted: list[bytes] = []
        self._sync_requested_lsn = 0
        self._failed: BaseException | None = None
        self._broken = False  # failed by a bug, not by the disk: no retry
        self._retry_at_s = 0.0
        self._stop_mode: str | None = None  # None | "close" | "power_loss"
        self._closed = False
        self._flusher_idle = False
        self._eager_pending = False  # an eager record is buffered and not yet taken by the flusher
        self._lazy_since_s: float | None = None  # when the oldest untaken lazy record was appended
        self._eager_count = 0  # eager records appended since the flusher last took a batch
        self._last_batch_eager = 0  # eager records in the batch the flusher took last
        self._gather_until_s: float | None = None  # while set, the flusher waits for more writers
        self._fsync_duration_s = 0.0  # how long the last fdatasync took
        self._thread: threading.Thread | None = None
        self._on_persisted: Callable[[int], None] | None = None
        self._on_failure: Callable[[BaseException], None] | None = None
        # Flusher-owned state (the flusher thread, or close() when it never started).
        self._fd = fd
        self._segment_start_lsn = segment_starts[-1]
        self._segment_size = segment_size  # bytes written to the current segment
        self._segment_synced_size = segment_size  # of which fdatasynced
        self._written_count = 0  # records at the head of _unpersisted already written
        self._last_sync_s = time.monotonic()
        self.fsync_count = 0  # fdatasyncs of segment data, for tests and stats
        # Testbed fault point: called with "write", "fsync" or "create" just before that
        # operation; it may sleep (slow disk) or raise OSError (failing disk).
        self.fault_hook: Callable[[str], None] | None = None

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync_policy: FsyncPolicy = FsyncPolicy.parse("always"),
        segment_size_max: int = limits.WAL_SEGMENT_SIZE_DEFAULT,
        buffer_size_max: int = limits.WAL_BUFFER_SIZE_MAX,
    ) -> WriteAheadLog:
        """Recover the WAL in `directory` (created if missing) and position at its end.

        Cuts a torn tail, refuses corruption (WalCorruptError) and unknown versions
        (FormatVersionError). Does not start the flusher.
        """
        if segment_size_max < limits.WAL_SEGMENT_SIZE_MIN:
            raise ValueError(f"segment_size_max must be >= {limits.WAL_SEGMENT_SIZE_MIN}")
        if buffer_size_max < 1:
            raise ValueError("buffer_size_max must be positive")
        directory = os.path.abspath(os.fspath(directory))
        make_directory(directory)
        starts = list_segments(directory)
        previous_end: int | None = None
        recreate = not starts
        for index, start in enumerate(starts):
            path = os.path.join(directory, codec.segment_file_name(start))
            with open(path, "rb") as file:
                data = file.read()
            scan = codec.scan_segment(
                data,
                path,
                start_lsn=start,
                last=index == len(starts) - 1,
                previous_end_lsn=previous_end,
                keep_records=False,
            )
            del data
            if scan.torn_reason is not None and scan.valid_size == 0:  # S1/S2: recreate it below
                os.unlink(path)
                fsync_directory(directory)
                recreate = True
            elif scan.torn_reason is not None:  # T1: cut the torn tail
                with open(path, "r+b") as file:
                    file.truncate(scan.valid_size)
                    os.fdatasync(file.fileno())
            previous_end = scan.end_lsn
        end_lsn = previous_end if previous_end is not None else 0
        if recreate:
            fd = create_segment(directory, end_lsn)
            if not starts:
                starts.append(end_lsn)
            assert starts[-1] == end_lsn
        else:
            fd = os.open(os.path.join(directory, codec.segment_file_name(starts[-1])), os.O_WRONLY | os.O_CLOEXEC)
            # The bytes found may sit only in the page cache (the process died, the
            # machine did not): make them durable before calling them persisted.
            os.fdatasync(fd)
        # The same holds for directory entries: a segment created just before a crash is only
        # durable once its directory is fsynced, and everything persisted into it depends on it.
        fsync_directory(directory)
        size = os.fstat(fd).st_size
        assert starts[-1] + size - SEGMENT_HEADER_SIZE == end_lsn
        return cls(directory, fsync_policy, segment_size_max, buffer_size_max, starts, fd, size)

    # ---- positions -------------------------------------------------------------------

    @property
    def end_lsn(self) -> int:
        """End of the last appended record, buffered or not."""
        return self._end_lsn

    @property
    def persisted_lsn(self) -> int:
        """Every record ending at or below this position is fdatasynced."""
        return self._persisted_lsn

    @property
    def first_lsn(self) -> int:
        """Start of the oldest segment still held (records below it were released)."""
        with self._lock:
            return self._segments[0]

    @property
    def failed(self) -> BaseException | None:
        """The write/fsync error the log is failed by, or None while it works."""
        return self._failed

    # ---- appending -------------------------------------------------------------------

    def start(
        self,
        on_persisted: Callable[[int], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Start the flusher. Callbacks run on the flusher thread and must not block or raise."""
        with self._lock:
            if self._thread is not None or self._stop_mode is not None:
                raise RuntimeError("WAL flusher already started, or the log is closed")
            self._on_persisted, self._on_failure = on_persisted, on_failure
            self._last_sync_s = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="durakv-wal-flusher", daemon=True)
        self._thread.start()

    def append(self, kind: int, payload: bytes, *, lazy: bool = False) -> int:
        """Buffer one record (no I/O); returns its end LSN. Thread-safe.

        A `lazy` record does not start a write of its own: it rides along with the next
        eager record or sync request, or goes out after WAL_LAZY_DELAY_S. The engine
        appends SyncWrite commits lazily: nobody waits for their fsync (a commit lost
        to a crash is redone from its persisted prepare at recovery), and flushing them
        alone would cost every group of durable writers a second fsync.
        """
        codec.check_record_input(kind, payload)
        with self._lock:
            self._check_accepting(RECORD_HEADER_SIZE + len(payload))
            record = codec.encode_record(self._end_lsn, kind, payload)
            self._unpersisted.append(record)
            self._end_lsn += len(record)
            if not lazy:
                self._eager_pending = True
                self._eager_count += 1
            elif self._lazy_since_s is None:
                self._lazy_since_s = time.monotonic()
            else:
                return self._end_lsn
            if self._flusher_idle:
                self._work.notify()
            return self._end_lsn

    def append_many(self, records: list[tuple[int, bytes]]) -> int:
        """Buffer several records contiguously under one lock; returns the last one's end LSN."""
        for kind, payload in records:
            codec.check_record_input(kind, payload)
        with self._lock:
            self._check_accepting(sum(RECORD_HEADER_SIZE + len(payload) for _, payload in records))
            for kind, payload in records:
                record = codec.encode_record(self._end_lsn, kind, payload)
                self._unpersisted.append(record)
                self._end_lsn += len(record)
            self._eager_pending = True
            if self._flusher_idle and records:
                self._work.notify()
            return self._end_lsn

    def _check_accepting(self, size: int) -> None:
        if self._stop_mode is not None:
            raise WalClosedError(f"WAL {self._directory} is closed")
        if self._failed is not None:
            raise WalFailedError(f"WAL {self._directory} is failed: {self._failed!r}") from self._failed
        if self._end_lsn - self._persisted_lsn + size > self._buffer_size_max:
            raise WalBackpressureError(f"WAL {self._directory}: more than {self._buffer_size_max} bytes unpersisted")

    def request_sync(self, lsn: int) -> None:
        """Ask for an fdatasync covering `lsn` as soon as possible, whatever the policy."""
        with self._lock:
            self._sync_requested_lsn = max(self._sync_requested_lsn, lsn)
            if lsn > self._persisted_lsn:
                self._work.notify()

    def wait_persisted(self, lsn: int, timeout_s: float) -> bool:
        """Block until persisted_lsn >= lsn (True) or the timeout passes (False). Asks for no sync."""
        deadline_s = time.monotonic() + timeout_s
        with self._lock:
            while self._persisted_lsn < lsn:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    return False
                self._persisted.wait(remaining_s)
            return True

    # ---- reading and releasing -------------------------------------------------------

    def replay(self, from_lsn: int = 0) -> Iterator[WalRecord]:
        """Records with lsn >= from_lsn, in order, as of the first record asked for: the
        persisted ones from the segment files, then the unpersisted ones from memory.
        Records below `first_lsn` were released and are not returned."""
        files: list[tuple[int, int, BinaryIO]] = []
        try:
            with self._lock:
                persisted_lsn = self._persisted_lsn
                in_memory = list(self._unpersisted)
                bounds = zip(self._segments, [*self._segments[1:], persisted_lsn], strict=True)
                # Opened under the lock, so release_before() cannot unlink them before we read.
                for start, end in bounds:
                    if end > from_lsn:
                        files.append((start, end, open(self._segment_path(start), "rb")))  # noqa: SIM115
            for start, end, file in files:
                with file:
                    data = file.read(SEGMENT_HEADER_SIZE + end - start)
                # Everything below persisted_lsn was fsynced and verified at open: any bad byte
                # now is corruption (last=False), not a torn tail.
                scan = codec.scan_segment(data, file.name, start_lsn=start, last=False)
                del data
                yield from (record for record in scan.records if record.lsn >= from_lsn)
            for encoded in in_memory:
                record = codec.decode_record(encoded)
                if record.lsn >= from_lsn:
                    yield record
        finally:
            for _, _, file in files:
                file.close()

    def release_before(self, lsn: int) -> None:
        """Delete the segments that end at or below `lsn` (never the current one), oldest first."""
        with self._lock:
            count = 0
            while count + 1 < len(self._segments) and self._segments[count + 1] <= lsn:
                count += 1
            doomed = self._segments[:count]
            del self._segments[:count]
        for index, start in enumerate(doomed):
            try:
                os.unlink(self._segment_path(start))
            except FileNotFoundError:
                pass
            except OSError:
                with self._lock:  # the rest stay held, so a later call retries them
                    self._segments[0:0] = doomed[index:]
                raise
        if doomed:
            fsync_directory(self._directory)

    # ---- stopping --------------------------------------------------------------------

    def close(self) -> None:
        """Write and fdatasync everything buffered, stop the flusher, close the file.

        Raises WalFailedError if something appended could not be persisted."""
        with self._lock:
            if self._closed or self._stop_mode is not None:
                return
            self._stop_mode = "close"
            self._work.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        else:
            # Never started: nothing was written yet and nothing can have failed.
            self._cycle(self._unpersisted[:], rewind=False, forced=True)
        os.close(self._fd)
        with self._lock:
            self._closed = True
            failed, unpersisted_size = self._failed, self._end_lsn - self._persisted_lsn
        if failed is not None or unpersisted_size:
            raise WalFailedError(f"WAL {self._directory} closed with {unpersisted_size} bytes unpersisted") from failed

    def power_loss(self) -> None:
        """Testbed fault: drop every byte not fdatasynced, as a power cut would, and close.

        The caller kills the process next; the log accepts nothing more."""
        with self._lock:
            if self._closed or self._stop_mode is not None:
                return
            self._stop_mode = "power_loss"
            self._work.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        # Sealed segments are fully synced; only the current one can hold unsynced bytes,
        # and a segment file past it can only be a creation that failed part-way.
        os.ftruncate(self._fd, self._segment_synced_size)
        os.fdatasync(self._fd)
        os.close(self._fd)
        for start in list_segments(self._directory):
            if start > self._segment_start_lsn:
                os.unlink(self._segment_path(start))
        fsync_directory(self._directory)
        with self._lock:
            self._closed = True
            self._unpersisted.clear()

    # ---- the flusher -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    step = self._next_step()
                if step is None:
                    return
                new, rewind, stopping = step
                self._cycle(new, rewind=rewind, forced=rewind or stopping)
                if stopping:
                    return
        except BaseException as exc:  # a bug here or in a callback: fail for good, never spin
            self._broken = True
            self._enter_failed(exc)

    def _next_step(self) -> tuple[list[bytes], bool, bool] | None:
        """Wait (lock held) until there is work: (records to write, rewind first?, stopping?)."""
        while True:
            if self._stop_mode == "power_loss" or self._broken:
                return None
            stopping = self._stop_mode == "close"
            now_s = time.monotonic()
            rewind = self._failed is not None
            if rewind and not stopping and now_s < self._retry_at_s:
                self._wait(self._retry_at_s - now_s)
                continue
            if rewind:
                self._written_count = 0  # the rewind drops every unsynced byte from the file
            new = self._unpersisted[self._written_count :]
            if new and not (
                rewind or stopping or self._eager_pending or self._sync_requested_lsn > self._persisted_lsn
            ):
                # Only lazy records wait: give them company for a moment.
                assert self._lazy_since_s is not None
                wait_s = self._lazy_since_s + limits.WAL_LAZY_DELAY_S - now_s
                if wait_s > 0:
                    self._wait(wait_s)
                    continue
            if new and self._eager_pending and not (rewind or stopping) and self._policy.mode == "always":
                # Group commit: when the last batch showed concurrent writers, give the others
                # a fraction of an fsync's time to join this batch rather than the next one.
                if self._gather_until_s is None and self._last_batch_eager >= 2:
                    self._gather_until_s = now_s + min(
                        self._fsync_duration_s * limits.WAL_GATHER_FRACTION, limits.WAL_GATHER_MAX_S
                    )
                if self._gather_until_s is not None and now_s < self._gather_until_s:
                    self._wait(self._gather_until_s - now_s)
                    continue
            if new or rewind or stopping or self._sync_wanted(now_s, forced=False):
                self._last_batch_eager = self._eager_count
                self._eager_count = 0
                self._gather_until_s = None
                self._eager_pending = False
                self._lazy_since_s = None
                return new, rewind, stopping
            timeout_s = None
            if self._policy.mode == "interval" and self._segment_size > self._segment_synced_size:
                timeout_s = max(0.0, self._last_sync_s + self._policy.interval_ms / 1000 - now_s)
            self._wait(timeout_s)

    def _wait(self, timeout_s: float | None) -> None:
        self._flusher_idle = True
        self._work.wait(timeout_s)
        self._flusher_idle = False

    def _sync_wanted(self, now_s: float, *, forced: bool) -> bool:
        unsynced_size = self._segment_size - self._segment_synced_size
        if unsynced_size == 0:
            return False
        if forced or self._policy.mode == "always" or unsynced_size >= self._unsynced_size_max:
            return True
        if self._sync_requested_lsn > self._persisted_lsn:
            return True
        return self._policy.mode == "interval" and now_s - self._last_sync_s >= self._policy.interval_ms / 1000

    def _cycle(self, new: list[bytes], *, rewind: bool, forced: bool) -> None:
        """Write `new`, fdatasync if due, publish; outside the lock. An OSError fails the log."""
        persisted_before = self._persisted_lsn
        try:
            if rewind:
                # After a failed write or fsync the page cache may hold anything (Linux marks
                # failed pages clean): cut back to what is known synced, rewrite from memory.
                os.ftruncate(self._fd, self._segment_synced_size)
                self._segment_size = self._segment_synced_size
            self._write(new)
            if self._sync_wanted(time.monotonic(), forced=forced):
                self._sync()
        except OSError as exc:
            self._enter_failed(exc)
        else:
            if rewind:
                with self._lock:
                    self._failed = None
        if self._on_persisted is not None and self._persisted_lsn > persisted_before:
            self._on_persisted(self._persisted_lsn)

    def _write(self, records: list[bytes]) -> None:
        group: list[bytes] = []
        size = self._segment_size
        for record in records:
            # Roll only at a record boundary, and never leave a segment without a record:
            # a record bigger than the limit gets a segment of its own.
            if size + len(record) > self._segment_size_max and size > SEGMENT_HEADER_SIZE:
                self._write_group(group)
                group = []
                self._roll()
                size = SEGMENT_HEADER_SIZE
            group.append(record)
            size += len(record)
        self._write_group(group)

    def _write_group(self, group: list[bytes]) -> None:
        if not group:
            return
        self._fault("write")
        data = b"".join(group)
        pwrite_all(self._fd, data, self._segment_size)
        self._segment_size += len(data)
        self._written_count += len(group)

    def _sync(self) -> None:
        if self._segment_size == self._segment_synced_size:
            return
        self._fault("fsync")
        started_s = time.monotonic()
        os.fdatasync(self._fd)
        self.fsync_count += 1
        self._last_sync_s = time.monotonic()
        self._fsync_duration_s = self._last_sync_s - started_s
        self._segment_synced_size = self._segment_size
        persisted_lsn = self._segment_start_lsn + self._segment_size - SEGMENT_HEADER_SIZE
        with self._lock:
            synced = self._unpersisted[: self._written_count]
            assert persisted_lsn == self._persisted_lsn + sum(map(len, synced)), "synced bytes != records"
            del self._unpersisted[: self._written_count]
            self._written_count = 0
            self._persisted_lsn = persisted_lsn
            self._persisted.notify_all()

    def _roll(self) -> None:
        self._sync()  # seal: recovery treats any bad byte in an earlier segment as corruption
        start_lsn = self._segment_start_lsn + self._segment_size - SEGMENT_HEADER_SIZE
        assert start_lsn == self._persisted_lsn
        self._fault("create")
        fd = create_segment(self._directory, start_lsn)
        os.close(self._fd)
        self._fd, self._segment_start_lsn = fd, start_lsn
        self._segment_size = self._segment_synced_size = SEGMENT_HEADER_SIZE
        with self._lock:
            self._segments.append(start_lsn)

    def _enter_failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._failed is None
            self._failed = exc
            self._retry_at_s = time.monotonic() + limits.WAL_FAILURE_RETRY_INTERVAL_S
        if first and self._on_failure is not None:
            self._on_failure(exc)

    def _fault(self, point: str) -> None:
        hook = self.fault_hook
        if hook is not None:
            hook(point)

    def _segment_path(self, start_lsn: int) -> str:
        return os.path.join(self._directory, codec.segment_file_name(start_lsn))

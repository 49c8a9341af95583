"""The engine's `Log`, simulated: the WAL shell's behaviour over a SimDisk, in simulated time.

Mirrors `engine/wal/log.py` step by step, with its threads replaced by one SimThread (the
flusher) and its files by SimFiles; the bytes are the real WAL's: records are framed by
`codec.encode_record`, segments start with `codec.encode_segment_header`, and `open`
decides torn versus corrupt with the real `codec.scan_segment`. So a power cut in the
simulation leaves exactly the bytes a real one could, and recovery runs the real rules on
them.

What is modelled, as in log.py:
- `append` (and `append_many`, all or none) buffers in memory (no I/O) and returns the
  record's end LSN; a lazy record (a SyncWrite's commit) waits up to WAL_LAZY_DELAY_S for
  company. `replay` reads the persisted records back from the segments, the rest from memory.
- The flusher takes everything buffered, writes it (into the page cache: `SimFile.cached`),
  rolls segments at record boundaries (sealing the old one with an fsync first, creating the
  new one with header + fsync + directory fsync), fsyncs per the policy (`always`,
  `interval=N`, `never`; a `request_sync` always gets one), then publishes `persisted_lsn`
  and calls `on_persisted`. Group commit falls out: appends that arrive during an fsync
  wait for the next cycle, and the gather window of log.py is kept.
- A process crash (`crash`) loses the in-memory buffer but not the page cache; if the
  flusher was in the middle of a write, a random prefix of that write reached the cache.
- `close` writes and fsyncs everything, as the real close; appends after it raise
  WalClosedError, which the engine turns into TMPFAIL.

Not modelled: write/fsync errors (the failed-WAL rewind), backpressure (WAL_BUFFER_SIZE_MAX),
and time spent by `open` (recovery is instantaneous in simulated time).

Invariants (asserted): persisted_lsn <= written_lsn <= end_lsn; only the current segment
holds unsynced bytes; every segment but the current one ends where the next begins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from durakv.engine import limits
from durakv.engine.wal import codec
from durakv.engine.wal.codec import SEGMENT_HEADER_SIZE, WalRecord
from durakv.engine.wal.log import FsyncPolicy, WalClosedError

from .simclock import SimClock, SimThread, park
from .simdisk import SimDisk, SimFile

# Timed waits overshoot by this much, so the condition waited for holds on waking despite
# float rounding (a wait that ends a hair early would be re-armed for ~0 s, forever).
_OVERSHOOT_S = 1e-9

# Whether open fsyncs the WAL directory, as log.py's open does since the simulation found that
# a segment whose creation a killed process never made durable could vanish in a later power
# cut with records fsynced into it (tests/sim/README.md, track record #1). False replays the bug.
OPEN_FSYNCS_DIRECTORY = True

AppendHook = Callable[[int, int, int, bytes], None]  # (lsn, end lsn, kind, payload)


@dataclass
class OpenReport:
    """What recovery found, for the trace and the checker."""

    segments: list[str]
    end_lsn: int
    torn: list[tuple[str, int, str]]  # (segment, valid size, reason) of each cut tail
    recreated: bool


@dataclass
class CrashState:
    """The log's positions at the instant its process died."""

    persisted_lsn: int  # fsync completed (reported to the engine)
    written_lsn: int  # in the page cache
    end_lsn: int  # appended
    partial_write: int  # bytes of an interrupted write that reached the page cache


class SimLog:
    """A WriteAheadLog stand-in: segments on a SimDisk, a SimThread flusher."""

    def __init__(
        self,
        clock: SimClock,
        disk: SimDisk,
        policy: FsyncPolicy,
        segment_size_max: int,
        segments: list[int],
        file: SimFile,
        name: str,
    ) -> None:
        # Use SimLog.open(): this only wires up the state open() recovered.
        self.clock = clock
        self.disk = disk
        self.policy = policy
        self.segment_size_max = segment_size_max
        self.name = name
        self._segments = segments
        self._file = file
        self._segment_start_lsn = segments[-1]
        self._segment_size = file.size
        self._segment_synced_size = file.size
        self.end_lsn = segments[-1] + file.size - SEGMENT_HEADER_SIZE
        self.written_lsn = self.end_lsn
        self.persisted_lsn = self.end_lsn
        self._unwritten: list[bytes] = []  # appended, not yet taken by the flusher
        self._unpersisted: list[bytes] = []  # every record in [persisted_lsn, end_lsn), in order (log.py)
        self._inflight: bytes | None = None  # being written right now
        self._sync_requested_lsn = 0
        self._eager_pending = False
        self._lazy_since: float | None = None
        self._eager_count = 0
        self._last_batch_eager = 0
        self._gather_until: float | None = None
        self._fsync_duration_s = 0.0
        self._last_sync_time = clock.time
        self._stop_mode: str | None = None
        self._thread: SimThread | None = None
        self._persist_waiters: list[SimThread] = []
        self.on_persisted: Callable[[int], None] | None = None
        self.on_append: AppendHook | None = None
        self.fsync_count = 0
        self.cycle_count = 0

    # -- recovery -----------------------------------------------------------------------
    @classmethod
    def open(
        cls, clock: SimClock, disk: SimDisk, *, policy: FsyncPolicy, segment_size_max: int, name: str
    ) -> tuple[SimLog, OpenReport]:
        """Recover the WAL on `disk` as WriteAheadLog.open does: cut a torn tail, refuse corruption."""
        starts = _list_segments(disk)
        previous_end: int | None = None
        recreate = not starts
        torn = []
        for index, start in enumerate(starts):
            file_name = codec.segment_file_name(start)
            file = disk.open(file_name)
            scan = codec.scan_segment(
                file.read(),
                f"{name}:{file_name}",
                start_lsn=start,
                last=index == len(starts) - 1,
                previous_end_lsn=previous_end,
                keep_records=False,
            )
            if scan.torn_reason is not None:
                torn.append((file_name, scan.valid_size, scan.torn_reason))
            if scan.torn_reason is not None and scan.valid_size == 0:  # S1/S2: recreate it below
                disk.unlink(file_name)
                disk.fsync_dir()
                recreate = True
            elif scan.torn_reason is not None:  # T1: cut the torn tail
                file.truncate_and_sync(scan.valid_size)
            previous_end = scan.end_lsn
        end_lsn = previous_end if previous_end is not None else 0
        if recreate:
            file = _create_segment_now(disk, end_lsn)
            if not starts:
                starts.append(end_lsn)
            assert starts[-1] == end_lsn
        else:
            file = disk.open(codec.segment_file_name(starts[-1]))
            # The bytes found may sit only in the page cache (the process died, the machine
            # did not): make them durable before calling them persisted, as log.py does.
            disk.fsync(file)
        if OPEN_FSYNCS_DIRECTORY:
            disk.fsync_dir()
        assert starts[-1] + file.size - SEGMENT_HEADER_SIZE == end_lsn
        report = OpenReport([codec.segment_file_name(s) for s in starts], end_lsn, torn, recreate)
        return cls(clock, disk, policy, segment_size_max, starts, file, name), report

    def replay(self, from_lsn: int = 0) -> Iterator[WalRecord]:
        """Records with lsn >= from_lsn, as log.py's replay: the persisted ones read back from
        the segments with the real codec, then the unpersisted ones from memory."""
        persisted_lsn, in_memory = self.persisted_lsn, list(self._unpersisted)
        bounds = zip(self._segments, [*self._segments[1:], persisted_lsn], strict=True)
        for start, end in bounds:
            if end <= from_lsn:
                continue
            file_name = codec.segment_file_name(start)
            data = self.disk.open(file_name).read()[: SEGMENT_HEADER_SIZE + end - start]
            scan = codec.scan_segment(data, f"{self.name}:{file_name}", start_lsn=start, last=False)
            yield from (record for record in scan.records if record.lsn >= from_lsn)
        for encoded in in_memory:
            record = codec.decode_record(encoded)
            if record.lsn >= from_lsn:
                yield record

    @property
    def first_lsn(self) -> int:
        return self._segments[0]

    # -- the engine's side: the `Log` protocol ------------------------------------------
    def append(self, kind: int, payload: bytes, *, lazy: bool = False) -> int:
        codec.check_record_input(kind, payload)
        if self._stop_mode is not None:
            raise WalClosedError(f"WAL {self.name} is closed")
        self._buffer(kind, payload)
        if not lazy:
            self._eager_pending = True
            self._eager_count += 1
        elif self._lazy_since is None:
            self._lazy_since = self.clock.time
        else:
            return self.end_lsn
        self._notify()
        return self.end_lsn

    def append_many(self, records: list[tuple[int, bytes]]) -> int:
        """Buffer several records contiguously, all or none; returns the last one's end LSN."""
        for kind, payload in records:
            codec.check_record_input(kind, payload)
        if self._stop_mode is not None:
            raise WalClosedError(f"WAL {self.name} is closed")
        for kind, payload in records:
            self._buffer(kind, payload)
        self._eager_pending = True
        if records:
            self._notify()
        return self.end_lsn

    def _buffer(self, kind: int, payload: bytes) -> None:
        lsn = self.end_lsn
        record = codec.encode_record(lsn, kind, payload)
        self._unwritten.append(record)
        self._unpersisted.append(record)
        self.end_lsn += len(record)
        if self.on_append is not None:
            self.on_append(lsn, self.end_lsn, kind, payload)

    def request_sync(self, lsn: int) -> None:
        self._sync_requested_lsn = max(self._sync_requested_lsn, lsn)
        if lsn > self.persisted_lsn:
            self._notify()

    # -- the shell's side ---------------------------------------------------------------
    def start(self) -> None:
        assert self._thread is None and self._stop_mode is None
        self._last_sync_time = self.clock.time
        self._thread = self.clock.spawn(f"{self.name}-flusher", self._run())

    def wait_persisted(self, waiter: SimThread, lsn: int, timeout_s: float):
        """`yield log.wait_persisted(me, lsn, t)`: park until persisted_lsn >= lsn or t passes."""
        if self.persisted_lsn >= lsn:
            return 0.0
        if waiter not in self._persist_waiters:
            self._persist_waiters.append(waiter)
        return park(timeout_s)

    def release_before(self, lsn: int) -> list[str]:
        """Unlink the segments that end at or below `lsn` (never the current one), oldest first.

        The caller fsyncs the directory afterwards (after its latency); returns the names."""
        count = 0
        while count + 1 < len(self._segments) and self._segments[count + 1] <= lsn:
            count += 1
        doomed = self._segments[:count]
        del self._segments[:count]
        names = [codec.segment_file_name(start) for start in doomed]
        for file_name in names:
            self.disk.unlink(file_name)
        return names

    def close(self) -> SimThread | None:
        """Begin a clean close: everything buffered is written and fsynced by the flusher's
        last cycle, and no append is accepted from now on. Returns the flusher to join."""
        if self._stop_mode is None:
            self._stop_mode = "close"
            self._notify()
        return self._thread

    def crash(self) -> CrashState:
        """The process dies: the flusher stops, the buffer is gone, the page cache stays."""
        partial = 0
        if self._inflight is not None:
            partial = self.clock.prng.randint(0, len(self._inflight) - 1)
            self._file.write(self._segment_size, self._inflight[:partial])
        state = CrashState(self.persisted_lsn, self.written_lsn, self.end_lsn, partial)
        self._stop_mode = "crashed"
        if self._thread is not None:
            self._thread.kill()
        self._unwritten.clear()
        self._unpersisted.clear()
        self.on_persisted = None
        self.on_append = None
        return state

    def crash_state(self) -> CrashState:
        return CrashState(self.persisted_lsn, self.written_lsn, self.end_lsn, 0)

    @property
    def segment_names(self) -> list[str]:
        return [codec.segment_file_name(start) for start in self._segments]

    # -- the flusher --------------------------------------------------------------------
    def _notify(self) -> None:
        if self._thread is not None and self._thread.parked:
            self._thread.wake(self.clock.uniform(0.0, 0.00002))  # a futex wake-up is not instant

    def _run(self):
        """The flusher thread: log.py's `_run` + `_next_step` + `_cycle`."""
        while True:
            # -- wait for work (log.py `_next_step`) --
            while True:
                stopping = self._stop_mode == "close"
                now = self.clock.time
                new = bool(self._unwritten)
                if new and not (stopping or self._eager_pending or self._sync_requested_lsn > self.persisted_lsn):
                    assert self._lazy_since is not None
                    wait_s = self._lazy_since + limits.WAL_LAZY_DELAY_S - now
                    if wait_s > 0:
                        yield park(wait_s + _OVERSHOOT_S)
                        continue
                if new and self._eager_pending and not stopping and self.policy.mode == "always":
                    if self._gather_until is None and self._last_batch_eager >= 2:
                        self._gather_until = now + min(
                            self._fsync_duration_s * limits.WAL_GATHER_FRACTION, limits.WAL_GATHER_MAX_S
                        )
                    if self._gather_until is not None and now < self._gather_until:
                        yield park(self._gather_until - now + _OVERSHOOT_S)
                        continue
                if new or stopping or self._sync_wanted(now, forced=False):
                    self._last_batch_eager = self._eager_count
                    self._eager_count = 0
                    self._gather_until = None
                    self._eager_pending = False
                    self._lazy_since = None
                    break
                timeout_s = None
                if self.policy.mode == "interval" and self._segment_size > self._segment_synced_size:
                    timeout_s = max(0.0, self._last_sync_time + self.policy.interval_ms / 1000 - now) + _OVERSHOOT_S
                yield park(timeout_s)
            # -- one cycle (log.py `_cycle`) --
            self.cycle_count += 1
            batch, self._unwritten = self._unwritten, []
            persisted_before = self.persisted_lsn
            yield from self._write(batch)
            if self._sync_wanted(self.clock.time, forced=stopping):
                yield from self._sync()
            if self.persisted_lsn > persisted_before:
                self._publish()
            if stopping:
                assert self.persisted_lsn == self.end_lsn, "a clean close left bytes unpersisted"
                return

    def _publish(self) -> None:
        self.clock.log(self.name, f"wal persisted {self.persisted_lsn}")
        waiters, self._persist_waiters = self._persist_waiters, []
        for waiter in waiters:
            waiter.wake()
        if self.on_persisted is not None:
            self.on_persisted(self.persisted_lsn)

    def _sync_wanted(self, now: float, *, forced: bool) -> bool:
        unsynced_size = self._segment_size - self._segment_synced_size
        if unsynced_size == 0:
            return False
        if forced or self.policy.mode == "always" or unsynced_size >= limits.WAL_UNSYNCED_SIZE_MAX:
            return True
        if self._sync_requested_lsn > self.persisted_lsn:
            return True
        return self.policy.mode == "interval" and now - self._last_sync_time >= self.policy.interval_ms / 1000

    def _write(self, records: list[bytes]):
        group: list[bytes] = []
        size = self._segment_size
        for record in records:
            # Roll only at a record boundary, and never leave a segment without a record.
            if size + len(record) > self.segment_size_max and size > SEGMENT_HEADER_SIZE:
                yield from self._write_group(group)
                group = []
                yield from self._roll()
                size = SEGMENT_HEADER_SIZE
            group.append(record)
            size += len(record)
        yield from self._write_group(group)

    def _write_group(self, group: list[bytes]):
        if not group:
            return
        data = b"".join(group)
        self._inflight = data
        yield self.disk.write_latency(len(data))
        self._inflight = None
        self._file.write(self._segment_size, data)
        self._segment_size += len(data)
        self.written_lsn += len(data)
        assert self.written_lsn == self._segment_start_lsn + self._segment_size - SEGMENT_HEADER_SIZE

    def _sync(self):
        if self._segment_size == self._segment_synced_size:
            return
        started = self.clock.time
        size = self._segment_size
        yield self.disk.fsync_latency()
        self.disk.fsync(self._file)
        self.fsync_count += 1
        self._last_sync_time = self.clock.time
        self._fsync_duration_s = self._last_sync_time - started
        assert self._segment_size == size, "nothing is written while an fsync runs"
        self._segment_synced_size = size
        persisted_lsn = self._segment_start_lsn + size - SEGMENT_HEADER_SIZE
        synced = 0
        while self.persisted_lsn + synced < persisted_lsn:
            synced += len(self._unpersisted.pop(0))
        assert self.persisted_lsn + synced == persisted_lsn, "synced bytes != records"
        self.persisted_lsn = persisted_lsn
        assert self.persisted_lsn <= self.written_lsn <= self.end_lsn

    def _roll(self):
        yield from self._sync()  # seal: recovery treats any bad byte in an earlier segment as corruption
        start_lsn = self._segment_start_lsn + self._segment_size - SEGMENT_HEADER_SIZE
        assert start_lsn == self.persisted_lsn
        file_name = codec.segment_file_name(start_lsn)
        if self.disk.exists(file_name):  # left by an earlier attempt: never held records
            self.disk.unlink(file_name)
        file = self.disk.create(file_name, atomic_size=SEGMENT_HEADER_SIZE)
        file.write(0, codec.encode_segment_header(start_lsn))
        yield self.disk.fsync_latency()
        self.disk.fsync(file)
        yield self.disk.dir_fsync_latency()
        self.disk.fsync_dir()
        self._file, self._segment_start_lsn = file, start_lsn
        self._segment_size = self._segment_synced_size = SEGMENT_HEADER_SIZE
        self._segments.append(start_lsn)
        self.clock.log(self.name, f"wal new segment {file_name}")


def _list_segments(disk: SimDisk) -> list[int]:
    starts = []
    for file_name in disk.listdir():
        start = codec.parse_segment_file_name(file_name)
        assert start is not None, f"unexpected file {file_name} in the WAL directory"
        starts.append(start)
    return sorted(starts)


def _create_segment_now(disk: SimDisk, start_lsn: int) -> SimFile:
    """`segments.create_segment`, during open (instantaneous): header, fsync, directory fsync."""
    file_name = codec.segment_file_name(start_lsn)
    if disk.exists(file_name):
        disk.unlink(file_name)
    file = disk.create(file_name, atomic_size=SEGMENT_HEADER_SIZE)
    file.write(0, codec.encode_segment_header(start_lsn))
    disk.fsync(file)
    disk.fsync_dir()
    return file

"""Simulated nodes and the cluster that holds them: the embedded shell, rebuilt on simulated I/O.

Owns each node's life. A `SimNode` is what `engine/embedded.py`'s `EmbeddedBucket` is, with
its threads and files replaced: one real `BucketEngine` over a `SimLog` (WAL on a SimDisk)
and a `SimStore` (LMDB), a maintenance SimThread that feeds the engine time (durability
timeouts through `tick(now)`) and checkpoints the memtable into the store through
`freeze_for_checkpoint` / `apply` / `checkpoint_done` (or `checkpoint_failed` when the WAL
does not persist in time), and the flusher's `on_persisted` wired to the engine.

A node stops three ways:
- `crash("process")`: SIGKILL. Memory is gone (engine, WAL buffer, a checkpoint in flight);
  the page cache, the directory and the store stay.
- `crash("power")`: a power cut. As above, and the disk drops what was not fsynced.
- `shutdown()`: a clean close, as EmbeddedBucket.close: stop maintenance, checkpoint, close
  the WAL (write and fsync everything), leave the CLEAN marker.
`start()` recovers as EmbeddedBucket.__init__ does (SimLog.open, the store-not-ahead check,
the real `BucketCore.recover`) and then has the checker verify the recovered engine against
the node's history.

`SimCluster` holds the nodes, routes a key to its vbucket's active, and (`faults`) injects
the run's faults. Today it holds one node; see the README for what a multi-node run adds.

Must never: decide KV semantics (the engine does) or judge outcomes (the checker does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from durakv.engine.bucket import BucketConfig
from durakv.engine.errors import EngineError
from durakv.engine.kv import BucketEngine
from durakv.engine.limits import MEMTABLE_SIZE_CHECKPOINT
from durakv.engine.wal import codec
from durakv.engine.wal.log import FsyncPolicy

from .checker import COLLECTION, SCOPE, Crash, History, Violation
from .simclock import SimClock, SimThread, park
from .simdisk import FileLoss, SimDisk
from .simlog import SimLog
from .simstore import SimStore

if TYPE_CHECKING:
    from .workload import Workload

TICK_BUSY_S = 0.02  # embedded.py `_TICK_BUSY_S`: timeouts are checked this often while SyncWrites wait
TICK_IDLE_S = 0.5  # embedded.py: the maintenance thread's wait with nothing pending


@dataclass
class NodeOptions:
    fsync_policy: str = "always"
    segment_size_max: int = 4096
    checkpoint_interval_s: float = 0.5  # embedded.py uses CHECKPOINT_INTERVAL_S (5 s); runs are short
    checkpoint_wal_wait_s: float = 30.0  # embedded.py CHECKPOINT_WAL_WAIT_S


class SimNode:
    """One node: a real BucketEngine over simulated I/O (see the module docstring)."""

    def __init__(
        self, clock: SimClock, node_id: str, config: BucketConfig, options: NodeOptions, disk: SimDisk
    ) -> None:
        self.clock = clock
        self.node_id = node_id
        self.config = config
        self.options = options
        self.disk = disk
        self.store = SimStore()
        self.history = History(node_id, config.num_vbuckets)
        self.engine: BucketEngine | None = None
        self.log: SimLog | None = None
        self.incarnation = 0
        self.up = False
        self.stopping = False
        self.workload: Workload | None = None
        self.keys: list[bytes] = []  # the workload's keys: checked after every recovery
        self._clean_marker = False
        self._maintenance: SimThread | None = None
        self._stop = False
        self._idle = False
        self.checkpoints = 0
        self.checkpoints_failed = 0
        self.recoveries: list[str] = []

    @property
    def serving(self) -> bool:
        return self.up and not self.stopping

    # -- starting -----------------------------------------------------------------------
    def start(self) -> None:
        assert not self.up
        clean, self._clean_marker = self._clean_marker, False
        log, report = SimLog.open(
            self.clock,
            self.disk,
            policy=FsyncPolicy.parse(self.options.fsync_policy),
            segment_size_max=self.options.segment_size_max,
            name=self.node_id,
        )
        if self.history.crashes:
            lost = self.history.recovered(report.end_lsn)
            torn = "; ".join(f"{name}@{size}: {reason}" for name, size, reason in report.torn) or "none"
            line = f"recovered end={report.end_lsn} lost_records={len(lost)} torn={torn}"
            self.recoveries.append(line)
            self.clock.log(self.node_id, line)
        if not log.first_lsn <= self.store.checkpoint_lsn <= log.end_lsn:
            raise EngineError(
                f"{self.node_id}: the WAL holds {log.first_lsn}..{log.end_lsn} but the store has checkpointed "
                f"up to {self.store.checkpoint_lsn}; WAL segments are missing"
            )
        self.incarnation += 1
        engine = BucketEngine(self.config, log, self.store, node_id=self.node_id, rng=self.clock.prng)
        log.on_append = self.history.append
        engine.recover(log.replay(self.store.checkpoint_lsn), clean_shutdown=clean, now=self.clock.now)
        self.history.check_engine(engine, [self._skey(engine, key) for key in self.keys])
        self.history.check_reads(engine, self.keys, self.clock.now)
        log.on_persisted = self._on_persisted
        log.start()
        self.engine, self.log, self.up, self.stopping, self._stop = engine, log, True, False, False
        self._maintenance = self.clock.spawn(f"{self.node_id}-maint", self._maintain(engine, log))
        self.clock.log(self.node_id, f"started (clean={clean}, checkpoint_lsn={self.store.checkpoint_lsn})")

    @staticmethod
    def _skey(engine: BucketEngine, key: bytes) -> bytes:
        return engine.locate(SCOPE, COLLECTION, key).skey

    def _on_persisted(self, lsn: int) -> None:
        assert self.engine is not None
        self.engine.on_persisted(lsn)

    def sync_write_started(self) -> None:
        """A client waits on a SyncWrite: the maintenance thread must watch timeouts (embedded `call`)."""
        if self._idle and self._maintenance is not None:
            self._maintenance.wake()

    # -- stopping -----------------------------------------------------------------------
    def crash(self, kind: str) -> Crash:
        """SIGKILL ("process") or a power cut ("power"); see the module docstring."""
        assert self.up and kind in ("process", "power")
        log = self.log
        assert log is not None
        state = log.crash()
        if self._maintenance is not None:
            self._maintenance.kill()
        intact_lsn = state.written_lsn + state.partial_write
        damage = ""
        if kind == "power":
            losses = self.disk.power_loss()
            intact_lsn = _intact_lsn(losses)
            damage = " ".join(
                f"{loss.name}:kept={loss.kept}/{loss.cached_before}{',' + loss.damage if loss.damage else ''}"
                for loss in losses.values()
                if loss.cached_before
            )
        crash = Crash(
            self.node_id,
            kind,
            self.clock.time,
            state.persisted_lsn,
            state.written_lsn,
            state.end_lsn,
            intact_lsn,
            tuple(self.disk.vanished) if kind == "power" else (),
        )
        self.history.crashed(crash)
        self._down()
        self.clock.log(self.node_id, f"CRASH {crash.describe()} {damage}".rstrip())
        return crash

    def shutdown(self):
        """A clean close (a generator for the thread that asks for it), as EmbeddedBucket.close."""
        assert self.up and not self.stopping
        me = self.clock.current
        assert me is not None
        engine, log = self.engine, self.log
        assert engine is not None and log is not None
        self.stopping = True
        self.clock.log(self.node_id, "shutdown begins")
        self._stop = True
        maintenance = self._maintenance
        if maintenance is not None:
            maintenance.wake()
            while maintenance.alive:  # parks may end early (a stale wake-up), as condition waits do
                yield maintenance.join(me)
        clean = yield from self._checkpoint(engine, log)
        flusher = log.close()
        while flusher is not None and flusher.alive:
            yield flusher.join(me)
        state = log.crash_state()
        assert state.persisted_lsn == state.end_lsn, state
        crash = Crash(self.node_id, "clean", self.clock.time, *(state.end_lsn,) * 4)
        self.history.crashed(crash)
        self._clean_marker = clean
        self._down()
        self.clock.log(self.node_id, f"shutdown done (clean marker: {clean})")

    def _down(self) -> None:
        self.up = False
        self.stopping = False
        self.engine = None
        self.log = None
        self._maintenance = None
        if self.workload is not None:
            self.workload.node_down(self)

    # -- the maintenance thread ---------------------------------------------------------
    def _maintain(self, engine: BucketEngine, log: SimLog):
        """embedded.py `_maintain`: tick the engine, checkpoint now and then."""
        last_checkpoint = self.clock.time
        while not self._stop:
            self._idle = not engine.sync_writes_in_flight()
            yield park(TICK_IDLE_S if self._idle else TICK_BUSY_S)
            self._idle = False
            engine.tick(self.clock.now)
            due = self.clock.time - last_checkpoint >= self.options.checkpoint_interval_s
            if engine.memtable_size() >= MEMTABLE_SIZE_CHECKPOINT or (due and engine.checkpoint_wanted()):
                last_checkpoint = self.clock.time
                yield from self._checkpoint(engine, log)

    def _checkpoint(self, engine: BucketEngine, log: SimLog):
        """embedded.py `_checkpoint`: WAL persisted first, then the store, then release the WAL."""
        me = self.clock.current
        assert me is not None
        batch = engine.freeze_for_checkpoint()
        log.request_sync(batch.checkpoint_lsn)
        deadline = self.clock.time + self.options.checkpoint_wal_wait_s
        while log.persisted_lsn < batch.checkpoint_lsn:
            yield log.wait_persisted(me, batch.checkpoint_lsn, TICK_BUSY_S)
            if log.persisted_lsn >= batch.checkpoint_lsn:
                break
            engine.tick(self.clock.now)  # keep durability timeouts running while waiting
            if self.clock.time >= deadline:
                engine.checkpoint_failed()
                self.checkpoints_failed += 1
                self.clock.log(self.node_id, f"checkpoint to {batch.checkpoint_lsn} failed: WAL not persisted in time")
                return False
        yield self.disk.fsync_latency() + self.disk.fsync_latency()  # LMDB: data pages, then the meta page
        if log.persisted_lsn < batch.checkpoint_lsn:
            raise Violation(f"{self.node_id}: the store would be ahead of the WAL")
        # Vbuckets rolled back to zero go first (CheckpointBatch.vbuckets_delete, where the engine has it).
        for vbid in sorted(getattr(batch, "vbuckets_delete", ())):
            self.store.delete_vbucket(vbid)
        self.store.apply(batch)
        engine.checkpoint_done()
        dropped = sorted(engine.dropped_cids)
        for cid in dropped:
            self.store.delete_collection(cid)
        engine.purged(dropped)
        released = log.release_before(batch.checkpoint_lsn)
        self.checkpoints += 1
        self.clock.log(
            self.node_id,
            f"checkpoint to {batch.checkpoint_lsn}: {len(batch.docs)} docs, {len(batch.prepares_put)} prepares put, "
            f"{len(batch.prepares_delete)} deleted, released {len(released)} segments",
        )
        if released:
            yield self.disk.dir_fsync_latency()
            self.disk.fsync_dir()
        return True


def _intact_lsn(losses: dict[str, FileLoss]) -> int:
    """Where the intact bytes end, in LSN, after a power cut: only the last segment can be cut
    (every earlier one was fsynced before the next was created)."""
    starts = sorted((codec.parse_segment_file_name(name), loss) for name, loss in losses.items())
    if not starts:
        return 0
    start, loss = starts[-1]
    assert start is not None
    return start + max(0, loss.intact_size - codec.SEGMENT_HEADER_SIZE)


@dataclass
class FaultOptions:
    """Which faults are active in a run (FoundationDB: activated per run, fire with a rate)."""

    kinds: tuple[str, ...] = ()  # of "crash", "power", "restart", "slowdisk"
    interval_s: tuple[float, float] = (0.1, 1.0)  # between two faults
    downtime_s: tuple[float, float] = (0.001, 0.3)
    slow_s: tuple[float, float] = (0.2, 2.0)  # how long a slow-disk episode lasts


class SimCluster:
    """The nodes of a run, their routing, and the fault injector."""

    def __init__(self, clock: SimClock, config: BucketConfig, node_options: NodeOptions, disk_profile) -> None:
        self.clock = clock
        self.config = config
        self.nodes: dict[str, SimNode] = {}
        node_id = "n1"  # one node today: it is the active of every vbucket
        self.nodes[node_id] = SimNode(clock, node_id, config, node_options, SimDisk(clock, disk_profile))
        self.faults_fired: list[str] = []
        self._fault_thread: SimThread | None = None

    def start(self, workload: Workload) -> None:
        for node in self.nodes.values():
            node.workload = workload
            node.keys = list(workload.keys)
            node.start()

    def route(self, key: bytes) -> SimNode | None:
        """The node a client sends `key` to: its vbucket's active (the only node, for now)."""
        return next(iter(self.nodes.values()))

    def durability_possible(self, key: bytes) -> bool:
        """Whether `key`'s vbucket chain can form a durable majority (one node: always)."""
        return True

    # -- faults -------------------------------------------------------------------------
    def start_faults(self, options: FaultOptions, until) -> None:
        if options.kinds:
            self._fault_thread = self.clock.spawn("faults", self._faults(options, until))

    def _faults(self, options: FaultOptions, until):
        clock = self.clock
        while True:
            yield clock.uniform(*options.interval_s)
            if until():
                return
            kind = options.kinds[clock.prng.randrange(len(options.kinds))]
            node = list(self.nodes.values())[clock.prng.randrange(len(self.nodes))]
            self.faults_fired.append(kind)
            if kind == "slowdisk":
                node.disk.profile.slow = True
                clock.log(node.node_id, "disk turns slow")
                yield clock.uniform(*options.slow_s)
                node.disk.profile.slow = False
                clock.log(node.node_id, "disk back to normal")
                continue
            if not node.up or node.stopping:
                continue
            if kind == "restart":
                yield from node.shutdown()
            else:
                node.crash("process" if kind == "crash" else "power")
            yield clock.uniform(*options.downtime_s)
            node.start()

    @property
    def faults_done(self) -> bool:
        """The injector has finished its last fault (it stops once `until()` holds)."""
        return self._fault_thread is None or not self._fault_thread.alive

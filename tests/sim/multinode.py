"""Multi-node runs: three nodes, the real engine and the real stream cores, one seed.

    python -m tests.sim.run --multinode --seed N [--steps M] [--quiet] [--seeds K [--keep-going]]
    python -m tests.sim.multinode --seed N ...            (the same)

What a run is. Three `SimNode`s (real `BucketEngine` over `SimLog`/`SimStore`/`SimDisk`), one
bucket of 1-8 vbuckets with 1 or 2 replicas. The map (`MultiCluster.chains`) is set through
`engine.set_topology`: `n1` starts as the active of every vbucket, each vbucket's replicas are
taken from `n2`/`n3` (rotating when there is one replica slot), a node outside a vbucket's
chain holds it DEAD. Every (replica node, vbucket) pair has its own `SimNetwork` stream to the
vbucket's current active, carrying one `StreamConsumer` (replica end) and one `StreamProducer`
(active end) wired as tests/unit/test_engine_replica.py wires them: the producer is fed the
active's change feed synchronously from `on_change` (so the feed can never trim a record the
producer has not seen), backfills from `SimStore.backfill_read` when the feed has moved past
what it sent (`feed_records_max` makes that happen in small runs), and is flow-controlled by
the consumer's BufferAcks; the active refuses a request as replication_service.py does
(NOT_MY_VBUCKET, or TMPFAIL while its feed is not `streamable`); the consumer's
`Apply`/`Rollback`/`AdoptFailoverLog` are carried out on the replica's engine, its SeqnoAcks go
to the producer and to the active's `engine.replica_ack`, and the replica engine's
`on_replica_persisted` feeds `consumer.persisted`. A broken stream (a dropped message, a
partition outlasting the keepalive, either end stopping) makes the consumer re-request from
its last complete snapshot after a short backoff (polling while the active is down); a
restarted replica rebuilds its consumers from `engine.replica_state`.

Faults (swarm-chosen per seed): replica SIGKILL, replica power cut, replica clean restart,
message drops (each drop breaks its stream), partitions between the active and a replica
(healed before or after the keepalive), slow disks on any node, and (`failover`, at most once
per run) a crash of the active followed by a hard failover:
1. `n1` stops, SIGKILL (its page cache survives) or power cut (its unsynced bytes go);
   sometimes a replica loses power at the same instant (a rack losing power) and restarts
   before the failover;
2. after an auto-failover delay the cluster manager's choice is made as the real one makes
   it: each survivor reports its copies (`node_control.vbucket_stats`), turned into (HPS, high
   seqno) as `manager_server.gather_positions` does, and `vbmap.failover` picks the new map
   (failover.py). The promoted replica's engine is set ACTIVE with the new chain (it takes
   over its pending prepares with no deadline); the other replica re-streams from it and rolls
   back if the real rollback decision says so;
3. later `n1` restarts and rejoins as a replica in each chain's empty slot; its copies roll
   back to what the new actives hold (through the real rollback decision and consumer core).
After a failover, replica faults hit only nodes that are the active of nothing (promoted
actives never stop in this version), and partitions cut one such node from the others.

The truth of a vbucket is one history (`Replication.truth_history`): the old active's records
until the failover; then the promoted node's, which adopts (`NodeHistory.adopt`) the old
active's records up to the seqno it held and from then on is judged record by record as an
active is. Writes pointing at a record past that seqno are lost by the failover.

Which acknowledged writes must survive a failover (checked at the failover, `failover.py`
`failover_loss_allowed`; "memory loss" = SIGKILL or power cut of that replica between the
write's request and the failover; the old active's own copy never counts: it rolls back):

| level | active SIGKILL | active power cut | ... and a replica lost power at the same instant |
|---|---|---|---|
| NONE | may be lost | may be lost | may be lost |
| MAJORITY | survives unless a replica of the chain had a memory loss | same | may be lost (that is a memory loss) |
| MAJORITY_AND_PERSIST_TO_ACTIVE | as MAJORITY: the active's fsync dies with its copy | same | may be lost |
| PERSIST_TO_MAJORITY | survives | survives | survives (a replica fsynced it before the ack) |

Why: an acknowledged SyncWrite is held by a majority of its chain, the active and at least one
replica (received, or fsynced for PERSIST_TO_MAJORITY). Every replica's copy is a prefix of
the old active's history, and the planner promotes the highest position, so the promoted copy
holds every record some surviving replica holds. A replica keeps a received record across
anything but its own memory loss, and an fsynced one across everything. Never, whatever the
faults: a record the promoted copy lacks that was not written past it, an acknowledged
SyncWrite whose prepare survived that ends aborted or pending, an ambiguous one left pending,
a completion flipped on the surviving history.

Checked:
- every active's history, as in single-node runs (every record, every answer, every read);
  before a failover that is `n1`'s, after it the promoted nodes' for their vbuckets;
- at every restart: recovery cut the node's WAL exactly where the disk model says
  (History.recovered), and each replica vbucket still holds at least the persisted seqno it
  acknowledged (a persisted ack is a promise the replica keeps across a power cut);
- at a failover: the promoted copy is exactly the old active's history up to its high seqno
  (documents, pending prepares), and every acknowledged write past it was allowed to go
  (the table above);
- at the end, before anything heals: every replica (node that is the active of nothing) loses
  power at once and restarts; every acknowledged PERSIST_TO_MAJORITY write is still held by a
  majority of its chain (the active, plus replicas whose recovered copy reaches its prepare);
  one acknowledged before a failover is held by the new active (it was judged at the failover;
  the failed node's copy is gone and the node that rejoined made it no promise);
- convergence, twice (after the faults stop and after a final SIGKILL of every replica): once
  streams drain and promoted actives have recommitted what they took over, each replica's copy
  of each vbucket (and each promoted active's own) has the truth's high seqno, exactly its
  committed documents and pending prepares; so a rejoined node rolled back whatever the new
  active never had;
- every acknowledgement (check_acknowledgements against the truth: no acknowledged write lost
  but by a failover the table allows, no acknowledged SyncWrite aborted or left pending,
  ambiguous ones committed or absent, all or nothing);
- completions never flip: every COMMIT/ABORT a replica copy ever logged, unless a rollback or
  a failover discarded the branch it was on, matches the truth's completion of that prepare.

Runs without a failover check exactly what they checked before failover was modelled.

Must never: decide what is right by asking an engine (the histories are the oracle; the
engines only report the positions the cluster manager would be told).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from durakv.engine.bucket import BucketConfig
from durakv.engine.document import store_key
from durakv.engine.durability import Chain, Level
from durakv.engine.errors import Status
from durakv.engine.keys import vbucket_of
from durakv.engine.records import ITEM_KINDS, Kind
from durakv.engine.replica import ReplicaItem
from durakv.engine.vbucket import VBState
from durakv.replication import items as it
from durakv.replication import stream_consumer as sc
from durakv.replication.stream_producer import StreamProducer, open_stream

from . import failover as fo
from .checker import Entry, History, Tally, Violation, check_acknowledgements
from .cluster import NodeOptions, SimCluster, SimNode
from .network import NetworkOptions, SimNetwork, Stream
from .simclock import SimClock, SimThread
from .simdisk import DiskProfile, SimDisk
from .workload import Workload, WorkloadOptions

ACTIVE = "n1"  # the active of every vbucket until a failover
REPLICA_NODES = ("n2", "n3")
NODES = (ACTIVE, *REPLICA_NODES)
FAULT_KINDS = ("crash", "power", "restart", "drop", "partition", "slowdisk")
FAILOVER_PROBABILITY = 0.5  # of a run having the "failover" fault (the active crashes, a replica is promoted)
RACK_POWER_PROBABILITY = 0.3  # of a replica losing power at the same instant as the active
FAILOVER_WEIGHT = 3  # the failover fault is this many times as likely as each other one, until it fires
FAILOVER_DELAY_S = (0.001, 0.3)  # from the active's crash to the failover (the auto-failover timeout)
REJOIN_DELAY_S = (0.001, 0.5)  # from the failover to the failed node's restart as a replica
STEPS_DEFAULT = 150
CONVERGE_S = 120.0  # simulated seconds the streams get to drain once the faults stop
RECONNECT_S = (0.002, 0.03)
CONTROL_BYTES = 32  # replica -> active messages: not flow-controlled, a nominal size
TIME_MAX_S = 100_000.0
TRACE_TAIL_LINES = 60

_KINDS = {it.Mutation: Kind.MUTATION, it.Deletion: Kind.DELETION, it.Expiration: Kind.EXPIRATION,
          it.Prepare: Kind.PREPARE, it.Commit: Kind.COMMIT, it.Abort: Kind.ABORT}  # fmt: skip


def to_replica(item) -> ReplicaItem:
    """A stream item as the replica engine logs it (the wiring of test_engine_replica.py)."""
    kind = _KINDS[type(item)]
    if kind in (Kind.COMMIT, Kind.ABORT):
        return ReplicaItem(kind, item.collection_id, item.key, None, 0, item.prepared_seqno, item.seqno)
    level = int(getattr(item, "level", 0))
    return ReplicaItem(kind, item.collection_id, item.key, it.document_of(item), level, 0, item.seqno)


class NodeHistory(History):
    """A node's WAL records. Crashes cut it exactly as a single node's (so the recovery check
    holds on every node). Records of the vbuckets the node is the active of (`judged`) are
    judged one by one, as a single node's; the others are replica copies, judged against
    their active instead (disk snapshots skip seqnos, rollbacks undo them). A promoted node
    `adopt`s its vbucket's history up to what it held. Keeps every completion a replica copy
    ever logged, lost or not, for the never-flip check, except those on a branch a rollback or
    a failover discarded."""

    def __post_init__(self) -> None:
        self.judged: set[int] = set()
        self.seeded: list[Entry] = []  # adopted at a promotion: the vbucket's history before it
        self.completions: list[tuple[int, int, Kind, int]] = []  # (vbucket, prepare seqno, kind, seqno)
        super().__post_init__()

    def append(self, lsn: int, end: int, kind: int, payload: bytes) -> None:
        super().append(lsn, end, kind, payload)
        record = self.entries[-1].record
        if record.kind is Kind.MANIFEST or record.vbucket in self.judged:
            return
        if record.kind in (Kind.COMMIT, Kind.ABORT):
            self.completions.append((record.vbucket, record.prepare_seqno, record.kind, record.seqno))
        elif record.kind is Kind.ROLLBACK:  # record.seqno: where the rollback landed
            self.forget_completions(record.vbucket, record.seqno)

    def forget_completions(self, vb: int, above: int) -> None:
        """The vbucket's history above `above` is gone (a rollback, or a failover that kept only
        that much): completions logged there no longer belong to it."""
        self.completions = [c for c in self.completions if c[0] != vb or c[3] <= above]

    def completion_kinds(self) -> dict[tuple[int, int], set[Kind]]:
        kinds: dict[tuple[int, int], set[Kind]] = {}
        for vb, prepare_seqno, kind, _ in self.completions:
            kinds.setdefault((vb, prepare_seqno), set()).add(kind)
        return kinds

    def _apply(self, entry) -> None:
        if entry.record.vbucket in self.judged:
            super()._apply(entry)

    def adopt(self, vb: int, prefix: list[Entry]) -> dict[Entry, Entry]:
        """Become the active of `vb`, whose history so far is `prefix` (the old active's records
        up to what this node held): judged from now on, starting from copies of those records
        (a write keeps whether it was acknowledged). Returns old entry -> copy."""
        assert vb not in self.judged
        self.judged.add(vb)
        copies = {}
        for entry in prefix:
            copy = Entry(entry.lsn, entry.end, entry.record, entry.incarnation, acked=entry.acked)
            super()._apply(copy)
            self.seeded.append(copy)
            copies[entry] = copy
        return copies

    def holds(self, entry: Entry) -> bool:
        """The entry is part of this node's judged history (its own, or adopted)."""
        return entry.lost_by is None and (entry in self.entries or entry in self.seeded)

    def recovered(self, recovered_end: int) -> list[Entry]:
        assert not self.seeded, f"{self.node}: a promoted node never restarts in this version"
        return super().recovered(recovered_end)

    def check_engine(self, engine, skeys) -> None:
        if len(self.judged) == self.num_vbuckets:  # an active of everything: as a single node
            super().check_engine(engine, skeys)

    def check_reads(self, engine, keys, now) -> None:
        if len(self.judged) == self.num_vbuckets:
            super().check_reads(engine, keys, now)


@dataclass(eq=False)
class Link:
    """One (replica node, vbucket) stream: its consumer, and its producer while connected."""

    replica: str
    vbucket: int
    consumer: sc.StreamConsumer | None = None
    producer: StreamProducer | None = None
    stream: Stream | None = None
    fed: int = 0  # the last feed seqno handed to the producer
    memory_start: int = 1  # the memory start the producer was last told
    pump_due: bool = False
    acked_persisted: int = 0  # the highest persisted seqno acked since the last rollback
    requests: int = 0
    rollbacks: int = 0
    backfills: int = 0

    @property
    def name(self) -> str:
        return f"{self.replica}/vb{self.vbucket}"


@dataclass
class MultiConfig:
    seed: int
    steps: int
    bucket: BucketConfig
    chains: list[Chain]
    node: NodeOptions
    disk: DiskProfile
    workload: WorkloadOptions
    network: NetworkOptions
    faults: tuple[str, ...]
    fault_interval_s: tuple[float, float]
    drop_probability: float
    window_bytes: int
    feed_records_max: int | None
    promote_worst: bool = False  # tests only: the failover promotes the replica the planner ranks lowest

    def replay_command(self) -> str:
        return f"python -m tests.sim.run --multinode --seed {self.seed} --steps {self.steps}"

    def describe(self) -> str:
        w, n, d = self.workload, self.node, self.disk
        chains = " ".join(f"{c.active}>{','.join(r for r in c.replicas if r)}" for c in self.chains)
        return (
            f"vbuckets={self.bucket.num_vbuckets} replicas={self.bucket.num_replicas} chains=[{chains}] "
            f"fsync={n.fsync_policy} segment_max={n.segment_size_max} checkpoint_every={n.checkpoint_interval_s:.3f}s "
            f"fsync_s={d.fsync_s} torn={d.torn_probability:.2f} clients={w.clients} keys={w.keys} "
            f"levels={tuple(round(x, 2) for x in w.level_weights)} timeout_ms={w.timeout_ms} "
            f"latency_s={self.network.latency_s} keepalive_s={self.network.keepalive_s} "
            f"drop={self.drop_probability} window={self.window_bytes} feed_max={self.feed_records_max} "
            f"faults={','.join(self.faults) or 'none'}"
        )


def _pick(prng, options):
    return options[prng.randrange(len(options))]


def make_config(clock: SimClock, seed: int, steps: int) -> MultiConfig:
    prng = clock.prng
    vbuckets = _pick(prng, [1, 2, 4, 4, 8])
    replicas = _pick(prng, [1, 2])
    bucket = BucketConfig("default", num_vbuckets=vbuckets, num_replicas=replicas)
    chains = []
    for vb in range(vbuckets):
        order = REPLICA_NODES if vb % 2 == 0 else REPLICA_NODES[::-1]
        chains.append(Chain(ACTIVE, order[:replicas]))
    policy = _pick(prng, ["always", "always", f"interval={prng.randint(1, 50)}", "never"])
    node = NodeOptions(
        fsync_policy=policy,
        segment_size_max=_pick(prng, [1024, 2048, 8192, 65536]),
        checkpoint_interval_s=prng.uniform(0.02, 1.0),
        checkpoint_wal_wait_s=_pick(prng, [0.5, 30.0]),
    )
    disk = DiskProfile(
        fsync_s=_pick(prng, [(0.0001, 0.001), (0.0005, 0.004), (0.002, 0.015)]),
        torn_probability=prng.uniform(0.0, 0.5),
        zero_tail_probability=prng.uniform(0.0, 0.3),
        garbage_tail_probability=prng.uniform(0.0, 0.2),
    )
    levels = [prng.random() for _ in range(4)]
    workload = WorkloadOptions(
        clients=prng.randint(1, 6),
        keys=prng.randint(1, 16),
        ops=steps,
        level_weights=tuple(levels) if any(levels) else (1.0, 1.0, 1.0, 1.0),
        timeout_ms=_pick(prng, [(20, 300), (100, 3_000), (1_000, 10_000)]),
        think_s=_pick(prng, [(0.0, 0.0005), (0.0, 0.005), (0.0, 0.05)]),
    )
    network = NetworkOptions(
        latency_s=_pick(prng, [(0.00005, 0.0005), (0.0001, 0.002), (0.001, 0.02)]),
        keepalive_s=_pick(prng, [0.05, 0.3, 1.0]),
        bytes_in_flight_max=1 << 30,  # the producer's window is the binding one
    )
    faults = tuple(kind for kind in FAULT_KINDS if prng.random() < 0.5)
    if prng.random() < FAILOVER_PROBABILITY:
        faults += ("failover",)
    return MultiConfig(
        seed,
        steps,
        bucket,
        chains,
        node,
        disk,
        workload,
        network,
        faults,
        fault_interval_s=_pick(prng, [(0.01, 0.1), (0.05, 0.5), (0.2, 1.5)]),
        drop_probability=_pick(prng, [0.001, 0.01, 0.05]) if "drop" in faults else 0.0,
        window_bytes=_pick(prng, [300, 2048, 65536, 0]),
        feed_records_max=_pick(prng, [None, None, 2, 8, 64]),
    )


class MultiCluster(SimCluster):
    """Three nodes, the vbucket map (`chains`, changed only by a failover and a rejoin), and
    the memory losses of every node (for the failover's guarantee table)."""

    def __init__(self, clock: SimClock, config: MultiConfig) -> None:
        self.clock = clock
        self.config = config.bucket
        self.nodes: dict[str, SimNode] = {}
        for node_id in NODES:
            disk = SimDisk(clock, DiskProfile(**vars(config.disk)))
            node = SimNode(clock, node_id, config.bucket, config.node, disk)
            node.history = NodeHistory(node_id, config.bucket.num_vbuckets)
            if node_id == ACTIVE:
                node.history.judged = set(range(config.bucket.num_vbuckets))
            self.nodes[node_id] = node
        self.chains: list[Chain | None] = list(config.chains)
        self.memory_losses: list[fo.MemoryLoss] = []
        self.failovers: list[fo.FailoverEvent] = []
        self.faults_fired: list[str] = []
        self._fault_thread: SimThread | None = None

    def route(self, key: bytes) -> SimNode | None:
        chain = self.chains[vbucket_of(key, self.config.num_vbuckets)]
        return None if chain is None else self.nodes[chain.active]

    def durability_possible(self, key: bytes) -> bool:
        chain = self.chains[vbucket_of(key, self.config.num_vbuckets)]
        return chain is not None and chain.durability_possible()

    def active_ids(self) -> set[str]:
        return {chain.active for chain in self.chains if chain is not None}

    def pure_replicas(self) -> list[str]:
        """The nodes that are the active of no vbucket (before a failover: n2 and n3)."""
        actives = self.active_ids()
        return [node_id for node_id in NODES if node_id not in actives]


def _role(node_id: str, chain: Chain | None) -> tuple:
    """set_topology's arguments for `node_id` in `chain`."""
    if chain is not None and chain.active == node_id:
        return (VBState.ACTIVE, chain)
    if chain is not None and node_id in chain.replicas:
        return (VBState.REPLICA,)
    return (VBState.DEAD,)


class Replication:
    """The replication shell of every node: links, their streams, topology, acks, failover."""

    def __init__(self, clock: SimClock, cluster: MultiCluster, net: SimNetwork, config: MultiConfig) -> None:
        self.clock = clock
        self.cluster = cluster
        self.net = net
        self.config = config
        self.links: dict[tuple[str, int], Link] = {}
        self._sync_links()
        self.truth = [ACTIVE] * config.bucket.num_vbuckets  # the node whose history is each vbucket's truth
        self.failover_lost: dict[int, str] = {}  # write id -> why it is gone (its record was past the promoted copy)

    def active_of(self, vb: int) -> SimNode:
        chain = self.cluster.chains[vb]
        assert chain is not None, f"vbucket {vb} has no copy left"
        return self.cluster.nodes[chain.active]

    def truth_history(self, vb: int) -> NodeHistory:
        history = self.cluster.nodes[self.truth[vb]].history
        assert isinstance(history, NodeHistory)
        return history

    def failed_over(self, vb: int) -> bool:
        return self.truth[vb] != ACTIVE

    def _consumer_hps(self, replica: str) -> Callable[[int], int | None]:
        """The HPS `replica`'s consumer of each vbucket acknowledges (None: it has none)."""

        def hps(vbid: int) -> int | None:
            link = self.links.get((replica, vbid))
            return None if link is None or link.consumer is None else link.consumer.high_prepared_seqno

        return hps

    def _sync_links(self) -> None:
        """One link per (replica, vbucket) of the map: new ones made, dropped ones closed."""
        wanted = [
            (replica, vb)
            for vb, chain in enumerate(self.cluster.chains)
            if chain is not None
            for replica in chain.replicas
            if replica is not None
        ]
        for key in sorted(self.links.keys() - set(wanted)):
            self._drop_link(self.links.pop(key))
        for key in wanted:
            if key not in self.links:
                self.links[key] = Link(*key)
                node = self.cluster.nodes[key[0]]
                assert not node.up, f"{node.node_id} joins a chain while running (not modelled)"

    def _drop_link(self, link: Link) -> None:
        link.consumer = None  # first: the break below must not reconnect
        if link.stream is not None:
            self.net.break_stream(link.stream, "the vbucket map changed")

    # -- node life ------------------------------------------------------------------------
    def start_node(self, node: SimNode) -> None:
        node.start()
        engine = node.engine
        assert engine is not None
        for vb, chain in enumerate(self.cluster.chains):
            engine.set_topology(vb, *_role(node.node_id, chain))
        if node.node_id in self.cluster.active_ids():
            self._small_feeds(engine)
        engine.on_change = lambda vb, node_id=node.node_id: self._on_change(node_id, vb)
        engine.on_replica_persisted = lambda vb, seqno, node=node: self._replica_persisted(node, vb, seqno)
        for link in self._links_of(node.node_id):
            held = engine.vbuckets[link.vbucket].high_seqno
            if held < link.acked_persisted:
                raise Violation(
                    f"{link.name}: acknowledged persisted seqno {link.acked_persisted}, holds {held} after "
                    f"{node.history.crashes[-1].describe() if node.history.crashes else 'its start'}"
                )
            link.consumer = sc.StreamConsumer(
                link.vbucket,
                state=sc.ReplicaState(*engine.replica_state(link.vbucket)),
                buffer_bytes=self.config.window_bytes,
            )
            self._connect_later(link, node.incarnation)

    def _small_feeds(self, engine) -> None:
        if self.config.feed_records_max is not None:
            for feed in engine.feeds:
                feed._records_max = self.config.feed_records_max  # small runs reach the backfill path

    def stop_node(self, node: SimNode, kind: str) -> None:
        """A node stops: SIGKILL, power cut (both at once), or the start of a clean close."""
        for link in self._links_of(node.node_id):
            link.consumer = None
        self.net.node_down(node.node_id)
        if kind != "clean":
            node.crash(kind)
            self.cluster.memory_losses.append(fo.MemoryLoss(node.node_id, self.clock.time, kind))

    def _links_of(self, replica: str) -> list[Link]:
        return [link for (name, _), link in sorted(self.links.items()) if name == replica]

    # -- failover ---------------------------------------------------------------------------
    def fail_over(self, failed: str, crash: str, writes, tally: Tally) -> None:
        """Hard failover of the stopped node `failed`: the planner promotes, the engines follow."""
        before = tuple(self.cluster.chains)
        positions = {
            node_id: fo.replica_positions(node.engine, node_id, self._consumer_hps(node_id))
            for node_id, node in self.cluster.nodes.items()
            if node_id != failed and node.serving
        }
        if self.config.promote_worst:
            positions = fo.inverted(positions)
        after = fo.promote(before, failed, positions)
        event = fo.FailoverEvent(failed, self.clock.time, crash, before, after)
        self.cluster.failovers.append(event)
        self.clock.log("sim", f"failover of {failed}: positions {positions} -> {_describe_map(after)}")
        self.cluster.chains[:] = after
        self._sync_links()
        for vb, (old, new) in enumerate(zip(before, after, strict=True)):
            if new is None:
                raise Violation(f"failover of {failed}: vbucket {vb} lost every copy")
            if old is not None and old.active != new.active:
                self._promote(vb, old, new, writes, tally, event)
            elif old != new:
                engine = self.cluster.nodes[new.active].engine
                assert engine is not None
                engine.set_topology(vb, VBState.ACTIVE, new)
        history = self.cluster.nodes[failed].history
        assert isinstance(history, NodeHistory)
        history.judged = set()  # it comes back as a replica of everything
        self.cluster.nodes[failed].keys = []

    def _promote(self, vb: int, old: Chain, new: Chain, writes, tally: Tally, event: fo.FailoverEvent) -> None:
        node = self.cluster.nodes[new.active]
        engine = node.engine
        assert node.serving and engine is not None, f"{node.node_id} promoted while down"
        high = engine.vbuckets[vb].high_seqno
        before = self.truth_history(vb)
        assert not before.seeded, "one failover per run"
        if high > before.vb_high[vb]:
            raise Violation(f"{node.node_id} holds vb{vb} up to {high}; the active only wrote {before.vb_high[vb]}")
        prefix = [e for e in before.entries if e.record.vbucket == vb and e.record.kind in ITEM_KINDS]
        kept = [e for e in prefix if e.record.seqno <= high]
        history = node.history
        assert isinstance(history, NodeHistory)
        copies = history.adopt(vb, kept)
        self.truth[vb] = node.node_id
        for other in self.cluster.nodes.values():
            assert isinstance(other.history, NodeHistory)
            other.history.forget_completions(vb, high)  # the old active's branch past `high` is gone
        check_copy(engine, history, vb, self._keys(vb), f"{node.node_id} promoted", "at the failover")
        self._judge_losses(vb, old, copies, {id(e) for e in prefix if e.record.seqno > high}, writes, tally, event)
        self.clock.log("sim", f"vb{vb}: {node.node_id} promoted at seqno {high} of {before.vb_high[vb]}")
        engine.set_topology(vb, VBState.ACTIVE, new)
        self._small_feeds(engine)

    def _keys(self, vb: int) -> list[bytes]:
        workload = self.cluster.nodes[ACTIVE].workload
        assert workload is not None
        return [key for key in workload.keys if vbucket_of(key, self.config.bucket.num_vbuckets) == vb]

    def _judge_losses(self, vb: int, chain: Chain, copies: dict[Entry, Entry], beyond: set[int], writes,
                      tally: Tally, event: fo.FailoverEvent) -> None:  # fmt: skip
        """Every write of `vb` now points at the new truth; an acknowledged one past the promoted
        copy must have been allowed to go (failover.failover_loss_allowed)."""
        for write in writes:
            entry = write.entry
            if entry is None:
                continue
            copy = copies.get(entry)
            if copy is not None:
                write.entry = copy
                if write.outcome == "ack":
                    tally.add(write.level, "survived_failover")
                continue
            if id(entry) not in beyond:
                continue
            why = f"{entry.describe()} is past what {chain.active}'s successor held at the failover"
            self.failover_lost[write.id] = why
            if write.outcome == "ack" and not fo.failover_loss_allowed(
                write, chain, self.cluster.memory_losses, event.time
            ):
                raise Violation(
                    f"acknowledged {write.level.name} {write.describe()} lost by the failover of {event.failed} "
                    f"({event.crash} crash at t={event.time:.6f}): {why}; no replica of {_describe_chain(chain)} "
                    "lost its memory since the request"
                )

    def rejoin(self, node_id: str) -> None:
        """The failed node restarts and goes back into every chain with an empty slot, as a replica."""
        before = tuple(self.cluster.chains)
        after = fo.rejoin(before, node_id)
        self.cluster.chains[:] = after
        self.clock.log("sim", f"{node_id} rejoins: {_describe_map(after)}")
        self._sync_links()
        for vb, (old, new) in enumerate(zip(before, after, strict=True)):
            if new is not None and old != new:
                engine = self.cluster.nodes[new.active].engine
                assert engine is not None
                engine.set_topology(vb, VBState.ACTIVE, new)
        self.start_node(self.cluster.nodes[node_id])

    # -- the replica end ------------------------------------------------------------------
    def _connect_later(self, link: Link, incarnation: int) -> None:
        self.clock.call_later(self.clock.uniform(*RECONNECT_S), self._connect, link, incarnation)

    def _connect(self, link: Link, incarnation: int) -> None:
        node = self.cluster.nodes[link.replica]
        consumer = link.consumer
        if not node.serving or node.incarnation != incarnation or consumer is None or link.stream is not None:
            return
        if consumer.state is not sc.ConsumerState.IDLE:
            return
        active = self.active_of(link.vbucket)
        if not active.serving:  # connection refused: the active is down (until it restarts or fails over)
            self._connect_later(link, incarnation)
            return
        holder: list[Stream] = []
        stream = self.net.connect(
            link.replica,
            active.node_id,
            link.name,
            at_opener=lambda message: self._at_replica(link, holder[0], message),
            at_peer=lambda message: self._at_active(link, holder[0], message),
            on_broken=lambda why: self._broken(link, holder[0], incarnation),
        )
        holder.append(stream)
        link.stream = stream
        link.requests += 1
        request = consumer.stream_request()
        self.clock.log("repl", f"{link.name} requests {request}")
        self.net.send(stream, link.replica, request, CONTROL_BYTES)

    def _broken(self, link: Link, stream: Stream, incarnation: int) -> None:
        if link.stream is not stream:
            return
        link.stream = None
        if link.producer is not None:
            link.producer.close()
            link.producer = None
        if link.consumer is not None:
            link.consumer.disconnected()
            self._connect_later(link, incarnation)

    def _at_replica(self, link: Link, stream: Stream, message) -> None:
        node = self.cluster.nodes[link.replica]
        consumer = link.consumer
        assert node.serving and consumer is not None and link.stream is stream, link
        try:
            actions = consumer.on_message(message)
        except it.StreamProtocolError as error:
            raise Violation(f"{link.name}: the producer broke the stream protocol: {error}") from None
        self._carry_out(link, node, actions)

    def _carry_out(self, link: Link, node: SimNode, actions) -> None:
        engine, consumer, vb = node.engine, link.consumer, link.vbucket
        assert engine is not None and consumer is not None
        for action in actions:
            match action:
                case sc.AdoptFailoverLog():
                    engine.set_failover_log(vb, action.failover_log)
                case sc.Apply():
                    engine.apply_snapshot(vb, action.snapshot_start, action.snapshot_end, action.disk,
                                          [to_replica(i) for i in action.items], action.resolved_prepares,
                                          action.high_completed_seqno)  # fmt: skip
                case sc.Rollback():
                    result = engine.rollback(vb, action.seqno)
                    link.rollbacks += 1
                    link.acked_persisted = min(link.acked_persisted, result.high_seqno)
                    self.clock.log("repl", f"{link.name} rolled back to {result.high_seqno} ({result.row.value})")
                    self._carry_out(
                        link,
                        node,
                        consumer.rolled_back(
                            result.high_seqno,
                            prepares=result.prepares,
                            high_completed_seqno=result.high_completed_seqno,
                        ),
                    )
                    if link.stream is not None:  # ask again on the same stream, from the point reached
                        self.net.send(link.stream, link.replica, consumer.stream_request(), CONTROL_BYTES)
                        link.requests += 1
                case it.SeqnoAck():
                    link.acked_persisted = max(link.acked_persisted, action.persisted_seqno)
                    self._send_up(link, action)
                case it.BufferAck():
                    self._send_up(link, action)
                case sc.StreamRefused() | sc.StreamEnded():
                    self.clock.log("repl", f"{link.name}: {action}")
                    if link.stream is not None:
                        self.net.break_stream(link.stream, f"{type(action).__name__}")

    def _send_up(self, link: Link, message) -> None:
        if link.stream is not None:
            self.net.send(link.stream, link.replica, message, CONTROL_BYTES)

    def _replica_persisted(self, node: SimNode, vb: int, seqno: int) -> None:
        link = self.links.get((node.node_id, vb))
        if link is None or link.consumer is None:
            return
        self._carry_out(link, node, link.consumer.persisted(seqno))

    # -- the active end -------------------------------------------------------------------
    def _at_active(self, link: Link, stream: Stream, message) -> None:
        engine = self.cluster.nodes[stream.peer].engine
        assert engine is not None and link.stream is stream
        vb = link.vbucket
        match message:
            case it.StreamRequest():
                vbucket, feed = engine.vbuckets[vb], engine.feed(vb)
                if vbucket.state is not VBState.ACTIVE or not feed.streamable:  # as replication_service.py
                    status = Status.NOT_MY_VBUCKET if vbucket.state is not VBState.ACTIVE else Status.TMPFAIL
                    response, producer = it.StreamResponse(vb, status, message="refused"), None
                else:
                    response, producer = open_stream(
                        message, failover_log=vbucket.failover_log, high_seqno=vbucket.high_seqno,
                        purge_seqno=vbucket.purge_seqno, memory_start=feed.memory_start,
                        buffer_bytes=self.config.window_bytes,
                    )  # fmt: skip
                self.clock.log("repl", f"{link.name} answered {response.status.name} {response.rollback_seqno}")
                self.net.send(stream, stream.peer, response, it.wire_size(response))
                if producer is not None and stream.open:
                    link.producer = producer
                    link.fed = link.memory_start = feed.memory_start
                    link.fed -= 1
                    self._feed(link)
                    self._pump_soon(link)
            case it.SeqnoAck():
                producer = link.producer
                if producer is None:
                    return  # sent before a rollback answer reached the replica: no stream to ack
                try:
                    producer.seqno_ack(message)
                except it.StreamProtocolError as error:
                    raise Violation(f"{link.name}: the consumer broke the stream protocol: {error}") from None
                engine.replica_ack(vb, link.replica, message.high_prepared_seqno, message.received_seqno,
                                   message.persisted_seqno)  # fmt: skip
            case it.BufferAck():
                producer = link.producer
                if producer is None:
                    return
                producer.buffer_ack(message.bytes)
                self._pump_soon(link)

    def _on_change(self, node_id: str, vb: int) -> None:
        """`node_id`'s engine changed vbucket `vb` (called inside the engine): feed its producers now."""
        for replica in NODES:
            link = self.links.get((replica, vb))
            stream = link.stream if link is not None and link.producer is not None else None
            if stream is not None and stream.peer == node_id:
                self._feed(link)
                self._pump_soon(link)

    def _feed(self, link: Link) -> None:
        assert link.stream is not None
        engine = self.cluster.nodes[link.stream.peer].engine
        assert engine is not None and link.producer is not None
        feed = engine.feed(link.vbucket)
        for record in feed.records_since(link.fed + 1):
            item = it.item_from_record(record)
            if item is not None:
                link.producer.on_item(item)
            link.fed = record.seqno
        if feed.memory_start > link.memory_start:
            link.memory_start = feed.memory_start
            link.producer.set_memory_start(feed.memory_start)

    def _pump_soon(self, link: Link) -> None:
        if not link.pump_due:
            link.pump_due = True
            self.clock.call_later(0.0, self._pump, link)

    def _pump(self, link: Link) -> None:
        link.pump_due = False
        producer, stream = link.producer, link.stream
        if producer is None or stream is None or not stream.open:
            return
        active = self.cluster.nodes[stream.peer]
        assert active.engine is not None
        self._feed(link)  # trims at a checkpoint are not announced by on_change
        if producer.backfill_from is not None:
            snap = active.store.backfill_read(link.vbucket, producer.backfill_from)
            link.backfills += 1
            self.clock.log("repl", f"{link.name} backfills {producer.backfill_from}..{snap.high_seqno}")
            if producer.backfill_begin(snap.high_seqno, high_completed_seqno=snap.high_completed_seqno,
                                       high_prepared_seqno=snap.high_prepared_seqno,
                                       purge_seqno=snap.purge_seqno):  # fmt: skip
                merged = [(s, it.document_item(cid, key, doc)) for s, cid, key, doc in snap.documents]
                merged += [(s, it.prepare_item(cid, key, doc, level)) for s, cid, key, level, doc in snap.prepares]
                for _, item in sorted(merged, key=lambda m: m[0]):
                    producer.backfill_item(item)
                producer.backfill_end()
        for message in producer.next_batch(1 << 20):
            if not self.net.send(stream, stream.peer, message, it.wire_size(message)):
                break

    # -- views for the run ----------------------------------------------------------------
    def converged(self) -> bool:
        for node_id in sorted(self.cluster.active_ids()):
            engine = self.cluster.nodes[node_id].engine
            if engine is None or engine.sync_writes_in_flight():
                return False
        for vb in range(self.config.bucket.num_vbuckets):
            engine = self.active_of(vb).engine
            assert engine is not None
            if self.failed_over(vb) and engine.vbuckets[vb].prepares:
                return False  # taken over with no deadline: they commit once the chain acks them
        for link in self.links.values():
            node = self.cluster.nodes[link.replica]
            if not node.serving or node.engine is None or link.consumer is None:
                return False
            active = self.active_of(link.vbucket).engine
            assert active is not None
            if node.engine.vbuckets[link.vbucket].high_seqno != active.vbuckets[link.vbucket].high_seqno:
                return False
        return True

    def describe_links(self) -> str:
        lines = []
        for link in self.links.values():
            node = self.cluster.nodes[link.replica]
            engine = self.active_of(link.vbucket).engine
            held = node.engine.vbuckets[link.vbucket].high_seqno if node.engine is not None else None
            active_high = engine.vbuckets[link.vbucket].high_seqno if engine is not None else None
            lines.append(
                f"{link.name}: replica high={held} active high={active_high} consumer={link.consumer!r} "
                f"producer={link.producer!r} stream_open={link.stream is not None and link.stream.open}"
            )
        return "\n    ".join(lines)


def _describe_chain(chain: Chain | None) -> str:
    return "-" if chain is None else f"{chain.active}>{','.join(r or '_' for r in chain.replicas)}"


def _describe_map(chains) -> str:
    return " ".join(_describe_chain(chain) for chain in chains)


# -- checks ------------------------------------------------------------------------------------
def check_copy(engine, truth: History, vb: int, keys: list[bytes], who: str, when: str) -> None:
    """`engine`'s copy of `vb` is exactly what the vbucket's history (`truth`) implies: high
    seqno, what each key reads as, pending prepares."""
    mine = engine.vbuckets[vb]
    if mine.high_seqno != truth.vb_high[vb]:
        raise Violation(f"{when}: {who} high seqno {mine.high_seqno}, the active's {truth.vb_high[vb]}")
    for key in keys:
        skey = store_key(vb, 0, key)
        held, expected = engine.committed(skey), truth.committed.get(skey)
        if _comparable(held) != _comparable(expected):
            raise Violation(f"{when}: {who} key {key!r} holds {held}, the active's history says {expected}")
    prepares = {skey: p.document.seqno for skey, p in mine.prepares.items()}
    expected_prepares = {s: e.record.seqno for s, e in truth.pending.items() if e.record.vbucket == vb}
    if prepares != expected_prepares:
        raise Violation(f"{when}: {who} holds prepares {prepares}, the active {expected_prepares}")


def check_convergence(cluster: MultiCluster, replication: Replication, keys: list[bytes], when: str) -> None:
    """Each replica's copy of each vbucket equals what the vbucket's history implies; so does
    the copy of an active promoted by a failover."""
    count = cluster.config.num_vbuckets
    by_vb = [[key for key in keys if vbucket_of(key, count) == vb] for vb in range(count)]
    for link in replication.links.values():
        engine = cluster.nodes[link.replica].engine
        assert engine is not None
        vb = link.vbucket
        check_copy(engine, replication.truth_history(vb), vb, by_vb[vb], link.name, when)
    for vb in range(count):
        if replication.failed_over(vb):
            active = replication.active_of(vb)
            check_copy(active.engine, replication.truth_history(vb), vb, by_vb[vb], f"{active.node_id}/vb{vb}", when)


def _comparable(doc):
    """A tombstone travels as a Deletion (no value, flags or expiry) and an absent key reads
    like one: compare what a client can see, and the CAS and seqno of the removal."""
    if doc is None:
        return None
    if doc.deleted:
        return ("deleted", doc.cas, doc.seqno)
    return doc


def check_persist_to_majority(cluster: MultiCluster, replication: Replication, writes, tally: Tally) -> None:
    """After every replica lost power at once: each acknowledged PERSIST_TO_MAJORITY write is
    still held by a majority of its chain. One acknowledged before a failover: the failed
    node's copy is gone (it rolled back to its successor's), so it must be held by the new
    active (a node that rejoined an empty slot made no promise about it)."""
    for write in writes:
        if write.outcome != "ack" or write.level is not Level.PERSIST_TO_MAJORITY:
            continue
        if write.id in replication.failover_lost:
            continue  # judged at the failover: never allowed
        entry = write.entry
        assert entry is not None
        vb, seqno = entry.record.vbucket, entry.record.seqno
        chain = cluster.chains[vb]
        assert chain is not None
        truth = replication.truth_history(vb)
        holders = [chain.active] if truth.holds(entry) else []
        for replica in chain.replicas:
            if replica is None:
                continue
            engine = cluster.nodes[replica].engine
            assert engine is not None
            if engine.vbuckets[vb].high_seqno >= seqno:
                holders.append(replica)
        needed = 1 if entry in truth.seeded else chain.majority
        if len(holders) < needed:
            raise Violation(
                f"acknowledged PERSIST_TO_MAJORITY {write.describe()} (prepare vb={vb} seqno={seqno}) is held by "
                f"{holders} after a power cut of every replica; the chain {_describe_chain(chain)} needs {needed}"
            )
        tally.add(write.level, "survived_replica_power_cut")


def check_completions(cluster: MultiCluster, replication: Replication) -> None:
    """No replica ever logged a completion (not undone by a rollback) that differs from the
    vbucket's history."""
    for node_id, node in cluster.nodes.items():
        history = node.history
        assert isinstance(history, NodeHistory)
        for (vb, seqno), kinds in sorted(history.completion_kinds().items()):
            prepare = replication.truth_history(vb).by_place.get((vb, seqno))
            truth = prepare.completion.record.kind if prepare is not None and prepare.completion else None
            if kinds != {truth}:
                raise Violation(
                    f"{node_id} logged {sorted(k.name for k in kinds)} for prepare vb={vb} seqno={seqno}; "
                    f"the active {truth.name if truth else 'has not completed it'}"
                )


def check_failover_acknowledgements(replication: Replication, writes, tally: Tally) -> None:
    """check_acknowledgements for every write still in a vbucket's history; the ones a
    failover removed were judged at the failover (`Replication._judge_losses`)."""
    lost = replication.failover_lost
    check_acknowledgements([write for write in writes if write.id not in lost], tally)
    for write in writes:
        if write.id not in lost:
            continue
        if write.outcome == "ack":
            tally.add(write.level, "lost_in_failover")
        elif write.outcome == "ambiguous":
            tally.add(write.level, "ambiguous_absent")
        else:
            raise Violation(f"{write.describe()} ended {write.outcome}, yet it wrote a record")


# -- one run ------------------------------------------------------------------------------------
@dataclass
class MultiResult:
    config: MultiConfig
    trace: list[str]
    tally: Tally
    stats: dict[str, object] = field(default_factory=dict)

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()


class MultiNodeFailure(AssertionError):
    """A multi-node run broke a guarantee; the message names the seed and the replay command."""

    def __init__(self, config: MultiConfig, error: BaseException, trace: list[str]) -> None:
        tail = "\n".join(trace[-TRACE_TAIL_LINES:])
        super().__init__(
            f"multi-node simulation failed: seed={config.seed}\n  replay: {config.replay_command()}\n"
            f"  {type(error).__name__}: {error}\n  config: {config.describe()}\n  last trace lines:\n{tail}"
        )
        self.config = config
        self.error = error


def run_multinode(
    seed: int, steps: int = STEPS_DEFAULT, *, trace: bool = True, adjust: Callable[[MultiConfig], None] | None = None
) -> MultiResult:
    """Run and check one seed; raises MultiNodeFailure on any violation. `adjust` (tests only)
    changes the drawn configuration; its runs are not replayed by the command line."""
    clock = SimClock(seed, trace=trace)
    config = make_config(clock, seed, steps)
    if adjust is not None:
        adjust(config)
    try:
        return _run(clock, config)
    except Exception as error:
        raise MultiNodeFailure(config, error, clock.trace) from error


def _run(clock: SimClock, config: MultiConfig) -> MultiResult:
    clock.log("sim", f"seed={config.seed} multinode {config.describe()}")
    cluster = MultiCluster(clock, config)
    net = SimNetwork(clock, config.network)
    replication = Replication(clock, cluster, net, config)
    workload = Workload(clock, cluster, config.workload)
    tally = Tally()
    for node in cluster.nodes.values():
        node.workload = workload
        node.keys = list(workload.keys) if node.node_id == ACTIVE else []  # replicas: judged by convergence
    for node in cluster.nodes.values():
        replication.start_node(node)
    net.options.break_probability = config.drop_probability
    run_faults = _faults(clock, cluster, replication, net, config, workload, tally, until=lambda: workload.done)
    faults = clock.spawn("faults", run_faults)
    clock.run(until=lambda: workload.done and not faults.alive, time_max=TIME_MAX_S)
    assert workload.done and not faults.alive, f"the run did not finish within {TIME_MAX_S} simulated seconds"

    # Every replica loses power at once, before anything heals: PERSIST_TO_MAJORITY must hold.
    net.options.break_probability = 0.0
    net.heal()
    for node in cluster.nodes.values():
        node.disk.profile.slow = False
    replicas = cluster.pure_replicas()
    clock.log("sim", f"clients done; every replica ({' '.join(replicas)}) loses power")
    for node_id in replicas:
        node = cluster.nodes[node_id]
        if node.up:
            replication.stop_node(node, "power")
    for node_id in replicas:
        replication.start_node(cluster.nodes[node_id])
    check_persist_to_majority(cluster, replication, workload.writes, tally)

    _converge(clock, replication, "after the faults")
    check_convergence(cluster, replication, workload.keys, "after the faults")
    clock.log("sim", "converged; every replica is killed and restarted")
    for node_id in replicas:
        replication.stop_node(cluster.nodes[node_id], "process")
        replication.start_node(cluster.nodes[node_id])
    _converge(clock, replication, "after a SIGKILL of every replica")
    check_convergence(cluster, replication, workload.keys, "after a SIGKILL of every replica")
    check_failover_acknowledgements(replication, workload.writes, tally)
    check_completions(cluster, replication)
    links = replication.links.values()
    stats = {
        "sim_time_s": round(clock.time, 3),
        "events": clock.events_run,
        "writes": len(workload.writes),
        "faults": ",".join(cluster.faults_fired) or "-",
        "records": sum(cluster.nodes[node_id].history.count for node_id in sorted(set(replication.truth))),
        "replica_crashes": sum(len(cluster.nodes[n].history.crashes) for n in REPLICA_NODES),
        "stream_requests": sum(link.requests for link in links),
        "stream_breaks": net.breaks,
        "backfills": sum(link.backfills for link in links),
        "rollbacks": sum(link.rollbacks for link in links),
        "messages": net.delivered,
        "failovers": len(cluster.failovers),
    }
    for line in tally.lines():
        clock.log("sim", line)
    return MultiResult(config, clock.trace, tally, stats)


def _converge(clock: SimClock, replication: Replication, when: str) -> None:
    clock.run(until=replication.converged, time_max=clock.time + CONVERGE_S)
    if not replication.converged():
        raise Violation(
            f"{when}: the replicas did not converge within {CONVERGE_S} simulated seconds:\n    "
            + replication.describe_links()
        )


def _faults(clock: SimClock, cluster: MultiCluster, replication: Replication, net: SimNetwork,
            config: MultiConfig, workload: Workload, tally: Tally, until):  # fmt: skip
    kinds = tuple(kind for kind in config.faults if kind != "drop")  # drops are a rate, not an event
    if "failover" in kinds:
        kinds += ("failover",) * (FAILOVER_WEIGHT - 1)  # so that it usually fires before the clients finish
    prng = clock.prng
    while kinds:
        yield clock.uniform(*config.fault_interval_s)
        if until():
            return
        kind = _pick(prng, kinds)
        cluster.faults_fired.append(kind)
        if kind == "failover":
            kinds = tuple(k for k in kinds if k != "failover")  # one per run
            yield from _fail_over_active(clock, cluster, replication, workload, tally)
            continue
        if kind == "slowdisk":
            node = _pick(prng, list(cluster.nodes.values()))
            node.disk.profile.slow = True
            clock.log(node.node_id, "disk turns slow")
            yield clock.uniform(0.2, 2.0)
            node.disk.profile.slow = False
            clock.log(node.node_id, "disk back to normal")
            continue
        replica = _fault_target(cluster, prng)
        if replica is None:
            continue
        if kind == "partition":
            others = [ACTIVE] if not cluster.failovers else [n for n in NODES if n != replica.node_id]
            net.partition(others, [replica.node_id])
            yield clock.uniform(0.0, 2 * config.network.keepalive_s)
            net.heal()
            continue
        if not replica.up or replica.stopping:
            continue
        if kind == "restart":
            replication.stop_node(replica, "clean")
            yield from replica.shutdown()
        else:
            replication.stop_node(replica, "process" if kind == "crash" else "power")
        yield clock.uniform(0.001, 0.3)
        replication.start_node(replica)


def _fault_target(cluster: MultiCluster, prng) -> SimNode | None:
    """The node a replica fault hits: a replica (after a failover: one that is the active of
    nothing; promoted actives never stop in this version)."""
    if not cluster.failovers:
        return cluster.nodes[_pick(prng, REPLICA_NODES)]
    candidates = cluster.pure_replicas()
    return cluster.nodes[_pick(prng, candidates)] if candidates else None


def _fail_over_active(clock: SimClock, cluster: MultiCluster, replication: Replication, workload: Workload,
                      tally: Tally):  # fmt: skip
    """The active crashes (SIGKILL or power cut; sometimes a replica loses power at the same
    instant, a rack losing power), the cluster manager fails it over, and it later restarts
    and rejoins as a replica of its vbuckets."""
    prng = clock.prng
    failed = cluster.nodes[ACTIVE]
    if not failed.serving:
        return
    crash = _pick(prng, ["process", "power"])
    rack = None
    if prng.random() < RACK_POWER_PROBABILITY:
        rack = cluster.nodes[_pick(prng, REPLICA_NODES)]
        rack = rack if rack.serving else None
    clock.log("sim", f"the active {failed.node_id} stops ({crash}){f'; {rack.node_id} loses power' if rack else ''}")
    replication.stop_node(failed, crash)
    if rack is not None:
        replication.stop_node(rack, "power")
    yield clock.uniform(*FAILOVER_DELAY_S)
    if rack is not None:
        replication.start_node(rack)  # back before the manager asks the survivors for their seqnos
    replication.fail_over(failed.node_id, crash, workload.writes, tally)
    yield clock.uniform(*REJOIN_DELAY_S)
    replication.rejoin(failed.node_id)


# -- the command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run --multinode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="client operations in the run")
    parser.add_argument("--quiet", action="store_true", help="no trace, only the summary")
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on (a sweep)")
    parser.add_argument("--keep-going", action="store_true", help="a sweep runs every seed and lists the failures")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    failed: list[int] = []
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            result = run_multinode(seed, args.steps, trace=not args.quiet or args.seeds == 1)
        except MultiNodeFailure as failure:
            print(failure, file=sys.stderr)
            failed.append(seed)
            if args.keep_going:
                continue
            return 1
        if args.seeds == 1:
            if not args.quiet:
                print("\n".join(result.trace))
            print(f"seed={seed} ok; {result.config.describe()}")
            print(" ".join(f"{k}={v}" for k, v in result.stats.items()))
            print("\n".join(result.tally.lines()))
            print(f"trace sha256={result.digest()}")
    elapsed_s = time.perf_counter() - started
    if failed:
        print(f"{len(failed)} of {args.seeds} seeds failed: {' '.join(map(str, failed))}", file=sys.stderr)
        return 1
    if args.seeds > 1:
        print(f"{args.seeds} seeds ok in {elapsed_s:.1f} s ({args.seeds / elapsed_s:.1f} seeds/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

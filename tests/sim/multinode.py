"""Multi-node runs: three nodes, the real engine and the real stream cores, one seed.

    python -m tests.sim.run --multinode --seed N [--steps M] [--quiet] [--seeds K]
    python -m tests.sim.multinode --seed N ...            (the same)

What a run is. Three `SimNode`s (real `BucketEngine` over `SimLog`/`SimStore`/`SimDisk`), one
bucket of 1-8 vbuckets with 1 or 2 replicas. The topology is static and set through
`engine.set_topology`: `n1` is the active of every vbucket, each vbucket's replicas are taken
from `n2`/`n3` (rotating when there is one replica slot), a node outside a vbucket's chain
holds it DEAD. Every (replica node, vbucket) pair has its own `SimNetwork` stream carrying
one `StreamConsumer` (replica end) and one `StreamProducer` (active end) wired as
tests/unit/test_engine_replica.py wires them: the producer is fed the active's change feed
synchronously from `on_change` (so the feed can never trim a record the producer has not
seen), backfills from `SimStore.backfill_read` when the feed has moved past what it sent
(`feed_records_max` makes that happen in small runs), and is flow-controlled by the
consumer's BufferAcks; the consumer's `Apply`/`Rollback`/`AdoptFailoverLog` are carried out on
the replica's engine, its SeqnoAcks go to the producer and to the active's
`engine.replica_ack`, and the replica engine's `on_replica_persisted` feeds
`consumer.persisted`. A broken stream (a dropped message, a partition outlasting the
keepalive, a replica stopping) makes the consumer re-request from its last complete snapshot
after a short backoff; a restarted replica rebuilds its consumers from `engine.replica_state`.

Faults (swarm-chosen per seed): replica SIGKILL, replica power cut, replica clean restart,
message drops (each drop breaks its stream), partitions between the active and a replica
(healed before or after the keepalive), slow disks on any node. The active never crashes in
this version: failover (promoting a replica, the old active rejoining and rolling back) is
not modelled, so neither are the guarantees that need it (MAJORITY surviving an active crash).

Checked:
- the active's history, as in single-node runs (every record, every answer, every read);
- at every replica restart: recovery cut the replica's WAL exactly where the disk model says
  (History.recovered), and each of its vbuckets still holds at least the persisted seqno it
  acknowledged (a persisted ack is a promise the replica keeps across a power cut);
- at the end, before anything heals: every replica loses power at once and restarts; every
  acknowledged PERSIST_TO_MAJORITY write is still held by a majority of its chain (the active,
  plus replicas whose recovered copy reaches its prepare);
- convergence, twice (after the faults stop and after a final SIGKILL of every replica): once
  streams drain, each replica's copy of each vbucket has the active's high seqno, exactly the
  active history's committed documents and pending prepares;
- every acknowledgement on the active (check_acknowledgements: no acknowledged write lost, no
  acknowledged SyncWrite aborted or left pending, ambiguous ones resolved);
- completions never flip: every COMMIT/ABORT a replica ever logged matches the active's
  completion of that prepare.

Must never: decide what is right by asking an engine (the active's history is the oracle).
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
from durakv.engine.keys import vbucket_of
from durakv.engine.records import Kind
from durakv.engine.replica import ReplicaItem
from durakv.engine.vbucket import VBState
from durakv.replication import items as it
from durakv.replication import stream_consumer as sc
from durakv.replication.stream_producer import StreamProducer, open_stream

from .checker import History, Tally, Violation, check_acknowledgements
from .cluster import NodeOptions, SimCluster, SimNode
from .network import NetworkOptions, SimNetwork, Stream
from .simclock import SimClock, SimThread
from .simdisk import DiskProfile, SimDisk
from .workload import Workload, WorkloadOptions

ACTIVE = "n1"
REPLICA_NODES = ("n2", "n3")
FAULT_KINDS = ("crash", "power", "restart", "drop", "partition", "slowdisk")
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


class ReplicaHistory(History):
    """A replica node's WAL records. Crashes cut it exactly as an active's (so the recovery
    check holds for replicas too), but records are not judged one by one (disk snapshots skip
    seqnos, rollbacks undo them): a replica is judged against its active instead. Keeps every
    completion it ever logged, lost or not, for the never-flip check."""

    def __post_init__(self) -> None:
        self.completions: dict[tuple[int, int], set[Kind]] = {}
        super().__post_init__()

    def append(self, lsn: int, end: int, kind: int, payload: bytes) -> None:
        super().append(lsn, end, kind, payload)
        record = self.entries[-1].record
        if record.kind in (Kind.COMMIT, Kind.ABORT):
            self.completions.setdefault((record.vbucket, record.prepare_seqno), set()).add(record.kind)

    def _apply(self, entry) -> None:
        return

    def check_engine(self, engine, skeys) -> None:
        return

    def check_reads(self, engine, keys, now) -> None:
        return


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
    """The active and its two replica nodes; clients always go to the active (no failover)."""

    def __init__(self, clock: SimClock, config: MultiConfig) -> None:
        self.clock = clock
        self.config = config.bucket
        self.nodes: dict[str, SimNode] = {}
        for node_id in (ACTIVE, *REPLICA_NODES):
            disk = SimDisk(clock, DiskProfile(**vars(config.disk)))
            node = SimNode(clock, node_id, config.bucket, config.node, disk)
            if node_id != ACTIVE:
                node.history = ReplicaHistory(node_id, config.bucket.num_vbuckets)
            self.nodes[node_id] = node
        self.faults_fired: list[str] = []
        self._fault_thread: SimThread | None = None

    def route(self, key: bytes) -> SimNode | None:
        return self.nodes[ACTIVE]


class Replication:
    """The replication shell of every node: links, their streams, topology, acks."""

    def __init__(self, clock: SimClock, cluster: MultiCluster, net: SimNetwork, config: MultiConfig) -> None:
        self.clock = clock
        self.cluster = cluster
        self.net = net
        self.config = config
        self.links: dict[tuple[str, int], Link] = {}
        for vb, chain in enumerate(config.chains):
            for replica in chain.replicas:
                if replica is not None:
                    self.links[(replica, vb)] = Link(replica, vb)
        self.check_failures: list[str] = []

    @property
    def active(self) -> SimNode:
        return self.cluster.nodes[ACTIVE]

    # -- node life ------------------------------------------------------------------------
    def start_node(self, node: SimNode) -> None:
        node.start()
        engine = node.engine
        assert engine is not None
        if node.node_id == ACTIVE:
            for vb, chain in enumerate(self.config.chains):
                engine.set_topology(vb, VBState.ACTIVE, chain)
            if self.config.feed_records_max is not None:
                for feed in engine.feeds:
                    feed._records_max = self.config.feed_records_max  # small runs reach the backfill path
            engine.on_change = self._on_change
            return
        for vb, chain in enumerate(self.config.chains):
            state = VBState.REPLICA if node.node_id in chain.replicas else VBState.DEAD
            engine.set_topology(vb, state)
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

    def stop_node(self, node: SimNode, kind: str) -> None:
        """A replica stops: SIGKILL, power cut (both at once), or the start of a clean close."""
        assert node.node_id != ACTIVE, "the active never stops in this version"
        for link in self._links_of(node.node_id):
            link.consumer = None
        self.net.node_down(node.node_id)
        if kind != "clean":
            node.crash(kind)

    def _links_of(self, replica: str) -> list[Link]:
        return [link for (name, _), link in sorted(self.links.items()) if name == replica]

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
        holder: list[Stream] = []
        stream = self.net.connect(
            link.replica,
            ACTIVE,
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
        engine = self.active.engine
        assert engine is not None and link.stream is stream
        vb = link.vbucket
        match message:
            case it.StreamRequest():
                vbucket, feed = engine.vbuckets[vb], engine.feed(vb)
                response, producer = open_stream(
                    message, failover_log=vbucket.failover_log, high_seqno=vbucket.high_seqno,
                    purge_seqno=vbucket.purge_seqno, memory_start=feed.memory_start,
                    buffer_bytes=self.config.window_bytes,
                )  # fmt: skip
                self.clock.log("repl", f"{link.name} answered {response.status.name} {response.rollback_seqno}")
                self.net.send(stream, ACTIVE, response, it.wire_size(response))
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

    def _on_change(self, vb: int) -> None:
        """The active's engine changed vbucket `vb` (called inside the engine): feed the producers now."""
        for replica in REPLICA_NODES:
            link = self.links.get((replica, vb))
            if link is not None and link.producer is not None:
                self._feed(link)
                self._pump_soon(link)

    def _feed(self, link: Link) -> None:
        engine = self.active.engine
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
        engine = self.active.engine
        assert engine is not None
        self._feed(link)  # trims at a checkpoint are not announced by on_change
        if producer.backfill_from is not None:
            snap = self.active.store.backfill_read(link.vbucket, producer.backfill_from)
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
            if not self.net.send(stream, ACTIVE, message, it.wire_size(message)):
                break

    # -- views for the run ----------------------------------------------------------------
    def converged(self) -> bool:
        engine = self.active.engine
        if engine is None or engine.sync_writes_in_flight():
            return False
        for link in self.links.values():
            node = self.cluster.nodes[link.replica]
            if not node.serving or node.engine is None or link.consumer is None:
                return False
            if node.engine.vbuckets[link.vbucket].high_seqno != engine.vbuckets[link.vbucket].high_seqno:
                return False
        return True

    def describe_links(self) -> str:
        engine = self.active.engine
        lines = []
        for link in self.links.values():
            node = self.cluster.nodes[link.replica]
            held = node.engine.vbuckets[link.vbucket].high_seqno if node.engine is not None else None
            active_high = engine.vbuckets[link.vbucket].high_seqno if engine is not None else None
            lines.append(
                f"{link.name}: replica high={held} active high={active_high} consumer={link.consumer!r} "
                f"producer={link.producer!r} stream_open={link.stream is not None and link.stream.open}"
            )
        return "\n    ".join(lines)


# -- checks ------------------------------------------------------------------------------------
def check_convergence(cluster: MultiCluster, replication: Replication, keys: list[bytes], when: str) -> None:
    """Each replica's copy of each vbucket equals what the active's history implies."""
    active = cluster.nodes[ACTIVE]
    history = active.history
    count = cluster.config.num_vbuckets
    for link in replication.links.values():
        engine = cluster.nodes[link.replica].engine
        assert engine is not None
        vb = link.vbucket
        mine = engine.vbuckets[vb]
        if mine.high_seqno != history.vb_high[vb]:
            raise Violation(f"{when}: {link.name} high seqno {mine.high_seqno}, the active's {history.vb_high[vb]}")
        for key in keys:
            if vbucket_of(key, count) != vb:
                continue
            skey = store_key(vb, 0, key)
            held, expected = engine.committed(skey), history.committed.get(skey)
            if _comparable(held) != _comparable(expected):
                raise Violation(f"{when}: {link.name} key {key!r} holds {held}, the active's history says {expected}")
        prepares = {skey: p.document.seqno for skey, p in mine.prepares.items()}
        expected_prepares = {s: e.record.seqno for s, e in history.pending.items() if e.record.vbucket == vb}
        if prepares != expected_prepares:
            raise Violation(f"{when}: {link.name} holds prepares {prepares}, the active {expected_prepares}")


def _comparable(doc):
    """A tombstone travels as a Deletion (no value, flags or expiry) and an absent key reads
    like one: compare what a client can see, and the CAS and seqno of the removal."""
    if doc is None:
        return None
    if doc.deleted:
        return ("deleted", doc.cas, doc.seqno)
    return doc


def check_persist_to_majority(cluster: MultiCluster, config: MultiConfig, writes, tally: Tally) -> None:
    """After every replica lost power at once: each acknowledged PERSIST_TO_MAJORITY write is
    still held by a majority of its chain."""
    active = cluster.nodes[ACTIVE]
    for write in writes:
        if write.outcome != "ack" or write.level is not Level.PERSIST_TO_MAJORITY:
            continue
        entry = write.entry
        assert entry is not None
        vb, seqno = entry.record.vbucket, entry.record.seqno
        chain = config.chains[vb]
        holders = [ACTIVE] if entry.lost_by is None and entry in active.history.entries else []
        for replica in chain.replicas:
            engine = cluster.nodes[replica].engine
            assert engine is not None
            if engine.vbuckets[vb].high_seqno >= seqno:
                holders.append(replica)
        if len(holders) < chain.majority:
            raise Violation(
                f"acknowledged PERSIST_TO_MAJORITY {write.describe()} (prepare vb={vb} seqno={seqno}) is held by "
                f"{holders} after a power cut of every replica; the chain's majority is {chain.majority}"
            )
        tally.add(write.level, "survived_replica_power_cut")


def check_completions(cluster: MultiCluster) -> None:
    """No replica ever logged a completion that differs from the active's."""
    active = cluster.nodes[ACTIVE].history
    for node_id in REPLICA_NODES:
        history = cluster.nodes[node_id].history
        assert isinstance(history, ReplicaHistory)
        for (vb, seqno), kinds in sorted(history.completions.items()):
            prepare = active.by_place.get((vb, seqno))
            truth = prepare.completion.record.kind if prepare is not None and prepare.completion else None
            if kinds != {truth}:
                raise Violation(
                    f"{node_id} logged {sorted(k.name for k in kinds)} for prepare vb={vb} seqno={seqno}; "
                    f"the active {truth.name if truth else 'has not completed it'}"
                )


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
    for node in cluster.nodes.values():
        node.workload = workload
        node.keys = list(workload.keys) if node.node_id == ACTIVE else []  # replicas: judged by convergence
    for node in cluster.nodes.values():
        replication.start_node(node)
    net.options.break_probability = config.drop_probability
    faults = clock.spawn("faults", _faults(clock, cluster, replication, net, config, until=lambda: workload.done))
    clock.run(until=lambda: workload.done and not faults.alive, time_max=TIME_MAX_S)
    assert workload.done and not faults.alive, f"the run did not finish within {TIME_MAX_S} simulated seconds"

    # Every replica loses power at once, before anything heals: PERSIST_TO_MAJORITY must hold.
    net.options.break_probability = 0.0
    net.heal()
    for node in cluster.nodes.values():
        node.disk.profile.slow = False
    clock.log("sim", "clients done; every replica loses power")
    for node_id in REPLICA_NODES:
        node = cluster.nodes[node_id]
        if node.up:
            replication.stop_node(node, "power")
    for node_id in REPLICA_NODES:
        replication.start_node(cluster.nodes[node_id])
    tally = Tally()
    check_persist_to_majority(cluster, config, workload.writes, tally)

    _converge(clock, replication, "after the faults")
    check_convergence(cluster, replication, workload.keys, "after the faults")
    clock.log("sim", "converged; every replica is killed and restarted")
    for node_id in REPLICA_NODES:
        replication.stop_node(cluster.nodes[node_id], "process")
        replication.start_node(cluster.nodes[node_id])
    _converge(clock, replication, "after a SIGKILL of every replica")
    check_convergence(cluster, replication, workload.keys, "after a SIGKILL of every replica")
    check_acknowledgements(workload.writes, tally)
    check_completions(cluster)
    active = cluster.nodes[ACTIVE]
    links = replication.links.values()
    stats = {
        "sim_time_s": round(clock.time, 3),
        "events": clock.events_run,
        "writes": len(workload.writes),
        "faults": ",".join(cluster.faults_fired) or "-",
        "records": active.history.count,
        "replica_crashes": sum(len(cluster.nodes[n].history.crashes) for n in REPLICA_NODES),
        "stream_requests": sum(link.requests for link in links),
        "stream_breaks": net.breaks,
        "backfills": sum(link.backfills for link in links),
        "rollbacks": sum(link.rollbacks for link in links),
        "messages": net.delivered,
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
            config: MultiConfig, until):  # fmt: skip
    kinds = tuple(kind for kind in config.faults if kind != "drop")  # drops are a rate, not an event
    if not kinds:
        return
    prng = clock.prng
    while True:
        yield clock.uniform(*config.fault_interval_s)
        if until():
            return
        kind = _pick(prng, kinds)
        cluster.faults_fired.append(kind)
        if kind == "slowdisk":
            node = _pick(prng, list(cluster.nodes.values()))
            node.disk.profile.slow = True
            clock.log(node.node_id, "disk turns slow")
            yield clock.uniform(0.2, 2.0)
            node.disk.profile.slow = False
            clock.log(node.node_id, "disk back to normal")
            continue
        replica = cluster.nodes[_pick(prng, REPLICA_NODES)]
        if kind == "partition":
            net.partition([ACTIVE], [replica.node_id])
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


# -- the command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run --multinode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="client operations in the run")
    parser.add_argument("--quiet", action="store_true", help="no trace, only the summary")
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on (a sweep)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            result = run_multinode(seed, args.steps, trace=not args.quiet or args.seeds == 1)
        except MultiNodeFailure as failure:
            print(failure, file=sys.stderr)
            return 1
        if args.seeds == 1:
            if not args.quiet:
                print("\n".join(result.trace))
            print(f"seed={seed} ok; {result.config.describe()}")
            print(" ".join(f"{k}={v}" for k, v in result.stats.items()))
            print("\n".join(result.tally.lines()))
            print(f"trace sha256={result.digest()}")
    elapsed_s = time.perf_counter() - started
    if args.seeds > 1:
        print(f"{args.seeds} seeds ok in {elapsed_s:.1f} s ({args.seeds / elapsed_s:.1f} seeds/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

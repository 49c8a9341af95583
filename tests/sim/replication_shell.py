"""The replication shell of a multi-node run: the real stream cores wired between the engines.

Owns the links. Every (replica node, vbucket) pair of the map has a `Link`: its own
`SimNetwork` stream to the vbucket's current active, carrying one `StreamConsumer` (replica
end) and one `StreamProducer` (active end), wired as tests/unit/test_engine_replica.py wires
them:
- the producer is fed the active's change feed synchronously from `on_change` (so the feed
  can never trim a record the producer has not seen), backfills from `SimStore.backfill_read`
  when the feed has moved past what it sent (`feed_records_max` makes that happen in small
  runs), and is flow-controlled by the consumer's BufferAcks;
- the active refuses a request as replication_service.py does (NOT_MY_VBUCKET, or TMPFAIL
  while its feed is not `streamable`);
- the consumer's `Apply`/`Rollback`/`AdoptFailoverLog` are carried out on the replica's
  engine, its SeqnoAcks go to the producer and to the active's `engine.replica_ack`, and the
  replica engine's `on_replica_persisted` feeds `consumer.persisted`;
- a broken stream (a dropped message, a partition outlasting the keepalive, either end
  stopping) makes the consumer re-request from its last complete snapshot after a short
  backoff (polling while the active is down); a restarted replica rebuilds its consumers from
  `engine.replica_state`.
Nodes start and stop through `Replication` (`start_node`, `stop_node`) so that their links
follow; it also keeps which node's history is each vbucket's truth (`truth_history`) and the
writes a failover removed (`failover_lost`), both set by the failover (multifaults.py).
At every restart it checks that each replica vbucket still holds the persisted seqno it
acknowledged.

Must never: decide what to apply, ack or roll back (the consumer and producer cores do), or
what a copy must hold (multichecks.py does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from durakv.engine.errors import Status
from durakv.engine.records import Kind
from durakv.engine.replica import ReplicaItem
from durakv.engine.vbucket import VBState
from durakv.replication import items as it
from durakv.replication import stream_consumer as sc
from durakv.replication.stream_producer import StreamProducer, open_stream

from . import failover as fo
from .checker import Violation
from .cluster import SimNode
from .multichecks import NodeHistory
from .multicluster import MultiCluster, role
from .multiconfig import ACTIVE, NODES, MultiConfig
from .network import SimNetwork, Stream
from .simclock import SimClock

RECONNECT_S = (0.002, 0.03)
CONTROL_BYTES = 32  # replica -> active messages: not flow-controlled, a nominal size

_KINDS = {it.Mutation: Kind.MUTATION, it.Deletion: Kind.DELETION, it.Expiration: Kind.EXPIRATION,
          it.Prepare: Kind.PREPARE, it.Commit: Kind.COMMIT, it.Abort: Kind.ABORT}  # fmt: skip


def to_replica(item) -> ReplicaItem:
    """A stream item as the replica engine logs it (the wiring of test_engine_replica.py)."""
    kind = _KINDS[type(item)]
    if kind in (Kind.COMMIT, Kind.ABORT):
        return ReplicaItem(kind, item.collection_id, item.key, None, 0, item.prepared_seqno, item.seqno)
    level = int(getattr(item, "level", 0))
    return ReplicaItem(kind, item.collection_id, item.key, it.document_of(item), level, 0, item.seqno)


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


class Replication:
    """The replication shell of every node: links, their streams, topology, acks, and the truth a
    failover (multifaults.py) sets."""

    def __init__(self, clock: SimClock, cluster: MultiCluster, net: SimNetwork, config: MultiConfig) -> None:
        self.clock = clock
        self.cluster = cluster
        self.net = net
        self.config = config
        self.links: dict[tuple[str, int], Link] = {}
        self.sync_links()
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

    def consumer_hps(self, replica: str) -> Callable[[int], int | None]:
        """The HPS `replica`'s consumer of each vbucket acknowledges (None: it has none)."""

        def hps(vbid: int) -> int | None:
            link = self.links.get((replica, vbid))
            return None if link is None or link.consumer is None else link.consumer.high_prepared_seqno

        return hps

    def sync_links(self) -> None:
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
            engine.set_topology(vb, *role(node.node_id, chain))
        if node.node_id in self.cluster.active_ids():
            self.small_feeds(engine)
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

    def small_feeds(self, engine) -> None:
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
            if link.consumer.state is not sc.ConsumerState.STREAMING:
                # Only an accepted stream request proves the copy's history is the active's: an
                # old active that rejoined can reach the same high seqno on a branch of its own.
                return False
            active = self.active_of(link.vbucket).engine
            assert active is not None
            if node.engine.vbuckets[link.vbucket].high_seqno != active.vbuckets[link.vbucket].high_seqno:
                return False
        return True

    def describe_links(self) -> str:
        lines = []
        for node_id in sorted(self.cluster.active_ids()):
            engine = self.cluster.nodes[node_id].engine
            if engine is None or engine.sync_writes_in_flight():
                lines.append(f"{node_id}: sync writes in flight: {'down' if engine is None else engine._cookies}")
        for vb in range(self.config.bucket.num_vbuckets):
            engine = self.active_of(vb).engine
            if engine is not None and self.failed_over(vb) and engine.vbuckets[vb].prepares:
                monitor = engine.monitors[vb]
                lines.append(f"vb{vb} (taken over): prepares {list(engine.vbuckets[vb].prepares.values())} {monitor!r}")
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

"""A producer and a consumer wired together in one process, driven by one seeded PRNG.

The active vbucket (`Source`) is a list of items: its history. Its shell keeps a memory
window, checkpoints, purges tombstones, backfills from "the store" (the history replayed to
the checkpoint: each key once, newest version, plus pending prepares) and fails over (the
history is cut at a random seqno and a new failover-log entry starts there). The replica
(`Replica`) applies what its consumer hands out, persists a random prefix, rolls back when
told (exactly where its snapshots allow, else to an earlier snapshot end) and crashes (it
keeps only the snapshots it persisted whole and the consumer is rebuilt from them).
Between them two FIFO queues stand for the call; dropping the connection empties both.

Checked after every step, against the source's history as it is then:
- each applied snapshot starts at or below the replica's high seqno + 1 (no seqno skipped)
  and holds only seqnos above it (nothing applied twice); a memory snapshot holds exactly
  the history's items of its range; after every apply the replica's documents and pending
  prepares are the history's at the snapshot end (so only complete snapshots are exposed);
- every SeqnoAck has received = the replica's high seqno, persisted = its persisted seqno,
  an HPS equal to a naive recomputation from the snapshots it received, and goes forward
  (except across a crash or rollback), never twice with the same values on one stream;
- at the end, with faults stopped, the replica catches up completely (no flow-control stall).

Failures print the seed; `pytest -k 'seed_17'` reproduces one run.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from durakv.engine.document import store_key
from durakv.engine.durability import Level
from durakv.engine.durability import Prepare as TrackedPrepare
from durakv.replication import stream_consumer as sc
from durakv.replication.items import (
    BATCH_OVERHEAD,
    Abort,
    BufferAck,
    Commit,
    Deletion,
    Expiration,
    Item,
    ItemBatch,
    Mutation,
    Prepare,
    SeqnoAck,
    SnapshotMarker,
    StreamEndReason,
    StreamRequest,
    item_size,
    wire_size,
)
from durakv.replication.stream_consumer import ConsumerState, ReplicaState, StreamConsumer
from durakv.replication.stream_producer import StreamProducer, open_stream

VB = 5
CID = 0
KEYS = tuple(b"key%d" % i for i in range(6))
WINDOW_BYTES = 700
SNAPSHOT_BYTES_MAX = 400
BATCH_BYTES_MAX = 250
BACKFILL_BYTES_MAX = 300
STEPS = 1500
EVENTS = (
    "append",
    "checkpoint",
    "trim_memory",
    "purge",
    "produce",
    "to_consumer",
    "to_producer",
    "replica",
    "persist",
    "drop",
    "crash",
    "close",
    "failover",
)
BASE_WEIGHTS = {
    "append": 0.2,
    "checkpoint": 0.04,
    "trim_memory": 0.04,
    "purge": 0.01,
    "produce": 0.2,
    "to_consumer": 0.25,
    "to_producer": 0.1,
    "replica": 0.08,
    "persist": 0.06,
}
FAULT_RATES = {
    "drop": (0.0, 0.004, 0.02),
    "crash": (0.0, 0.003, 0.01),
    "close": (0.0, 0.004),
    "failover": (0.0, 0.003, 0.01),
}
LEVELS = (Level.MAJORITY, Level.MAJORITY_AND_PERSIST_TO_ACTIVE, Level.PERSIST_TO_MAJORITY)


# -- the model of a vbucket's contents ---------------------------------------------------------
@dataclass
class Contents:
    docs: dict[bytes, Item] = field(default_factory=dict)  # key -> Mutation or Deletion (tombstone)
    pending: dict[bytes, Prepare] = field(default_factory=dict)
    hcs: int = 0

    def apply(self, item: Item) -> None:
        match item:
            case Mutation():
                self.docs[item.key] = item
            case Deletion() | Expiration():
                self.docs[item.key] = Deletion(item.collection_id, item.key, item.seqno, item.rev_seqno, item.cas)
            case Prepare():
                self.pending[item.key] = item
            case Commit():
                p = self.pending.pop(item.key)
                assert p.seqno == item.prepared_seqno
                if p.deleted:
                    self.docs[item.key] = Deletion(CID, p.key, item.commit_seqno, p.rev_seqno, p.cas)
                else:
                    self.docs[item.key] = Mutation(
                        CID, p.key, item.commit_seqno, p.rev_seqno, p.cas, p.flags, p.expiry, p.value
                    )
                self.hcs = max(self.hcs, p.seqno)
            case Abort():
                assert self.pending.pop(item.key).seqno == item.prepared_seqno
                self.hcs = max(self.hcs, item.prepared_seqno)

    def live(self) -> dict[bytes, Item]:
        return {k: d for k, d in self.docs.items() if isinstance(d, Mutation)}

    def pending_seqnos(self) -> dict[bytes, int]:
        return {k: p.seqno for k, p in self.pending.items()}


def replay(items) -> Contents:
    contents = Contents()
    for item in items:
        contents.apply(item)
    return contents


# -- the active side -----------------------------------------------------------------------------
class Source:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.history: list[Item] = []
        self.failover_log: list[tuple[int, int]] = [(rng.getrandbits(48) | 1, 0)]
        self.checkpointed = 0
        self.memory_start = 1
        self.purge_seqno = 0
        self.now = replay([])

    @property
    def high(self) -> int:
        return len(self.history)

    def append_random(self) -> Item:
        rng, seqno, now = self.rng, self.high + 1, self.now
        free = [k for k in KEYS if k not in now.pending]
        roll = rng.random()
        if now.pending and roll < 0.25:
            oldest = min(now.pending.values(), key=lambda p: p.seqno)  # completions in seqno order
            kind = Commit if rng.random() < 0.7 else Abort
            item = kind(CID, oldest.key, oldest.seqno, seqno)
        elif free and roll < 0.45 and len(now.pending) < 3:
            value = rng.randbytes(rng.randrange(60))
            item = Prepare(
                CID, rng.choice(free), seqno, seqno, seqno << 16, 0, 0, value, rng.random() < 0.2, rng.choice(LEVELS)
            )
        elif free and roll < 0.55:
            kind = Deletion if rng.random() < 0.6 else Expiration
            item = kind(CID, rng.choice(free), seqno, seqno, seqno << 16)
        elif free:
            size = rng.randrange(900, 1200) if rng.random() < 0.03 else rng.randrange(100)  # a few oversized
            item = Mutation(CID, rng.choice(free), seqno, seqno, seqno << 16, 7, 0, rng.randbytes(size))
        else:
            oldest = min(now.pending.values(), key=lambda p: p.seqno)
            item = Commit(CID, oldest.key, oldest.seqno, seqno)
        self.history.append(item)
        now.apply(item)
        return item

    def state_at(self, seqno: int) -> Contents:
        return replay(self.history[:seqno])

    def store_read(self, from_seqno: int) -> tuple[int, int, int, list[Item]]:
        """One read snapshot of the store: (its high seqno, HCS, HPS, items >= from_seqno)."""
        high = self.checkpointed
        contents = self.state_at(high)
        docs = [d for d in contents.docs.values() if not (isinstance(d, Deletion) and d.seqno <= self.purge_seqno)]
        items = [i for i in [*docs, *contents.pending.values()] if i.seqno >= from_seqno]
        prepares = [i.seqno for i in self.history[:high] if isinstance(i, Prepare)]
        return high, contents.hcs, max(prepares, default=0), sorted(items, key=lambda i: i.seqno)

    def fail_over(self) -> None:
        cut = self.rng.randint(max(0, self.high - 30), self.high)
        del self.history[cut:]
        self.now = self.state_at(cut)
        self.failover_log = [e for e in self.failover_log if e[1] <= cut]
        self.failover_log.insert(0, (self.rng.getrandbits(48) | 1, cut))
        del self.failover_log[25:]
        self.checkpointed = min(self.checkpointed, cut)
        self.purge_seqno = min(self.purge_seqno, self.checkpointed)
        self.memory_start = max(1, min(self.memory_start, self.checkpointed + 1))


# -- the replica side -------------------------------------------------------------------------
@dataclass
class Snapshot:
    start: int
    end: int
    disk: bool
    items: tuple[Item, ...]
    resolved: tuple[tuple[int, bytes], ...]


def naive_hps(initial: int, segments, persisted: int) -> int:
    """The HPS from the definitions: prepares in order, each satisfied or a fence; a disk
    snapshot (and what a restore held) counts whole, once persisted whole."""
    hps = initial
    for end, disk, prepares in segments:
        if disk:
            if persisted < end:
                return hps
            hps = max(hps, end)
            continue
        for seqno, level in prepares:
            if seqno <= hps:
                continue
            if level is Level.PERSIST_TO_MAJORITY and persisted < end:
                return hps
            hps = seqno
    return hps


class Replica:
    """The replica vbucket as its shell and engine hold it; builds and feeds the consumer."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.failover_log: tuple[tuple[int, int], ...] = ()
        self.persisted = 0
        self.rollback_to: int | None = None
        self.restore(initial_hps=0)

    @property
    def high(self) -> int:
        return self.snapshots[-1].end if self.snapshots else 0

    def contents(self) -> Contents:
        contents = Contents()
        for snapshot in self.snapshots:
            for item in snapshot.items:
                contents.apply(item)
            for seqno, skey in snapshot.resolved:
                key = skey[6:]
                if key in contents.pending and contents.pending[key].seqno == seqno:
                    del contents.pending[key]
        return contents

    def restore(self, *, initial_hps: int) -> None:
        """Rebuild the consumer's expectations: what is held now is one base disk segment."""
        self.base_hps = initial_hps
        self.segments: list[tuple[int, bool, list[tuple[int, Level]]]] = [(self.high, True, [])] if self.high else []
        self.last_ack: SeqnoAck | None = None
        self.stream_acks: set[SeqnoAck] = set()

    def hps(self) -> int:
        return naive_hps(self.base_hps, self.segments, self.persisted)

    def tracked(self) -> tuple[tuple[TrackedPrepare, ...], int]:
        contents = self.contents()
        prepares = tuple(
            TrackedPrepare(p.seqno, store_key(VB, CID, p.key), Level(p.level)) for p in contents.pending.values()
        )
        hcs = 0
        for snapshot in self.snapshots:
            for item in snapshot.items:
                if isinstance(item, Commit | Abort):
                    hcs = max(hcs, item.prepared_seqno)
            if snapshot.disk:
                hcs = max(hcs, max((s for s, _ in snapshot.resolved), default=0))
        return prepares, hcs

    def state(self) -> ReplicaState:
        prepares, hcs = self.tracked()
        start = self.snapshots[-1].start if self.snapshots else 0
        return ReplicaState(self.failover_log, start, self.high, 0, hcs, prepares, self.persisted)

    def truncate(self, seqno: int) -> int:
        """Keep what is consistent at or below `seqno`: a memory snapshot may be cut anywhere."""
        while self.snapshots and self.snapshots[-1].end > seqno:
            last = self.snapshots.pop()
            if not last.disk and last.start <= seqno and seqno > self.high:
                kept = tuple(i for i in last.items if i.seqno <= seqno)
                self.snapshots.append(Snapshot(last.start, seqno, False, kept, ()))
        self.persisted = min(self.persisted, self.high)
        return self.high


class Run:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.source = Source(self.rng)
        self.replica = Replica()
        self.consumer = self.new_consumer(ReplicaState())
        self.producer: StreamProducer | None = None
        self.backfill: deque[Item] | None = None
        self.to_consumer: deque = deque()
        self.to_producer: deque = deque()
        self.counts: dict[str, int] = {}
        # Faults are activated per run, then fire with their probability (FoundationDB's buggify).
        fault = {name: self.rng.choice(rates) for name, rates in FAULT_RATES.items()}
        self.weights = [fault.get(name, BASE_WEIGHTS.get(name, 0.0)) for name in EVENTS]

    def new_consumer(self, state: ReplicaState) -> StreamConsumer:
        return StreamConsumer(VB, state=state, buffer_bytes=WINDOW_BYTES, memory_snapshot_bytes_max=SNAPSHOT_BYTES_MAX)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # -- the producer's shell ------------------------------------------------------------------
    def on_request(self, request: StreamRequest) -> None:
        src = self.source
        response, producer = open_stream(
            request,
            failover_log=src.failover_log,
            high_seqno=src.high,
            purge_seqno=src.purge_seqno,
            memory_start=src.memory_start,
            buffer_bytes=WINDOW_BYTES,
            memory_snapshot_bytes_max=SNAPSHOT_BYTES_MAX,
            item_batch_bytes_max=BATCH_BYTES_MAX,
            backfill_buffer_bytes_max=BACKFILL_BYTES_MAX,
        )
        self.count(f"response_{response.status.name}")
        self.count(f"row_{response.message}")
        self.to_consumer.append(response)
        self.producer, self.backfill = producer, None
        if producer is not None:
            for item in src.history[src.memory_start - 1 :]:
                producer.on_item(item)

    def producer_step(self) -> None:
        producer = self.producer
        if producer is None:
            return
        if producer.backfill_from is not None and self.backfill is None:
            high, hcs, hps, items = self.source.store_read(producer.backfill_from)
            purge = self.source.purge_seqno
            if producer.backfill_begin(high, high_completed_seqno=hcs, high_prepared_seqno=hps, purge_seqno=purge):
                self.backfill = deque(items)
                self.count("backfill")
            else:
                self.count("backfill_purged")
        if self.backfill is not None and producer.backfill_from is None and producer.state.value == "backfilling":
            for _ in range(self.rng.randrange(1, 6)):
                if not self.backfill or producer.backfill_room_bytes == 0:
                    break
                producer.backfill_item(self.backfill.popleft())
            if not self.backfill:
                producer.backfill_end()
                self.backfill = None
        in_flight_before = producer.bytes_in_flight
        had_output = producer.has_output
        assert producer.wants_backfill == (producer.state.value == "backfill_needed")
        messages = producer.next_batch(self.rng.choice((60, 300, 5000)))
        assert had_output or not messages, "has_output said nothing would come"
        # The producer counts what it hands out exactly as items.wire_size does (the shell relies on it).
        counted = sum(wire_size(m) for m in messages if isinstance(m, SnapshotMarker | ItemBatch))
        assert producer.bytes_in_flight - in_flight_before == counted
        self.to_consumer.extend(messages)
        # Nothing is sent with a full window; past it only by the one part that crossed it.
        parts = [wire_size(m) for m in messages if isinstance(m, SnapshotMarker)]
        parts += [item_size(i) + BATCH_OVERHEAD for m in messages if isinstance(m, ItemBatch) for i in m.items]
        if in_flight_before >= WINDOW_BYTES:
            assert not parts, "sent with a full window"
        elif producer.bytes_in_flight > WINDOW_BYTES:
            assert producer.bytes_in_flight - max(parts) < WINDOW_BYTES, "past the window by more than one item"

    def deliver_to_producer(self) -> None:
        message = self.to_producer.popleft()
        match message:
            case StreamRequest():
                self.on_request(message)
            case SeqnoAck():
                if self.producer is not None:
                    self.producer.seqno_ack(message)
            case BufferAck():
                if self.producer is not None:
                    self.producer.buffer_ack(message.bytes)

    # -- the replica's shell -------------------------------------------------------------------
    def deliver_to_consumer(self) -> None:
        self.carry_out(self.consumer.on_message(self.to_consumer.popleft()))

    def carry_out(self, actions) -> None:
        replica = self.replica
        for action in actions:
            match action:
                case sc.AdoptFailoverLog():
                    replica.failover_log = action.failover_log
                case sc.Apply():
                    self.check_apply(action)
                case sc.Rollback():
                    replica.rollback_to = action.seqno
                    self.count("rollback")
                case SeqnoAck():
                    self.check_ack(action)
                    self.to_producer.append(action)
                case BufferAck():
                    self.to_producer.append(action)

    def check_apply(self, apply: sc.Apply) -> None:
        replica, src = self.replica, self.source
        high = replica.high
        assert apply.snapshot_start <= high + 1 < apply.snapshot_end + 1, (apply.snapshot_start, high)
        seqnos = [i.seqno for i in apply.items]
        assert seqnos == sorted(set(seqnos)) and all(s > high for s in seqnos), "applied twice or out of order"
        if not apply.disk:
            assert apply.items == tuple(src.history[high : apply.snapshot_end]), "memory snapshot != history"
        replica.snapshots.append(
            Snapshot(apply.snapshot_start, apply.snapshot_end, apply.disk, apply.items, apply.resolved_prepares)
        )
        prepares = [(i.seqno, Level(i.level)) for i in apply.items if isinstance(i, Prepare)]
        replica.segments.append((apply.snapshot_end, apply.disk, prepares))
        expected, held = src.state_at(apply.snapshot_end), replica.contents()
        assert held.live() == expected.live(), "documents differ from the history at the snapshot end"
        assert held.pending_seqnos() == expected.pending_seqnos(), "pending prepares differ"
        self.count("apply_disk" if apply.disk else "apply_memory")

    def check_ack(self, ack: SeqnoAck) -> None:
        replica = self.replica
        assert ack.received_seqno == replica.high and ack.persisted_seqno == replica.persisted, (ack, replica.high)
        assert ack.high_prepared_seqno == replica.hps(), (ack, replica.hps(), replica.segments)
        last = replica.last_ack
        if last is not None:
            assert ack.high_prepared_seqno >= last.high_prepared_seqno
            assert ack.received_seqno >= last.received_seqno and ack.persisted_seqno >= last.persisted_seqno
        assert ack not in replica.stream_acks, "the same ack twice on one stream"
        replica.last_ack = ack
        replica.stream_acks.add(ack)

    def replica_step(self) -> None:
        replica, consumer = self.replica, self.consumer
        if consumer.state is ConsumerState.ROLLING_BACK and replica.rollback_to is not None:
            hps_before = replica.hps()
            reached = replica.truncate(replica.rollback_to)
            replica.rollback_to = None
            prepares, hcs = replica.tracked()
            self.carry_out(consumer.rolled_back(reached, prepares=prepares, high_completed_seqno=hcs))
            replica.restore(initial_hps=min(hps_before, reached))
            assert consumer.high_prepared_seqno == replica.hps()
        if consumer.state is ConsumerState.IDLE:
            self.to_producer.append(consumer.stream_request())
            replica.stream_acks = set()

    def persist(self, seqno: int) -> None:
        replica = self.replica
        if seqno > replica.persisted:
            replica.persisted = seqno
        self.carry_out(self.consumer.persisted(seqno))

    def drop_connection(self) -> None:
        self.to_consumer.clear()
        self.to_producer.clear()
        self.producer, self.backfill = None, None
        self.consumer.disconnected()
        self.count("drop")

    def crash_replica(self) -> None:
        self.drop_connection()
        replica = self.replica
        while replica.snapshots and replica.snapshots[-1].end > replica.persisted:
            replica.snapshots.pop()  # the WAL keeps whole snapshots only
        replica.persisted = replica.high
        replica.rollback_to = None
        self.consumer = self.new_consumer(replica.state())
        replica.restore(initial_hps=0)
        self.count("crash")

    # -- the schedule ----------------------------------------------------------------------------
    def step(self) -> None:
        rng, src, producer = self.rng, self.source, self.producer
        event = rng.choices(EVENTS, weights=self.weights)[0]
        if event == "append":
            item = src.append_random()
            if producer is not None:
                producer.on_item(item)
        elif event == "checkpoint":
            src.checkpointed = rng.randint(src.checkpointed, src.high)
        elif event == "trim_memory":
            src.memory_start = rng.randint(src.memory_start, src.checkpointed + 1)
            if producer is not None:
                producer.set_memory_start(src.memory_start)
        elif event == "purge":
            src.purge_seqno = rng.randint(src.purge_seqno, src.checkpointed)
        elif event == "produce":
            self.producer_step()
        elif event == "to_consumer":
            for _ in range(rng.randrange(1, 4)):
                if self.to_consumer:
                    self.deliver_to_consumer()
        elif event == "to_producer":
            while self.to_producer:
                self.deliver_to_producer()
        elif event == "replica":
            self.replica_step()
        elif event == "persist":
            self.persist(rng.randint(self.replica.persisted, self.replica.high))
        elif event == "drop":
            self.drop_connection()
        elif event == "crash":
            self.crash_replica()
        elif event == "close":
            if producer is not None:
                producer.close(StreamEndReason.STATE_CHANGED)
        elif event == "failover":
            src.fail_over()
            self.drop_connection()
            self.count("failover")

    def settle(self) -> None:
        """Faults off: everything is delivered until the replica holds the whole history."""
        for _ in range(10_000):
            self.replica_step()
            while self.to_producer:
                self.deliver_to_producer()
            self.producer_step()
            while self.to_consumer:
                self.deliver_to_consumer()
            self.persist(self.replica.high)
            if (
                self.replica.high == self.source.high
                and not self.to_consumer
                and self.consumer.state is ConsumerState.STREAMING
            ):
                return
        raise AssertionError(f"no progress: replica at {self.replica.high}, source at {self.source.high}")


@pytest.mark.parametrize("seed", range(50), ids=lambda s: f"seed_{s}")
def test_stream_pair_random_schedule_replica_matches_history(seed):
    run = Run(seed)
    try:
        for _ in range(STEPS):
            run.step()
        run.settle()
    except Exception as exc:
        raise AssertionError(f"seed={seed}: {exc!r}; counts={run.counts}") from exc
    src, replica = run.source, run.replica
    final = replica.contents()
    assert final.live() == src.now.live() and final.pending_seqnos() == src.now.pending_seqnos()
    assert run.consumer.high_prepared_seqno == replica.hps()
    assert replica.failover_log == tuple(src.failover_log)


def test_stream_pair_schedules_reach_every_path():
    """Across the seeds, every fault and both snapshot kinds actually happen (the runs prove something)."""
    totals: dict[str, int] = {}
    for seed in range(50):
        run = Run(seed)
        for _ in range(STEPS):
            run.step()
        run.settle()
        for what, n in run.counts.items():
            totals[what] = totals.get(what, 0) + n
    for what in (
        "apply_disk",
        "apply_memory",
        "backfill",
        "rollback",
        "crash",
        "drop",
        "failover",
        "response_ROLLBACK",
        "response_SUCCESS",
    ):
        assert totals.get(what, 0) > 0, (what, totals)

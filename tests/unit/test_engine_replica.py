"""Replication inside the engine: feed, backfill, replica snapshots, acks, rollback, promotion, restart.

Every test runs whole engines (BucketEngine over the real WAL and the real LMDB store, each in its
own directory) with a fake clock. "Streaming" here is done by hand, the way the replication shell
does it: the active's feed records (or one backfill read of its store) become `ReplicaItem`s that
the replica engine applies as snapshots; acks go back through `replica_ack`. The last test runs the
real stream cores (producer and consumer) between two engines.

A crash is a power cut: the WAL loses every byte not fsynced and the store keeps its last
checkpoint. `Node.checkpoint` does what the embedded shell does, vbucket deletions included.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from durakv.engine import replica as replica_module
from durakv.engine.bucket import BucketConfig, MutationOutcome
from durakv.engine.document import Document, store_key
from durakv.engine.durability import Chain, Level
from durakv.engine.errors import Status
from durakv.engine.kv import BucketEngine
from durakv.engine.records import Kind, Record, encode_document_record
from durakv.engine.replica import (
    FeedTrimmedError,
    ReplicaItem,
    RollbackRow,
    SnapshotRejectedError,
    VBucketReplicaState,
)
from durakv.engine.snapshot_apply import encode_snapshot
from durakv.engine.store import CheckpointStore
from durakv.engine.vbucket import VBState, VBucket
from durakv.engine.wal import FsyncPolicy, WriteAheadLog

try:
    from enginekit import T0, WAIT_S, keys_in_one_vbucket, refused, vbucket_of
except ImportError:  # tests/unit became a package
    from tests.unit.enginekit import T0, WAIT_S, keys_in_one_vbucket, refused, vbucket_of

D = ("_default", "_default")
A, B, C = "node-a", "node-b", "node-c"
VB_COUNT = 4
SOLO = BucketConfig("b", num_vbuckets=VB_COUNT)  # no replica slots: SyncWrites complete on the active alone
PAIR = BucketConfig("b", num_vbuckets=VB_COUNT, num_replicas=1)
TRIO = BucketConfig("b", num_vbuckets=VB_COUNT, num_replicas=2)
KEYS = keys_in_one_vbucket(8, VB_COUNT)
VB = vbucket_of(KEYS[0], VB_COUNT)
MAJORITY, PERSIST = int(Level.MAJORITY), int(Level.PERSIST_TO_MAJORITY)


class Node:
    """One bucket of one node: engine, WAL and store in `path`, recovered at construction."""

    def __init__(self, path: Path, node_id: str, config: BucketConfig, *, clean: bool = False, **wal_kw) -> None:
        self.path, self.node_id, self.config = path, node_id, config
        self.wal = WriteAheadLog.open(path / "wal", fsync_policy=FsyncPolicy.parse("never"), **wal_kw)
        self.store = CheckpointStore(path / "store")
        self.engine = BucketEngine(config, self.wal, self.store, node_id=node_id, rng=random.Random(node_id))
        self.engine.recover(self.wal.replay(self.store.checkpoint_lsn), clean_shutdown=clean, now=T0)
        self.wal.start()
        self.closed = False

    def persist(self) -> None:
        lsn = self.wal.end_lsn
        self.wal.request_sync(lsn)
        assert self.wal.wait_persisted(lsn, WAIT_S)
        self.engine.on_persisted(lsn)

    def checkpoint(self, batch=None) -> None:
        """embedded.py `_checkpoint`: WAL first, then vbucket deletions, then the batch."""
        batch = batch or self.engine.freeze_for_checkpoint()
        self.wal.request_sync(batch.checkpoint_lsn)
        assert self.wal.wait_persisted(batch.checkpoint_lsn, WAIT_S)
        for vbid in batch.vbuckets_delete:
            self.store.delete_vbucket(vbid)
        self.store.apply(batch)
        self.engine.checkpoint_done()
        self.wal.release_before(batch.checkpoint_lsn)

    def crash(self) -> None:
        if not self.closed:
            self.closed = True
            self.wal.power_loss()
            self.store.close()

    def close(self) -> None:
        self.checkpoint()
        self.closed = True
        self.wal.close()
        self.store.close()


@pytest.fixture
def nodes(tmp_path):
    """`nodes.open(name, config)`, `nodes.restart(node)` (after a crash unless closed); all released at teardown."""

    class Nodes:
        opened: list[Node] = []

        def open(self, node_id: str, config: BucketConfig = SOLO, **kw) -> Node:
            node = Node(tmp_path / node_id, node_id, config, **kw)
            self.opened.append(node)
            return node

        def restart(self, node: Node, **kw) -> Node:
            crash = kw.pop("crash", False)
            clean = node.closed and not crash
            node.crash()
            return self.open(node.node_id, node.config, clean=clean, **kw)

    made = Nodes()
    yield made
    for node in made.opened:
        node.crash()


# -- moving data by hand, as the shell does -----------------------------------------------------
def item(record: Record) -> ReplicaItem:
    return ReplicaItem(record.kind, record.collection_id, record.key, record.document, record.level,
                       record.prepare_seqno, record.seqno)  # fmt: skip


def make_replica(node: Node, vbid: int = VB) -> None:
    node.engine.set_topology(vbid, VBState.REPLICA)


def stream(active: Node, replica: Node, vbid: int = VB, *, upto: int | None = None, chunk: int = 3) -> None:
    """Memory snapshots of `chunk` records each, from the active's feed, after the replica's high seqno."""
    high = replica.engine.vbuckets[vbid].high_seqno
    recs = [r for r in active.engine.feed(vbid).records_since(high + 1) if upto is None or r.seqno <= upto]
    for i in range(0, len(recs), chunk):
        part = recs[i : i + chunk]
        replica.engine.apply_snapshot(vbid, part[0].seqno, part[-1].seqno, False, [item(r) for r in part])


def backfill(active: Node, replica: Node, vbid: int = VB) -> int:
    """One disk snapshot from the active's store (as the producer's backfill); returns its end."""
    vb = replica.engine.vbuckets[vbid]
    snap = active.store.backfill_read(vbid, vb.high_seqno + 1)
    items = [ReplicaItem(Kind.DELETION if doc.deleted else Kind.MUTATION, cid, key, doc, 0, 0, s)
             for s, cid, key, doc in snap.documents]  # fmt: skip
    items += [ReplicaItem(Kind.PREPARE, cid, key, doc, level, 0, s) for s, cid, key, level, doc in snap.prepares]
    items.sort(key=lambda i: i.seqno)
    # What the consumer resolves: held prepares the snapshot's HCS covers, or a newer prepare replaces.
    held = {p.skey: p.document.seqno for p in vb.prepares.values()}
    resolved = {(s, k) for k, s in held.items() if s <= snap.high_completed_seqno}
    resolved |= {(held[k], k) for i in items if i.kind is Kind.PREPARE and (k := store_key(vbid, 0, i.key)) in held}
    replica.engine.apply_snapshot(vbid, vb.high_seqno + 1, snap.high_seqno, True, items, sorted(resolved),
                                  snap.high_completed_seqno)  # fmt: skip
    return snap.high_seqno


def contents(node: Node, vbid: int = VB) -> tuple[dict[bytes, Document], dict[bytes, tuple[Document, int]]]:
    """Committed documents (tombstones included) and pending prepares of one vbucket, as the engine serves them."""
    e, prefix = node.engine, vbid.to_bytes(2, "big")
    skeys = {k for k, _ in node.store.iter_docs(vbid)}
    skeys |= {k for layer in (e.memtable.live, e.memtable.frozen) for k in layer if k[:2] == prefix}
    docs = {k: d for k in skeys if (d := e.committed(k)) is not None}
    return docs, {k: (p.document, p.level) for k, p in e.vbuckets[vbid].prepares.items()}


def history(active: Node, now: float = T0) -> None:
    """A vbucket history with every kind of item: mutations, a deletion, an expiry, commits, an abort."""
    e = active.engine
    k = KEYS
    e.upsert(*D, k[0], b"a0", 1, now)
    e.upsert(*D, k[1], b"b0", 2, now, expiry=60)
    e.upsert(*D, k[0], b"a1", 1, now)
    e.remove(*D, k[1], now)
    e.upsert(*D, k[2], b"c0", 3, now + 1, level=MAJORITY)  # prepare + commit at once (no replica slots)
    e.upsert(*D, k[3], b"d0", 4, now + 1, expiry=5)
    with refused(Status.KEY_ENOENT):
        e.get(*D, k[3], now + 10)  # expired: an EXPIRATION record
    pending = e.upsert(*D, k[4], b"e0", 5, now + 1, level=PERSIST, timeout_ms=1000)
    e.tick(now + 3)  # the unpersisted prepare times out: ABORT
    assert pending.done and pending.error.status is Status.SYNC_WRITE_AMBIGUOUS
    e.upsert(*D, k[5], b"f0", 6, now + 4, level=PERSIST)
    active.persist()  # commits it
    e.remove(*D, k[2], now + 5)


def kinds(node: Node, vbid: int = VB) -> list[Kind]:
    return [r.kind for r in node.engine.feed(vbid).records_since(node.engine.feed(vbid).memory_start)]


# -- the feed -------------------------------------------------------------------------------------
def test_feed_holds_every_record_in_seqno_order_and_calls_on_change(nodes):
    active = nodes.open(A)
    changed: list[int] = []
    active.engine.on_change = changed.append
    history(active)
    feed = active.engine.feed(VB)
    recs = feed.records_since(1)
    assert [r.seqno for r in recs] == list(range(1, active.engine.vbuckets[VB].high_seqno + 1))
    assert {Kind.MUTATION, Kind.DELETION, Kind.EXPIRATION, Kind.PREPARE, Kind.COMMIT, Kind.ABORT} == set(kinds(active))
    assert changed.count(VB) >= len(recs)  # one call per record at least (state records too)
    assert feed.records_since(recs[-1].seqno) == [recs[-1]] and feed.records_since(recs[-1].seqno + 1) == []
    assert feed.memory_start == 1 and feed.streamable


def test_feed_lets_go_only_of_checkpointed_records_beyond_its_limit(nodes, monkeypatch):
    monkeypatch.setattr(replica_module, "FEED_RECORDS_MAX", 5)
    active = nodes.open(A)
    for i in range(12):
        active.engine.upsert(*D, KEYS[i % 4], b"v%d" % i, 0, T0)
    feed = active.engine.feed(VB)
    assert feed.memory_start == 1 and len(feed) == 12  # nothing is in the store yet
    active.checkpoint()
    assert feed.checkpointed_seqno == 12 and len(feed) == 5 and feed.memory_start == 8 and feed.streamable
    with pytest.raises(FeedTrimmedError) as caught:
        feed.records_since(7)
    assert (caught.value.from_seqno, caught.value.memory_start) == (7, 8)
    active.engine.upsert(*D, KEYS[0], b"after", 0, T0)
    active.persist()
    restarted = nodes.restart(active)
    feed = restarted.engine.feed(VB)
    assert (feed.memory_start, feed.checkpointed_seqno) == (13, 12)
    assert [r.seqno for r in feed.records_since(13)] == [13]  # replayed from the WAL


def test_feed_after_a_disk_snapshot_is_not_streamable_until_a_checkpoint_covers_it(nodes):
    active, replica = nodes.open(A), nodes.open(B)
    history(active)
    active.checkpoint()
    make_replica(replica)
    end = backfill(active, replica)
    feed = replica.engine.feed(VB)
    assert feed.memory_start == end + 1 and not feed.streamable  # deduplicated: never served as memory
    replica.checkpoint()
    assert feed.streamable and feed.checkpointed_seqno == end


# -- backfill reads -------------------------------------------------------------------------------
def test_backfill_read_returns_each_key_once_at_its_newest_version_plus_prepares(nodes):
    active = nodes.open(A, PAIR)
    e = active.engine
    e.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    k = KEYS
    e.upsert(*D, k[0], b"old", 0, T0)
    e.upsert(*D, k[1], b"gone", 0, T0)
    e.upsert(*D, k[0], b"new", 0, T0)
    e.remove(*D, k[1], T0)
    pending = e.upsert(*D, k[2], b"pending", 0, T0, level=MAJORITY)  # waits for node-b
    other = next(key for key in (b"x%d" % i for i in range(100)) if vbucket_of(key, VB_COUNT) != VB)
    e.upsert(*D, other, b"elsewhere", 0, T0)
    active.checkpoint()
    assert not pending.done
    snap = active.store.backfill_read(VB, 1)
    assert [(s, key, doc.value, doc.deleted) for s, _, key, doc in snap.documents] == [
        (3, k[0], b"new", False), (4, k[1], b"", True)]  # fmt: skip
    assert [(s, key, level, doc.value) for s, _, key, level, doc in snap.prepares] == [(5, k[2], MAJORITY, b"pending")]
    assert (snap.high_seqno, snap.high_completed_seqno, snap.high_prepared_seqno, snap.purge_seqno) == (5, 0, 5, 0)
    later = active.store.backfill_read(VB, 4)
    assert [s for s, *_ in later.documents] == [4] and [s for s, *_ in later.prepares] == [5]
    e.replica_ack(VB, B, 5)  # commits; the next checkpoint holds the commit and the HCS
    active.checkpoint()
    snap = active.store.backfill_read(VB, 1)
    assert snap.prepares == [] and snap.high_completed_seqno == 5 and snap.high_seqno == 6
    assert [(s, key) for s, _, key, _ in snap.documents][-1] == (6, k[2])


def test_vbucket_state_json_without_the_replication_fields_still_loads():
    vb = VBucket(0)
    vb.load_state_json(
        json.dumps({"state": "replica", "high_seqno": 7, "failover_log": [[5, 0]], "max_cas": 9}).encode()
    )
    assert (vb.state, vb.high_seqno, vb.high_completed_seqno, vb.last_prepare_seqno, vb.snapshot_end) == (
        VBState.REPLICA, 7, 0, 0, 0)  # fmt: skip


# -- applying snapshots ---------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_memory_snapshots_of_the_active_records_give_the_same_committed_state(nodes, chunk):
    active, replica = nodes.open(A), nodes.open(B)
    make_replica(replica)
    history(active)
    stream(active, replica, chunk=chunk)
    assert contents(replica) == contents(active)
    rvb, avb = replica.engine.vbuckets[VB], active.engine.vbuckets[VB]
    assert rvb.high_seqno == avb.high_seqno and rvb.high_completed_seqno == avb.high_completed_seqno
    assert rvb.hlc.max_cas >= avb.hlc.max_cas  # peers' CAS raise the replica's clock
    assert replica.engine.get_replica(*D, KEYS[0], T0).value == b"a1"
    with refused(Status.KEY_ENOENT):
        replica.engine.get_replica(*D, KEYS[1], T0)
    with refused(Status.NOT_MY_VBUCKET):
        replica.engine.get(*D, KEYS[0], T0)  # a replica serves only replica reads


def test_backfill_then_memory_snapshots_give_the_same_committed_state_after_restart(nodes):
    active, replica = nodes.open(A), nodes.open(B)
    make_replica(replica)
    history(active)
    active.checkpoint()
    active.engine.upsert(*D, KEYS[6], b"g0", 0, T0 + 6)
    active.engine.upsert(*D, KEYS[0], b"a2", 0, T0 + 6)
    end = backfill(active, replica)
    assert end == active.engine.feed(VB).checkpointed_seqno
    stream(active, replica)
    assert contents(replica) == contents(active)
    replica.persist()
    replica = nodes.restart(replica)
    assert contents(replica) == contents(active)
    assert replica.engine.vbuckets[VB].state is VBState.REPLICA


def test_a_snapshot_encoded_before_the_lock_applies_as_its_items_do(nodes):
    # The shell encodes a snapshot's records before it takes the bucket lock: same outcome.
    active, by_items, by_encoded = nodes.open("a"), nodes.open("r1"), nodes.open("r2")
    active.engine.set_topology(VB, VBState.ACTIVE)
    history(active)
    make_replica(by_items)
    make_replica(by_encoded)
    recs = list(active.engine.feed(VB).records_since(1))
    end = recs[-1].seqno
    by_items.engine.apply_snapshot(VB, 1, end, False, [item(r) for r in recs])
    by_encoded.engine.apply_snapshot(VB, 1, end, False, encode_snapshot(VB, [item(r) for r in recs]))
    assert contents(by_encoded) == contents(by_items) == contents(active)
    assert kinds(by_encoded) == kinds(by_items)


def test_a_disk_snapshot_that_leaves_the_memtable_empty_still_wants_a_checkpoint(nodes):
    # A backfill of only aborted prepares (here: nothing but its range) puts no document in
    # the memtable, yet the feed cannot stream until a checkpoint covers it: the shells'
    # "memtable not empty" trigger alone left a promoted copy unstreamable for good.
    replica = nodes.open("r")
    make_replica(replica)
    assert not replica.engine.checkpoint_wanted()
    replica.engine.apply_snapshot(VB, 1, 3, True, [])
    feed = replica.engine.feed(VB)
    assert len(replica.engine.memtable) == 0 and not feed.streamable
    assert replica.engine.checkpoint_wanted()
    replica.checkpoint()
    assert feed.streamable and not replica.engine.checkpoint_wanted()


def test_a_replica_keeps_the_adopted_failover_log_when_told_again_it_is_a_replica(nodes):
    # A configuration pushed again (same state) between the stream's acceptance and its first
    # item must not wipe the log the stream adopted: the copy would report uuid 0 for good,
    # and observe-based durability would count it as failed over.
    active, replica = nodes.open("a"), nodes.open("r")
    active.engine.set_topology(VB, VBState.ACTIVE)
    make_replica(replica)
    replica.engine.set_failover_log(VB, active.engine.vbuckets[VB].failover_log)
    make_replica(replica)
    active.engine.upsert(*D, KEYS[0], b"v", 0, T0)
    stream(active, replica)
    assert replica.engine.vbuckets[VB].uuid == active.engine.vbuckets[VB].uuid != 0


def test_a_replica_prepare_is_maybe_visible_and_replica_reads_show_the_committed_value(nodes):
    active, replica = nodes.open(A, PAIR), nodes.open(B, PAIR)
    active.engine.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    active.engine.upsert(*D, KEYS[0], b"v1", 0, T0)
    active.engine.upsert(*D, KEYS[0], b"v2", 0, T0, level=MAJORITY)
    stream(active, replica)
    prepare = replica.engine.vbuckets[VB].prepares[store_key(VB, 0, KEYS[0])]
    assert prepare.maybe_visible and prepare.document.value == b"v2"
    assert replica.engine.get_replica(*D, KEYS[0], T0).value == b"v1"
    assert active.engine.get_replica(*D, KEYS[0], T0).value == b"v1"  # the active's copy too


def test_apply_snapshot_refuses_a_completion_without_its_prepare_and_writes_nothing(nodes):
    replica = nodes.open(B)
    make_replica(replica)
    end_lsn, high = replica.wal.end_lsn, replica.engine.vbuckets[VB].high_seqno
    bad = ReplicaItem(Kind.COMMIT, 0, KEYS[0], None, 0, 1, 2)
    with pytest.raises(SnapshotRejectedError):
        replica.engine.apply_snapshot(VB, 1, 2, False, [bad])
    doc = Document(1 << 16, 3, 1, 0, 0, False, b"v")
    with pytest.raises(SnapshotRejectedError):  # seqno outside the snapshot
        replica.engine.apply_snapshot(VB, 1, 2, False, [ReplicaItem(Kind.MUTATION, 0, KEYS[0], doc, 0, 0, 3)])
    assert (replica.wal.end_lsn, replica.engine.vbuckets[VB].high_seqno) == (end_lsn, high)


def test_apply_snapshot_and_rollback_on_an_active_or_dead_vbucket_are_not_my_vbucket(nodes):
    node = nodes.open(A)
    doc = Document(1 << 16, 1, 1, 0, 0, False, b"v")
    for state in (VBState.ACTIVE, VBState.DEAD):
        node.engine.set_topology(VB, state)
        with refused(Status.NOT_MY_VBUCKET):
            node.engine.apply_snapshot(VB, 1, 1, False, [ReplicaItem(Kind.MUTATION, 0, KEYS[0], doc, 0, 0, 1)])
        with refused(Status.NOT_MY_VBUCKET):
            node.engine.rollback(VB, 0)
    with refused(Status.NOT_MY_VBUCKET):
        node.engine.get_replica(*D, KEYS[0], T0)
    with refused(Status.NOT_MY_VBUCKET):
        node.engine.observe_seqno(VB)


def test_replica_persistence_is_reported_per_whole_snapshot(nodes):
    active, replica = nodes.open(A), nodes.open(B)
    make_replica(replica)
    reported: list[tuple[int, int]] = []
    replica.engine.on_replica_persisted = lambda vbid, seqno: reported.append((vbid, seqno))
    history(active)
    stream(active, replica, chunk=4)
    replica.persist()
    high = replica.engine.vbuckets[VB].high_seqno
    assert reported[-1] == (VB, high) and all(s <= high for _, s in reported)
    uuid, observed_high, persisted = replica.engine.observe_seqno(VB)
    assert (observed_high, persisted) == (high, high) and uuid == replica.engine.vbuckets[VB].uuid


# -- restart ---------------------------------------------------------------------------------------
def test_a_partial_snapshot_cut_by_a_crash_is_dropped_at_recovery(nodes):
    active, replica = nodes.open(A), nodes.open(B)
    make_replica(replica)
    history(active)
    recs = active.engine.feed(VB).records_since(1)
    first, rest = recs[:5], recs[5:]
    replica.engine.apply_snapshot(VB, 1, 5, False, [item(r) for r in first])
    replica.checkpoint()  # the store holds the first snapshot
    replica.engine.apply_snapshot(VB, 6, 7, False, [item(r) for r in rest[:2]])
    expected = contents(replica)
    # The next snapshot's items reached the WAL, its SNAPSHOT_END did not (the crash cut it).
    for seqno in (8, 9):
        doc = Document(seqno << 16, seqno, 1, 0, 0, False, b"torn")
        replica.wal.append(Kind.MUTATION, encode_document_record(VB, 0, KEYS[7], doc.encode()))
    replica.persist()
    replica = nodes.restart(replica)
    assert replica.engine.vbuckets[VB].high_seqno == 7
    assert contents(replica) == expected
    state = replica.engine.replica_state(VB)
    assert (state.snapshot_start, state.high_seqno, state.persisted_seqno) == (6, 7, 7)


def test_replica_state_after_restart_holds_the_prepares_hps_hcs_and_failover_log(nodes):
    active, replica = nodes.open(A, PAIR), nodes.open(B, PAIR)
    active.engine.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    e = active.engine
    e.upsert(*D, KEYS[0], b"v", 0, T0, level=MAJORITY)
    e.replica_ack(VB, B, 1)
    e.upsert(*D, KEYS[1], b"w", 0, T0, level=PERSIST)
    replica.engine.set_failover_log(VB, active.engine.vbuckets[VB].failover_log)
    stream(active, replica, chunk=1)
    replica.persist()
    before = replica.engine.replica_state(VB)
    assert before == VBucketReplicaState(
        tuple(active.engine.vbuckets[VB].failover_log), 3, 3, 3, 1,
        (replica_module.Prepare(3, store_key(VB, 0, KEYS[1]), Level.PERSIST_TO_MAJORITY),), 3,
    )  # fmt: skip
    replica = nodes.restart(replica)
    assert replica.engine.replica_state(VB) == before


def test_an_unclean_restart_starts_a_failover_entry_only_for_active_vbuckets(nodes):
    node = nodes.open(B)
    log_before = list(node.engine.vbuckets[0].failover_log)
    replica_vb = 1
    node.engine.set_topology(replica_vb, VBState.REPLICA)
    node.engine.set_failover_log(replica_vb, [(0xABC, 0)])
    node.engine.set_topology(2, VBState.REPLICA)
    assert node.engine.rollback(2, 0).row is RollbackRow.ASKED_ZERO  # nothing held: no failover log at all
    node.persist()
    node = nodes.restart(node)
    assert len(node.engine.vbuckets[0].failover_log) == 2 and node.engine.vbuckets[0].failover_log[1:] == log_before
    assert node.engine.vbuckets[replica_vb].failover_log == [(0xABC, 0)]
    assert node.engine.vbuckets[2].failover_log == []
    node.close()
    node = nodes.restart(node)  # clean: nothing new
    assert len(node.engine.vbuckets[0].failover_log) == 2


# -- acks ------------------------------------------------------------------------------------------
def test_replica_ack_commits_a_sync_write_on_a_one_replica_chain_and_answers_it(nodes):
    active, replica = nodes.open(A, PAIR), nodes.open(B, PAIR)
    active.engine.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    pending = active.engine.upsert(*D, KEYS[0], b"durable", 0, T0, level=PERSIST)
    active.persist()
    assert not pending.done  # the active alone is not a majority of two
    stream(active, replica)
    replica.persist()
    state = replica.engine.replica_state(VB)
    assert state.high_prepared_seqno == 1
    active.engine.replica_ack(VB, B, state.high_prepared_seqno, state.high_seqno, state.persisted_seqno)
    assert pending.done and isinstance(pending.outcome(), MutationOutcome)
    assert pending.outcome().cas == replica.engine.vbuckets[VB].prepares[store_key(VB, 0, KEYS[0])].document.cas
    assert active.engine.get(*D, KEYS[0], T0).value == b"durable"
    assert active.engine.replica_positions(VB) == {B: (1, 1, 1)}
    stream(active, replica)  # the commit reaches the replica
    assert contents(replica) == contents(active) and replica.engine.vbuckets[VB].high_completed_seqno == 1


def test_a_promoted_replica_asks_for_the_fsync_its_taken_over_prepares_need(nodes):
    # As a replica, only PERSIST_TO_MAJORITY prepares ask for an fsync. Promoted, a pending
    # MAJORITY_AND_PERSIST_TO_ACTIVE prepare needs the new active's own persistence: with a
    # log that fsyncs only when asked (policy never), nothing else would ever ask.
    active, replica = nodes.open(A, PAIR), nodes.open(B, PAIR)
    active.engine.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    active.engine.upsert(*D, KEYS[0], b"durable", 0, T0, level=int(Level.MAJORITY_AND_PERSIST_TO_ACTIVE))
    stream(active, replica)
    assert replica.wal.persisted_lsn < replica.wal.end_lsn  # received, never fsynced
    replica.engine.set_topology(VB, VBState.ACTIVE, Chain(B, (A,)))  # promoted; A holds the prepare too
    replica.engine.replica_ack(VB, A, 1, 1, 1)
    assert replica.engine.vbuckets[VB].prepares  # a majority has it; the new active has not persisted it
    end = replica.wal.end_lsn
    assert replica.wal.wait_persisted(end, WAIT_S), "the promoted copy never asked for an fsync"
    replica.engine.on_persisted(end)
    assert not replica.engine.vbuckets[VB].prepares  # committed
    assert replica.engine.get(*D, KEYS[0], T0).value == b"durable"


def test_two_replicas_and_one_ack_commit_a_majority_write(nodes):
    active = nodes.open(A, TRIO)
    e = active.engine
    e.set_topology(VB, VBState.ACTIVE, Chain(A, (B, C)))
    low = e.upsert(*D, KEYS[0], b"one", 0, T0, level=MAJORITY)
    high = e.upsert(*D, KEYS[1], b"two", 0, T0, level=PERSIST)
    e.replica_ack(VB, C, 0)
    assert not low.done
    e.replica_ack(VB, B, 2)
    assert low.done and low.outcome().seqno == 3  # committed at a new seqno
    assert not high.done  # PERSIST_TO_MAJORITY also needs the active's own fsync
    active.persist()
    assert high.done and e.get(*D, KEYS[1], T0).value == b"two"
    assert e.replica_positions(VB) == {B: (0, 0, 2), C: (0, 0, 0)}


def test_a_replica_ack_for_a_vbucket_that_is_not_active_is_only_recorded(nodes):
    node = nodes.open(B)
    make_replica(node)
    node.engine.replica_ack(VB, C, 5, 5, 4)
    assert node.engine.replica_positions(VB) == {C: (5, 4, 5)}


# -- promotion --------------------------------------------------------------------------------------
def test_a_promoted_replica_commits_its_prepare_once_the_new_chain_satisfies_it(nodes):
    active, replica = nodes.open(A, PAIR), nodes.open(B, PAIR)
    active.engine.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    active.engine.upsert(*D, KEYS[0], b"old", 0, T0)
    waiting = active.engine.upsert(*D, KEYS[0], b"new", 0, T0, level=MAJORITY)
    replica.engine.set_failover_log(VB, active.engine.vbuckets[VB].failover_log)
    stream(active, replica)
    replica.persist()
    active.crash()  # node-a is gone; its client never learns the outcome
    assert not waiting.done
    e = replica.engine
    e.set_topology(VB, VBState.ACTIVE, Chain(B, (C,)))
    vb = e.vbuckets[VB]
    assert len(vb.failover_log) == 2 and vb.failover_log[0][1] == 2  # a new branch at the high seqno
    with refused(Status.SYNC_WRITE_RECOMMIT_IN_PROGRESS):
        e.get(*D, KEYS[0], T0)
    with refused(Status.SYNC_WRITE_IN_PROGRESS):
        e.upsert(*D, KEYS[0], b"other", 0, T0)
    assert e.get_replica(*D, KEYS[0], T0).value == b"old"
    e.tick(T0 + 3600)  # no timeout for a taken-over prepare
    assert store_key(VB, 0, KEYS[0]) in vb.prepares
    e.replica_ack(VB, C, 2)
    assert store_key(VB, 0, KEYS[0]) not in vb.prepares
    assert e.get(*D, KEYS[0], T0).value == b"new" and vb.high_seqno == 3 and vb.high_completed_seqno == 2
    assert [r.kind for r in e.feed(VB).records_since(3)] == [Kind.COMMIT]
    # The state record precedes the commit in the WAL, so recovery replays the commit as an active's.
    replica.persist()
    restarted = nodes.restart(replica)
    assert restarted.engine.vbuckets[VB].prepares == {} and restarted.engine.get(*D, KEYS[0], T0).value == b"new"


def test_a_promoted_replica_with_no_replica_slots_commits_at_once_and_survives_a_restart(nodes):
    active, replica = nodes.open(A, PAIR), nodes.open(B, SOLO)
    active.engine.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    active.engine.upsert(*D, KEYS[0], b"new", 0, T0, level=PERSIST)
    stream(active, replica)
    replica.persist()
    replica.engine.set_topology(VB, VBState.ACTIVE)
    assert replica.engine.get(*D, KEYS[0], T0).value == b"new"
    replica.persist()
    replica = nodes.restart(replica)
    assert replica.engine.get(*D, KEYS[0], T0).value == b"new"
    assert replica.engine.vbuckets[VB].prepares == {}


# -- rollback: one scenario per row of the table ------------------------------------------------------
def _replica_with_history(nodes, *, chunk: int = 3) -> tuple[Node, Node]:
    active, replica = nodes.open(A), nodes.open(B)
    make_replica(replica)
    history(active)
    for i in range(3):
        active.engine.upsert(*D, KEYS[6 + i % 2], b"tail%d" % i, 0, T0 + 6)
    replica.engine.set_failover_log(VB, active.engine.vbuckets[VB].failover_log)
    stream(active, replica, chunk=chunk)
    return active, replica


def _reference(nodes, active: Node, seqno: int, name: str = C) -> Node:
    """A replica that received the active's history up to `seqno` only."""
    ref = nodes.open(name)
    make_replica(ref)
    stream(active, ref, upto=seqno, chunk=1)
    return ref


def _row_not_a_replica(nodes):
    node = nodes.open(A)
    node.engine.upsert(*D, KEYS[0], b"v", 0, T0)
    with refused(Status.NOT_MY_VBUCKET):
        node.engine.rollback(VB, 0)
    assert node.engine.get(*D, KEYS[0], T0).value == b"v"


def _row_nothing_to_undo(nodes):
    _, replica = _replica_with_history(nodes)
    before, high = contents(replica), replica.engine.vbuckets[VB].high_seqno
    end_lsn = replica.wal.end_lsn
    result = replica.engine.rollback(VB, high)
    assert (result.row, result.high_seqno, result.to_zero) == (RollbackRow.NOTHING_TO_UNDO, high, False)
    assert contents(replica) == before and replica.wal.end_lsn == end_lsn


def _check_zero(nodes, active: Node, replica: Node, result) -> None:
    assert result.to_zero and (result.high_seqno, result.prepares, result.high_completed_seqno) == (0, (), 0)
    assert contents(replica) == ({}, {})  # the store's stale copy is hidden at once
    state = replica.engine.replica_state(VB)
    assert state == VBucketReplicaState((), 0, 0, 0, 0, (), 0)
    with refused(Status.KEY_ENOENT):
        replica.engine.get_replica(*D, KEYS[0], T0)
    # Streamed again from zero, checkpointed (the old copy is deleted first), restarted.
    replica.engine.set_failover_log(VB, active.engine.vbuckets[VB].failover_log)
    stream(active, replica, upto=4)
    replica.checkpoint()
    assert replica.engine.store is replica.store  # deleted: nothing hidden any more
    assert sorted(s for s, *_ in replica.store.backfill_read(VB, 0).documents) == sorted(
        d.seqno for d in contents(_reference(nodes, active, 4, "ref-zero"))[0].values())  # fmt: skip
    stream(active, replica)
    assert contents(replica) == contents(active)
    replica.persist()
    replica = nodes.restart(replica)
    assert contents(replica) == contents(active)


def _row_asked_zero(nodes):
    active, replica = _replica_with_history(nodes)
    replica.checkpoint()
    result = replica.engine.rollback(VB, 0)
    assert result.row is RollbackRow.ASKED_ZERO
    _check_zero(nodes, active, replica, result)


def _row_checkpoint_in_flight(nodes):
    active, replica = _replica_with_history(nodes)
    batch = replica.engine.freeze_for_checkpoint()
    result = replica.engine.rollback(VB, 5)
    assert result.row is RollbackRow.CHECKPOINT_IN_FLIGHT
    replica.checkpoint(batch)  # the batch frozen before the rollback lands: stale, and hidden
    assert VB not in batch.vbuckets_delete
    _check_zero(nodes, active, replica, result)


def _row_store_ahead(nodes):
    active, replica = _replica_with_history(nodes)
    replica.checkpoint()
    result = replica.engine.rollback(VB, 5)
    assert result.row is RollbackRow.STORE_AHEAD
    _check_zero(nodes, active, replica, result)


def _row_wal_released(nodes):
    active, replica = nodes.open(A), nodes.open(B, segment_size_max=1024)
    make_replica(replica)
    history(active)
    stream(active, replica, chunk=1)
    replica.persist()
    replica.wal.release_before(replica.wal.end_lsn)  # as if segments after the checkpoint were gone
    assert replica.wal.first_lsn > replica.store.checkpoint_lsn
    result = replica.engine.rollback(VB, 5)
    assert result.row is RollbackRow.WAL_RELEASED and result.to_zero and contents(replica) == ({}, {})


def _row_exact(nodes):
    active, replica = _replica_with_history(nodes)
    high = replica.engine.vbuckets[VB].high_seqno
    for target in (high - 1, 9, 6, 5, 1):  # inside memory snapshots, at their ends, below a commit
        result = replica.engine.rollback(VB, target)
        assert (result.row, result.high_seqno, result.to_zero) == (RollbackRow.EXACT, target, False)
        ref = _reference(nodes, active, target, f"ref{target}")
        assert contents(replica) == contents(ref)
        assert result.prepares == ref.engine.replica_state(VB).prepares
        assert result.high_completed_seqno == ref.engine.vbuckets[VB].high_completed_seqno
        assert all(s <= target for _, s in replica.engine.vbuckets[VB].failover_log)
        replica.engine.set_failover_log(VB, active.engine.vbuckets[VB].failover_log)
        stream(active, replica, chunk=2)  # and forward again
        assert contents(replica) == contents(active)


ROW_SCENARIOS = {
    RollbackRow.NOT_A_REPLICA: _row_not_a_replica,
    RollbackRow.NOTHING_TO_UNDO: _row_nothing_to_undo,
    RollbackRow.ASKED_ZERO: _row_asked_zero,
    RollbackRow.CHECKPOINT_IN_FLIGHT: _row_checkpoint_in_flight,
    RollbackRow.STORE_AHEAD: _row_store_ahead,
    RollbackRow.WAL_RELEASED: _row_wal_released,
    RollbackRow.EXACT: _row_exact,
}


@pytest.mark.parametrize("row", list(RollbackRow), ids=lambda r: r.value)
def test_rollback_table_row(nodes, row):
    assert set(ROW_SCENARIOS) == set(replica_module.ROLLBACK_ROWS)
    ROW_SCENARIOS[row](nodes)


def test_exact_rollback_restores_a_prepare_whose_commit_it_undoes(nodes):
    active, replica = nodes.open(A, PAIR), nodes.open(B, PAIR)
    active.engine.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    active.engine.upsert(*D, KEYS[0], b"old", 0, T0)
    active.engine.upsert(*D, KEYS[0], b"new", 0, T0, level=MAJORITY)
    active.engine.replica_ack(VB, B, 2)
    stream(active, replica, chunk=1)
    assert replica.engine.get_replica(*D, KEYS[0], T0).value == b"new"
    result = replica.engine.rollback(VB, 2)
    skey = store_key(VB, 0, KEYS[0])
    assert [(p.seqno, p.key, p.level) for p in result.prepares] == [(2, skey, Level.MAJORITY)]
    assert result.high_completed_seqno == 0
    assert replica.engine.get_replica(*D, KEYS[0], T0).value == b"old"
    assert replica.engine.vbuckets[VB].prepares[skey].maybe_visible


def test_exact_rollback_inside_a_disk_snapshot_stops_before_it(nodes):
    active, _ = _replica_with_history(nodes, chunk=2)
    high = active.engine.vbuckets[VB].high_seqno
    active.checkpoint()
    for i in range(4):
        active.engine.upsert(*D, KEYS[i], b"later%d" % i, 0, T0 + 7)
    behind = nodes.open("behind")
    make_replica(behind)
    stream(active, behind, upto=4, chunk=2)
    assert backfill(active, behind) == high  # a disk snapshot [5, high]
    stream(active, behind, chunk=1)
    result = behind.engine.rollback(VB, high - 1)  # inside the disk snapshot: not a consistent point
    assert (result.row, result.high_seqno) == (RollbackRow.EXACT, 4)
    assert contents(behind) == contents(_reference(nodes, active, 4))
    stream(active, behind)
    assert contents(behind) == contents(active)
    result = behind.engine.rollback(VB, high + 2)  # inside the memory snapshots after it: exact
    assert result.high_seqno == high + 2


def test_an_exact_rollback_above_a_checkpoint_is_redone_by_recovery(nodes):
    active, replica = _replica_with_history(nodes, chunk=2)
    high = replica.engine.vbuckets[VB].high_seqno
    replica.engine.rollback(VB, 6)
    stream(active, replica, upto=8, chunk=2)
    replica.checkpoint()  # the store at 8
    stream(active, replica, chunk=1)
    result = replica.engine.rollback(VB, 10)
    assert (result.row, result.high_seqno) == (RollbackRow.EXACT, 10) and high > 10
    expected = contents(replica)
    replica.persist()
    replica = nodes.restart(replica)
    assert contents(replica) == expected == contents(_reference(nodes, active, 10))
    assert replica.engine.vbuckets[VB].high_seqno == 10


def test_a_rollback_to_zero_is_redone_by_recovery_before_the_store_is_cleaned(nodes):
    active, replica = _replica_with_history(nodes)
    replica.checkpoint()
    replica.engine.rollback(VB, 0)
    stream(active, replica, upto=3)
    replica.persist()
    replica = nodes.restart(replica)  # the store still holds the old copy
    assert contents(replica) == contents(_reference(nodes, active, 3))
    replica.checkpoint()
    assert {s for s, *_ in replica.store.backfill_read(VB, 0).documents} <= {1, 2, 3}


def test_an_exact_rollback_while_the_dropped_copy_awaits_deletion_ignores_the_store(nodes):
    active, replica = _replica_with_history(nodes)
    replica.checkpoint()
    replica.engine.rollback(VB, 0)
    stream(active, replica, upto=8, chunk=2)
    result = replica.engine.rollback(VB, 5)
    assert (result.row, result.high_seqno) == (RollbackRow.EXACT, 5)
    reference = contents(_reference(nodes, active, 5))
    assert contents(replica) == reference
    replica.persist()
    replica = nodes.restart(replica)
    assert contents(replica) == reference
    replica.checkpoint()
    assert {s for s, *_ in replica.store.backfill_read(VB, 0).documents} == {d.seqno for d in reference[0].values()}


def test_a_rollback_of_a_vbucket_that_was_active_undoes_its_own_records(nodes):
    node = nodes.open(A)
    history(node)
    expected_at_5 = None
    ref = nodes.open("ref")
    make_replica(ref)
    stream(node, ref, upto=5)
    expected_at_5 = contents(ref)
    node.engine.set_topology(VB, VBState.REPLICA)  # demoted: its newer records diverge from the new active
    result = node.engine.rollback(VB, 5)
    assert (result.row, result.high_seqno) == (RollbackRow.EXACT, 5)
    assert contents(node) == expected_at_5


# -- the real stream cores between two engines ---------------------------------------------------------
def test_stream_cores_between_two_engines_reach_the_same_state_and_commit_by_ack(nodes):
    """The producer and consumer cores, with a minimal shell: rollback, backfill, memory, acks."""
    from durakv.replication import items as it
    from durakv.replication import stream_consumer as sc
    from durakv.replication.stream_producer import open_stream

    kinds = {it.Mutation: Kind.MUTATION, it.Deletion: Kind.DELETION, it.Expiration: Kind.EXPIRATION,
             it.Prepare: Kind.PREPARE, it.Commit: Kind.COMMIT, it.Abort: Kind.ABORT}  # fmt: skip

    def to_replica(i) -> ReplicaItem:
        kind = kinds[type(i)]
        if kind in (Kind.COMMIT, Kind.ABORT):
            return ReplicaItem(kind, i.collection_id, i.key, None, 0, i.prepared_seqno, i.seqno)
        return ReplicaItem(kind, i.collection_id, i.key, it.document_of(i), int(getattr(i, "level", 0)), 0, i.seqno)

    active, replica = nodes.open(A, PAIR), nodes.open(B, PAIR)
    e, r = active.engine, replica.engine
    e.set_topology(VB, VBState.ACTIVE, Chain(A, (B,)))
    make_replica(replica)
    for i in range(6):
        e.upsert(*D, KEYS[i % 3], b"v%d" % i, 0, T0)
    e.remove(*D, KEYS[1], T0)
    active.checkpoint()  # the stream starts with a backfill
    feed = e.feed(VB)
    consumer = sc.StreamConsumer(VB, state=sc.ReplicaState(*r.replica_state(VB)), buffer_bytes=0)
    producer = None
    fed = 0  # the last seqno handed to the producer

    def carry_out(actions) -> None:
        nonlocal producer
        for action in actions:
            match action:
                case sc.AdoptFailoverLog():
                    r.set_failover_log(VB, action.failover_log)
                case sc.Apply():
                    r.apply_snapshot(VB, action.snapshot_start, action.snapshot_end, action.disk,
                                     [to_replica(i) for i in action.items], action.resolved_prepares,
                                     action.high_completed_seqno)  # fmt: skip
                case sc.Rollback():
                    result = r.rollback(VB, action.seqno)
                    carry_out(consumer.rolled_back(result.high_seqno, prepares=result.prepares,
                                                   high_completed_seqno=result.high_completed_seqno))  # fmt: skip
                case it.SeqnoAck():
                    producer.seqno_ack(action)
                    e.replica_ack(VB, B, action.high_prepared_seqno, action.received_seqno, action.persisted_seqno)

    def request() -> None:
        nonlocal producer, fed
        vb = e.vbuckets[VB]
        response, producer = open_stream(consumer.stream_request(), failover_log=vb.failover_log,
                                         high_seqno=vb.high_seqno, purge_seqno=vb.purge_seqno,
                                         memory_start=feed.memory_start, buffer_bytes=0)  # fmt: skip
        fed = feed.memory_start - 1
        carry_out(consumer.on_message(response))

    def pump() -> None:
        nonlocal fed
        for record in feed.records_since(fed + 1):
            producer.on_item(it.item_from_record(record))
            fed = record.seqno
        if producer.backfill_from is not None:
            snap = active.store.backfill_read(VB, producer.backfill_from)
            assert producer.backfill_begin(snap.high_seqno, high_completed_seqno=snap.high_completed_seqno,
                                           high_prepared_seqno=snap.high_prepared_seqno,
                                           purge_seqno=snap.purge_seqno)  # fmt: skip
            merged = [(s, it.document_item(cid, key, doc)) for s, cid, key, doc in snap.documents]
            merged += [(s, it.prepare_item(cid, key, doc, level)) for s, cid, key, level, doc in snap.prepares]
            for _, i in sorted(merged, key=lambda m: m[0]):
                producer.backfill_item(i)
            producer.backfill_end()
        for message in producer.next_batch(1 << 20):
            carry_out(consumer.on_message(message))
        replica.persist()
        carry_out(consumer.persisted(r.vbuckets[VB].persisted_seqno))

    # A replica that holds nothing asks with uuid 0 and streams at once, no rollback round trip.
    assert r.vbuckets[VB].failover_log == []
    request()
    assert consumer.state is sc.ConsumerState.STREAMING
    pump()
    assert contents(replica) == contents(active)
    waiting = e.upsert(*D, KEYS[0], b"durable", 0, T0, level=MAJORITY)
    pump()  # the prepare goes out, the replica acks its HPS, the active commits
    assert waiting.done and waiting.outcome().seqno == e.vbuckets[VB].high_seqno
    pump()  # ... and the commit follows
    assert contents(replica) == contents(active)
    assert r.replica_state(VB).high_seqno == consumer.replica_state.high_seqno == e.vbuckets[VB].high_seqno


# -- the embedded shell's part ------------------------------------------------------------------------
def test_embedded_checkpoint_deletes_a_vbucket_rolled_back_to_zero_before_applying(tmp_path):
    from durakv.engine.embedded import EmbeddedNode

    node = EmbeddedNode(tmp_path / "node", fsync_policy="never")
    try:
        bucket = node.bucket("default")
        vbid = vbucket_of(KEYS[0], bucket.config.num_vbuckets)
        doc = Document(1 << 16, 1, 1, 0, 0, False, b"old")
        with bucket.lock:
            bucket.engine.set_topology(vbid, VBState.REPLICA)
            bucket.engine.apply_snapshot(vbid, 1, 1, False, [ReplicaItem(Kind.MUTATION, 0, KEYS[0], doc, 0, 0, 1)])
        assert bucket.checkpoint()
        assert bucket.rollback(vbid, 0).to_zero
        with bucket.lock:
            new = doc._replace(cas=2 << 16, value=b"new")
            bucket.engine.apply_snapshot(vbid, 1, 1, False, [ReplicaItem(Kind.MUTATION, 0, KEYS[1], new, 0, 0, 1)])
        assert bucket.checkpoint()
        assert [skey for skey, _ in bucket.store.iter_docs(vbid)] == [store_key(vbid, 0, KEYS[1])]
        bucket.replica_ack(vbid, B, 1)  # not active: recorded only
        assert bucket.engine.replica_positions(vbid) == {B: (0, 0, 1)}
    finally:
        node.close()

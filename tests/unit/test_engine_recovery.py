"""Restart paths of one bucket: WAL replay after the checkpoint, reloaded prepares, failover log,
data directories the engine must refuse, dropped collections and the manifest.

Two harnesses: `EngineRig` (enginekit) drives a BucketEngine over the real WAL and store with a
fake clock and hands WAL persistence to the engine only when told, so a prepare can be made
durable while its commit is not; `EmbeddedNode` is the threaded shell as users embed it.
A "crash" is a power cut: unsynced WAL bytes are dropped, the store keeps its last
checkpoint, no CLEAN marker is written and the data-directory lock is let go.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import durakv.engine.embedded as embedded_shell
from durakv.engine.bucket import BucketConfig
from durakv.engine.document import split_store_key, store_key
from durakv.engine.durability import Level
from durakv.engine.embedded import EmbeddedNode
from durakv.engine.errors import (
    DataDirError,
    DataDirLockedError,
    EngineError,
    KVError,
    Status,
    WalCorruptError,
)
from durakv.engine.files import DataDirLock
from durakv.engine.records import Kind
from durakv.engine.store import CheckpointStore
from durakv.engine.wal import WriteAheadLog

try:
    import walsurgery as ws
    from enginekit import T0, WAIT_S, EngineRig, RefusingWal, crash_node, refused
except ImportError:  # tests/unit became a package
    from tests.unit import walsurgery as ws
    from tests.unit.enginekit import T0, WAIT_S, EngineRig, RefusingWal, crash_node, refused

D = ("_default", "_default")
PERSIST = int(Level.PERSIST_TO_MAJORITY)
SMALL_SEGMENT_SIZE = 1024  # the WAL's minimum: a few documents span several segments


@pytest.fixture
def rigs(tmp_path):
    """`rigs.open(config=None, **kw)`: an EngineRig on one bucket directory; every rig is released at teardown."""

    class Rigs:
        path = tmp_path / "bucket"
        opened: list[EngineRig] = []

        def open(self, config: BucketConfig | None = None, **kwargs) -> EngineRig:
            rig = EngineRig(self.path, config, **kwargs)
            self.opened.append(rig)
            return rig

    made = Rigs()
    yield made
    for rig in made.opened:
        rig.abandon()


@pytest.fixture
def node_path(tmp_path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def nodes(node_path):
    """`nodes.open()`: an EmbeddedNode on one data directory; any left open is closed at teardown."""

    class Nodes:
        opened: list[EmbeddedNode] = []

        def open(self) -> EmbeddedNode:
            node = EmbeddedNode(node_path)
            self.opened.append(node)
            return node

    made = Nodes()
    yield made
    for node in made.opened:
        if node.datadir.lock.held:
            node.close()


def upsert(bucket, key: bytes, value: bytes, **kwargs):
    return bucket.call("upsert", *D, key, value, 0, time.time(), wait_s=WAIT_S, **kwargs)


def get(bucket, key: bytes, scope: str = "_default", collection: str = "_default"):
    return bucket.call("get", scope, collection, key, time.time())


def wal_dir(node_path: Path, bucket: str = "default") -> Path:
    return node_path / "buckets" / bucket / "wal"


def store_dir(node_path: Path, bucket: str = "default") -> Path:
    return node_path / "buckets" / bucket / "store"


def assert_lock_released(path: Path) -> None:
    DataDirLock(path).release()  # raises DataDirLockedError if the refused open kept it


class SmallSegmentWal(WriteAheadLog):
    """The real WAL with the smallest segments, so a few documents span several files."""

    @classmethod
    def open(cls, directory, **kwargs):
        kwargs["segment_size_max"] = SMALL_SEGMENT_SIZE
        return super().open(directory, **kwargs)


# -- WAL replay after the checkpoint -------------------------------------------------------------


def test_recovery_replays_the_wal_after_the_checkpoint_over_the_store(rigs):
    rig = rigs.open(segment_size_max=SMALL_SEGMENT_SIZE)
    e = rig.engine
    before = {b"a%d" % i: e.upsert(*D, b"a%d" % i, b"old" * 20, 0, T0) for i in range(10)}
    rig.checkpoint()
    assert rig.wal.first_lsn > 0  # segments the checkpoint covers are gone
    changed = e.upsert(*D, b"a0", b"new", 5, T0 + 1)
    e.remove(*D, b"a1", T0 + 1)
    added = e.insert(*D, b"b", b"fresh", 0, T0 + 1, expiry=1000)
    seqnos = rig.high_seqnos()
    rig.sync_wal()
    rig.crash()

    rig = rigs.open(now=T0 + 2)
    e = rig.engine
    got = e.get(*D, b"a0", T0 + 2)
    assert (got.value, got.flags, got.cas) == (b"new", 5, changed.cas)
    with refused(Status.KEY_ENOENT):
        e.get(*D, b"a1", T0 + 2)
    assert rig.document(b"a1").deleted
    got = e.get(*D, b"b", T0 + 2)
    assert (got.value, got.cas, got.expiry) == (b"fresh", added.cas, int(T0) + 1001)
    for i in range(2, 10):
        assert e.get(*D, b"a%d" % i, T0 + 2).cas == before[b"a%d" % i].cas
    assert rig.high_seqnos() == seqnos
    later = e.upsert(*D, b"a2", b"later", 0, T0 + 2)
    assert later.cas > changed.cas and later.seqno == seqnos[later.vbucket] + 1


def test_recovery_drops_writes_that_were_never_fsynced(rigs):
    rig = rigs.open()
    kept = rig.engine.upsert(*D, b"k", b"kept", 0, T0)
    rig.sync_wal()
    rig.engine.upsert(*D, b"k", b"lost", 0, T0 + 1)  # acknowledged at level NONE, never fsynced
    rig.crash()
    rig = rigs.open(now=T0 + 2)
    assert rig.engine.get(*D, b"k", T0 + 2).cas == kept.cas
    assert rig.vbucket(b"k").high_seqno == kept.seqno


def test_embedded_node_recovers_every_persisted_write_after_a_crash(nodes, node_path):
    node = nodes.open()
    bucket = node.bucket("default")
    first = {b"k%d" % i: upsert(bucket, b"k%d" % i, b"v%d" % i) for i in range(20)}
    assert bucket.checkpoint()
    second = {b"k%d" % i: upsert(bucket, b"k%d" % i, b"w%d" % i) for i in range(10, 30)}
    crash_node(node)
    node = nodes.open()
    bucket = node.bucket("default")
    for key, outcome in {**first, **second}.items():
        assert get(bucket, key).cas == outcome.cas


# -- a prepare persisted without its commit ------------------------------------------------------


def _acknowledged_persist_write_whose_commit_is_lost(rigs, *, checkpoint_between: bool):
    """Write k=old, then k=new at PERSIST_TO_MAJORITY; fsync the prepare, let the engine commit and
    answer the client, and cut the power before the commit record is fsynced. Returns
    (old outcome, new outcome, prepare seqno)."""
    rig = rigs.open()
    e = rig.engine
    old = e.upsert(*D, b"k", b"old", 0, T0)
    pending = e.upsert(*D, b"k", b"new", 0, T0, level=PERSIST)
    prepare_seqno = rig.vbucket(b"k").high_seqno
    if checkpoint_between:
        rig.checkpoint()  # the store now holds the prepare itself
    lsn = rig.sync_wal()
    e.on_persisted(lsn)
    assert pending.done
    new = pending.outcome()  # the client has its success
    assert rig.wal.persisted_lsn < rig.wal.end_lsn  # ... while the commit record is not yet durable
    rig.crash()
    return old, new, prepare_seqno


@pytest.mark.parametrize("checkpoint_between", [False, True], ids=["prepare_in_wal", "prepare_in_store"])
def test_recovery_commits_a_persisted_prepare_whose_commit_was_lost(rigs, checkpoint_between):
    _, new, prepare_seqno = _acknowledged_persist_write_whose_commit_is_lost(
        rigs, checkpoint_between=checkpoint_between
    )
    rig = rigs.open(now=T0 + 1)
    e = rig.engine
    got = e.get(*D, b"k", T0 + 1)
    assert (got.value, got.cas) == (b"new", new.cas)
    vb = rig.vbucket(b"k")
    assert not vb.prepares
    commits = [r for r in rig.records_of(Kind.COMMIT) if r.key == b"k"]
    assert [c.prepare_seqno for c in commits] == [prepare_seqno]
    assert commits[0].seqno == vb.high_seqno == prepare_seqno + 1
    e.upsert(*D, b"k", b"after", 0, T0 + 1)  # the key takes writes again
    rig.close()
    rig = rigs.open(now=T0 + 2, clean_shutdown=True)
    assert rig.engine.get(*D, b"k", T0 + 2).value == b"after"
    assert not rig.vbucket(b"k").prepares


@pytest.mark.parametrize("checkpoint_between", [False, True], ids=["prepare_in_wal", "prepare_in_store"])
def test_recovery_reloaded_prepare_reads_recommit_in_progress_until_committed(rigs, checkpoint_between):
    old, new, _ = _acknowledged_persist_write_whose_commit_is_lost(rigs, checkpoint_between=checkpoint_between)
    # Reopened with a replica slot the single node cannot fill, the prepare cannot commit yet.
    rig = rigs.open(BucketConfig("b", num_vbuckets=4, num_replicas=1), now=T0 + 1)
    e = rig.engine
    assert rig.vbucket(b"k").prepares[store_key(rig.vbucket(b"k").vbid, 0, b"k")].maybe_visible
    with refused(Status.SYNC_WRITE_RECOMMIT_IN_PROGRESS):
        e.get(*D, b"k", T0 + 1)
    with refused(Status.SYNC_WRITE_IN_PROGRESS):
        e.upsert(*D, b"k", b"other", 0, T0 + 1)
    e.tick(T0 + 3600)  # a reloaded prepare has no deadline: it is never aborted
    with refused(Status.SYNC_WRITE_RECOMMIT_IN_PROGRESS):
        e.get(*D, b"k", T0 + 3600)
    rig.close()  # the checkpoint keeps the prepare in the store
    rig = rigs.open(now=T0 + 2, clean_shutdown=True)  # 0 replicas again: committed at recovery
    got = rig.engine.get(*D, b"k", T0 + 2)
    assert (got.value, got.cas) == (b"new", new.cas)
    assert got.cas != old.cas


def test_recovery_reloaded_prepare_blocks_exists_as_well_as_get(rigs):
    # Reference §2.5: a PreparedMaybeVisible prepare blocks reads -- get, lookup, exists/get-meta --
    # with SYNC_WRITE_RECOMMIT_IN_PROGRESS: the committed value it shadows may already be stale.
    _acknowledged_persist_write_whose_commit_is_lost(rigs, checkpoint_between=False)
    rig = rigs.open(BucketConfig("b", num_vbuckets=4, num_replicas=1), now=T0 + 1)
    with refused(Status.SYNC_WRITE_RECOMMIT_IN_PROGRESS):
        rig.engine.exists(*D, b"k", T0 + 1)


def test_recovery_completes_a_commit_the_wal_refused_before_the_crash(rigs):
    rig = rigs.open(wal_cls=RefusingWal)
    e = rig.engine
    e.upsert(*D, b"k", b"old", 0, T0)
    pending = e.upsert(*D, b"k", b"new", 0, T0, level=PERSIST)
    lsn = rig.sync_wal()
    rig.wal.refuse = True
    e.on_persisted(lsn)  # decided, but the commit record is refused: owed
    assert pending.error.status is Status.SYNC_WRITE_AMBIGUOUS
    rig.crash()
    rig = rigs.open(now=T0 + 1)
    assert rig.engine.get(*D, b"k", T0 + 1).value == b"new"  # ambiguous may go either way; the prepare is durable
    assert not rig.vbucket(b"k").prepares


@pytest.mark.parametrize(
    "checkpoint_at",
    [None, "before_abort", "after_abort"],
    ids=["prepare_and_abort_in_wal", "prepare_in_store_abort_in_wal", "both_checkpointed"],
)
def test_recovery_aborted_prepare_stays_aborted(rigs, checkpoint_at):
    rig = rigs.open()
    e = rig.engine
    old = e.upsert(*D, b"k", b"old", 0, T0)
    pending = e.upsert(*D, b"k", b"new", 0, T0, level=PERSIST, timeout_ms=1000)
    if checkpoint_at == "before_abort":
        rig.checkpoint()
    e.tick(T0 + 1)
    assert pending.error.status is Status.SYNC_WRITE_AMBIGUOUS
    if checkpoint_at == "after_abort":
        rig.checkpoint()
    rig.sync_wal()
    rig.crash()
    rig = rigs.open(now=T0 + 2)
    got = rig.engine.get(*D, b"k", T0 + 2)
    assert (got.value, got.cas) == (b"old", old.cas)
    assert not rig.vbucket(b"k").prepares
    rig.close()
    rig = rigs.open(now=T0 + 3, clean_shutdown=True)
    assert rig.engine.get(*D, b"k", T0 + 3).value == b"old"
    assert not rig.vbucket(b"k").prepares
    assert list(rig.store.iter_prepares()) == []


def test_embedded_node_persist_write_survives_a_crash_with_the_acknowledged_cas(nodes):
    node = nodes.open()
    bucket = node.bucket("default")
    outcome = upsert(bucket, b"k", b"durable", level=PERSIST)
    crash_node(node)
    node = nodes.open()
    got = get(node.bucket("default"), b"k")
    assert (got.value, got.cas) == (b"durable", outcome.cas)


# -- the failover log ----------------------------------------------------------------------------


def failover_logs(node: EmbeddedNode) -> list[list[tuple[int, int]]]:
    bucket = node.bucket("default")
    with bucket.lock:
        return [list(vb.failover_log) for vb in bucket.engine.vbuckets]


def test_failover_log_clean_restart_adds_no_entry(nodes):
    node = nodes.open()
    upsert(node.bucket("default"), b"k", b"v")
    before = failover_logs(node)
    node.close()
    node = nodes.open()
    assert failover_logs(node) == before


def test_failover_log_unclean_restart_adds_an_entry_at_the_high_seqno(nodes):
    node = nodes.open()
    bucket = node.bucket("default")
    outcome = upsert(bucket, b"k", b"v")
    assert bucket.checkpoint()  # the first history is on disk
    upsert(bucket, b"k", b"w")
    before = failover_logs(node)
    high = [vb.high_seqno for vb in bucket.engine.vbuckets]
    crash_node(node)
    node = nodes.open()
    after = failover_logs(node)
    for vbid, (old_log, new_log) in enumerate(zip(before, after, strict=True)):
        assert new_log[1:] == old_log
        assert new_log[0][1] == high[vbid]
        assert new_log[0][0] not in {uuid for uuid, _ in old_log}
    assert after[outcome.vbucket][0][0] != outcome.vbucket_uuid


def test_failover_log_keeps_every_branch_a_mutation_was_acknowledged_on(nodes):
    """A mutation token names (vbucket uuid, seqno); after a crash that uuid must still be in the
    failover log, or a client or replica holding the token can only be told to roll back to 0."""
    handed_out: set[tuple[int, int]] = set()
    for _ in range(2):
        node = nodes.open()
        outcome = upsert(node.bucket("default"), b"k", b"v")
        handed_out.add((outcome.vbucket, outcome.vbucket_uuid))
        crash_node(node)  # before any checkpoint
    node = nodes.open()
    logs = failover_logs(node)
    for vbid, uuid in handed_out:
        assert uuid in {u for u, _ in logs[vbid]}, f"vbucket {vbid} forgot uuid {uuid}: {logs[vbid]}"


# -- data directories that must be refused -------------------------------------------------------


def test_wal_ending_before_the_checkpoint_is_refused_and_releases_the_directory(nodes, node_path):
    node = nodes.open()
    for i in range(5):
        upsert(node.bucket("default"), b"k%d" % i, b"v")
    node.close()
    for segment in ws.segment_paths(wal_dir(node_path)):
        segment.unlink()
    for _ in range(2):  # refused the same way again: the first refusal left nothing held
        with pytest.raises(EngineError) as caught:
            nodes.open()
        assert not isinstance(caught.value, (KVError, DataDirLockedError))
        assert_lock_released(node_path)


def test_wal_missing_the_segments_right_after_the_checkpoint_is_refused(nodes, node_path, monkeypatch):
    monkeypatch.setattr(embedded_shell, "WriteAheadLog", SmallSegmentWal)
    node = nodes.open()
    bucket = node.bucket("default")
    upsert(bucket, b"before", b"v")
    assert bucket.checkpoint()
    for i in range(40):
        upsert(bucket, b"k%d" % i, b"x" * 100)
    crash_node(node)
    segments = ws.segment_paths(wal_dir(node_path))
    assert len(segments) > 3
    segments[0].unlink()  # holds the records right after the checkpoint
    with pytest.raises(EngineError) as caught:
        node = nodes.open()
        lost = [i for i in range(40) if _absent(node.bucket("default"), b"k%d" % i)]
        pytest.fail(f"opened with {len(lost)} acknowledged, persisted documents silently gone: {lost[:5]}...")
    assert not isinstance(caught.value, KVError)
    assert_lock_released(node_path)


def _absent(bucket, key: bytes) -> bool:
    try:
        get(bucket, key)
    except KVError as exc:
        return exc.status is Status.KEY_ENOENT
    return False


def test_wal_missing_a_middle_segment_is_corrupt_naming_the_segment_after_the_gap(nodes, node_path, monkeypatch):
    monkeypatch.setattr(embedded_shell, "WriteAheadLog", SmallSegmentWal)
    node = nodes.open()
    for i in range(40):
        upsert(node.bucket("default"), b"k%d" % i, b"x" * 100)
    crash_node(node)
    segments = ws.segment_paths(wal_dir(node_path))
    assert len(segments) > 3
    segments[1].unlink()
    with pytest.raises(WalCorruptError) as caught:
        nodes.open()
    assert caught.value.path == str(segments[2])
    assert_lock_released(node_path)


def test_corrupt_wal_record_in_the_middle_names_file_and_offset_and_opens_after_repair(nodes, node_path):
    node = nodes.open()
    written = {b"k%d" % i: upsert(node.bucket("default"), b"k%d" % i, b"value %d" % i) for i in range(6)}
    crash_node(node)
    (segment,) = ws.segment_paths(wal_dir(node_path))
    good = segment.read_bytes()
    offsets = ws.record_offsets(good)
    assert len(offsets) >= 6
    bad_offset = offsets[2]
    ws.rewrite(segment, lambda data: ws.flip_byte(data, bad_offset + 20))  # inside the payload
    with pytest.raises(WalCorruptError) as caught:
        nodes.open()
    assert isinstance(caught.value, DataDirError)
    assert caught.value.path == str(segment)
    assert caught.value.offset == bad_offset
    assert_lock_released(node_path)
    assert segment.read_bytes() != good  # a refused open repairs nothing behind the operator's back

    segment.write_bytes(good)  # the operator restores the file
    node = nodes.open()
    for key, outcome in written.items():
        assert get(node.bucket("default"), key).cas == outcome.cas


# -- collections and the manifest ----------------------------------------------------------------


def _create_collection(bucket, name: str, max_ttl_s: int = 0) -> int:
    return bucket.call("change_manifest", lambda m: m.create_collection("_default", name, max_ttl_s))


def _drop_collection(bucket, name: str) -> int:
    return bucket.call("change_manifest", lambda m: m.drop_collection("_default", name))


def _store_cids(bucket) -> set[int]:
    return {split_store_key(skey)[1] for skey, _ in bucket.store.iter_docs()}


@pytest.mark.parametrize("stop", ["clean", "crash"])
def test_dropped_collection_documents_are_purged_after_a_checkpoint_and_stay_gone(nodes, stop):
    node = nodes.open()
    bucket = node.bucket("default")
    cid = _create_collection(bucket, "gone")
    for i in range(5):
        bucket.call("upsert", "_default", "gone", b"k%d" % i, b"v", 0, time.time())
    upsert(bucket, b"kept", b"v")
    assert bucket.checkpoint()
    assert cid in _store_cids(bucket)
    _drop_collection(bucket, "gone")
    with refused(Status.UNKNOWN_COLLECTION):
        get(bucket, b"k0", "_default", "gone")
    if stop == "crash":
        crash_node(node)  # dropped in the WAL only: the store still holds the documents
        node = nodes.open()
        bucket = node.bucket("default")
        with refused(Status.UNKNOWN_COLLECTION):
            get(bucket, b"k0", "_default", "gone")
    assert bucket.checkpoint()
    assert cid not in _store_cids(bucket)
    node.close()
    node = nodes.open()
    bucket = node.bucket("default")
    assert cid not in _store_cids(bucket)
    new_cid = _create_collection(bucket, "gone")
    assert new_cid != cid  # ids are never reused
    with refused(Status.KEY_ENOENT):
        get(bucket, b"k0", "_default", "gone")
    assert get(bucket, b"kept").value == b"v"


def _collection_entry(node: EmbeddedNode, name: str):
    bucket = node.bucket("default")
    with bucket.lock:
        cid = bucket.engine.manifest.collection_id("_default", name)
        return cid, bucket.engine.manifest.collection(cid).max_ttl_s, bucket.engine.manifest.uid


def test_manifest_survives_a_crash_through_the_wal_alone(nodes, node_path):
    node = nodes.open()
    _create_collection(node.bucket("default"), "c", max_ttl_s=77)
    node.bucket("default").call("insert", "_default", "c", b"k", b"v", 0, time.time())
    expected = _collection_entry(node, "c")
    crash_node(node)
    with CheckpointStore(store_dir(node_path)) as store:  # no checkpoint ever wrote it
        assert b'"c"' not in (store.get_meta(b"manifest") or b"")
    node = nodes.open()
    assert _collection_entry(node, "c") == expected
    assert get(node.bucket("default"), b"k", "_default", "c").value == b"v"


def test_manifest_survives_a_crash_through_the_checkpoint_alone(nodes, node_path):
    node = nodes.open()
    bucket = node.bucket("default")
    _create_collection(bucket, "c", max_ttl_s=77)
    expected = _collection_entry(node, "c")
    assert bucket.checkpoint()
    upsert(bucket, b"after", b"v")
    checkpoint_lsn = bucket.store.checkpoint_lsn
    crash_node(node)
    wal = WriteAheadLog.open(wal_dir(node_path))
    try:
        kinds = [record.kind for record in wal.replay(checkpoint_lsn)]
    finally:
        wal.close()
    assert Kind.MANIFEST not in kinds and kinds  # replay after the checkpoint holds no manifest
    node = nodes.open()
    assert _collection_entry(node, "c") == expected


def test_manifest_drop_survives_restart_through_the_wal_alone(nodes):
    node = nodes.open()
    bucket = node.bucket("default")
    _create_collection(bucket, "c")
    assert bucket.checkpoint()
    _drop_collection(bucket, "c")
    crash_node(node)
    node = nodes.open()
    with refused(Status.UNKNOWN_COLLECTION):
        get(node.bucket("default"), b"k", "_default", "c")

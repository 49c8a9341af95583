"""Closing and reopening an embedded node: what survives, and who may open a data directory.

Documents written at every durability level, tombstones, expiries, buckets, scopes and
collections survive a clean close; locks do not (they live in memory, as in Couchbase). A data
directory is held by one open node at a time, in this process or any other. A checkpoint moves
the memtable into LMDB and releases the WAL segments it covers.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

import durakv.engine.embedded as embedded_shell
from durakv.cluster import Cluster
from durakv.durability import DurabilityLevel, ServerDurability
from durakv.engine.errors import DataDirError, DataDirLockedError, FormatVersionError
from durakv.engine.wal import WriteAheadLog
from durakv.exceptions import DocumentNotFoundException, DurabilityImpossibleException
from durakv.management.buckets import CreateBucketSettings
from durakv.options import GetOptions, UpsertOptions
from durakv.transcoder import RawBinaryTranscoder, RawStringTranscoder

SCOPE = "tenant_agent_00"
COLLECTION = "users"
CAS_LOCKED = 2**64 - 1
SMALL_SEGMENT_SIZE = 16 * 1024
SUBPROCESS_TIMEOUT_S = 30


@contextlib.contextmanager
def opened(path):
    cluster = Cluster.embedded(path)
    try:
        yield cluster
    finally:
        cluster.close()


def default_collection(cluster):
    return cluster.bucket("default").default_collection()


def snapshot(coll, key: str, **kwargs):
    got = coll.get(key, GetOptions(with_expiry=True), **kwargs)
    return got.cas, got.value, got.flags, got.expiry_time


def wal_segments(data_dir, bucket: str = "default") -> list[str]:
    return sorted(p.name for p in (data_dir / "buckets" / bucket / "wal").glob("*.wal"))


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )


# -- what survives a clean close ----------------------------------------------------------------


def test_documents_written_at_every_level_survive_with_the_same_cas(data_dir):
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        for level in DurabilityLevel:
            coll.upsert(f"level-{level.name}", {"level": level.name}, durability=ServerDurability(level))
        coll.upsert("binary", b"\x00\xff", transcoder=RawBinaryTranscoder())
        coll.upsert("string", "text", transcoder=RawStringTranscoder())
        coll.upsert("expiring", {"v": 1}, expiry=timedelta(hours=1))
        coll.binary().increment("counter")
        coll.binary().increment("counter")
        coll.upsert("replaced", {"v": 1})
        coll.replace("replaced", {"v": 2})
        keys = [f"level-{level.name}" for level in DurabilityLevel] + ["expiring", "counter", "replaced"]
        before = {key: snapshot(coll, key) for key in keys}
        before["binary"] = snapshot(coll, "binary", transcoder=RawBinaryTranscoder())
        before["string"] = snapshot(coll, "string", transcoder=RawStringTranscoder())
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        after = {key: snapshot(coll, key) for key in keys}
        after["binary"] = snapshot(coll, "binary", transcoder=RawBinaryTranscoder())
        after["string"] = snapshot(coll, "string", transcoder=RawStringTranscoder())
        assert after == before
        assert coll.binary().increment("counter").content == 2


def test_cas_and_seqnos_move_forward_after_restart_and_the_vbucket_uuid_stays(data_dir):
    with opened(data_dir) as cluster:
        first = default_collection(cluster).upsert("k", {"v": 1})
    with opened(data_dir) as cluster:
        second = default_collection(cluster).upsert("k", {"v": 2})
    assert second.cas > first.cas
    before, after = first.mutation_token(), second.mutation_token()
    assert after.partition_id == before.partition_id
    assert after.sequence_number > before.sequence_number
    assert after.partition_uuid == before.partition_uuid  # a clean close starts no new history


def test_tombstones_survive_restart(data_dir, probe_for):
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        coll.upsert("gone", {"v": 1})
        removed = coll.remove("gone")
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        assert coll.exists("gone").exists is False
        with pytest.raises(DocumentNotFoundException):
            coll.get("gone")
        tomb = probe_for(cluster).document("gone")
        assert tomb is not None and tomb.deleted is True and tomb.cas == removed.cas
        again = coll.insert("gone", {"v": 2})
        assert again.cas > removed.cas


def test_expiry_survives_restart_and_still_fires(data_dir, wait_until):
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        coll.upsert("later", {"v": 1}, expiry=timedelta(hours=1))
        coll.upsert("soon", {"v": 1}, expiry=timedelta(seconds=1))
        expiry_before = coll.get("later", with_expiry=True).expiry_time
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        assert coll.get("later", with_expiry=True).expiry_time == expiry_before

        def soon_gone() -> bool:
            try:
                coll.get("soon")
            except DocumentNotFoundException:
                return True
            return False

        wait_until(soon_gone, deadline_s=4, what="expiry after restart")
        assert coll.exists("soon").exists is False


def test_locks_do_not_survive_restart(data_dir):
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        stored = coll.upsert("k", {"v": 1})
        coll.get_and_lock("k", timedelta(seconds=30))
        assert coll.get("k").cas == CAS_LOCKED
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        assert coll.get("k").cas == stored.cas
        coll.upsert("k", {"v": 2}, timeout=timedelta(milliseconds=300))


def test_scopes_and_collections_survive_restart(data_dir):
    with opened(data_dir) as cluster:
        bucket = cluster.bucket("default")
        manager = bucket.collections()
        manager.create_scope(SCOPE)
        manager.create_collection(SCOPE, COLLECTION)
        manager.create_collection(SCOPE, "dropped")
        manager.create_scope("other")
        bucket.scope(SCOPE).collection(COLLECTION).upsert("u1", {"name": "Ann"})
        bucket.scope(SCOPE).collection("dropped").upsert("d1", {"v": 1})
        manager.drop_collection(SCOPE, "dropped")
        manager.drop_scope("other")
        scopes_before = {s.name: {c.name for c in s.collections} for s in manager.get_all_scopes()}
    assert scopes_before == {"_default": {"_default"}, SCOPE: {COLLECTION}}
    with opened(data_dir) as cluster:
        bucket = cluster.bucket("default")
        manager = bucket.collections()
        assert {s.name: {c.name for c in s.collections} for s in manager.get_all_scopes()} == scopes_before
        assert bucket.scope(SCOPE).collection(COLLECTION).get("u1").content_as[dict] == {"name": "Ann"}
        manager.create_collection(SCOPE, "dropped")  # a new collection: the old documents stay gone
        with pytest.raises(DocumentNotFoundException):
            bucket.scope(SCOPE).collection("dropped").get("d1")


def test_buckets_and_their_settings_survive_restart(data_dir):
    with opened(data_dir) as cluster:
        cluster.buckets().create_bucket(CreateBucketSettings(name="b2", num_replicas=1))
        cluster.bucket("b2").default_collection().upsert("k", {"in": "b2"})
    with opened(data_dir) as cluster:
        assert {b.name for b in cluster.buckets().get_all_buckets()} == {"default", "b2"}
        assert cluster.buckets().get_bucket("b2").num_replicas == 1
        b2 = cluster.bucket("b2").default_collection()
        assert b2.get("k").content_as[dict] == {"in": "b2"}
        with pytest.raises(DurabilityImpossibleException):
            b2.upsert("k", {"v": 2}, durability=ServerDurability(DurabilityLevel.MAJORITY))


def test_dropped_bucket_stays_dropped_after_restart(data_dir):
    with opened(data_dir) as cluster:
        cluster.buckets().create_bucket(CreateBucketSettings(name="b2", num_replicas=0))
        cluster.buckets().drop_bucket("b2")
    with opened(data_dir) as cluster:
        assert {b.name for b in cluster.buckets().get_all_buckets()} == {"default"}
    assert not (data_dir / "buckets" / "b2").exists()


# -- checkpoints ----------------------------------------------------------------------------------


class SmallSegmentWal(WriteAheadLog):
    """The real WAL with tiny segments, so a few documents span several segment files."""

    @classmethod
    def open(cls, directory, **kwargs):
        kwargs["segment_size_max"] = SMALL_SEGMENT_SIZE
        return super().open(directory, **kwargs)


def test_checkpoint_releases_covered_wal_segments_and_restart_reads_from_the_store(data_dir, monkeypatch, probe_for):
    monkeypatch.setattr(embedded_shell, "WriteAheadLog", SmallSegmentWal)
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        written = {f"doc-{i}": coll.upsert(f"doc-{i}", {"i": i, "pad": "x" * 1000}).cas for i in range(100)}
        # A persist-level write returns once the WAL is fsynced past it, so past everything before it.
        coll.remove("doc-0", durability=ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY))
        probe = probe_for(cluster)
        segments_before = wal_segments(data_dir)
        assert len(segments_before) > 3
        assert probe.embedded.checkpoint() is True
        assert len(wal_segments(data_dir)) == 1
        assert probe.wal.first_lsn > 0
        assert probe.embedded.store.checkpoint_lsn > 0
        assert len(probe.engine.memtable) == 0
        assert coll.get("doc-50").cas == written["doc-50"]  # now read from LMDB
        after_checkpoint = coll.upsert("doc-100", {"i": 100}).cas
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        for key, cas in written.items():
            if key == "doc-0":
                assert coll.exists(key).exists is False
            else:
                assert coll.get(key).cas == cas
        assert coll.get("doc-100").cas == after_checkpoint
        assert probe_for(cluster).document("doc-0").deleted is True
        coll.upsert("doc-101", {"i": 101})
    with opened(data_dir) as cluster:
        assert default_collection(cluster).get("doc-101").content_as[dict] == {"i": 101}


def test_checkpoint_counts_and_empty_checkpoint_is_harmless(cluster, coll, probe):
    coll.upsert("k", {"v": 1})
    count = probe.embedded.checkpoint_count
    assert probe.embedded.checkpoint() is True
    assert probe.embedded.checkpoint() is True  # nothing new: still fine
    assert probe.embedded.checkpoint_count == count + 2
    assert coll.get("k").content_as[dict] == {"v": 1}


# -- who may open a data directory ----------------------------------------------------------------


def test_second_open_of_an_open_data_dir_in_the_same_process_is_refused(data_dir):
    with opened(data_dir) as cluster:
        default_collection(cluster).upsert("k", {"v": 1})
        with pytest.raises(DataDirLockedError) as caught:
            Cluster.embedded(data_dir)
        assert isinstance(caught.value, DataDirError)
        assert caught.value.pid == os.getpid()
        assert default_collection(cluster).get("k").content_as[dict] == {"v": 1}  # the first is unharmed
    with opened(data_dir) as cluster:  # and once closed, the directory opens again
        assert default_collection(cluster).get("k").content_as[dict] == {"v": 1}


_OPEN_IN_CHILD = """
import sys
from durakv.cluster import Cluster
from durakv.engine.errors import DataDirLockedError
try:
    Cluster.embedded(sys.argv[1]).close()
except DataDirLockedError as exc:
    sys.exit(17 if exc.pid == int(sys.argv[2]) else 18)
sys.exit(0)
"""


def test_second_process_cannot_open_an_open_data_dir(data_dir):
    with opened(data_dir) as cluster:
        default_collection(cluster).upsert("k", {"v": 1})
        child = run_python(_OPEN_IN_CHILD, str(data_dir), str(os.getpid()))
        assert child.returncode == 17, child.stderr
        assert default_collection(cluster).get("k").content_as[dict] == {"v": 1}
    child = run_python(_OPEN_IN_CHILD, str(data_dir), str(os.getpid()))
    assert child.returncode == 0, child.stderr


_WRITE_THEN_DIE = """
import json, os, sys
from durakv.cluster import Cluster
from durakv.durability import DurabilityLevel, ServerDurability
coll = Cluster.embedded(sys.argv[1]).bucket("default").default_collection()
out = {}
for i in range(10):
    result = coll.upsert(f"k{i}", {"i": i}, durability=ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY))
    token = result.mutation_token()
    out[f"k{i}"] = [result.cas, token.partition_id, token.partition_uuid]
print(json.dumps(out), flush=True)
os._exit(0)  # no close: the process just ends
"""


def test_persisted_writes_survive_a_process_that_dies_without_closing(data_dir):
    child = run_python(_WRITE_THEN_DIE, str(data_dir))
    assert child.returncode == 0, child.stderr
    acknowledged = json.loads(child.stdout)
    with opened(data_dir) as cluster:
        coll = default_collection(cluster)
        for key, (cas, partition_id, partition_uuid) in acknowledged.items():
            assert coll.get(key).cas == cas
            token = coll.upsert(key, {"again": True}, UpsertOptions()).mutation_token()
            assert token.partition_id == partition_id
            assert token.partition_uuid != partition_uuid  # an unclean stop starts a new history


# -- data directories that cannot be used -------------------------------------------------------


def test_garbage_node_json_raises_data_dir_error_naming_the_file(data_dir):
    data_dir.mkdir()
    node_file = data_dir / "node.json"
    node_file.write_bytes(b"\x00not json{")
    with pytest.raises(DataDirError) as caught:
        Cluster.embedded(data_dir)
    assert str(node_file) in str(caught.value)
    with pytest.raises(DataDirError):  # the refused open released the directory lock
        Cluster.embedded(data_dir)


def test_node_json_of_an_unknown_format_version_raises_format_version_error(data_dir):
    with opened(data_dir):
        pass
    node_file = data_dir / "node.json"
    doc = json.loads(node_file.read_text())
    doc["format_version"] = 99
    node_file.write_text(json.dumps(doc))
    with pytest.raises(FormatVersionError):
        Cluster.embedded(data_dir)


def test_directory_with_foreign_files_and_no_node_json_is_refused(data_dir):
    data_dir.mkdir()
    (data_dir / "important.txt").write_text("not durakv's")
    with pytest.raises(DataDirError):
        Cluster.embedded(data_dir)
    assert (data_dir / "important.txt").read_text() == "not durakv's"

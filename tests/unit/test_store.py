"""engine.store: the LMDB checkpoint store, on a real LMDB environment in tmp_path.

The crash test kills a real process with SIGKILL mid-apply. That proves LMDB's transaction is
all-or-nothing against process death; it says nothing about power loss (the kernel keeps the
page cache), which is what sync=True/metasync=True are for.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import lmdb
import pytest

from durakv.engine import limits
from durakv.engine import store as store_module
from durakv.engine.document import Document, decode_document, store_key
from durakv.engine.errors import DataDirError, DataDirLockedError, FormatVersionError, StoreError
from durakv.engine.store import STORE_FORMAT_VERSION, CheckpointBatch, CheckpointStore

KIB = 1024


def doc(seqno: int, value: bytes = b"v", *, deleted: bool = False) -> bytes:
    return Document(cas=seqno + 1000, seqno=seqno, rev=1, expiry=0, flags=0, deleted=deleted, value=value).encode()


def batch(lsn: int, docs=None, **kwargs) -> CheckpointBatch:
    return CheckpointBatch(docs=docs or {}, checkpoint_lsn=lsn, **kwargs)


@pytest.fixture
def store(tmp_path):
    with CheckpointStore(tmp_path / "store") as s:
        yield s


def raw_env(path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=limits.LMDB_MAX_DBS, map_size=64 * 1024 * 1024)


# -- round trip and indexes -----------------------------------------------------------------


def test_store_new_has_lsn_zero_and_format_version(store):
    assert store.checkpoint_lsn == 0
    assert store.get_meta(store_module.META_FORMAT_VERSION) == struct.pack(">I", STORE_FORMAT_VERSION)
    assert store.get(store_key(0, 0, b"missing")) is None


def test_store_apply_round_trips_docs_tombstones_prepares_meta(store):
    a, b, p = store_key(1, 0, b"a"), store_key(2, 8, b"b"), store_key(1, 0, b"p")
    tomb = doc(2, b"", deleted=True)
    store.apply(batch(10, {a: doc(1, b"va"), b: tomb}, prepares_put={p: b"prep"}, meta={b"vb_state": b"x"}))
    assert decode_document(store.get(a)).value == b"va"
    assert decode_document(store.get(b)).deleted
    assert list(store.iter_prepares()) == [(p, b"prep")]
    assert store.get_meta(b"vb_state") == b"x"
    assert store.get_meta(b"missing") is None
    assert store.checkpoint_lsn == 10


def test_store_overwrite_moves_seqs_entry_to_new_seqno(store):
    k = store_key(3, 0, b"k")
    store.apply(batch(1, {k: doc(5, b"old")}))
    store.apply(batch(2, {k: doc(9, b"new")}))
    assert [(s, key) for s, key, _ in store.iter_by_seqno(3)] == [(9, k)]
    assert store.stats()["entries"]["seqs"] == 1


def test_store_seqno_taken_by_other_key_in_same_batch_keeps_its_seqs_entry(store):
    # After a rollback, key x reverts to seqno 3 while key y takes x's old seqno 7.
    x, y = store_key(0, 0, b"x"), store_key(0, 0, b"y")
    store.apply(batch(1, {x: doc(7)}))
    store.apply(batch(2, {y: doc(7), x: doc(3)}))  # y first: x must not delete y's entry
    assert [(s, key) for s, key, _ in store.iter_by_seqno(0)] == [(3, x), (7, y)]


def test_store_iter_by_seqno_is_ascending_from_start_within_one_vbucket(store):
    docs = {store_key(vb, 0, b"k%d" % s): doc(s) for vb in (4, 5) for s in (30, 10, 20, 40)}
    store.apply(batch(1, docs))
    assert [s for s, _, _ in store.iter_by_seqno(4)] == [10, 20, 30, 40]
    assert [s for s, _, _ in store.iter_by_seqno(4, start_seqno=20)] == [20, 30, 40]
    assert [s for s, _, _ in store.iter_by_seqno(4, start_seqno=41)] == []
    assert list(store.iter_by_seqno(6)) == []
    seqno, skey, record = next(store.iter_by_seqno(5, 25))
    assert (seqno, skey, decode_document(record).seqno) == (30, store_key(5, 0, b"k30"), 30)


def test_store_iter_docs_in_key_order_all_or_one_vbucket(store):
    keys = [store_key(vb, cid, k) for vb in (0, 1, 256) for cid in (0, 9) for k in (b"b", b"a")]
    store.apply(batch(1, {k: doc(i + 1) for i, k in enumerate(keys)}))
    assert [k for k, _ in store.iter_docs()] == sorted(keys)
    assert [k for k, _ in store.iter_docs(1)] == sorted(k for k in keys if k[:2] == b"\x00\x01")
    assert list(store.iter_docs(2)) == []


def test_store_prepares_delete_applies_before_put(store):
    p, q = store_key(0, 0, b"p"), store_key(0, 0, b"q")
    store.apply(batch(1, prepares_put={p: b"p1", q: b"q1"}))
    store.apply(batch(2, prepares_put={p: b"p2"}, prepares_delete={p, q}))
    assert list(store.iter_prepares()) == [(p, b"p2")]


def test_store_checkpoint_lsn_persists_across_reopen(tmp_path):
    with CheckpointStore(tmp_path / "s") as s:
        s.apply(batch(1234, {store_key(0, 0, b"k"): doc(1)}))
    with CheckpointStore(tmp_path / "s") as s:
        assert s.checkpoint_lsn == 1234
        assert s.get(store_key(0, 0, b"k")) == doc(1)


def test_store_checkpoint_lsn_going_backwards_asserts(store):
    store.apply(batch(5))
    store.apply(batch(5))  # equal is allowed: an empty checkpoint
    with pytest.raises(AssertionError):
        store.apply(batch(4))
    assert store.checkpoint_lsn == 5


def test_store_batch_with_two_docs_sharing_a_seqno_asserts_and_applies_nothing(store):
    with pytest.raises(AssertionError):
        store.apply(batch(1, {store_key(0, 0, b"a"): doc(4), store_key(0, 0, b"b"): doc(4)}))
    assert store.checkpoint_lsn == 0 and list(store.iter_docs()) == []


def test_store_batch_meta_naming_store_key_asserts(store):
    with pytest.raises(AssertionError):
        store.apply(batch(1, meta={store_module.META_CHECKPOINT_LSN: b"\x00" * 8}))


# -- map growth -----------------------------------------------------------------------------


def big_docs(count: int, value_size: int, *, seqno_base: int = 0) -> dict[bytes, bytes]:
    return {store_key(i % 8, 0, b"key%06d" % i): doc(seqno_base + i + 1, b"x" * value_size) for i in range(count)}


def test_store_map_full_grows_map_and_applies_everything(tmp_path):
    with CheckpointStore(tmp_path / "s", map_size_initial=64 * KIB) as s:
        docs = big_docs(600, 2 * KIB)  # ~1.3 MiB, twenty times the initial map
        s.apply(batch(1, docs))
        assert all(s.get(k) == v for k, v in docs.items())
        stats = s.stats()
        assert stats["map_size_bytes"] > 64 * KIB
        assert stats["entries"]["docs"] == stats["entries"]["seqs"] == 600


def test_store_map_full_at_max_raises_store_error_and_applies_nothing(tmp_path):
    with CheckpointStore(tmp_path / "s", map_size_initial=64 * KIB, map_size_max=256 * KIB) as s:
        s.apply(batch(1, {store_key(0, 0, b"small"): doc(1)}))
        with pytest.raises(StoreError):
            s.apply(batch(2, big_docs(600, 2 * KIB, seqno_base=10)))
        assert s.checkpoint_lsn == 1
        assert s.get_meta(store_module.META_CHECKPOINT_LSN) == struct.pack(">Q", 1)
        assert s.stats()["entries"]["docs"] == 1
        assert s.stats()["map_size_bytes"] == 256 * KIB
        s.apply(batch(3, {store_key(0, 0, b"after"): doc(2)}))  # still usable
    with CheckpointStore(tmp_path / "s") as s:
        assert s.checkpoint_lsn == 3


def test_store_map_sizes_not_page_multiples_raise_valueerror(tmp_path):
    with pytest.raises(ValueError):
        CheckpointStore(tmp_path / "s", map_size_initial=1000)
    with pytest.raises(ValueError):
        CheckpointStore(tmp_path / "s", map_size_initial=128 * KIB, map_size_max=64 * KIB)


def test_store_gets_on_other_thread_never_fail_while_map_grows(tmp_path):
    with CheckpointStore(tmp_path / "s", map_size_initial=64 * KIB) as s:
        probe = store_key(7, 0, b"probe")
        s.apply(batch(1, {probe: doc(1, b"P")}))
        done = threading.Event()
        failures: list[BaseException] = []
        reads = [0]

        def reader() -> None:
            try:
                while not done.is_set():
                    assert s.get(probe) == doc(1, b"P")
                    reads[0] += 1
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(2, 9):  # each batch doubles the data: the map grows again and again
                s.apply(batch(i, big_docs(2**i * 10, 1 * KIB, seqno_base=i * 10_000)))
        finally:
            done.set()
            thread.join()
        assert failures == []
        assert reads[0] > 0
        assert s.stats()["map_size_bytes"] >= 2 * 1024 * KIB


def _wait_until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_store_map_growth_waits_for_open_iterator_which_keeps_its_snapshot(tmp_path):
    with CheckpointStore(tmp_path / "s", map_size_initial=64 * KIB) as s:
        first = {store_key(0, 0, b"a%02d" % i): doc(i + 1) for i in range(20)}
        s.apply(batch(1, first))
        it = s.iter_docs()
        seen = [next(it)]
        writer = threading.Thread(target=s.apply, args=(batch(2, big_docs(600, 2 * KIB, seqno_base=100)),))
        writer.start()
        _wait_until(lambda: s._gate._resizing)  # the writer is blocked on our open snapshot
        seen.extend(it)  # finishing the iterator lets the resize go ahead
        writer.join()
        assert seen == sorted(first.items())  # one snapshot: none of batch 2
        assert s.checkpoint_lsn == 2


def test_store_iterator_open_past_resize_wait_raises_store_error(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "LMDB_RESIZE_READERS_WAIT_S", 0.0)
    with CheckpointStore(tmp_path / "s", map_size_initial=64 * KIB) as s:
        s.apply(batch(1, {store_key(0, 0, b"a%02d" % i): doc(i + 1) for i in range(20)}))
        it = s.iter_docs()
        next(it)
        s.apply(batch(2, big_docs(600, 2 * KIB, seqno_base=100)))  # resizes under the iterator
        with pytest.raises(StoreError):
            list(it)
        assert len(list(s.iter_docs())) == 620  # a new snapshot works


# -- opening: versions, garbage, ownership ---------------------------------------------------


def test_store_format_version_mismatch_raises_naming_path_and_version(tmp_path):
    path = tmp_path / "s"
    CheckpointStore(path).close()
    with raw_env(path) as env, env.begin(write=True) as txn:
        txn.put(store_module.META_FORMAT_VERSION, struct.pack(">I", 2), db=env.open_db(b"meta", txn=txn))
    with pytest.raises(FormatVersionError) as info:
        CheckpointStore(path)
    assert (info.value.path, info.value.version) == (str(path), 2)
    CheckpointStore(path.parent / "other").close()  # the failed open released what it held


@pytest.mark.parametrize("value", [None, b"\x00\x01"])
def test_store_garbled_or_missing_meta_raises_datadirerror(tmp_path, value):
    path = tmp_path / "s"
    CheckpointStore(path).close()
    with raw_env(path) as env, env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        if value is None:
            txn.delete(store_module.META_CHECKPOINT_LSN, db=meta)
        else:
            txn.put(store_module.META_FORMAT_VERSION, value, db=meta)
    with pytest.raises(DataDirError) as info:
        CheckpointStore(path)
    assert not isinstance(info.value, FormatVersionError)


def test_store_env_created_but_never_committed_is_initialised(tmp_path):
    # A crash between LMDB creating its files and the store's first transaction.
    raw_env(tmp_path / "s").close()
    with CheckpointStore(tmp_path / "s") as s:
        assert s.checkpoint_lsn == 0
        assert s.get_meta(store_module.META_FORMAT_VERSION) == struct.pack(">I", STORE_FORMAT_VERSION)


def test_store_garbage_data_file_raises_datadirerror(tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    (path / "data.mdb").write_bytes(os.urandom(64 * KIB))
    with pytest.raises(DataDirError):
        CheckpointStore(path)


def test_store_foreign_files_without_data_file_raise_datadirerror(tmp_path):
    (tmp_path / "notes.txt").write_text("not a store")
    with pytest.raises(DataDirError):
        CheckpointStore(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # nothing created


def test_store_path_that_is_a_file_raises_datadirerror(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(DataDirError):
        CheckpointStore(tmp_path / "f")


def test_store_plain_lmdb_env_without_store_databases_raises_datadirerror(tmp_path):
    with raw_env(tmp_path / "s") as env, env.begin(write=True) as txn:
        txn.put(b"some", b"thing")
    with pytest.raises(DataDirError):
        CheckpointStore(tmp_path / "s")


def test_store_second_open_in_process_raises_locked(store):
    with pytest.raises(DataDirLockedError):
        CheckpointStore(store.path)
    assert store.get(store_key(0, 0, b"k")) is None  # the first is unharmed


def test_store_files_are_owner_only(store):
    assert os.stat(store.path).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(store.path, "data.mdb")).st_mode & 0o777 == 0o600


def test_store_closed_get_raises_store_error(tmp_path):
    s = CheckpointStore(tmp_path / "s")
    s.close()
    s.close()
    with pytest.raises(StoreError):
        s.get(store_key(0, 0, b"k"))
    with pytest.raises(StoreError):
        list(s.iter_docs())


# -- deletes --------------------------------------------------------------------------------


def test_store_delete_vbucket_drops_its_docs_seqs_prepares_only(store):
    docs = {
        store_key(vb, cid, b"k%d" % i): doc(cid * 10 + i + 1) for vb in (1, 2, 3) for cid in (0, 8) for i in range(5)
    }
    prepares = {store_key(vb, 0, b"p"): b"prep%d" % vb for vb in (1, 2, 3)}
    store.apply(batch(1, docs, prepares_put=prepares))
    store.delete_vbucket(2)
    assert list(store.iter_docs(2)) == [] and list(store.iter_by_seqno(2)) == []
    assert len(list(store.iter_docs(1))) == len(list(store.iter_docs(3))) == 10
    assert [k[:2] for k, _ in store.iter_prepares()] == [b"\x00\x01", b"\x00\x03"]
    assert store.stats()["entries"]["seqs"] == 20
    assert store.checkpoint_lsn == 1


def test_store_delete_collection_drops_it_in_every_vbucket(store):
    docs = {
        store_key(vb, cid, b"k%d" % i): doc(vb * 100 + cid * 10 + i)
        for vb in (0, 5, 9)
        for cid in (7, 8, 9)
        for i in range(3)
    }
    store.apply(batch(1, docs, prepares_put={store_key(5, 8, b"p"): b"x", store_key(5, 9, b"p"): b"y"}))
    assert store.delete_collection(8) == 9
    assert all(k[2:6] != struct.pack(">I", 8) for k, _ in store.iter_docs())
    assert store.stats()["entries"]["docs"] == store.stats()["entries"]["seqs"] == 18
    assert [k for k, _ in store.iter_prepares()] == [store_key(5, 9, b"p")]
    assert store.delete_collection(8) == 0
    assert store.delete_collection(12345) == 0


def test_store_stats_reports_map_pages_and_entries(store):
    store.apply(batch(7, {store_key(0, 0, b"k"): doc(1)}, prepares_put={store_key(0, 0, b"p"): b"p"}))
    stats = store.stats()
    assert stats["map_size_bytes"] == limits.LMDB_MAP_SIZE_INITIAL
    assert stats["pages_used"] > 0 and stats["used_bytes"] == stats["pages_used"] * stats["page_size_bytes"]
    assert stats["entries"] == {"meta": 2, "docs": 1, "seqs": 1, "prepares": 1}
    assert stats["checkpoint_lsn"] == 7


# -- crash ----------------------------------------------------------------------------------

_CRASH_WRITER = textwrap.dedent(
    """
    import sys, time
    from durakv.engine.document import Document, store_key
    from durakv.engine.store import CheckpointBatch, CheckpointStore

    KEYS = 300
    store = CheckpointStore(sys.argv[1], map_size_initial=1024 * 1024)
    lsn = store.checkpoint_lsn
    apply_s = 0.0
    while True:
        lsn += 1
        value = b"%d|" % lsn + b"x" * 8192
        docs = {
            store_key(i % 4, 0, b"key%04d" % i): Document(lsn, lsn * 1000 + i, 1, 0, 0, False, value).encode()
            for i in range(KEYS)
        }
        batch = CheckpointBatch(docs=docs, meta={b"last": b"%d" % lsn}, checkpoint_lsn=lsn)
        print(lsn, apply_s, flush=True)  # announced, then applied at once
        started = time.perf_counter()
        store.apply(batch)
        apply_s = time.perf_counter() - started
    """
)


def _check_whole_batch(path, lsn_killed: int) -> int:
    with CheckpointStore(path) as s:
        lsn = s.checkpoint_lsn
        assert lsn in (lsn_killed - 1, lsn_killed)  # the killed apply is absent or whole
        assert s.get_meta(b"last") == b"%d" % lsn
        docs = list(s.iter_docs())
        assert len(docs) == 300
        for _, record in docs:
            d = decode_document(record)
            assert d.cas == lsn and d.value.startswith(b"%d|" % lsn)
        by_seqno = [entry for vb in range(4) for entry in s.iter_by_seqno(vb)]
        assert sorted(skey for _, skey, _ in by_seqno) == sorted(k for k, _ in docs)
        assert s.stats()["entries"]["seqs"] == 300
        return lsn


def test_store_sigkill_mid_apply_leaves_one_whole_batch(tmp_path):
    seed = 20240611
    rng = random.Random(seed)
    path = tmp_path / "s"
    for kill in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", _CRASH_WRITER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            for _ in range(3):  # two applies measured, the third is the one killed
                line = child.stdout.readline()
                assert line, child.stderr.read().decode()
            lsn_killed, apply_s = int(line.split()[0]), float(line.split()[1])
            # Kill at a random point of the announced apply (sometimes just after it): the
            # whole range, including LMDB's commit, is hit across runs.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=rng.uniform(0.0, 1.5 * apply_s))
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=60)
            # The child may have finished that apply and started more before the signal
            # landed: the last announced apply is the one that was killed.
            for line in child.stdout.read().splitlines():
                lsn_killed = int(line.split()[0])
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL, f"seed={seed} kill={kill}"
        _check_whole_batch(path, lsn_killed)

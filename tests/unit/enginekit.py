"""Shared helpers for the engine-core tests: a BucketEngine over the real WAL and LMDB store.

`EngineRig` wires one `BucketEngine` to a real `WriteAheadLog` and a real `CheckpointStore` in
a test directory, the way the embedded shell does, but leaves the engine's inputs to the test:
time is a number the test passes (`now`), and WAL persistence reaches the engine only when the
test calls `persist()` (the flusher runs, but with no `on_persisted` callback). So a test can
hold a persist-level prepare unpersisted as long as it likes, and move the clock by any amount
without waiting.

`crash()` is a power cut: unsynced WAL bytes are dropped (`WriteAheadLog.power_loss`), the
store is closed without a checkpoint, and the next `EngineRig` on the same directory recovers
from what is on disk. `crash_node()` does the same to a whole `EmbeddedNode`.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durakv.engine import records
from durakv.engine.bucket import BucketConfig
from durakv.engine.document import Document, store_key
from durakv.engine.errors import KVError, Status, WalFailedError
from durakv.engine.kv import BucketEngine
from durakv.engine.store import CheckpointStore
from durakv.engine.wal import FsyncPolicy, WriteAheadLog

T0 = 1_700_000_000.0  # the fake clock's start (2023-11-14), unix seconds
WAIT_S = 10.0  # upper bound for the WAL flusher to fsync what a test asked for


@contextlib.contextmanager
def refused(status: Status) -> Iterator[Any]:
    """Expect the block to raise KVError with exactly `status` (the type and field, never the message)."""
    with pytest.raises(KVError) as caught:
        yield caught
    assert caught.value.status is status, caught.value


def vbucket_of(key: bytes, num_vbuckets: int) -> int:
    """Couchbase's key -> vbucket formula, written out here as the independent oracle."""
    return ((zlib.crc32(key) >> 16) & 0x7FFF) % num_vbuckets


def keys_in_one_vbucket(count: int, num_vbuckets: int, prefix: bytes = b"k") -> list[bytes]:
    """`count` distinct keys that all hash to the same vbucket."""
    by_vb: dict[int, list[bytes]] = {}
    i = 0
    while True:
        key = prefix + b"%d" % i
        group = by_vb.setdefault(vbucket_of(key, num_vbuckets), [])
        group.append(key)
        if len(group) == count:
            return group
        i += 1


class RefusingWal(WriteAheadLog):
    """The real WAL, except that `append` raises WalFailedError while `refuse` is set (a failing disk)."""

    refuse = False

    def append(self, kind: int, payload: bytes, **kwargs: Any) -> int:
        if self.refuse:
            raise WalFailedError("injected: the disk is failing")
        return super().append(kind, payload, **kwargs)


class EngineRig:
    """One bucket's engine core over the real WAL and store in `path` (recovered at construction)."""

    def __init__(
        self,
        path: Path,
        config: BucketConfig | None = None,
        *,
        now: float = T0,
        clean_shutdown: bool = False,
        wal_cls: type[WriteAheadLog] = WriteAheadLog,
        segment_size_max: int | None = None,
    ) -> None:
        self.path = path
        self.config = config or BucketConfig("b", num_vbuckets=4)
        kwargs: dict[str, Any] = {"fsync_policy": FsyncPolicy.parse("never")}
        if segment_size_max is not None:
            kwargs["segment_size_max"] = segment_size_max
        self.wal = wal_cls.open(path / "wal", **kwargs)
        self.store = CheckpointStore(path / "store")
        self.engine = BucketEngine(self.config, self.wal, self.store)
        self.engine.recover(self.wal.replay(self.store.checkpoint_lsn), clean_shutdown=clean_shutdown, now=now)
        self.wal.start()
        self.closed = False

    # -- driving persistence and checkpoints ------------------------------------------------
    def sync_wal(self) -> int:
        """fsync the WAL up to its current end (the engine is not told); returns that position."""
        lsn = self.wal.end_lsn
        self.wal.request_sync(lsn)
        assert self.wal.wait_persisted(lsn, WAIT_S), "the WAL flusher did not fsync in time"
        return lsn

    def persist(self) -> int:
        """fsync the WAL up to its end and tell the engine, as the shell's flusher callback would."""
        lsn = self.sync_wal()
        self.engine.on_persisted(lsn)
        return lsn

    def checkpoint(self) -> None:
        """What EmbeddedBucket.checkpoint does: WAL first, then the store, then purge and release."""
        batch = self.engine.freeze_for_checkpoint()
        self.wal.request_sync(batch.checkpoint_lsn)
        assert self.wal.wait_persisted(batch.checkpoint_lsn, WAIT_S)
        self.store.apply(batch)
        self.engine.checkpoint_done()
        dropped = set(self.engine.dropped_cids)
        for cid in dropped:
            self.store.delete_collection(cid)
        self.engine.purged(dropped)
        self.wal.release_before(batch.checkpoint_lsn)

    # -- stopping ---------------------------------------------------------------------------
    def close(self) -> None:
        """A clean stop: checkpoint, then close the WAL (fsyncing the rest) and the store."""
        if self.closed:
            return
        self.checkpoint()
        self.closed = True
        self.wal.close()
        self.store.close()

    def crash(self) -> None:
        """A power cut: every WAL byte not fsynced is lost; the store keeps its last checkpoint."""
        if self.closed:
            return
        self.closed = True
        self.wal.power_loss()
        self.store.close()

    def abandon(self) -> None:
        """Release the files whatever state they are in (test teardown)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.wal.power_loss()
        finally:
            self.store.close()

    # -- looking -----------------------------------------------------------------------------
    def wal_records(self) -> list[records.Record]:
        """Every engine record the WAL still holds (persisted or buffered), decoded, in order."""
        return [records.decode(r.kind, r.payload) for r in self.wal.replay(self.wal.first_lsn)]

    def records_of(self, kind: records.Kind) -> list[records.Record]:
        return [r for r in self.wal_records() if r.kind is kind]

    def document_kinds(self) -> list[records.Kind]:
        """Kinds of the WAL's records about documents, in order (vbucket state and manifest left out)."""
        meta = (records.Kind.VBUCKET_STATE, records.Kind.MANIFEST)
        return [r.kind for r in self.wal_records() if r.kind not in meta]

    def high_seqnos(self) -> tuple[int, ...]:
        return tuple(vb.high_seqno for vb in self.engine.vbuckets)

    def vbucket(self, key: bytes):
        return self.engine.vbuckets[vbucket_of(key, self.config.num_vbuckets)]

    def document(self, key: bytes, scope: str = "_default", collection: str = "_default") -> Document | None:
        """The newest committed version (tombstones included) as the engine holds it."""
        cid = self.engine.manifest.collection_id(scope, collection)
        return self.engine.committed(store_key(vbucket_of(key, self.config.num_vbuckets), cid, key))

    def footprint(self) -> tuple[Any, ...]:
        """Everything a refused request must leave alone: seqnos, the WAL end, the memtable,
        prepares, locks and the manifest."""
        return (
            self.high_seqnos(),
            self.wal.end_lsn,
            dict(self.engine.memtable.live),
            {vb.vbid: dict(vb.prepares) for vb in self.engine.vbuckets},
            {vb.vbid: {k: (lock.cas, lock.until) for k, lock in vb.locks.items()} for vb in self.engine.vbuckets},
            self.engine.manifest.to_json(),
        )


def crash_node(node: Any, *, sync: bool = True) -> None:
    """Stop an EmbeddedNode the way a power cut would.

    With `sync`, every WAL byte appended so far is fsynced first, so every acknowledged write, at
    any level, is on disk; without it, whatever the flusher had not fsynced yet is lost. Then
    each bucket's maintenance thread is stopped, its WAL loses power (nothing more is written,
    no checkpoint, no CLEAN marker) and its store is closed; finally the data-directory lock is
    released, as the kernel would release it for a dead process.
    """
    for bucket in node.buckets.values() if sync else ():
        lsn = bucket.wal.end_lsn
        bucket.wal.request_sync(lsn)
        assert bucket.wal.wait_persisted(lsn, WAIT_S), "the WAL did not fsync before the crash"
    for bucket in node.buckets.values():
        bucket._stop.set()
        bucket._wake.set()
        bucket._thread.join()
        bucket.wal.power_loss()
        bucket.store.close()
    node.buckets.clear()
    node.datadir.close()

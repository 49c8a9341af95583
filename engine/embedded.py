"""The embedded shell: an engine node inside the user's process, driven by threads.

Each bucket gets one lock that serializes every call into its (single-threaded)
engine core, a WAL with its flusher thread, an LMDB checkpoint store, and one
maintenance thread that feeds the core time (durability timeouts), checkpoints the
memtable into LMDB and runs the expiry pager. The shell decides nothing about KV
semantics; it only moves bytes, time and wake-ups.

Two ways in: `call` for threads (the SDK's embedded mode: a durable write's caller
blocks until it completes) and `call_async` for an asyncio event loop (the node server: the
core runs on the loop's thread, only the wait for a durable write is asynchronous).

Invariant: a checkpoint is applied to LMDB only after the WAL is persisted up to the
position it covers (the store is never ahead of the log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .bucket import BucketConfig
from .datadir import DataDir
from .document import decode_document
from .errors import EngineError, KVError, Status
from .files import atomic_write, fsync_dir
from .kv import BucketEngine
from .limits import CHECKPOINT_INTERVAL_S, EXPIRY_PAGER_INTERVAL_S, MEMTABLE_SIZE_CHECKPOINT
from .pending import Pending
from .store import CheckpointStore
from .wal import FsyncPolicy, WriteAheadLog

log = logging.getLogger("durakv.engine")

DEFAULT_BUCKET = "default"
_TICK_BUSY_S = 0.02  # how often durability timeouts are checked while SyncWrites are pending
CHECKPOINT_WAL_WAIT_S = 30.0


class EmbeddedBucket:
    def __init__(self, directory: Path, config: BucketConfig, node_id: str, fsync_policy: str) -> None:
        self.directory = directory
        self.config = config
        self.lock = threading.Lock()
        self.wal = WriteAheadLog.open(directory / "wal", fsync_policy=FsyncPolicy.parse(fsync_policy))
        try:
            self.store = CheckpointStore(directory / "store")
        except BaseException:
            self.wal.close()
            raise
        clean_marker = directory / "CLEAN"
        clean = clean_marker.exists()
        self.engine = BucketEngine(config, self.wal, self.store, node_id=node_id)
        if not self.wal.first_lsn <= self.store.checkpoint_lsn <= self.wal.end_lsn:
            self.close_files()
            raise EngineError(
                f"{directory}: the WAL holds {self.wal.first_lsn}..{self.wal.end_lsn} but the store has "
                f"checkpointed up to {self.store.checkpoint_lsn}; WAL segments are missing"
            )
        self.engine.recover(self.wal.replay(self.store.checkpoint_lsn), clean_shutdown=clean, now=time.time())
        if clean:
            clean_marker.unlink()
            fsync_dir(directory)
        self.checkpoint_count = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = False
        self._wakeups: list[threading.Lock] = []  # waiters to release once the bucket lock is free
        self._checkpoint_lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        self._last_pager = time.monotonic()
        self.wal.start(on_persisted=self._on_persisted, on_failure=self._on_wal_failure)
        self._thread = threading.Thread(target=self._maintain, name=f"durakv-maint-{config.name}", daemon=True)
        self._thread.start()

    # -- calls into the core -----------------------------------------------------------------
    def call(self, method: str, *args: Any, wait_s: float | None = None, **kwargs: Any) -> Any:
        """Run one engine operation; a Pending result is waited for up to `wait_s`."""
        with self.lock:
            result = getattr(self.engine, method)(*args, **kwargs)
            if result.__class__ is not Pending or result.done:
                waiter = None
            else:
                # A plain lock, held until the SyncWrite completes: cheaper to wake than an Event.
                waiter = threading.Lock()
                waiter.acquire()
                result.add_callback(lambda _p: self._wakeups.append(waiter))
        if waiter is None:
            return result.outcome() if result.__class__ is Pending else result
        if self._idle:
            self._wake.set()  # the maintenance thread must start watching durability timeouts
        if not waiter.acquire(timeout=-1 if wait_s is None else wait_s):
            raise TimeoutError("the durable write did not complete in time")
        return result.outcome()

    async def call_async(self, method: str, *args: Any, wait_s: float | None = None, **kwargs: Any) -> Any:
        """`call` for an event loop: the core runs here, under the lock; a Pending is awaited up to `wait_s`.

        Engine calls are short and never block, so they run on the loop's own thread. A durable
        write's completion callback runs on the WAL flusher or maintenance thread (under the
        bucket lock) and only schedules the loop to wake this coroutine. Raises TimeoutError
        when `wait_s` passes first (the SyncWrite goes on; its outcome is unknown to the caller).
        """
        with self.lock:
            result = getattr(self.engine, method)(*args, **kwargs)
            if result.__class__ is not Pending or result.done:
                future = None
            else:
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                thread = threading.get_ident()
                result.add_callback(lambda _p: _wake_loop(loop, thread, future))
        if future is None:
            return result.outcome() if result.__class__ is Pending else result
        if self._idle:
            self._wake.set()  # the maintenance thread must start watching durability timeouts
        # The future is this coroutine's alone: a caller that gives up (cancelled RPC) cancels
        # it, and the completion callback then finds it done and leaves it.
        timer = None if wait_s is None else loop.call_later(wait_s, _time_out, future)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()
        return result.outcome()

    def _wake_waiters(self) -> None:
        """Release the callers whose SyncWrites completed; called after the bucket lock is released."""
        while self._wakeups:
            self._wakeups.pop().release()

    def _on_persisted(self, lsn: int) -> None:
        with self.lock:
            self.engine.on_persisted(lsn)
        self._wake_waiters()

    def _on_wal_failure(self, exc: BaseException) -> None:
        log.error("bucket %s: write-ahead log failed, writes refused until it recovers: %s", self.config.name, exc)

    # -- maintenance thread ----------------------------------------------------------------
    def _maintain(self) -> None:
        while not self._stop.is_set():
            self._idle = not self.engine.sync_writes_in_flight()
            self._wake.wait(0.5 if self._idle else _TICK_BUSY_S)
            self._wake.clear()
            self._idle = False
            try:
                with self.lock:
                    self.engine.tick(time.time())
                self._wake_waiters()
                now = time.monotonic()
                if self.engine.memtable_size() >= MEMTABLE_SIZE_CHECKPOINT or (
                    now - self._last_checkpoint >= CHECKPOINT_INTERVAL_S and self.engine.checkpoint_wanted()
                ):
                    self.checkpoint()
                if now - self._last_pager >= EXPIRY_PAGER_INTERVAL_S:
                    self.run_expiry_pager()
            except Exception:  # keep the node up; the failure is reported and retried next round
                log.exception("bucket %s: maintenance step failed", self.config.name)

    def checkpoint(self) -> bool:
        """Move the memtable into LMDB; returns False when the WAL could not be persisted first."""
        with self._checkpoint_lock:  # one checkpoint at a time: the memtable has one frozen layer
            return self._checkpoint()

    def _checkpoint(self) -> bool:
        self._last_checkpoint = time.monotonic()
        if self.wal.failed is not None:
            return False  # the WAL cannot persist the position the checkpoint would cover
        with self.lock:
            batch = self.engine.freeze_for_checkpoint()
        self.wal.request_sync(batch.checkpoint_lsn)
        deadline = time.monotonic() + CHECKPOINT_WAL_WAIT_S
        while not self.wal.wait_persisted(batch.checkpoint_lsn, _TICK_BUSY_S):
            # Keep durability timeouts running while waiting (this may be the maintenance thread).
            with self.lock:
                self.engine.tick(time.time())
            self._wake_waiters()
            if self.wal.failed is not None or time.monotonic() >= deadline:
                with self.lock:
                    self.engine.checkpoint_failed()
                return False
        try:
            # Vbuckets rolled back to zero: their stale contents go before anything newer lands
            # (a crash in between replays the ROLLBACK record, which asks for this again).
            for vbid in sorted(batch.vbuckets_delete):
                self.store.delete_vbucket(vbid)
            self.store.apply(batch)
        except BaseException:
            with self.lock:
                self.engine.checkpoint_failed()
            raise
        with self.lock:
            self.engine.checkpoint_done()
            dropped = set(self.engine.dropped_cids)
        for cid in dropped:
            self.store.delete_collection(cid)
        with self.lock:
            self.engine.purged(dropped)
        self.wal.release_before(batch.checkpoint_lsn)
        self.checkpoint_count += 1
        return True

    def rollback(self, vbid: int, seqno: int) -> Any:
        """`engine.rollback` with no checkpoint in flight, so that it can be exact when the WAL
        allows (a checkpoint half applied forces a rollback to zero). Blocks while a checkpoint
        runs: from an event loop, call it in a worker thread."""
        with self._checkpoint_lock, self.lock:
            return self.engine.rollback(vbid, seqno)

    def replica_ack(self, vbid: int, node_id: str, hps: int, received_seqno: int = 0, persisted_seqno: int = 0) -> None:
        """`engine.replica_ack`, then release the threads whose SyncWrites it committed."""
        with self.lock:
            self.engine.replica_ack(vbid, node_id, hps, received_seqno, persisted_seqno)
        self._wake_waiters()

    def run_expiry_pager(self) -> int:
        """Find expired documents in the store and memtable and expire them; returns how many."""
        self._last_pager = time.monotonic()
        now = time.time()
        candidates = [skey for skey, raw in self.store.iter_docs() if _expired_raw(raw, now)]
        with self.lock:
            candidates += [s for s, d in self.engine.memtable.live.items() if d.expiry and d.expiry <= now]
            return self.engine.expire(candidates, now)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        clean = self.wal.failed is None and self.checkpoint()
        self.close_files()
        if clean:
            atomic_write(self.directory / "CLEAN", b"")

    def close_files(self) -> None:
        self.wal.close()
        self.store.close()


def _wake_loop(loop: asyncio.AbstractEventLoop, loop_thread: int, future: asyncio.Future) -> None:
    """Resolve `future` on its loop's thread; called from whichever thread completed the SyncWrite
    (the loop's own, for a commit a replica's ack released: then at once, without a wake-up)."""
    if threading.get_ident() == loop_thread:
        _set_done(future)
        return
    try:
        loop.call_soon_threadsafe(_set_done, future)
    except RuntimeError:  # the loop is closed: nobody is waiting for the answer any more
        pass


def _set_done(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _time_out(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError("the durable write did not complete in time"))


def _expired_raw(raw: bytes, now: float) -> bool:
    doc = decode_document(raw)
    return not doc.deleted and doc.expiry != 0 and doc.expiry <= now


class EmbeddedNode:
    """A whole node in-process: the data directory and its buckets.

    `default_bucket=False` opens a new directory with no bucket (a cluster node creates and
    drops its buckets from the configuration the manager pushes). `node_id` names this node
    in vbucket chains; by default it is the data directory's own id (a lone embedded node).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fsync_policy: str = "always",
        default_bucket: bool = True,
        node_id: str | None = None,
    ) -> None:
        self.datadir = DataDir(path)
        self.fsync_policy = fsync_policy
        self.node_id = node_id or self.datadir.node_id
        self.buckets: dict[str, EmbeddedBucket] = {}
        self._lock = threading.Lock()
        try:
            for name, config in self.datadir.buckets.items():
                self.buckets[name] = EmbeddedBucket(self.datadir.bucket_dir(name), config, self.node_id,
                                                    fsync_policy)  # fmt: skip
            if default_bucket and self.datadir.created:
                self.create_bucket(BucketConfig(DEFAULT_BUCKET))
        except BaseException:
            self.close()
            raise

    def bucket(self, name: str) -> EmbeddedBucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            raise KVError(Status.BUCKET_NOT_FOUND, f"bucket {name!r} not found")
        return bucket

    def create_bucket(self, config: BucketConfig) -> None:
        with self._lock:
            if config.name in self.buckets:
                raise KVError(Status.BUCKET_EXISTS, f"bucket {config.name!r} already exists")
            directory = self.datadir.add_bucket(config)
            self.buckets[config.name] = EmbeddedBucket(directory, config, self.node_id, self.fsync_policy)

    def drop_bucket(self, name: str) -> None:
        with self._lock:
            bucket = self.bucket(name)
            bucket.close()
            del self.buckets[name]
            self.datadir.remove_bucket(name)

    def close(self) -> None:
        with self._lock:
            errors = []
            for bucket in list(self.buckets.values()):
                try:
                    bucket.close()
                except Exception as exc:
                    errors.append(exc)
            self.buckets.clear()
            self.datadir.close()
        if errors:
            raise errors[0]

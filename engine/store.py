"""The LMDB checkpoint store: one node's documents as of the last checkpoint.

Owns: one LMDB environment (a directory used by nothing else) with four named databases --
`docs` (store key -> encoded Document, tombstones included), `seqs` (vbucket u16 | seqno u64
-> store key, the by-seqno index that backfill reads), `prepares` (store key -> opaque
prepare record) and `meta` (format version, checkpoint LSN, and opaque engine metadata).

LMDB is the checkpoint, not the log. The engine's checkpointer thread moves memtable contents
here in one synced write transaction (`apply`) that also records the WAL position it covers;
after that the WAL below it may be deleted. Nothing is acknowledged on the strength of LMDB.

Must never:
- be written by more than one thread. The checkpointer is the only writer (a lock serialises
  accidental callers, so misuse is slow rather than corrupt). Reads come from any thread.
- be used across fork(): LMDB's MDB_env belongs to the process that opened it. A forked child
  must not touch a store it inherited; it opens its own after exec (the data-dir lock keeps
  two processes from opening the same directory anyway).
- rely on `sync=False`/`metasync=False`: after a power loss an unsynced LMDB may be corrupt
  (not just stale), and the WAL cannot repair that, because WAL segments below the recorded
  checkpoint LSN are already gone. Both stay on, so each apply is durable when it returns.

Readers: `get` is one short read transaction (a reader-table slot for microseconds); the
iterators hold one snapshot for their whole life, which pins old pages (the file grows while
a backfill is slow). At most `limits.LMDB_MAX_READERS` read transactions may be open at once.
Growing the map (`set_mapsize`, on MapFullError) invalidates every open transaction of the
process, so it waits for open iterators to close (at most `LMDB_RESIZE_READERS_WAIT_S`; an
iterator still open after that raises StoreError and must be restarted), and a `get` that
races it retries once the new map is in place.

Backfill: `backfill_read` reads one vbucket for a replica stream in ONE read transaction: its
checkpointed seqnos (from the engine's vbucket state in `meta`), every document from a seqno on
(each key once, at its newest version: `docs` holds one version per key) and its pending
prepares. It holds the whole answer in memory, so it is meant for one vbucket at a time.

Invariants: the checkpoint LSN never goes backwards; an apply is all-or-nothing; every
`seqs` entry (vb, s) -> k has docs[k].seqno == s.

engine/store_env.py opens the environment (directory claim, flags, databases, format check)
and holds the resize gate; the layout names and STORE_FORMAT_VERSION are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import lmdb

from durakv.engine import limits
from durakv.engine.document import HEADER_SIZE, Document, decode_document, seqno_of, split_store_key
from durakv.engine.errors import StoreError
from durakv.engine.store_env import (
    DB_DOCS,
    DB_META,
    DB_PREPARES,
    DB_SEQS,
    META_CHECKPOINT_LSN,
    META_FORMAT_VERSION,
    STORE_FORMAT_VERSION,
    ResizeGate,
    check_map_size,
    claim_dir,
    open_dbs,
    open_env,
    release_dir,
)
from durakv.engine.vbucket import decode_prepare_value, state_meta_key, stored_seqnos

__all__ = [
    "DB_DOCS",
    "DB_META",
    "DB_PREPARES",
    "DB_SEQS",
    "META_CHECKPOINT_LSN",
    "META_FORMAT_VERSION",
    "STORE_FORMAT_VERSION",
    "BackfillSnapshot",
    "CheckpointBatch",
    "CheckpointStore",
]

_META_RESERVED = frozenset({META_FORMAT_VERSION, META_CHECKPOINT_LSN})
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_STORE_KEY_PREFIX_SIZE = 6  # vbucket u16 | collection id u32 (engine.document.store_key)
_GET_ATTEMPTS_MAX = 3  # a get that keeps failing after map resizes is a real error

_T = TypeVar("_T")


@dataclass(kw_only=True)
class CheckpointBatch:
    """What one checkpoint writes, built by the engine. Deletes apply before puts."""

    docs: dict[bytes, bytes] = field(default_factory=dict)  # store key -> encoded Document
    prepares_put: dict[bytes, bytes] = field(default_factory=dict)  # store key -> prepare record
    prepares_delete: set[bytes] = field(default_factory=set)
    meta: dict[bytes, bytes] = field(default_factory=dict)  # opaque engine metadata, put as given
    checkpoint_lsn: int  # the WAL end position this checkpoint covers


class BackfillSnapshot(NamedTuple):
    """One vbucket as the last checkpoint holds it, from a seqno on (`backfill_read`)."""

    high_seqno: int  # the checkpointed high seqno: the end of the disk snapshot
    high_completed_seqno: int
    high_prepared_seqno: int
    purge_seqno: int
    documents: list[tuple[int, int, bytes, Document]]  # (seqno, collection id, key, doc), by seqno; tombstones too
    prepares: list[tuple[int, int, bytes, int, Document]]  # (seqno, collection id, key, level, doc), by seqno


class CheckpointStore:
    """The LMDB checkpoint of one node. See the module docstring for the rules."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size_initial: int = limits.LMDB_MAP_SIZE_INITIAL,
        map_size_max: int = limits.LMDB_MAP_SIZE_MAX,
    ) -> None:
        check_map_size("map_size_initial", map_size_initial)
        check_map_size("map_size_max", map_size_max)
        if map_size_initial > map_size_max:
            raise ValueError(f"map_size_initial={map_size_initial} exceeds map_size_max={map_size_max}")
        self.path = os.fspath(path)
        self._map_size_max = map_size_max
        self._gate = ResizeGate()
        self._write_lock = threading.Lock()
        self._dir_id = claim_dir(self.path)
        try:
            self._env = open_env(self.path, map_size_initial)
        except BaseException:
            release_dir(self._dir_id)
            raise
        self._begin = self._env.begin  # bound once: the get path is measured in nanoseconds
        try:
            dbs, self._checkpoint_lsn = open_dbs(self._env, self.path)
            self._meta, self._docs, self._seqs, self._prepares = dbs
        except BaseException:
            self.close()
            raise

    # -- reads --------------------------------------------------------------------------

    @property
    def checkpoint_lsn(self) -> int:
        """The WAL end position the last apply covered (0 for a new store)."""
        return self._checkpoint_lsn

    def get(self, skey: bytes) -> bytes | None:
        """The encoded document at `skey` (tombstones included), or None. Any thread."""
        try:
            # The temporary transaction is released (into the spare slot) by reference
            # counting as soon as get returns; this is the fastest form measured.
            return self._begin(self._docs).get(skey)
        except lmdb.Error:
            return self._get_retrying(self._docs, skey)

    def get_meta(self, name: bytes) -> bytes | None:
        try:
            return self._begin(self._meta).get(name)
        except lmdb.Error:
            return self._get_retrying(self._meta, name)

    def _get_retrying(self, db: Any, key: bytes) -> bytes | None:
        # A read that raced a map resize was refused or invalidated by py-lmdb; wait for the
        # resize to finish and read again. Anything that persists is a real failure.
        error: lmdb.Error | None = None
        for _ in range(_GET_ATTEMPTS_MAX):
            self._gate.wait_resized()
            try:
                return self._begin(db).get(key)
            except lmdb.Error as exc:
                error = exc
        raise StoreError(f"{self.path}: read failed: {error}") from error

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """One read transaction, registered with the resize gate; lmdb errors -> StoreError."""
        with self._gate.snapshot():
            try:
                txn = self._begin()
            except lmdb.Error as exc:
                raise StoreError(f"{self.path}: cannot start a read transaction: {exc}") from exc
            try:
                yield txn
            except lmdb.Error as exc:
                raise StoreError(f"{self.path}: read failed (snapshot invalidated?): {exc}") from exc
            finally:
                with contextlib.suppress(lmdb.Error):
                    txn.abort()

    def iter_by_seqno(self, vbucket: int, start_seqno: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        """(seqno, store key, encoded doc) for seqno >= start_seqno, ascending; one snapshot."""
        prefix = _U16.pack(vbucket)
        with self._snapshot() as txn:
            cursor = txn.cursor(db=self._seqs)
            if not cursor.set_range(prefix + _U64.pack(start_seqno)):
                return
            for seq_key, skey in cursor:
                if not seq_key.startswith(prefix):
                    return
                seqno = _U64.unpack_from(seq_key, 2)[0]
                record = txn.get(skey, db=self._docs)
                if record is None or seqno_of(record) != seqno:
                    raise StoreError(f"{self.path}: seqs entry vb={vbucket} seqno={seqno} -> {skey!r} is stale")
                yield seqno, skey, record

    def backfill_read(self, vbucket: int, from_seqno: int) -> BackfillSnapshot:
        """The vbucket's checkpointed seqnos, documents with seqno >= from_seqno and pending
        prepares with seqno >= from_seqno, all from one read snapshot. Any thread."""
        prefix = _U16.pack(vbucket)
        with self._snapshot() as txn:
            seqnos = stored_seqnos(txn.get(state_meta_key(vbucket), db=self._meta))
            documents: list[tuple[int, int, bytes, Document]] = []
            cursor = txn.cursor(db=self._seqs)
            if cursor.set_range(prefix + _U64.pack(from_seqno)):
                for seq_key, skey in cursor:
                    if not seq_key.startswith(prefix):
                        break
                    seqno = _U64.unpack_from(seq_key, 2)[0]
                    record = txn.get(skey, db=self._docs)
                    if record is None or seqno_of(record) != seqno:
                        raise StoreError(f"{self.path}: seqs entry vb={vbucket} seqno={seqno} -> {skey!r} is stale")
                    _, cid, key = split_store_key(skey)
                    documents.append((seqno, cid, key, decode_document(record)))
            prepares: list[tuple[int, int, bytes, int, Document]] = []
            for skey, value in self._iter_prefix(txn.cursor(db=self._prepares), prefix):
                level, doc = decode_prepare_value(value)
                if doc.seqno >= from_seqno:
                    _, cid, key = split_store_key(skey)
                    prepares.append((doc.seqno, cid, key, level, doc))
        prepares.sort(key=lambda p: p[0])
        return BackfillSnapshot(
            seqnos.high_seqno, seqnos.high_completed_seqno, seqnos.high_prepared_seqno, seqnos.purge_seqno,
            documents, prepares,
        )  # fmt: skip

    def iter_docs(self, vbucket: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(store key, encoded doc) in key order, all or one vbucket; one snapshot."""
        prefix = b"" if vbucket is None else _U16.pack(vbucket)
        with self._snapshot() as txn:
            yield from self._iter_prefix(txn.cursor(db=self._docs), prefix)

    def iter_prepares(self) -> Iterator[tuple[bytes, bytes]]:
        """(store key, prepare record) in key order; one snapshot."""
        with self._snapshot() as txn:
            yield from self._iter_prefix(txn.cursor(db=self._prepares), b"")

    @staticmethod
    def _iter_prefix(cursor: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    # -- writes (the checkpointer thread only) ------------------------------------------

    def apply(self, batch: CheckpointBatch) -> None:
        """Write the whole batch and its checkpoint LSN in one synced transaction, or nothing."""
        assert batch.checkpoint_lsn >= self._checkpoint_lsn, (
            f"checkpoint LSN would go backwards: {self._checkpoint_lsn} -> {batch.checkpoint_lsn}"
        )
        assert not (batch.meta.keys() & _META_RESERVED), "batch.meta names a key the store owns"
        self._write(lambda txn: self._apply_in(txn, batch))
        self._checkpoint_lsn = batch.checkpoint_lsn

    def _apply_in(self, txn: Any, batch: CheckpointBatch) -> None:
        docs, seqs, prepares, meta = self._docs, self._seqs, self._prepares, self._meta
        seq_keys_new: set[bytes] = set()
        for skey, record in batch.docs.items():
            assert len(skey) > _STORE_KEY_PREFIX_SIZE and len(record) >= HEADER_SIZE, skey
            vb = skey[:2]
            seq_key_new = vb + _U64.pack(seqno_of(record))
            assert seq_key_new not in seq_keys_new, f"two docs of one batch share seqno: {skey!r}"
            seq_keys_new.add(seq_key_new)
            old = txn.get(skey, db=docs)
            if old is not None:
                old_seq_key = vb + _U64.pack(seqno_of(old))
                # Delete only if the entry still names this key: after a rollback, another
                # key of this very batch may already have taken that seqno.
                if txn.get(old_seq_key, db=seqs) == skey:
                    txn.delete(old_seq_key, db=seqs)
            txn.put(skey, record, db=docs)
            txn.put(seq_key_new, skey, db=seqs)
        for skey in batch.prepares_delete:
            txn.delete(skey, db=prepares)
        for skey, record in batch.prepares_put.items():
            txn.put(skey, record, db=prepares)
        for name, value in batch.meta.items():
            txn.put(name, value, db=meta)
        txn.put(META_CHECKPOINT_LSN, _U64.pack(batch.checkpoint_lsn), db=meta)

    def delete_vbucket(self, vbucket: int) -> None:
        """Drop every doc, seqs entry and prepare of `vbucket` in one transaction."""
        prefix = _U16.pack(vbucket)

        def drop(txn: Any) -> None:
            for db in (self._docs, self._seqs, self._prepares):
                cursor = txn.cursor(db=db)
                if cursor.set_range(prefix):
                    while cursor.key().startswith(prefix):
                        cursor.delete()  # moves to the next record

        self._write(drop)

    def delete_collection(self, collection_id: int) -> int:
        """Drop the docs (and prepares) of a dropped collection in every vbucket; return the doc count."""
        collection = _U32.pack(collection_id)

        def drop(txn: Any) -> int:
            count = 0
            for db in (self._docs, self._prepares):
                cursor = txn.cursor(db=db)
                positioned = cursor.first()
                while positioned:
                    vb = cursor.key()[:2]
                    prefix = vb + collection
                    if cursor.set_range(prefix):
                        while cursor.key().startswith(prefix):
                            if db is self._docs:
                                seq_key = vb + _U64.pack(seqno_of(cursor.value()))
                                if txn.get(seq_key, db=self._seqs) == cursor.key():
                                    txn.delete(seq_key, db=self._seqs)
                                count += 1
                            cursor.delete()
                    # Jump to the next vbucket present instead of walking this one's keys.
                    next_vb = _U16.unpack(vb)[0] + 1
                    positioned = next_vb <= 0xFFFF and cursor.set_range(_U16.pack(next_vb))
            return count

        return self._write(drop)

    def _write(self, body: Callable[[Any], _T]) -> _T:
        """Run `body` in one write transaction; on MapFullError grow the map and rerun it whole."""
        with self._write_lock:
            while True:
                try:
                    with self._begin(write=True) as txn:
                        result = body(txn)
                    return result
                except lmdb.MapFullError:
                    self._grow_map()  # the transaction was aborted: nothing of it is applied
                except lmdb.Error as exc:
                    raise StoreError(f"{self.path}: write transaction failed: {exc}") from exc

    def _grow_map(self) -> None:
        map_size = self._env.info()["map_size"]
        if map_size >= self._map_size_max:
            raise StoreError(f"{self.path}: LMDB map is full at its maximum of {self._map_size_max} bytes")
        map_size_new = min(map_size * 2, self._map_size_max)
        with self._gate.resizing(limits.LMDB_RESIZE_READERS_WAIT_S):
            try:
                self._env.set_mapsize(map_size_new)
            except lmdb.Error as exc:
                raise StoreError(f"{self.path}: cannot grow the LMDB map to {map_size_new} bytes: {exc}") from exc

    # -- housekeeping -------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Map size, pages used, reader slots and entries per database, for observability."""
        with self._snapshot() as txn:
            info = self._env.info()
            page_size_bytes = self._env.stat()["psize"]
            dbs = {"meta": self._meta, "docs": self._docs, "seqs": self._seqs, "prepares": self._prepares}
            entries = {name: txn.stat(db)["entries"] for name, db in dbs.items()}
        return {
            "map_size_bytes": info["map_size"],
            "map_size_max_bytes": self._map_size_max,
            "page_size_bytes": page_size_bytes,
            "pages_used": info["last_pgno"] + 1,
            "used_bytes": (info["last_pgno"] + 1) * page_size_bytes,
            "readers_open": info["num_readers"],
            "readers_max": info["max_readers"],
            "checkpoint_lsn": self._checkpoint_lsn,
            "entries": entries,
        }

    def close(self) -> None:
        """Close the environment (idempotent). Open iterators are invalidated."""
        with self._write_lock:
            env, self._env = self._env, None
            if env is not None:
                env.close()
            release_dir(self._dir_id)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointStore({self.path!r}, checkpoint_lsn={self._checkpoint_lsn})"

"""The engine's `Store`, simulated: CheckpointStore's semantics over dicts.

Owns one node's checkpoint as of its last apply. LMDB commits with `sync=True` and
`metasync=True`, so an apply is durable when it returns and atomic: the simulation applies a
batch at one simulated instant (the checkpointer spends the commit's latency before calling
`apply`), and a crash before that instant leaves the previous checkpoint whole. Nothing here
is lost to a process crash or a power cut, which is why the store has no crash method.

Same rules as engine/store.py: the checkpoint LSN never goes backwards; a batch's docs are
put, then its prepare deletes, prepare puts and metadata; the engine may not write the
store's own metadata keys. Iterators return keys in byte order, as LMDB cursors do.

Must never: be ahead of the log (the caller asserts the WAL is persisted up to the batch's
checkpoint LSN before applying it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from durakv.engine.bucket import CheckpointBatch
from durakv.engine.document import decode_document, seqno_of, split_store_key
from durakv.engine.store import BackfillSnapshot
from durakv.engine.vbucket import decode_prepare_value, state_meta_key, stored_seqnos

_META_RESERVED = frozenset({b"format_version", b"checkpoint_lsn"})  # engine/store.py's own keys
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class SimStore:
    """A checkpoint store held in dicts; see the module docstring."""

    def __init__(self) -> None:
        self.docs: dict[bytes, bytes] = {}  # store key -> encoded Document (tombstones too)
        self.prepares: dict[bytes, bytes] = {}  # store key -> prepare record
        self.meta: dict[bytes, bytes] = {}
        self.checkpoint_lsn = 0
        self.apply_count = 0

    # -- reads (the engine's Store protocol) --------------------------------------------
    def get(self, skey: bytes) -> bytes | None:
        return self.docs.get(skey)

    def get_meta(self, name: bytes) -> bytes | None:
        return self.meta.get(name)

    def iter_prepares(self) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted(self.prepares.items())

    def iter_docs(self, vbucket: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        prefix = b"" if vbucket is None else _U16.pack(vbucket)
        yield from sorted((k, v) for k, v in self.docs.items() if k.startswith(prefix))

    def iter_by_seqno(self, vbucket: int, start_seqno: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        """(seqno, store key, encoded doc) for seqno >= start_seqno, ascending (backfill's read)."""
        prefix = _U16.pack(vbucket)
        found = [(seqno_of(v), k, v) for k, v in self.docs.items() if k.startswith(prefix)]
        yield from sorted(item for item in found if item[0] >= start_seqno)

    def backfill_read(self, vbucket: int, from_seqno: int) -> BackfillSnapshot:
        """engine/store.py `backfill_read`: the vbucket's checkpointed seqnos, its documents
        (tombstones too) and pending prepares with seqno >= from_seqno, by seqno, at one instant."""
        seqnos = stored_seqnos(self.meta.get(state_meta_key(vbucket)))
        documents = []
        for seqno, skey, raw in self.iter_by_seqno(vbucket, from_seqno):
            _, cid, key = split_store_key(skey)
            documents.append((seqno, cid, key, decode_document(raw)))
        prepares = []
        prefix = _U16.pack(vbucket)
        for skey, value in sorted(self.prepares.items()):
            if skey.startswith(prefix):
                level, doc = decode_prepare_value(value)
                if doc.seqno >= from_seqno:
                    _, cid, key = split_store_key(skey)
                    prepares.append((doc.seqno, cid, key, level, doc))
        prepares.sort(key=lambda p: p[0])
        return BackfillSnapshot(
            seqnos.high_seqno, seqnos.high_completed_seqno, seqnos.high_prepared_seqno, seqnos.purge_seqno,
            documents, prepares,
        )  # fmt: skip

    # -- writes (the checkpointer) ------------------------------------------------------
    def apply(self, batch: CheckpointBatch) -> None:
        """Write the whole batch and its checkpoint LSN at once (one synced LMDB transaction)."""
        assert batch.checkpoint_lsn >= self.checkpoint_lsn, (
            f"checkpoint LSN would go backwards: {self.checkpoint_lsn} -> {batch.checkpoint_lsn}"
        )
        assert not (batch.meta.keys() & _META_RESERVED), "batch.meta names a key the store owns"
        seqnos: dict[tuple[bytes, int], bytes] = {}
        for skey, record in batch.docs.items():
            place = (skey[:2], seqno_of(record))
            assert place not in seqnos, f"two docs of one batch share a seqno: {skey!r}, {seqnos.get(place)!r}"
            seqnos[place] = skey
        self.docs.update(batch.docs)
        for skey in sorted(batch.prepares_delete):
            self.prepares.pop(skey, None)
        self.prepares.update(batch.prepares_put)
        self.meta.update(batch.meta)
        self.checkpoint_lsn = batch.checkpoint_lsn
        self.apply_count += 1

    def delete_collection(self, collection_id: int) -> int:
        """Drop a dropped collection's docs and prepares; returns the doc count."""
        cid = _U32.pack(collection_id)
        doomed = [k for k in self.docs if k[2:6] == cid]
        for skey in doomed:
            del self.docs[skey]
        for skey in [k for k in self.prepares if k[2:6] == cid]:
            del self.prepares[skey]
        return len(doomed)

    def delete_vbucket(self, vbucket: int) -> None:
        prefix = _U16.pack(vbucket)
        for table in (self.docs, self.prepares):
            for skey in [k for k in table if k.startswith(prefix)]:
                del table[skey]

"""Applying replica snapshots: how a replica vbucket logs and takes in its active's changes.

`apply_snapshot` logs a complete snapshot's items with their own seqnos and a SNAPSHOT_END
record in one `append_many` (all or nothing), then applies them as recovery replays records:
prepares kept beside the committed value and marked maybe-visible, commits taking the
prepare's document at the commit seqno, aborts dropping it. Recovery replays a replica
vbucket only up to its last SNAPSHOT_END: a snapshot torn by a crash is dropped whole.

`SnapshotApplyMixin` is part of `ReplicationMixin` (engine/replica.py) and so of
`BucketCore`, with its rules: a record is logged before its change is visible, no I/O but
the WAL and store it was given. `_apply_record` is the redo of one logged change, shared by
snapshots, recovery and rollback; it never logs anything itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from . import records
from .document import Document, store_key
from .durability import Level
from .errors import EngineError, KVError, Status, WalFailedError
from .records import ITEM_KINDS, KINDS, Kind, Record, SnapshotEnd
from .vbucket import PendingPrepare, VBucket, encode_prepare_value


class ReplicaItem(NamedTuple):
    """One change of a replica snapshot, as the engine logs it (a records.Record fits too)."""

    kind: Kind  # MUTATION, DELETION, EXPIRATION, PREPARE, COMMIT or ABORT
    collection_id: int
    key: bytes
    document: Document | None  # the state after the change; None for COMMIT and ABORT
    level: int  # PREPARE
    prepare_seqno: int  # COMMIT, ABORT
    seqno: int  # the item's own seqno, as its active gave it


class EncodedSnapshot(NamedTuple):
    """A snapshot's records and their WAL payloads: made from its items alone (no engine state),
    so a shell can make it before it takes the bucket lock (a large backfill holds it less)."""

    vbid: int
    records: list[Record]
    payloads: list[tuple[Kind, bytes]]


def encode_snapshot(vbid: int, items: Sequence[ReplicaItem | Record]) -> EncodedSnapshot:
    recs = [
        Record(KINDS[i.kind], vbid, i.collection_id, i.key, i.document, i.level, i.prepare_seqno, i.seqno)
        for i in items
    ]
    return EncodedSnapshot(vbid, recs, [(r.kind, _payload(vbid, r)) for r in recs])


class SnapshotRejectedError(EngineError):
    """A snapshot contradicts what the vbucket holds (a seqno out of order, a completion
    without its prepare). Nothing was written; the stream must be dropped and re-requested."""


def _payload(vbid: int, record: Record) -> bytes:
    doc = record.document
    if record.kind is Kind.PREPARE:
        assert doc is not None
        return records.encode_prepare(vbid, record.collection_id, record.key, record.level, doc.encode())
    if record.kind in (Kind.COMMIT, Kind.ABORT):
        return records.encode_completion(vbid, record.collection_id, record.key, record.prepare_seqno, record.seqno)
    assert doc is not None
    return records.encode_document_record(vbid, record.collection_id, record.key, doc.encode())


class SnapshotApplyMixin:
    """Applying snapshots and redoing logged changes, for BucketCore (see the module docstring)."""

    # -- applying snapshots (replica side) -----------------------------------------------------
    def apply_snapshot(
        self,
        vbid: int,
        snapshot_start: int,
        snapshot_end: int,
        disk: bool,
        items: Sequence[ReplicaItem | Record] | EncodedSnapshot,
        resolved_prepares: Iterable[tuple[int, bytes]] = (),
        high_completed_seqno: int = 0,
    ) -> None:
        """Log and apply one complete snapshot (its items, or `encode_snapshot` of them);
        `resolved_prepares` (prepare seqno, store key) are dropped after the items (a
        backfill deduplicated their commit or abort)."""
        vb = self._receiving(vbid)
        assert snapshot_start <= snapshot_end and snapshot_end > vb.high_seqno, (snapshot_start, snapshot_end, vb)
        encoded = items if isinstance(items, EncodedSnapshot) else encode_snapshot(vbid, items)
        assert encoded.vbid == vbid, (encoded.vbid, vbid)
        recs = encoded.records
        self._check_snapshot(vb, recs, snapshot_end, disk)
        end = SnapshotEnd(snapshot_start, snapshot_end, disk, high_completed_seqno, tuple(resolved_prepares))
        batch = [*encoded.payloads, (Kind.SNAPSHOT_END, records.encode_snapshot_end(vbid, end))]
        try:
            lsn = self.log.append_many(batch)
        except WalFailedError as exc:
            raise KVError(Status.TMPFAIL, f"the write-ahead log is not accepting writes: {exc}") from exc
        self._unpersisted.append((lsn, vbid, snapshot_end))  # persisted only whole
        if disk or any(r.kind is Kind.PREPARE and r.level == Level.PERSIST_TO_MAJORITY for r in recs):
            self.log.request_sync(lsn)  # the replica's HPS waits for this fsync
        for record in recs:
            self._apply_record(vb, record, maybe_visible=True)
        self._apply_snapshot_end(vb, end)
        self._changed(vbid)

    def _check_snapshot(self, vb: VBucket, recs: list[Record], end: int, disk: bool) -> None:
        last = vb.high_seqno
        pending = {skey: p.document.seqno for skey, p in vb.prepares.items()}
        for r in recs:
            why = None
            skey = store_key(vb.vbid, r.collection_id, r.key)
            if r.kind not in ITEM_KINDS or not last < r.seqno <= end:
                why = f"item {r.kind.name} at seqno {r.seqno} after {last}, snapshot end {end}"
            elif r.kind in (Kind.COMMIT, Kind.ABORT):
                if pending.pop(skey, None) != r.prepare_seqno:
                    why = f"{r.kind.name} at {r.seqno} completes no pending prepare at {r.prepare_seqno}"
            elif r.document is None or r.document.seqno != r.seqno:
                why = f"{r.kind.name} at {r.seqno} without a document of that seqno"
            elif r.kind is Kind.PREPARE:
                if skey in pending and not disk:
                    why = f"prepare at {r.seqno} over the pending prepare at {pending[skey]}"
                pending[skey] = r.seqno
            if why is not None:
                raise SnapshotRejectedError(f"vbucket {vb.vbid}: {why}")
            last = r.seqno

    def _apply_record(self, vb: VBucket, record: Record, *, maybe_visible: bool) -> None:
        """Apply one logged change (recovery, rollback, a replica snapshot): the redo of a record."""
        skey = store_key(vb.vbid, record.collection_id, record.key)
        kind = record.kind
        if record.document is not None:
            vb.hlc.observe(record.document.cas)
        if kind is Kind.PREPARE:
            prepare = PendingPrepare(
                skey, record.collection_id, record.key, record.document, record.level, maybe_visible
            )
            vb.prepares[skey] = prepare
            self._prepares_dirty[skey] = encode_prepare_value(prepare)
            vb.note_prepare(record.seqno)
        elif kind is Kind.COMMIT or kind is Kind.ABORT:
            prepare = vb.prepares.pop(skey, None)
            self._prepares_dirty[skey] = None
            vb.high_completed_seqno = max(vb.high_completed_seqno, record.prepare_seqno)
            if kind is Kind.COMMIT:
                if prepare is None or prepare.document.seqno != record.prepare_seqno:
                    raise EngineError(f"commit of seqno {record.prepare_seqno} in vbucket {vb.vbid} has no prepare")
                self.memtable.put(skey, prepare.document._replace(seqno=record.seqno))
        else:
            self.memtable.put(skey, record.document)
        if record.seqno > vb.high_seqno:
            vb.high_seqno = record.seqno
        self.feeds[vb.vbid]._add(record)

    def _apply_snapshot_end(self, vb: VBucket, end: SnapshotEnd) -> None:
        for seqno, skey in end.resolved:
            prepare = vb.prepares.get(skey)
            if prepare is not None and prepare.document.seqno == seqno:
                del vb.prepares[skey]
                self._prepares_dirty[skey] = None
            vb.high_completed_seqno = max(vb.high_completed_seqno, seqno)
        vb.high_completed_seqno = max(vb.high_completed_seqno, min(end.high_completed_seqno, end.end))
        vb.high_seqno = max(vb.high_seqno, end.end)
        vb.snapshot_start, vb.snapshot_end = end.start, end.end
        if end.disk:
            self.feeds[vb.vbid]._reset(end.end + 1)  # deduplicated: never replayed as memory

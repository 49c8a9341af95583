"""Replication inside one node's engine: the change feed, replica snapshots, acks, rollback, promotion.

`ReplicationMixin` is part of `BucketCore` (engine/bucket.py): the same single-threaded core,
the same rule that a record is logged before its change is visible, `now` as a parameter, no
I/O but the WAL and store it was given. It never imports the replication package: the shell
converts the stream cores' items to `ReplicaItem`s and their states from `VBucketReplicaState`.

Active side. Every record of a vbucket also goes into its `VBucketFeed`, which the shell's
producers replay (`records_since`); `BucketCore.on_change(vbid)` is called, under the bucket
lock, after each append so the shell can wake them. A feed keeps at most FEED_RECORDS_MAX
records and FEED_BYTES_MAX bytes (less with many vbuckets: the bucket's feeds together stay
within FEED_BUCKET_RECORDS_MAX and FEED_BUCKET_BYTES_MAX), but never lets go of a record the
store has not checkpointed (the memtable-size checkpoint bounds those): the shell backfills from the store
only below `memory_start`, and `memory_start <= checkpointed_seqno + 1` whenever `streamable`.
Records of a disk snapshot a replica applied are deduplicated, so they are never replayed as
memory: the feed restarts after them and is not `streamable` until a checkpoint covers them.
`replica_ack` hands a replica's HPS to the durability monitor and writes what it commits.

Replica side. `apply_snapshot` logs a complete snapshot's items with their own seqnos and a
SNAPSHOT_END record in one `append_many` (all or nothing), then applies them as recovery
replays records: prepares kept beside the committed value and marked maybe-visible, commits
taking the prepare's document at the commit seqno, aborts dropping it. Recovery replays a
replica vbucket only up to its last SNAPSHOT_END: a snapshot torn by a crash is dropped whole.

Rollback (`rollback(vbid, seqno)`), first matching row wins; ROLLBACK_ROWS, tested row by row:

| row | when | outcome |
|---|---|---|
| NOT_A_REPLICA | the vbucket is active or dead | KVError NOT_MY_VBUCKET, nothing changes |
| ASKED_ZERO | seqno == 0 (even when nothing is held: the failover log goes too) | to zero |
| NOTHING_TO_UNDO | seqno >= high seqno | nothing changes; reached = high seqno |
| CHECKPOINT_IN_FLIGHT | a checkpoint is frozen and not yet applied (its contents are unknown to LMDB yet) | to zero |
| STORE_AHEAD | the store holds this vbucket above seqno (LMDB cannot be undone) | to zero |
| WAL_RELEASED | the WAL no longer holds every record after the store's checkpoint | to zero |
| EXACT | otherwise: store + the vbucket's WAL records, replayed up to the last consistent point <= seqno | exact |

Consistent points: the store's own point, every record of an active, every seqno of a memory
snapshot (it holds every change in order), and the end of a disk snapshot (deduplicated: it
is never cut). So EXACT reaches seqno itself unless seqno falls inside a disk snapshot, where
it stops at the point before that snapshot. "To zero" drops the vbucket's memtable entries and
prepares, resets its seqnos and failover log, hides its store contents at once and deletes them
at the next checkpoint (`CheckpointBatch.vbuckets_delete`: the shell deletes before it
applies). Both write a ROLLBACK record first, so recovery does the same again.

Promotion (`set_topology` to ACTIVE) seeds the active durability monitor with the replica's
outstanding prepares (no timeout), its HPS and HCS; reads of those keys answer
SYNC_WRITE_RECOMMIT_IN_PROGRESS until they commit. After an unclean restart only active
vbuckets start a failover-log entry: a replica's uuid must stay its active's.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from . import records
from .document import Document, split_store_key, store_key
from .durability import Level, Prepare
from .errors import EngineError, KVError, Status, WalFailedError
from .keys import check_key, vbucket_of
from .limits import FAILOVER_LOG_ENTRIES_MAX
from .manifest import Manifest
from .records import ITEM_KINDS, KINDS, Kind, Record, SnapshotEnd
from .vbucket import (
    PendingPrepare,
    VBState,
    VBucket,
    decode_prepare_value,
    encode_prepare_value,
    state_meta_key,
    stored_seqnos,
)

FEED_RECORDS_MAX = 10_000  # records a vbucket's feed holds once the store has them
FEED_BYTES_MAX = 4 * 1024 * 1024  # ... and bytes (key + value + _RECORD_OVERHEAD each)
FEED_BUCKET_RECORDS_MAX = 640_000  # the same for all of a bucket's feeds together
FEED_BUCKET_BYTES_MAX = 256 * 1024 * 1024
_RECORD_OVERHEAD = 64
_RECEIVING = (VBState.REPLICA, VBState.PENDING)  # states that take snapshots and roll back


class ReplicaItem(NamedTuple):
    """One change of a replica snapshot, as the engine logs it (a records.Record fits too)."""

    kind: Kind  # MUTATION, DELETION, EXPIRATION, PREPARE, COMMIT or ABORT
    collection_id: int
    key: bytes
    document: Document | None  # the state after the change; None for COMMIT and ABORT
    level: int  # PREPARE
    prepare_seqno: int  # COMMIT, ABORT
    seqno: int  # the item's own seqno, as its active gave it


class VBucketReplicaState(NamedTuple):
    """What a replica vbucket holds, field for field the stream consumer's ReplicaState."""

    failover_log: tuple[tuple[int, int], ...]
    snapshot_start: int
    high_seqno: int  # the end of the last complete snapshot
    high_prepared_seqno: int
    high_completed_seqno: int
    prepares: tuple[Prepare, ...]  # outstanding, key = store key, seqno order
    persisted_seqno: int


class RollbackRow(Enum):
    NOT_A_REPLICA = "not_a_replica"
    ASKED_ZERO = "asked_zero"
    NOTHING_TO_UNDO = "nothing_to_undo"
    CHECKPOINT_IN_FLIGHT = "checkpoint_in_flight"
    STORE_AHEAD = "store_ahead"
    WAL_RELEASED = "wal_released"
    EXACT = "exact"


ROLLBACK_ROWS = tuple(RollbackRow)


class RollbackResult(NamedTuple):
    high_seqno: int  # the seqno reached (<= the one asked), a consistent point
    prepares: tuple[Prepare, ...]  # outstanding after the rollback, key = store key
    high_completed_seqno: int
    row: RollbackRow
    to_zero: bool = False


class SnapshotRejectedError(EngineError):
    """A snapshot contradicts what the vbucket holds (a seqno out of order, a completion
    without its prepare). Nothing was written; the stream must be dropped and re-requested."""


class FeedTrimmedError(EngineError):
    """Records asked of a feed fell out of its window: the stream must backfill again."""

    def __init__(self, vbucket: int, from_seqno: int, memory_start: int) -> None:
        super().__init__(f"vbucket {vbucket}: records from {from_seqno} asked, the feed starts at {memory_start}")
        self.vbucket = vbucket
        self.from_seqno = from_seqno
        self.memory_start = memory_start


def _size(record: Record) -> int:
    doc = record.document
    return len(record.key) + (len(doc.value) if doc is not None else 0) + _RECORD_OVERHEAD


def _seqno(record: Record) -> int:
    return record.seqno


class VBucketFeed:
    """One vbucket's recent records, oldest first, for the active's streams to replay.

    Every record with seqno >= `memory_start` is held (a replica's disk snapshots aside, see
    the module docstring); `checkpointed_seqno` is the vbucket's high seqno in the store as
    of the last applied checkpoint. Read and changed only under the bucket lock."""

    __slots__ = ("_bytes", "_bytes_max", "_head", "_records", "_records_max", "checkpointed_seqno", "memory_start",
                 "vbucket")  # fmt: skip

    def __init__(self, vbucket: int, *, records_max: int = FEED_RECORDS_MAX, bytes_max: int = FEED_BYTES_MAX) -> None:
        self.vbucket = vbucket
        self._records_max = records_max
        self._bytes_max = bytes_max
        self._records: list[Record] = []
        self._head = 0
        self._bytes = 0
        self.memory_start = 1
        self.checkpointed_seqno = 0

    @property
    def streamable(self) -> bool:
        """A backfill from the store reaches the memory window (else: refuse streams for now)."""
        return self.memory_start <= self.checkpointed_seqno + 1

    def records_since(self, from_seqno: int) -> list[Record]:
        """The records with seqno >= from_seqno, in order. FeedTrimmedError when from_seqno is
        below `memory_start` (they are only in the store now)."""
        if from_seqno < self.memory_start:
            raise FeedTrimmedError(self.vbucket, from_seqno, self.memory_start)
        start = bisect.bisect_left(self._records, from_seqno, lo=self._head, key=_seqno)
        return self._records[start:]

    def __len__(self) -> int:
        return len(self._records) - self._head

    def _add(self, record: Record) -> None:
        self._records.append(record)
        self._bytes += _size(record)
        if len(self._records) - self._head > self._records_max or self._bytes > self._bytes_max:
            self._trim()

    def _trim(self) -> None:
        held = self._records
        while len(held) - self._head > self._records_max or self._bytes > self._bytes_max:
            oldest = held[self._head]
            if oldest.seqno > self.checkpointed_seqno:
                break  # only the store could serve it: it stays
            self._bytes -= _size(oldest)
            self._head += 1
            self.memory_start = oldest.seqno + 1
        if self._head > 1024 and self._head * 2 > len(held):
            del held[: self._head]
            self._head = 0

    def _reset(self, memory_start: int) -> None:
        self._records = []
        self._head = 0
        self._bytes = 0
        self.memory_start = memory_start


class _MaskedStore:
    """The checkpoint store with some vbuckets hidden: what it holds of them is stale (rolled
    back to zero) until a checkpoint deletes it. Stands in for the store only while needed."""

    def __init__(self, store: Any, hidden: set[int]) -> None:
        self._store = store
        self._hidden = hidden

    def get(self, skey: bytes) -> bytes | None:
        return None if int.from_bytes(skey[:2], "big") in self._hidden else self._store.get(skey)

    def iter_prepares(self):
        return ((k, v) for k, v in self._store.iter_prepares() if int.from_bytes(k[:2], "big") not in self._hidden)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@dataclass
class _Unit:
    """A run of one vbucket's records that is consistent at its end: an active's record, or a snapshot."""

    start: int
    end: int
    records: list[Record]
    cuttable: bool  # every seqno inside is a consistent point (not a disk snapshot)
    snapshot: SnapshotEnd | None = None


@dataclass
class _Plan:
    reached: int
    base_dropped: bool  # the store's contents of the vbucket do not count (rolled back to zero)
    units: list[_Unit] = field(default_factory=list)


def _cut(units: list[_Unit], seqno: int, base: int) -> tuple[list[_Unit], int]:
    """The units up to the last consistent point <= seqno, and that point."""
    kept: list[_Unit] = []
    for unit in units:
        if unit.end <= seqno:
            kept.append(unit)
            continue
        if unit.cuttable and unit.records and unit.records[0].seqno <= seqno:
            kept.append(_Unit(unit.start, seqno, [r for r in unit.records if r.seqno <= seqno], True))
        break
    return kept, kept[-1].end if kept else base


def _payload(vbid: int, record: Record) -> bytes:
    doc = record.document
    if record.kind is Kind.PREPARE:
        assert doc is not None
        return records.encode_prepare(vbid, record.collection_id, record.key, record.level, doc.encode())
    if record.kind in (Kind.COMMIT, Kind.ABORT):
        return records.encode_completion(vbid, record.collection_id, record.key, record.prepare_seqno, record.seqno)
    assert doc is not None
    return records.encode_document_record(vbid, record.collection_id, record.key, doc.encode())


class ReplicationMixin:
    """The replication half of BucketCore (see the module docstring). Uses BucketCore's state."""

    # -- set up by BucketCore.__init__ ----------------------------------------------------
    def _init_replication(self, store: Any) -> None:
        count = self.config.num_vbuckets
        self.on_change: Callable[[int], None] | None = None
        self.on_replica_persisted: Callable[[int, int], None] | None = None
        records_max = max(1, min(FEED_RECORDS_MAX, FEED_BUCKET_RECORDS_MAX // count))
        bytes_max = max(1, min(FEED_BYTES_MAX, FEED_BUCKET_BYTES_MAX // count))
        self.feeds = [VBucketFeed(vbid, records_max=records_max, bytes_max=bytes_max) for vbid in range(count)]
        self._positions: list[dict[str, tuple[int, int, int]]] = [{} for _ in range(count)]
        self._store_real = store
        self._store_dropped: set[int] = set()  # vbuckets whose store contents are stale
        self._delete_pending: set[int] = set()  # ... to delete at the next checkpoint
        self._delete_frozen: frozenset[int] = frozenset()  # ... deleted by the one in flight
        self._frozen_seqnos: list[int] | None = None  # each vbucket's high seqno in the frozen batch
        self._recovery_partial: dict[int, list[Record]] = {}

    # -- the change feed --------------------------------------------------------------------
    def feed(self, vbid: int) -> VBucketFeed:
        return self.feeds[vbid]

    def _fed(self, vbid: int, record: Record) -> None:
        self.feeds[vbid]._add(record)
        if self.on_change is not None:
            self.on_change(vbid)

    def _changed(self, vbid: int) -> None:
        if self.on_change is not None:
            self.on_change(vbid)

    # -- replica acks (active side) ---------------------------------------------------------
    def replica_ack(self, vbid: int, node_id: str, hps: int, received_seqno: int = 0, persisted_seqno: int = 0) -> None:
        """A replica's SeqnoAck: recorded, and on an active vbucket handed to its monitor (which
        may commit SyncWrites; their waiters are answered now)."""
        self._positions[vbid][node_id] = (received_seqno, persisted_seqno, hps)
        vb = self.vbuckets[vbid]
        if vb.state is VBState.ACTIVE:
            self.monitors[vbid].seqno_ack(node_id, hps)
            self._drain(vb)

    def replica_positions(self, vbid: int) -> dict[str, tuple[int, int, int]]:
        """node -> (received, persisted, HPS) as each replica last acked."""
        return dict(self._positions[vbid])

    def observe_seqno(self, vbid: int) -> tuple[int, int, int]:
        """(uuid, high seqno, persisted seqno) of this node's copy, for observe-based durability."""
        vb = self.vbuckets[vbid]
        if vb.state is VBState.DEAD:
            raise KVError(Status.NOT_MY_VBUCKET, f"this node holds no copy of vbucket {vbid}")
        return vb.uuid, vb.high_seqno, vb.persisted_seqno

    def get_replica(self, scope: str, collection: str, key: bytes, now: float):
        """The committed, live version in this node's copy (active or replica); pending prepares
        are ignored, maybe-visible or not. Writes nothing (expiry is the active's to decide)."""
        from .kv import ReadOutcome  # kv builds on this module

        cid = self.manifest.collection_id(scope, collection)
        check_key(key, cid)
        vbid = vbucket_of(key, self.config.num_vbuckets)
        if self.vbuckets[vbid].state not in (VBState.ACTIVE, VBState.REPLICA):
            raise KVError(Status.NOT_MY_VBUCKET, f"this node holds no copy of vbucket {vbid}", key=key)
        doc = self.committed(store_key(vbid, cid, key))
        if doc is None or doc.deleted or (doc.expiry and doc.expiry <= now):
            raise KVError(Status.KEY_ENOENT, "document not found", key=key)
        return ReadOutcome(doc.value, doc.flags, doc.cas, doc.expiry, vbid)

    # -- replica state --------------------------------------------------------------------
    def _receiving(self, vbid: int) -> VBucket:
        vb = self.vbuckets[vbid]
        if vb.state not in _RECEIVING:
            raise KVError(Status.NOT_MY_VBUCKET, f"vbucket {vbid} is {vb.state.value}, not a replica here")
        return vb

    def replica_state(self, vbid: int) -> VBucketReplicaState:
        vb = self.vbuckets[vbid]
        high = vb.high_seqno
        prepares = sorted(vb.prepares.values(), key=lambda p: p.document.seqno)
        return VBucketReplicaState(
            tuple((u, s) for u, s in vb.failover_log),
            vb.snapshot_start if vb.snapshot_end == high else high,
            high,
            min(vb.high_prepared_seqno, high),
            vb.high_completed_seqno,
            tuple(Prepare(p.document.seqno, p.skey, Level(p.level)) for p in prepares),
            vb.persisted_seqno,
        )

    def set_failover_log(self, vbid: int, log: Iterable[tuple[int, int]]) -> None:
        """Adopt the active's failover log (logged as a VBUCKET_STATE record)."""
        vb = self._receiving(vbid)
        entries = [(int(u), int(s)) for u, s in log]
        assert len(entries) <= FAILOVER_LOG_ENTRIES_MAX and all(u for u, _ in entries), entries
        assert all(a[1] >= b[1] for a, b in itertools.pairwise(entries)), "a failover log is newest first"
        old, vb.failover_log = vb.failover_log, entries
        try:
            self._append(Kind.VBUCKET_STATE, records.encode_meta(vbid, vb.state_json()), vb, vb.high_seqno)
        except KVError:
            vb.failover_log = old
            raise
        self._changed(vbid)

    # -- applying snapshots (replica side) -----------------------------------------------------
    def apply_snapshot(
        self,
        vbid: int,
        snapshot_start: int,
        snapshot_end: int,
        disk: bool,
        items: Sequence[ReplicaItem | Record],
        resolved_prepares: Iterable[tuple[int, bytes]] = (),
        high_completed_seqno: int = 0,
    ) -> None:
        """Log and apply one complete snapshot; `resolved_prepares` (prepare seqno, store key)
        are dropped after the items (a backfill deduplicated their commit or abort)."""
        vb = self._receiving(vbid)
        assert snapshot_start <= snapshot_end and snapshot_end > vb.high_seqno, (snapshot_start, snapshot_end, vb)
        recs = [
            Record(KINDS[i.kind], vbid, i.collection_id, i.key, i.document, i.level, i.prepare_seqno, i.seqno)
            for i in items
        ]
        self._check_snapshot(vb, recs, snapshot_end, disk)
        end = SnapshotEnd(snapshot_start, snapshot_end, disk, high_completed_seqno, tuple(resolved_prepares))
        batch = [(r.kind, _payload(vbid, r)) for r in recs]
        batch.append((Kind.SNAPSHOT_END, records.encode_snapshot_end(vbid, end)))
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

    # -- rollback ---------------------------------------------------------------------------
    def rollback(self, vbid: int, seqno: int) -> RollbackResult:
        """Roll a replica vbucket back to at most `seqno` (the table in the module docstring)."""
        vb = self._receiving(vbid)
        row = self._rollback_row(vb, seqno)
        if row is RollbackRow.NOTHING_TO_UNDO:
            return self._rollback_result(vb, row)
        if row is not RollbackRow.EXACT:
            self._append(Kind.ROLLBACK, records.encode_rollback(vbid, 0, True), vb, 0)
            self._drop_vbucket(vb)
        else:
            plan = self._plan(vb, seqno, self.log.end_lsn)
            self._append(Kind.ROLLBACK, records.encode_rollback(vbid, plan.reached, False), vb, plan.reached)
            self._rebuild(vb, plan)
        reached = vb.high_seqno
        # Positions logged before the rollback speak of seqnos that are gone above `reached`.
        self._unpersisted = deque((lsn, v, min(s, reached) if v == vbid else s) for lsn, v, s in self._unpersisted)
        self._changed(vbid)
        return self._rollback_result(vb, row)

    def _rollback_row(self, vb: VBucket, seqno: int) -> RollbackRow:
        if seqno == 0:
            return RollbackRow.ASKED_ZERO
        if seqno >= vb.high_seqno:
            return RollbackRow.NOTHING_TO_UNDO
        if self._frozen_seqnos is not None:
            return RollbackRow.CHECKPOINT_IN_FLIGHT
        if vb.vbid not in self._store_dropped and self.feeds[vb.vbid].checkpointed_seqno > seqno:
            return RollbackRow.STORE_AHEAD
        if self.log.first_lsn > self.store.checkpoint_lsn:
            return RollbackRow.WAL_RELEASED
        return RollbackRow.EXACT

    def _rollback_result(self, vb: VBucket, row: RollbackRow) -> RollbackResult:
        to_zero = row not in (RollbackRow.EXACT, RollbackRow.NOTHING_TO_UNDO)
        prepares = self.replica_state(vb.vbid).prepares
        return RollbackResult(vb.high_seqno, prepares, vb.high_completed_seqno, row, to_zero)

    def _plan(self, vb: VBucket, seqno: int, stop_lsn: int) -> _Plan:
        """Where an exact rollback to `seqno` lands, from the vbucket's WAL records after the
        store's checkpoint (below `stop_lsn`); reads, changes nothing."""
        vbid = vb.vbid
        dropped = vbid in self._store_dropped
        units: list[_Unit] = []
        items: list[Record] = []
        for wal_record in self.log.replay(self.store.checkpoint_lsn):
            if wal_record.lsn >= stop_lsn:
                break
            if wal_record.kind == Kind.MANIFEST or int.from_bytes(wal_record.payload[:2], "big") != vbid:
                continue
            record = records.decode(wal_record.kind, wal_record.payload)
            if record.kind in ITEM_KINDS:
                items.append(record)
                continue
            if record.kind is Kind.SNAPSHOT_END:
                end = records.decode_snapshot_end(record.body)
                units.append(_Unit(end.start, end.end, items, not end.disk, end))
            else:  # an active's records are each a consistent point
                units += [_Unit(r.seqno, r.seqno, [r], True) for r in items]
            items = []
            if record.kind is Kind.ROLLBACK:
                reached, to_zero = records.decode_rollback(record.body)
                if to_zero:
                    units, dropped = [], True
                else:
                    units, cut_at = _cut(units, reached, 0)
                    assert cut_at <= reached
        units += [_Unit(r.seqno, r.seqno, [r], True) for r in items]
        base = 0 if dropped else self.feeds[vbid].checkpointed_seqno
        kept, reached = _cut(units, seqno, base)
        return _Plan(reached, dropped, kept)

    def _rebuild(self, vb: VBucket, plan: _Plan) -> None:
        """Make the vbucket what the store and `plan.units` say (an exact rollback, or its redo)."""
        vbid = vb.vbid
        prefix = vbid.to_bytes(2, "big")
        old_keys = set(vb.prepares)
        self.memtable.drop(lambda skey: skey[:2] == prefix)
        vb.prepares = {}
        base = stored_seqnos(None)
        if not plan.base_dropped:
            for skey, value in self.store.iter_prepares():
                if skey[:2] == prefix:
                    _, cid, key = split_store_key(skey)
                    level, doc = decode_prepare_value(value)
                    vb.prepares[skey] = PendingPrepare(skey, cid, key, doc, level, True)
            base = stored_seqnos(self.store.get_meta(state_meta_key(vbid)))
        start = self.feeds[vbid].checkpointed_seqno if not plan.base_dropped else 0
        vb.high_seqno = vb.snapshot_start = vb.snapshot_end = start
        vb.high_completed_seqno = min(base.high_completed_seqno, start)
        vb.last_prepare_seqno = vb.high_prepared_seqno = min(base.high_prepared_seqno, start)
        vb.prepares_unpersisted.clear()
        vb.locks.clear()
        self._owed.pop(vbid, None)
        self.feeds[vbid]._reset(start + 1)
        for unit in plan.units:
            for record in unit.records:
                self._apply_record(vb, record, maybe_visible=True)
            if unit.snapshot is not None:
                self._apply_snapshot_end(vb, unit.snapshot)
        assert vb.high_seqno <= plan.reached
        vb.high_seqno = plan.reached
        vb.set_persisted(min(vb.persisted_seqno, plan.reached))
        vb.failover_log = [(u, s) for u, s in vb.failover_log if s <= plan.reached]
        for skey in old_keys - vb.prepares.keys():
            self._prepares_dirty[skey] = None
        for skey, prepare in vb.prepares.items():
            self._prepares_dirty[skey] = encode_prepare_value(prepare)

    def _drop_vbucket(self, vb: VBucket) -> None:
        """Forget the vbucket's copy (rollback to zero): memory now, the store at the next checkpoint."""
        vbid = vb.vbid
        prefix = vbid.to_bytes(2, "big")
        self.memtable.drop(lambda skey: skey[:2] == prefix)
        for pending in (self._prepares_dirty, self._prepares_frozen):
            for skey in [k for k in pending if k[:2] == prefix]:
                del pending[skey]
        vb.prepares.clear()
        vb.locks.clear()
        vb.high_seqno = vb.high_completed_seqno = vb.last_prepare_seqno = vb.high_prepared_seqno = 0
        vb.purge_seqno = vb.snapshot_start = vb.snapshot_end = 0
        vb.prepares_unpersisted.clear()
        vb.set_persisted(0)
        vb.failover_log = []
        self._owed.pop(vbid, None)
        feed = self.feeds[vbid]
        feed._reset(1)
        feed.checkpointed_seqno = 0
        if self._frozen_seqnos is not None:
            self._frozen_seqnos[vbid] = 0  # what the batch in flight holds of it is deleted next time
        self._store_dropped.add(vbid)
        self._delete_pending.add(vbid)
        self.store = _MaskedStore(self._store_real, self._store_dropped)

    # -- recovery ---------------------------------------------------------------------------
    def _recover_begin(self) -> None:
        """The store's state is loaded: each feed starts above what the store holds."""
        for vb, feed in zip(self.vbuckets, self.feeds, strict=True):
            feed.checkpointed_seqno = vb.high_seqno
            feed._reset(vb.high_seqno + 1)

    def _recover_record(self, wal_record: Any) -> None:
        """Replay one WAL record; a replica's items wait for their SNAPSHOT_END."""
        record = records.decode(wal_record.kind, wal_record.payload)
        kind = record.kind
        if kind is Kind.MANIFEST:
            self._adopt_manifest(Manifest.from_json(record.body))
            return
        vb = self.vbuckets[record.vbucket]
        if kind in ITEM_KINDS:
            if vb.state in _RECEIVING:
                self._recovery_partial.setdefault(vb.vbid, []).append(record)
            else:
                self._apply_record(vb, record, maybe_visible=False)
            return
        # A snapshot is appended whole, so only the end of the log can hold a partial one.
        partial = self._recovery_partial.pop(vb.vbid, [])
        if kind is Kind.SNAPSHOT_END:
            for item in partial:
                self._apply_record(vb, item, maybe_visible=True)
            self._apply_snapshot_end(vb, records.decode_snapshot_end(record.body))
        elif kind is Kind.ROLLBACK:
            reached, to_zero = records.decode_rollback(record.body)
            if to_zero:
                self._drop_vbucket(vb)
            else:
                plan = self._plan(vb, reached, wal_record.lsn)
                if plan.reached != reached:
                    raise EngineError(f"vbucket {vb.vbid}: the rollback to {reached} cannot be redone ({plan.reached})")
                self._rebuild(vb, plan)
        else:
            vb.load_state_json(record.body)

    def _recover_end(self) -> None:
        self._recovery_partial.clear()  # snapshots cut by the crash: never applied

    # -- checkpoints --------------------------------------------------------------------------
    def _freeze_replication(self) -> frozenset[int]:
        """A batch is being frozen: returns the vbuckets the shell deletes before applying it."""
        self._frozen_seqnos = [vb.high_seqno for vb in self.vbuckets]
        self._delete_frozen = frozenset(self._delete_pending)
        self._delete_pending = set()
        return self._delete_frozen

    def _checkpoint_applied(self) -> None:
        assert self._frozen_seqnos is not None
        for feed, seqno in zip(self.feeds, self._frozen_seqnos, strict=True):
            feed.checkpointed_seqno = seqno
            feed._trim()
        self._frozen_seqnos = None
        self._store_dropped -= self._delete_frozen - self._delete_pending
        self._delete_frozen = frozenset()
        if not self._store_dropped:
            self.store = self._store_real

    def _checkpoint_abandoned(self) -> None:
        self._frozen_seqnos = None
        self._delete_pending |= self._delete_frozen
        self._delete_frozen = frozenset()

"""Rollback of a replica vbucket: the decision table, and undoing to a consistent point.

`rollback(vbid, seqno)`, first matching row wins; ROLLBACK_ROWS, tested row by row:

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

`RollbackMixin` is part of `ReplicationMixin` (engine/replica.py) and so of `BucketCore`:
`_rollback_row` (the table) and `_plan` (where an exact rollback lands) only read;
`_rebuild` and `_drop_vbucket` change the vbucket, always after its ROLLBACK record is
logged (or while recovery replays that record).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from . import records
from .document import split_store_key
from .durability import Prepare
from .records import ITEM_KINDS, Kind, Record, SnapshotEnd
from .vbucket import (
    PendingPrepare,
    VBucket,
    decode_prepare_value,
    encode_prepare_value,
    state_meta_key,
    stored_seqnos,
)


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


class RollbackMixin:
    """Rolling replica vbuckets back, for BucketCore (see the module docstring)."""

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

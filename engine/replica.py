"""Replication inside one node's engine: the change feed, replica snapshots, acks, rollback, promotion.

`ReplicationMixin` is part of `BucketCore` (engine/bucket.py): the same single-threaded core,
the same rule that a record is logged before its change is visible, `now` as a parameter, no
I/O but the WAL and store it was given. It never imports the replication package: the shell
converts the stream cores' items to `ReplicaItem`s and their states from `VBucketReplicaState`.

This module owns the replication state of `BucketCore` (feeds, replica positions, the store
mask of rolled-back vbuckets), replica acks, observe, replica reads and state, recovery and
the checkpoint hand-offs. The rest is composed in, and every name is re-exported here:

- engine/feed.py: `VBucketFeed`, the change feed, and its limits (FEED_*_MAX).
- engine/snapshot_apply.py: `SnapshotApplyMixin`, `apply_snapshot` and the redo of a record.
- engine/replica_rollback.py: `RollbackMixin`, the rollback decision table (ROLLBACK_ROWS) and rollback.

Active side. Every record of a vbucket also goes into its `VBucketFeed`, which the shell's
producers replay (`records_since`); `BucketCore.on_change(vbid)` is called, under the bucket
lock, after each append so the shell can wake them. A feed's window is bounded, but never
lets go of a record the store has not checkpointed (engine/feed.py has the rules).
`replica_ack` hands a replica's HPS to the durability monitor and writes what it commits.

Replica side. `apply_snapshot` logs and applies one complete snapshot (engine/snapshot_apply.py);
recovery replays a replica vbucket only up to its last SNAPSHOT_END: a snapshot torn by a
crash is dropped whole. `rollback(vbid, seqno)` goes back to a consistent point at most
`seqno`, or to zero (engine/replica_rollback.py).

Promotion (`set_topology` to ACTIVE) seeds the active durability monitor with the replica's
outstanding prepares (no timeout), its HPS and HCS; reads of those keys answer
SYNC_WRITE_RECOMMIT_IN_PROGRESS until they commit. After an unclean restart only active
vbuckets start a failover-log entry: a replica's uuid must stay its active's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from . import records
from .document import store_key
from .durability import Level, Prepare
from .errors import EngineError, KVError, Status
from .feed import (  # the limits are read here, at bucket creation (tests patch them here)
    FEED_BUCKET_BYTES_MAX,
    FEED_BUCKET_RECORDS_MAX,
    FEED_BYTES_MAX,
    FEED_RECORDS_MAX,
    FeedTrimmedError,
    VBucketFeed,
)
from .keys import check_key, vbucket_of
from .limits import FAILOVER_LOG_ENTRIES_MAX
from .manifest import Manifest
from .records import ITEM_KINDS, Kind, Record
from .replica_rollback import ROLLBACK_ROWS, RollbackMixin, RollbackResult, RollbackRow
from .snapshot_apply import ReplicaItem, SnapshotApplyMixin, SnapshotRejectedError
from .vbucket import VBState, VBucket

__all__ = [
    "FEED_BUCKET_BYTES_MAX",
    "FEED_BUCKET_RECORDS_MAX",
    "FEED_BYTES_MAX",
    "FEED_RECORDS_MAX",
    "ROLLBACK_ROWS",
    "FeedTrimmedError",
    "Prepare",
    "ReplicaItem",
    "ReplicationMixin",
    "RollbackResult",
    "RollbackRow",
    "SnapshotRejectedError",
    "VBucketFeed",
    "VBucketReplicaState",
]

_RECEIVING = (VBState.REPLICA, VBState.PENDING)  # states that take snapshots and roll back


class VBucketReplicaState(NamedTuple):
    """What a replica vbucket holds, field for field the stream consumer's ReplicaState."""

    failover_log: tuple[tuple[int, int], ...]
    snapshot_start: int
    high_seqno: int  # the end of the last complete snapshot
    high_prepared_seqno: int
    high_completed_seqno: int
    prepares: tuple[Prepare, ...]  # outstanding, key = store key, seqno order
    persisted_seqno: int


class ReplicationMixin(SnapshotApplyMixin, RollbackMixin):
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

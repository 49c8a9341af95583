"""The storage half of one bucket's engine core: records, recovery, checkpoints, SyncWrite completion.

`BucketCore` owns the bucket's vbuckets, manifest and memtable, and writes every change
as a WAL record before applying it in memory (so a refused append changes nothing). It
never blocks and never reads a clock: `now` comes in, `Pending` handles go out, and the
shell feeds it WAL persistence (`on_persisted`) and time (`tick`). The log and store are
injected: the real WAL and LMDB store in the shells, simulated ones in tests/sim.

Replication (the change feed, replica snapshots, acks, rollback, promotion) is the
`ReplicationMixin` of engine/replica.py, part of this class.

Invariants: a record is appended before its change is visible; an active vbucket's records
take consecutive seqnos; the checkpoint never covers a WAL position that is not yet
persisted (the shell waits for that before applying a batch); SyncWrites complete in
seqno order, each exactly once.
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Protocol

from . import records
from .document import Document, decode_document, split_store_key
from .durability import ActiveDurabilityMonitor, Chain, Completion, Level, Outcome
from .errors import KVError, Status, WalFailedError
from .limits import NUM_REPLICAS_MAX, NUM_VBUCKETS_MAX
from .manifest import Manifest, check_bucket_name
from .memtable import Memtable
from .pending import Pending
from .records import Kind
from .replica import ReplicationMixin
from .vbucket import (
    PendingPrepare,
    VBState,
    VBucket,
    decode_prepare_value,
    encode_prepare_value,
    state_meta_key,
)


class Log(Protocol):
    end_lsn: int
    first_lsn: int  # the oldest record still held (an exact rollback reads from the checkpoint on)

    def append(self, kind: int, payload: bytes, *, lazy: bool = False) -> int: ...

    def append_many(self, records: list[tuple[int, bytes]]) -> int: ...  # all or nothing (a replica snapshot)

    def request_sync(self, lsn: int) -> None: ...

    def replay(self, from_lsn: int = 0): ...


class Store(Protocol):
    checkpoint_lsn: int

    def get(self, skey: bytes) -> bytes | None: ...

    def get_meta(self, name: bytes) -> bytes | None: ...

    def iter_prepares(self): ...


@dataclass
class BucketConfig:
    name: str
    num_vbuckets: int = 64
    num_replicas: int = 0
    durability_min_level: int = 0
    max_ttl_s: int = 0

    def __post_init__(self) -> None:
        check_bucket_name(self.name)
        for field_name, low, high in (
            ("num_vbuckets", 1, NUM_VBUCKETS_MAX),
            ("num_replicas", 0, NUM_REPLICAS_MAX),
            ("durability_min_level", 0, 3),
            ("max_ttl_s", 0, 2**31 - 1),
        ):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise KVError(Status.EINVAL, f"bucket {field_name} must be an integer in {low}..{high}, not {value!r}")
            setattr(self, field_name, int(value))  # an IntEnum (durability level) is stored as its number

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MutationOutcome(NamedTuple):
    cas: int
    seqno: int
    vbucket: int
    vbucket_uuid: int
    counter: int = 0


class CheckpointBatch(NamedTuple):
    docs: dict[bytes, bytes]
    prepares_put: dict[bytes, bytes]
    prepares_delete: set[bytes]
    meta: dict[bytes, bytes]
    checkpoint_lsn: int
    # Vbuckets rolled back to zero: the shell deletes them from the store (store.delete_vbucket)
    # after the WAL is persisted and before it applies this batch.
    vbuckets_delete: frozenset[int] = frozenset()


class BucketCore(ReplicationMixin):
    def __init__(
        self, config: BucketConfig, log: Log, store: Store, *, node_id: str = "local", rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.log = log
        self.store = store
        self.node_id = node_id
        self.rng = rng or random.Random()
        self.manifest = Manifest()
        self.memtable = Memtable()
        self.vbuckets = [VBucket(vb) for vb in range(config.num_vbuckets)]
        local_chain = Chain(node_id, (None,) * config.num_replicas)  # one node: the replica slots are empty
        self.monitors = [ActiveDurabilityMonitor(local_chain) for _ in self.vbuckets]
        self.start_time = 0.0
        # (WAL end position, vbucket, seqno) for every record, to learn which seqnos are persisted.
        self._unpersisted: deque[tuple[int, int, int]] = deque()
        # (vb, prepare seqno) -> (waiter, counter value it answers with)
        self._cookies: dict[tuple[int, int], tuple[Pending, int]] = {}
        self._prepares_dirty: dict[bytes, bytes | None] = {}
        self._owed: dict[int, deque[Completion]] = {}  # completions decided but refused by the log
        self._prepares_frozen: dict[bytes, bytes | None] = {}
        self.dropped_cids: set[int] = set()  # dropped collections whose documents are still in the store
        self._init_replication(store)

    # -- reads -------------------------------------------------------------------------
    def committed(self, skey: bytes) -> Document | None:
        """The newest committed version of a document (tombstones included), or None."""
        doc = self.memtable.get(skey)
        if doc is None:
            raw = self.store.get(skey)
            if raw is not None:
                doc = decode_document(raw)
        return doc

    # -- writing records ---------------------------------------------------------------
    def _append(self, kind: Kind, payload: bytes, vb: VBucket, seqno: int, lazy: bool = False) -> int:
        try:
            lsn = self.log.append(kind, payload, lazy=lazy)
        except WalFailedError as exc:
            raise KVError(Status.TMPFAIL, f"the write-ahead log is not accepting writes: {exc}") from exc
        self._unpersisted.append((lsn, vb.vbid, seqno))
        return lsn

    def write_document(self, kind: Kind, vb: VBucket, skey: bytes, cid: int, key: bytes, doc: Document) -> int:
        """Log and apply a committed change (mutation, deletion, expiration); returns its WAL position."""
        lsn = self._append(kind, records.encode_document_record(vb.vbid, cid, key, doc.encode()), vb, doc.seqno)
        self.memtable.put(skey, doc)
        self._fed(vb.vbid, records.Record(kind, vb.vbid, cid, key, doc, 0, 0, doc.seqno))
        return lsn

    def write_prepare(
        self,
        vb: VBucket,
        skey: bytes,
        cid: int,
        key: bytes,
        doc: Document,
        level: int,
        deadline: float | None,
        counter: int = 0,
    ) -> Pending:
        payload = records.encode_prepare(vb.vbid, cid, key, level, doc.encode())
        lsn = self._append(Kind.PREPARE, payload, vb, doc.seqno)
        prepare = PendingPrepare(skey, cid, key, doc, level)
        vb.prepares[skey] = prepare
        vb.note_prepare(doc.seqno)
        self._prepares_dirty[skey] = encode_prepare_value(prepare)
        self._fed(vb.vbid, records.Record(Kind.PREPARE, vb.vbid, cid, key, doc, level, 0, doc.seqno))
        pending = Pending()
        self._cookies[(vb.vbid, doc.seqno)] = (pending, counter)
        self.monitors[vb.vbid].add_prepare(doc.seqno, skey, level, deadline, cookie=pending)
        if level != Level.MAJORITY:
            self.log.request_sync(lsn)
        self._drain(vb)
        return pending

    # -- completion of SyncWrites ------------------------------------------------------
    def on_persisted(self, lsn: int) -> None:
        """The WAL is fsynced up to `lsn` (called by the shell, serialized with everything else)."""
        touched: dict[int, int] = {}
        queue = self._unpersisted
        while queue and queue[0][0] <= lsn:
            _, vbid, seqno = queue.popleft()
            touched[vbid] = seqno
        for vbid, seqno in touched.items():
            vb = self.vbuckets[vbid]
            vb.mark_persisted(seqno)
            if vb.state is VBState.ACTIVE:
                self.monitors[vbid].local_persisted(seqno)
                self._drain(vb)
            elif self.on_replica_persisted is not None:
                self.on_replica_persisted(vbid, vb.persisted_seqno)

    def sync_writes_in_flight(self) -> int:
        return len(self._cookies)

    def tick(self, now: float) -> None:
        """Abort SyncWrites whose durability timeout has passed."""
        if not self._cookies and not self._owed and not any(vb.prepares for vb in self.vbuckets):
            return
        for vb in self.vbuckets:
            monitor = self.monitors[vb.vbid]
            if vb.state is VBState.ACTIVE and (monitor.pending_count or self._owed.get(vb.vbid)):
                monitor.process_timeouts(now)
                self._drain(vb)
        for vbid in [v for v, owed in self._owed.items() if not owed]:
            del self._owed[vbid]

    def _drain(self, vb: VBucket) -> None:
        """Write the monitor's completions in order; ones the log refuses are owed and retried."""
        owed = self._owed.get(vb.vbid)
        while owed:
            if not self._complete(vb, owed[0]):
                break
            owed.popleft()
        for completion in self.monitors[vb.vbid].take_completions():
            if owed or not self._complete(vb, completion):
                # Behind an unwritten completion, or refused itself: keep seqno order.
                self._answer_ambiguous(vb, completion.seqno, "the write-ahead log is failed")
                owed = self._owed.setdefault(vb.vbid, deque())
                owed.append(completion)

    def _answer_ambiguous(self, vb: VBucket, seqno: int, why: str) -> None:
        pending, _ = self._cookies.pop((vb.vbid, seqno), (None, 0))
        if pending is not None:
            pending.resolve(error=KVError(Status.SYNC_WRITE_AMBIGUOUS, why))

    def _complete(self, vb: VBucket, completion: Completion) -> bool:
        """Log and apply one commit or abort; False (nothing changed) when the log refuses it."""
        skey = completion.key
        prepare = vb.prepares.get(skey)
        assert prepare is not None and prepare.document.seqno == completion.seqno, "completion without its prepare"
        seqno = vb.next_seqno()
        applicable = self.manifest.collection(prepare.collection_id) is not None  # not dropped meanwhile
        kind = Kind.COMMIT if completion.outcome is Outcome.COMMIT and applicable else Kind.ABORT
        payload = records.encode_completion(vb.vbid, prepare.collection_id, prepare.key, completion.seqno, seqno)
        try:
            self._append(kind, payload, vb, seqno, lazy=True)
        except KVError:
            # The prepare stays (reads keep the old value, writes to the key wait); the
            # completion is retried by _drain on the next tick, and reloaded after a restart.
            vb.release_seqno(seqno)
            return False
        pending, counter = self._cookies.pop((vb.vbid, completion.seqno), (None, 0))
        del vb.prepares[skey]
        self._prepares_dirty[skey] = None
        vb.high_completed_seqno = max(vb.high_completed_seqno, completion.seqno)
        record = records.Record(kind, vb.vbid, prepare.collection_id, prepare.key, None, 0, completion.seqno, seqno)
        self._fed(vb.vbid, record)
        if kind is Kind.COMMIT:
            doc = prepare.document._replace(seqno=seqno)
            self.memtable.put(skey, doc)
            if pending is not None:
                pending.resolve(MutationOutcome(doc.cas, seqno, vb.vbid, vb.uuid, counter))
        elif pending is not None:
            pending.resolve(error=KVError(Status.SYNC_WRITE_AMBIGUOUS, "durability timeout passed", key=prepare.key))
        return True

    # -- topology ----------------------------------------------------------------------
    def set_topology(self, vbid: int, state: VBState, chain: Chain | None = None) -> None:
        """Make this node the vbucket's active (with `chain`), a replica, or neither (dead).

        Leaving active answers every waiting SyncWrite ambiguous and keeps the prepares for
        the next owner; becoming active starts a new failover-log entry and takes over the
        pending prepares with no timeout, with the vbucket's HPS and HCS (they commit once the
        chain satisfies them). The state record is logged before any commit it allows.
        """
        vb = self.vbuckets[vbid]
        old = vb.state
        if chain is None:
            chain = Chain(self.node_id, (None,) * self.config.num_replicas)
        if old is VBState.ACTIVE and state is not VBState.ACTIVE:
            for completion in self.monitors[vbid].abort_all_for_transition():
                self._answer_ambiguous(vb, completion.seqno, "the vbucket stopped being active")
            for prepare in vb.prepares.values():
                prepare.maybe_visible = True
            vb.locks.clear()
        vb.state = state
        if state is VBState.REPLICA and old is not VBState.REPLICA and vb.high_seqno == 0:
            # A copy that holds nothing has no history of its own: its first stream request
            # says so (uuid 0), rather than naming a branch the active never heard of. A copy
            # already a replica keeps the log its stream adopted, items or not yet.
            vb.failover_log = []
        if state is VBState.ACTIVE and old is not VBState.ACTIVE:
            vb.new_failover_entry(self.rng)
            self.monitors[vbid] = self._takeover_monitor(vb, chain)
        elif state is VBState.ACTIVE and chain != self.monitors[vbid].chain:
            self.monitors[vbid].set_chain(chain)
        if state is not old:
            # Before the commits below: recovery replays a replica's items only up to a
            # snapshot end, an active's at once, and tells them apart by this record.
            lsn = self._append(Kind.VBUCKET_STATE, records.encode_meta(vbid, vb.state_json()), vb, vb.high_seqno)
            self._changed(vbid)
            if state is VBState.ACTIVE and any(
                p.level != Level.MAJORITY and p.document.seqno > vb.persisted_seqno for p in vb.prepares.values()
            ):
                # Taken-over prepares that need this node's persistence: as a replica only the
                # PERSIST_TO_MAJORITY ones asked for an fsync, and a log that fsyncs only when
                # asked (policy never) would leave the others pending for good.
                self.log.request_sync(lsn)
        if state is VBState.ACTIVE:
            self._drain(vb)

    def _takeover_monitor(self, vb: VBucket, chain: Chain) -> ActiveDurabilityMonitor:
        """A monitor for a vbucket becoming active, holding its pending prepares with no timeout."""
        monitor = ActiveDurabilityMonitor(
            chain, high_prepared_seqno=vb.high_prepared_seqno, high_completed_seqno=vb.high_completed_seqno
        )
        for prepare in sorted(vb.prepares.values(), key=lambda p: p.document.seqno):
            prepare.maybe_visible = True
            monitor.add_prepare(prepare.document.seqno, prepare.skey, Level(prepare.level), None)
        if vb.prepares:
            monitor.local_persisted(vb.persisted_seqno)
        return monitor

    # -- recovery ----------------------------------------------------------------------
    def recover(self, log_records, *, clean_shutdown: bool, now: float) -> None:
        """Load the checkpoint's metadata, replay the WAL after it, reload pending prepares."""
        self.start_time = now
        raw = self.store.get_meta(b"manifest")
        if raw is not None:
            self.manifest = Manifest.from_json(raw)
        raw = self.store.get_meta(b"dropped")
        if raw is not None:
            self.dropped_cids = set(json.loads(raw))
        fresh = True
        for vb in self.vbuckets:
            state = self.store.get_meta(state_meta_key(vb.vbid))
            if state is not None:
                vb.load_state_json(state)
                fresh = False
        for skey, value in self.store.iter_prepares():
            level, doc = decode_prepare_value(value)
            vbid, cid, key = split_store_key(skey)
            self.vbuckets[vbid].prepares[skey] = PendingPrepare(skey, cid, key, doc, level, maybe_visible=True)
        self._recover_begin()
        for record in log_records:
            self._recover_record(record)
            fresh = False
        self._recover_end()
        for vb in self.vbuckets:
            vb.set_persisted(vb.high_seqno)  # replayed records are on disk (the WAL fsynced them at open)
            vb.high_prepared_seqno = vb.last_prepare_seqno
            # A replica keeps its active's history, uuid included: only an active starts a branch.
            if vb.state is VBState.ACTIVE and (not vb.failover_log or (not clean_shutdown and not fresh)):
                vb.new_failover_entry(self.rng)
                # The new branch must survive a crash before the next checkpoint: log it now.
                self._append(Kind.VBUCKET_STATE, records.encode_meta(vb.vbid, vb.state_json()), vb, vb.high_seqno)
            if vb.state is VBState.ACTIVE:
                self.monitors[vb.vbid] = self._takeover_monitor(vb, self.monitors[vb.vbid].chain)
                self._drain(vb)
            else:
                for prepare in vb.prepares.values():
                    prepare.maybe_visible = True

    # -- manifest ----------------------------------------------------------------------
    def change_manifest(self, change):
        """Apply `change(manifest)` to a copy, log the result, then adopt it; refusals change nothing."""
        candidate = Manifest.from_json(self.manifest.to_json())
        result = change(candidate)
        vb0 = self.vbuckets[0]
        self._append(Kind.MANIFEST, records.encode_meta(0, candidate.to_json()), vb0, vb0.high_seqno)
        self._adopt_manifest(candidate)
        return result

    def set_manifest(self, manifest: Manifest) -> bool:
        """Adopt a manifest decided elsewhere (the cluster manager's ids); False if not newer."""
        if manifest.uid <= self.manifest.uid:
            return False
        vb0 = self.vbuckets[0]
        self._append(Kind.MANIFEST, records.encode_meta(0, manifest.to_json()), vb0, vb0.high_seqno)
        self._adopt_manifest(Manifest.from_json(manifest.to_json()))
        return True

    def _adopt_manifest(self, manifest: Manifest) -> None:
        dropped = self.manifest.collection_ids() - manifest.collection_ids()
        self.manifest = manifest
        if dropped:
            self.dropped_cids |= dropped
            self.memtable.drop(lambda skey: split_store_key(skey)[1] in dropped)
            # A SyncWrite into a dropped collection can never be applied: its waiter is told
            # at once; the prepare stays with the monitor, which completes it in seqno order,
            # and _complete then writes it off as an abort.
            for vb in self.vbuckets:
                for prepare in vb.prepares.values():
                    if prepare.collection_id in dropped:
                        self._answer_ambiguous(vb, prepare.document.seqno, "the collection was dropped")

    def purged(self, cids) -> None:
        """The shell removed these dropped collections' documents from the store."""
        self.dropped_cids -= set(cids)

    # -- checkpoints -------------------------------------------------------------------
    def memtable_size(self) -> int:
        return self.memtable.live_size

    def checkpoint_wanted(self) -> bool:
        """Whether a checkpoint has work: changes not in the store yet, or a feed that cannot
        stream until a checkpoint covers a disk snapshot applied here (a backfill of only
        aborted prepares leaves the memtable empty, and a promoted copy would wait for good)."""
        return bool(len(self.memtable) or self._prepares_dirty) or not all(f.streamable for f in self.feeds)

    def freeze_for_checkpoint(self) -> CheckpointBatch:
        """Freeze what the next checkpoint writes; the shell applies it, then calls checkpoint_done."""
        lsn = self.log.end_lsn
        frozen = self.memtable.freeze()
        self._prepares_frozen, self._prepares_dirty = self._prepares_dirty, {}
        meta = {b"manifest": self.manifest.to_json(), b"dropped": json.dumps(sorted(self.dropped_cids)).encode()}
        for vb in self.vbuckets:
            meta[state_meta_key(vb.vbid)] = vb.state_json()
        return CheckpointBatch(
            docs={skey: doc.encode() for skey, doc in frozen.items()},
            prepares_put={k: v for k, v in self._prepares_frozen.items() if v is not None},
            prepares_delete={k for k, v in self._prepares_frozen.items() if v is None},
            meta=meta,
            checkpoint_lsn=lsn,
            vbuckets_delete=self._freeze_replication(),
        )

    def checkpoint_done(self) -> None:
        self.memtable.release_frozen()
        self._prepares_frozen = {}
        self._checkpoint_applied()

    def checkpoint_failed(self) -> None:
        """Put a frozen batch back so the next checkpoint writes it (nothing was applied)."""
        for skey, doc in self.memtable.frozen.items():
            self.memtable.live.setdefault(skey, doc)
        self.memtable.live_size += self.memtable.frozen_size
        self.memtable.release_frozen()
        for skey, value in self._prepares_frozen.items():
            self._prepares_dirty.setdefault(skey, value)
        self._prepares_frozen = {}
        self._checkpoint_abandoned()

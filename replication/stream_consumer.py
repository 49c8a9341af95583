"""The replica side of one (replica node, vbucket) stream: what to request, apply, roll back and ack.

A pure object in the sans-IO style: producer messages and local persistence go in
(`on_message`, `persisted`), actions come out for the shell to carry out in order (persist
the adopted failover log, apply a complete snapshot, roll the vbucket back, send a SeqnoAck
or BufferAck). It never touches the engine, a socket or a clock.

Rules (DESIGN §5, reference §3.3-3.12):

- The request is built from the last COMPLETE snapshot: start = its end (the replica's high
  seqno), snapshot range = it, uuid = the newest failover-log entry's (0 when the log is empty:
  "I have nothing"). A partial snapshot is never kept, so a broken stream, a crash or a
  rollback always resumes at a consistent point and nothing is acknowledged twice or lost.
- SUCCESS: adopt the producer's failover log (the shell persists it). ROLLBACK(seqno): the
  shell rolls the vbucket back to at most that seqno and calls `rolled_back`; the log keeps
  the entries at or below the point reached (none after a rollback to 0, so the next request
  says "I have nothing" instead of naming a uuid the producer refused).
- Snapshots are buffered and exposed only whole: one `Apply` at the snapshot end, items in
  seqno order. Snapshot ranges tile the seqnos: a marker may not start above high seqno + 1
  (a gap cannot be told from a loss). Anything at or below the high seqno is already applied
  and is dropped, so a resent item is never applied twice.
- Durability: a PassiveDurabilityMonitor sees each snapshot at its end (prepares, commits,
  aborts, then the snapshot end) and the persisted seqno. A disk snapshot's HCS resolves the
  tracked prepares at or below it (their commit or abort was deduplicated into the
  snapshot's documents), as does a newer prepare for the same key; `Apply` lists them.
- Acks: a SeqnoAck (HPS, received, persisted) goes out when a stream starts and then
  whenever the HPS moves (at a snapshot end or a persistence advance), only while streaming:
  the HPS is all the active's durability monitor uses, so a snapshot of commits or of
  mutations alone is not acked (as Couchbase acks prepares only). Its received and persisted
  seqnos are the replica's at that moment. BufferAck returns the flow-controlled bytes processed (counted
  on receipt, items.wire_size) once BUFFER_ACK_RATIO of the window has built up, and at a
  stream's end so that no ack ever mixes two streams.

Invariants asserted: the high seqno and the acks only go forward except by a rollback or a
restore; persisted <= high seqno; HPS <= high seqno. A producer that breaks the protocol gets
StreamProtocolError; the shell drops the stream and calls `disconnected`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from durakv.engine.document import store_key
from durakv.engine.durability import Prepare as TrackedPrepare
from durakv.engine.durability_passive import PassiveDurabilityMonitor
from durakv.engine.errors import Status

from .items import (
    BUFFER_ACK_RATIO,
    MEMORY_SNAPSHOT_BYTES_MAX,
    Abort,
    BufferAck,
    Commit,
    FailoverLog,
    Item,
    ItemBatch,
    Prepare,
    ProducerMessage,
    SeqnoAck,
    SeqnoAdvanced,
    SnapshotFlag,
    SnapshotMarker,
    StreamEnd,
    StreamEndReason,
    StreamProtocolError,
    StreamRequest,
    StreamResponse,
    item_size,
    wire_size,
)


class ConsumerState(Enum):
    IDLE = "idle"  # no stream: call stream_request()
    REQUESTED = "requested"  # a StreamRequest is out
    STREAMING = "streaming"
    ROLLING_BACK = "rolling_back"  # the shell is rolling back; then rolled_back()


_KIND_BITS = int(SnapshotFlag.MEMORY | SnapshotFlag.DISK)
_KINDS = (int(SnapshotFlag.MEMORY), int(SnapshotFlag.DISK))  # exactly one of the two


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """A replica vbucket as the shell holds it (persisted, or after a rollback): what a consumer starts from."""

    failover_log: FailoverLog = ()
    snapshot_start: int = 0
    high_seqno: int = 0  # the end of the last complete snapshot
    high_prepared_seqno: int = 0
    high_completed_seqno: int = 0
    prepares: tuple[TrackedPrepare, ...] = ()  # outstanding, key = store key
    persisted_seqno: int = 0


# -- actions, carried out by the shell in order --------------------------------------------------
@dataclass(frozen=True, slots=True)
class AdoptFailoverLog:
    vbucket: int
    failover_log: FailoverLog


@dataclass(frozen=True, slots=True)
class Apply:
    """A complete snapshot: apply `items` in order, then drop `resolved_prepares` (seqno, store key)."""

    vbucket: int
    snapshot_start: int
    snapshot_end: int
    disk: bool
    items: tuple[Item, ...]
    resolved_prepares: tuple[tuple[int, bytes], ...] = ()
    high_completed_seqno: int = 0


@dataclass(frozen=True, slots=True)
class Rollback:
    """Roll the vbucket back to at most `seqno` (exactly, via the WAL, or to 0), then call rolled_back."""

    vbucket: int
    seqno: int


@dataclass(frozen=True, slots=True)
class StreamRefused:
    """The producer refused the request (NOT_MY_VBUCKET, TMPFAIL, ...): request again later."""

    vbucket: int
    status: Status
    message: str = ""


@dataclass(frozen=True, slots=True)
class StreamEnded:
    vbucket: int
    reason: StreamEndReason


Action = AdoptFailoverLog | Apply | Rollback | StreamRefused | StreamEnded | SeqnoAck | BufferAck


@dataclass(slots=True)
class _Open:
    marker: SnapshotMarker
    last_seqno: int
    items: list[Item] = field(default_factory=list)
    item_bytes: int = 0


class StreamConsumer:
    """One replica vbucket's side of its stream, across reconnects (rebuilt after a crash)."""

    def __init__(
        self,
        vbucket: int,
        *,
        state: ReplicaState = ReplicaState(),
        buffer_bytes: int,
        buffer_ack_ratio: float = BUFFER_ACK_RATIO,
        memory_snapshot_bytes_max: int = MEMORY_SNAPSHOT_BYTES_MAX,
    ) -> None:
        assert buffer_bytes >= 0 and 0 < buffer_ack_ratio <= 1
        self.vbucket = vbucket
        self._buffer_bytes = buffer_bytes
        self._ack_threshold = max(1, int(buffer_bytes * buffer_ack_ratio))
        self._snapshot_max = memory_snapshot_bytes_max
        self._state = ConsumerState.IDLE
        self._open: _Open | None = None
        self._unacked_bytes = 0
        self._last_ack: SeqnoAck | None = None
        self._stream_acked = False
        self._rollback_seqno = 0
        self._restore(state)

    def _restore(self, state: ReplicaState) -> None:
        high = state.high_seqno
        assert state.snapshot_start <= high and state.persisted_seqno <= high
        assert all(0 < p.seqno <= high for p in state.prepares)
        self._failover_log = tuple(state.failover_log)
        self._snapshot_start = state.snapshot_start
        self._high = high
        self._persisted = state.persisted_seqno
        pdm = PassiveDurabilityMonitor(
            high_prepared_seqno=min(state.high_prepared_seqno, high), high_completed_seqno=state.high_completed_seqno
        )
        for prepare in sorted(state.prepares, key=lambda p: p.seqno):
            pdm.add_prepare(prepare.seqno, prepare.key, prepare.level)
        if high:
            # What was held before is acked as a disk snapshot would be: once persisted whole.
            pdm.snapshot_end(high, disk=True)
        pdm.persisted(self._persisted)
        self._pdm = pdm

    # -- views -------------------------------------------------------------------------------
    @property
    def state(self) -> ConsumerState:
        return self._state

    @property
    def high_seqno(self) -> int:
        return self._high

    @property
    def high_prepared_seqno(self) -> int:
        return self._pdm.high_prepared_seqno

    @property
    def replica_state(self) -> ReplicaState:
        return ReplicaState(
            self._failover_log,
            self._snapshot_start,
            self._high,
            self._pdm.high_prepared_seqno,
            self._pdm.high_completed_seqno,
            self._pdm.pending_prepares(),
            self._persisted,
        )

    # -- the stream's life -------------------------------------------------------------------
    def stream_request(self) -> StreamRequest:
        """The request for this vbucket, from the last complete snapshot."""
        assert self._state is ConsumerState.IDLE, self._state
        self._state = ConsumerState.REQUESTED
        uuid = self._failover_log[0][0] if self._failover_log else 0
        return StreamRequest(self.vbucket, uuid, self._high, self._snapshot_start, self._high)

    def disconnected(self) -> None:
        """The call broke: the partial snapshot and the unacked byte count go with it."""
        self._open = None
        self._unacked_bytes = 0
        if self._state is not ConsumerState.ROLLING_BACK:
            self._state = ConsumerState.IDLE

    def rolled_back(
        self, high_seqno: int, *, prepares: Iterable[TrackedPrepare], high_completed_seqno: int
    ) -> list[Action]:
        """The shell rolled the vbucket back to `high_seqno` (a complete-snapshot point, <= the asked seqno)."""
        assert self._state is ConsumerState.ROLLING_BACK
        assert high_seqno <= self._rollback_seqno and (high_seqno < self._high or high_seqno == 0)
        log = tuple(e for e in self._failover_log if e[1] <= high_seqno) if high_seqno else ()
        hps, persisted = min(self._pdm.high_prepared_seqno, high_seqno), min(self._persisted, high_seqno)
        self._restore(ReplicaState(log, high_seqno, high_seqno, hps, high_completed_seqno, tuple(prepares), persisted))
        self._last_ack = None  # a rollback is the one way back for acks
        self._state = ConsumerState.IDLE
        return [AdoptFailoverLog(self.vbucket, log)]

    def persisted(self, seqno: int) -> list[Action]:
        """The replica's WAL is fsynced up to `seqno` of this vbucket."""
        assert seqno <= self._high, f"persisted {seqno} above the high seqno {self._high}"
        if seqno <= self._persisted:
            return []
        self._persisted = seqno
        self._pdm.persisted(seqno)
        return self._ack()

    def buffer_ack_now(self) -> list[Action]:
        """Return the processed bytes now (the shell's timer: at the latest every few seconds)."""
        if not self._unacked_bytes:
            return []
        nbytes, self._unacked_bytes = self._unacked_bytes, 0
        return [BufferAck(nbytes)]

    # -- producer messages -------------------------------------------------------------------
    def on_message(self, message: ProducerMessage) -> list[Action]:
        if message.vbucket != self.vbucket:
            raise StreamProtocolError(self.vbucket, f"message for vbucket {message.vbucket}")
        match message:
            case StreamResponse():
                return self._on_response(message)
            case SnapshotMarker():
                self._on_marker(message)
            case ItemBatch():
                actions = self._on_batch(message)
                return actions + self._count(message) if self._buffer_bytes else actions
            case StreamEnd():
                return self._on_end(message)
        return self._count(message)

    def _expect(self, state: ConsumerState, what: str) -> None:
        if self._state is not state:
            raise StreamProtocolError(self.vbucket, f"{what} while {self._state.value}")

    def _on_response(self, response: StreamResponse) -> list[Action]:
        self._expect(ConsumerState.REQUESTED, "stream response")
        if response.status is Status.SUCCESS:
            log = tuple(response.failover_log)
            if not log or any(u == 0 for u, _ in log) or any(a[1] < b[1] for a, b in itertools.pairwise(log)):
                raise StreamProtocolError(self.vbucket, f"malformed failover log {log}")
            self._failover_log = log
            self._state = ConsumerState.STREAMING
            self._stream_acked = False
            return [AdoptFailoverLog(self.vbucket, log), *self._ack()]
        if response.status is Status.ROLLBACK:
            seqno = response.rollback_seqno
            if not (seqno < self._high or seqno == 0):
                raise StreamProtocolError(self.vbucket, f"rollback to {seqno} from {self._high}")
            self._state = ConsumerState.ROLLING_BACK
            self._rollback_seqno = seqno
            return [*self.buffer_ack_now(), Rollback(self.vbucket, seqno)]
        self._state = ConsumerState.IDLE
        return [*self.buffer_ack_now(), StreamRefused(self.vbucket, response.status, response.message)]

    def _on_end(self, end: StreamEnd) -> list[Action]:
        self._expect(ConsumerState.STREAMING, "stream end")
        self._open = None
        self._state = ConsumerState.IDLE
        return [*self.buffer_ack_now(), StreamEnded(self.vbucket, end.reason)]

    def _on_marker(self, marker: SnapshotMarker) -> None:
        self._expect(ConsumerState.STREAMING, "snapshot marker")
        if self._open is not None:
            raise StreamProtocolError(self.vbucket, f"marker {marker} inside an open snapshot")
        kind = int(marker.flags) & _KIND_BITS
        if kind not in _KINDS:
            raise StreamProtocolError(self.vbucket, f"marker {marker} is neither memory nor disk")
        if not marker.start_seqno <= marker.end_seqno or marker.start_seqno > self._high + 1:
            raise StreamProtocolError(self.vbucket, f"marker {marker} leaves a gap after {self._high}")
        self._open = _Open(marker, last_seqno=max(0, marker.start_seqno - 1))

    def _on_batch(self, batch: ItemBatch) -> list[Action]:
        self._expect(ConsumerState.STREAMING, "item batch")
        snapshot = self._open
        if snapshot is None:
            raise StreamProtocolError(self.vbucket, "items outside a snapshot")
        end = snapshot.marker.end_seqno
        for index, item in enumerate(batch.items):
            seqno = item.seqno
            if not snapshot.last_seqno < seqno <= end:
                raise StreamProtocolError(self.vbucket, f"item seqno {seqno} after {snapshot.last_seqno}, end {end}")
            if seqno == end and index != len(batch.items) - 1:
                raise StreamProtocolError(self.vbucket, "an item batch spans two snapshots")
            snapshot.last_seqno = seqno
            if isinstance(item, Prepare) and item.level not in (1, 2, 3):
                raise StreamProtocolError(self.vbucket, f"prepare {seqno} with level {item.level}")
            if isinstance(item, SeqnoAdvanced) or seqno <= self._high:
                continue  # nothing to apply, or applied already
            snapshot.items.append(item)
            snapshot.item_bytes += item_size(item)
        if not snapshot.marker.disk and snapshot.item_bytes > self._snapshot_max and len(snapshot.items) > 1:
            raise StreamProtocolError(self.vbucket, f"memory snapshot over {self._snapshot_max} bytes")
        if snapshot.last_seqno == end:
            self._open = None
            return self._complete(snapshot)
        return []

    def _complete(self, snapshot: _Open) -> list[Action]:
        marker = snapshot.marker
        if marker.end_seqno <= self._high:
            return []  # a snapshot held already: nothing in it is new
        items = tuple(snapshot.items)
        resolved = self._check_durability(marker, items)
        pdm = self._pdm
        for seqno, _ in resolved:
            pdm.complete(seqno)
        for item in items:
            if isinstance(item, Prepare):
                pdm.add_prepare(item.seqno, store_key(self.vbucket, item.collection_id, item.key), item.level)
            elif isinstance(item, Commit | Abort):
                pdm.complete(item.prepared_seqno)
        pdm.snapshot_end(marker.end_seqno, disk=marker.disk)
        self._snapshot_start, self._high = marker.start_seqno, marker.end_seqno
        high_seqno = marker.end_seqno
        hcs = marker.high_completed_seqno
        return [Apply(self.vbucket, marker.start_seqno, high_seqno, marker.disk, items, resolved, hcs), *self._ack()]

    def _check_durability(self, marker: SnapshotMarker, items: tuple[Item, ...]) -> tuple[tuple[int, bytes], ...]:
        """Validate the snapshot's completions before anything changes; return the prepares it resolves."""
        pending = {p.seqno: p.key for p in self._pdm.pending_prepares()}
        resolved: list[tuple[int, bytes]] = []
        if marker.disk:
            resolved = [(s, k) for s, k in pending.items() if s <= marker.high_completed_seqno]
        for seqno, _ in resolved:
            del pending[seqno]
        by_key = {k: s for s, k in pending.items()}
        for item in items:
            if isinstance(item, Prepare):
                skey = store_key(self.vbucket, item.collection_id, item.key)
                older = by_key.get(skey)
                if older is not None:
                    if not marker.disk:
                        raise StreamProtocolError(self.vbucket, f"prepare {item.seqno} over pending prepare {older}")
                    resolved.append((older, skey))  # the backfill kept only the newer prepare
                    del pending[older]
                pending[item.seqno] = skey
                by_key[skey] = item.seqno
            elif isinstance(item, Commit | Abort):
                skey = store_key(self.vbucket, item.collection_id, item.key)
                if pending.get(item.prepared_seqno) != skey:
                    raise StreamProtocolError(self.vbucket, f"{item} completes no pending prepare")
                del pending[item.prepared_seqno]
                del by_key[skey]
        return tuple(sorted(resolved))

    # -- acks ---------------------------------------------------------------------------------
    def _ack(self) -> list[Action]:
        if self._state is not ConsumerState.STREAMING:
            return []  # the next stream starts with an ack
        ack = SeqnoAck(self.vbucket, self._pdm.high_prepared_seqno, self._high, self._persisted)
        last = self._last_ack
        assert ack.high_prepared_seqno <= ack.received_seqno and ack.persisted_seqno <= ack.received_seqno
        if last is not None:
            assert ack.high_prepared_seqno >= last.high_prepared_seqno, (last, ack)
            assert ack.received_seqno >= last.received_seqno and ack.persisted_seqno >= last.persisted_seqno
            if self._stream_acked and ack.high_prepared_seqno == last.high_prepared_seqno:
                return []  # only the HPS moves the active's durability monitor
        self._last_ack = ack
        self._stream_acked = True
        return [ack]

    def _count(self, message: ProducerMessage) -> list[Action]:
        if not self._buffer_bytes:
            return []
        self._unacked_bytes += wire_size(message)
        return self.buffer_ack_now() if self._unacked_bytes >= self._ack_threshold else []

    def __repr__(self) -> str:
        return (
            f"StreamConsumer(vb={self.vbucket}, state={self._state.value}, high={self._high}, "
            f"hps={self._pdm.high_prepared_seqno}, persisted={self._persisted}, open={self._open is not None})"
        )

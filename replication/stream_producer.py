"""The active side of one (replica node, vbucket) stream: which snapshots to send, and when.

A pure object in the sans-IO style: the shell tells it the vbucket's changes (`on_item`), how
far its in-memory window reaches (`set_memory_start`), what the store holds (`backfill_*`),
and what the replica acknowledged (`buffer_ack`, `seqno_ack`); `next_batch` hands back the
messages to send. It never reads the store, a clock or a socket, and decides nothing about
KV semantics.

Source of items. Right after construction the shell calls `on_item` for every item of its
memory window (seqno >= `memory_start`), then for every new change of the vbucket, in seqno
order. Items below `memory_start` are only in the store. When the stream needs seqnos the
memory window no longer holds (at the start, or later once the window moved past what was
sent: a stream that fell behind), the producer finishes its open snapshot and then asks for
a backfill (`backfill_from`); the shell reads the store in one read snapshot and calls
`backfill_begin(end_seqno=<the store's checkpointed high seqno>, hcs, hps, purge seqno)`, then
`backfill_item` for the committed documents (each key once, newest version) and pending
prepares with seqno >= backfill_from, merged in seqno order, while `backfill_room_bytes` > 0,
and `backfill_end()`. The shell must keep `memory_start` <= checkpointed high seqno + 1, so
a backfill always reaches the memory window.

Snapshots. A disk snapshot is [start, store high seqno], flagged DISK|ACK and carrying the
store's HCS/HPS; it ends with an item at its end or a SeqnoAdvanced to it. A memory snapshot
is cut from the queued items when the previous snapshot is done, up to
MEMORY_SNAPSHOT_BYTES_MAX, and ends at its last item. The first marker of a stream starts at
the requested start (Couchbase's quirk); every later one at the previous end + 1, so the
ranges tile the seqnos without gaps and the replica can tell a gap from a loss.

Flow control. SnapshotMarker and ItemBatch bytes (items.wire_size) count as in flight until
`buffer_ack` frees them. A message part is added only while in-flight bytes are below the
window, so the window is exceeded by at most one item (with its batch framing); the replica
acks after 20 % of the window, so a full window is always acked and a stall cannot last.
`max_bytes` bounds what one `next_batch` returns the same way.

Invariants asserted: item seqnos strictly increase over the stream; no item is sent outside
an open snapshot or beyond its end; bytes in flight exceed the window only by the last item
added; the replica never acks more than was sent (a peer error, StreamProtocolError).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from durakv.engine.errors import Status

from . import rollback
from .items import (
    BACKFILL_BUFFER_BYTES_MAX,
    BATCH_OVERHEAD,
    DOCUMENT_ITEMS,
    ITEM_BATCH_BYTES_MAX,
    MEMORY_SNAPSHOT_BYTES_MAX,
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

_MEMORY_ACK = SnapshotFlag.MEMORY | SnapshotFlag.ACK


class ProducerState(Enum):
    BACKFILL_NEEDED = "backfill_needed"  # waiting for the shell to start reading the store
    BACKFILLING = "backfilling"  # a disk snapshot is open
    IN_MEMORY = "in_memory"  # serving from the memory window
    CLOSED = "closed"


@dataclass(slots=True)
class _Snapshot:
    marker: SnapshotMarker
    items: deque[Item] = field(default_factory=deque)  # not yet sent
    complete: bool = True  # every item is known (a disk snapshot: once backfill_end came)
    marker_sent: bool = False
    last_seqno: int = 0  # the last seqno put into `items` (disk snapshots are filled in order)


class StreamProducer:
    """One vbucket's stream to one replica, from its accepted StreamRequest to its StreamEnd."""

    def __init__(
        self,
        vbucket: int,
        *,
        start_seqno: int,
        memory_start: int,
        buffer_bytes: int,
        end_seqno: int = 0,
        memory_snapshot_bytes_max: int = MEMORY_SNAPSHOT_BYTES_MAX,
        item_batch_bytes_max: int = ITEM_BATCH_BYTES_MAX,
        backfill_buffer_bytes_max: int = BACKFILL_BUFFER_BYTES_MAX,
    ) -> None:
        assert start_seqno >= 0 and memory_start >= 1 and buffer_bytes >= 0
        self.vbucket = vbucket
        self._start = start_seqno
        self._end_seqno = end_seqno
        self._window = buffer_bytes  # 0: no window
        self._snapshot_max = memory_snapshot_bytes_max
        self._batch_max = item_batch_bytes_max
        self._backfill_max = backfill_buffer_bytes_max
        self._in_flight = 0
        self._cut_end = start_seqno  # every seqno up to here belongs to a snapshot already cut
        self._sent_end = start_seqno  # the end of the last snapshot sent whole
        self._last_sent_seqno = start_seqno
        self._first_marker = True
        self._memory_start = memory_start
        self._last_item_seqno = memory_start - 1
        self._queue: deque[Item] = deque()  # memory items above _cut_end
        self._snapshot: _Snapshot | None = None
        self._backfill_bytes = 0
        self._closed = False
        self._end_message: StreamEnd | None = None
        self._ack: SeqnoAck | None = None
        if end_seqno and start_seqno >= end_seqno:
            self.close(StreamEndReason.OK)  # nothing to send: the replica already has `end_seqno`

    # -- the shell's view ------------------------------------------------------------------
    @property
    def state(self) -> ProducerState:
        if self._closed:
            return ProducerState.CLOSED
        if self._snapshot is not None:
            return ProducerState.BACKFILLING if self._snapshot.marker.disk else ProducerState.IN_MEMORY
        if self._cut_end + 1 < self._memory_start:
            return ProducerState.BACKFILL_NEEDED
        return ProducerState.IN_MEMORY

    @property
    def has_output(self) -> bool:
        """`next_batch` may return something (cheap; the window and a pending backfill aside)."""
        if self._closed:
            return self._end_message is not None
        snapshot = self._snapshot
        if snapshot is not None:
            return not snapshot.marker_sent or bool(snapshot.items)
        return bool(self._queue)

    @property
    def wants_backfill(self) -> bool:
        """The state is BACKFILL_NEEDED (cheap)."""
        return not self._closed and self._snapshot is None and self._cut_end + 1 < self._memory_start

    @property
    def backfill_from(self) -> int | None:
        """The first seqno the shell must read from the store, when a backfill is wanted."""
        return self._cut_end + 1 if self.state is ProducerState.BACKFILL_NEEDED else None

    @property
    def backfill_room_bytes(self) -> int:
        """How many more backfill bytes to feed before pausing the store read."""
        return max(0, self._backfill_max - self._backfill_bytes)

    @property
    def bytes_in_flight(self) -> int:
        return self._in_flight

    @property
    def sent_seqno(self) -> int:
        """The end of the last snapshot sent whole."""
        return self._sent_end

    @property
    def acked(self) -> SeqnoAck | None:
        """The replica's latest SeqnoAck on this stream (for the durability monitor)."""
        return self._ack

    # -- the vbucket's changes -------------------------------------------------------------
    def on_item(self, item: Item) -> None:
        """A change of the vbucket (memory window replay first, then live), in seqno order."""
        assert not isinstance(item, SeqnoAdvanced)
        seqno = item.seqno
        assert seqno > self._last_item_seqno, f"items go forward: {seqno} after {self._last_item_seqno}"
        self._last_item_seqno = seqno
        if not self._closed and seqno > self._cut_end:
            self._queue.append(item)

    def set_memory_start(self, seqno: int) -> None:
        """The memory window now starts at `seqno`: anything older is only in the store."""
        assert self._memory_start <= seqno <= self._last_item_seqno + 1, (self._memory_start, seqno)
        self._memory_start = seqno
        queue = self._queue
        while queue and queue[0].seqno < seqno:
            queue.popleft()

    # -- backfill --------------------------------------------------------------------------
    def backfill_begin(
        self, end_seqno: int, *, high_completed_seqno: int, high_prepared_seqno: int, purge_seqno: int
    ) -> bool:
        """Open the disk snapshot [backfill_from, end_seqno] from one store read (`end_seqno`: the
        store's high seqno). False: the store purged tombstones the replica may need, so the
        stream has ended with ROLLBACK instead (the re-request is answered "roll back to 0")."""
        assert self.state is ProducerState.BACKFILL_NEEDED
        assert end_seqno > self._cut_end and end_seqno + 1 >= self._memory_start, (end_seqno, self._memory_start)
        if 0 < self._cut_end < purge_seqno:
            # Deletions in (cut_end, purge_seqno] may be gone; a replica holding anything would
            # keep documents the active removed. One holding nothing (cut_end 0) loses nothing.
            self.close(StreamEndReason.ROLLBACK, "backfill below the purge seqno")
            return False
        flags = SnapshotFlag.DISK | SnapshotFlag.ACK
        marker = SnapshotMarker(
            self.vbucket, self._marker_start(), end_seqno, flags, high_completed_seqno, high_prepared_seqno
        )
        self._snapshot = _Snapshot(marker, complete=False, last_seqno=self._cut_end)
        self._cut_end = end_seqno
        while self._queue and self._queue[0].seqno <= end_seqno:
            self._queue.popleft()
        return True

    def backfill_item(self, item: Item) -> None:
        """One stored document version or pending prepare, in seqno order."""
        snapshot = self._snapshot
        assert snapshot is not None and snapshot.marker.disk and not snapshot.complete
        assert isinstance(item, DOCUMENT_ITEMS), item
        assert snapshot.last_seqno < item.seqno <= snapshot.marker.end_seqno, (snapshot.last_seqno, item)
        snapshot.items.append(item)
        snapshot.last_seqno = item.seqno
        self._backfill_bytes += item_size(item)

    def backfill_end(self) -> None:
        """The store read is over: the disk snapshot's items are all known."""
        snapshot = self._snapshot
        assert snapshot is not None and snapshot.marker.disk and not snapshot.complete
        snapshot.complete = True
        if snapshot.last_seqno < snapshot.marker.end_seqno:
            snapshot.items.append(SeqnoAdvanced(snapshot.marker.end_seqno))

    # -- sending ---------------------------------------------------------------------------
    def next_batch(self, max_bytes: int) -> list[ProducerMessage]:
        """The messages to send now: at most `max_bytes` and the window (each overshot by one item)."""
        assert max_bytes > 0
        if self._closed:
            end, self._end_message = self._end_message, None
            return [end] if end is not None else []
        out: list[ProducerMessage] = []
        batch: list[Item] = []
        batch_bytes = 0
        used = 0
        while used < max_bytes and (self._window == 0 or self._in_flight < self._window):
            snapshot = self._snapshot
            if snapshot is None:
                if self.state is ProducerState.BACKFILL_NEEDED or not self._cut_memory_snapshot():
                    break
                continue
            if not snapshot.marker_sent:
                out.append(snapshot.marker)
                snapshot.marker_sent = True
                size = wire_size(snapshot.marker)
                self._in_flight += size
                used += size
                continue
            if not snapshot.items:
                break  # a disk snapshot waiting for the store
            item = snapshot.items[0]
            size = item_size(item)
            if batch and batch_bytes + size > self._batch_max:
                out.append(self._seal(batch, batch_bytes))
                batch, batch_bytes = [], 0
            added = size + (BATCH_OVERHEAD if not batch else 0)
            snapshot.items.popleft()
            self._check_item(item, snapshot.marker)
            batch.append(item)
            batch_bytes += added
            self._in_flight += added
            used += added
            assert self._window == 0 or self._in_flight - added < self._window
            if snapshot.marker.disk and not isinstance(item, SeqnoAdvanced):
                self._backfill_bytes -= size
            if item.seqno == snapshot.marker.end_seqno:
                out.append(self._seal(batch, batch_bytes))
                batch, batch_bytes = [], 0
                self._snapshot = None
                self._sent_end = snapshot.marker.end_seqno
                if self._end_seqno and self._sent_end >= self._end_seqno:
                    self.close(StreamEndReason.OK)
                    end, self._end_message = self._end_message, None
                    assert end is not None
                    out.append(end)
                    return out
        if batch:
            out.append(self._seal(batch, batch_bytes))
        return out

    def _seal(self, batch: list[Item], batch_bytes: int) -> ItemBatch:
        # batch_bytes == wire_size(the batch): the pair tests check it (not recomputed here, a hot path)
        return ItemBatch(self.vbucket, tuple(batch))

    def _check_item(self, item: Item, marker: SnapshotMarker) -> None:
        assert item.seqno > self._last_sent_seqno, f"seqnos go forward: {item.seqno} after {self._last_sent_seqno}"
        assert item.seqno <= marker.end_seqno, "an item never leaves its snapshot"
        self._last_sent_seqno = item.seqno

    def _marker_start(self) -> int:
        start = self._start if self._first_marker else self._cut_end + 1
        self._first_marker = False
        return start

    def _cut_memory_snapshot(self) -> bool:
        queue = self._queue
        if not queue:
            return False
        assert queue[0].seqno > self._cut_end and self._cut_end + 1 >= self._memory_start
        items: deque[Item] = deque()
        total = 0
        while queue:
            size = item_size(queue[0])
            if items and total + size > self._snapshot_max:
                break
            items.append(queue.popleft())
            total += size
        flags = _MEMORY_ACK if any(isinstance(i, Prepare) for i in items) else SnapshotFlag.MEMORY
        marker = SnapshotMarker(self.vbucket, self._marker_start(), items[-1].seqno, flags)
        self._snapshot = _Snapshot(marker, items, last_seqno=items[-1].seqno)
        self._cut_end = marker.end_seqno
        return True

    # -- from the replica ------------------------------------------------------------------
    def buffer_ack(self, nbytes: int) -> None:
        """The replica processed `nbytes` more of this stream's flow-controlled bytes."""
        if not 0 <= nbytes <= self._in_flight:
            raise StreamProtocolError(self.vbucket, f"buffer ack of {nbytes} bytes with {self._in_flight} in flight")
        self._in_flight -= nbytes

    def seqno_ack(self, ack: SeqnoAck) -> None:
        """Record the replica's progress; the shell hands `acked` to the durability monitor."""
        if ack.vbucket != self.vbucket:
            raise StreamProtocolError(self.vbucket, f"seqno ack for vbucket {ack.vbucket}")
        received = ack.received_seqno
        if ack.high_prepared_seqno > received or ack.persisted_seqno > received or received > self._sent_end:
            raise StreamProtocolError(self.vbucket, f"seqno ack {ack} beyond what was sent ({self._sent_end})")
        previous = self._ack
        if previous is not None and (
            ack.high_prepared_seqno < previous.high_prepared_seqno
            or received < previous.received_seqno
            or ack.persisted_seqno < previous.persisted_seqno
        ):
            raise StreamProtocolError(self.vbucket, f"seqno ack went backwards: {previous} -> {ack}")
        self._ack = ack

    def close(self, reason: StreamEndReason = StreamEndReason.CLOSED, message: str = "") -> None:
        """End the stream: the next `next_batch` returns its StreamEnd, then nothing."""
        if self._closed:
            return
        self._closed = True
        self._end_message = StreamEnd(self.vbucket, reason, message)
        self._queue.clear()
        self._snapshot = None
        self._backfill_bytes = 0

    def __repr__(self) -> str:
        return (
            f"StreamProducer(vb={self.vbucket}, state={self.state.value}, cut={self._cut_end}, "
            f"sent={self._sent_end}, in_flight={self._in_flight}/{self._window}, queued={len(self._queue)})"
        )


def open_stream(
    request: StreamRequest,
    *,
    failover_log: Sequence[tuple[int, int]],
    high_seqno: int,
    purge_seqno: int,
    memory_start: int,
    buffer_bytes: int,
    midpoint_to_zero: bool = True,
    memory_snapshot_bytes_max: int = MEMORY_SNAPSHOT_BYTES_MAX,
    item_batch_bytes_max: int = ITEM_BATCH_BYTES_MAX,
    backfill_buffer_bytes_max: int = BACKFILL_BUFFER_BYTES_MAX,
) -> tuple[StreamResponse, StreamProducer | None]:
    """Answer a StreamRequest (rollback.decide) and, when it resumes, the producer that serves it."""
    vbucket = request.vbucket
    decision = rollback.decide(
        request,
        failover_log=failover_log,
        high_seqno=high_seqno,
        purge_seqno=purge_seqno,
        midpoint_to_zero=midpoint_to_zero,
    )
    match decision:
        case rollback.Refusal(row=row):
            return StreamResponse(vbucket, Status.RANGE_ERROR, message=row.value), None
        case rollback.Rollback(seqno=seqno, row=row):
            return StreamResponse(vbucket, Status.ROLLBACK, rollback_seqno=seqno, message=row.value), None
    producer = StreamProducer(
        vbucket,
        start_seqno=request.start_seqno,
        memory_start=memory_start,
        buffer_bytes=buffer_bytes,
        end_seqno=request.end_seqno,
        memory_snapshot_bytes_max=memory_snapshot_bytes_max,
        item_batch_bytes_max=item_batch_bytes_max,
        backfill_buffer_bytes_max=backfill_buffer_bytes_max,
    )
    return StreamResponse(vbucket, Status.SUCCESS, failover_log=tuple(failover_log)), producer

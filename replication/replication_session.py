"""One replication call's producers on the active node: their streams, feeding them, and sending rounds.

Owns `Session`, the state of one `Replication.Stream` call after its Open was accepted (one
replica node's copy of one bucket's vbuckets from here), and `Stream`, one vbucket's
`stream_producer.StreamProducer` with what it has been fed: one producer per accepted
StreamRequest (`open_stream`: rollback.decide against the vbucket's failover log, high
seqno and purge seqno); feeding each producer the vbucket's changes from the engine's
in-memory feed (`refresh`), and backfill reads of the store when it asks
(`replication_backfill.SessionBackfill`); the replica's SeqnoAcks (to the engine's
durability monitor, `replica_ack`), BufferAcks (freeing window bytes) and CloseStreams; and
the messages of each sending round (`next_messages`). A stream whose vbucket stops being
active here ends with STATE_CHANGED.

Must never: decide what to send or whether a replica must roll back (the cores do), or
hold the bucket lock across an await or a store read.

Threads: sessions and producers are touched on the event loop thread only, except `poke`,
which the engine's `on_change` hook (`replication_service._Hub`) calls under the bucket lock
from any thread: it only marks the vbucket dirty and wakes the call's writer.

Flow control: Open.buffer_bytes is the call's window, shared by its streams (a BufferAck
names no vbucket). Producers get no window of their own; each round asks every producer, in
turn, for at most the room left (`next_batch(max_bytes)` overshoots by at most one item), so
a long backfill of one vbucket cannot starve the others. The window counts the same
per-message sizes on Stream and StreamBatched.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from durakv.engine.embedded import EmbeddedBucket
from durakv.engine.errors import Status
from durakv.engine.replica import FeedTrimmedError, VBucketFeed
from durakv.engine.vbucket import VBState
from durakv.proto import replication_pb2 as pb

from . import wire_items as wi
from .items import (
    Item,
    SeqnoAck,
    StreamEndReason,
    StreamRequest,
    StreamResponse,
    item_from_record,
)
from .replication_backfill import SessionBackfill
from .stream_producer import ProducerState, StreamProducer, open_stream

log = logging.getLogger("durakv.node.replication")

ROUND_BYTES_MAX = 256 * 1024  # one producer's share of one sending round


class PeerError(Exception):
    """The replica broke the call's protocol: the call ends (the replica reconnects)."""


# -- one vbucket's stream -----------------------------------------------------------------------
@dataclass(slots=True)
class Stream:
    producer: StreamProducer
    memory_start: int  # the producer's memory window start, as last told
    fed_seqno: int  # every change up to here was handed over (or is below the memory window)
    last_item_seqno: int  # the last seqno given to producer.on_item
    reading: asyncio.Future | None = None  # a backfill read in flight
    retry_at: float = 0.0  # monotonic: no new read before this
    backfill: deque[Item] = field(default_factory=deque)  # read, not yet handed to the producer
    backfilling: bool = False  # between backfill_begin and backfill_end


# -- one call -----------------------------------------------------------------------------------
class Session(SessionBackfill):
    """One Replication.Stream call: one replica node's copy of one bucket's vbuckets from here."""

    def __init__(self, bucket: EmbeddedBucket, consumer: str, window_bytes: int, noop_interval_s: float) -> None:
        self.bucket = bucket
        self.consumer = consumer
        self.window = window_bytes  # 0: no window
        self.noop_interval_s = noop_interval_s
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.streams: dict[int, Stream] = {}
        self.outbox: deque[pb.ProducerMessage] = deque()  # StreamResponses, sent before any batch
        self.in_flight = 0
        self.wake = asyncio.Event()
        self._dirty: set[int] = set()
        self._check_all = True  # re-read every stream's vbucket (a configuration was applied)
        self._wake_scheduled = False
        self._poke_lock = threading.Lock()
        self.last_heard = time.monotonic()
        self.last_sent = time.monotonic()
        self.noop_sequence = 0
        self._order: deque[int] = deque()  # round-robin order of the vbuckets

    # -- wake-ups (any thread) ------------------------------------------------------------------
    def poke(self, vbid: int | None = None, *, check_all: bool = False) -> None:
        """Wake the writer; `vbid` has new changes, `check_all` re-reads every vbucket's state."""
        with self._poke_lock:
            if vbid is not None:
                self._dirty.add(vbid)
            self._check_all |= check_all
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        if threading.get_ident() == self.loop_thread:
            self.wake.set()
        else:
            try:
                self.loop.call_soon_threadsafe(self.wake.set)
            except RuntimeError:  # the loop is closed: the node is stopping
                pass

    def _take_dirty(self) -> tuple[set[int], bool]:
        with self._poke_lock:
            self._wake_scheduled = False
            self.wake.clear()  # on the loop thread: a poke after this sets it again
            dirty, self._dirty = self._dirty, set()
            check_all, self._check_all = self._check_all, False
        return dirty, check_all

    @property
    def has_work(self) -> bool:
        return bool(self._dirty or self._check_all or self.outbox)

    # -- replica messages (loop thread) ---------------------------------------------------------
    def on_request(self, request: StreamRequest) -> None:
        vbid = request.vbucket
        engine = self.bucket.engine
        stream = None
        if vbid in self.streams:
            response = StreamResponse(vbid, Status.KEY_EEXISTS, message="a stream is open for this vbucket")
        elif vbid >= engine.config.num_vbuckets:
            response = StreamResponse(vbid, Status.EINVAL, message="no such vbucket")
        else:
            with self.bucket.lock:
                vb = engine.vbuckets[vbid]
                if vb.state is not VBState.ACTIVE:
                    response = StreamResponse(vbid, Status.NOT_MY_VBUCKET, message=f"vbucket is {vb.state.value} here")
                elif not engine.feed(vbid).streamable:
                    # A disk snapshot this node applied as a replica is not in its store yet.
                    response = StreamResponse(vbid, Status.TMPFAIL, message="waiting for a checkpoint")
                else:
                    feed = engine.feed(vbid)
                    memory_start = max(1, feed.memory_start)
                    response, producer = open_stream(
                        request,
                        failover_log=tuple(vb.failover_log),
                        high_seqno=vb.high_seqno,
                        purge_seqno=vb.purge_seqno,
                        memory_start=memory_start,
                        buffer_bytes=0,  # the window is the call's (module docstring)
                    )
                    if producer is not None:
                        stream = Stream(producer, memory_start, memory_start - 1, memory_start - 1)
                        self._feed(stream, feed, vb.high_seqno)
        self.outbox.append(wi.producer_to_proto(response))
        if stream is not None:
            self.streams[vbid] = stream
            self._order.append(vbid)
        if response.status is not Status.SUCCESS:
            # A replica holding nothing told to roll back (its vbucket's first uuid) undoes nothing.
            quiet = response.status is Status.ROLLBACK and request.start_seqno == 0
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "stream request vb %d from %s: %s (%s)",
                vbid,
                self.consumer,
                response.status.name,
                response.message,
            )
        self.poke()

    def on_seqno_ack(self, ack: SeqnoAck) -> None:
        stream = self.streams.get(ack.vbucket)
        if stream is None:
            return  # it crossed our StreamEnd
        stream.producer.seqno_ack(ack)  # StreamProtocolError: the call ends
        # Under the bucket lock; the durability monitor may commit SyncWrites, whose waiters wake.
        self.bucket.replica_ack(
            ack.vbucket, self.consumer, ack.high_prepared_seqno, ack.received_seqno, ack.persisted_seqno
        )

    def on_buffer_ack(self, nbytes: int) -> None:
        if self.window == 0:
            return
        if nbytes > self.in_flight:
            raise PeerError(f"buffer ack of {nbytes} bytes with {self.in_flight} in flight")
        self.in_flight -= nbytes
        self.poke()

    def on_close(self, vbid: int) -> None:
        stream = self.streams.get(vbid)
        if stream is not None:
            stream.producer.close(StreamEndReason.CLOSED)
            self.poke()

    # -- feeding the producers (loop thread) ----------------------------------------------------
    def _feed(self, stream: Stream, feed: VBucketFeed, high_seqno: int) -> None:
        """Hand over the vbucket's changes after `fed_seqno`; the bucket lock is held."""
        producer = stream.producer
        try:
            fresh = feed.records_since(stream.fed_seqno + 1)
        except FeedTrimmedError:
            # Trimmed past what was handed over: the producer learns it from its memory start
            # below and backfills the gap from the store.
            fresh = feed.records_since(feed.memory_start)
        for record in fresh:
            item = item_from_record(record)
            if item is None or item.seqno <= stream.last_item_seqno:
                continue
            producer.on_item(item)
            stream.last_item_seqno = item.seqno
        stream.fed_seqno = max(stream.fed_seqno, high_seqno)
        if stream.reading is None:
            # While a read is out the producer keeps the window the read was asked for, so the
            # store it reads (a later checkpoint, never an earlier one) always reaches it.
            start = min(max(1, feed.memory_start), stream.last_item_seqno + 1)
            if start > stream.memory_start:
                producer.set_memory_start(start)
                stream.memory_start = start

    def refresh(self) -> None:
        """Hand the producers their vbuckets' new changes; end streams whose vbucket left active."""
        dirty, check_all = self._take_dirty()
        vbids = list(self.streams) if check_all else [v for v in dirty if v in self.streams]
        if not vbids:
            return
        engine = self.bucket.engine
        with self.bucket.lock:
            for vbid in vbids:
                stream = self.streams[vbid]
                if stream.producer.state is ProducerState.CLOSED:
                    continue
                vb = engine.vbuckets[vbid]
                if vb.state is not VBState.ACTIVE:
                    stream.producer.close(StreamEndReason.STATE_CHANGED, f"vbucket is {vb.state.value} here")
                    continue
                self._feed(stream, engine.feed(vbid), vb.high_seqno)

    # -- sending --------------------------------------------------------------------------------
    def next_messages(self) -> list[pb.ProducerMessage]:
        """One round: the control messages, then each producer's batch within the window."""
        out = list(self.outbox)
        self.outbox.clear()
        for _ in range(len(self._order)):
            vbid = self._order[0]
            self._order.rotate(-1)
            stream = self.streams[vbid]
            producer = stream.producer
            if not producer.has_output:
                continue
            room = self.window - self.in_flight if self.window else ROUND_BYTES_MAX
            if room <= 0 and producer.state is not ProducerState.CLOSED:
                continue
            before = producer.bytes_in_flight  # it counts what it hands out as items.wire_size does
            for message in producer.next_batch(max(1, min(room, ROUND_BYTES_MAX))):
                out.append(wi.producer_to_proto(message))
            self.in_flight += producer.bytes_in_flight - before
            if producer.state is ProducerState.CLOSED:  # its StreamEnd is in `out`
                if stream.reading is not None:
                    stream.reading.cancel()
                del self.streams[vbid]
                self._order.remove(vbid)
            elif stream.backfilling:
                self._feed_backfill(stream)
        return out

    def close_all(self, reason: StreamEndReason, message: str = "") -> None:
        for stream in self.streams.values():
            stream.producer.close(reason, message)

    def cancel_reads(self) -> None:
        for stream in self.streams.values():
            if stream.reading is not None:
                stream.reading.cancel()

"""The producer side of replication: the `Replication` gRPC service an active node serves.

Owns the shell around `stream_producer.StreamProducer` (proto/replication.proto, DESIGN §5):
per call, the Open handshake (cluster secret, bucket, uuid, consumer node); one producer per
accepted StreamRequest (`open_stream`: rollback.decide against the vbucket's failover log,
high seqno and purge seqno); feeding each producer the vbucket's changes from the engine's
in-memory feed and, when it asks, one backfill read of the store; sending what the producers
hand out within the call's byte window. SeqnoAcks go to the engine's durability monitor
(`replica_ack`), BufferAcks free window bytes, Noops keep the call alive. A stream whose
vbucket stops being active here ends with STATE_CHANGED.

Must never: decide what to send or whether a replica must roll back (the cores do), hold the
bucket lock across an await or a store read, or read the store on the event loop (backfill
reads run in a worker thread; LMDB read transactions need no bucket lock).

Threads: producers and sessions are touched on the event loop thread only. The engine's
`on_change` hook runs under the bucket lock on whichever thread appended a record (the loop
for KV writes, the WAL flusher for commits, the maintenance thread for aborts); it only marks
the vbucket dirty and wakes the session (`_Hub`, `_Session.poke`).

Flow control: Open.buffer_bytes is the call's window, shared by its streams (a BufferAck
names no vbucket). Producers get no window of their own; each round asks every producer, in
turn, for at most the room left (`next_batch(max_bytes)` overshoots by at most one item), so
a long backfill of one vbucket cannot starve the others.

Batching: on a StreamBatched call every message of one sending round leaves in one
ProducerMessageBatch (split only past wire_items' caps), and each incoming ReplicaMessageBatch
is carried out message by message, in order, exactly as on Stream. The window counts the same
per-message sizes either way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import grpc

from durakv.engine.embedded import EmbeddedBucket
from durakv.engine.errors import Status
from durakv.engine.replica import FeedTrimmedError, VBucketFeed
from durakv.engine.vbucket import VBState
from durakv.proto import replication_pb2 as pb

from . import wire_items as wi
from .auth import AuthenticationFailed, Bearer, parse_authorization
from .coalesce import let_ready_work_run
from .grpc_handlers import MALFORMED
from .items import (
    Item,
    SeqnoAck,
    StreamEndReason,
    StreamProtocolError,
    StreamRequest,
    StreamResponse,
    document_item,
    item_from_record,
    prepare_item,
)
from .stream_producer import ProducerState, StreamProducer, open_stream

log = logging.getLogger("durakv.node.replication")

NOOP_INTERVAL_MS_DEFAULT = 1000  # a producer without other traffic sends a Noop this often
NOOP_INTERVAL_MS_MIN, NOOP_INTERVAL_MS_MAX = 100, 60_000  # what a replica may ask for
ROUND_BYTES_MAX = 256 * 1024  # one producer's share of one sending round
OPEN_TIMEOUT_S = 10.0  # the first message (Open) must arrive within this
BACKFILL_RETRY_S = 0.1  # a store read that came back behind the memory window is retried after this


class _PeerError(Exception):
    """The replica broke the call's protocol: the call ends (the replica reconnects)."""


# -- engine hook ----------------------------------------------------------------------------------
class _Hub:
    """A bucket's one `engine.on_change` hook, fanning out to the sessions streaming from it.

    Called under the bucket lock from any thread; it reads an immutable tuple of sessions and
    `poke` is thread-safe, so it needs no lock of its own.
    """

    def __init__(self) -> None:
        self.sessions: tuple[_Session, ...] = ()

    def __call__(self, vbid: int) -> None:
        for session in self.sessions:
            if vbid in session.streams:
                session.poke(vbid)

    def add(self, session: _Session) -> None:
        self.sessions = (*self.sessions, session)

    def remove(self, session: _Session) -> None:
        self.sessions = tuple(s for s in self.sessions if s is not session)


# -- one vbucket's stream -----------------------------------------------------------------------
@dataclass(slots=True)
class _Stream:
    producer: StreamProducer
    memory_start: int  # the producer's memory window start, as last told
    fed_seqno: int  # every change up to here was handed over (or is below the memory window)
    last_item_seqno: int  # the last seqno given to producer.on_item
    reading: asyncio.Future | None = None  # a backfill read in flight
    retry_at: float = 0.0  # monotonic: no new read before this
    backfill: deque[Item] = field(default_factory=deque)  # read, not yet handed to the producer
    backfilling: bool = False  # between backfill_begin and backfill_end


# -- one call -----------------------------------------------------------------------------------
class _Session:
    """One Replication.Stream call: one replica node's copy of one bucket's vbuckets from here."""

    def __init__(self, bucket: EmbeddedBucket, consumer: str, window_bytes: int, noop_interval_s: float) -> None:
        self.bucket = bucket
        self.consumer = consumer
        self.window = window_bytes  # 0: no window
        self.noop_interval_s = noop_interval_s
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.streams: dict[int, _Stream] = {}
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
                        stream = _Stream(producer, memory_start, memory_start - 1, memory_start - 1)
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
            raise _PeerError(f"buffer ack of {nbytes} bytes with {self.in_flight} in flight")
        self.in_flight -= nbytes
        self.poke()

    def on_close(self, vbid: int) -> None:
        stream = self.streams.get(vbid)
        if stream is not None:
            stream.producer.close(StreamEndReason.CLOSED)
            self.poke()

    # -- feeding the producers (loop thread) ----------------------------------------------------
    def _feed(self, stream: _Stream, feed: VBucketFeed, high_seqno: int) -> None:
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

    # -- backfill -------------------------------------------------------------------------------
    def backfill(self) -> float | None:
        """Take finished store reads, start the reads producers ask for, feed what was read.

        Returns the monotonic time a delayed read is due, if any."""
        due = None
        now = time.monotonic()
        for vbid, stream in self.streams.items():
            producer = stream.producer
            if stream.reading is None and not stream.backfilling and not producer.wants_backfill:
                continue  # streaming from memory: the common case, decided cheaply
            if stream.reading is not None and stream.reading.done():
                self._begin_backfill(vbid, stream)
            if producer.state is ProducerState.CLOSED:
                continue
            if stream.backfilling:
                self._feed_backfill(stream)
            from_seqno = producer.backfill_from
            if from_seqno is None or stream.reading is not None:
                continue
            if now < stream.retry_at:
                due = stream.retry_at if due is None else min(due, stream.retry_at)
                continue
            stream.reading = self.loop.run_in_executor(None, self.bucket.store.backfill_read, vbid, from_seqno)
            stream.reading.add_done_callback(lambda _f: self.poke())
        return due

    def _begin_backfill(self, vbid: int, stream: _Stream) -> None:
        reading, stream.reading = stream.reading, None
        producer = stream.producer
        if producer.state is not ProducerState.BACKFILL_NEEDED:
            return  # closed meanwhile
        from_seqno = producer.backfill_from
        assert reading is not None and from_seqno is not None
        try:
            snapshot = reading.result()
        except Exception:
            log.exception("backfill of vb %d for %s failed", vbid, self.consumer)
            producer.close(StreamEndReason.BACKFILL_FAILED, "the store read failed")
            return
        high = snapshot.high_seqno
        if high < max(from_seqno, stream.memory_start - 1):
            # The store does not reach the memory window (a checkpoint is being applied): again.
            stream.retry_at = time.monotonic() + BACKFILL_RETRY_S
            return
        items: list[Item] = [
            document_item(cid, key, doc) for seqno, cid, key, doc in snapshot.documents if from_seqno <= seqno <= high
        ]
        items += [
            prepare_item(cid, key, doc, level)
            for seqno, cid, key, level, doc in snapshot.prepares
            if from_seqno <= seqno <= high
        ]
        items.sort(key=lambda i: i.seqno)
        begun = producer.backfill_begin(
            high,
            high_completed_seqno=snapshot.high_completed_seqno,
            high_prepared_seqno=snapshot.high_prepared_seqno,
            purge_seqno=snapshot.purge_seqno,
        )
        log.info(
            "backfill vb %d for %s: seqnos %d..%d, %d items%s",
            vbid,
            self.consumer,
            from_seqno,
            high,
            len(items),
            "" if begun else ", below the purge seqno: the replica rolls back",
        )
        if begun:
            stream.backfill = deque(items)
            stream.backfilling = True
            self._feed_backfill(stream)
        self.poke(vbid)  # the memory window may have moved during the read

    def _feed_backfill(self, stream: _Stream) -> None:
        producer = stream.producer
        queue = stream.backfill
        while queue and producer.backfill_room_bytes > 0:
            producer.backfill_item(queue.popleft())
        if not queue:
            producer.backfill_end()
            stream.backfilling = False

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


# -- sending on a call ---------------------------------------------------------------------------
class _Out:
    """How a call's messages go out: one write each (Stream) or one write per batch (StreamBatched)."""

    def __init__(self, context, batched: bool) -> None:
        self.context = context
        self.batched = batched

    async def send(self, messages: list[pb.ProducerMessage]) -> None:
        if self.batched:
            for batch in wi.batches(messages):
                await self.context.write(batch)
        else:
            for message in messages:
                await self.context.write(message)


async def _unbatched(batches):
    """A StreamBatched call's ReplicaMessageBatch messages as the ReplicaMessages they hold, in order."""
    async for batch in batches:
        if batch is MALFORMED:
            yield MALFORMED
            continue
        for message in batch.messages:
            yield message


# -- the service ----------------------------------------------------------------------------------
class ReplicationService:
    """`Replication.Stream` and `StreamBatched` on a node: each call is one replica node's copy of one bucket."""

    def __init__(self, runtime, *, noop_interval_ms: int = NOOP_INTERVAL_MS_DEFAULT) -> None:
        self.rt = runtime
        self.noop_interval_ms = noop_interval_ms
        self._hubs: dict[int, tuple[EmbeddedBucket, _Hub]] = {}  # id(bucket) -> (bucket, its hook)
        self._sessions: set[_Session] = set()
        self._stopping = False

    def stop(self) -> None:
        """The node is stopping: every call ends now (the replicas reconnect elsewhere or later)."""
        self._stopping = True
        for session in list(self._sessions):
            session.poke()

    def topology_changed(self) -> None:
        """A configuration was applied: every session re-reads its vbuckets' states."""
        for session in list(self._sessions):
            session.poke(check_all=True)

    def _hub(self, bucket: EmbeddedBucket) -> _Hub:
        served = {id(b) for b in self.rt.buckets.values()}
        for key in [k for k in self._hubs if k not in served]:
            del self._hubs[key]  # a bucket dropped or replaced
        entry = self._hubs.get(id(bucket))
        if entry is not None and entry[0] is bucket:
            return entry[1]
        hub = _Hub()
        with bucket.lock:
            bucket.engine.on_change = hub
        self._hubs[id(bucket)] = (bucket, hub)
        return hub

    async def Stream(self, request_iterator, context):
        await self._serve(request_iterator.__aiter__(), _Out(context, batched=False), context)

    async def StreamBatched(self, request_iterator, context):
        await self._serve(_unbatched(request_iterator), _Out(context, batched=True), context)

    async def _serve(self, requests, out: _Out, context) -> None:
        await self._authenticate(context)
        try:
            first = await asyncio.wait_for(requests.__anext__(), OPEN_TIMEOUT_S)
        except (StopAsyncIteration, TimeoutError):
            return
        session = await self._open(first, out)
        if session is None:
            return
        hub = self._hub(session.bucket)
        hub.add(session)
        self._sessions.add(session)
        reader = asyncio.ensure_future(self._read(session, requests))
        try:
            await self._write(session, reader, out)
        except _PeerError as exc:
            log.warning("replication call from %s ended: %s", session.consumer, exc)
        finally:
            hub.remove(session)
            self._sessions.discard(session)
            reader.cancel()
            session.cancel_reads()
        log.info("replication call from %s for bucket %s closed", session.consumer, session.bucket.config.name)

    async def _authenticate(self, context) -> None:
        metadata = context.invocation_metadata()
        try:
            if not isinstance(parse_authorization(metadata), Bearer):
                raise AuthenticationFailed("replication is for the cluster's own nodes")
            await self.rt.authenticator.authenticate(metadata)
        except AuthenticationFailed as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    async def _open(self, first, out: _Out) -> _Session | None:
        rt = self.rt

        async def refuse(status: Status, message: str) -> None:
            response = pb.OpenResponse(status=status, message=message, producer_node_id=rt.node_id)
            await out.send([pb.ProducerMessage(open_response=response)])

        if first is MALFORMED or wi.which(first) != "open":
            await refuse(Status.EINVAL, "the first message of a call is Open")
            return None
        request = first.open
        if self._stopping:
            await refuse(Status.TMPFAIL, "this node is stopping")
            return None
        if rt.config is None:
            await refuse(Status.TMPFAIL, "this node has no cluster configuration yet")
            return None
        plan = rt.plans.get(request.bucket)
        bucket = rt.buckets.get(request.bucket)
        if plan is None:
            await refuse(Status.BUCKET_NOT_FOUND, f"bucket {request.bucket[:100]!r} not found")
            return None
        if request.bucket_uuid and plan.uuid and request.bucket_uuid != plan.uuid:
            await refuse(Status.BUCKET_NOT_FOUND, f"bucket {request.bucket[:100]!r} is another bucket here")
            return None
        if bucket is None:
            await refuse(Status.TMPFAIL, f"bucket {request.bucket[:100]!r} is not ready here yet")
            return None
        consumer = request.consumer_node_id
        if consumer == rt.node_id or consumer not in {n.node_id for n in rt.config.nodes}:
            await refuse(Status.EINVAL, f"{consumer[:64]!r} is not another node of this cluster")
            return None
        if consumer in rt.faults.partitioned:
            await refuse(Status.TMPFAIL, f"partitioned from {consumer} (an injected fault)")
            return None
        interval_ms = request.noop_interval_ms or self.noop_interval_ms
        interval_ms = min(max(interval_ms, NOOP_INTERVAL_MS_MIN), NOOP_INTERVAL_MS_MAX)
        session = _Session(bucket, consumer, request.buffer_bytes, interval_ms / 1000)
        response = pb.OpenResponse(status=Status.SUCCESS, producer_node_id=rt.node_id, noop_interval_ms=interval_ms)
        await out.send([pb.ProducerMessage(open_response=response)])
        log.info("replication call from %s for bucket %s opened", consumer, request.bucket)
        return session

    async def _read(self, session: _Session, requests) -> None:
        """Carry out the replica's messages in order; returns when the replica half-closes."""
        async for message in requests:
            session.last_heard = time.monotonic()
            if message is MALFORMED:
                raise _PeerError("a message does not decode")
            kind = wi.which(message)
            if kind == "noop":
                continue
            if kind == "open":
                raise _PeerError("a second Open")
            try:
                value = wi.replica_from_proto(message)
                match kind:
                    case "stream_request":
                        session.on_request(value)
                    case "seqno_ack":
                        session.on_seqno_ack(value)
                    case "buffer_ack":
                        session.on_buffer_ack(value.bytes)
                    case "close_stream":
                        session.on_close(value.vbucket)
            except StreamProtocolError as exc:
                raise _PeerError(str(exc)) from None

    async def _write(self, session: _Session, reader: asyncio.Future, out: _Out) -> None:
        interval = session.noop_interval_s
        waiter: asyncio.Future | None = None
        try:
            while True:
                if self._stopping:
                    return
                if reader.done():
                    reader.result()  # a protocol error or a broken call ends this one too
                    return  # the replica half-closed
                if session.consumer in self.rt.faults.partitioned:
                    raise _PeerError("partitioned from it (an injected fault)")
                if self.rt.buckets.get(session.bucket.config.name) is not session.bucket:
                    session.close_all(StreamEndReason.STATE_CHANGED, "the bucket is not served here any more")
                    await self._send(session, out)
                    return
                session.refresh()
                due = session.backfill()
                if await self._send(session, out):
                    await let_ready_work_run()  # what joins the next round (coalesce.py)
                    continue  # more may be ready at once
                now = time.monotonic()
                if now - session.last_heard > 2 * interval:
                    raise _PeerError(f"nothing heard for {now - session.last_heard:.1f} s")
                if now - session.last_sent >= interval:
                    session.noop_sequence += 1
                    await out.send([wi.noop_producer(session.noop_sequence)])
                    session.last_sent = now
                if session.has_work:
                    continue
                timeout = interval - (time.monotonic() - session.last_sent)
                if due is not None:
                    timeout = min(timeout, due - time.monotonic())
                if waiter is None or waiter.done():
                    waiter = asyncio.ensure_future(session.wake.wait())
                await asyncio.wait((reader, waiter), timeout=max(0.001, timeout), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if waiter is not None:
                waiter.cancel()

    @staticmethod
    async def _send(session: _Session, out: _Out) -> bool:
        messages = session.next_messages()
        await out.send(messages)
        if messages:
            session.last_sent = time.monotonic()
        return bool(messages)

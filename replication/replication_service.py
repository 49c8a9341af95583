"""The producer side of replication: the `Replication` gRPC service an active node serves.

Owns the shell around `stream_producer.StreamProducer` (proto/replication.proto, DESIGN §5):
per call, the Open handshake (cluster secret, bucket, uuid, consumer node); one producer per
accepted StreamRequest (`open_stream`: rollback.decide against the vbucket's failover log,
high seqno and purge seqno); feeding each producer the vbucket's changes from the engine's
in-memory feed and, when it asks, one backfill read of the store; sending what the producers
hand out within the call's byte window. SeqnoAcks go to the engine's durability monitor
(`replica_ack`), BufferAcks free window bytes, Noops keep the call alive. A stream whose
vbucket stops being active here ends with STATE_CHANGED.

The producer side is built from modules named for what each owns:
- `replication_session`: one call's state after Open (`Session`) and each vbucket's stream
  (`Stream`): opening streams, feeding producers from the engine's change feed, the
  replica's acks, and each sending round within the call's window;
- `replication_backfill`: backfill reads of the store and handing them to the producers
  (`SessionBackfill`).
This module owns the service: authenticating a call, the Open handshake, the call's reader
and writer loop (liveness, partitions as injected faults, a bucket that stops being served
here), and the engine's `on_change` hook (`_Hub`).

Must never: decide what to send or whether a replica must roll back (the cores do), hold the
bucket lock across an await or a store read, or read the store on the event loop (backfill
reads run in a worker thread; LMDB read transactions need no bucket lock).

Threads: producers and sessions are touched on the event loop thread only. The engine's
`on_change` hook runs under the bucket lock on whichever thread appended a record (the loop
for KV writes, the WAL flusher for commits, the maintenance thread for aborts); it only marks
the vbucket dirty and wakes the session (`_Hub`, `Session.poke`).

Batching: on a StreamBatched call every message of one sending round leaves in one
ProducerMessageBatch (split only past wire_items' caps), and each incoming ReplicaMessageBatch
is carried out message by message, in order, exactly as on Stream. The window counts the same
per-message sizes either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import grpc

from durakv.engine.embedded import EmbeddedBucket
from durakv.engine.errors import Status
from durakv.proto import replication_pb2 as pb

from . import wire_items as wi
from .auth import AuthenticationFailed, Bearer, parse_authorization
from .coalesce import let_ready_work_run
from .grpc_handlers import MALFORMED
from .items import StreamEndReason, StreamProtocolError
from .replication_session import PeerError, Session

log = logging.getLogger("durakv.node.replication")

NOOP_INTERVAL_MS_DEFAULT = 1000  # a producer without other traffic sends a Noop this often
NOOP_INTERVAL_MS_MIN, NOOP_INTERVAL_MS_MAX = 100, 60_000  # what a replica may ask for
OPEN_TIMEOUT_S = 10.0  # the first message (Open) must arrive within this


# -- engine hook ----------------------------------------------------------------------------------
class _Hub:
    """A bucket's one `engine.on_change` hook, fanning out to the sessions streaming from it.

    Called under the bucket lock from any thread; it reads an immutable tuple of sessions and
    `poke` is thread-safe, so it needs no lock of its own.
    """

    def __init__(self) -> None:
        self.sessions: tuple[Session, ...] = ()

    def __call__(self, vbid: int) -> None:
        for session in self.sessions:
            if vbid in session.streams:
                session.poke(vbid)

    def add(self, session: Session) -> None:
        self.sessions = (*self.sessions, session)

    def remove(self, session: Session) -> None:
        self.sessions = tuple(s for s in self.sessions if s is not session)


# -- sending on a call ---------------------------------------------------------------------------
class _Out:
    """How a call's messages go out: one write each (Stream) or one write per batch (StreamBatched).

    With a replication delay (an injected fault, node_faults.py) messages go through a delay
    line instead: each leaves `delay` after it was handed over, in order, those due together
    in one write, while the session goes on building rounds (its byte window still bounds
    what is in flight). A write that fails there ends the call at the next `send`.
    """

    def __init__(
        self,
        context,
        batched: bool,
        delay_s: Callable[[], float] = lambda: 0.0,
        drop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.context = context
        self.batched = batched
        self._delay_s = delay_s
        self._drop = drop
        self._line: deque[tuple[float, list[pb.ProducerMessage]]] = deque()  # (due, messages)
        self._sender: asyncio.Task | None = None

    async def send(self, messages: list[pb.ProducerMessage]) -> None:
        delay = self._delay_s()
        if not delay and not self._line:
            await self._write(messages)
            return
        if self._sender is not None and self._sender.done() and not self._sender.cancelled():
            self._sender.result()  # a delayed write failed: the call is over
        if messages:
            self._line.append((time.monotonic() + delay, messages))
        if self._line and (self._sender is None or self._sender.done()):
            self._sender = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        line = self._line
        while line:
            wait = line[0][0] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            due: list[pb.ProducerMessage] = []
            while line and line[0][0] <= now:
                due += line.popleft()[1]
            await self._write(due)

    async def _write(self, messages: list[pb.ProducerMessage]) -> None:
        if messages and self._drop():
            raise PeerError("a message lost (an injected fault): the call ends")
        if self.batched:
            for batch in wi.batches(messages):
                await self.context.write(batch)
        else:
            for message in messages:
                await self.context.write(message)

    async def flush(self) -> None:
        """Wait until the delay line is empty (a call ending on its own: its last answers go out)."""
        if self._sender is not None and not self._sender.done():
            await self._sender

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()


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
        self._sessions: set[Session] = set()
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
        await self._serve(request_iterator.__aiter__(), self._out(context, batched=False), context)

    async def StreamBatched(self, request_iterator, context):
        await self._serve(_unbatched(request_iterator), self._out(context, batched=True), context)

    def _out(self, context, *, batched: bool) -> _Out:
        faults = self.rt.faults
        return _Out(context, batched, lambda: faults.replication_delay_s, faults.drop)

    async def _serve(self, requests, out: _Out, context) -> None:
        await self._authenticate(context)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                first = await requests.__anext__()
        except (StopAsyncIteration, TimeoutError):
            return
        try:
            session = await self._open(first, out)
        except PeerError as exc:  # the answer to Open was lost (an injected fault)
            log.info("replication call ended before it opened: %s", exc)
            return
        if session is None:
            await out.flush()  # the refusal
            return
        hub = self._hub(session.bucket)
        hub.add(session)
        self._sessions.add(session)
        reader = asyncio.ensure_future(self._read(session, requests))
        try:
            await self._write(session, reader, out)
        except PeerError as exc:
            log.warning("replication call from %s ended: %s", session.consumer, exc)
        finally:
            hub.remove(session)
            self._sessions.discard(session)
            reader.cancel()
            out.close()
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

    async def _open(self, first, out: _Out) -> Session | None:
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
        session = Session(bucket, consumer, request.buffer_bytes, interval_ms / 1000)
        response = pb.OpenResponse(status=Status.SUCCESS, producer_node_id=rt.node_id, noop_interval_ms=interval_ms)
        await out.send([pb.ProducerMessage(open_response=response)])
        log.info("replication call from %s for bucket %s opened", consumer, request.bucket)
        return session

    async def _read(self, session: Session, requests) -> None:
        """Carry out the replica's messages in order; returns when the replica half-closes."""
        async for message in requests:
            session.last_heard = time.monotonic()
            if message is MALFORMED:
                raise PeerError("a message does not decode")
            kind = wi.which(message)
            if kind == "noop":
                continue
            if kind == "open":
                raise PeerError("a second Open")
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
                raise PeerError(str(exc)) from None

    async def _write(self, session: Session, reader: asyncio.Future, out: _Out) -> None:
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
                    raise PeerError("partitioned from it (an injected fault)")
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
                    raise PeerError(f"nothing heard for {now - session.last_heard:.1f} s")
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
    async def _send(session: Session, out: _Out) -> bool:
        messages = session.next_messages()
        await out.send(messages)
        if messages:
            session.last_sent = time.monotonic()
        return bool(messages)

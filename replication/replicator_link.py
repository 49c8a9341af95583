"""One replication call: a replica node copying some vbuckets of one bucket from one active node.

Owns `Link`, the shell of ONE `Replication.Stream` call carrying all the vbuckets of one
bucket this node replicates from one active node (`LinkSpec`), reopened until stopped: the
Open handshake, a StreamRequest per vbucket from its consumer (`replicator_consumers`), the
producer's messages handed to `replicator_actions.ConsumerActions` in order, and what that
produces sent back. A broken call is reopened with backoff (each vbucket re-requested from
its last complete snapshot). A producer partitioned from here (an injected fault) gets no
call: one in progress is cancelled (`Link.partition_changed`), and none is opened while the
partition lasts.

Must never: decide what to apply, ack or roll back (the consumer core does), or hold the
bucket lock across an await.

Threads: links live on the event loop thread.

Liveness: Noops from the producer are answered with the same sequence; a call that hears
nothing for two intervals is dropped; and the replica sends a Noop of its own after an
interval without sending anything, so a long apply does not look like a dead replica.

Flow control: the call's window (Open.buffer_bytes) is counted here, per call, on the
flow-controlled messages processed (SnapshotMarker, ItemBatch: items.wire_size), and
returned in BufferAck once BUFFER_ACK_RATIO of the window has built up or every
BUFFER_ACK_INTERVAL_S; the consumers are built with no window of their own.

Batching: a call is `Replication.StreamBatched` (several messages per stream message each
way); a producer that does not serve it (UNIMPLEMENTED, an older node) gets `Stream`, and the
next call after one that ended otherwise tries StreamBatched again. Each incoming batch is
carried out message by message, in order, and what that produces (acks, BufferAcks, Noop
answers, re-requests) is held and queued together, so it leaves in one outgoing message
(redundant SeqnoAcks coalesced). Stream gets the same messages one write each.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from durakv.engine.embedded import EmbeddedBucket
from durakv.engine.errors import EngineError, Status
from durakv.proto import replication_pb2 as pb
from durakv.proto import replication_pb2_grpc

from . import stream_consumer as sc
from . import wire_items as wi
from .auth import bearer_metadata
from .coalesce import let_ready_work_run
from .event_loop import cancel_and_wait
from .items import (
    BUFFER_ACK_RATIO,
    BufferAck,
    ItemBatch,
    ProducerMessage,
    SeqnoAck,
    SnapshotMarker,
    StreamProtocolError,
    wire_size,
)
from .replicator_actions import ConsumerActions, LinkError
from .replicator_consumers import BucketReplicas

if TYPE_CHECKING:
    from .replicator import Replicator

log = logging.getLogger("durakv.node.replicator")

RECONNECT_MIN_S, RECONNECT_MAX_S = 0.05, 2.0  # backoff between attempts to (re)open a call
RECONNECT_RESET_S = 10.0  # a call that lived this long starts the backoff over
OPEN_TIMEOUT_S = 5.0  # the OpenResponse must arrive within this
BUFFER_ACK_INTERVAL_S = 1.0  # processed bytes are returned at least this often
NOOP_INTERVAL_MS = 1000  # asked of the producer; the call ends after two without a word
PARTITION_CHECK_S = 0.1  # a link partitioned from its producer looks again this often


# -- one call ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkSpec:
    bucket: EmbeddedBucket
    bucket_uuid: str
    active: str
    address: str
    vbuckets: tuple[int, ...]


class Link(ConsumerActions):
    """The call copying `spec.vbuckets` of one bucket from one active node, reopened until stopped."""

    def __init__(self, replicator: Replicator, spec: LinkSpec, replicas: BucketReplicas) -> None:
        self.r = replicator
        self.spec = spec
        self.replicas = replicas
        self.name = f"{spec.bucket.config.name}<-{spec.active}"
        self._out: asyncio.Queue[tuple[float, pb.ReplicaMessage | list[pb.ReplicaMessage]]] | None = (
            None  # (queued at, entry)
        )
        self._generation = 0
        self._unacked_bytes = 0
        self._last_buffer_ack = time.monotonic()
        self._last_sent = time.monotonic()
        self._window = replicator.buffer_bytes
        self._batched = True  # StreamBatched; False after the producer answered it UNIMPLEMENTED
        self._held: list[pb.ReplicaMessage] | None = None  # what carrying out the current batch produced
        self._waiting_since: float | None = None  # monotonic: the reader has waited for a message since
        self._grpc_call = None  # the call in progress, if any
        self._cut_off = False  # partition_changed cancelled the call in progress
        self.task = asyncio.ensure_future(self._run())

    def partition_changed(self) -> None:
        """End the call now if its producer is partitioned from here (`_run` then waits it out)."""
        if self.spec.active in self.r.rt.faults.partitioned and self._grpc_call is not None:
            self._cut_off = True  # the CancelledError the call's reads now raise is ours, not a stop
            self._grpc_call.cancel()

    async def stop(self) -> None:
        await cancel_and_wait(self.task)

    # -- the call's life --------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        failures = 0
        while True:
            while self.spec.active in self.r.rt.faults.partitioned:  # an injected fault: no call
                await asyncio.sleep(PARTITION_CHECK_S)
            started = time.monotonic()
            batched = self._batched
            try:
                try:
                    await self._call()
                except asyncio.CancelledError:
                    if asyncio.current_task().cancelling() or not self._cut_off:
                        raise  # the link is stopping
                    self._cut_off = False  # partition_changed cancelled the gRPC call, not this task
                    raise LinkError("partitioned from the producer (an injected fault)") from None
                reason = "the producer ended the call"
            except grpc.aio.AioRpcError as exc:
                if batched and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    # An older producer: Stream at once (the next call, after one ending
                    # otherwise, tries StreamBatched again, for a producer upgraded meanwhile).
                    log.info("replication %s: the producer does not serve StreamBatched; using Stream", self.name)
                    self._batched = False
                    continue  # (the `finally` below disconnects)
                reason = f"{exc.code().name}: {exc.details()}"
            except (LinkError, StreamProtocolError) as exc:
                reason = str(exc)
            except EngineError as exc:
                reason = f"engine: {exc}"
            except Exception as exc:  # a bug: logged in full, and the call is reopened all the same
                log.exception("replication %s: call failed", self.name)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._disconnected()
            if not batched:
                self._batched = True
            if time.monotonic() - started > RECONNECT_RESET_S:
                delay, failures = RECONNECT_MIN_S, 0
            failures += 1
            level = logging.INFO if failures <= 1 or failures % 50 == 0 else logging.DEBUG
            log.log(level, "replication %s: call ended (%s); reopening in %.2f s", self.name, reason, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _disconnected(self) -> None:
        self._generation += 1
        self._out = None
        self._held = None
        self._waiting_since = None
        for vbid in self.spec.vbuckets:
            if self.replicas.owners.get(vbid) is self:
                del self.replicas.owners[vbid]
                consumer = self.replicas.consumers.get(vbid)
                if consumer is not None:
                    consumer.disconnected()

    async def _call(self) -> None:
        spec, rt = self.spec, self.r.rt
        stub = replication_pb2_grpc.ReplicationStub(self.r.channel(spec.address))
        batched = self._batched
        metadata = bearer_metadata(self.r.secret())
        call = stub.StreamBatched(metadata=metadata) if batched else stub.Stream(metadata=metadata)
        self._grpc_call = call
        tasks: list[asyncio.Future] = []
        try:
            epoch, revision = rt.version
            open_ = pb.Open(
                consumer_node_id=rt.node_id,
                bucket=spec.bucket.config.name,
                bucket_uuid=spec.bucket_uuid,
                buffer_bytes=self._window,
                noop_interval_ms=NOOP_INTERVAL_MS,
                config_epoch=epoch,
                config_revision=revision,
            )
            opening = pb.ReplicaMessage(open=open_)
            await call.write(pb.ReplicaMessageBatch(messages=[opening]) if batched else opening)
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                received = await self._receive(call, batched)
            if not received or wi.which(received[0]) != "open_response":
                raise LinkError("the producer did not answer Open")
            first, rest = received[0], received[1:]
            response = first.open_response
            if response.status != Status.SUCCESS:
                status = next((s.name for s in Status if s == response.status), str(response.status))
                raise LinkError(f"Open refused: {status} {response.message[:200]}")
            interval_s = (response.noop_interval_ms or NOOP_INTERVAL_MS) / 1000
            self._out = asyncio.Queue()
            self._unacked_bytes = 0
            generation = self._generation
            for vbid in spec.vbuckets:
                self.replicas.owners[vbid] = self
                consumer = self.replicas.consumer(vbid)
                if consumer.state is not sc.ConsumerState.IDLE:
                    consumer.disconnected()  # left over from a call that ended without saying so
                self._request(vbid, generation)
            log.info("replication %s: streaming vbuckets %s", self.name, _ranges(spec.vbuckets))
            tasks = [
                asyncio.ensure_future(self._write(call, self._out, batched)),
                asyncio.ensure_future(self._read(call, interval_s, batched, rest)),
                asyncio.ensure_future(self._tick(interval_s)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise what ended it
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()
            self._grpc_call = None

    async def _write(self, call, out: asyncio.Queue, batched: bool) -> None:
        pending: deque[tuple[float, pb.ReplicaMessage | list[pb.ReplicaMessage]]] = deque()  # (queued at, entry)
        while True:
            if not pending:
                pending.append(await out.get())
            await let_ready_work_run()  # the acks of what is being applied join these (coalesce.py)
            while not out.empty():
                pending.append(out.get_nowait())
            delay = self.r.rt.faults.replication_delay_s  # an injected fault (node_faults.py)
            wait = pending[0][0] + delay - time.monotonic() if delay else 0.0
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # what came meanwhile joins, if it is due too
            now = time.monotonic()
            batch: list[pb.ReplicaMessage] = []
            while pending and pending[0][0] + delay <= now:
                entry = pending.popleft()[1]
                if isinstance(entry, list):
                    batch += entry
                else:
                    batch.append(entry)
            messages = wi.coalesce_acks(batch)
            if messages and self.r.rt.faults.drop():
                raise LinkError("a message lost (an injected fault): the call ends")
            if batched:
                for envelope in wi.batches(messages):
                    await call.write(envelope)
            else:
                for message in messages:
                    await call.write(message)
            self._last_sent = time.monotonic()

    @staticmethod
    async def _receive(call, batched: bool) -> list[pb.ProducerMessage] | None:
        """The producer messages of the next stream message (None: the call ended)."""
        received = await call.read()
        if received is grpc.aio.EOF:
            return None
        return list(received.messages) if batched else [received]

    async def _read(self, call, interval_s: float, batched: bool, rest: list[pb.ProducerMessage]) -> None:
        messages: list[pb.ProducerMessage] | None = rest
        while True:
            if messages:
                # Everything carrying out this batch produces leaves together (module docstring).
                self._held = held = []
                try:
                    for message in messages:
                        later = self._on_message(message)
                        if later is not None:
                            await later
                finally:
                    if self._held is held:
                        self._held = None
                if held and self._out is not None:
                    self._out.put_nowait((time.monotonic(), held))
            # Bounded by `_tick` (a timer per read would cost a task and a timer handle per message).
            self._waiting_since = time.monotonic()
            messages = await self._receive(call, batched)
            self._waiting_since = None
            if messages is None:
                return

    async def _tick(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(min(BUFFER_ACK_INTERVAL_S, interval_s) / 2)
            now = time.monotonic()
            if self.spec.active in self.r.rt.faults.partitioned:
                raise LinkError("partitioned from the producer (an injected fault)")
            waiting_since = self._waiting_since
            if waiting_since is not None and now - waiting_since > 2 * interval_s:
                # The producer sends a Noop every interval: it is gone (applying a long snapshot
                # here does not count, the reader is not waiting then).
                raise LinkError(f"nothing heard for {now - waiting_since:.1f} s")
            if self._unacked_bytes and now - self._last_buffer_ack >= BUFFER_ACK_INTERVAL_S:
                self._buffer_ack()
            elif now - self._last_sent >= interval_s:
                # Heard by the producer even while a long snapshot is being applied (the reader
                # answers its Noops only between messages): never held back with a batch's answers.
                self._send(wi.noop_replica(0), hold=False)

    # -- sending ------------------------------------------------------------------------------------
    def _send(self, message: pb.ReplicaMessage, *, hold: bool = True) -> None:
        """Queue `message`; while a batch is being carried out, with that batch's answers (in order)."""
        if self._out is None:
            return
        if hold and self._held is not None:
            self._held.append(message)
        else:
            self._out.put_nowait((time.monotonic(), message))

    def send_acks(self, actions: Sequence[sc.Action]) -> None:
        """SeqnoAcks from a persistence advance (the consumer only acks while streaming)."""
        for action in actions:
            assert isinstance(action, SeqnoAck), action
            self._send(wi.replica_to_proto(action))

    def _request(self, vbid: int, generation: int) -> None:
        if generation != self._generation or self._out is None:
            return  # a later call took over
        consumer = self.replicas.consumers.get(vbid)
        if consumer is not None and consumer.state is sc.ConsumerState.IDLE:
            self._send(wi.replica_to_proto(consumer.stream_request()))

    def _request_later(self, vbid: int, delay_s: float) -> None:
        asyncio.get_running_loop().call_later(delay_s, self._request, vbid, self._generation)

    def _buffer_ack(self) -> None:
        nbytes, self._unacked_bytes = self._unacked_bytes, 0
        self._last_buffer_ack = time.monotonic()
        self._send(wi.replica_to_proto(BufferAck(nbytes)))

    def _count(self, value: ProducerMessage) -> None:
        """The call's window: count a processed flow-controlled message, return the bytes when due."""
        if self._window and isinstance(value, SnapshotMarker | ItemBatch):
            self._unacked_bytes += wire_size(value)
            if self._unacked_bytes >= self._window * BUFFER_ACK_RATIO:
                self._buffer_ack()


def _ranges(vbids: Sequence[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2,5,7-8' for the log."""
    out: list[str] = []
    for vbid in sorted(vbids):
        if out and vbid == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{vbid}"
        else:
            out.append(str(vbid))
    return ",".join(out)

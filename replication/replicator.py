"""The consumer side of replication: a node copying the vbuckets it is a replica of from their actives.

Owns the shell around `stream_consumer.StreamConsumer` (proto/replication.proto, DESIGN §5):
from the configuration the node runs, per bucket and per active node this node replicates
from, ONE `Replication.Stream` call (`_Link`) carrying all those vbuckets; per replica
vbucket one consumer, built from the engine's own state (`engine.replica_state`) and kept
across reconnects of its call. The consumer's actions are carried out in order against the
engine: AdoptFailoverLog -> `set_failover_log`, Apply -> `apply_snapshot`, Rollback ->
`rollback` then `consumer.rolled_back`, SeqnoAck sent. A broken call is reopened with backoff
(each vbucket re-requested from its last complete snapshot); a new configuration re-plans
the calls (`Replicator.replan`): a call whose vbuckets, active or bucket changed is closed
and a new one opened, the others keep running.

Must never: decide what to apply, ack or roll back (the consumer core does), apply anything
to a vbucket that is not a replica here (checked under the bucket lock with the apply), or
hold the bucket lock across an await.

Threads: consumers and links live on the event loop thread. The engine's
`on_replica_persisted` hook runs under the bucket lock on the WAL flusher thread; it only
records the seqno and schedules the loop (`_BucketReplicas.on_persisted`). Rollbacks, and
snapshots of more than APPLY_INLINE_ITEMS_MAX items, run in a worker thread (under the bucket
lock) while the call's reader waits for them, so their order is kept and the loop stays free.

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
import contextlib
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import grpc

from durakv.engine import records
from durakv.engine.embedded import EmbeddedBucket
from durakv.engine.errors import EngineError, Status
from durakv.engine.replica import ReplicaItem
from durakv.engine.vbucket import VBState
from durakv.proto import replication_pb2 as pb
from durakv.proto import replication_pb2_grpc

from . import stream_consumer as sc
from . import wire_items as wi
from .auth import bearer_metadata
from .coalesce import let_ready_work_run
from .items import (
    BUFFER_ACK_RATIO,
    STREAM_BUFFER_BYTES_DEFAULT,
    Abort,
    BufferAck,
    Commit,
    Deletion,
    Expiration,
    Item,
    ItemBatch,
    Mutation,
    Prepare,
    ProducerMessage,
    SeqnoAck,
    SnapshotMarker,
    StreamEndReason,
    StreamProtocolError,
    document_of,
    wire_size,
)

log = logging.getLogger("durakv.node.replicator")

RECONNECT_MIN_S, RECONNECT_MAX_S = 0.05, 2.0  # backoff between attempts to (re)open a call
RECONNECT_RESET_S = 10.0  # a call that lived this long starts the backoff over
OPEN_TIMEOUT_S = 5.0  # the OpenResponse must arrive within this
REREQUEST_SOON_S = 0.05  # a stream ended for a reason the producer recovers from at once
REREQUEST_LATER_S = 0.5  # the producer is not (yet) the active: wait for the configurations to agree
BUFFER_ACK_INTERVAL_S = 1.0  # processed bytes are returned at least this often
NOOP_INTERVAL_MS = 1000  # asked of the producer; the call ends after two without a word
PARTITION_CHECK_S = 0.1  # a link partitioned from its producer looks again this often
APPLY_INLINE_ITEMS_MAX = 512  # larger snapshots are applied in a worker thread (under the bucket lock)


# -- items to the engine --------------------------------------------------------------------------
def replica_item(item: Item) -> ReplicaItem:
    """The engine's form of one applied item (SeqnoAdvanced never reaches an Apply)."""
    match item:
        case Mutation():
            return ReplicaItem(records.Kind.MUTATION, item.collection_id, item.key, document_of(item), 0, 0, item.seqno)
        case Deletion():
            return ReplicaItem(records.Kind.DELETION, item.collection_id, item.key, document_of(item), 0, 0, item.seqno)
        case Expiration():
            doc = document_of(item)
            return ReplicaItem(records.Kind.EXPIRATION, item.collection_id, item.key, doc, 0, 0, item.seqno)
        case Prepare():
            level = int(item.level)
            return ReplicaItem(
                records.Kind.PREPARE, item.collection_id, item.key, document_of(item), level, 0, item.seqno
            )
        case Commit():
            kind = records.Kind.COMMIT
            return ReplicaItem(kind, item.collection_id, item.key, None, 0, item.prepared_seqno, item.commit_seqno)
        case Abort():
            kind = records.Kind.ABORT
            return ReplicaItem(kind, item.collection_id, item.key, None, 0, item.prepared_seqno, item.abort_seqno)
    raise TypeError(f"not an applicable item: {item!r}")


class _LinkError(Exception):
    """The call cannot go on (refused Open, protocol error, nothing heard): reconnect."""


# -- the replica vbuckets of one bucket -------------------------------------------------------------
class _BucketReplicas:
    """The consumers of one bucket's replica vbuckets, and its `on_replica_persisted` hook."""

    def __init__(self, bucket: EmbeddedBucket, loop: asyncio.AbstractEventLoop) -> None:
        self.bucket = bucket
        self.loop = loop
        self.consumers: dict[int, sc.StreamConsumer] = {}
        self.owners: dict[int, _Link] = {}  # the link each vbucket's stream runs on
        self._persisted: dict[int, int] = {}  # vbid -> seqno, not yet handed to the consumers
        self._lock = threading.Lock()
        self._scheduled = False
        with bucket.lock:
            bucket.engine.on_replica_persisted = self.on_persisted

    def consumer(self, vbid: int) -> sc.StreamConsumer:
        """The vbucket's consumer, (re)built from the engine when there is none or it was mid-rollback."""
        consumer = self.consumers.get(vbid)
        if consumer is None or consumer.state is sc.ConsumerState.ROLLING_BACK:
            with self.bucket.lock:
                state = self.bucket.engine.replica_state(vbid)
            consumer = sc.StreamConsumer(vbid, state=_replica_state(state), buffer_bytes=0)
            self.consumers[vbid] = consumer
        return consumer

    def forget(self, keep: set[int]) -> None:
        for vbid in [v for v in self.consumers if v not in keep]:
            del self.consumers[vbid]
            self.owners.pop(vbid, None)

    def on_persisted(self, vbid: int, seqno: int) -> None:
        """The engine hook (bucket lock held, any thread): the WAL is fsynced to `seqno` of `vbid`."""
        with self._lock:
            if seqno > self._persisted.get(vbid, 0):
                self._persisted[vbid] = seqno
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: the node is stopping
            pass

    def _deliver(self) -> None:
        with self._lock:
            persisted, self._persisted = self._persisted, {}
            self._scheduled = False
        for vbid, seqno in persisted.items():
            consumer = self.consumers.get(vbid)
            if consumer is None or consumer.state is sc.ConsumerState.ROLLING_BACK:
                continue
            # Persistence reported for data a rollback has since removed says nothing of what
            # replaced it: never past the consumer's high seqno.
            actions = consumer.persisted(min(seqno, consumer.high_seqno))
            owner = self.owners.get(vbid)
            if owner is not None:
                owner.send_acks(actions)


def _replica_state(state) -> sc.ReplicaState:
    if isinstance(state, sc.ReplicaState):
        return state
    return sc.ReplicaState(
        failover_log=tuple((int(u), int(s)) for u, s in state.failover_log),
        snapshot_start=state.snapshot_start,
        high_seqno=state.high_seqno,
        high_prepared_seqno=state.high_prepared_seqno,
        high_completed_seqno=state.high_completed_seqno,
        prepares=tuple(state.prepares),
        persisted_seqno=state.persisted_seqno,
    )


# -- one call ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LinkSpec:
    bucket: EmbeddedBucket
    bucket_uuid: str
    active: str
    address: str
    vbuckets: tuple[int, ...]


class _Link:
    """The call copying `spec.vbuckets` of one bucket from one active node, reopened until stopped."""

    def __init__(self, replicator: Replicator, spec: _LinkSpec, replicas: _BucketReplicas) -> None:
        self.r = replicator
        self.spec = spec
        self.replicas = replicas
        self.name = f"{spec.bucket.config.name}<-{spec.active}"
        self._out: asyncio.Queue[pb.ReplicaMessage | list[pb.ReplicaMessage]] | None = None
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
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

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
                    raise _LinkError("partitioned from the producer (an injected fault)") from None
                reason = "the producer ended the call"
            except grpc.aio.AioRpcError as exc:
                if batched and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    # An older producer: Stream at once (the next call, after one ending
                    # otherwise, tries StreamBatched again, for a producer upgraded meanwhile).
                    log.info("replication %s: the producer does not serve StreamBatched; using Stream", self.name)
                    self._batched = False
                    continue  # (the `finally` below disconnects)
                reason = f"{exc.code().name}: {exc.details()}"
            except (_LinkError, StreamProtocolError) as exc:
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
            received = await asyncio.wait_for(self._receive(call, batched), OPEN_TIMEOUT_S)
            if not received or wi.which(received[0]) != "open_response":
                raise _LinkError("the producer did not answer Open")
            first, rest = received[0], received[1:]
            response = first.open_response
            if response.status != Status.SUCCESS:
                status = next((s.name for s in Status if s == response.status), str(response.status))
                raise _LinkError(f"Open refused: {status} {response.message[:200]}")
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
        while True:
            queued = [await out.get()]
            await let_ready_work_run()  # the acks of what is being applied join these (coalesce.py)
            while not out.empty():
                queued.append(out.get_nowait())
            batch: list[pb.ReplicaMessage] = []
            for entry in queued:
                if isinstance(entry, list):
                    batch += entry
                else:
                    batch.append(entry)
            messages = wi.coalesce_acks(batch)
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
                    self._out.put_nowait(held)
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
                raise _LinkError("partitioned from the producer (an injected fault)")
            waiting_since = self._waiting_since
            if waiting_since is not None and now - waiting_since > 2 * interval_s:
                # The producer sends a Noop every interval: it is gone (applying a long snapshot
                # here does not count, the reader is not waiting then).
                raise _LinkError(f"nothing heard for {now - waiting_since:.1f} s")
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
            self._out.put_nowait(message)

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

    # -- producer messages --------------------------------------------------------------------------
    def _on_message(self, message: pb.ProducerMessage) -> Awaitable[None] | None:
        """Carry out one producer message: at once, or (a rollback, a large apply) in what it returns to await."""
        kind = wi.which(message)
        if kind == "noop":
            self._send(wi.noop_replica(message.noop.sequence))
            return None
        value = wi.producer_from_proto(message)  # WireError: the call ends
        vbid = value.vbucket
        consumer = self.replicas.consumers.get(vbid)
        if consumer is None or self.replicas.owners.get(vbid) is not self:
            raise _LinkError(f"a message for vbucket {vbid}, not streamed on this call")
        with self._engine_refusals(vbid):
            actions = consumer.on_message(value)
            done = self._carry_out_now(vbid, actions)
        if done < len(actions):
            return self._carry_out_later(vbid, consumer, actions[done:], value)
        self._count(value)
        return None

    async def _carry_out_later(
        self, vbid: int, consumer: sc.StreamConsumer, actions: Sequence[sc.Action], value: ProducerMessage
    ) -> None:
        with self._engine_refusals(vbid):
            await self._carry_out(vbid, consumer, actions)
        self._count(value)

    @contextlib.contextmanager
    def _engine_refusals(self, vbid: int):
        try:
            yield
        except EngineError as exc:
            if isinstance(exc, StreamProtocolError):
                raise
            # The consumer has moved on and the engine has not: rebuild it from the engine.
            self.replicas.consumers.pop(vbid, None)
            raise _LinkError(f"vbucket {vbid}: the engine refused {type(exc).__name__}: {exc}") from exc

    def _count(self, value: ProducerMessage) -> None:
        """The call's window: count a processed flow-controlled message, return the bytes when due."""
        if self._window and isinstance(value, SnapshotMarker | ItemBatch):
            self._unacked_bytes += wire_size(value)
            if self._unacked_bytes >= self._window * BUFFER_ACK_RATIO:
                self._buffer_ack()

    def _carry_out_now(self, vbid: int, actions: Sequence[sc.Action]) -> int:
        """Carry out the actions that need no waiting, in order; the index of the first that does."""
        for index, action in enumerate(actions):
            match action:
                case sc.Apply() if len(action.items) <= APPLY_INLINE_ITEMS_MAX:
                    self._apply(vbid, action)
                case sc.Apply() | sc.Rollback():
                    return index
                case _:
                    self._carry_out_simple(vbid, action)
        return len(actions)

    async def _carry_out(self, vbid: int, consumer: sc.StreamConsumer, actions: Sequence[sc.Action]) -> None:
        bucket = self.spec.bucket
        for action in actions:
            match action:
                case sc.Apply():
                    if len(action.items) <= APPLY_INLINE_ITEMS_MAX:
                        self._apply(vbid, action)
                    else:  # a large backfill: the loop keeps answering Noops and serving KV meanwhile
                        await asyncio.get_running_loop().run_in_executor(None, self._apply, vbid, action)
                case sc.Rollback():
                    # In a worker thread: it waits for a checkpoint in flight (so it can be exact).
                    rolling = asyncio.get_running_loop().run_in_executor(None, bucket.rollback, vbid, action.seqno)
                    try:
                        result = await asyncio.shield(rolling)
                    except asyncio.CancelledError:
                        # The consumer stays ROLLING_BACK and is rebuilt from the engine by the next
                        # call: the engine must be done by then.
                        with contextlib.suppress(Exception):
                            await rolling
                        raise
                    level = logging.INFO if consumer.high_seqno else logging.DEBUG  # an empty copy undoes nothing
                    log.log(level, "replication %s: vb %d rolled back to %d", self.name, vbid, result.high_seqno)
                    more = consumer.rolled_back(
                        result.high_seqno, prepares=result.prepares, high_completed_seqno=result.high_completed_seqno
                    )
                    await self._carry_out(vbid, consumer, more)
                    self._request(vbid, self._generation)
                case _:
                    self._carry_out_simple(vbid, action)

    def _carry_out_simple(self, vbid: int, action: sc.Action) -> None:
        """An action carried out at once: adopt a failover log, schedule a re-request, send an ack."""
        match action:
            case sc.AdoptFailoverLog():
                bucket = self.spec.bucket
                with bucket.lock:
                    self._check_replica(vbid)
                    bucket.engine.set_failover_log(vbid, list(action.failover_log))
            case sc.StreamRefused():
                delay = REREQUEST_LATER_S if action.status is not Status.TMPFAIL else REREQUEST_SOON_S * 4
                self._request_later(vbid, delay)
            case sc.StreamEnded():
                if action.reason is StreamEndReason.STATE_CHANGED:
                    self._request_later(vbid, REREQUEST_LATER_S)
                elif action.reason not in (StreamEndReason.CLOSED, StreamEndReason.OK):
                    self._request_later(vbid, REREQUEST_SOON_S)
            case SeqnoAck() | BufferAck():
                self._send(wi.replica_to_proto(action))
            case _:
                raise AssertionError(f"not a simple action: {action!r}")

    def _apply(self, vbid: int, apply: sc.Apply) -> None:
        items = [replica_item(i) for i in apply.items]
        bucket = self.spec.bucket
        with bucket.lock:
            self._check_replica(vbid)
            bucket.engine.apply_snapshot(
                vbid,
                apply.snapshot_start,
                apply.snapshot_end,
                apply.disk,
                items,
                apply.resolved_prepares,
                apply.high_completed_seqno,
            )

    def _check_replica(self, vbid: int) -> None:
        """Under the bucket lock: the vbucket is still a replica here (a configuration may have just changed)."""
        state = self.spec.bucket.engine.vbuckets[vbid].state
        if state is not VBState.REPLICA:
            self.replicas.consumers.pop(vbid, None)  # its view is no longer the engine's
            raise _LinkError(f"vbucket {vbid} is {state.value} here now")


# -- the replicator ---------------------------------------------------------------------------------
class Replicator:
    """Every replication call this node makes, following the configuration it runs."""

    def __init__(
        self, runtime, *, channel_options: Sequence[tuple[str, object]] = (), buffer_bytes=STREAM_BUFFER_BYTES_DEFAULT
    ) -> None:
        self.rt = runtime
        self.buffer_bytes = buffer_bytes
        self._channel_options = list(channel_options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        self._replicas: dict[str, _BucketReplicas] = {}
        self._stopped = False
        self._replan_lock = asyncio.Lock()

    def partition_changed(self) -> None:
        """The partitioned peers changed (an injected fault): calls to them end now."""
        for link in self._links.values():
            link.partition_changed()

    def replica_hps(self, bucket_name: str, vbid: int) -> int | None:
        """The HPS this node acknowledges for its replica copy of `vbid` (None: no consumer for it yet)."""
        replicas = self._replicas.get(bucket_name)
        consumer = None if replicas is None else replicas.consumers.get(vbid)
        return None if consumer is None else consumer.high_prepared_seqno

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=self._channel_options)
            self._channels[address] = channel
        return channel

    def secret(self) -> str:
        push = self.rt.push
        return push.cluster_secret if push is not None and push.cluster_secret else self.rt.file_secret

    def _plan(self) -> dict[tuple[str, str], _LinkSpec]:
        rt = self.rt
        if rt.config is None or self._stopped:
            return {}
        addresses = {n.node_id: n.address for n in rt.config.nodes}
        want: dict[tuple[str, str], _LinkSpec] = {}
        for name, plan in rt.plans.items():
            bucket = rt.buckets.get(name)
            if bucket is None:
                continue
            groups: dict[str, list[int]] = defaultdict(list)
            for vbid, vb_plan in enumerate(plan.vbuckets):
                chain = vb_plan.chain
                if vb_plan.state is VBState.REPLICA and chain is not None and chain.active != rt.node_id:
                    groups[chain.active].append(vbid)
            for active, vbids in groups.items():
                address = addresses.get(active)
                if address:
                    want[(name, active)] = _LinkSpec(bucket, plan.uuid, active, address, tuple(vbids))
        return want

    async def replan(self) -> None:
        """Match the calls to the configuration the node runs now (after each one applied)."""
        async with self._replan_lock:
            want = self._plan()
            stale = [key for key, link in self._links.items() if want.get(key) != link.spec]
            for key in stale:
                await self._links.pop(key).stop()
            # Buckets dropped or re-created lose their consumers; vbuckets no longer replicas here too.
            for name in [n for n, r in self._replicas.items() if self.rt.buckets.get(n) is not r.bucket]:
                del self._replicas[name]
            keep: dict[str, set[int]] = defaultdict(set)
            for (name, _), spec in want.items():
                keep[name].update(spec.vbuckets)
            for name, replicas in self._replicas.items():
                replicas.forget(keep.get(name, set()))
            loop = asyncio.get_running_loop()
            for key, spec in want.items():
                if key in self._links:
                    continue
                name = key[0]
                replicas = self._replicas.get(name)
                if replicas is None:
                    replicas = self._replicas[name] = _BucketReplicas(spec.bucket, loop)
                self._links[key] = _Link(self, spec, replicas)

    async def stop(self) -> None:
        self._stopped = True
        async with self._replan_lock:
            for link in list(self._links.values()):
                await link.stop()
            self._links.clear()
            for channel in self._channels.values():
                await channel.close()
            self._channels.clear()


def _ranges(vbids: Sequence[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2,5,7-8' for the log."""
    out: list[str] = []
    for vbid in sorted(vbids):
        if out and vbid == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{vbid}"
        else:
            out.append(str(vbid))
    return ",".join(out)

"""The KV gRPC service (kv.proto): each request checked, routed to its bucket's engine, answered with a status.

Owns: checking the caller's role on the bucket, the NOT_MY_VBUCKET answer with the node's
newer configuration, and Batch, Pipeline and PipelineBatched scheduling; each operation
itself (kv.proto message <-> engine call, and what the engine does not check) is
kv_ops.py's. The request's `timeout_ms` bounds how long the node waits for a durable write
on the caller's behalf (then SYNC_WRITE_AMBIGUOUS).

Must never: decide KV semantics (the engine does), block the event loop beyond one short
engine call under the bucket lock, or end a call with a gRPC error for a KV refusal: every
outcome is a `Status` in the response; gRPC codes are for authentication and transport only.

Ordering: Batch items and Pipeline items start in arrival order (each engine call runs to
completion before the next item's starts, on the one loop thread); durable writes then wait
concurrently and are answered as they complete. PipelineBatched is the same per item; its
answers leave in as few messages as possible: one for everything a request message could
answer at once, and one for whatever else became ready while the previous one was written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import grpc

from durakv.engine.errors import KVError, Status
from durakv.proto import kv_pb2, kv_pb2_grpc
from durakv.replication.auth import Principal, caller_or_abort
from durakv.replication.coalesce import let_ready_work_run
from durakv.replication.grpc_handlers import MALFORMED
from durakv.replication.kv_ops import (
    AHEAD_STATUSES,
    OPS,
    KVOp,
    WrongVBucket,
    check_header,
    checked_bucket_name,
)

log = logging.getLogger("durakv.node.kv")

BATCH_OPS_MAX = 10_000  # operations in one Batch; clients split larger ones
PIPELINE_IN_FLIGHT_MAX = 256  # per stream; the node stops reading while this many are running
# One OpResponseBatch holds at most this many answers, and more than one only while it stays
# under this size (a value can be 20 MiB; a message must stay under the 32 MiB limit).
ANSWERS_PER_MESSAGE_MAX = 1024
ANSWER_BYTES_PER_MESSAGE_MAX = 1024 * 1024


class KVService(kv_pb2_grpc.KVServicer):
    """kv.proto's KV service over a node runtime (node_server.NodeRuntime)."""

    def __init__(self, runtime) -> None:
        self.rt = runtime

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal | None:
        """The caller, or None when it is a user and the node has no users yet (answered TMPFAIL)."""
        return await caller_or_abort(self.rt.authenticator, context)

    async def execute(self, op: KVOp, request, principal: Principal | None):
        """One operation's response, whatever happens (never raises for a KV refusal)."""
        keyed = op.field != "observe_seqno"
        route = request.header if keyed else request
        bucket_name = route.bucket
        try:
            if self.rt.config is None or principal is None:
                raise KVError(Status.TMPFAIL, "this node has no cluster configuration yet")
            checked_bucket_name(bucket_name)
            if not all(principal.allows(action, bucket_name) for action in op.actions):
                raise KVError(Status.EACCESS, f"no role allows {op.field} on bucket {bucket_name!r}")
            bucket = self.rt.bucket(bucket_name)
            scope, collection = check_header(route, bucket.config.num_vbuckets) if keyed else ("", "")
            wait_s = route.timeout_ms / 1000 if route.timeout_ms else None
            return await op.run(bucket, request, scope, collection, wait_s)
        except KVError as exc:
            client_version = (route.config_epoch, route.config_revision)
            status = exc.status
            if status in AHEAD_STATUSES and client_version > self.rt.version:
                # The client routes with a newer configuration than this node has applied (a
                # bucket or collection created a moment ago): not "unknown", just not here yet.
                status = Status.TMPFAIL
            elif isinstance(exc, WrongVBucket) and (0, 0) < client_version < self.rt.version:
                # A stale map (the bucket was recreated with another vbucket count): re-route.
                status = Status.NOT_MY_VBUCKET
            response = op.response(status=int(status), message=exc.message)
            if status is Status.NOT_MY_VBUCKET and self.rt.version > client_version:
                view = self.rt.bucket_view(bucket_name)
                if view is not None:
                    response.config.CopyFrom(view)
            return response
        except TimeoutError:
            return op.response(
                status=Status.SYNC_WRITE_AMBIGUOUS,
                message="the request's timeout passed before the durable write completed",
            )
        except Exception:
            log.exception("%s on bucket %r failed", op.field, bucket_name[:100])
            return op.response(status=Status.EINTERNAL, message="internal error; see the node's log")

    async def item(self, item: kv_pb2.OpRequest, principal: Principal | None) -> kv_pb2.OpResponse:
        if item is MALFORMED:
            return kv_pb2.OpResponse(status=Status.EINVAL, message="the operation does not decode")
        field = item.WhichOneof("op")
        op = OPS.get(field) if field else None
        if op is None:
            return kv_pb2.OpResponse(
                opaque=item.opaque, status=Status.NOT_SUPPORTED, message="operation unset or unknown to this node"
            )
        inner = await self.execute(op, getattr(item, field), principal)
        response = kv_pb2.OpResponse(opaque=item.opaque)
        getattr(response, field).CopyFrom(inner)
        return response

    def may_wait(self, item: Any) -> bool:
        """Whether an operation can suspend (a durable write waits for its commit); others answer at once."""
        if item is MALFORMED:
            return False
        field = item.WhichOneof("op")
        if field is None:
            return False
        inner = getattr(item, field)
        if getattr(inner, "durability_level", 0):
            return True
        bucket = self.rt.buckets.get(inner.header.bucket) if hasattr(inner, "header") else None
        return bucket is None or bucket.config.durability_min_level > 0

    async def Batch(self, request, context):
        principal = await self.principal(context)
        if len(request.ops) > BATCH_OPS_MAX:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"a Batch holds at most {BATCH_OPS_MAX} operations")
        # Items that cannot suspend are answered in order right here; the others run as tasks
        # (started in order, each running its engine call before the next starts).
        answers: list[Any] = []
        for item in request.ops:
            if self.may_wait(item):
                answers.append(asyncio.ensure_future(self.item(item, principal)))
            else:
                answers.append(await self.item(item, principal))
        ops = [await answer if isinstance(answer, asyncio.Future) else answer for answer in answers]
        return kv_pb2.BatchResponse(ops=ops)

    async def Pipeline(self, request_iterator, context):
        principal = await self.principal(context)
        answers: asyncio.Queue[kv_pb2.OpResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(PIPELINE_IN_FLIGHT_MAX)
        running: set[asyncio.Task] = set()

        async def run(item: kv_pb2.OpRequest) -> None:
            try:
                answers.put_nowait(await self.item(item, principal))
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for item in request_iterator:
                    if not self.may_wait(item):
                        # Answered without suspending: no task, no slot (most reads and plain writes).
                        answers.put_nowait(await self.item(item, principal))
                        continue
                    await slots.acquire()  # back-pressure: stop reading while the stream is full
                    task = asyncio.ensure_future(run(item))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:  # the client half-closed: answer what is in flight, then end
                    await asyncio.wait(set(running))
            finally:
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader  # re-raise a read failure (the stream broke)
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def PipelineBatched(self, request_iterator, context):
        principal = await self.principal(context)
        # Headers now, not with the first answer: the client holds its second message until it
        # sees them (client/aio/_pipeline.py, `_served`), and the first answer may be a durable write's.
        await context.send_initial_metadata(())
        ready: deque[kv_pb2.OpResponse] = deque()  # answers not yet written, oldest first
        wake = asyncio.Event()  # set when `ready` gains an answer or reading ends
        slots = asyncio.Semaphore(PIPELINE_IN_FLIGHT_MAX)
        running: set[asyncio.Task] = set()
        reading = True

        def post(answer: kv_pb2.OpResponse) -> None:
            ready.append(answer)
            wake.set()

        async def run(item: kv_pb2.OpRequest) -> None:
            try:
                post(await self.item(item, principal))
            finally:
                slots.release()

        async def read() -> None:
            nonlocal reading
            try:
                async for batch in request_iterator:
                    if batch is MALFORMED:
                        post(kv_pb2.OpResponse(status=Status.EINVAL, message="the batch does not decode"))
                        continue
                    if len(batch.ops) > BATCH_OPS_MAX:
                        raise _TooManyOps(f"a PipelineBatched message holds at most {BATCH_OPS_MAX} operations")
                    for item in batch.ops:
                        if not self.may_wait(item):
                            # Answered without suspending, so every such item of this message is
                            # posted before the writer's next turn: they leave in one message.
                            post(await self.item(item, principal))
                            continue
                        await slots.acquire()  # back-pressure (the answers so far are written meanwhile)
                        task = asyncio.ensure_future(run(item))
                        running.add(task)
                        task.add_done_callback(running.discard)
                while running:  # the client half-closed: answer what is in flight, then end
                    await asyncio.wait(set(running))
            finally:
                reading = False
                wake.set()

        reader = asyncio.ensure_future(read())
        try:
            while True:
                if not ready:
                    if not reading:
                        break
                    wake.clear()
                    await wake.wait()
                    await let_ready_work_run()  # answers released together leave together (coalesce.py)
                    continue
                yield kv_pb2.OpResponseBatch(ops=_take(ready))
            try:
                await reader  # re-raise a read failure (the stream broke)
            except _TooManyOps as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()


class _TooManyOps(Exception):
    """A PipelineBatched message beyond BATCH_OPS_MAX: the call ends RESOURCE_EXHAUSTED."""


def _take(ready: deque[kv_pb2.OpResponse]) -> list[kv_pb2.OpResponse]:
    """The oldest answers that fit one message (at least one, whatever its size)."""
    taken = [ready.popleft()]
    size = taken[0].ByteSize()
    while ready and len(taken) < ANSWERS_PER_MESSAGE_MAX:
        size += ready[0].ByteSize()
        if size > ANSWER_BYTES_PER_MESSAGE_MAX:
            break
        taken.append(ready.popleft())
    return taken


def _unary(field: str):
    op = OPS[field]

    async def method(self: KVService, request, context):
        return await self.execute(op, request, await self.principal(context))

    method.__name__ = "".join(part.title() for part in field.split("_"))
    return method


for _field in OPS:
    setattr(KVService, _unary(_field).__name__, _unary(_field))

"""The KV gRPC service (kv.proto): each request checked, routed to its bucket's engine, answered with a status.

Owns: the mapping between kv.proto messages and engine calls (the same calls, with the same
arguments, as the SDK's embedded backend makes: client/_backends.py), what the engine does
not check itself (the header's vbucket is the key's, bucket/scope/collection names, the
caller's role on the bucket), the NOT_MY_VBUCKET answer with the node's newer
configuration, and Batch, Pipeline and PipelineBatched scheduling. The request's
`timeout_ms` bounds how long the node waits for a durable write on the caller's behalf
(then SYNC_WRITE_AMBIGUOUS).

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
import functools
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from durakv.engine.document import store_key
from durakv.engine.embedded import EmbeddedBucket
from durakv.engine.errors import KVError, Status
from durakv.engine.expiry import is_expired
from durakv.engine.keys import check_key, vbucket_of
from durakv.engine.limits import KEY_LEN_MAX_DEFAULT_COLLECTION, NAME_LEN_MAX
from durakv.engine.manifest import DEFAULT_NAME, check_bucket_name
from durakv.engine.vbucket import VBState
from durakv.proto import kv_pb2, kv_pb2_grpc
from durakv.replication import rollback
from durakv.replication.auth import Principal, caller_or_abort
from durakv.replication.coalesce import let_ready_work_run
from durakv.replication.grpc_handlers import MALFORMED
from durakv.replication.users import Action

log = logging.getLogger("durakv.node.kv")

BATCH_OPS_MAX = 10_000  # operations in one Batch; clients split larger ones
PIPELINE_IN_FLIGHT_MAX = 256  # per stream; the node stops reading while this many are running
# One OpResponseBatch holds at most this many answers, and more than one only while it stays
# under this size (a value can be 20 MiB; a message must stay under the 32 MiB limit).
ANSWERS_PER_MESSAGE_MAX = 1024
ANSWER_BYTES_PER_MESSAGE_MAX = 1024 * 1024

_NAME_RE = re.compile(rf"[A-Za-z0-9_%\-]{{1,{NAME_LEN_MAX}}}")
READ, WRITE = (Action.READ,), (Action.WRITE,)
# A valid name stays valid: each is checked once (a refused one raises every time, uncached).
_check_bucket_name = functools.lru_cache(maxsize=256)(check_bucket_name)


@dataclass(frozen=True)
class _Op:
    field: str  # the op's name in OpRequest/OpResponse
    response: type
    actions: tuple[Action, ...]
    run: Callable[..., Awaitable[Any]]  # (bucket, request, scope, collection, wait_s) -> response


# -- handlers: request -> engine call -> response (as client/_backends.py) --------------------
def _read(out, is_replica: bool = False) -> kv_pb2.GetResponse:
    return kv_pb2.GetResponse(
        cas=out.cas, value=out.value, flags=out.flags, expiry=out.expiry, vbucket=out.vbucket, is_replica=is_replica
    )


def _mutation(out) -> kv_pb2.MutationResponse:
    return kv_pb2.MutationResponse(
        cas=out.cas, seqno=out.seqno, vbucket=out.vbucket, vbucket_uuid=out.vbucket_uuid, counter=out.counter
    )


def _durable(r) -> dict[str, Any]:
    return {"level": int(r.durability_level), "timeout_ms": r.durability_timeout_ms or None}


async def _get(b: EmbeddedBucket, r, s, c, wait_s):
    return _read(await b.call_async("get", s, c, r.header.key, time.time()))


async def _exists(b, r, s, c, wait_s):
    exists, cas = await b.call_async("exists", s, c, r.header.key, time.time())
    return kv_pb2.ExistsResponse(exists=exists, cas=cas)


async def _insert(b, r, s, c, wait_s):
    return _mutation(
        await b.call_async(
            "insert", s, c, r.header.key, r.value, r.flags, time.time(), expiry=r.expiry, wait_s=wait_s, **_durable(r)
        )
    )


async def _upsert(b, r, s, c, wait_s):
    return _mutation(
        await b.call_async(
            "upsert",
            s,
            c,
            r.header.key,
            r.value,
            r.flags,
            time.time(),
            expiry=r.expiry,
            preserve_expiry=r.preserve_expiry,
            wait_s=wait_s,
            **_durable(r),
        )
    )


async def _replace(b, r, s, c, wait_s):
    return _mutation(
        await b.call_async(
            "replace",
            s,
            c,
            r.header.key,
            r.value,
            r.flags,
            time.time(),
            cas=r.cas,
            expiry=r.expiry,
            preserve_expiry=r.preserve_expiry,
            wait_s=wait_s,
            **_durable(r),
        )
    )


async def _remove(b, r, s, c, wait_s):
    return _mutation(
        await b.call_async("remove", s, c, r.header.key, time.time(), cas=r.cas, wait_s=wait_s, **_durable(r))
    )


async def _touch(b, r, s, c, wait_s):
    return _mutation(await b.call_async("touch", s, c, r.header.key, r.expiry, time.time()))


async def _get_and_touch(b, r, s, c, wait_s):
    return _read(await b.call_async("get_and_touch", s, c, r.header.key, r.expiry, time.time()))


async def _get_and_lock(b, r, s, c, wait_s):
    return _read(await b.call_async("get_and_lock", s, c, r.header.key, r.lock_time_s, time.time()))


async def _unlock(b, r, s, c, wait_s):
    await b.call_async("unlock", s, c, r.header.key, r.cas, time.time())
    return kv_pb2.UnlockResponse()


def _counter(sign: int):
    async def handler(b, r, s, c, wait_s):
        initial = r.initial if r.HasField("initial") else None
        return _mutation(
            await b.call_async(
                "counter",
                s,
                c,
                r.header.key,
                sign * r.delta,
                initial,
                time.time(),
                expiry=r.expiry,
                wait_s=wait_s,
                **_durable(r),
            )
        )

    return handler


def _concat(prepend: bool):
    async def handler(b, r, s, c, wait_s):
        return _mutation(
            await b.call_async(
                "concat",
                s,
                c,
                r.header.key,
                r.value,
                time.time(),
                prepend=prepend,
                cas=r.cas,
                wait_s=wait_s,
                **_durable(r),
            )
        )

    return handler


async def _get_replica(b, r, s, c, wait_s):
    """This node's copy, whatever its role: the active's answer, or a replica's committed version."""
    key, now = r.header.key, time.time()
    with b.lock:
        engine = b.engine
        vbid = vbucket_of(key, engine.config.num_vbuckets)
        state = engine.vbuckets[vbid].state
        if state is VBState.ACTIVE:
            return _read(engine.get(s, c, key, now))
        if state is not VBState.REPLICA:
            raise KVError(Status.NOT_MY_VBUCKET, f"this node holds no copy of vbucket {vbid}", key=key)
        cid = engine.manifest.collection_id(s, c)
        check_key(key, cid)
        doc = engine.committed(store_key(vbid, cid, key))
    if doc is None or doc.deleted or is_expired(doc.expiry, now):
        raise KVError(Status.KEY_ENOENT, "document not found", key=key)
    return kv_pb2.GetResponse(
        cas=doc.cas, value=doc.value, flags=doc.flags, expiry=doc.expiry, vbucket=vbid, is_replica=True
    )


async def _observe_seqno(b, r, s, c, wait_s):
    with b.lock:
        engine = b.engine
        if r.vbucket >= engine.config.num_vbuckets:
            raise KVError(Status.EINVAL, f"vbucket {r.vbucket} out of range 0..{engine.config.num_vbuckets - 1}")
        vb = engine.vbuckets[r.vbucket]
        if vb.state not in (VBState.ACTIVE, VBState.REPLICA):
            raise KVError(Status.NOT_MY_VBUCKET, f"this node holds no copy of vbucket {r.vbucket}")
        response = kv_pb2.ObserveSeqnoResponse(
            vbucket=r.vbucket, vbucket_uuid=vb.uuid, current_seqno=vb.high_seqno, persisted_seqno=vb.persisted_seqno
        )
        if r.vbucket_uuid and r.vbucket_uuid != vb.uuid:
            # The branch the client saw ended where the next newer failover entry starts.
            response.failed_over = True
            response.old_vbucket_uuid = r.vbucket_uuid
            response.old_last_seqno = rollback.branch_upper(vb.failover_log, r.vbucket_uuid, vb.high_seqno) or 0
    return response


_G, _M = kv_pb2.GetResponse, kv_pb2.MutationResponse
_OPS: dict[str, _Op] = {
    op.field: op
    for op in (
        _Op("get", _G, READ, _get),
        _Op("exists", kv_pb2.ExistsResponse, READ, _exists),
        _Op("insert", _M, WRITE, _insert),
        _Op("upsert", _M, WRITE, _upsert),
        _Op("replace", _M, WRITE, _replace),
        _Op("remove", _M, WRITE, _remove),
        _Op("touch", _M, WRITE, _touch),
        _Op("get_and_touch", _G, (Action.READ, Action.WRITE), _get_and_touch),
        _Op("get_and_lock", _G, (Action.READ, Action.WRITE), _get_and_lock),
        _Op("unlock", kv_pb2.UnlockResponse, WRITE, _unlock),
        _Op("increment", _M, WRITE, _counter(1)),
        _Op("decrement", _M, WRITE, _counter(-1)),
        _Op("append", _M, WRITE, _concat(False)),
        _Op("prepend", _M, WRITE, _concat(True)),
        _Op("get_replica", _G, READ, _get_replica),
        _Op("observe_seqno", kv_pb2.ObserveSeqnoResponse, READ, _observe_seqno),
    )
}


class WrongVBucket(KVError):
    """The request's vbucket is not its key's: a bad client, or one routing with a stale map."""


# Refusals that mean "this node is behind" when the client's configuration is newer.
_AHEAD_STATUSES = frozenset({Status.UNKNOWN_COLLECTION, Status.UNKNOWN_SCOPE, Status.BUCKET_NOT_FOUND})


def check_header(header: kv_pb2.RequestHeader, num_vbuckets: int) -> tuple[str, str]:
    """(scope, collection) of a keyed request; EINVAL for what the engine does not check itself."""
    scope, collection = header.scope or DEFAULT_NAME, header.collection or DEFAULT_NAME
    if not _NAME_RE.fullmatch(scope) or not _NAME_RE.fullmatch(collection):
        raise KVError(Status.EINVAL, f"invalid scope or collection name {scope[:64]!r}.{collection[:64]!r}")
    key = header.key
    if not key or len(key) > KEY_LEN_MAX_DEFAULT_COLLECTION:
        raise KVError(Status.EINVAL, f"a key is 1..{KEY_LEN_MAX_DEFAULT_COLLECTION} bytes, not {len(key)}")
    vbid = vbucket_of(key, num_vbuckets)
    if header.vbucket != vbid:
        raise WrongVBucket(Status.EINVAL, f"vbucket {header.vbucket} is not the key's vbucket {vbid}", key=key)
    return scope, collection


class KVService(kv_pb2_grpc.KVServicer):
    """kv.proto's KV service over a node runtime (node_server.NodeRuntime)."""

    def __init__(self, runtime) -> None:
        self.rt = runtime

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal | None:
        """The caller, or None when it is a user and the node has no users yet (answered TMPFAIL)."""
        return await caller_or_abort(self.rt.authenticator, context)

    async def execute(self, op: _Op, request, principal: Principal | None):
        """One operation's response, whatever happens (never raises for a KV refusal)."""
        keyed = op.field != "observe_seqno"
        route = request.header if keyed else request
        bucket_name = route.bucket
        try:
            if self.rt.config is None or principal is None:
                raise KVError(Status.TMPFAIL, "this node has no cluster configuration yet")
            _check_bucket_name(bucket_name)
            if not all(principal.allows(action, bucket_name) for action in op.actions):
                raise KVError(Status.EACCESS, f"no role allows {op.field} on bucket {bucket_name!r}")
            bucket = self.rt.bucket(bucket_name)
            scope, collection = check_header(route, bucket.config.num_vbuckets) if keyed else ("", "")
            wait_s = route.timeout_ms / 1000 if route.timeout_ms else None
            return await op.run(bucket, request, scope, collection, wait_s)
        except KVError as exc:
            client_version = (route.config_epoch, route.config_revision)
            status = exc.status
            if status in _AHEAD_STATUSES and client_version > self.rt.version:
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
        op = _OPS.get(field) if field else None
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
    op = _OPS[field]

    async def method(self: KVService, request, context):
        return await self.execute(op, request, await self.principal(context))

    method.__name__ = "".join(part.title() for part in field.split("_"))
    return method


for _field in _OPS:
    setattr(KVService, _unary(_field).__name__, _unary(_field))

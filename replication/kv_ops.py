"""The KV operations of kv.proto, each as one engine call: request -> engine -> response.

Owns `OPS` (for each OpRequest field: its response type, the role actions it needs, and its
handler), the handlers themselves (the same engine calls with the same arguments as the
SDK's embedded backend makes: client/_backends.py), and `check_header`, what the engine does
not check itself about a keyed request (its names, key size, and that its vbucket is the
key's). Must never decide KV semantics (the engine does) or touch gRPC: the service
(kv_service.py) authenticates, schedules and answers.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from durakv.engine.document import store_key
from durakv.engine.embedded import EmbeddedBucket
from durakv.engine.errors import KVError, Status
from durakv.engine.expiry import is_expired
from durakv.engine.keys import check_key, vbucket_of
from durakv.engine.limits import KEY_LEN_MAX_DEFAULT_COLLECTION, NAME_LEN_MAX
from durakv.engine.manifest import DEFAULT_NAME, check_bucket_name
from durakv.engine.vbucket import VBState
from durakv.proto import kv_pb2
from durakv.replication import rollback
from durakv.replication.users import Action

_NAME_RE = re.compile(rf"[A-Za-z0-9_%\-]{{1,{NAME_LEN_MAX}}}")
READ, WRITE = (Action.READ,), (Action.WRITE,)
# A valid name stays valid: each is checked once (a refused one raises every time, uncached).
checked_bucket_name = functools.lru_cache(maxsize=256)(check_bucket_name)


@dataclass(frozen=True)
class KVOp:
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
OPS: dict[str, KVOp] = {
    op.field: op
    for op in (
        KVOp("get", _G, READ, _get),
        KVOp("exists", kv_pb2.ExistsResponse, READ, _exists),
        KVOp("insert", _M, WRITE, _insert),
        KVOp("upsert", _M, WRITE, _upsert),
        KVOp("replace", _M, WRITE, _replace),
        KVOp("remove", _M, WRITE, _remove),
        KVOp("touch", _M, WRITE, _touch),
        KVOp("get_and_touch", _G, (Action.READ, Action.WRITE), _get_and_touch),
        KVOp("get_and_lock", _G, (Action.READ, Action.WRITE), _get_and_lock),
        KVOp("unlock", kv_pb2.UnlockResponse, WRITE, _unlock),
        KVOp("increment", _M, WRITE, _counter(1)),
        KVOp("decrement", _M, WRITE, _counter(-1)),
        KVOp("append", _M, WRITE, _concat(False)),
        KVOp("prepend", _M, WRITE, _concat(True)),
        KVOp("get_replica", _G, READ, _get_replica),
        KVOp("observe_seqno", kv_pb2.ObserveSeqnoResponse, READ, _observe_seqno),
    )
}


class WrongVBucket(KVError):
    """The request's vbucket is not its key's: a bad client, or one routing with a stale map."""


# Refusals that mean "this node is behind" when the client's configuration is newer.
AHEAD_STATUSES = frozenset({Status.UNKNOWN_COLLECTION, Status.UNKNOWN_SCOPE, Status.BUCKET_NOT_FOUND})


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

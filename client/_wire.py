"""The KV wire codec: a `KVRequest` as a kv.proto message, an answer as a `KVResponse` or a failure.

Owns the mapping of each `Op` to its unary RPC and messages (`WIRE`), the encoding of one
attempt (a value the wire cannot carry is EINVAL, as a node answers), the decoding of a
SUCCESS answer, what a failed gRPC call means to the retry loop (`rpc_failure`; the cases
are listed in durakv._remote's docstring), and what the answers of every holder of a
vbucket mean for a replica read (`replica_outcome`). Shared by the thread-based backend
(durakv._remote), the asyncio backend and its pipeline streams (durakv.aio).

gRPC gives no flag for "never sent"; an UNAVAILABLE whose details say the channel could
not connect (`_NEVER_SENT_MARKS`) is the one case taken as never sent. Everything else is
treated as maybe sent, the safe side for a mutation.

Pure: it never opens a channel, makes a call, reads the routing or retries anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from durakv.proto import kv_pb2

from ._backend import BackendStatusError, KVRequest, KVResponse, Op
from ._backends import BackendTimeoutError
from ._errors import KVStatus
from ._routing import Version

TIMEOUT_MS_MAX = 3_600_000  # the node refuses a header timeout above one hour (EINVAL)

_NEVER_SENT_MARKS = ("failed to connect to all addresses", "dns resolution failed", "name resolution failure")
REPLICA_OPS = frozenset({Op.GET_ANY_REPLICA, Op.GET_ALL_REPLICAS})

WIRE: dict[Op, tuple[str, type, str]] = {
    Op.GET: ("Get", kv_pb2.GetRequest, "get"),
    Op.EXISTS: ("Exists", kv_pb2.ExistsRequest, "exists"),
    Op.INSERT: ("Insert", kv_pb2.InsertRequest, "insert"),
    Op.UPSERT: ("Upsert", kv_pb2.UpsertRequest, "upsert"),
    Op.REPLACE: ("Replace", kv_pb2.ReplaceRequest, "replace"),
    Op.REMOVE: ("Remove", kv_pb2.RemoveRequest, "remove"),
    Op.TOUCH: ("Touch", kv_pb2.TouchRequest, "touch"),
    Op.GET_AND_TOUCH: ("GetAndTouch", kv_pb2.GetAndTouchRequest, "get_and_touch"),
    Op.GET_AND_LOCK: ("GetAndLock", kv_pb2.GetAndLockRequest, "get_and_lock"),
    Op.UNLOCK: ("Unlock", kv_pb2.UnlockRequest, "unlock"),
    Op.INCREMENT: ("Increment", kv_pb2.IncrementRequest, "increment"),
    Op.DECREMENT: ("Decrement", kv_pb2.DecrementRequest, "decrement"),
    Op.APPEND: ("Append", kv_pb2.AppendRequest, "append"),
    Op.PREPEND: ("Prepend", kv_pb2.PrependRequest, "prepend"),
    Op.GET_ANY_REPLICA: ("GetReplica", kv_pb2.GetReplicaRequest, "get_replica"),
    Op.GET_ALL_REPLICAS: ("GetReplica", kv_pb2.GetReplicaRequest, "get_replica"),
}


def timeout_ms(timeout_s: float) -> int:
    return max(1, min(int(timeout_s * 1000), TIMEOUT_MS_MAX))


def encode(req: KVRequest, vbucket: int, version: Version) -> Any:
    """The request message of one attempt; a value the wire cannot carry is EINVAL, as a node answers."""
    try:
        return _encode(req, vbucket, version)
    except (ValueError, TypeError) as error:
        raise BackendStatusError(KVStatus.EINVAL, f"{req.op.value}: {error}") from None


def _encode(req: KVRequest, vbucket: int, version: Version) -> Any:
    header = kv_pb2.RequestHeader(
        bucket=req.bucket,
        scope=req.scope,
        collection=req.collection,
        key=req.key,
        vbucket=vbucket,
        timeout_ms=timeout_ms(req.timeout_s),
        config_epoch=version[0],
        config_revision=version[1],
    )
    op = req.op
    cls = WIRE[op][1]
    durable = {"durability_level": req.durability_level, "durability_timeout_ms": req.durability_timeout_ms or 0}
    if op in (Op.GET, Op.EXISTS, Op.GET_ANY_REPLICA, Op.GET_ALL_REPLICAS):
        return cls(header=header)
    if op is Op.INSERT:
        return cls(header=header, value=req.value, flags=req.flags, expiry=req.expiry, **durable)
    if op is Op.UPSERT:
        return cls(header=header, value=req.value, flags=req.flags, expiry=req.expiry,
                   preserve_expiry=req.preserve_expiry, **durable)  # fmt: skip
    if op is Op.REPLACE:
        return cls(header=header, value=req.value, flags=req.flags, cas=req.cas, expiry=req.expiry,
                   preserve_expiry=req.preserve_expiry, **durable)  # fmt: skip
    if op is Op.REMOVE:
        return cls(header=header, cas=req.cas, **durable)
    if op in (Op.TOUCH, Op.GET_AND_TOUCH):
        return cls(header=header, expiry=req.expiry)
    if op is Op.GET_AND_LOCK:
        return cls(header=header, lock_time_s=req.lock_time_s)
    if op is Op.UNLOCK:
        return cls(header=header, cas=req.cas)
    if op in (Op.INCREMENT, Op.DECREMENT):
        message = cls(header=header, delta=req.delta, expiry=req.expiry, **durable)
        if req.initial is not None:
            message.initial = req.initial
        return message
    return cls(header=header, value=req.value, cas=req.cas, **durable)  # APPEND, PREPEND


def decode(op: Op, response: Any) -> KVResponse:
    """The KVResponse of a SUCCESS answer to `op`."""
    if op in (Op.GET, Op.GET_AND_TOUCH, Op.GET_AND_LOCK, Op.GET_ANY_REPLICA, Op.GET_ALL_REPLICAS):
        return KVResponse(
            cas=response.cas,
            value=response.value,
            flags=response.flags,
            expiry=response.expiry,
            vbucket=response.vbucket,
            is_replica=response.is_replica,
        )
    if op is Op.EXISTS:
        return KVResponse(cas=response.cas, exists=response.exists)
    if op is Op.UNLOCK:
        return KVResponse()
    return KVResponse.of_mutation(response)


def op_response(item: Any) -> Any:
    """The inner response of a Batch/Pipeline OpResponse, or a stand-in carrying its own status."""
    field = item.WhichOneof("op")
    if field is not None:
        return getattr(item, field)
    return kv_pb2.UnlockResponse(status=item.status or KVStatus.NOT_SUPPORTED, message=item.message)


def rpc_failure(error: grpc.RpcError, address: str) -> Exception:
    """What one failed gRPC call means to the retry loop (durakv._remote's docstring: how one attempt ends)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    where = f"{address}: {details}"
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return BackendStatusError(KVStatus.AUTH_ERROR, f"authentication failed at {where}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return BackendStatusError(KVStatus.EACCESS, f"permission denied at {where}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeoutError(f"no answer from {where}")
    if code is grpc.StatusCode.UNAVAILABLE and any(mark in details.lower() for mark in _NEVER_SENT_MARKS):
        return ConnectionRefusedError(f"cannot reach {where}")
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return BackendStatusError(KVStatus.NOT_SUPPORTED, f"not implemented by {where}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return BackendStatusError(KVStatus.E2BIG, f"message too large for {where}")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return BackendStatusError(KVStatus.EINVAL, where)
    return ConnectionError(f"{code.name} from {where}")


def fresh(failure: Exception) -> Exception:
    """A copy of a failure shared by many operations (one instance raised in many places would pile up tracebacks)."""
    if isinstance(failure, BackendStatusError):
        return BackendStatusError(failure.status, failure.message)
    return type(failure)(*failure.args)


def no_active(req: KVRequest, vbucket: int) -> ConnectionRefusedError:
    return ConnectionRefusedError(f"vbucket {vbucket} of bucket {req.bucket!r} has no active node now")


def bucket_not_found(name: str) -> BackendStatusError:
    return BackendStatusError(KVStatus.BUCKET_NOT_FOUND, f"bucket {name!r} not found in the cluster configuration")


# -- replica reads ------------------------------------------------------------------------


def replica_outcome(req: KVRequest, answers: Sequence[KVResponse | Exception]) -> KVResponse | list[KVResponse]:
    """get_any_replica / get_all_replicas from the answers of every holder of the vbucket.

    Any copy found wins. Otherwise: a stale configuration (NOT_MY_VBUCKET) or a busy node
    (TMPFAIL) is retried; a copy that says "no such document" makes the answer KEY_ENOENT
    even if other holders could not be reached (as Couchbase's DocumentUnretrievable);
    with no answer at all the transport failure is the outcome.
    """
    found = [a for a in answers if isinstance(a, KVResponse)]
    if found:
        return found[0] if req.op is Op.GET_ANY_REPLICA else found
    statuses = [a.status for a in answers if isinstance(a, BackendStatusError)]
    for retried in (KVStatus.NOT_MY_VBUCKET, KVStatus.TMPFAIL):
        if retried in statuses:
            raise BackendStatusError(retried, "no copy answered; retrying with a fresh configuration")
    if KVStatus.KEY_ENOENT in statuses:
        raise BackendStatusError(KVStatus.KEY_ENOENT, "no copy of the document exists")
    if statuses:
        raise BackendStatusError(statuses[0], "no copy of the document could be read")
    if answers and all(isinstance(a, ConnectionRefusedError) for a in answers):
        raise ConnectionRefusedError("no node holding the vbucket could be reached")
    for answer in answers:
        if isinstance(answer, BackendTimeoutError):
            raise answer
    raise ConnectionError(f"no node holding the vbucket answered: {answers[0] if answers else 'none'}")

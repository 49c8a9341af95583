"""The gRPC backend: the SDK's `Backend` contract (client/_backend.py) over a networked cluster.

Owns everything between a `KVRequest` and the wire (docs/cluster-protocol.md, proto/):
bootstrap from the connection string's seeds, one gRPC channel per node address, the
`authorization` metadata on every call, routing each key to its vbucket's active
(client/_routing.py), the configuration kept fresh (a poll every 2.5 s, Couchbase's
config_poll_interval, and at once after NOT_MY_VBUCKET), replica fan-out, per-node KV
batches for the multi-ops, and the Admin calls behind the managers. It never retries a
KV request and never waits out a deadline itself: one call is one attempt, and the SDK's
retry loop (client/_retry.py) decides what happens next. It decides no KV semantics.

How one attempt ends (what `_retry.py` expects):
- the node answered SUCCESS: a `KVResponse`;
- the node answered another status: `BackendStatusError(status, message)`; on
  NOT_MY_VBUCKET the configuration attached to the answer is adopted first (or a refresh
  is asked for), so the retry routes with it;
- the call never left this process (no connection to the node, or the vbucket has no
  active node right now): `ConnectionRefusedError`, retried until the deadline and then
  an unambiguous timeout;
- the call may have reached the node (connection lost in flight, server error):
  `ConnectionError`, retried; a mutation then ends ambiguous;
- the gRPC deadline (= the request's remaining budget) passed: `BackendTimeoutError`;
- missing or wrong credentials (gRPC UNAUTHENTICATED / PERMISSION_DENIED): status
  AUTH_ERROR / EACCESS, both `AuthenticationException`.

gRPC gives no flag for "never sent"; an UNAVAILABLE whose details say the channel could
not connect (`_NEVER_SENT_MARKS`) is the one case taken as never sent. Everything else is
treated as maybe sent, the safe side for a mutation.

Thread safety: one backend serves every thread of a `Cluster`. gRPC channels are
thread-safe; the routing is an immutable value swapped whole under a lock; one daemon
thread polls the configuration.

The wire codec (`encode`, `decode`, `rpc_failure`, `replica_outcome`, `plan_batches`,
`ADMIN_ACTIONS`) is shared with the asyncio backend (durakv.aio._backend), and so are
`Recorder`/`Replay`, which let an SDK method build its request without running it:
`Collection.*_multi` uses them (`run_batched`) to send one attempt per key in per-node
batches, durakv.aio to run the synchronous methods around an awaited attempt.
"""

from __future__ import annotations

import base64
import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc

from durakv.proto import admin_pb2, admin_pb2_grpc, cluster_pb2, kv_pb2, kv_pb2_grpc

from . import exceptions as exc
from ._backend import BackendStatusError, KVRequest, KVResponse, ObservedCopy, Op
from ._backends import BackendTimeoutError
from ._connstr import ConnectionString, cluster_option_defaults, parse
from ._errors import KVStatus
from ._routing import BucketRoute, Routing, Version

log = logging.getLogger("durakv.remote")

MESSAGE_SIZE_MAX = 64 * 1024 * 1024  # bytes; the contract asks for at least 32 MiB
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MESSAGE_SIZE_MAX),
    ("grpc.max_receive_message_length", MESSAGE_SIZE_MAX),
    # Cluster traffic goes straight to the nodes: an http_proxy meant for web traffic
    # must not capture it.
    ("grpc.enable_http_proxy", 0),
)
CONFIG_POLL_INTERVAL_S = 2.5  # Couchbase's config_poll_interval
CONFIG_REFRESH_INTERVAL_MIN_S = 0.05  # refreshes asked for by NOT_MY_VBUCKET, at most this often
BOOTSTRAP_TIMEOUT_DEFAULT_S = 10.0  # reference §1.3
CONNECT_TIMEOUT_DEFAULT_S = 2.0  # per seed, per bootstrap round
MANAGEMENT_TIMEOUT_DEFAULT_S = 75.0  # Couchbase's management_timeout
BOOTSTRAP_BACKOFF_MAX_S = 0.5
REVISION_WAIT_INTERVAL_S = 0.02  # after a configuration change, poll for it this often
BATCH_OPS_MAX = 512  # operations in one KV.Batch
BATCH_SIZE_MAX = 16 * 1024 * 1024  # bytes of requests in one KV.Batch (the node takes 32 MiB)
TIMEOUT_MS_MAX = 3_600_000  # the node refuses a header timeout above one hour (EINVAL)

_NEVER_SENT_MARKS = ("failed to connect to all addresses", "dns resolution failed", "name resolution failure")
_REPLICA_OPS = frozenset({Op.GET_ANY_REPLICA, Op.GET_ALL_REPLICAS})


# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the backend reads from the merged cluster options, in seconds."""

    seeds: tuple[str, ...]
    metadata: tuple[tuple[str, str], ...]
    bootstrap_timeout_s: float
    connect_timeout_s: float
    management_timeout_s: float
    config_poll_interval_s: float

    @classmethod
    def from_options(cls, connstr: str, options: dict[str, Any]) -> Settings:
        """Parse the connection string and merge its options under `options` (explicit options win)."""
        parsed: ConnectionString = parse(connstr)
        for name, value in cluster_option_defaults(parsed).items():
            options.setdefault(name, value)
        if parsed.unknown:
            log.warning("ignoring unknown connection string options: %s", ", ".join(sorted(parsed.unknown)))
        return cls(
            seeds=parsed.addresses,
            metadata=auth_metadata(options.get("authenticator")),
            bootstrap_timeout_s=_seconds(options.get("bootstrap_timeout"), BOOTSTRAP_TIMEOUT_DEFAULT_S),
            connect_timeout_s=_seconds(options.get("connect_timeout"), CONNECT_TIMEOUT_DEFAULT_S),
            management_timeout_s=_seconds(options.get("management_timeout"), MANAGEMENT_TIMEOUT_DEFAULT_S),
            config_poll_interval_s=_seconds(options.get("config_poll_interval"), CONFIG_POLL_INTERVAL_S),
        )


def auth_metadata(authenticator: Any) -> tuple[tuple[str, str], ...]:
    """`authorization: Basic base64(user:password)`, or nothing without a password authenticator."""
    if not authenticator:
        return ()
    try:
        username, password = authenticator["username"], authenticator["password"]
    except (KeyError, TypeError):
        return ()
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return (("authorization", f"Basic {token}"),)


def _seconds(value: Any, default: float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds() or default
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


# -- the wire codec: KVRequest <-> kv.proto --------------------------------------------------

# op -> (unary RPC, request message, field of OpRequest/OpResponse)
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
    return KVResponse(
        cas=response.cas,
        seqno=response.seqno,
        vbucket=response.vbucket,
        vbucket_uuid=response.vbucket_uuid,
        counter=response.counter,
    )


def op_response(item: Any) -> Any:
    """The inner response of a Batch/Pipeline OpResponse, or a stand-in carrying its own status."""
    field = item.WhichOneof("op")
    if field is not None:
        return getattr(item, field)
    return kv_pb2.UnlockResponse(status=item.status or KVStatus.NOT_SUPPORTED, message=item.message)


def rpc_failure(error: grpc.RpcError, address: str) -> Exception:
    """What one failed gRPC call means to the retry loop (see the module docstring)."""
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


# -- batches ------------------------------------------------------------------------------


@dataclass
class BatchPlan:
    """Which requests go in which KV.Batch; `early` holds outcomes known before sending."""

    batches: list[tuple[str, list[int], Any, float]]  # (address, request indexes, BatchRequest, timeout_s)
    early: dict[int, Exception]
    singles: list[int]  # replica reads: run one by one through execute
    routes: dict[int, BucketRoute]


def plan_batches(requests: Sequence[KVRequest], routing: Routing) -> BatchPlan:
    """Group requests by the node serving their key, in request order, split to fit one message each."""
    groups: dict[str, list[tuple[int, Any]]] = {}
    early: dict[int, Exception] = {}
    singles: list[int] = []
    routes: dict[int, BucketRoute] = {}
    for index, req in enumerate(requests):
        if req.op in _REPLICA_OPS:
            singles.append(index)
            continue
        route = routing.bucket(req.bucket)
        if route is None:
            early[index] = bucket_not_found(req.bucket)
            continue
        vbucket = route.vbucket(req.key)
        address = route.active(vbucket)
        if address is None:
            early[index] = no_active(req, vbucket)
            continue
        try:
            message = encode(req, vbucket, route.version)
        except BackendStatusError as error:
            early[index] = error
            continue
        routes[index] = route
        groups.setdefault(address, []).append((index, message))
    batches = []
    for address, items in groups.items():
        chunk: list[tuple[int, Any]] = []
        size = 0
        for index, message in items:
            message_size = message.ByteSize() + 16
            if chunk and (len(chunk) >= BATCH_OPS_MAX or size + message_size > BATCH_SIZE_MAX):
                batches.append(_batch(address, chunk, requests))
                chunk, size = [], 0
            chunk.append((index, message))
            size += message_size
        if chunk:
            batches.append(_batch(address, chunk, requests))
    return BatchPlan(batches, early, singles, routes)


def _batch(address: str, chunk: list[tuple[int, Any]], requests: Sequence[KVRequest]) -> tuple:
    ops = [kv_pb2.OpRequest(opaque=index, **{WIRE[requests[index].op][2]: message}) for index, message in chunk]
    timeout_s = max(requests[index].timeout_s for index, _ in chunk)
    return address, [index for index, _ in chunk], kv_pb2.BatchRequest(ops=ops), timeout_s


def batch_answers(indexes: list[int], response: Any) -> dict[int, Any]:
    """The inner response of each request of one Batch, matched by opaque."""
    by_opaque = {item.opaque: op_response(item) for item in response.ops}
    return {index: by_opaque.get(index) for index in indexes}


# -- multi-ops: Collection.*_multi over execute_many -------------------------------------


class Deferred(Exception):
    """Raised by `Recorder` to stop an SDK method once its request is built (never escapes its caller)."""


class Recorder:
    """A backend that keeps the request it is handed instead of running it."""

    def __init__(self) -> None:
        self.request: KVRequest | None = None

    def execute(self, request: KVRequest) -> Any:
        self.request = request
        raise Deferred


class Replay:
    """A backend whose first attempt is an outcome already known; retries (if any) go to `backend`.

    The outcome may be a KVResponse, a backend failure the SDK retries (one item of a
    batch, answered `sent_at`), or a final `CouchbaseException` (from the asyncio retry
    loop), which passes through the sync retry loop untouched to the method's own handling.
    """

    def __init__(self, backend: Any, outcome: Any, sent_at: float | None = None) -> None:
        self._backend = backend
        self._outcome = outcome
        self._sent_at = sent_at
        self._first = True

    def execute(self, request: KVRequest) -> Any:
        if not self._first:
            return self._backend.execute(request)
        self._first = False
        if isinstance(self._outcome, BaseException):
            if self._sent_at is not None:
                # The retry loop's deadline counts from its own start: take off the time the batch took.
                request.timeout_s = max(request.timeout_s - (time.monotonic() - self._sent_at), 0.0)
            raise self._outcome
        return self._outcome


def run_batched(method: Any, calls: list[tuple[Any, tuple]]) -> dict[Any, Any]:
    """`method` over many keys with one attempt per key sent together (`backend.execute_many`).

    Each call runs the single-key method twice on a private copy of the collection: once
    with a `Recorder` to get the exact request the method builds (options, validation,
    transcoding), then, after the batch, with a `Replay` that hands the method the batch's
    answer, so results, retries and exceptions are the single-key method's own.
    """
    collection = method.__self__
    backend = collection._backend
    clone = copy.copy(collection)
    clone._reader = None
    bound = method.__func__.__get__(clone)
    outcomes: dict[Any, Any] = {}
    requests: list[KVRequest] = []
    sent: list[tuple[Any, tuple]] = []
    for key, args in calls:
        recorder = clone._backend = Recorder()
        try:
            outcomes[key] = bound(key, *args)  # a method that finishes without the backend
        except Deferred:
            assert recorder.request is not None
            requests.append(recorder.request)
            sent.append((key, args))
        except exc.CouchbaseException as error:
            outcomes[key] = error
    sent_at = time.monotonic()
    answers = backend.execute_many(requests) if requests else []
    for (key, args), answer in zip(sent, answers, strict=True):
        clone._backend = Replay(backend, answer, sent_at)
        clone._reader = None
        try:
            outcomes[key] = bound(key, *args)
        except exc.CouchbaseException as error:
            outcomes[key] = error
    return {key: outcomes[key] for key, _ in calls if key in outcomes}


# -- management ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminAction:
    rpc: str
    build: Callable[[dict[str, Any]], Any]
    parse: Callable[[Any], Any]
    changes_config: bool


def _settings_dict(settings: Any) -> dict[str, Any]:
    return {
        "name": settings.name,
        "num_vbuckets": settings.num_vbuckets,
        "num_replicas": settings.num_replicas,
        "durability_min_level": int(settings.durability_min_level),
        "max_ttl_s": settings.max_ttl_s,
    }


def _create_bucket(args: dict[str, Any]) -> Any:
    s = args["settings"]
    return admin_pb2.CreateBucketRequest(
        settings=cluster_pb2.BucketSettings(
            name=s["name"],
            num_vbuckets=s.get("num_vbuckets") or 0,
            num_replicas=s.get("num_replicas") or 0,
            durability_min_level=s.get("durability_min_level") or 0,
            max_ttl_s=s.get("max_ttl_s") or 0,
        )
    )


def _scopes(response: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": scope.name,
            "collections": [{"name": c.name, "max_expiry_s": c.max_ttl_s} for c in scope.collections],
        }
        for scope in response.manifest.scopes
    ]


def _nothing(response: Any) -> None:
    return None


# The actions of client/management (BucketManager, CollectionManager) -> Admin RPCs.
ADMIN_ACTIONS: dict[str, AdminAction] = {
    "create_bucket": AdminAction("CreateBucket", _create_bucket, _nothing, True),
    "drop_bucket": AdminAction("DropBucket", lambda a: admin_pb2.DropBucketRequest(name=a["name"]), _nothing, True),
    "get_bucket": AdminAction(
        "GetBucket", lambda a: admin_pb2.GetBucketRequest(name=a["name"]), lambda r: _settings_dict(r.settings), False
    ),
    "get_all_buckets": AdminAction(
        "ListBuckets", lambda a: admin_pb2.ListBucketsRequest(), lambda r: [_settings_dict(b) for b in r.buckets], False
    ),
    "create_scope": AdminAction(
        "CreateScope", lambda a: admin_pb2.CreateScopeRequest(bucket=a["bucket"], scope=a["scope"]), _nothing, True
    ),
    "drop_scope": AdminAction(
        "DropScope", lambda a: admin_pb2.DropScopeRequest(bucket=a["bucket"], scope=a["scope"]), _nothing, True
    ),
    "create_collection": AdminAction(
        "CreateCollection",
        lambda a: admin_pb2.CreateCollectionRequest(
            bucket=a["bucket"], scope=a["scope"], collection=a["collection"], max_ttl_s=a.get("max_expiry_s") or 0
        ),
        _nothing,
        True,
    ),
    "drop_collection": AdminAction(
        "DropCollection",
        lambda a: admin_pb2.DropCollectionRequest(bucket=a["bucket"], scope=a["scope"], collection=a["collection"]),
        _nothing,
        True,
    ),
    "get_all_scopes": AdminAction(
        "GetCollectionsManifest", lambda a: admin_pb2.GetCollectionsManifestRequest(bucket=a["bucket"]), _scopes, False
    ),
}


def admin_request(action: str, args: dict[str, Any]) -> tuple[AdminAction, Any]:
    spec = ADMIN_ACTIONS.get(action)
    if spec is None:
        raise BackendStatusError(KVStatus.NOT_SUPPORTED, f"{action} is not supported by a durakv cluster")
    try:
        return spec, spec.build(args)
    except (ValueError, TypeError) as error:
        raise BackendStatusError(KVStatus.EINVAL, f"{action}: {error}") from None


def admin_transport_failure(action: str, failure: Exception, changes: bool) -> Exception:
    """A management call's transport failure as the exception the manager lets through."""
    if isinstance(failure, BackendStatusError):
        return failure
    if isinstance(failure, BackendTimeoutError):
        cls = exc.AmbiguousTimeoutException if changes else exc.UnAmbiguousTimeoutException
        return cls(f"{action}: {failure}", inner_cause=failure)
    if isinstance(failure, ConnectionRefusedError):
        return exc.ServiceUnavailableException(f"{action}: no node could be reached ({failure})", inner_cause=failure)
    return exc.RequestCanceledException(
        f"{action}: the connection failed in flight; the change may or may not have been made ({failure})"
        if changes
        else f"{action}: {failure}",
        inner_cause=failure,
    )


def admin_try_next(failure: Exception, changes: bool) -> bool:
    """Whether a management call that failed this way may be sent to another node.

    Never sent: yes. Maybe sent: only if it changes nothing (a change that may have been
    made is not made twice). A refusal or a timeout: no.
    """
    if isinstance(failure, ConnectionRefusedError):
        return True
    return isinstance(failure, ConnectionError) and not changes


def is_auth_failure(failure: Exception) -> bool:
    return isinstance(failure, BackendStatusError) and failure.status in (KVStatus.AUTH_ERROR, KVStatus.EACCESS)


def bootstrap_failure(seeds: Sequence[str], timeout_s: float, last: Exception | None) -> exc.CouchbaseException:
    return exc.UnAmbiguousTimeoutException(
        f"could not get the cluster configuration from any of {', '.join(seeds)} within {timeout_s:.1f} s"
        + (f" (last error: {last})" if last else ""),
        inner_cause=last,
    )


def authentication_failure(address: str, error: BackendStatusError) -> exc.AuthenticationException:
    return exc.AuthenticationException(f"the cluster refused the credentials ({error.message})", inner_cause=error)


# -- the backend --------------------------------------------------------------------------


OBSERVE_TIMEOUT_S = 1.0  # one ObserveSeqno poll of one copy


class _Node:
    """One node address: its channel and stubs (created once, reused by every thread)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.kv = kv_pb2_grpc.KVStub(self.channel)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)


class RemoteBackend:
    """A networked durakv cluster, reached over gRPC (see the module docstring)."""

    def __init__(self, connstr: str, options: dict[str, Any]) -> None:
        self._settings = Settings.from_options(connstr, options)
        self._metadata = self._settings.metadata
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._routing = Routing()
        self._closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._refresh_lock = threading.Lock()
        self._refreshed_at = 0.0
        self._admin_turn = 0
        self._config_error: Exception | None = None
        try:
            self._bootstrap()
        except BaseException:
            self.close()
            raise
        self._poller = threading.Thread(target=self._poll, name="durakv-config-poll", daemon=True)
        self._poller.start()

    # -- KV -------------------------------------------------------------------------------
    def execute(self, req: KVRequest) -> KVResponse | list[KVResponse]:
        if req.op in _REPLICA_OPS:
            return self._replica_read(req)
        route = self._route(req.bucket, req.timeout_s)
        vbucket = route.vbucket(req.key)
        address = route.active(vbucket)
        if address is None:
            self._refresh_soon()
            raise no_active(req, vbucket)
        message = encode(req, vbucket, route.version)
        call = getattr(self._node(address).kv, WIRE[req.op][0])
        try:
            response = call(message, timeout=req.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise rpc_failure(error, address) from None
        return self._outcome(req, response)

    def execute_many(self, requests: Sequence[KVRequest]) -> list[KVResponse | Exception]:
        """Many requests, one KV.Batch per node (split to fit), all nodes at once; one attempt each."""
        self._ensure_buckets(requests)
        plan = plan_batches(requests, self._routing)
        outcomes: list[Any] = [None] * len(requests)
        for index, failure in plan.early.items():
            outcomes[index] = failure
        pending = []
        for address, indexes, batch, timeout_s in plan.batches:
            future = self._node(address).kv.Batch.future(batch, timeout=timeout_s, metadata=self._metadata)
            pending.append((address, indexes, future))
        for index in plan.singles:
            outcomes[index] = self._attempt(requests[index])
        for address, indexes, future in pending:
            try:
                answers = batch_answers(indexes, future.result())
            except grpc.RpcError as error:
                failure = rpc_failure(error, address)
                for index in indexes:
                    outcomes[index] = fresh(failure)
                continue
            for index, answer in answers.items():
                if answer is None:
                    outcomes[index] = ConnectionError(f"{address} left operation {index} of a batch unanswered")
                else:
                    outcomes[index] = self._attempt(requests[index], answer)
        return outcomes

    def _attempt(self, req: KVRequest, answer: Any = None) -> Any:
        """One request's outcome (a response or the exception of its attempt), never raised."""
        try:
            return self.execute(req) if answer is None else self._outcome(req, answer)
        except (BackendStatusError, ConnectionError, BackendTimeoutError) as failure:
            return failure

    def _outcome(self, req: KVRequest, response: Any) -> KVResponse:
        status = response.status
        if status == KVStatus.SUCCESS:
            return decode(req.op, response)
        if status == KVStatus.NOT_MY_VBUCKET:
            self._not_my_vbucket(req.bucket, response)
        raise BackendStatusError(status, response.message)

    def _replica_read(self, req: KVRequest) -> KVResponse | list[KVResponse]:
        route = self._route(req.bucket, req.timeout_s)
        vbucket = route.vbucket(req.key)
        holders = route.holders(vbucket)
        if not holders:
            self._refresh_soon()
            raise no_active(req, vbucket)
        message = encode(req, vbucket, route.version)
        answers: queue.SimpleQueue = queue.SimpleQueue()
        futures = []
        for address in holders:
            future = self._node(address).kv.GetReplica.future(message, timeout=req.timeout_s, metadata=self._metadata)
            future.add_done_callback(lambda f, a=address: answers.put((a, f)))
            futures.append(future)
        results: list[KVResponse | Exception] = []
        try:
            for _ in holders:
                address, future = answers.get()
                try:
                    results.append(self._outcome(req, future.result()))
                except grpc.RpcError as error:
                    results.append(rpc_failure(error, address))
                except BackendStatusError as refusal:
                    results.append(refusal)
                if req.op is Op.GET_ANY_REPLICA and isinstance(results[-1], KVResponse):
                    break
        finally:
            for future in futures:
                future.cancel()
        return replica_outcome(req, results)

    # -- routing and configuration ----------------------------------------------------------
    def _route(self, bucket: str, timeout_s: float) -> BucketRoute:
        route = self._routing.bucket(bucket)
        if route is None:
            # Perhaps created since the last poll: look once before refusing.
            self._refresh_recent(timeout_s)
            route = self._routing.bucket(bucket)
            if route is None:
                raise bucket_not_found(bucket)
        return route

    def refresh_buckets(self) -> None:
        """Fetch a newer configuration now (unless one arrived a moment ago)."""
        self._refresh_recent(self._settings.connect_timeout_s)

    def _ensure_buckets(self, requests: Sequence[KVRequest]) -> None:
        if any(self._routing.bucket(r.bucket) is None for r in requests):
            self._refresh_recent(min(r.timeout_s for r in requests))

    def _refresh_recent(self, timeout_s: float) -> None:
        """Refresh now (waiting at most `timeout_s`) unless a refresh finished very recently."""
        timeout_s = min(timeout_s, self._settings.connect_timeout_s)
        self._refresh(time.monotonic() - CONFIG_REFRESH_INTERVAL_MIN_S, timeout_s)

    def _node(self, address: str) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            with self._lock:
                if self._closed:
                    raise ConnectionRefusedError("the cluster is closed")
                node = self._nodes.get(address)
                if node is None:
                    node = self._nodes[address] = _Node(address)
        return node

    def _not_my_vbucket(self, bucket: str, response: Any) -> None:
        if response.HasField("config"):
            with self._lock:
                self._routing = self._routing.adopt_bucket(response.config, bucket)
        self._refresh_soon()

    def _adopt(self, config: Any) -> None:
        with self._lock:
            self._routing = self._routing.adopt_full(config)

    def _refresh_soon(self) -> None:
        self._wake.set()

    def _refresh(self, since: float, timeout_s: float) -> None:
        """Fetch a newer configuration unless one was fetched after `since` (one fetch at a time)."""
        with self._refresh_lock:
            if self._refreshed_at > since:
                return
            try:
                self._fetch_config(time.monotonic() + timeout_s)
            finally:
                self._refreshed_at = time.monotonic()

    def _config_addresses(self) -> list[str]:
        nodes = self._routing.node_addresses()
        return nodes + [seed for seed in self._settings.seeds if seed not in nodes]

    def _fetch_config(self, deadline: float) -> bool:
        """Ask the nodes (then the seeds) in turn for a configuration newer than ours; True if one answered."""
        version = self._routing.version
        request = admin_pb2.GetClusterConfigRequest(config_epoch=version[0], config_revision=version[1])
        for address in self._config_addresses():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                response = self._node(address).admin.GetClusterConfig(
                    request, timeout=min(remaining, self._settings.connect_timeout_s), metadata=self._metadata
                )
            except grpc.RpcError as error:
                failure = rpc_failure(error, address)
                if is_auth_failure(failure):
                    raise authentication_failure(address, failure) from None
                log.debug("configuration from %s failed: %s", address, failure)
                self._config_error = failure
                continue
            if response.status != KVStatus.SUCCESS:
                log.debug("configuration from %s refused: %s", address, response.message)
                self._config_error = BackendStatusError(response.status, f"{address}: {response.message}")
                continue
            if response.HasField("config"):
                self._adopt(response.config)
            return True
        return False

    def _bootstrap(self) -> None:
        timeout_s = self._settings.bootstrap_timeout_s
        deadline = time.monotonic() + timeout_s
        backoff_s = 0.01
        while True:
            try:
                if self._fetch_config(deadline) and self._routing.version > (0, 0):
                    return
            except exc.AuthenticationException:
                raise
            now = time.monotonic()
            if now >= deadline:
                raise bootstrap_failure(self._settings.seeds, timeout_s, self._config_error)
            time.sleep(min(backoff_s, deadline - now))
            backoff_s = min(backoff_s * 2, BOOTSTRAP_BACKOFF_MAX_S)

    def _poll(self) -> None:
        interval_s = self._settings.config_poll_interval_s
        while not self._stop.is_set():
            self._wake.wait(interval_s)
            if self._stop.is_set():
                return
            woken = self._wake.is_set()
            self._wake.clear()
            if woken:  # asked for by NOT_MY_VBUCKET: not more often than the floor
                wait_s = self._refreshed_at + CONFIG_REFRESH_INTERVAL_MIN_S - time.monotonic()
                if wait_s > 0 and self._stop.wait(wait_s):
                    return
            try:
                self._refresh(since=time.monotonic(), timeout_s=self._settings.connect_timeout_s)
            except Exception as error:  # keep polling whatever one round met
                log.warning("configuration refresh failed: %s", error)

    def bucket_names(self) -> list[str]:
        return self._routing.bucket_names()

    def num_replicas(self, bucket: str) -> int:
        return self._route(bucket, self._settings.connect_timeout_s).num_replicas

    def observe(self, bucket: str, vbucket: int, vbucket_uuid: int) -> list[ObservedCopy]:
        """Every reachable copy of the vbucket: ObserveSeqno on the active and each replica."""
        route = self._route(bucket, self._settings.connect_timeout_s)
        copies = []
        for position, address in enumerate(route.chains[vbucket]):
            if address is None:
                continue
            message = kv_pb2.ObserveSeqnoRequest(
                bucket=bucket,
                vbucket=vbucket,
                vbucket_uuid=vbucket_uuid,
                timeout_ms=int(OBSERVE_TIMEOUT_S * 1000),
                config_epoch=route.version[0],
                config_revision=route.version[1],
            )
            try:
                answer = self._node(address).kv.ObserveSeqno(
                    message, timeout=OBSERVE_TIMEOUT_S, metadata=self._metadata
                )
            except grpc.RpcError:
                continue  # an unreachable copy counts for nothing
            if answer.status != KVStatus.SUCCESS or answer.failed_over:
                continue
            copies.append(
                ObservedCopy(position == 0, answer.vbucket_uuid, answer.current_seqno, answer.persisted_seqno)
            )
        return copies

    def routing(self) -> Routing:
        """The configuration requests are routed with now (read-only)."""
        return self._routing

    # -- management -------------------------------------------------------------------------
    def manage(self, action: str, **args: Any) -> Any:
        spec, request = admin_request(action, args)
        deadline = time.monotonic() + self._settings.management_timeout_s
        response = self._admin_call(action, spec, request, deadline)
        if response.status != KVStatus.SUCCESS:
            raise BackendStatusError(response.status, response.message)
        if spec.changes_config:
            self._await_version((response.config_epoch, response.config_revision), deadline)
        return spec.parse(response)

    def _admin_call(self, action: str, spec: AdminAction, request: Any, deadline: float) -> Any:
        addresses = self._config_addresses()
        self._admin_turn += 1
        start = self._admin_turn % len(addresses)
        failure: Exception = ConnectionRefusedError("no node to ask")
        for address in addresses[start:] + addresses[:start]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failure = BackendTimeoutError(f"no answer within {self._settings.management_timeout_s:.1f} s")
                break
            try:
                call = getattr(self._node(address).admin, spec.rpc)
                return call(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as error:
                failure = rpc_failure(error, address)
            if not admin_try_next(failure, spec.changes_config):
                break
        raise admin_transport_failure(action, failure, spec.changes_config)

    def _await_version(self, version: Version, deadline: float) -> None:
        """After a change: poll until the routing has the configuration that contains it (or give up quietly)."""
        while self._routing.version < version and time.monotonic() < deadline:
            try:
                self._fetch_config(deadline)
            except exc.AuthenticationException:
                raise
            if self._routing.version < version:
                time.sleep(REVISION_WAIT_INTERVAL_S)

    # -- lifecycle ----------------------------------------------------------------------------
    def wait_until_ready(self, timeout_s: float) -> None:
        """Return once every active node of the configuration answers Health as SERVING."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self._routing.node_addresses())
        while waiting:
            address = waiting[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise exc.UnAmbiguousTimeoutException(f"nodes not ready within {timeout_s:.1f} s: {', '.join(waiting)}")
            try:
                health = self._node(address).admin.Health(
                    admin_pb2.HealthRequest(), timeout=min(remaining, 1.0), metadata=self._metadata
                )
                if health.state == admin_pb2.HEALTH_STATE_SERVING:
                    waiting.pop(0)
                    continue
            except grpc.RpcError as error:
                if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                    waiting.pop(0)  # an older node: reachable is all it can say
                    continue
            time.sleep(min(REVISION_WAIT_INTERVAL_S * 5, max(deadline - time.monotonic(), 0)))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            nodes, self._nodes = list(self._nodes.values()), {}
        self._stop.set()
        self._wake.set()
        for node in nodes:
            node.channel.close()
        poller = getattr(self, "_poller", None)
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=1.0)

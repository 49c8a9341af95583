"""The gRPC backend: the SDK's `Backend` contract (client/_backend.py) over a networked cluster.

`RemoteBackend` owns what happens between a `KVRequest` and the wire (docs/cluster-protocol.md,
proto/): routing each key to its vbucket's active (client/_routing.py), one call per
attempt with the `authorization` metadata, replica fan-out, per-node KV batches for the
multi-ops sent to every node at once, ObserveSeqno on every copy, and the Admin calls
behind the managers, tried round the nodes. The parts it is built from are private
modules named for what each owns:
- `_remote_settings`: the merged cluster options as `Settings` (seeds, timeouts, credentials);
- `_channels`: one gRPC channel per node address (`NodePool`);
- `_config_refresh`: bootstrap from the connection string's seeds and the configuration
  kept fresh (a poll every 2.5 s, Couchbase's config_poll_interval, and at once after
  NOT_MY_VBUCKET); `ConfigRefresh` is `RemoteBackend`'s base;
- `_wire`: the KV wire codec and what a failed call means (`rpc_failure`);
- `_batches`: which requests travel in which KV.Batch;
- `_multi`: `Recorder`/`Replay` and `run_batched`, for `Collection.*_multi`;
- `_admin_actions`: the management actions as Admin RPCs.
It never retries a KV request and never waits out a deadline itself: one call is one
attempt, and the SDK's retry loop (client/_retry.py) decides what happens next. It decides
no KV semantics.

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
not connect (`_wire._NEVER_SENT_MARKS`) is the one case taken as never sent. Everything
else is treated as maybe sent, the safe side for a mutation.

Thread safety: one backend serves every thread of a `Cluster`. gRPC channels are
thread-safe; the routing is an immutable value swapped whole under a lock; one daemon
thread polls the configuration.

The wire codec (`encode`, `decode`, `rpc_failure`, `replica_outcome`, `plan_batches`,
`ADMIN_ACTIONS`) is shared with the asyncio backend (durakv.aio._backend), and so are
`Recorder`/`Replay`, which let an SDK method build its request without running it:
`Collection.*_multi` uses them (`run_batched`) to send one attempt per key in per-node
batches, durakv.aio to run the synchronous methods around an awaited attempt. Every
name those users import from here is re-exported (`__all__`) from the module that owns it.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from typing import Any

import grpc

from durakv.proto import admin_pb2, kv_pb2

from . import exceptions as exc
from ._admin_actions import (
    ADMIN_ACTIONS,
    AdminAction,
    admin_request,
    admin_transport_failure,
    admin_try_next,
)
from ._backend import BackendStatusError, KVRequest, KVResponse, ObservedCopy, Op
from ._backends import BackendTimeoutError
from ._batches import BATCH_OPS_MAX, BATCH_SIZE_MAX, BatchPlan, batch_answers, plan_batches
from ._channels import CHANNEL_OPTIONS, MESSAGE_SIZE_MAX, NodePool
from ._config_refresh import (
    BOOTSTRAP_BACKOFF_MAX_S,
    CONFIG_REFRESH_INTERVAL_MIN_S,
    REVISION_WAIT_INTERVAL_S,
    ConfigRefresh,
    authentication_failure,
    bootstrap_failure,
    is_auth_failure,
)
from ._errors import KVStatus
from ._multi import Deferred, Recorder, Replay, run_batched
from ._remote_settings import (
    BOOTSTRAP_TIMEOUT_DEFAULT_S,
    CONFIG_POLL_INTERVAL_S,
    CONNECT_TIMEOUT_DEFAULT_S,
    MANAGEMENT_TIMEOUT_DEFAULT_S,
    Settings,
    auth_metadata,
)
from ._routing import BucketRoute
from ._wire import (
    REPLICA_OPS,
    TIMEOUT_MS_MAX,
    WIRE,
    bucket_not_found,
    decode,
    encode,
    fresh,
    no_active,
    op_response,
    replica_outcome,
    rpc_failure,
    timeout_ms,
)

__all__ = [
    "ADMIN_ACTIONS",
    "BATCH_OPS_MAX",
    "BATCH_SIZE_MAX",
    "BOOTSTRAP_BACKOFF_MAX_S",
    "BOOTSTRAP_TIMEOUT_DEFAULT_S",
    "CHANNEL_OPTIONS",
    "CONFIG_POLL_INTERVAL_S",
    "CONFIG_REFRESH_INTERVAL_MIN_S",
    "CONNECT_TIMEOUT_DEFAULT_S",
    "MANAGEMENT_TIMEOUT_DEFAULT_S",
    "MESSAGE_SIZE_MAX",
    "OBSERVE_TIMEOUT_S",
    "REVISION_WAIT_INTERVAL_S",
    "TIMEOUT_MS_MAX",
    "WIRE",
    "AdminAction",
    "BatchPlan",
    "Deferred",
    "Recorder",
    "RemoteBackend",
    "Replay",
    "Settings",
    "admin_request",
    "admin_transport_failure",
    "admin_try_next",
    "auth_metadata",
    "authentication_failure",
    "batch_answers",
    "bootstrap_failure",
    "bucket_not_found",
    "decode",
    "encode",
    "fresh",
    "is_auth_failure",
    "no_active",
    "observe_request",
    "observed_copy",
    "op_response",
    "plan_batches",
    "replica_outcome",
    "rpc_failure",
    "run_batched",
    "timeout_ms",
]

OBSERVE_TIMEOUT_S = 1.0  # one ObserveSeqno poll of one copy


def observe_request(bucket: str, vbucket: int, vbucket_uuid: int, route: BucketRoute) -> Any:
    return kv_pb2.ObserveSeqnoRequest(
        bucket=bucket,
        vbucket=vbucket,
        vbucket_uuid=vbucket_uuid,
        timeout_ms=int(OBSERVE_TIMEOUT_S * 1000),
        config_epoch=route.version[0],
        config_revision=route.version[1],
    )


def observed_copy(position: int, answer: Any) -> ObservedCopy | None:
    """What one copy's ObserveSeqno answer counts for (None: nothing -- refused or failed over)."""
    if answer.status != KVStatus.SUCCESS or answer.failed_over:
        return None
    return ObservedCopy(position == 0, answer.vbucket_uuid, answer.current_seqno, answer.persisted_seqno)


class RemoteBackend(ConfigRefresh):
    """A networked durakv cluster, reached over gRPC (see the module docstring)."""

    def __init__(self, connstr: str, options: dict[str, Any]) -> None:
        super().__init__(Settings.from_options(connstr, options), NodePool())
        self._admin_turn = 0
        try:
            self._bootstrap()
        except BaseException:
            self.close()
            raise
        self._start_polling()

    # -- KV -------------------------------------------------------------------------------
    def execute(self, req: KVRequest) -> KVResponse | list[KVResponse]:
        if req.op in REPLICA_OPS:
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

    # -- observe ---------------------------------------------------------------------------
    def observe(self, bucket: str, vbucket: int, vbucket_uuid: int) -> list[ObservedCopy]:
        """Every reachable copy of the vbucket: ObserveSeqno on the active and each replica."""
        route = self._route(bucket, self._settings.connect_timeout_s)
        message = observe_request(bucket, vbucket, vbucket_uuid, route)
        copies = []
        for position, address in enumerate(route.chains[vbucket]):
            if address is None:
                continue
            try:
                answer = self._node(address).kv.ObserveSeqno(
                    message, timeout=OBSERVE_TIMEOUT_S, metadata=self._metadata
                )
            except grpc.RpcError:
                continue  # an unreachable copy counts for nothing
            copy = observed_copy(position, answer)
            if copy is not None:
                copies.append(copy)
        return copies

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
        nodes = self._nodes.detach()
        if nodes is None:
            return
        self._stop_polling()
        for node in nodes:
            node.channel.close()
        self._join_poller()

"""The asyncio backend: durakv._remote's contract on grpc.aio channels, for `durakv.aio`.

Same rules as the thread-based backend (durakv._remote, whose module docstring says how
each attempt ends): the same wire codec, routing, failure mapping, replica fan-out,
per-node batches and Admin actions, all imported from there. What differs is the
concurrency: every call is a grpc.aio unary call awaited on the caller's event loop, so
any number of operations are in flight at once on one HTTP/2 connection per node, and the
configuration poll is a task on the same loop. By default (`kv_pipeline`, on unless the
connection string says `kv_pipeline=false`) operations travel on each node's
KV.PipelineBatched stream, many per message (._pipeline); a node older than that RPC gets
KV.Pipeline, one message per operation, and one older still a unary call per operation.

Bound to one event loop: the one that ran `connect()`. Nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from durakv.proto import admin_pb2, admin_pb2_grpc, kv_pb2_grpc

from .. import exceptions as exc
from .._backend import BackendStatusError, KVRequest, KVResponse, ObservedCopy, Op
from .._backends import BackendTimeoutError
from .._errors import KVStatus
from .._remote import (
    CHANNEL_OPTIONS,
    CONFIG_REFRESH_INTERVAL_MIN_S,
    OBSERVE_TIMEOUT_S,
    REVISION_WAIT_INTERVAL_S,
    WIRE,
    AdminAction,
    Settings,
    admin_request,
    admin_transport_failure,
    admin_try_next,
    authentication_failure,
    batch_answers,
    bootstrap_failure,
    bucket_not_found,
    decode,
    encode,
    fresh,
    is_auth_failure,
    no_active,
    observe_request,
    observed_copy,
    plan_batches,
    replica_outcome,
    rpc_failure,
)
from .._routing import BucketRoute, Routing, Version
from ._pipeline import PipelineStream, PipelineUnsupported

log = logging.getLogger("durakv.remote")

BOOTSTRAP_BACKOFF_MAX_S = 0.5
RETRIED = (BackendStatusError, ConnectionError, BackendTimeoutError)


class _Node:
    def __init__(self, address: str, pipeline: bool) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.kv = kv_pb2_grpc.KVStub(self.channel)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)
        self.use_pipeline = pipeline  # False once the node says it has no Pipeline
        self.batched = True  # False once the node says it has no PipelineBatched
        self.pipeline: PipelineStream | None = None

    def stream(self, metadata: tuple[tuple[str, str], ...]) -> PipelineStream:
        """The node's live pipelined stream (a new one if there is none or it broke)."""
        if self.pipeline is None or self.pipeline.broken is not None:
            self.pipeline = PipelineStream(self.kv, self.address, metadata, batched=self.batched)
        return self.pipeline

    async def submit(self, metadata: tuple[tuple[str, str], ...], field: str, message: Any, timeout_s: float) -> Any:
        """One operation on the node's PipelineBatched stream, else its Pipeline stream (an older node).

        Raises PipelineUnsupported once the node serves neither: the caller uses unary calls.
        An UNIMPLEMENTED call ran nothing, so the operation is simply sent again the next way.
        """
        while True:
            stream = self.stream(metadata)
            try:
                return await stream.submit(field, message, timeout_s)
            except PipelineUnsupported:
                if not stream.batched:
                    self.use_pipeline = False
                    raise
                if self.batched:
                    log.info("%s has no KV.PipelineBatched: using KV.Pipeline", self.address)
                    self.batched = False


class AsyncRemoteBackend:
    """A networked durakv cluster reached with grpc.aio; methods are coroutines unless noted."""

    def __init__(self, connstr: str, options: dict[str, Any]) -> None:
        # Parsing happens here, so a bad connection string fails in the constructor.
        self._settings = Settings.from_options(connstr, options)
        self._metadata = self._settings.metadata
        self._pipeline = bool(options.get("kv_pipeline", True))
        self._nodes: dict[str, _Node] = {}
        self._routing = Routing()
        self._closed = False
        self._connecting: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        self._admin_turn = 0
        self._config_error: Exception | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def connect(self) -> asyncio.Task:
        """The bootstrap, started once on the running loop; await it (again and again) for its outcome."""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._bootstrap())
        return self._connecting

    @property
    def connected(self) -> bool:
        return self._routing.version > (0, 0) and not self._closed

    async def _ready(self) -> None:
        if self._routing.version == (0, 0):
            await asyncio.shield(self.connect())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._poller, self._connecting) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            if node.pipeline is not None:
                await node.pipeline.close()
            await node.channel.close()

    async def wait_until_ready(self, timeout_s: float) -> None:
        """Return once every active node of the configuration answers Health as SERVING."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready()
        except TimeoutError:
            raise exc.UnAmbiguousTimeoutException(f"no cluster configuration within {timeout_s:.1f} s") from None
        waiting = list(self._routing.node_addresses())
        while waiting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise exc.UnAmbiguousTimeoutException(f"nodes not ready within {timeout_s:.1f} s: {', '.join(waiting)}")
            try:
                health = await self._node(waiting[0]).admin.Health(
                    admin_pb2.HealthRequest(), timeout=min(remaining, 1.0), metadata=self._metadata
                )
                if health.state == admin_pb2.HEALTH_STATE_SERVING:
                    waiting.pop(0)
                    continue
            except grpc.RpcError as error:
                if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                    waiting.pop(0)
                    continue
            await asyncio.sleep(min(REVISION_WAIT_INTERVAL_S * 5, max(deadline - loop.time(), 0)))

    # -- KV -------------------------------------------------------------------------------
    async def execute(self, req: KVRequest) -> KVResponse | list[KVResponse]:
        await self._ready()
        if req.op in (Op.GET_ANY_REPLICA, Op.GET_ALL_REPLICAS):
            return await self._replica_read(req)
        route = await self._route(req.bucket, req.timeout_s)
        vbucket = route.vbucket(req.key)
        address = route.active(vbucket)
        if address is None:
            self._wake.set()
            raise no_active(req, vbucket)
        message = encode(req, vbucket, route.version)
        return self._outcome(req, await self._send(address, req.op, message, req.timeout_s))

    async def _send(self, address: str, op: Op, message: Any, timeout_s: float) -> Any:
        """One attempt of one operation: on the node's Pipeline stream, or a unary call."""
        node = self._node(address)
        rpc, _, field = WIRE[op]
        if node.use_pipeline:
            try:
                return await node.submit(self._metadata, field, message, timeout_s)
            except PipelineUnsupported:
                pass
        try:
            return await getattr(node.kv, rpc)(message, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise rpc_failure(error, address) from None

    async def execute_many(self, requests: Sequence[KVRequest]) -> list[KVResponse | Exception]:
        """One attempt per request: one KV.Batch per node (split to fit), every node at once."""
        await self._ready()
        if any(self._routing.bucket(r.bucket) is None for r in requests):
            await self._refresh_recent(min(r.timeout_s for r in requests))
        plan = plan_batches(requests, self._routing)
        outcomes: list[Any] = [None] * len(requests)
        for index, failure in plan.early.items():
            outcomes[index] = failure

        async def one_batch(address: str, indexes: list[int], batch: Any, timeout_s: float) -> None:
            try:
                response = await self._node(address).kv.Batch(batch, timeout=timeout_s, metadata=self._metadata)
            except grpc.RpcError as error:
                failure = rpc_failure(error, address)
                for index in indexes:
                    outcomes[index] = fresh(failure)
                return
            for index, answer in batch_answers(indexes, response).items():
                if answer is None:
                    outcomes[index] = ConnectionError(f"{address} left operation {index} of a batch unanswered")
                else:
                    outcomes[index] = self._attempt_sync(requests[index], answer)

        async def one_single(index: int) -> None:
            try:
                outcomes[index] = await self.execute(requests[index])
            except RETRIED as failure:
                outcomes[index] = failure

        await asyncio.gather(*(one_batch(*b) for b in plan.batches), *(one_single(i) for i in plan.singles))
        return outcomes

    def _attempt_sync(self, req: KVRequest, answer: Any) -> Any:
        try:
            return self._outcome(req, answer)
        except BackendStatusError as refusal:
            return refusal

    def _outcome(self, req: KVRequest, response: Any) -> KVResponse:
        status = response.status
        if status == KVStatus.SUCCESS:
            return decode(req.op, response)
        if status == KVStatus.NOT_MY_VBUCKET:
            if response.HasField("config"):
                self._routing = self._routing.adopt_bucket(response.config, req.bucket)
            self._wake.set()
        raise BackendStatusError(status, response.message)

    async def _replica_read(self, req: KVRequest) -> KVResponse | list[KVResponse]:
        route = await self._route(req.bucket, req.timeout_s)
        vbucket = route.vbucket(req.key)
        holders = route.holders(vbucket)
        if not holders:
            self._wake.set()
            raise no_active(req, vbucket)
        message = encode(req, vbucket, route.version)

        async def ask(address: str) -> KVResponse | Exception:
            try:
                return self._outcome(req, await self._send(address, req.op, message, req.timeout_s))
            except RETRIED as failure:
                return failure

        tasks = [asyncio.ensure_future(ask(address)) for address in holders]
        results: list[KVResponse | Exception] = []
        try:
            for next_done in asyncio.as_completed(tasks):
                results.append(await next_done)
                if req.op is Op.GET_ANY_REPLICA and isinstance(results[-1], KVResponse):
                    break
        finally:
            for task in tasks:
                task.cancel()
        return replica_outcome(req, results)

    # -- observe-based durability ------------------------------------------------------------
    async def num_replicas(self, bucket: str) -> int:
        await self._ready()
        return (await self._route(bucket, self._settings.connect_timeout_s)).num_replicas

    async def observe(self, bucket: str, vbucket: int, vbucket_uuid: int) -> list[ObservedCopy]:
        """Every reachable copy of the vbucket, asked at once: ObserveSeqno on the active and each replica."""
        route = await self._route(bucket, self._settings.connect_timeout_s)
        message = observe_request(bucket, vbucket, vbucket_uuid, route)

        async def ask(position: int, address: str) -> ObservedCopy | None:
            try:
                answer = await self._node(address).kv.ObserveSeqno(
                    message, timeout=OBSERVE_TIMEOUT_S, metadata=self._metadata
                )
            except grpc.RpcError:
                return None  # an unreachable copy counts for nothing
            return observed_copy(position, answer)

        chain = route.chains[vbucket]
        answers = await asyncio.gather(*(ask(p, a) for p, a in enumerate(chain) if a is not None))
        return [copy for copy in answers if copy is not None]

    # -- routing and configuration ----------------------------------------------------------
    async def _route(self, bucket: str, timeout_s: float) -> BucketRoute:
        route = self._routing.bucket(bucket)
        if route is None:
            await self._refresh_recent(timeout_s)
            route = self._routing.bucket(bucket)
            if route is None:
                raise bucket_not_found(bucket)
        return route

    def _node(self, address: str) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            if self._closed:
                raise ConnectionRefusedError("the cluster is closed")
            node = self._nodes[address] = _Node(address, self._pipeline)
        return node

    async def _refresh_recent(self, timeout_s: float | None = None) -> None:
        """Refresh now (waiting at most `timeout_s`) unless a refresh finished very recently."""
        loop = asyncio.get_running_loop()
        await self._refresh(loop.time() - CONFIG_REFRESH_INTERVAL_MIN_S, timeout_s)

    async def _refresh(self, since: float, timeout_s: float | None = None) -> None:
        """Fetch a newer configuration unless one was fetched after `since` (one fetch at a time)."""
        loop = asyncio.get_running_loop()
        timeout_s = min(timeout_s or self._settings.connect_timeout_s, self._settings.connect_timeout_s)
        async with self._refresh_lock:
            if self._refreshed_at > since:
                return
            try:
                await self._fetch_config(loop.time() + timeout_s)
            finally:
                self._refreshed_at = loop.time()

    def _config_addresses(self) -> list[str]:
        nodes = self._routing.node_addresses()
        return nodes + [seed for seed in self._settings.seeds if seed not in nodes]

    async def _fetch_config(self, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        version = self._routing.version
        request = admin_pb2.GetClusterConfigRequest(config_epoch=version[0], config_revision=version[1])
        for address in self._config_addresses():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                response = await self._node(address).admin.GetClusterConfig(
                    request, timeout=min(remaining, self._settings.connect_timeout_s), metadata=self._metadata
                )
            except grpc.RpcError as error:
                failure = rpc_failure(error, address)
                if is_auth_failure(failure):
                    raise authentication_failure(address, failure) from None
                self._config_error = failure
                continue
            if response.status != KVStatus.SUCCESS:
                self._config_error = BackendStatusError(response.status, f"{address}: {response.message}")
                continue
            if response.HasField("config"):
                self._routing = self._routing.adopt_full(response.config)
            return True
        return False

    async def _bootstrap(self) -> None:
        loop = asyncio.get_running_loop()
        timeout_s = self._settings.bootstrap_timeout_s
        deadline = loop.time() + timeout_s
        backoff_s = 0.01
        while not (await self._fetch_config(deadline) and self._routing.version > (0, 0)):
            now = loop.time()
            if now >= deadline:
                raise bootstrap_failure(self._settings.seeds, timeout_s, self._config_error)
            await asyncio.sleep(min(backoff_s, deadline - now))
            backoff_s = min(backoff_s * 2, BOOTSTRAP_BACKOFF_MAX_S)
        self._refreshed_at = loop.time()
        self._poller = loop.create_task(self._poll())

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self._settings.config_poll_interval_s
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
            woken = self._wake.is_set()
            self._wake.clear()
            if woken:
                wait_s = self._refreshed_at + CONFIG_REFRESH_INTERVAL_MIN_S - loop.time()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            try:
                await self._refresh(loop.time())
            except Exception as error:  # keep polling whatever one round met
                log.warning("configuration refresh failed: %s", error)

    def bucket_names(self) -> list[str]:
        """Not a coroutine: the buckets of the configuration in hand."""
        return self._routing.bucket_names()

    def routing(self) -> Routing:
        return self._routing

    # -- management -------------------------------------------------------------------------
    async def manage(self, action: str, **args: Any) -> Any:
        spec, request = admin_request(action, args)
        await self._ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.management_timeout_s
        response = await self._admin_call(action, spec, request, deadline)
        if response.status != KVStatus.SUCCESS:
            raise BackendStatusError(response.status, response.message)
        if spec.changes_config:
            await self._await_version((response.config_epoch, response.config_revision), deadline)
        return spec.parse(response)

    async def _admin_call(self, action: str, spec: AdminAction, request: Any, deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        addresses = self._config_addresses()
        self._admin_turn += 1
        start = self._admin_turn % len(addresses)
        failure: Exception = ConnectionRefusedError("no node to ask")
        for address in addresses[start:] + addresses[:start]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                failure = BackendTimeoutError(f"no answer within {self._settings.management_timeout_s:.1f} s")
                break
            try:
                call = getattr(self._node(address).admin, spec.rpc)
                return await call(request, timeout=remaining, metadata=self._metadata)
            except grpc.RpcError as error:
                failure = rpc_failure(error, address)
            if not admin_try_next(failure, spec.changes_config):
                break
        raise admin_transport_failure(action, failure, spec.changes_config)

    async def _await_version(self, version: Version, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while self._routing.version < version and loop.time() < deadline:
            await self._fetch_config(deadline)
            if self._routing.version < version:
                await asyncio.sleep(REVISION_WAIT_INTERVAL_S)

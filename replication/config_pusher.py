"""The config pusher: every node gets the cluster manager's current configuration, until it says it runs it.

Owns `ConfigPusher` (one asyncio task per node), what it knows of each node
(`NodePushState`: the revision the node acknowledged, push counters, the last error), and
the options of the manager's channels to nodes (`CHANNEL_OPTIONS`: a node that was down
must be reachable again within a push interval or two). A task wakes on `kick()` (after
every change, and with `force` when a node asks for a configuration from behind) and
every push interval; a failed push is retried on the next wake-up with a fresh
connection, and a node that keeps failing is logged at most every
`PUSH_FAILURE_LOG_INTERVAL_S`.

Invariants: it only ever sends the current configuration; a node's acknowledged revision
is what the node said it runs, never assumed. Must never change the configuration or
decide anything about it (it reads it through the `current` callable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc

from durakv.engine.errors import Status
from durakv.proto import admin_pb2, admin_pb2_grpc
from durakv.replication import config_proto
from durakv.replication.cluster_config import ClusterConfig
from durakv.replication.event_loop import cancel_and_wait

log = logging.getLogger("durakv.manager")

PUSH_TIMEOUT_S = 2.0
PUSH_FAILURE_LOG_INTERVAL_S = 30.0  # a node that keeps failing is logged at most this often
GRPC_MESSAGE_SIZE_MAX = 32 * 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", GRPC_MESSAGE_SIZE_MAX),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_SIZE_MAX),
    # A node that was down must be reachable again within a push interval or two.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class NodeChannels:
    """The manager's channel to each node, by node id: reopened when the node's address
    changes, closed on a failed call so the next one starts without a reconnect backoff."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, grpc.aio.Channel]] = {}

    async def get(self, node_id: str, address: str) -> grpc.aio.Channel:
        held = self._held.get(node_id)
        if held is not None and held[0] != address:
            await self.close(node_id)
            held = None
        if held is None:
            held = self._held[node_id] = (address, grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS))
        return held[1]

    async def close(self, node_id: str) -> None:
        held = self._held.pop(node_id, None)
        if held is not None:
            await held[1].close()

    async def close_all(self) -> None:
        for node_id in list(self._held):
            await self.close(node_id)


_SUCCESS = int(Status.SUCCESS)


@dataclass
class NodePushState:
    """What the pusher knows of one node."""

    node_id: str
    address: str
    acked: config_proto.Version = (0, 0)  # what the node last said it runs
    pushes_ok: int = 0
    pushes_failed: int = 0
    failures_consecutive: int = 0
    last_error: str = ""
    failure_logged_at_s: float | None = None
    failures_unlogged: int = 0
    force: bool = False  # push even if acked is current (the node may have lost its state)


class ConfigPusher:
    """One task per node: push the current configuration whenever the node's acknowledgement is behind.

    A task wakes on `kick()` (after every change) and every `interval_s`; a failed push is
    retried on the next wake-up, so a node that was down gets the newest revision soon
    after it is back.
    """

    def __init__(
        self,
        current: Callable[[], ClusterConfig],
        *,
        epoch: int,
        interval_s: float,
        timeout_s: float = PUSH_TIMEOUT_S,
        failure_log_interval_s: float = PUSH_FAILURE_LOG_INTERVAL_S,
    ) -> None:
        self._current = current
        self._epoch = epoch
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._failure_log_interval_s = failure_log_interval_s
        self._states: dict[str, NodePushState] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._channels = NodeChannels()
        self._encoded: admin_pb2.PushConfigRequest | None = None
        self._running = False

    @property
    def states(self) -> Mapping[str, NodePushState]:
        return self._states

    def start(self) -> None:
        self._running = True
        self.kick()

    def kick(self, *, force: bool = False) -> None:
        """Wake every node's task (starting tasks for new nodes); `force`: push even to current nodes."""
        if not self._running:
            return
        for node in self._current().nodes.values():
            if node.node_id not in self._tasks:
                self._states[node.node_id] = NodePushState(node.node_id, node.address)
                self._wakes[node.node_id] = asyncio.Event()
                self._tasks[node.node_id] = asyncio.create_task(self._run(node.node_id), name=f"push-{node.node_id}")
        for node_id, state in self._states.items():
            state.force = state.force or force
            self._wakes[node_id].set()

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*(cancel_and_wait(task) for task in self._tasks.values()), return_exceptions=True)
        await self._channels.close_all()

    async def _run(self, node_id: str) -> None:
        state, wake = self._states[node_id], self._wakes[node_id]
        while True:
            wake.clear()
            config = self._current()
            node = config.nodes.get(node_id)
            if node is not None and (state.force or state.acked < (self._epoch, config.revision)):
                state.force = False
                state.address = node.address
                try:
                    await self._push(state, config)
                except Exception:  # a bug here must not silently end this node's pushes
                    log.exception("pushing to node %s failed unexpectedly", node_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await wake.wait()

    async def _push(self, state: NodePushState, config: ClusterConfig) -> None:
        if self._encoded is None or self._encoded.config.revision != config.revision:
            self._encoded = config_proto.push_request(config, epoch=self._epoch, target_node_id="")
        request = admin_pb2.PushConfigRequest()
        request.CopyFrom(self._encoded)
        request.target_node_id = state.node_id
        stub = admin_pb2_grpc.NodeControlStub(await self._channels.get(state.node_id, state.address))
        metadata = (("authorization", f"Bearer {config.secret}"),)
        try:
            response = await stub.PushConfig(request, timeout=self._timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            await self._channels.close(state.node_id)  # a fresh connection next time, no backoff carried over
            self._failed(state, config.revision, f"{exc.code().name}: {exc.details()}")
            return
        if response.status != _SUCCESS:
            self._failed(state, config.revision, f"{_status_name(response.status)}: {response.message}")
            return
        state.acked = (response.config_epoch, response.config_revision)
        if state.acked < (self._epoch, config.revision):
            self._failed(state, config.revision, f"the node still runs {state.acked} after the push")
            return
        state.pushes_ok += 1
        if state.failures_consecutive:
            log.info(
                "node %s (%s) runs revision %d again, after %d failed pushes",
                state.node_id,
                state.address,
                state.acked[1],
                state.failures_consecutive,
            )
        else:
            log.debug("node %s runs revision %d", state.node_id, state.acked[1])
        state.failures_consecutive, state.last_error = 0, ""
        state.failure_logged_at_s, state.failures_unlogged = None, 0

    def _failed(self, state: NodePushState, revision: int, error: str) -> None:
        state.pushes_failed += 1
        state.failures_consecutive += 1
        state.last_error = error
        now = time.monotonic()
        if state.failure_logged_at_s is None or now - state.failure_logged_at_s >= self._failure_log_interval_s:
            more = (
                f" ({state.failures_unlogged} more failures since the last report)" if state.failures_unlogged else ""
            )
            log.warning(
                "push of revision %d to node %s (%s) failed: %s%s", revision, state.node_id, state.address, error, more
            )
            state.failure_logged_at_s, state.failures_unlogged = now, 0
        else:
            state.failures_unlogged += 1


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status {status}"

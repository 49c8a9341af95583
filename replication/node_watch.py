"""The cluster manager's watch over its nodes: a probe of each active node every second, and automatic failover.

Owns `NodeWatch`, the shell around `auto_failover.AutoFailover`: every PROBE_INTERVAL_S it
calls Admin.Health on every active node of the current configuration at once (a node that
answers is up unless it says it is stopping; an error or no answer within PROBE_TIMEOUT_S
is a failed probe), hands each result to the core with the time, and asks it for a
decision under the configuration's settings and count. A decision to fail a node over is
carried out exactly as `durakv cluster failover` does (`Manager.failover`, automatic: the
configuration checks the rules again under the change lock, counts it, persists it).
What the core says and why is logged when it changes, and kept for Admin.AutoFailover.

Must never decide on its own (the core does), fail over a node that is not active in the
current configuration, or block the event loop: probes are concurrent and bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from durakv.engine.errors import EngineError
from durakv.proto import admin_pb2, admin_pb2_grpc
from durakv.replication.auto_failover import AutoFailover, Decision, Verdict
from durakv.replication.config_pusher import NodeChannels
from durakv.replication.event_loop import cancel_and_wait

log = logging.getLogger("durakv.manager")

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 1.0


class NodeWatch:
    """Probes the active nodes of `manager`'s configuration and fails one over when the core decides."""

    def __init__(self, manager, *, interval_s: float = PROBE_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self._m = manager
        self._interval_s = interval_s
        self._clock = clock
        self.core = AutoFailover()
        self.decision = Decision(Verdict.ALL_UP, "no probe yet")
        self._logged: tuple[frozenset[str], str | None] = (frozenset(), None)
        self._channels = NodeChannels()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self._channels.close_all()

    def unreachable(self) -> dict[str, float]:
        """node -> seconds its probes have failed."""
        return self.core.unreachable(self._clock())

    async def _run(self) -> None:
        while True:
            started = self._clock()
            try:
                await self._round()
            except Exception:  # a bug: logged, and the watch goes on
                log.exception("node watch round failed")
            await asyncio.sleep(max(0.0, self._interval_s - (self._clock() - started)))

    async def _round(self) -> None:
        config = self._m.config
        active = config.active_nodes()
        results = await asyncio.gather(*(self._probe(node_id, config.nodes[node_id].address) for node_id in active))
        now = self._clock()
        for node_id, ok in zip(active, results, strict=True):
            self.core.probe(node_id, ok, now)
        config = self._m.config  # the latest: a change may have come during the probes
        decision = self.core.decide(
            now,
            config.auto_failover,
            config.auto_failover_count,
            config.active_nodes(),
            lambda node: config.failover_preserves_majority([node]),
        )
        self._log(decision, now)
        self.decision = decision
        if decision.node is not None:
            await self._fail_over(decision.node)

    def _log(self, decision: Decision, now: float) -> None:
        """Log what changed: which nodes are unreachable, and why one is or is not failed over."""
        unreachable = frozenset(self.core.unreachable(now))
        waiting = decision.verdict is Verdict.WAITING
        key = (unreachable, None if waiting else decision.reason)
        if key == self._logged:
            return
        if unreachable != self._logged[0]:
            gone, back = unreachable - self._logged[0], self._logged[0] - unreachable
            for node_id in sorted(gone):
                log.warning("node %s does not answer its probes", node_id)
            for node_id in sorted(back):
                log.info("node %s answers its probes again", node_id)
        if not waiting and unreachable:
            log.warning("automatic failover: %s", decision.reason)
        self._logged = key

    async def _fail_over(self, node_id: str) -> None:
        try:
            await self._m.failover(node_id, automatic=True)
        except (EngineError, OSError) as exc:
            log.warning("automatic failover of %s not done: %s", node_id, exc)
            return
        await self._channels.close(node_id)  # the core forgets it: no longer an active node

    async def _probe(self, node_id: str, address: str) -> bool:
        stub = admin_pb2_grpc.AdminStub(await self._channels.get(node_id, address))
        try:
            health = await stub.Health(admin_pb2.HealthRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            await self._channels.close(node_id)  # a fresh connection next time, no backoff carried over
            return False
        return health.state != admin_pb2.HEALTH_STATE_STOPPING and health.node_id == node_id

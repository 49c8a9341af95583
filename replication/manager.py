"""The running cluster manager: its state, authenticator and pusher, and the one path every change takes.

Owns `Manager`, which serialises changes (one at a time, under the change lock: apply the
change with `cluster_config`'s rules, persist it atomically through `manager_state`, then
kick the pusher), the hard failover of a node (the survivors' seqnos gathered and
`mark_failed` applied under the same lock, so the chains the seqnos were gathered for
are the chains it rewrites), and the list of nodes that do not run the current revision.
The manager serves every revision under epoch `CONFIG_EPOCH` (`ClusterConfig` has none).

Invariant: a change is persisted before any caller or node can see it. Must never
authenticate or answer a caller (that is `manager_admin`'s) or decide a change itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from durakv.replication.cluster_config import ClusterConfig, NodeState
from durakv.replication.config_pusher import ConfigPusher
from durakv.replication.manager_failover import FailoverChoice, failover_choices, gather_positions
from durakv.replication.manager_state import ManagerState
from durakv.replication.manager_users import Authenticator
from durakv.replication.node_watch import NodeWatch

log = logging.getLogger("durakv.manager")

CONFIG_EPOCH = 1


class Manager:
    """The running manager: its state, authenticator and pusher; changes go through `apply`."""

    def __init__(self, state: ManagerState, *, push_interval_s: float, epoch: int = CONFIG_EPOCH) -> None:
        self.state = state
        self.epoch = epoch
        self.auth = Authenticator()
        self.pusher = ConfigPusher(lambda: self.state.config, epoch=epoch, interval_s=push_interval_s)
        self.watch = NodeWatch(self)  # probes the nodes; automatic failover
        self.started_at_s = time.monotonic()
        self.stopping = False
        self._change_lock = asyncio.Lock()

    @property
    def config(self) -> ClusterConfig:
        return self.state.config

    async def apply(self, what: str, change: Callable[[ClusterConfig], ClusterConfig]) -> ClusterConfig:
        """Apply and persist one change (typed errors leave everything as it was), then push it."""
        async with self._change_lock:
            loop = asyncio.get_running_loop()  # scrypt and fsync stay off the event loop
            config = await loop.run_in_executor(None, self.state.update, change)
        log.info("revision %d: %s", config.revision, what)
        self.pusher.kick()
        return config

    async def failover(
        self, node_id: str, *, automatic: bool = False
    ) -> tuple[ClusterConfig, list[FailoverChoice], list[str]]:
        """Hard failover of `node_id`: ask the survivors for their seqnos, then mark it failed.

        Under the change lock throughout, so the chains the seqnos were gathered for are the
        chains `mark_failed` rewrites (and, `automatic`, the rules of automatic failover are
        checked against the configuration it changes). Returns the new configuration, one
        choice per vbucket the node was active for, and the surviving nodes holding copies
        that did not answer. Typed errors (ClusterConfigError, OSError) leave everything as
        it was.
        """
        async with self._change_lock:
            before = self.config
            before.mark_failed(node_id, automatic=automatic)  # refuse before asking anyone
            positions, unreachable = await gather_positions(before, node_id)
            loop = asyncio.get_running_loop()
            config = await loop.run_in_executor(
                None, self.state.update, lambda c: c.mark_failed(node_id, positions, automatic=automatic)
            )
        choices = failover_choices(before, config, node_id, positions)
        lost = sum(1 for choice in choices if choice.node_id is None)
        log.warning(
            "revision %d: %s node %s: %d vbuckets promoted, %d lost%s",
            config.revision,
            "automatically failed over" if automatic else "failed over",
            node_id,
            len(choices) - lost,
            lost,
            f", not answering: {', '.join(unreachable)}" if unreachable else "",
        )
        self.pusher.kick()
        return config, choices, unreachable

    def push_problems(self) -> list[str]:
        """One line per active node that does not run the current revision."""
        config = self.config
        problems = []
        for node_id, push in self.pusher.states.items():
            node = config.nodes.get(node_id)
            if node is None or node.state is not NodeState.ACTIVE or push.acked >= (self.epoch, config.revision):
                continue
            why = f": {push.last_error}" if push.last_error else ""
            problems.append(f"node {node_id} ({node.address}) runs revision {push.acked[1]} of {config.revision}{why}")
        return problems

"""The nodes of a multi-node run and its vbucket map.

Owns `MultiCluster`: the three `SimNode`s (each with a `NodeHistory`; `n1`'s judges every
vbucket until a failover), the vbucket map (`chains`, changed only by a failover and a
rejoin), the routing of a key to its vbucket's current active, and the record of every
node's memory losses and failovers (what the failover's guarantee table is judged from).
`role` is what a node is told about a vbucket through `engine.set_topology`.

Must never: change the map itself (the fault schedule does, through the real planner), or
stop or start a node (the replication shell does, so that its streams follow).
"""

from __future__ import annotations

from durakv.engine.durability import Chain
from durakv.engine.keys import vbucket_of
from durakv.engine.vbucket import VBState

from . import failover as fo
from .cluster import SimCluster, SimNode
from .multichecks import NodeHistory
from .multiconfig import ACTIVE, NODES, MultiConfig
from .simclock import SimClock, SimThread
from .simdisk import DiskProfile, SimDisk


class MultiCluster(SimCluster):
    """Three nodes, the vbucket map (`chains`, changed only by a failover and a rejoin), and
    the memory losses of every node (for the failover's guarantee table)."""

    def __init__(self, clock: SimClock, config: MultiConfig) -> None:
        self.clock = clock
        self.config = config.bucket
        self.nodes: dict[str, SimNode] = {}
        for node_id in NODES:
            disk = SimDisk(clock, DiskProfile(**vars(config.disk)))
            node = SimNode(clock, node_id, config.bucket, config.node, disk)
            node.history = NodeHistory(node_id, config.bucket.num_vbuckets)
            if node_id == ACTIVE:
                node.history.judged = set(range(config.bucket.num_vbuckets))
            self.nodes[node_id] = node
        self.chains: list[Chain | None] = list(config.chains)
        self.memory_losses: list[fo.MemoryLoss] = []
        self.failovers: list[fo.FailoverEvent] = []
        self.faults_fired: list[str] = []
        self._fault_thread: SimThread | None = None

    def route(self, key: bytes) -> SimNode | None:
        chain = self.chains[vbucket_of(key, self.config.num_vbuckets)]
        return None if chain is None else self.nodes[chain.active]

    def durability_possible(self, key: bytes) -> bool:
        chain = self.chains[vbucket_of(key, self.config.num_vbuckets)]
        return chain is not None and chain.durability_possible()

    def active_ids(self) -> set[str]:
        return {chain.active for chain in self.chains if chain is not None}

    def pure_replicas(self) -> list[str]:
        """The nodes that are the active of no vbucket (before a failover: n2 and n3)."""
        actives = self.active_ids()
        return [node_id for node_id in NODES if node_id not in actives]


def role(node_id: str, chain: Chain | None) -> tuple:
    """set_topology's arguments for `node_id` in `chain`."""
    if chain is not None and chain.active == node_id:
        return (VBState.ACTIVE, chain)
    if chain is not None and node_id in chain.replicas:
        return (VBState.REPLICA,)
    return (VBState.DEAD,)

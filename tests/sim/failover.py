"""Hard failover in multi-node runs: who is promoted, the truth after it, what it may lose.

Owns the pieces of a failover that do not depend on the replication shell:
- `replica_positions`: each surviving copy's (HPS, high seqno) exactly as the cluster manager
  gathers them: the node's own report (`node_control.vbucket_stats`, the real code) turned
  into a position as `manager_failover.gather_positions` turns it (replica copies only);
- `promote`: the new map, from the real planner (`vbmap.failover`: the replica with the
  highest (HPS, high seqno), ties to the earlier slot), never a rule of its own. A replica
  copy's HPS is the one its stream consumer acknowledges (as a node's replicator reports it);
- the failed node's return is `vbmap.add_back` (what `durakv cluster recover` applies);
- `MemoryLoss` and `failover_loss_allowed`: the guarantee table of the multinode module's
  docstring, as one function.

Must never: decide who is promoted (the planner does) or what a copy holds (the checker's
histories do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace

from durakv.engine.durability import Chain, Level
from durakv.proto import admin_pb2
from durakv.replication import vbmap
from durakv.replication.node_control import vbucket_stats

from .workload import Write

VBucketMap = tuple[Chain | None, ...]
MEMORY_LEVELS = (Level.MAJORITY, Level.MAJORITY_AND_PERSIST_TO_ACTIVE)  # a replica acks them from memory


@dataclass(frozen=True)
class MemoryLoss:
    """A node lost what it held only in memory: a SIGKILL (its WAL buffer) or a power cut."""

    node: str
    time: float
    kind: str  # "process" | "power"


@dataclass(frozen=True)
class FailoverEvent:
    """One hard failover: the failed node, when, the map before and after."""

    failed: str
    time: float
    crash: str  # how the failed node stopped: "process" | "power"
    before: VBucketMap
    after: VBucketMap


def replica_positions(
    engine, node_id: str, replica_hps: Callable[[int], int | None] = lambda _vbid: None
) -> dict[int, vbmap.Position]:
    """vbucket -> (HPS, high seqno) of this node's replica copies, as the manager asks for them
    (`replica_hps`: the HPS each copy's stream consumer acknowledges, as a node's replicator
    reports it)."""
    bucket = SimpleNamespace(lock=contextlib.nullcontext(), engine=engine)
    return {
        vb.vbucket: (min(vb.high_prepared_seqno, vb.high_seqno), vb.high_seqno)
        for vb in vbucket_stats(bucket, replica_hps)
        if vb.state == admin_pb2.VBUCKET_STATE_REPLICA
    }


def promote(before: VBucketMap, failed: str, positions: dict[str, dict[int, vbmap.Position]]) -> VBucketMap:
    """The map after hard failover of `failed` (vbmap.failover over the survivors' positions)."""
    by_vbucket: dict[int, dict[str, vbmap.Position]] = {}
    for node, copies in sorted(positions.items()):
        for vb, position in copies.items():
            by_vbucket.setdefault(vb, {})[node] = position
    return vbmap.failover(before, failed, by_vbucket)


def inverted(positions: dict[str, dict[int, vbmap.Position]]) -> dict[str, dict[int, vbmap.Position]]:
    """Positions that rank the copies the other way round (tests only: a wrong promotion the
    checker must catch)."""
    top = 1 + max((high for copies in positions.values() for _, high in copies.values()), default=0)
    return {node: {vb: (0, top - high) for vb, (_, high) in copies.items()} for node, copies in positions.items()}


def failover_loss_allowed(write: Write, chain: Chain, losses: Iterable[MemoryLoss], failover_time: float) -> bool:
    """May this acknowledged write be missing from the promoted copy? (the docstring's table)

    NONE: yes. PERSIST_TO_MAJORITY: never (a replica fsynced it before the ack, and a power
    cut keeps what was fsynced). MAJORITY and MAJORITY_AND_PERSIST_TO_ACTIVE: a replica held
    it in memory at the ack (the active's own persistence dies with its copy, which rolls
    back to the new active's), so only if some replica of the chain lost its memory (SIGKILL
    or power cut) between the request and the failover."""
    if write.level is Level.NONE:
        return True
    if write.level not in MEMORY_LEVELS:
        return False
    replicas = {node for node in chain.replicas if node is not None}
    return any(loss.node in replicas and write.issued <= loss.time <= failover_time for loss in losses)

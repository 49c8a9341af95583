"""Hard failover at the cluster manager: the survivors' seqnos, and who became active where.

Owns `gather_positions`, which asks every surviving node that holds a replica of a
vbucket the failed node was active for for its (HPS, high seqno)
(NodeControl.GetVBucketStates with the cluster secret, all nodes at once, a few seconds at
most; a node that does not answer is reported and its copies rank lowest), and
`failover_choices`, which reads off the promotion of each such vbucket from the
configurations before and after. The manager (`manager.Manager.failover`) runs both
under its change lock around `ClusterConfig.mark_failed`.

Must never choose the replica to promote (that is `vbmap.failover`'s, through
`ClusterConfig.mark_failed`) or change the configuration; only replica copies count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from durakv.engine.errors import Status
from durakv.proto import admin_pb2, admin_pb2_grpc
from durakv.replication import vbmap
from durakv.replication.cluster_config import ClusterConfig
from durakv.replication.config_pusher import CHANNEL_OPTIONS

log = logging.getLogger("durakv.manager")

VBUCKET_STATES_TIMEOUT_S = 3.0  # failover: how long a surviving node may take to report its seqnos

_SUCCESS = int(Status.SUCCESS)


@dataclass(frozen=True)
class FailoverChoice:
    """Who became the active of one vbucket the failed node was active for (None: lost)."""

    bucket: str
    vbucket: int
    node_id: str | None
    position: vbmap.Position | None  # (HPS, high seqno) it was chosen with; None if not asked


async def gather_positions(
    config: ClusterConfig, failed_node: str, timeout_s: float = VBUCKET_STATES_TIMEOUT_S
) -> tuple[dict[str, dict[int, dict[str, vbmap.Position]]], list[str]]:
    """bucket -> vbucket -> node -> (HPS, high seqno) of the replicas that may be promoted.

    Asks (NodeControl.GetVBucketStates, with the cluster secret, all at once) every node
    other than `failed_node` that holds a replica of a vbucket `failed_node` is active for;
    only replica copies count. Also returns the nodes that did not answer (their copies stay
    unknown and rank lowest, `vbmap.failover`).
    """
    wanted: dict[str, dict[str, set[int]]] = {}  # node -> bucket -> vbuckets
    for name, entry in config.buckets.items():
        for vb, chain in enumerate(entry.vbmap):
            if chain is None or chain.active != failed_node:
                continue
            for replica in chain.replicas:
                if replica is not None and replica != failed_node:
                    wanted.setdefault(replica, {}).setdefault(name, set()).add(vb)
    metadata = (("authorization", f"Bearer {config.secret}"),)

    async def ask(node_id: str) -> tuple[str, dict[str, dict[int, vbmap.Position]] | None]:
        answers: dict[str, dict[int, vbmap.Position]] = {}
        async with grpc.aio.insecure_channel(config.nodes[node_id].address, options=CHANNEL_OPTIONS) as channel:
            stub = admin_pb2_grpc.NodeControlStub(channel)
            for bucket, vbuckets in wanted[node_id].items():
                request = admin_pb2.GetVBucketStatesRequest(bucket=bucket)
                try:
                    response = await stub.GetVBucketStates(request, timeout=timeout_s, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    log.warning("failover: node %s did not answer GetVBucketStates: %s", node_id, exc.code().name)
                    return node_id, None
                if response.status != _SUCCESS:
                    log.warning("failover: node %s has no copy of bucket %s: %s", node_id, bucket, response.message)
                    continue
                answers[bucket] = {
                    vb.vbucket: (min(vb.high_prepared_seqno, vb.high_seqno), vb.high_seqno)
                    for vb in response.vbuckets
                    if vb.vbucket in vbuckets and vb.state == admin_pb2.VBUCKET_STATE_REPLICA
                }
        return node_id, answers

    positions: dict[str, dict[int, dict[str, vbmap.Position]]] = {}
    unreachable = []
    for node_id, answers in await asyncio.gather(*(ask(node) for node in sorted(wanted))):
        if answers is None:
            unreachable.append(node_id)
            continue
        for bucket, by_vb in answers.items():
            for vb, position in by_vb.items():
                positions.setdefault(bucket, {}).setdefault(vb, {})[node_id] = position
    return positions, unreachable


def failover_choices(
    before: ClusterConfig,
    after: ClusterConfig,
    failed_node: str,
    positions: Mapping[str, Mapping[int, Mapping[str, vbmap.Position]]],
) -> list[FailoverChoice]:
    """The new active of every vbucket `failed_node` was the active of in `before`."""
    choices = []
    for name, entry in before.buckets.items():
        new_map = after.buckets[name].vbmap
        for vb, chain in enumerate(entry.vbmap):
            if chain is None or chain.active != failed_node:
                continue
            new = new_map[vb]
            node = new.active if new is not None else None
            position = positions.get(name, {}).get(vb, {}).get(node) if node is not None else None
            choices.append(FailoverChoice(name, vb, node, position))
    return choices

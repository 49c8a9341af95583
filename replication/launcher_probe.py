"""Asking a local cluster's processes over gRPC: health, the vbuckets they serve, their faults.

`Probe` keeps one channel per address; `gather_status` is what `durakv cluster status`
shows, `not_ready` / `wait_ready` what `up` and `start` wait for. Decides nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import grpc

from durakv.proto import admin_pb2, admin_pb2_grpc, kv_pb2
from durakv.replication import vbmap
from durakv.replication.cluster_dir import (
    EXITED,
    GRPC_MESSAGE_SIZE_MAX,
    MANAGER,
    POLL_INTERVAL_S,
    READY_TIMEOUT_S_DEFAULT,
    RPC_TIMEOUT_S,
    ClusterDir,
)
from durakv.replication.launcher_processes import is_paused, is_running, read_pid, running_pid


class Probe:
    """Raw gRPC calls to the cluster's processes; one channel per address, kept until close()."""

    def __init__(self, secret: str) -> None:
        self._bearer = (("authorization", f"Bearer {secret}"),)
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, address: str) -> grpc.Channel:
        if address not in self._channels:
            size = GRPC_MESSAGE_SIZE_MAX
            options = [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]
            self._channels[address] = grpc.insecure_channel(address, options=options)
        return self._channels[address]

    def health(self, address: str) -> admin_pb2.HealthResponse | None:
        """The process's answer, or None if it does not answer."""
        stub = admin_pb2_grpc.AdminStub(self._channel(address))
        try:
            return stub.Health(admin_pb2.HealthRequest(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            return None

    def vbucket_states(self, address: str, bucket: str) -> dict[int, int] | None:
        """vbucket -> admin_pb2.VBucketState of a node's copies of `bucket`; None if it cannot tell."""
        stub = admin_pb2_grpc.NodeControlStub(self._channel(address))
        request = admin_pb2.GetVBucketStatesRequest(bucket=bucket)
        try:
            response = stub.GetVBucketStates(request, timeout=RPC_TIMEOUT_S, metadata=self._bearer)
        except grpc.RpcError:
            return None
        if response.status != kv_pb2.SUCCESS:  # e.g. BUCKET_NOT_FOUND before the node has the bucket
            return None
        return {vb.vbucket: vb.state for vb in response.vbuckets}

    def faults(self, address: str) -> tuple[str, ...] | None:
        """The testbed faults injected into a node, in words; None if it cannot tell."""
        from durakv.replication.node_faults import describe

        stub = admin_pb2_grpc.NodeControlStub(self._channel(address))
        try:
            response = stub.ListFaults(admin_pb2.ListFaultsRequest(), timeout=RPC_TIMEOUT_S, metadata=self._bearer)
        except grpc.RpcError:
            return None
        if response.status != kv_pb2.SUCCESS:
            return None
        return describe(response.disk, response.network, response.partitioned_from)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def health_name(state: int) -> str:
    return admin_pb2.HealthState.Name(state).removeprefix("HEALTH_STATE_").lower()


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    address: str
    pid: int | None  # from the pid file, running or not
    alive: bool
    health: str | None = None  # serving / starting / degraded / stopping; None when it does not answer
    problems: tuple[str, ...] = ()
    config_revision: int | None = None
    active_vbuckets: int | None = None  # summed over buckets; None for the manager or when unknown
    replica_vbuckets: int | None = None
    faults: tuple[str, ...] = ()  # testbed faults in place: "paused", and what NodeControl.ListFaults lists

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather_status(cdir: ClusterDir) -> list[ProcessStatus]:
    """Every process of the cluster: pid, whether it runs, health, revision, vbuckets it holds."""
    config = cdir.manager_config()
    buckets = list(config.buckets) if config is not None else []
    probe = Probe(cdir.secret())
    try:
        statuses = []
        for name in cdir.spec.names:
            address = cdir.spec.address(name)
            record = read_pid(cdir, name)
            alive = record is not None and is_running(record)
            paused = alive and is_paused(record)
            health = probe.health(address) if alive and not paused else None
            fields: dict[str, Any] = {"faults": ("paused",)} if paused else {}
            if health is not None:
                fields = {
                    "health": health_name(health.state),
                    "problems": tuple(health.problems),
                    "config_revision": health.config_revision,
                }
                if name != MANAGER:
                    fields["faults"] = probe.faults(address) or ()
                    answers = [probe.vbucket_states(address, bucket) for bucket in buckets]
                    if None not in answers:
                        states = [state for answer in answers for state in answer.values()]
                        fields["active_vbuckets"] = states.count(admin_pb2.VBUCKET_STATE_ACTIVE)
                        fields["replica_vbuckets"] = states.count(admin_pb2.VBUCKET_STATE_REPLICA)
            pid = record.pid if record is not None else None
            statuses.append(ProcessStatus(name, address, pid, alive, **fields))
        return statuses
    finally:
        probe.close()


def not_ready(cdir: ClusterDir, names: Iterable[str], probe: Probe) -> dict[str, str]:
    """Why each of `names` is not ready yet (empty: all are). EXITED marks a process that died.

    Ready: the manager answers Health; a node answers Health as serving and reports itself
    active for every vbucket the manager's configuration makes it the active of.
    """
    config = cdir.manager_config()
    reasons: dict[str, str] = {}
    for name in names:
        address = cdir.spec.address(name)
        if running_pid(cdir, name) is None:
            reasons[name] = EXITED
            continue
        health = probe.health(address)
        if health is None:
            reasons[name] = f"does not answer Admin.Health at {address} yet"
        elif name != MANAGER and health.state != admin_pb2.HEALTH_STATE_SERVING:
            reasons[name] = f"health {health_name(health.state)}: {'; '.join(health.problems) or '-'}"
        elif name != MANAGER:
            if config is None:
                reasons[name] = f"the manager has no configuration in {cdir.manager_dir}"
                continue
            for bucket, entry in config.buckets.items():
                expected = vbmap.node_vbuckets(entry.vbmap, name)[0]
                states = probe.vbucket_states(address, bucket) or {}
                missing = [vb for vb in expected if states.get(vb) != admin_pb2.VBUCKET_STATE_ACTIVE]
                if missing:
                    reasons[name] = f"bucket {bucket}: {len(missing)} of its {len(expected)} active vbuckets not served"
                    break
    if config is not None and set(cdir.spec.nodes) <= set(names):
        for bucket, entry in config.buckets.items():
            orphans = [vb for vb, chain in enumerate(entry.vbmap) if chain is None]
            if orphans:
                reasons["cluster"] = f"bucket {bucket}: {len(orphans)} vbuckets have no copy left"
    return reasons


def wait_ready(
    cdir: ClusterDir, names: Iterable[str] | None = None, timeout_s: float = READY_TIMEOUT_S_DEFAULT
) -> dict[str, str]:
    """Poll `not_ready` until nothing is left (returns {}), a process exits, or the timeout passes."""
    names = list(cdir.spec.names if names is None else names)
    deadline = time.monotonic() + timeout_s
    probe = Probe(cdir.secret())
    try:
        while True:
            reasons = not_ready(cdir, names, probe)
            if not reasons or EXITED in reasons.values() or time.monotonic() >= deadline:
                return reasons
            time.sleep(POLL_INTERVAL_S)
    finally:
        probe.close()

"""A node's management services: `NodeControl` (the manager's calls) and `Admin` (clients' calls).

Owns: `NodeControl.PushConfig` (hands a configuration to the runtime, answers the revision
the node runs), `GetVBucketStates`, and the testbed faults (`InjectFault`, `ClearFaults`,
`ListFaults`, carried out by `node_faults`); `Admin` as a node serves it -- GetClusterConfig from
the node's own configuration, Health and Stats about this node, and every other Admin call
forwarded to the cluster manager with the caller's own credentials (the manager decides and
authorizes configuration changes, docs/cluster-protocol.md).

Must never: change the configuration itself (only the manager does), apply a configuration
pushed by anything but the cluster (Bearer secret), or turn a manager that cannot be reached
into a gRPC error (that is status TMPFAIL in the response, admin.proto).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from durakv import __version__
from durakv.engine.errors import Status
from durakv.engine.vbucket import VBState
from durakv.proto import admin_pb2, admin_pb2_grpc
from durakv.replication import node_faults
from durakv.replication.auth import AUTH_METADATA_KEY, Principal, caller_or_abort
from durakv.replication.users import Action

log = logging.getLogger("durakv.node.control")

FORWARD_TIMEOUT_S = 10.0  # a forwarded Admin call without a deadline of its own waits this long
_LOCAL = {"GetClusterConfig", "Health", "Stats"}  # Admin RPCs a node answers itself
_PASS_THROUGH = {  # manager answers that are the caller's problem, passed on as they are
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_VB_STATES = {
    VBState.ACTIVE: admin_pb2.VBUCKET_STATE_ACTIVE,
    VBState.REPLICA: admin_pb2.VBUCKET_STATE_REPLICA,
    VBState.PENDING: admin_pb2.VBUCKET_STATE_PENDING,
}


async def _authenticate(runtime, context: grpc.aio.ServicerContext) -> Principal | None:
    return await caller_or_abort(runtime.authenticator, context)


_NOT_READY = "this node has no cluster configuration yet"


def vbucket_stats(
    bucket, replica_hps: Callable[[int], int | None] = lambda _vbid: None
) -> list[admin_pb2.VBucketStats]:
    """Every vbucket of `bucket` this node holds a copy of.

    HPS: on the active, its durability monitor's; on a replica, the HPS it acknowledges to the
    active (`replica_hps`: its stream consumer's, as failover ranks replicas by it, reference
    §2.7), or, while no stream has been built for it since a restart, the highest persisted
    prepare (what a restarted replica acknowledges first). HCS: the active's (0 elsewhere).
    """
    stats = []
    with bucket.lock:
        engine = bucket.engine
        for vb in engine.vbuckets:
            state = _VB_STATES.get(vb.state)
            if state is None:
                continue
            active = vb.state is VBState.ACTIVE
            monitor = engine.monitors[vb.vbid]
            if active:
                hps = monitor.high_prepared_seqno
            else:
                hps = replica_hps(vb.vbid)
                if hps is None:
                    hps = min(vb.high_prepared_seqno, vb.high_seqno)
            stats.append(
                admin_pb2.VBucketStats(
                    vbucket=vb.vbid,
                    state=state,
                    uuid=vb.uuid,
                    high_seqno=vb.high_seqno,
                    persisted_seqno=vb.persisted_seqno,
                    high_prepared_seqno=hps,
                    high_completed_seqno=monitor.high_completed_seqno if active else 0,
                    sync_writes_pending=len(vb.prepares),
                )
            )
    return stats


def _replica_hps(runtime, bucket_name: str) -> Callable[[int], int | None]:
    """What vbucket_stats reports as a replica copy's HPS: the node's replicator's consumers'."""
    replicator = runtime.replicator
    return lambda vbid: None if replicator is None else replicator.replica_hps(bucket_name, vbid)


class NodeControlService(admin_pb2_grpc.NodeControlServicer):
    def __init__(self, runtime) -> None:
        self.rt = runtime

    async def _cluster_only(self, context) -> None:
        principal = await _authenticate(self.rt, context)
        if principal is None or not principal.is_cluster:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "NodeControl is for the cluster's own processes")

    async def PushConfig(self, request, context):
        await self._cluster_only(context)
        status, message = await self.rt.apply_push(request)
        epoch, revision = self.rt.version
        return admin_pb2.PushConfigResponse(
            status=status, message=message, node_id=self.rt.node_id, config_epoch=epoch, config_revision=revision
        )

    # -- testbed faults (node_faults.py) ------------------------------------------------------
    async def InjectFault(self, request, context):
        await self._cluster_only(context)
        kind = request.WhichOneof("fault")
        faults = self.rt.faults
        if kind == "power_loss" and request.power_loss:
            node_faults.power_loss(list(self.rt.buckets.values()))  # does not return
        try:
            if kind == "disk":
                faults.disk.set(request.disk.fsync_delay_ms, request.disk.fsync_errors, request.disk.full)
                faults.disk.install(self.rt.buckets.values())
            elif kind == "network":
                faults.set_network(request.network.replication_delay_ms, request.network.replication_drop_percent)
            elif kind == "partition":
                known = [n.node_id for n in self.rt.config.nodes] if self.rt.config is not None else []
                faults.partition(request.partition.peers, known, self.rt.node_id)
                self.rt.on_partition_changed()
            else:
                return self._faults(
                    Status.EINVAL, "InjectFault needs a disk or network fault, power_loss or a partition"
                )
        except ValueError as exc:
            return self._faults(Status.EINVAL, str(exc))
        return self._faults(Status.SUCCESS)

    async def ClearFaults(self, request, context):
        await self._cluster_only(context)
        self.rt.faults.disk.set(0, 0, False)
        self.rt.faults.partitioned = frozenset()
        self.rt.faults.set_network(0, 0)
        self.rt.on_partition_changed()
        return self._faults(Status.SUCCESS)

    async def ListFaults(self, request, context):
        await self._cluster_only(context)
        return self._faults(Status.SUCCESS)

    def _faults(self, status: Status, message: str = "") -> admin_pb2.InjectFaultResponse:
        faults = self.rt.faults
        disk = admin_pb2.DiskFault(
            fsync_delay_ms=faults.disk.fsync_delay_ms, fsync_errors=faults.disk.fsync_errors, full=faults.disk.full
        )
        network = admin_pb2.NetworkFault(
            replication_delay_ms=round(faults.replication_delay_s * 1000),
            replication_drop_percent=faults.replication_drop_percent,
        )
        return admin_pb2.InjectFaultResponse(
            status=status, message=message, disk=disk, partitioned_from=sorted(faults.partitioned), network=network
        )

    async def GetVBucketStates(self, request, context):
        await self._cluster_only(context)
        epoch, revision = self.rt.version
        response = admin_pb2.GetVBucketStatesResponse(
            node_id=self.rt.node_id, config_epoch=epoch, config_revision=revision
        )
        bucket = self.rt.buckets.get(request.bucket)
        if bucket is None:
            response.status, response.message = Status.BUCKET_NOT_FOUND, f"bucket {request.bucket[:100]!r} not found"
            return response
        response.vbuckets.extend(vbucket_stats(bucket, _replica_hps(self.rt, request.bucket)))
        return response


class AdminService(admin_pb2_grpc.AdminServicer):
    """Admin on a node: three RPCs answered here, the rest forwarded (methods added below)."""

    def __init__(self, runtime, manager_channel: grpc.aio.Channel, manager_address: str) -> None:
        self.rt = runtime
        self.manager = admin_pb2_grpc.AdminStub(manager_channel)
        self.manager_address = manager_address

    async def GetClusterConfig(self, request, context):
        principal = await _authenticate(self.rt, context)
        if self.rt.config is None or principal is None:
            return admin_pb2.GetClusterConfigResponse(status=Status.TMPFAIL, message=_NOT_READY)
        view = self.rt.bucket_view(request.bucket) if request.bucket else self.rt.client_view()
        if view is None:
            return admin_pb2.GetClusterConfigResponse(
                status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.bucket[:100]!r} not found"
            )
        response = admin_pb2.GetClusterConfigResponse(status=Status.SUCCESS)
        if self.rt.version > (request.config_epoch, request.config_revision):
            response.config.CopyFrom(view)
        return response

    async def Health(self, request, context):
        rt = self.rt
        problems = [
            f"bucket {name}: the write-ahead log is failing: {b.wal.failed}"
            for name, b in rt.buckets.items()
            if b.wal.failed is not None
        ]
        if rt.stopping:
            state = admin_pb2.HEALTH_STATE_STOPPING
        elif rt.config is None:
            state = admin_pb2.HEALTH_STATE_STARTING
            problems.append("waiting for the first cluster configuration")
        else:
            state = admin_pb2.HEALTH_STATE_DEGRADED if problems else admin_pb2.HEALTH_STATE_SERVING
        epoch, revision = rt.version
        return admin_pb2.HealthResponse(
            status=Status.SUCCESS,
            node_id=rt.node_id,
            state=state,
            config_epoch=epoch,
            config_revision=revision,
            problems=problems,
            version=__version__,
            uptime_s=int(time.monotonic() - rt.started_monotonic),
        )

    async def Stats(self, request, context):
        principal = await _authenticate(self.rt, context)
        response = admin_pb2.StatsResponse(node_id=self.rt.node_id)
        if principal is None:
            response.status, response.message = Status.TMPFAIL, _NOT_READY
            return response
        if not principal.allows(Action.MANAGE, None):
            response.status, response.message = Status.EACCESS, "Stats needs the admin role"
            return response
        names = [request.bucket] if request.bucket else sorted(self.rt.buckets)
        for name in names:
            bucket = self.rt.buckets.get(name)
            if bucket is None:
                response.status, response.message = Status.BUCKET_NOT_FOUND, f"bucket {name[:100]!r} not found"
                return response
            vbuckets = vbucket_stats(bucket, _replica_hps(self.rt, name))
            with bucket.lock:
                counters = {
                    "vbuckets_active": sum(v.state == admin_pb2.VBUCKET_STATE_ACTIVE for v in vbuckets),
                    "vbuckets_replica": sum(v.state == admin_pb2.VBUCKET_STATE_REPLICA for v in vbuckets),
                    "sync_writes_in_flight": bucket.engine.sync_writes_in_flight(),
                    "memtable_bytes": bucket.engine.memtable_size(),
                    "checkpoints": bucket.checkpoint_count,
                }
            out = response.buckets.add(bucket=name, counters=counters)
            if request.per_vbucket:
                out.vbuckets.extend(vbuckets)
        return response

    async def forward(self, name: str, request, context):
        """Send an Admin call on to the manager with the caller's credentials; its answer comes back as is."""
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if k == AUTH_METADATA_KEY)
        remaining = context.time_remaining()
        timeout = min(remaining, FORWARD_TIMEOUT_S) if remaining is not None else FORWARD_TIMEOUT_S
        try:
            # Waits for a manager that is starting or restarting, within the deadline, rather
            # than failing at once while the channel reconnects.
            return await getattr(self.manager, name)(request, metadata=metadata, timeout=timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _PASS_THROUGH:
                await context.abort(exc.code(), exc.details() or "")
            log.warning("forwarding %s to the manager at %s failed: %s", name, self.manager_address, exc.code().name)
            return _RESPONSES[name](
                status=Status.TMPFAIL,
                message=f"the cluster manager at {self.manager_address} cannot be reached ({exc.code().name})",
            )


_ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
_RESPONSES = {m.name: getattr(admin_pb2, m.output_type.name) for m in _ADMIN.methods}


def _forwarder(name: str):
    async def method(self: AdminService, request, context):
        return await self.forward(name, request, context)

    method.__name__ = name
    return method


for _method in _ADMIN.methods:
    if _method.name not in _LOCAL:
        setattr(AdminService, _method.name, _forwarder(_method.name))

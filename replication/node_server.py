"""A cluster node's process: the engine's data directory, the configuration it runs, the gRPC server.

Owns: `NodeRuntime` -- the configuration the node runs and the buckets it serves, and
applying a new configuration to the engine (create/drop buckets, adopt manifests, set every
vbucket's state and chain; docs/cluster-protocol.md, "Configuration flow") -- and `serve`:
open the data directory, load the last configuration saved there, start the grpc.aio
server (KV, Admin, NodeControl, Replication) and the replicator (the calls copying this
node's replica vbuckets from their actives, re-planned after every configuration applied),
pull the configuration from the manager in the background, and on SIGTERM/SIGINT stop
replicating, stop accepting calls, let in-flight ones finish, close the engine cleanly
(final checkpoint, CLEAN marker) and exit 0.

Must never: decide what a configuration means for this node (node_config does), answer a
request (the services do), or apply a configuration older than the one it runs.

Invariants: configurations are applied one at a time (`_apply_lock`); the services only see
buckets whose manifest and vbucket states are set (`buckets` is replaced whole, on the event
loop thread); the saved configuration is written before it is applied, so a node that
crashes mid-apply applies it again at its next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import json_format

from durakv.engine.embedded import EmbeddedBucket, EmbeddedNode
from durakv.engine.errors import DataDirError, EngineError, KVError, Status
from durakv.engine.files import atomic_write
from durakv.engine.vbucket import VBState
from durakv.proto import admin_pb2, admin_pb2_grpc, cluster_pb2, kv_pb2, replication_pb2
from durakv.replication import event_loop, node_config, node_faults
from durakv.replication.auth import Authenticator, bearer_metadata, users_from_proto
from durakv.replication.grpc_handlers import add_service
from durakv.replication.kv_service import KVService
from durakv.replication.node_config import NO_VERSION, BucketPlan, ConfigError, LocalBucket, Version
from durakv.replication.node_control import AdminService, NodeControlService
from durakv.replication.replication_service import ReplicationService
from durakv.replication.replicator import Replicator

log = logging.getLogger("durakv.node")

MESSAGE_SIZE_MAX = 32 * 1024 * 1024  # bytes, both directions (kv.proto: values up to 20 MiB)
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_SIZE_MAX),
    ("grpc.max_send_message_length", MESSAGE_SIZE_MAX),
]
# The manager is one local process that may be starting or restarting: reconnect to it soon
# (gRPC's default backoff grows to 120 s), so a call waiting for it (wait_for_ready) goes
# through within a second or two of its return.
MANAGER_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 2000)]
SHUTDOWN_GRACE_S = 5.0  # in-flight calls get this long after SIGTERM
PULL_RETRY_MIN_S, PULL_RETRY_MAX_S = 0.2, 2.0
PULL_TIMEOUT_S = 5.0
SAVED_CONFIG_FILE = "cluster-config.json"
SAVED_FORMAT_VERSION = 1


class NodeStartError(EngineError):
    """The node cannot start (data directory in use or corrupt, address taken, wrong node id)."""


class NodeRuntime:
    """The configuration a node runs and the buckets it serves; shared by the services."""

    def __init__(self, embedded: EmbeddedNode, node_id: str, data_dir: Path, secret: str) -> None:
        self.embedded = embedded
        self.node_id = node_id
        self.data_dir = data_dir
        self.file_secret = secret
        self.authenticator = Authenticator([secret])
        self.push: admin_pb2.PushConfigRequest | None = None  # the last applied configuration, in full
        self.config: cluster_pb2.ClusterConfig | None = None
        self.version: Version = NO_VERSION
        self.complete = False  # False while running a pulled configuration (no users or manifests)
        self.plans: dict[str, BucketPlan] = {}
        self._applying: dict[str, BucketPlan] = {}  # the plans of a configuration being applied
        self.buckets: dict[str, EmbeddedBucket] = {}
        self.stopping = False
        self.started_monotonic = time.monotonic()
        self.replicator = None  # the Replicator, once serve() built it (replica HPS for failover)
        self.replication = None  # the ReplicationService, once serve() built it
        self.faults = node_faults.NodeFaults()  # testbed faults (NodeControl.InjectFault)
        self._views: dict[str | None, cluster_pb2.ClusterConfig | None] = {}
        self._apply_lock = asyncio.Lock()
        # Called (awaited, in order) after each configuration is applied: replication follows it.
        self.on_applied: list[Callable[[], Awaitable[None]]] = []

    # -- what the services read ---------------------------------------------------------
    def bucket(self, name: str) -> EmbeddedBucket:
        bucket = self.buckets.get(name)
        if bucket is not None:
            return bucket
        if name in self.plans or name in self._applying:
            raise KVError(Status.TMPFAIL, f"bucket {name!r} is not ready on this node yet")
        raise KVError(Status.BUCKET_NOT_FOUND, f"bucket {name!r} not found")

    def on_partition_changed(self) -> None:
        """The partitioned peers changed: calls with them, either way, end now."""
        if self.replication is not None:
            self.replication.topology_changed()
        if self.replicator is not None:
            self.replicator.partition_changed()

    def bucket_view(self, name: str | None) -> cluster_pb2.ClusterConfig | None:
        """The client form: nodes and bucket `name` as NOT_MY_VBUCKET carries them (None: every bucket).

        None when the node has no configuration or no such bucket.
        """
        if self.config is None or (name is not None and name not in self.plans):
            return None  # not cached: callers choose the names
        if name not in self._views:
            self._views[name] = node_config.client_view(self.config, name)
        return self._views[name]

    def client_view(self) -> cluster_pb2.ClusterConfig | None:
        return self.bucket_view(None)

    # -- applying a configuration ---------------------------------------------------------
    async def apply_push(self, request: admin_pb2.PushConfigRequest) -> tuple[Status, str]:
        """NodeControl.PushConfig: apply if newer (or if the same revision arrives complete)."""
        return await self._apply(request, complete=True, source="pushed")

    async def apply_pulled(self, config: cluster_pb2.ClusterConfig) -> tuple[Status, str]:
        """A configuration from Admin.GetClusterConfig: no users or secret, maybe no manifests."""
        current = self.push or admin_pb2.PushConfigRequest()
        request = admin_pb2.PushConfigRequest(
            target_node_id=self.node_id, config=config, users=current.users, cluster_secret=current.cluster_secret
        )
        return await self._apply(request, complete=False, source="pulled")

    async def _apply(self, request: admin_pb2.PushConfigRequest, *, complete: bool, source: str):
        async with self._apply_lock:
            config, version = request.config, node_config.version_of(request.config)
            if request.target_node_id != self.node_id:
                return Status.EINVAL, f"this is node {self.node_id!r}, not {request.target_node_id[:64]!r}"
            if self.config is not None and config.cluster_uuid != self.config.cluster_uuid:
                return Status.EINVAL, f"configuration of another cluster ({config.cluster_uuid[:64]!r})"
            if version == NO_VERSION:
                return Status.EINVAL, "a configuration has a revision"
            if version < self.version or (version == self.version and (self.complete or not complete)):
                return Status.SUCCESS, f"already running {self.version}"
            try:
                plans = node_config.plan_node(config, self.node_id)
                users = users_from_proto(request.users)
            except ConfigError as exc:
                log.warning("refused configuration %s: %s", version, exc.message)
                return Status.EINVAL, exc.message
            loop = asyncio.get_running_loop()
            try:
                if source != "saved":
                    await loop.run_in_executor(None, self._save, request, complete)
                changes = await self._apply_to_engine(plans)
            except Exception as exc:
                log.exception("applying configuration %s failed", version)
                self.buckets = {n: b for n, b in self.embedded.buckets.items() if n in self.plans}
                status = exc.status if isinstance(exc, KVError) else Status.EINTERNAL
                return status, f"applying configuration {version} failed: {exc}"
            self.push, self.config, self.version, self.complete, self.plans = request, config, version, complete, plans
            self.buckets = {name: self.embedded.buckets[name] for name in plans}
            if complete or request.users:  # a pulled configuration carries the users of an earlier push
                self.authenticator.set_users(users)
            self.authenticator.set_secrets((self.file_secret, request.cluster_secret))
            self._views.clear()
            log.info(
                "running configuration %s (%s): created %s, dropped %s, recreated %s",
                version,
                source,
                list(changes.create),
                list(changes.drop),
                list(changes.recreate),
            )
            for listener in self.on_applied:
                try:
                    await listener()
                except Exception:
                    log.exception("following configuration %s failed", version)
            return Status.SUCCESS, ""

    async def _apply_to_engine(self, plans: dict[str, BucketPlan]) -> node_config.ConfigDiff:
        local = {
            name: LocalBucket(b.config, self.plans[name].uuid if name in self.plans else "")
            for name, b in self.embedded.buckets.items()
        }
        changes = node_config.diff(local, plans)
        gone = set(changes.drop) | set(changes.recreate)
        self.buckets = {n: b for n, b in self.buckets.items() if n not in gone}  # stop serving them first
        self._applying = plans
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._change_buckets, plans, changes)
        finally:
            self._applying = {}
        return changes

    def _change_buckets(self, plans: dict[str, BucketPlan], changes: node_config.ConfigDiff) -> None:
        """Runs in a worker thread; each engine step under its bucket's lock."""
        node = self.embedded
        for name in (*changes.drop, *changes.recreate):
            bucket = node.buckets[name]
            with bucket.lock:  # leaving active answers the SyncWrites still waiting (ambiguous)
                for vb in bucket.engine.vbuckets:
                    if vb.state is VBState.ACTIVE:
                        try:
                            bucket.engine.set_topology(vb.vbid, VBState.DEAD)
                        except KVError:
                            break  # the WAL refuses records; the bucket is dropped anyway
            node.drop_bucket(name)
        for name in (*changes.create, *changes.recreate):
            node.create_bucket(plans[name].config)
        for name in changes.update:
            bucket = node.buckets[name]
            with bucket.lock:
                bucket.config = bucket.engine.config = plans[name].config
        for name, plan in plans.items():
            bucket = node.buckets[name]
            with bucket.lock:
                engine = bucket.engine
                if plan.manifest is not None:
                    engine.set_manifest(plan.manifest)
                for vbid, vb_plan in enumerate(plan.vbuckets):
                    engine.set_topology(vbid, vb_plan.state, vb_plan.chain if vb_plan.state is VBState.ACTIVE else None)

    # -- the saved configuration ------------------------------------------------------------
    def _save(self, request: admin_pb2.PushConfigRequest, complete: bool) -> None:
        doc = {
            "format_version": SAVED_FORMAT_VERSION,
            "node_id": self.node_id,
            "complete": complete,
            "push": json_format.MessageToDict(request, preserving_proto_field_name=True),
        }
        atomic_write(self.data_dir / SAVED_CONFIG_FILE, json.dumps(doc).encode())  # 0600: holds the secret

    async def load_saved(self) -> None:
        """Run the configuration saved by the last run, if any (before serving)."""
        path = self.data_dir / SAVED_CONFIG_FILE
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_bytes())
            if doc["format_version"] != SAVED_FORMAT_VERSION:
                raise NodeStartError(f"{path} has format version {doc['format_version']!r}")
            if doc["node_id"] != self.node_id:
                raise NodeStartError(f"{path} belongs to node {doc['node_id']!r}, not {self.node_id!r}")
            request = json_format.ParseDict(doc["push"], admin_pb2.PushConfigRequest())
            complete = bool(doc["complete"])
        except (ValueError, KeyError, TypeError, json_format.ParseError) as exc:
            raise NodeStartError(f"{path} is corrupt: {exc}") from exc
        status, message = await self._apply(request, complete=complete, source="saved")
        if status != Status.SUCCESS:
            raise NodeStartError(f"the saved configuration in {path} cannot be applied: {message}")


# -- the process -------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeOptions:
    data_dir: Path
    listen: str
    manager: str
    node_id: str
    secret: str
    fsync_policy: str = "always"


def run(options: NodeOptions) -> int:
    """The node's main: serve until SIGTERM/SIGINT; 0 after a clean stop, 1 if it cannot start."""
    try:
        return event_loop.run(serve(options))
    except (NodeStartError, DataDirError) as exc:
        log.error("node %s cannot start: %s", options.node_id, exc)
        return 1


async def serve(options: NodeOptions) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "node %s starting: data %s, listen %s, manager %s",
        options.node_id,
        options.data_dir,
        options.listen,
        options.manager,
    )
    embedded = await loop.run_in_executor(
        None,
        lambda: EmbeddedNode(
            options.data_dir, fsync_policy=options.fsync_policy, default_bucket=False, node_id=options.node_id
        ),
    )
    runtime = NodeRuntime(embedded, options.node_id, Path(options.data_dir), options.secret)
    channel = None
    try:
        log.info("opened %s: buckets %s", options.data_dir, sorted(embedded.buckets))
        await runtime.load_saved()
        channel = grpc.aio.insecure_channel(options.manager, options=[*GRPC_OPTIONS, *MANAGER_CHANNEL_OPTIONS])
        # so_reuseport off: a second process on the same port must fail, not share it.
        server = grpc.aio.server(options=[*GRPC_OPTIONS, ("grpc.so_reuseport", 0)])
        add_service(server, KVService(runtime), kv_pb2.DESCRIPTOR.services_by_name["KV"])
        add_service(
            server, AdminService(runtime, channel, options.manager), admin_pb2.DESCRIPTOR.services_by_name["Admin"]
        )
        add_service(server, NodeControlService(runtime), admin_pb2.DESCRIPTOR.services_by_name["NodeControl"])
        replication = ReplicationService(runtime)
        add_service(server, replication, replication_pb2.DESCRIPTOR.services_by_name["Replication"])
        replicator = Replicator(runtime, channel_options=GRPC_OPTIONS)
        runtime.replicator, runtime.replication = replicator, replication

        async def follow_config() -> None:
            replication.topology_changed()
            await replicator.replan()

        runtime.on_applied.append(follow_config)
        try:
            server.add_insecure_port(options.listen)
        except RuntimeError as exc:
            raise NodeStartError(f"cannot listen on {options.listen}: {exc}") from None
        await server.start()
        log.info("node %s serving on %s", options.node_id, options.listen)
        puller = asyncio.ensure_future(pull_config(runtime, channel, options.manager))
        await follow_config()  # the configuration loaded from the data directory
        await stop.wait()
        log.info("node %s stopping: no new calls, %.0f s for calls in flight", options.node_id, SHUTDOWN_GRACE_S)
        runtime.stopping = True
        puller.cancel()
        await replicator.stop()
        replication.stop()
        await server.stop(SHUTDOWN_GRACE_S)
    finally:
        if channel is not None:
            await channel.close()
        async with runtime._apply_lock:  # never close the engine under a configuration being applied
            await loop.run_in_executor(None, embedded.close)
    log.info("node %s stopped cleanly", options.node_id)
    return 0


async def pull_config(runtime: NodeRuntime, channel: grpc.aio.Channel, manager: str) -> None:
    """Ask the manager for the configuration until it answers once (it may start after the node)."""
    stub = admin_pb2_grpc.AdminStub(channel)
    delay, failures = PULL_RETRY_MIN_S, 0
    while not runtime.stopping:
        epoch, revision = runtime.version
        secret = runtime.push.cluster_secret if runtime.push is not None and runtime.push.cluster_secret else None
        request = admin_pb2.GetClusterConfigRequest(config_epoch=epoch, config_revision=revision)
        try:
            response = await stub.GetClusterConfig(
                request, metadata=bearer_metadata(secret or runtime.file_secret), timeout=PULL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            failures += 1
            if failures == 1:
                log.info("the manager at %s does not answer yet (%s); retrying", manager, exc.code().name)
        else:
            if response.status == Status.SUCCESS:
                if response.HasField("config"):
                    status, message = await runtime.apply_pulled(response.config)
                    if status != Status.SUCCESS:
                        log.warning("configuration pulled from %s refused: %s", manager, message)
                log.info("configuration pulled from the manager at %s", manager)
                return
            log.info("the manager at %s answered status %d: %s", manager, response.status, response.message)
        await asyncio.sleep(delay)
        delay = min(delay * 2, PULL_RETRY_MAX_S)

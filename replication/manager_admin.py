"""The cluster manager's Admin service: each Admin RPC over a `Manager`.

Owns `AdminService`: authenticate the caller (`manager_users`), check its role, then
answer from the current configuration or hand a change to `Manager.apply` and map its
typed errors to statuses (a refused change is its `KVError` status or EINVAL, a
configuration that could not be saved TMPFAIL). Missing or wrong credentials end the
call with gRPC UNAUTHENTICATED. A user without the role an RPC needs gets status EACCESS:
admin for everything but GetClusterConfig (any user), GetCollectionsManifest (any role
on the bucket) and Health (no credentials at all).

GetClusterConfig answers a configuration only if it is newer than the caller's (epoch,
revision). Users get the client form (no manifests); secret holders the full form, and
a secret holder asking from behind (a node that starts, or lost its state) also makes
the pusher push to every node at once: users and the secret travel only in pushes.

AutoFailover reads the settings and the state of automatic failover (the count from the
configuration, the unreachable nodes and the current decision from `Manager.watch`), and
changes the settings or resets the count as configuration changes, like any other.

Must never change the configuration except through `Manager.apply` or
`Manager.failover`, or decide a change itself (that is `cluster_config`'s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from durakv import __version__
from durakv.engine.errors import EngineError, KVError, Status
from durakv.proto import admin_pb2, admin_pb2_grpc
from durakv.replication import auto_failover, config_proto
from durakv.replication.cluster_config import ClusterConfig
from durakv.replication.manager import Manager
from durakv.replication.manager_users import Principal, upsert_user
from durakv.replication.users import Action, AuthenticationError

log = logging.getLogger("durakv.manager")

MANAGER_ID = "manager"  # HealthResponse.node_id and StatsResponse.node_id of the manager


class AdminService(admin_pb2_grpc.AdminServicer):
    """Admin RPCs over a Manager: authenticate, authorize, then read or `apply` a change."""

    def __init__(self, manager: Manager) -> None:
        self._m = manager

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        try:
            return await self._m.auth.authenticate(self._m.config, context.invocation_metadata() or ())
        except AuthenticationError:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication failed")
            raise  # abort raises; this line is never reached

    async def _admin(self, context: grpc.aio.ServicerContext) -> bool:
        return (await self._principal(context)).may(Action.MANAGE)

    async def _change(
        self,
        context: grpc.aio.ServicerContext,
        what: str,
        change: Callable[[ClusterConfig], ClusterConfig],
        manifest_of: str | None = None,
    ) -> admin_pb2.ChangeResponse:
        if not await self._admin(context):
            return admin_pb2.ChangeResponse(status=Status.EACCESS, message="this change needs the admin role")
        try:
            config = await self._m.apply(what, change)
        except KVError as exc:
            return admin_pb2.ChangeResponse(status=exc.status, message=exc.message)
        except EngineError as exc:  # a rule of vbmap or the model refused the input
            return admin_pb2.ChangeResponse(status=Status.EINVAL, message=str(exc))
        except OSError as exc:  # the configuration could not be saved: nothing changed
            log.error("could not save revision for %s: %s", what, exc)
            return admin_pb2.ChangeResponse(status=Status.TMPFAIL, message=f"cannot save the configuration: {exc}")
        response = admin_pb2.ChangeResponse(
            status=Status.SUCCESS, config_epoch=self._m.epoch, config_revision=config.revision
        )
        if manifest_of is not None:
            response.manifest_uid = config.bucket(manifest_of).manifest.uid
        return response

    # -- configuration ---------------------------------------------------------------------
    async def GetClusterConfig(self, request, context):
        principal = await self._principal(context)
        config = self._m.config
        if request.bucket and request.bucket not in config.buckets:
            return admin_pb2.GetClusterConfigResponse(
                status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.bucket!r} not found"
            )
        if (self._m.epoch, config.revision) <= (request.config_epoch, request.config_revision):
            return admin_pb2.GetClusterConfigResponse(status=Status.SUCCESS)
        if principal.is_node:
            self._m.pusher.kick(force=True)  # users and the secret reach nodes only by push
        msg = config_proto.cluster_config_to_proto(
            config, epoch=self._m.epoch, bucket=request.bucket or None, manifests=principal.is_node
        )
        return admin_pb2.GetClusterConfigResponse(status=Status.SUCCESS, config=msg)

    # -- buckets -----------------------------------------------------------------------------
    async def CreateBucket(self, request, context):
        settings = request.settings
        return await self._change(
            context,
            f"create bucket {settings.name!r}",
            lambda c: c.create_bucket(config_proto.bucket_settings_from_proto(settings, create=True)),
        )

    async def DropBucket(self, request, context):
        return await self._change(context, f"drop bucket {request.name!r}", lambda c: c.drop_bucket(request.name))

    async def GetBucket(self, request, context):
        if not await self._admin(context):
            return admin_pb2.GetBucketResponse(status=Status.EACCESS, message="needs the admin role")
        entry = self._m.config.buckets.get(request.name)
        if entry is None:
            return admin_pb2.GetBucketResponse(status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.name!r}")
        settings = config_proto.bucket_settings_to_proto(entry.config)
        return admin_pb2.GetBucketResponse(status=Status.SUCCESS, settings=settings)

    async def ListBuckets(self, request, context):
        if not await self._admin(context):
            return admin_pb2.ListBucketsResponse(status=Status.EACCESS, message="needs the admin role")
        buckets = [config_proto.bucket_settings_to_proto(b.config) for b in self._m.config.buckets.values()]
        return admin_pb2.ListBucketsResponse(status=Status.SUCCESS, buckets=buckets)

    # -- scopes and collections ----------------------------------------------------------------
    async def CreateScope(self, request, context):
        b, s = request.bucket, request.scope
        what = f"create scope {s!r} in {b!r}"
        return await self._change(context, what, lambda c: c.create_scope(b, s), manifest_of=b)

    async def DropScope(self, request, context):
        b, s = request.bucket, request.scope
        return await self._change(context, f"drop scope {s!r} in {b!r}", lambda c: c.drop_scope(b, s), manifest_of=b)

    async def CreateCollection(self, request, context):
        b, s, n, ttl = request.bucket, request.scope, request.collection, request.max_ttl_s
        what = f"create collection {s!r}.{n!r} in {b!r}"
        return await self._change(context, what, lambda c: c.create_collection(b, s, n, ttl), manifest_of=b)

    async def DropCollection(self, request, context):
        b, s, n = request.bucket, request.scope, request.collection
        return await self._change(
            context, f"drop collection {s!r}.{n!r} in {b!r}", lambda c: c.drop_collection(b, s, n), manifest_of=b
        )

    async def GetCollectionsManifest(self, request, context):
        principal = await self._principal(context)
        if not (principal.may(Action.READ, request.bucket) or principal.may(Action.WRITE, request.bucket)):
            return admin_pb2.GetCollectionsManifestResponse(status=Status.EACCESS, message="no role on this bucket")
        entry = self._m.config.buckets.get(request.bucket)
        if entry is None:
            return admin_pb2.GetCollectionsManifestResponse(
                status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.bucket!r} not found"
            )
        manifest = config_proto.manifest_to_proto(entry.manifest)
        return admin_pb2.GetCollectionsManifestResponse(status=Status.SUCCESS, manifest=manifest)

    # -- users -------------------------------------------------------------------------------
    async def CreateUser(self, request, context):
        name, password, upsert = request.user.username, request.password, request.upsert

        def change(config: ClusterConfig) -> ClusterConfig:
            roles = [config_proto.role_from_proto(role) for role in request.user.roles]
            if upsert and name in config.users:
                return upsert_user(config, name, password or None, roles)
            return config.create_user(name, password, roles)

        return await self._change(context, f"{'upsert' if upsert else 'create'} user {name!r}", change)

    async def DropUser(self, request, context):
        name = request.username
        return await self._change(context, f"drop user {name!r}", lambda c: c.drop_user(name))

    async def GetUser(self, request, context):
        if not await self._admin(context):
            return admin_pb2.GetUserResponse(status=Status.EACCESS, message="needs the admin role")
        user = self._m.config.users.get(request.username)
        if user is None:
            return admin_pb2.GetUserResponse(status=Status.KEY_ENOENT, message=f"user {request.username!r}")
        return admin_pb2.GetUserResponse(status=Status.SUCCESS, user=config_proto.user_to_proto(user))

    async def ListUsers(self, request, context):
        if not await self._admin(context):
            return admin_pb2.ListUsersResponse(status=Status.EACCESS, message="needs the admin role")
        users = [config_proto.user_to_proto(user) for user in self._m.config.users.values()]
        return admin_pb2.ListUsersResponse(status=Status.SUCCESS, users=users)

    # -- stats and health ----------------------------------------------------------------------
    async def Stats(self, request, context):
        """Per bucket: its shape from the configuration; bucket "": the manager's own counters."""
        if not await self._admin(context):
            return admin_pb2.StatsResponse(status=Status.EACCESS, message="needs the admin role")
        config = self._m.config
        if request.bucket and request.bucket not in config.buckets:
            return admin_pb2.StatsResponse(status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.bucket!r}")
        names = [request.bucket] if request.bucket else list(config.buckets)
        buckets = [admin_pb2.BucketStats(bucket=name, counters=_bucket_counters(config, name)) for name in names]
        if not request.bucket:
            buckets.append(admin_pb2.BucketStats(bucket="", counters=self._manager_counters(config)))
        return admin_pb2.StatsResponse(status=Status.SUCCESS, node_id=MANAGER_ID, buckets=buckets)

    def _manager_counters(self, config: ClusterConfig) -> dict[str, int]:
        current = (self._m.epoch, config.revision)
        pushes = self._m.pusher.states
        counters = {
            "config_epoch": self._m.epoch,
            "config_revision": config.revision,
            "nodes": len(config.nodes),
            "nodes_active": len(config.active_nodes()),
            "nodes_current": sum(1 for p in pushes.values() if p.acked >= current),
            "buckets": len(config.buckets),
            "users": len(config.users),
            "pushes_ok": sum(p.pushes_ok for p in pushes.values()),
            "pushes_failed": sum(p.pushes_failed for p in pushes.values()),
        }
        for node_id, push in pushes.items():
            counters[f"node.{node_id}.config_revision"] = push.acked[1]
            counters[f"node.{node_id}.push_failures_consecutive"] = push.failures_consecutive
        return counters

    # -- failover ----------------------------------------------------------------------------
    async def Failover(self, request, context):
        if not await self._admin(context):
            return admin_pb2.FailoverResponse(status=Status.EACCESS, message="failover needs the admin role")
        try:
            config, choices, unreachable = await self._m.failover(request.node_id)
        except KVError as exc:
            return admin_pb2.FailoverResponse(status=exc.status, message=exc.message)
        except EngineError as exc:
            return admin_pb2.FailoverResponse(status=Status.EINVAL, message=str(exc))
        except OSError as exc:
            log.error("could not save the failover of %s: %s", request.node_id, exc)
            return admin_pb2.FailoverResponse(status=Status.TMPFAIL, message=f"cannot save the configuration: {exc}")
        response = admin_pb2.FailoverResponse(
            status=Status.SUCCESS,
            config_epoch=self._m.epoch,
            config_revision=config.revision,
            unreachable_nodes=unreachable,
        )
        for choice in choices:
            hps, high = choice.position or (0, 0)
            response.promotions.add(
                bucket=choice.bucket,
                vbucket=choice.vbucket,
                node_id=choice.node_id or "",
                high_prepared_seqno=hps,
                high_seqno=high,
            )
        return response

    async def Recover(self, request, context):
        node_id = request.node_id
        return await self._change(context, f"recovered node {node_id[:64]}", lambda c: c.recover_node(node_id))

    async def AutoFailover(self, request, context):
        if not await self._admin(context):
            return admin_pb2.AutoFailoverResponse(status=Status.EACCESS, message="auto-failover needs the admin role")
        changes: list[tuple[str, Callable[[ClusterConfig], ClusterConfig]]] = []
        if request.HasField("settings"):
            wanted = request.settings
            try:
                settings = auto_failover.Settings(wanted.enabled, wanted.timeout_s, wanted.max_count)
            except ValueError as exc:
                return admin_pb2.AutoFailoverResponse(status=Status.EINVAL, message=str(exc))
            state = "on" if settings.enabled else "off"
            what = f"automatic failover {state}, {settings.timeout_s:g} s, max {settings.max_count}"
            changes.append((what, lambda c: c.set_auto_failover(settings)))
        if request.reset_count:
            changes.append(("automatic failover count reset", lambda c: c.reset_auto_failover()))
        if changes:
            # One revision for the whole request: it is made whole or not at all.
            what = "; ".join(w for w, _ in changes)

            def change(config: ClusterConfig) -> ClusterConfig:
                for _, step in changes:
                    config = step(config)
                return config

            try:
                await self._m.apply(what, change)
            except OSError as exc:
                log.error("could not save revision for %s: %s", what, exc)
                return admin_pb2.AutoFailoverResponse(
                    status=Status.TMPFAIL, message=f"cannot save the configuration: {exc}"
                )
        config = self._m.config
        settings = config.auto_failover
        response = admin_pb2.AutoFailoverResponse(
            status=Status.SUCCESS,
            settings=admin_pb2.AutoFailoverSettings(
                enabled=settings.enabled, timeout_s=settings.timeout_s, max_count=settings.max_count
            ),
            count=config.auto_failover_count,
            decision=self._m.watch.decision.reason,
        )
        for node_id, seconds in sorted(self._m.watch.unreachable().items()):
            response.unreachable.add(node_id=node_id, seconds=seconds)
        return response

    async def Health(self, request, context):
        config = self._m.config
        return admin_pb2.HealthResponse(
            status=Status.SUCCESS,
            node_id=MANAGER_ID,
            state=admin_pb2.HEALTH_STATE_STOPPING if self._m.stopping else admin_pb2.HEALTH_STATE_SERVING,
            config_epoch=self._m.epoch,
            config_revision=config.revision,
            problems=self._m.push_problems(),
            version=__version__,
            uptime_s=int(time.monotonic() - self._m.started_at_s),
        )


def _bucket_counters(config: ClusterConfig, name: str) -> dict[str, int]:
    entry = config.bucket(name)
    manifest = entry.manifest
    return {
        "num_vbuckets": entry.config.num_vbuckets,
        "num_replicas": entry.config.num_replicas,
        "manifest_uid": manifest.uid,
        "scopes": len(manifest.scopes),
        "collections": len(manifest.collection_ids()),
        "vbuckets_lost": sum(1 for chain in entry.vbmap if chain is None),
        "replica_slots_empty": sum(chain.replicas.count(None) for chain in entry.vbmap if chain is not None),
    }

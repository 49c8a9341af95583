"""What one node should run, given the cluster configuration. Pure.

Owns: reading a configuration message (cluster.proto `ClusterConfig`, decoded and checked
by `config_proto`) as one node's plan -- per bucket its settings, uuid, collection
manifest and, per vbucket, this node's state and the chain; comparing that plan with the
buckets the node has (`diff`); and the client-facing views a node hands out
(`client_view`: no manifests, optionally one bucket).

Must never: do I/O, read a clock, or touch an engine. The node server acts on what this
decides (docs/cluster-protocol.md, "Configuration flow").

Invariants: a plan has exactly `num_vbuckets` entries per bucket; a vbucket is ACTIVE here
iff its chain's active is this node, REPLICA iff this node holds one of its replica slots,
DEAD otherwise (a vbucket that lost every copy is DEAD everywhere); a malformed
configuration is refused whole (`ConfigError`, EINVAL), so a node never applies half of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from durakv.engine.bucket import BucketConfig
from durakv.engine.durability import Chain
from durakv.engine.errors import KVError, Status
from durakv.engine.manifest import Manifest
from durakv.engine.vbucket import VBState
from durakv.proto import cluster_pb2
from durakv.replication import config_proto
from durakv.replication.config_proto import BucketView, ConfigProtoError, Version

NO_VERSION: Version = (0, 0)
version_of = config_proto.version


class ConfigError(KVError):
    """A configuration is malformed or breaks an invariant (EINVAL); nothing of it was applied."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.EINVAL, message)


@dataclass(frozen=True)
class VBucketPlan:
    """This node's role for one vbucket, and the vbucket's chain (None: no copy left anywhere)."""

    state: VBState
    chain: Chain | None


@dataclass(frozen=True)
class BucketPlan:
    config: BucketConfig
    uuid: str  # "" when the manager assigns none
    manifest_uid: int
    manifest: Manifest | None  # None when the configuration left it out (the client form)
    vbuckets: tuple[VBucketPlan, ...]


@dataclass(frozen=True)
class LocalBucket:
    """What the node has of a bucket: the settings it was opened with, the uuid it was created for."""

    config: BucketConfig
    uuid: str = ""


@dataclass(frozen=True)
class ConfigDiff:
    """Bucket names, sorted: to create, to drop, to drop and create again, to change settings of."""

    create: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    recreate: tuple[str, ...] = ()
    update: tuple[str, ...] = ()


def plan_node(config: cluster_pb2.ClusterConfig, node_id: str) -> dict[str, BucketPlan]:
    """Per bucket, what `node_id` should run; ConfigError for anything malformed."""
    try:
        view = config_proto.view_from_proto(config)
    except ConfigProtoError as exc:
        raise ConfigError(str(exc)) from None
    return {name: plan_bucket(bucket, node_id) for name, bucket in view.buckets.items()}


def plan_bucket(bucket: BucketView, node_id: str) -> BucketPlan:
    vbuckets = []
    for chain in bucket.vbmap:
        if chain is not None and chain.active == node_id:
            state = VBState.ACTIVE
        elif chain is not None and node_id in chain.replicas:
            state = VBState.REPLICA
        else:
            state = VBState.DEAD
        vbuckets.append(VBucketPlan(state, chain))
    return BucketPlan(bucket.config, bucket.uuid, bucket.manifest_uid, bucket.manifest, tuple(vbuckets))


def diff(local: Mapping[str, LocalBucket], plan: Mapping[str, BucketPlan]) -> ConfigDiff:
    """How the node's buckets must change to match `plan`.

    A bucket is created again (its data dropped) when its vbucket count differs or when it
    is another bucket of the same name (both uuids known and different); other settings
    changes are applied in place.
    """
    create, recreate, update = [], [], []
    for name, want in plan.items():
        have = local.get(name)
        if have is None:
            create.append(name)
        elif have.config.num_vbuckets != want.config.num_vbuckets or (
            have.uuid and want.uuid and have.uuid != want.uuid
        ):
            recreate.append(name)
        elif have.config != want.config:
            update.append(name)
    drop = [name for name in local if name not in plan]
    return ConfigDiff(tuple(sorted(create)), tuple(sorted(drop)), tuple(sorted(recreate)), tuple(sorted(update)))


def client_view(config: cluster_pb2.ClusterConfig, bucket: str | None = None) -> cluster_pb2.ClusterConfig | None:
    """The configuration as clients get it: no manifests; with `bucket`, the nodes and that bucket
    only (None if the configuration has no such bucket)."""
    view = cluster_pb2.ClusterConfig(
        epoch=config.epoch, revision=config.revision, cluster_uuid=config.cluster_uuid, nodes=config.nodes
    )
    for entry in config.buckets:
        if bucket is None or entry.settings.name == bucket:
            out = view.buckets.add(settings=entry.settings, uuid=entry.uuid, manifest_uid=entry.manifest_uid)
            out.vbucket_map.extend(entry.vbucket_map)
    if bucket is not None and not view.buckets:
        return None
    return view

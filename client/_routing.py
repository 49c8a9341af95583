"""Routing: which node serves a key. Pure (no I/O, no clock, no threads).

Turns a cluster configuration (`durakv.cluster.v1.ClusterConfig`, cluster.proto) into an
immutable `Routing`: per bucket its vbucket count and chains resolved to node addresses,
so the hot path is one crc32 and two tuple lookups. Key to vbucket is Couchbase's formula
(reference §4.1): `((crc32(key) >> 16) & 0x7FFF) % num_vbuckets`, over the key bytes only.

Versions (cluster.proto): a configuration is newer when its (epoch, revision) is greater,
epoch first. Two kinds of configuration arrive:
- full ones (bootstrap and polling, `Admin.GetClusterConfig`): every node and bucket.
  `Routing.adopt_full` replaces everything when the configuration is newer than the last
  full one; a bucket absent from it is gone.
- bucket-scoped ones (inside a NOT_MY_VBUCKET answer): the nodes and one bucket.
  `Routing.adopt_bucket` replaces that bucket's route only, when newer than that route,
  and leaves the full version alone -- so the next poll still asks for (and gets) the
  newer full configuration with the other buckets' changes.
Each bucket route carries the (epoch, revision) it came from: requests for its keys send
it to the node (kv.proto `RequestHeader.config_revision`).

An empty chain slot is -1 (cluster.proto `VBucketChain`); an empty active slot, a chain
with no slots, or a node index outside the node list all mean "no active": `active()`
answers None and the caller treats the vbucket as unavailable for now.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from durakv.proto import cluster_pb2

NO_NODE = -1

Version = tuple[int, int]  # (epoch, revision); (0, 0) = none


def vbucket_of(key: bytes, num_vbuckets: int) -> int:
    """The vbucket of `key` among `num_vbuckets` (Couchbase's hash_crc32 formula)."""
    return ((zlib.crc32(key) >> 16) & 0x7FFF) % num_vbuckets


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    active: bool  # NODE_STATE_ACTIVE; a failed-over node serves nothing


@dataclass(frozen=True)
class BucketRoute:
    """One bucket's vbucket map with node indexes resolved to addresses (None = empty slot)."""

    name: str
    num_vbuckets: int
    num_replicas: int
    # chains[vb] = (active address or None, replica addresses or None, ...)
    chains: tuple[tuple[str | None, ...], ...]
    version: Version = (0, 0)
    uuid: str = ""
    manifest_uid: int = 0

    def vbucket(self, key: bytes) -> int:
        return vbucket_of(key, self.num_vbuckets)

    def active(self, vbucket: int) -> str | None:
        chain = self.chains[vbucket]
        return chain[0] if chain else None

    def holders(self, vbucket: int) -> tuple[str, ...]:
        """Every node holding a copy of the vbucket: the active first, then the replicas."""
        return tuple(address for address in self.chains[vbucket] if address is not None)


@dataclass(frozen=True)
class Routing:
    """Everything the client routes with; replaced whole, never changed in place."""

    version: Version = (0, 0)  # of the last full configuration adopted
    cluster_uuid: str = ""
    nodes: tuple[NodeInfo, ...] = ()
    buckets: MappingProxyType[str, BucketRoute] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_config(cls, config: cluster_pb2.ClusterConfig) -> Routing:
        nodes = _nodes(config)
        buckets = {b.settings.name: _bucket_route(b, nodes, _version(config)) for b in config.buckets}
        return cls(_version(config), config.cluster_uuid, nodes, MappingProxyType(buckets))

    def adopt_full(self, config: cluster_pb2.ClusterConfig) -> Routing:
        """This routing updated with a full configuration (itself if that is not newer)."""
        if _version(config) <= self.version:
            return self
        return Routing.from_config(config)

    def adopt_bucket(self, config: cluster_pb2.ClusterConfig, bucket: str) -> Routing:
        """This routing with `bucket`'s route taken from a bucket-scoped configuration, if newer."""
        version = _version(config)
        current = self.buckets.get(bucket)
        if version <= self.version or (current is not None and version <= current.version):
            return self
        nodes = _nodes(config)
        for b in config.buckets:
            if b.settings.name == bucket:
                buckets = dict(self.buckets)
                buckets[bucket] = _bucket_route(b, nodes, version)
                return Routing(self.version, self.cluster_uuid, self.nodes, MappingProxyType(buckets))
        return self

    def bucket(self, name: str) -> BucketRoute | None:
        return self.buckets.get(name)

    def bucket_names(self) -> list[str]:
        return list(self.buckets)

    def node_addresses(self) -> list[str]:
        """Addresses of the active nodes, in configuration order."""
        return [node.address for node in self.nodes if node.active]

    def newer_than(self, version: Version) -> bool:
        return self.version > version


def is_newer(config: cluster_pb2.ClusterConfig, version: Version) -> bool:
    return _version(config) > version


def config_version(config: cluster_pb2.ClusterConfig) -> Version:
    return _version(config)


def _version(config: Any) -> Version:
    return (int(config.epoch), int(config.revision))


def _nodes(config: cluster_pb2.ClusterConfig) -> tuple[NodeInfo, ...]:
    return tuple(NodeInfo(n.node_id, n.address, n.state == cluster_pb2.NODE_STATE_ACTIVE) for n in config.nodes)


def _bucket_route(bucket: cluster_pb2.BucketConfig, nodes: tuple[NodeInfo, ...], version: Version) -> BucketRoute:
    settings = bucket.settings
    num_vbuckets = len(bucket.vbucket_map) or settings.num_vbuckets or 1
    chains = tuple(_chain(chain.nodes, nodes) for chain in bucket.vbucket_map)
    if len(chains) < num_vbuckets:  # a short map: the missing vbuckets have no active
        chains += ((),) * (num_vbuckets - len(chains))
    return BucketRoute(
        name=settings.name,
        num_vbuckets=num_vbuckets,
        num_replicas=settings.num_replicas,
        chains=chains,
        version=version,
        uuid=bucket.uuid,
        manifest_uid=bucket.manifest_uid,
    )


def _chain(indexes: Iterable[int], nodes: tuple[NodeInfo, ...]) -> tuple[str | None, ...]:
    return tuple(nodes[i].address if 0 <= i < len(nodes) else None for i in indexes)

"""The cluster configuration: nodes, buckets with their vbucket maps and manifests, users. Pure.

Owns the model the cluster manager keeps (DESIGN §6) and every rule about changing it. It
does no I/O and reads no clock; `manager_state` persists it and other shells push it.

Immutable style: a `ClusterConfig` is a value. Every change is a method that returns a
NEW config with `revision + 1` and leaves the receiver untouched, so a refused change (a
typed error) changes nothing, and a shell can write the new config to disk before anyone
sees it. Maps are read-only views; a bucket's manifest is stored as its JSON and handed
out as a fresh `Manifest` copy, so no caller can change a config in place.

Invariants: the revision only grows, by exactly one per change; node ids, bucket names
and user names are unique; every bucket's map has `num_vbuckets` chains of
`num_replicas` slots naming known nodes; a failed node stays listed (its id is never
reused) but holds no slot in any map; a non-wildcard bucket in a user's role names an
existing bucket (dropping a bucket drops those roles); the automatic-failover settings are
valid (`auto_failover.Settings`) and its count counts automatic failovers only (reset by
`reset_auto_failover`); `to_json` is canonical, so
`from_json(c.to_json()) == c` and the bytes round-trip exactly.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from durakv.engine.bucket import BucketConfig
from durakv.engine.errors import EngineError, KVError, Status
from durakv.engine.limits import BUCKETS_MAX
from durakv.engine.manifest import Manifest
from durakv.replication import auto_failover as auto_failover_mod
from durakv.replication import users as users_mod
from durakv.replication import vbmap as vbmap_mod
from durakv.replication.users import ALL_BUCKETS, Role, RoleName, ScryptParams, User
from durakv.replication.vbmap import Seqnos, VBucketMap

NODES_MAX = 64
USERS_MAX = 1000
NODE_ID_LEN_MAX = 64
SECRET_SIZE = 32  # bytes of randomness in the cluster secret (64 hex digits)

_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_HEX_RE = re.compile(r"[0-9a-f]+")


class NodeState(StrEnum):
    ACTIVE = "active"
    FAILED = "failed"  # failed over: holds no vbucket; its id stays reserved


class Refusal(StrEnum):
    """Which rule a refused change broke (tests and shells match on this, never on text)."""

    INVALID_NODE_ID = "invalid_node_id"
    INVALID_ADDRESS = "invalid_address"
    NODE_EXISTS = "node_exists"
    ADDRESS_IN_USE = "address_in_use"
    NODE_NOT_FOUND = "node_not_found"
    NODE_FAILED = "node_failed"
    NODE_NOT_FAILED = "node_not_failed"
    LAST_ACTIVE_NODE = "last_active_node"
    NO_ACTIVE_NODE = "no_active_node"
    NODES_MAX = "nodes_max"
    BUCKET_EXISTS = "bucket_exists"
    BUCKET_NOT_FOUND = "bucket_not_found"
    BUCKETS_MAX = "buckets_max"
    USER_EXISTS = "user_exists"
    USER_NOT_FOUND = "user_not_found"
    USERS_MAX = "users_max"
    LAST_ADMIN = "last_admin"
    AUTO_FAILOVER_REFUSED = "auto_failover_refused"


_STATUS = {
    Refusal.NODE_EXISTS: Status.KEY_EEXISTS,
    Refusal.USER_EXISTS: Status.KEY_EEXISTS,
    Refusal.NODE_NOT_FOUND: Status.KEY_ENOENT,
    Refusal.USER_NOT_FOUND: Status.KEY_ENOENT,
    Refusal.BUCKET_EXISTS: Status.BUCKET_EXISTS,
    Refusal.BUCKET_NOT_FOUND: Status.BUCKET_NOT_FOUND,
}


class ClusterConfigError(KVError):
    """A configuration change was refused; `refusal` names the rule, `status` the wire status."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(_STATUS.get(refusal, Status.EINVAL), message)
        self.refusal = refusal


class ConfigDecodeError(EngineError):
    """A serialised configuration is malformed or breaks an invariant."""


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str  # host:port of its KV service
    state: NodeState = NodeState.ACTIVE


@dataclass(frozen=True)
class BucketEntry:
    """One bucket: its settings (never mutated), vbucket map and collection manifest."""

    config: BucketConfig
    vbmap: VBucketMap
    manifest_json: bytes

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def manifest(self) -> Manifest:
        """A fresh copy: changing it does not change the configuration."""
        return Manifest.from_json(self.manifest_json)


@dataclass(frozen=True)
class ClusterConfig:
    revision: int
    cluster_uuid: str
    secret: str  # shared by the cluster's nodes to authenticate replication streams
    nodes: Mapping[str, Node] = field(default_factory=dict)  # in the order they were added
    buckets: Mapping[str, BucketEntry] = field(default_factory=dict)
    users: Mapping[str, User] = field(default_factory=dict)
    auto_failover: auto_failover_mod.Settings = field(default_factory=auto_failover_mod.Settings)
    auto_failover_count: int = 0  # automatic failovers since the count was last reset

    def __post_init__(self) -> None:
        for name in ("nodes", "buckets", "users"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        assert type(self.revision) is int and self.revision >= 1, self.revision

    @classmethod
    def new(cls, *, cluster_uuid: str | None = None, secret: str | None = None) -> ClusterConfig:
        """A cluster with no nodes, buckets or users, at revision 1; uuid and secret drawn once here."""
        config = cls(
            revision=1,
            cluster_uuid=uuid.uuid4().hex if cluster_uuid is None else cluster_uuid,
            secret=secrets.token_hex(SECRET_SIZE) if secret is None else secret,
        )
        config._check_identity(ValueError)
        return config

    # -- reading -----------------------------------------------------------------------
    def active_nodes(self) -> tuple[str, ...]:
        return tuple(n.node_id for n in self.nodes.values() if n.state is NodeState.ACTIVE)

    def bucket(self, name: str) -> BucketEntry:
        entry = self.buckets.get(name)
        if entry is None:
            raise ClusterConfigError(Refusal.BUCKET_NOT_FOUND, f"bucket {name!r} not found")
        return entry

    def check_secret(self, token: str) -> bool:
        """Whether a peer presented this cluster's secret (constant time)."""
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.secret.encode())

    def failover_preserves_majority(self, node_ids: Iterable[str]) -> bool:
        """The automatic-failover guard over every bucket (vbmap.failover_preserves_majority)."""
        failed = set(node_ids)
        return all(vbmap_mod.failover_preserves_majority(b.vbmap, failed) for b in self.buckets.values())

    # -- nodes -------------------------------------------------------------------------
    def add_node(self, node_id: str, address: str) -> ClusterConfig:
        """A new active node. Existing buckets keep their maps (moving vbuckets is rebalance)."""
        if not isinstance(node_id, str) or len(node_id) > NODE_ID_LEN_MAX or not _NODE_ID_RE.fullmatch(node_id):
            raise ClusterConfigError(Refusal.INVALID_NODE_ID, f"invalid node id {node_id!r}")
        check_address(address)
        if node_id in self.nodes:
            raise ClusterConfigError(Refusal.NODE_EXISTS, f"node {node_id!r} is already in the cluster")
        if any(n.address == address for n in self.nodes.values()):
            raise ClusterConfigError(Refusal.ADDRESS_IN_USE, f"address {address} is already used by a node")
        if len(self.nodes) >= NODES_MAX:
            raise ClusterConfigError(Refusal.NODES_MAX, f"a cluster has at most {NODES_MAX} nodes")
        return self._next(nodes={**self.nodes, node_id: Node(node_id, address)})

    def mark_failed(
        self, node_id: str, seqnos: Mapping[str, Seqnos] | None = None, *, automatic: bool = False
    ) -> ClusterConfig:
        """Hard failover of a node: every bucket's map goes through `vbmap.failover`.

        `seqnos` maps a bucket name to the replicas' (HPS, high seqno) positions in that
        bucket (see `vbmap.Seqnos`); a bucket or replica without one ranks lowest.
        `automatic`: the manager decided it (auto_failover); it counts towards the max count.
        """
        node = self.nodes.get(node_id)
        if node is None:
            raise ClusterConfigError(Refusal.NODE_NOT_FOUND, f"node {node_id!r} not found")
        if node.state is NodeState.FAILED:
            raise ClusterConfigError(Refusal.NODE_FAILED, f"node {node_id!r} has already been failed over")
        if self.active_nodes() == (node_id,):
            raise ClusterConfigError(Refusal.LAST_ACTIVE_NODE, f"node {node_id!r} is the last active node")
        if automatic:
            why = auto_failover_mod.why_not(
                self.auto_failover,
                self.auto_failover_count,
                self.active_nodes(),
                node_id,
                lambda node: self.failover_preserves_majority([node]),
            )
            if why is not None:
                raise ClusterConfigError(Refusal.AUTO_FAILOVER_REFUSED, f"no automatic failover of {node_id}: {why}")
        seqnos = seqnos or {}
        buckets = {
            name: dataclasses.replace(entry, vbmap=vbmap_mod.failover(entry.vbmap, node_id, seqnos.get(name)))
            for name, entry in self.buckets.items()
        }
        nodes = {**self.nodes, node_id: dataclasses.replace(node, state=NodeState.FAILED)}
        count = self.auto_failover_count + (1 if automatic else 0)
        return self._next(nodes=nodes, buckets=buckets, auto_failover_count=count)

    def recover_node(self, node_id: str) -> ClusterConfig:
        """A failed-over node back in the cluster: active again, and a replica in every chain with
        an empty slot (`vbmap.add_back`). Its old copies are replaced by streams from the actives
        (rolled back where they diverged). Moving actives to it is rebalance (not implemented)."""
        node = self.nodes.get(node_id)
        if node is None:
            raise ClusterConfigError(Refusal.NODE_NOT_FOUND, f"node {node_id!r} not found")
        if node.state is not NodeState.FAILED:
            raise ClusterConfigError(Refusal.NODE_NOT_FAILED, f"node {node_id!r} has not been failed over")
        buckets = {
            name: dataclasses.replace(entry, vbmap=vbmap_mod.add_back(entry.vbmap, node_id))
            for name, entry in self.buckets.items()
        }
        nodes = {**self.nodes, node_id: dataclasses.replace(node, state=NodeState.ACTIVE)}
        return self._next(nodes=nodes, buckets=buckets)

    def set_auto_failover(self, settings: auto_failover_mod.Settings) -> ClusterConfig:
        """New automatic-failover settings (the count of failovers made stays)."""
        return self._next(auto_failover=settings)

    def reset_auto_failover(self) -> ClusterConfig:
        """Allow `max_count` automatic failovers again."""
        return self._next(auto_failover_count=0)

    # -- buckets -----------------------------------------------------------------------
    def create_bucket(self, config: BucketConfig) -> ClusterConfig:
        """A new bucket, its map planned over the active nodes (in order), an empty manifest."""
        config = BucketConfig(**config.to_dict())  # our own copy, validated again
        if config.name in self.buckets:
            raise ClusterConfigError(Refusal.BUCKET_EXISTS, f"bucket {config.name!r} already exists")
        if len(self.buckets) >= BUCKETS_MAX:
            raise ClusterConfigError(Refusal.BUCKETS_MAX, f"a cluster holds at most {BUCKETS_MAX} buckets")
        nodes = self.active_nodes()
        if not nodes:
            raise ClusterConfigError(Refusal.NO_ACTIVE_NODE, "a bucket needs at least one active node")
        vbmap = vbmap_mod.plan_map(nodes, config.num_vbuckets, config.num_replicas)
        entry = BucketEntry(config, vbmap, Manifest().to_json())
        return self._next(buckets={**self.buckets, config.name: entry})

    def drop_bucket(self, name: str) -> ClusterConfig:
        """Remove a bucket, and every role on it (a later bucket of that name starts with none)."""
        self.bucket(name)
        buckets = {n: b for n, b in self.buckets.items() if n != name}
        users = {u.name: users_mod.without_bucket(u, name) or u for u in self.users.values()}
        return self._next(buckets=buckets, users=users)

    def create_scope(self, bucket: str, scope: str) -> ClusterConfig:
        return self._change_manifest(bucket, lambda m: m.create_scope(scope))

    def drop_scope(self, bucket: str, scope: str) -> ClusterConfig:
        return self._change_manifest(bucket, lambda m: m.drop_scope(scope))

    def create_collection(self, bucket: str, scope: str, collection: str, max_ttl_s: int = 0) -> ClusterConfig:
        return self._change_manifest(bucket, lambda m: m.create_collection(scope, collection, max_ttl_s))

    def drop_collection(self, bucket: str, scope: str, collection: str) -> ClusterConfig:
        return self._change_manifest(bucket, lambda m: m.drop_collection(scope, collection))

    def _change_manifest(self, bucket: str, change: Callable[[Manifest], object]) -> ClusterConfig:
        entry = self.bucket(bucket)
        manifest = entry.manifest  # a copy; Manifest's own KVErrors leave the config as it was
        change(manifest)
        updated = dataclasses.replace(entry, manifest_json=manifest.to_json())
        return self._next(buckets={**self.buckets, bucket: updated})

    # -- users -------------------------------------------------------------------------
    def create_user(
        self, name: str, password: str, roles: Iterable[str], params: ScryptParams = users_mod.SCRYPT_DEFAULT
    ) -> ClusterConfig:
        users_mod.check_username(name)
        if name in self.users:
            raise ClusterConfigError(Refusal.USER_EXISTS, f"user {name!r} already exists")
        if len(self.users) >= USERS_MAX:
            raise ClusterConfigError(Refusal.USERS_MAX, f"a cluster has at most {USERS_MAX} users")
        parsed = users_mod.parse_roles(roles)  # before hashing: a bad role costs no scrypt
        for role in parsed:
            if role.bucket not in (None, ALL_BUCKETS) and role.bucket not in self.buckets:
                raise ClusterConfigError(Refusal.BUCKET_NOT_FOUND, f"role {role} names a bucket that does not exist")
        user = users_mod.make_user(name, password, parsed, params)
        return self._next(users={**self.users, name: user})

    def drop_user(self, name: str) -> ClusterConfig:
        """Remove a user; the last admin cannot be removed (nobody could manage the cluster)."""
        user = self.users.get(name)
        if user is None:
            raise ClusterConfigError(Refusal.USER_NOT_FOUND, f"user {name!r} not found")
        admins = [u for u in self.users.values() if Role(RoleName.ADMIN) in u.roles]
        if admins == [user]:
            raise ClusterConfigError(Refusal.LAST_ADMIN, f"user {name!r} is the last admin")
        return self._next(users={n: u for n, u in self.users.items() if n != name})

    def _next(self, **changes: Any) -> ClusterConfig:
        config = dataclasses.replace(self, revision=self.revision + 1, **changes)
        assert config.revision == self.revision + 1
        return config

    # -- views and serialisation -------------------------------------------------------
    def client_view(self) -> dict[str, Any]:
        """What clients and nodes bootstrap from: no secret, no users, no password hashes.

        The map is in Couchbase's form: `server_list` (every node id, in cluster order, so
        indexes stay stable) and per vbucket [active, replicas...] as indexes, -1 for empty.
        """
        server_list = list(self.nodes)
        return {
            "revision": self.revision,
            "cluster_uuid": self.cluster_uuid,
            "nodes": [_node_dict(n) for n in self.nodes.values()],
            "buckets": {
                name: {
                    **entry.config.to_dict(),
                    "vbucket_map": {
                        "num_replicas": entry.config.num_replicas,
                        "server_list": server_list,
                        "map": vbmap_mod.index_form(entry.vbmap, server_list, entry.config.num_replicas),
                    },
                    "manifest": json.loads(entry.manifest_json),
                }
                for name, entry in self.buckets.items()
            },
        }

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): equal configs give equal bytes."""
        doc = {
            "revision": self.revision,
            "cluster_uuid": self.cluster_uuid,
            "secret": self.secret,
            "nodes": [_node_dict(n) for n in self.nodes.values()],
            "buckets": [
                {
                    "config": b.config.to_dict(),
                    "map": vbmap_mod.encode_map(b.vbmap),
                    "manifest": json.loads(b.manifest_json),
                }
                for b in self.buckets.values()
            ],
            "users": [u.to_dict() for u in self.users.values()],
            "auto_failover": {
                "enabled": self.auto_failover.enabled,
                "timeout_s": self.auto_failover.timeout_s,
                "max_count": self.auto_failover.max_count,
                "count": self.auto_failover_count,
            },
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ClusterConfig:
        """Parse and check a `to_json` document; ConfigDecodeError for anything malformed."""
        try:
            doc = json.loads(raw)
            nodes = {}
            for n in doc["nodes"]:
                node = Node(n["id"], check_address(n["address"]), NodeState(n["state"]))
                node_id = node.node_id
                if not isinstance(node_id, str) or len(node_id) > NODE_ID_LEN_MAX or not _NODE_ID_RE.fullmatch(node_id):
                    raise ConfigDecodeError(f"invalid node id {node.node_id!r}")
                nodes[node.node_id] = node
            buckets = {}
            for b in doc["buckets"]:
                config = BucketConfig(**b["config"])
                known = [n.node_id for n in nodes.values() if n.state is NodeState.ACTIVE]
                vbmap = vbmap_mod.decode_map(b["map"], config.num_vbuckets, config.num_replicas, known)
                manifest = Manifest.from_json(json.dumps(b["manifest"]).encode()).to_json()
                buckets[config.name] = BucketEntry(config, vbmap, manifest)
            users = {u["name"]: User.from_dict(u) for u in doc["users"]}
            revision = doc["revision"]
            if type(revision) is not int or revision < 1:
                raise ConfigDecodeError(f"invalid revision {revision!r}")
            auto = dict(doc.get("auto_failover", {}))  # absent: written before automatic failover existed
            count = auto.pop("count", 0)
            if type(count) is not int or count < 0:
                raise ConfigDecodeError(f"invalid automatic failover count {count!r}")
            settings = auto_failover_mod.Settings(**auto)
            config = cls(revision, doc["cluster_uuid"], doc["secret"], nodes, buckets, users, settings, count)
            if (
                len(nodes) != len(doc["nodes"])
                or len(buckets) != len(doc["buckets"])
                or len(users) != len(doc["users"])
            ):
                raise ConfigDecodeError("a node, bucket or user is listed twice")
            config._check_identity(ConfigDecodeError)
            for user in users.values():
                for role in user.roles:
                    if role.bucket not in (None, ALL_BUCKETS) and role.bucket not in buckets:
                        raise ConfigDecodeError(f"user {user.name!r} has role {role} on a missing bucket")
        except ConfigDecodeError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, EngineError) as exc:
            raise ConfigDecodeError(f"malformed cluster configuration: {exc!r}") from exc
        return config

    def _check_identity(self, error: type[Exception]) -> None:
        for name, value, size in (("cluster uuid", self.cluster_uuid, 16), ("secret", self.secret, SECRET_SIZE)):
            if not isinstance(value, str) or len(value) != 2 * size or not _HEX_RE.fullmatch(value):
                raise error(f"the {name} must be {2 * size} lowercase hex digits")


def check_address(address: object) -> str:
    """`host:port` (IPv6 hosts in brackets), port 1..65535; ClusterConfigError otherwise."""
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if (
        not _HOST_RE.fullmatch(host)
        or not (port.isascii() and port.isdigit())
        or port[0] == "0"
        or not 1 <= int(port) <= 65535
    ):
        raise ClusterConfigError(Refusal.INVALID_ADDRESS, f"invalid address {address!r}: expected host:port")
    return address


def _node_dict(node: Node) -> dict[str, str]:
    return {"id": node.node_id, "address": node.address, "state": node.state.value}

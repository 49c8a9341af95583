"""The cluster configuration on the wire: `cluster_config` models <-> `cluster.proto` messages. Pure.

The manager encodes with it (GetClusterConfig, PushConfig), nodes decode pushes and
re-encode for their own answers, and the SDK decodes the client form. It does no I/O,
reads no clock and decides nothing: every rule about what a configuration may hold stays
in `cluster_config`, `users`, `vbmap` and the engine's `Manifest`/`BucketConfig`, and
decoding goes back through those checks, so a malformed message is refused with
`ConfigProtoError` instead of producing a configuration that breaks an invariant.

Forms:
- full (`cluster_config_to_proto(..., manifests=True)`): nodes, buckets, maps and
  manifests. Pushed to nodes inside a `PushConfigRequest`, which adds what the
  `ClusterConfig` message never carries: every user with its password hash, and the
  cluster secret. `config_from_push_request` turns that back into a `ClusterConfig`.
- client (`manifests=False`): no manifests (clients address collections by name, and
  `manifest_uid` tells whether their copy is current). `view_from_proto` decodes either
  form into a `ConfigView`, which holds no secret and no users by construction.

Exactness: `ClusterConfig -> full form + users + secret -> ClusterConfig` gives back an
equal configuration (same canonical JSON), with one gap the wire schema imposes: a
`CollectionsManifest` has no field for the manifest's next collection id, so the decoder
takes it as one above the highest id present (never below 8). That equals the real
value unless the newest scope or collection was dropped since; a decoded manifest is
fit to be adopted (nodes never assign ids), not to assign new ids from. Whether the
`_default` collection was dropped is recovered exactly (it can never come back).

The epoch is not part of `ClusterConfig`: callers pass it in and read it out
(`version`). Maps travel as indexes into the message's node list, in cluster order
(`vbmap.index_form`), -1 for an empty slot; a vbucket that lost every copy is all -1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from durakv.engine.bucket import BucketConfig
from durakv.engine.errors import EngineError
from durakv.engine.limits import NUM_VBUCKETS_DEFAULT
from durakv.engine.manifest import DEFAULT_NAME, FIRST_USER_ID, Manifest, check_name
from durakv.proto import admin_pb2, cluster_pb2
from durakv.replication import vbmap as vbmap_mod
from durakv.replication.cluster_config import (
    ClusterConfig,
    ConfigDecodeError,
    Node,
    NodeState,
    check_address,
)
from durakv.replication.users import InvalidRoleError, PasswordHash, Role, RoleName, User, parse_role
from durakv.replication.vbmap import UNDEFINED_INDEX, VBucketMap

Version = tuple[int, int]  # (epoch, revision), compared epoch first; (0, 0) = none

_NODE_STATES = {NodeState.ACTIVE: cluster_pb2.NODE_STATE_ACTIVE, NodeState.FAILED: cluster_pb2.NODE_STATE_FAILED}
_NODE_STATES_BACK = {wire: state for state, wire in _NODE_STATES.items()}
_ROLE_NAMES = {
    RoleName.ADMIN: cluster_pb2.ROLE_NAME_ADMIN,
    RoleName.DATA_READER: cluster_pb2.ROLE_NAME_DATA_READER,
    RoleName.DATA_WRITER: cluster_pb2.ROLE_NAME_DATA_WRITER,
}
_ROLE_NAMES_BACK = {wire: name for name, wire in _ROLE_NAMES.items()}


class ConfigProtoError(ConfigDecodeError):
    """A configuration message is malformed or breaks an invariant of the model; nothing was built."""


def version(config: cluster_pb2.ClusterConfig) -> Version:
    """(epoch, revision) of a configuration message."""
    return (config.epoch, config.revision)


# -- nodes ---------------------------------------------------------------------------------
def node_to_proto(node: Node) -> cluster_pb2.Node:
    return cluster_pb2.Node(node_id=node.node_id, address=node.address, state=_NODE_STATES[node.state])


def node_from_proto(msg: cluster_pb2.Node) -> Node:
    state = _NODE_STATES_BACK.get(msg.state)
    if state is None:
        raise ConfigProtoError(f"node {msg.node_id!r} has unknown state {msg.state}")
    try:
        check_address(msg.address)
    except EngineError as exc:
        raise ConfigProtoError(f"node {msg.node_id!r}: {exc}") from exc
    return Node(msg.node_id, msg.address, state)


# -- bucket settings -------------------------------------------------------------------------
def bucket_settings_to_proto(config: BucketConfig) -> cluster_pb2.BucketSettings:
    return cluster_pb2.BucketSettings(
        name=config.name,
        num_vbuckets=config.num_vbuckets,
        num_replicas=config.num_replicas,
        durability_min_level=config.durability_min_level,
        max_ttl_s=config.max_ttl_s,
    )


def bucket_settings_from_proto(msg: cluster_pb2.BucketSettings, *, create: bool = False) -> BucketConfig:
    """The settings as a validated BucketConfig (KVError EINVAL for a bad one).

    `create`: a CreateBucket request, where num_vbuckets 0 means the default (64); in a
    configuration every value is explicit and 0 vbuckets is refused.
    """
    num_vbuckets = msg.num_vbuckets or (NUM_VBUCKETS_DEFAULT if create else 0)
    return BucketConfig(
        name=msg.name,
        num_vbuckets=num_vbuckets,
        num_replicas=msg.num_replicas,
        durability_min_level=int(msg.durability_min_level),
        max_ttl_s=msg.max_ttl_s,
    )


# -- vbucket maps ----------------------------------------------------------------------------
def vbmap_to_proto(vbmap: VBucketMap, server_list: Sequence[str], num_replicas: int) -> list[cluster_pb2.VBucketChain]:
    return [cluster_pb2.VBucketChain(nodes=row) for row in vbmap_mod.index_form(vbmap, server_list, num_replicas)]


def vbmap_from_proto(
    chains: Sequence[cluster_pb2.VBucketChain],
    server_list: Sequence[str],
    num_vbuckets: int,
    num_replicas: int,
    active_nodes: Iterable[str],
) -> VBucketMap:
    """Index form -> map, checked as `vbmap.decode_map` checks the JSON form (chains name active nodes only)."""
    rows: list[list[str | None] | None] = []
    for vb, chain in enumerate(chains):
        indexes = list(chain.nodes)
        if any(not UNDEFINED_INDEX <= i < len(server_list) for i in indexes):
            raise ConfigProtoError(f"vbucket {vb}: chain {indexes} indexes past the {len(server_list)} nodes")
        ids = [None if i == UNDEFINED_INDEX else server_list[i] for i in indexes]
        if len(ids) == 1 + num_replicas and all(node is None for node in ids):
            rows.append(None)  # every copy lost
        elif ids and ids[0] is None and any(node is not None for node in ids):
            # The model has no such chain: failover promotes a replica rather than leave one.
            raise ConfigProtoError(f"vbucket {vb}: chain {indexes} has replicas but no active")
        else:
            rows.append(ids)  # decode_map checks the length
    try:
        return vbmap_mod.decode_map(rows, num_vbuckets, num_replicas, active_nodes)
    except EngineError as exc:
        raise ConfigProtoError(str(exc)) from exc


# -- manifests -------------------------------------------------------------------------------
def manifest_to_proto(manifest: Manifest) -> cluster_pb2.CollectionsManifest:
    return cluster_pb2.CollectionsManifest(
        uid=manifest.uid,
        scopes=[
            cluster_pb2.Scope(
                name=scope.name,
                id=scope.sid,
                collections=[
                    cluster_pb2.Collection(name=c.name, id=c.cid, max_ttl_s=c.max_ttl_s)
                    for c in scope.collections.values()
                ],
            )
            for scope in manifest.scopes.values()
        ],
    )


def manifest_from_proto(msg: cluster_pb2.CollectionsManifest) -> Manifest:
    """A manifest to adopt; see the module docstring for its next collection id."""
    scopes, scope_ids, collection_ids = [], set(), set()
    for scope in msg.scopes:
        if scope.name in (s["name"] for s in scopes) or scope.id in scope_ids:
            raise ConfigProtoError(f"manifest {msg.uid}: scope {scope.name!r} (id {scope.id}) listed twice")
        _check_manifest_entry(scope.name, scope.id, "scope", msg.uid)
        scope_ids.add(scope.id)
        collections = []
        for c in scope.collections:
            if c.name in (seen["name"] for seen in collections) or c.id in collection_ids:
                raise ConfigProtoError(f"manifest {msg.uid}: collection {scope.name}.{c.name} listed twice")
            _check_manifest_entry(c.name, c.id, "collection", msg.uid)
            if c.id == 0 and scope.id != 0:
                raise ConfigProtoError(f"manifest {msg.uid}: the _default collection is outside the _default scope")
            collection_ids.add(c.id)
            collections.append({"name": c.name, "cid": c.id, "max_ttl_s": c.max_ttl_s})
        scopes.append({"name": scope.name, "sid": scope.id, "collections": collections})
    default_scope = next((s for s in scopes if s["sid"] == 0), None)
    if default_scope is None:
        raise ConfigProtoError(f"manifest {msg.uid} has no _default scope")
    # Not on the wire: the next id is taken as one above the highest present (module docstring).
    doc = {
        "uid": msg.uid,
        "next_id": max(FIRST_USER_ID, 1 + max(scope_ids | collection_ids)),
        "default_collection_dropped": not any(c["cid"] == 0 for c in default_scope["collections"]),
        "scopes": scopes,
    }
    return Manifest.from_json(json.dumps(doc).encode())


def _check_manifest_entry(name: str, ident: int, what: str, uid: int) -> None:
    if (name == DEFAULT_NAME) != (ident == 0):
        raise ConfigProtoError(f"manifest {uid}: {what} {name!r} has id {ident}; only _default has id 0")
    if ident == 0:
        return
    if ident < FIRST_USER_ID:
        raise ConfigProtoError(f"manifest {uid}: {what} {name!r} has reserved id {ident}")
    try:
        check_name(name, what)
    except EngineError as exc:
        raise ConfigProtoError(f"manifest {uid}: {exc}") from exc


# -- roles and users -------------------------------------------------------------------------
def role_to_proto(role: Role) -> cluster_pb2.Role:
    return cluster_pb2.Role(name=_ROLE_NAMES[role.name], bucket=role.bucket or "")


def role_from_proto(msg: cluster_pb2.Role) -> Role:
    """A role, checked by `users.parse_role` (InvalidRoleError, a KVError EINVAL, if bad)."""
    name = _ROLE_NAMES_BACK.get(msg.name)
    if name is None:
        raise InvalidRoleError(msg.name, "unknown role")
    return parse_role(name.value if name is RoleName.ADMIN and not msg.bucket else f"{name.value}[{msg.bucket}]")


def user_to_proto(user: User) -> cluster_pb2.User:
    """What Admin answers: name and roles, never the hash."""
    return cluster_pb2.User(username=user.name, roles=[role_to_proto(role) for role in user.roles])


def password_hash_to_proto(password: PasswordHash) -> cluster_pb2.PasswordHash:
    return cluster_pb2.PasswordHash(
        algorithm="scrypt",
        scrypt_n=password.params.n,
        scrypt_r=password.params.r,
        scrypt_p=password.params.p,
        salt=password.salt,
        digest=password.digest,
    )


def user_record_to_proto(user: User) -> cluster_pb2.UserRecord:
    """What the manager pushes to nodes: the user with its password hash."""
    return cluster_pb2.UserRecord(user=user_to_proto(user), password_hash=password_hash_to_proto(user.password))


def user_record_from_proto(msg: cluster_pb2.UserRecord) -> User:
    """Checked as `User.from_dict` checks a stored user (a stored user may have no roles left)."""
    h = msg.password_hash
    try:
        roles = [str(role_from_proto(role)) for role in msg.user.roles]
        password = {
            "algorithm": h.algorithm,
            "n": h.scrypt_n,
            "r": h.scrypt_r,
            "p": h.scrypt_p,
            "salt": h.salt.hex(),
            "digest": h.digest.hex(),
        }
        return User.from_dict({"name": msg.user.username, "roles": roles, "password": password})
    except EngineError as exc:
        raise ConfigProtoError(f"user {msg.user.username!r}: {exc}") from exc


# -- whole configurations --------------------------------------------------------------------
def cluster_config_to_proto(
    config: ClusterConfig, *, epoch: int, bucket: str | None = None, manifests: bool = True
) -> cluster_pb2.ClusterConfig:
    """The configuration message: every bucket, or only `bucket` (KVError BUCKET_NOT_FOUND if absent).

    `manifests=False` gives the client form. Never holds the secret or users.
    """
    entries = [config.bucket(bucket)] if bucket is not None else list(config.buckets.values())
    server_list = list(config.nodes)
    buckets = []
    for entry in entries:
        manifest = entry.manifest
        msg = cluster_pb2.BucketConfig(
            settings=bucket_settings_to_proto(entry.config),
            vbucket_map=vbmap_to_proto(entry.vbmap, server_list, entry.config.num_replicas),
            manifest_uid=manifest.uid,
        )
        if manifests:
            msg.manifest.CopyFrom(manifest_to_proto(manifest))
        buckets.append(msg)
    return cluster_pb2.ClusterConfig(
        epoch=epoch,
        revision=config.revision,
        cluster_uuid=config.cluster_uuid,
        nodes=[node_to_proto(node) for node in config.nodes.values()],
        buckets=buckets,
    )


@dataclass(frozen=True)
class BucketView:
    """One bucket as a configuration message describes it."""

    config: BucketConfig
    uuid: str
    vbmap: VBucketMap
    manifest_uid: int
    manifest_json: bytes | None  # None in the client form

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def manifest(self) -> Manifest | None:
        """A fresh copy (None in the client form)."""
        return None if self.manifest_json is None else Manifest.from_json(self.manifest_json)


@dataclass(frozen=True)
class ConfigView:
    """A decoded configuration message, as clients and nodes route with it: no secret, no users."""

    epoch: int
    revision: int
    cluster_uuid: str
    nodes: Mapping[str, Node] = field(default_factory=dict)  # in the message's order (map indexes)
    buckets: Mapping[str, BucketView] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("nodes", "buckets"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def version(self) -> Version:
        return (self.epoch, self.revision)

    @property
    def server_list(self) -> tuple[str, ...]:
        return tuple(self.nodes)


def view_from_proto(msg: cluster_pb2.ClusterConfig) -> ConfigView:
    """Decode and check either form (ConfigProtoError if malformed)."""
    if msg.revision < 1:
        raise ConfigProtoError(f"a configuration has a revision >= 1, not {msg.revision}")
    nodes: dict[str, Node] = {}
    for node_msg in msg.nodes:
        node = node_from_proto(node_msg)
        if node.node_id in nodes or any(n.address == node.address for n in nodes.values()):
            raise ConfigProtoError(f"node {node.node_id!r} ({node.address}) is listed twice")
        nodes[node.node_id] = node
    server_list = list(nodes)
    active = [n.node_id for n in nodes.values() if n.state is NodeState.ACTIVE]
    buckets: dict[str, BucketView] = {}
    for bucket_msg in msg.buckets:
        try:
            settings = bucket_settings_from_proto(bucket_msg.settings)
        except EngineError as exc:
            raise ConfigProtoError(f"bucket {bucket_msg.settings.name!r}: {exc}") from exc
        if settings.name in buckets:
            raise ConfigProtoError(f"bucket {settings.name!r} is listed twice")
        vbmap = vbmap_from_proto(
            bucket_msg.vbucket_map, server_list, settings.num_vbuckets, settings.num_replicas, active
        )
        manifest_json = None
        if bucket_msg.HasField("manifest"):
            if bucket_msg.manifest.uid != bucket_msg.manifest_uid:
                raise ConfigProtoError(f"bucket {settings.name!r}: manifest uid differs from manifest_uid")
            manifest_json = manifest_from_proto(bucket_msg.manifest).to_json()
        buckets[settings.name] = BucketView(settings, bucket_msg.uuid, vbmap, bucket_msg.manifest_uid, manifest_json)
    return ConfigView(msg.epoch, msg.revision, msg.cluster_uuid, nodes, buckets)


def cluster_config_from_proto(
    msg: cluster_pb2.ClusterConfig, *, secret: str, users: Iterable[cluster_pb2.UserRecord]
) -> ClusterConfig:
    """The full form plus what travels beside it -> ClusterConfig, checked as `ClusterConfig.from_json`."""
    view = view_from_proto(msg)
    missing = [name for name, b in view.buckets.items() if b.manifest_json is None]
    if missing:
        raise ConfigProtoError(f"buckets {missing} have no manifest: a client-form configuration")
    doc = {
        "revision": view.revision,
        "cluster_uuid": view.cluster_uuid,
        "secret": secret,
        "nodes": [{"id": n.node_id, "address": n.address, "state": n.state.value} for n in view.nodes.values()],
        "buckets": [
            {
                "config": b.config.to_dict(),
                "map": vbmap_mod.encode_map(b.vbmap),
                "manifest": json.loads(b.manifest_json),
            }
            for b in view.buckets.values()
        ],
        "users": [user_record_from_proto(record).to_dict() for record in users],
    }
    try:
        return ClusterConfig.from_json(json.dumps(doc).encode())
    except ConfigDecodeError as exc:
        raise ConfigProtoError(str(exc)) from exc


# -- NodeControl.PushConfig ------------------------------------------------------------------
def push_request(config: ClusterConfig, *, epoch: int, target_node_id: str) -> admin_pb2.PushConfigRequest:
    """Everything a node needs: the full form, every user with its hash, the secret."""
    return admin_pb2.PushConfigRequest(
        target_node_id=target_node_id,
        config=cluster_config_to_proto(config, epoch=epoch),
        users=[user_record_to_proto(user) for user in config.users.values()],
        cluster_secret=config.secret,
    )


def config_from_push_request(request: admin_pb2.PushConfigRequest) -> tuple[int, ClusterConfig]:
    """(epoch, configuration) of a push; ConfigProtoError if malformed."""
    config = cluster_config_from_proto(request.config, secret=request.cluster_secret, users=request.users)
    return request.config.epoch, config

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DurabilityLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DURABILITY_LEVEL_NONE: _ClassVar[DurabilityLevel]
    DURABILITY_LEVEL_MAJORITY: _ClassVar[DurabilityLevel]
    DURABILITY_LEVEL_MAJORITY_AND_PERSIST_TO_ACTIVE: _ClassVar[DurabilityLevel]
    DURABILITY_LEVEL_PERSIST_TO_MAJORITY: _ClassVar[DurabilityLevel]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_ACTIVE: _ClassVar[NodeState]
    NODE_STATE_FAILED: _ClassVar[NodeState]

class RoleName(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_NAME_UNSPECIFIED: _ClassVar[RoleName]
    ROLE_NAME_ADMIN: _ClassVar[RoleName]
    ROLE_NAME_DATA_READER: _ClassVar[RoleName]
    ROLE_NAME_DATA_WRITER: _ClassVar[RoleName]
DURABILITY_LEVEL_NONE: DurabilityLevel
DURABILITY_LEVEL_MAJORITY: DurabilityLevel
DURABILITY_LEVEL_MAJORITY_AND_PERSIST_TO_ACTIVE: DurabilityLevel
DURABILITY_LEVEL_PERSIST_TO_MAJORITY: DurabilityLevel
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_ACTIVE: NodeState
NODE_STATE_FAILED: NodeState
ROLE_NAME_UNSPECIFIED: RoleName
ROLE_NAME_ADMIN: RoleName
ROLE_NAME_DATA_READER: RoleName
ROLE_NAME_DATA_WRITER: RoleName

class Node(_message.Message):
    __slots__ = ("node_id", "address", "state")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    state: NodeState
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[_Union[NodeState, str]] = ...) -> None: ...

class BucketSettings(_message.Message):
    __slots__ = ("name", "num_vbuckets", "num_replicas", "durability_min_level", "max_ttl_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_VBUCKETS_FIELD_NUMBER: _ClassVar[int]
    NUM_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_vbuckets: int
    num_replicas: int
    durability_min_level: DurabilityLevel
    max_ttl_s: int
    def __init__(self, name: _Optional[str] = ..., num_vbuckets: _Optional[int] = ..., num_replicas: _Optional[int] = ..., durability_min_level: _Optional[_Union[DurabilityLevel, str]] = ..., max_ttl_s: _Optional[int] = ...) -> None: ...

class VBucketChain(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, nodes: _Optional[_Iterable[int]] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "id", "max_ttl_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    max_ttl_s: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., max_ttl_s: _Optional[int] = ...) -> None: ...

class Scope(_message.Message):
    __slots__ = ("name", "id", "collections")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ...) -> None: ...

class CollectionsManifest(_message.Message):
    __slots__ = ("uid", "scopes")
    UID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    uid: int
    scopes: _containers.RepeatedCompositeFieldContainer[Scope]
    def __init__(self, uid: _Optional[int] = ..., scopes: _Optional[_Iterable[_Union[Scope, _Mapping]]] = ...) -> None: ...

class BucketConfig(_message.Message):
    __slots__ = ("settings", "uuid", "vbucket_map", "manifest_uid", "manifest")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_MAP_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_UID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    settings: BucketSettings
    uuid: str
    vbucket_map: _containers.RepeatedCompositeFieldContainer[VBucketChain]
    manifest_uid: int
    manifest: CollectionsManifest
    def __init__(self, settings: _Optional[_Union[BucketSettings, _Mapping]] = ..., uuid: _Optional[str] = ..., vbucket_map: _Optional[_Iterable[_Union[VBucketChain, _Mapping]]] = ..., manifest_uid: _Optional[int] = ..., manifest: _Optional[_Union[CollectionsManifest, _Mapping]] = ...) -> None: ...

class ClusterConfig(_message.Message):
    __slots__ = ("epoch", "revision", "cluster_uuid", "nodes", "buckets")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_UUID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    revision: int
    cluster_uuid: str
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    buckets: _containers.RepeatedCompositeFieldContainer[BucketConfig]
    def __init__(self, epoch: _Optional[int] = ..., revision: _Optional[int] = ..., cluster_uuid: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., buckets: _Optional[_Iterable[_Union[BucketConfig, _Mapping]]] = ...) -> None: ...

class Role(_message.Message):
    __slots__ = ("name", "bucket")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    name: RoleName
    bucket: str
    def __init__(self, name: _Optional[_Union[RoleName, str]] = ..., bucket: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("username", "roles")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    username: str
    roles: _containers.RepeatedCompositeFieldContainer[Role]
    def __init__(self, username: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[Role, _Mapping]]] = ...) -> None: ...

class PasswordHash(_message.Message):
    __slots__ = ("algorithm", "scrypt_n", "scrypt_r", "scrypt_p", "salt", "digest")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SCRYPT_N_FIELD_NUMBER: _ClassVar[int]
    SCRYPT_R_FIELD_NUMBER: _ClassVar[int]
    SCRYPT_P_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    scrypt_n: int
    scrypt_r: int
    scrypt_p: int
    salt: bytes
    digest: bytes
    def __init__(self, algorithm: _Optional[str] = ..., scrypt_n: _Optional[int] = ..., scrypt_r: _Optional[int] = ..., scrypt_p: _Optional[int] = ..., salt: _Optional[bytes] = ..., digest: _Optional[bytes] = ...) -> None: ...

class UserRecord(_message.Message):
    __slots__ = ("user", "password_hash")
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    user: User
    password_hash: PasswordHash
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., password_hash: _Optional[_Union[PasswordHash, _Mapping]] = ...) -> None: ...

from durakv.proto import cluster_pb2 as _cluster_pb2
from durakv.proto import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VBucketState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VBUCKET_STATE_UNSPECIFIED: _ClassVar[VBucketState]
    VBUCKET_STATE_ACTIVE: _ClassVar[VBucketState]
    VBUCKET_STATE_REPLICA: _ClassVar[VBucketState]
    VBUCKET_STATE_PENDING: _ClassVar[VBucketState]
    VBUCKET_STATE_DEAD: _ClassVar[VBucketState]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_SERVING: _ClassVar[HealthState]
    HEALTH_STATE_STARTING: _ClassVar[HealthState]
    HEALTH_STATE_DEGRADED: _ClassVar[HealthState]
    HEALTH_STATE_STOPPING: _ClassVar[HealthState]
VBUCKET_STATE_UNSPECIFIED: VBucketState
VBUCKET_STATE_ACTIVE: VBucketState
VBUCKET_STATE_REPLICA: VBucketState
VBUCKET_STATE_PENDING: VBucketState
VBUCKET_STATE_DEAD: VBucketState
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_SERVING: HealthState
HEALTH_STATE_STARTING: HealthState
HEALTH_STATE_DEGRADED: HealthState
HEALTH_STATE_STOPPING: HealthState

class GetClusterConfigRequest(_message.Message):
    __slots__ = ("config_epoch", "config_revision", "bucket")
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    config_epoch: int
    config_revision: int
    bucket: str
    def __init__(self, config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ..., bucket: _Optional[str] = ...) -> None: ...

class GetClusterConfigResponse(_message.Message):
    __slots__ = ("status", "message", "config")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    config: _cluster_pb2.ClusterConfig
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., config: _Optional[_Union[_cluster_pb2.ClusterConfig, _Mapping]] = ...) -> None: ...

class ChangeResponse(_message.Message):
    __slots__ = ("status", "message", "config_epoch", "config_revision", "manifest_uid")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_UID_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    config_epoch: int
    config_revision: int
    manifest_uid: int
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ..., manifest_uid: _Optional[int] = ...) -> None: ...

class CreateBucketRequest(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _cluster_pb2.BucketSettings
    def __init__(self, settings: _Optional[_Union[_cluster_pb2.BucketSettings, _Mapping]] = ...) -> None: ...

class DropBucketRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBucketRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBucketResponse(_message.Message):
    __slots__ = ("status", "message", "settings")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    settings: _cluster_pb2.BucketSettings
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., settings: _Optional[_Union[_cluster_pb2.BucketSettings, _Mapping]] = ...) -> None: ...

class ListBucketsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBucketsResponse(_message.Message):
    __slots__ = ("status", "message", "buckets")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    buckets: _containers.RepeatedCompositeFieldContainer[_cluster_pb2.BucketSettings]
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., buckets: _Optional[_Iterable[_Union[_cluster_pb2.BucketSettings, _Mapping]]] = ...) -> None: ...

class CreateScopeRequest(_message.Message):
    __slots__ = ("bucket", "scope")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    scope: str
    def __init__(self, bucket: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

class DropScopeRequest(_message.Message):
    __slots__ = ("bucket", "scope")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    scope: str
    def __init__(self, bucket: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("bucket", "scope", "collection", "max_ttl_s")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_S_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    scope: str
    collection: str
    max_ttl_s: int
    def __init__(self, bucket: _Optional[str] = ..., scope: _Optional[str] = ..., collection: _Optional[str] = ..., max_ttl_s: _Optional[int] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("bucket", "scope", "collection")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    scope: str
    collection: str
    def __init__(self, bucket: _Optional[str] = ..., scope: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class GetCollectionsManifestRequest(_message.Message):
    __slots__ = ("bucket",)
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    def __init__(self, bucket: _Optional[str] = ...) -> None: ...

class GetCollectionsManifestResponse(_message.Message):
    __slots__ = ("status", "message", "manifest")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    manifest: _cluster_pb2.CollectionsManifest
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., manifest: _Optional[_Union[_cluster_pb2.CollectionsManifest, _Mapping]] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("user", "password", "upsert")
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    user: _cluster_pb2.User
    password: str
    upsert: bool
    def __init__(self, user: _Optional[_Union[_cluster_pb2.User, _Mapping]] = ..., password: _Optional[str] = ..., upsert: _Optional[bool] = ...) -> None: ...

class DropUserRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("status", "message", "user")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    user: _cluster_pb2.User
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., user: _Optional[_Union[_cluster_pb2.User, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("status", "message", "users")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    users: _containers.RepeatedCompositeFieldContainer[_cluster_pb2.User]
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., users: _Optional[_Iterable[_Union[_cluster_pb2.User, _Mapping]]] = ...) -> None: ...

class FailoverRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class FailoverPromotion(_message.Message):
    __slots__ = ("bucket", "vbucket", "node_id", "high_prepared_seqno", "high_seqno")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HIGH_PREPARED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    HIGH_SEQNO_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    vbucket: int
    node_id: str
    high_prepared_seqno: int
    high_seqno: int
    def __init__(self, bucket: _Optional[str] = ..., vbucket: _Optional[int] = ..., node_id: _Optional[str] = ..., high_prepared_seqno: _Optional[int] = ..., high_seqno: _Optional[int] = ...) -> None: ...

class FailoverResponse(_message.Message):
    __slots__ = ("status", "message", "config_epoch", "config_revision", "promotions", "unreachable_nodes")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    PROMOTIONS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_NODES_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    config_epoch: int
    config_revision: int
    promotions: _containers.RepeatedCompositeFieldContainer[FailoverPromotion]
    unreachable_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ..., promotions: _Optional[_Iterable[_Union[FailoverPromotion, _Mapping]]] = ..., unreachable_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class RecoverRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class AutoFailoverSettings(_message.Message):
    __slots__ = ("enabled", "timeout_s", "max_count")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    timeout_s: float
    max_count: int
    def __init__(self, enabled: _Optional[bool] = ..., timeout_s: _Optional[float] = ..., max_count: _Optional[int] = ...) -> None: ...

class AutoFailoverRequest(_message.Message):
    __slots__ = ("settings", "reset_count")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    RESET_COUNT_FIELD_NUMBER: _ClassVar[int]
    settings: AutoFailoverSettings
    reset_count: bool
    def __init__(self, settings: _Optional[_Union[AutoFailoverSettings, _Mapping]] = ..., reset_count: _Optional[bool] = ...) -> None: ...

class UnreachableNode(_message.Message):
    __slots__ = ("node_id", "seconds")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    seconds: float
    def __init__(self, node_id: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class AutoFailoverResponse(_message.Message):
    __slots__ = ("status", "message", "settings", "count", "unreachable", "decision")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    settings: AutoFailoverSettings
    count: int
    unreachable: _containers.RepeatedCompositeFieldContainer[UnreachableNode]
    decision: str
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., settings: _Optional[_Union[AutoFailoverSettings, _Mapping]] = ..., count: _Optional[int] = ..., unreachable: _Optional[_Iterable[_Union[UnreachableNode, _Mapping]]] = ..., decision: _Optional[str] = ...) -> None: ...

class VBucketStats(_message.Message):
    __slots__ = ("vbucket", "state", "uuid", "high_seqno", "persisted_seqno", "high_prepared_seqno", "high_completed_seqno", "item_count", "sync_writes_pending")
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    HIGH_SEQNO_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    HIGH_PREPARED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    HIGH_COMPLETED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    SYNC_WRITES_PENDING_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    state: VBucketState
    uuid: int
    high_seqno: int
    persisted_seqno: int
    high_prepared_seqno: int
    high_completed_seqno: int
    item_count: int
    sync_writes_pending: int
    def __init__(self, vbucket: _Optional[int] = ..., state: _Optional[_Union[VBucketState, str]] = ..., uuid: _Optional[int] = ..., high_seqno: _Optional[int] = ..., persisted_seqno: _Optional[int] = ..., high_prepared_seqno: _Optional[int] = ..., high_completed_seqno: _Optional[int] = ..., item_count: _Optional[int] = ..., sync_writes_pending: _Optional[int] = ...) -> None: ...

class BucketStats(_message.Message):
    __slots__ = ("bucket", "counters", "vbuckets")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    VBUCKETS_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    counters: _containers.ScalarMap[str, int]
    vbuckets: _containers.RepeatedCompositeFieldContainer[VBucketStats]
    def __init__(self, bucket: _Optional[str] = ..., counters: _Optional[_Mapping[str, int]] = ..., vbuckets: _Optional[_Iterable[_Union[VBucketStats, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("bucket", "per_vbucket")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    PER_VBUCKET_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    per_vbucket: bool
    def __init__(self, bucket: _Optional[str] = ..., per_vbucket: _Optional[bool] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("status", "message", "node_id", "buckets")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    node_id: str
    buckets: _containers.RepeatedCompositeFieldContainer[BucketStats]
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., buckets: _Optional[_Iterable[_Union[BucketStats, _Mapping]]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "message", "node_id", "state", "config_epoch", "config_revision", "problems", "version", "uptime_s")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    node_id: str
    state: HealthState
    config_epoch: int
    config_revision: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    version: str
    uptime_s: int
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., state: _Optional[_Union[HealthState, str]] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., uptime_s: _Optional[int] = ...) -> None: ...

class PushConfigRequest(_message.Message):
    __slots__ = ("target_node_id", "config", "users", "cluster_secret")
    TARGET_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SECRET_FIELD_NUMBER: _ClassVar[int]
    target_node_id: str
    config: _cluster_pb2.ClusterConfig
    users: _containers.RepeatedCompositeFieldContainer[_cluster_pb2.UserRecord]
    cluster_secret: str
    def __init__(self, target_node_id: _Optional[str] = ..., config: _Optional[_Union[_cluster_pb2.ClusterConfig, _Mapping]] = ..., users: _Optional[_Iterable[_Union[_cluster_pb2.UserRecord, _Mapping]]] = ..., cluster_secret: _Optional[str] = ...) -> None: ...

class PushConfigResponse(_message.Message):
    __slots__ = ("status", "message", "node_id", "config_epoch", "config_revision")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    node_id: str
    config_epoch: int
    config_revision: int
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ...) -> None: ...

class GetVBucketStatesRequest(_message.Message):
    __slots__ = ("bucket",)
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    def __init__(self, bucket: _Optional[str] = ...) -> None: ...

class GetVBucketStatesResponse(_message.Message):
    __slots__ = ("status", "message", "node_id", "config_epoch", "config_revision", "vbuckets")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    VBUCKETS_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    node_id: str
    config_epoch: int
    config_revision: int
    vbuckets: _containers.RepeatedCompositeFieldContainer[VBucketStats]
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ..., vbuckets: _Optional[_Iterable[_Union[VBucketStats, _Mapping]]] = ...) -> None: ...

class DiskFault(_message.Message):
    __slots__ = ("fsync_delay_ms", "fsync_errors", "full")
    FSYNC_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    FSYNC_ERRORS_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    fsync_delay_ms: int
    fsync_errors: int
    full: bool
    def __init__(self, fsync_delay_ms: _Optional[int] = ..., fsync_errors: _Optional[int] = ..., full: _Optional[bool] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, peers: _Optional[_Iterable[str]] = ...) -> None: ...

class NetworkFault(_message.Message):
    __slots__ = ("replication_delay_ms", "replication_drop_percent")
    REPLICATION_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_DROP_PERCENT_FIELD_NUMBER: _ClassVar[int]
    replication_delay_ms: int
    replication_drop_percent: int
    def __init__(self, replication_delay_ms: _Optional[int] = ..., replication_drop_percent: _Optional[int] = ...) -> None: ...

class InjectFaultRequest(_message.Message):
    __slots__ = ("disk", "power_loss", "partition", "network")
    DISK_FIELD_NUMBER: _ClassVar[int]
    POWER_LOSS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    disk: DiskFault
    power_loss: bool
    partition: Partition
    network: NetworkFault
    def __init__(self, disk: _Optional[_Union[DiskFault, _Mapping]] = ..., power_loss: _Optional[bool] = ..., partition: _Optional[_Union[Partition, _Mapping]] = ..., network: _Optional[_Union[NetworkFault, _Mapping]] = ...) -> None: ...

class InjectFaultResponse(_message.Message):
    __slots__ = ("status", "message", "disk", "partitioned_from", "network")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    PARTITIONED_FROM_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    disk: DiskFault
    partitioned_from: _containers.RepeatedScalarFieldContainer[str]
    network: NetworkFault
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., disk: _Optional[_Union[DiskFault, _Mapping]] = ..., partitioned_from: _Optional[_Iterable[str]] = ..., network: _Optional[_Union[NetworkFault, _Mapping]] = ...) -> None: ...

class ClearFaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

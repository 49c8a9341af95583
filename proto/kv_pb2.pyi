from durakv.proto import cluster_pb2 as _cluster_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUCCESS: _ClassVar[Status]
    KEY_ENOENT: _ClassVar[Status]
    KEY_EEXISTS: _ClassVar[Status]
    E2BIG: _ClassVar[Status]
    EINVAL: _ClassVar[Status]
    NOT_STORED: _ClassVar[Status]
    DELTA_BADVAL: _ClassVar[Status]
    NOT_MY_VBUCKET: _ClassVar[Status]
    LOCKED: _ClassVar[Status]
    NOT_LOCKED: _ClassVar[Status]
    AUTH_ERROR: _ClassVar[Status]
    RANGE_ERROR: _ClassVar[Status]
    ROLLBACK: _ClassVar[Status]
    EACCESS: _ClassVar[Status]
    ENOMEM: _ClassVar[Status]
    NOT_SUPPORTED: _ClassVar[Status]
    EINTERNAL: _ClassVar[Status]
    EBUSY: _ClassVar[Status]
    TMPFAIL: _ClassVar[Status]
    UNKNOWN_COLLECTION: _ClassVar[Status]
    UNKNOWN_SCOPE: _ClassVar[Status]
    DURABILITY_INVALID_LEVEL: _ClassVar[Status]
    DURABILITY_IMPOSSIBLE: _ClassVar[Status]
    SYNC_WRITE_IN_PROGRESS: _ClassVar[Status]
    SYNC_WRITE_AMBIGUOUS: _ClassVar[Status]
    SYNC_WRITE_RECOMMIT_IN_PROGRESS: _ClassVar[Status]
    BUCKET_EXISTS: _ClassVar[Status]
    BUCKET_NOT_FOUND: _ClassVar[Status]
    SCOPE_EXISTS: _ClassVar[Status]
    COLLECTION_EXISTS: _ClassVar[Status]
SUCCESS: Status
KEY_ENOENT: Status
KEY_EEXISTS: Status
E2BIG: Status
EINVAL: Status
NOT_STORED: Status
DELTA_BADVAL: Status
NOT_MY_VBUCKET: Status
LOCKED: Status
NOT_LOCKED: Status
AUTH_ERROR: Status
RANGE_ERROR: Status
ROLLBACK: Status
EACCESS: Status
ENOMEM: Status
NOT_SUPPORTED: Status
EINTERNAL: Status
EBUSY: Status
TMPFAIL: Status
UNKNOWN_COLLECTION: Status
UNKNOWN_SCOPE: Status
DURABILITY_INVALID_LEVEL: Status
DURABILITY_IMPOSSIBLE: Status
SYNC_WRITE_IN_PROGRESS: Status
SYNC_WRITE_AMBIGUOUS: Status
SYNC_WRITE_RECOMMIT_IN_PROGRESS: Status
BUCKET_EXISTS: Status
BUCKET_NOT_FOUND: Status
SCOPE_EXISTS: Status
COLLECTION_EXISTS: Status

class RequestHeader(_message.Message):
    __slots__ = ("bucket", "scope", "collection", "key", "vbucket", "timeout_ms", "config_epoch", "config_revision")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    scope: str
    collection: str
    key: bytes
    vbucket: int
    timeout_ms: int
    config_epoch: int
    config_revision: int
    def __init__(self, bucket: _Optional[str] = ..., scope: _Optional[str] = ..., collection: _Optional[str] = ..., key: _Optional[bytes] = ..., vbucket: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class ExistsRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class InsertRequest(_message.Message):
    __slots__ = ("header", "value", "flags", "expiry", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    value: bytes
    flags: int
    expiry: int
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., value: _Optional[bytes] = ..., flags: _Optional[int] = ..., expiry: _Optional[int] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("header", "value", "flags", "expiry", "preserve_expiry", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    value: bytes
    flags: int
    expiry: int
    preserve_expiry: bool
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., value: _Optional[bytes] = ..., flags: _Optional[int] = ..., expiry: _Optional[int] = ..., preserve_expiry: _Optional[bool] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class ReplaceRequest(_message.Message):
    __slots__ = ("header", "value", "flags", "cas", "expiry", "preserve_expiry", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    value: bytes
    flags: int
    cas: int
    expiry: int
    preserve_expiry: bool
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., value: _Optional[bytes] = ..., flags: _Optional[int] = ..., cas: _Optional[int] = ..., expiry: _Optional[int] = ..., preserve_expiry: _Optional[bool] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("header", "cas", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    cas: int
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., cas: _Optional[int] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class TouchRequest(_message.Message):
    __slots__ = ("header", "expiry")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    expiry: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., expiry: _Optional[int] = ...) -> None: ...

class GetAndTouchRequest(_message.Message):
    __slots__ = ("header", "expiry")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    expiry: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., expiry: _Optional[int] = ...) -> None: ...

class GetAndLockRequest(_message.Message):
    __slots__ = ("header", "lock_time_s")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LOCK_TIME_S_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    lock_time_s: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., lock_time_s: _Optional[int] = ...) -> None: ...

class UnlockRequest(_message.Message):
    __slots__ = ("header", "cas")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    cas: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., cas: _Optional[int] = ...) -> None: ...

class IncrementRequest(_message.Message):
    __slots__ = ("header", "delta", "initial", "expiry", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    delta: int
    initial: int
    expiry: int
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., delta: _Optional[int] = ..., initial: _Optional[int] = ..., expiry: _Optional[int] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class DecrementRequest(_message.Message):
    __slots__ = ("header", "delta", "initial", "expiry", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    delta: int
    initial: int
    expiry: int
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., delta: _Optional[int] = ..., initial: _Optional[int] = ..., expiry: _Optional[int] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("header", "value", "cas", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    value: bytes
    cas: int
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., value: _Optional[bytes] = ..., cas: _Optional[int] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class PrependRequest(_message.Message):
    __slots__ = ("header", "value", "cas", "durability_level", "durability_timeout_ms")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    value: bytes
    cas: int
    durability_level: _cluster_pb2.DurabilityLevel
    durability_timeout_ms: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., value: _Optional[bytes] = ..., cas: _Optional[int] = ..., durability_level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ..., durability_timeout_ms: _Optional[int] = ...) -> None: ...

class GetReplicaRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class ObserveSeqnoRequest(_message.Message):
    __slots__ = ("bucket", "vbucket", "vbucket_uuid", "timeout_ms", "config_epoch", "config_revision")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_UUID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    bucket: str
    vbucket: int
    vbucket_uuid: int
    timeout_ms: int
    config_epoch: int
    config_revision: int
    def __init__(self, bucket: _Optional[str] = ..., vbucket: _Optional[int] = ..., vbucket_uuid: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("status", "message", "config", "cas", "value", "flags", "expiry", "vbucket", "is_replica")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    IS_REPLICA_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    config: _cluster_pb2.ClusterConfig
    cas: int
    value: bytes
    flags: int
    expiry: int
    vbucket: int
    is_replica: bool
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., config: _Optional[_Union[_cluster_pb2.ClusterConfig, _Mapping]] = ..., cas: _Optional[int] = ..., value: _Optional[bytes] = ..., flags: _Optional[int] = ..., expiry: _Optional[int] = ..., vbucket: _Optional[int] = ..., is_replica: _Optional[bool] = ...) -> None: ...

class ExistsResponse(_message.Message):
    __slots__ = ("status", "message", "config", "exists", "cas")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    config: _cluster_pb2.ClusterConfig
    exists: bool
    cas: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., config: _Optional[_Union[_cluster_pb2.ClusterConfig, _Mapping]] = ..., exists: _Optional[bool] = ..., cas: _Optional[int] = ...) -> None: ...

class MutationResponse(_message.Message):
    __slots__ = ("status", "message", "config", "cas", "seqno", "vbucket", "vbucket_uuid", "counter")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_UUID_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    config: _cluster_pb2.ClusterConfig
    cas: int
    seqno: int
    vbucket: int
    vbucket_uuid: int
    counter: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., config: _Optional[_Union[_cluster_pb2.ClusterConfig, _Mapping]] = ..., cas: _Optional[int] = ..., seqno: _Optional[int] = ..., vbucket: _Optional[int] = ..., vbucket_uuid: _Optional[int] = ..., counter: _Optional[int] = ...) -> None: ...

class UnlockResponse(_message.Message):
    __slots__ = ("status", "message", "config")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    config: _cluster_pb2.ClusterConfig
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., config: _Optional[_Union[_cluster_pb2.ClusterConfig, _Mapping]] = ...) -> None: ...

class ObserveSeqnoResponse(_message.Message):
    __slots__ = ("status", "message", "config", "vbucket", "vbucket_uuid", "current_seqno", "persisted_seqno", "failed_over", "old_vbucket_uuid", "old_last_seqno")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_UUID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SEQNO_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    FAILED_OVER_FIELD_NUMBER: _ClassVar[int]
    OLD_VBUCKET_UUID_FIELD_NUMBER: _ClassVar[int]
    OLD_LAST_SEQNO_FIELD_NUMBER: _ClassVar[int]
    status: Status
    message: str
    config: _cluster_pb2.ClusterConfig
    vbucket: int
    vbucket_uuid: int
    current_seqno: int
    persisted_seqno: int
    failed_over: bool
    old_vbucket_uuid: int
    old_last_seqno: int
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., config: _Optional[_Union[_cluster_pb2.ClusterConfig, _Mapping]] = ..., vbucket: _Optional[int] = ..., vbucket_uuid: _Optional[int] = ..., current_seqno: _Optional[int] = ..., persisted_seqno: _Optional[int] = ..., failed_over: _Optional[bool] = ..., old_vbucket_uuid: _Optional[int] = ..., old_last_seqno: _Optional[int] = ...) -> None: ...

class OpRequest(_message.Message):
    __slots__ = ("opaque", "get", "exists", "insert", "upsert", "replace", "remove", "touch", "get_and_touch", "get_and_lock", "unlock", "increment", "decrement", "append", "prepend", "get_replica", "observe_seqno")
    OPAQUE_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    INSERT_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    TOUCH_FIELD_NUMBER: _ClassVar[int]
    GET_AND_TOUCH_FIELD_NUMBER: _ClassVar[int]
    GET_AND_LOCK_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    DECREMENT_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    PREPEND_FIELD_NUMBER: _ClassVar[int]
    GET_REPLICA_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_SEQNO_FIELD_NUMBER: _ClassVar[int]
    opaque: int
    get: GetRequest
    exists: ExistsRequest
    insert: InsertRequest
    upsert: UpsertRequest
    replace: ReplaceRequest
    remove: RemoveRequest
    touch: TouchRequest
    get_and_touch: GetAndTouchRequest
    get_and_lock: GetAndLockRequest
    unlock: UnlockRequest
    increment: IncrementRequest
    decrement: DecrementRequest
    append: AppendRequest
    prepend: PrependRequest
    get_replica: GetReplicaRequest
    observe_seqno: ObserveSeqnoRequest
    def __init__(self, opaque: _Optional[int] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., exists: _Optional[_Union[ExistsRequest, _Mapping]] = ..., insert: _Optional[_Union[InsertRequest, _Mapping]] = ..., upsert: _Optional[_Union[UpsertRequest, _Mapping]] = ..., replace: _Optional[_Union[ReplaceRequest, _Mapping]] = ..., remove: _Optional[_Union[RemoveRequest, _Mapping]] = ..., touch: _Optional[_Union[TouchRequest, _Mapping]] = ..., get_and_touch: _Optional[_Union[GetAndTouchRequest, _Mapping]] = ..., get_and_lock: _Optional[_Union[GetAndLockRequest, _Mapping]] = ..., unlock: _Optional[_Union[UnlockRequest, _Mapping]] = ..., increment: _Optional[_Union[IncrementRequest, _Mapping]] = ..., decrement: _Optional[_Union[DecrementRequest, _Mapping]] = ..., append: _Optional[_Union[AppendRequest, _Mapping]] = ..., prepend: _Optional[_Union[PrependRequest, _Mapping]] = ..., get_replica: _Optional[_Union[GetReplicaRequest, _Mapping]] = ..., observe_seqno: _Optional[_Union[ObserveSeqnoRequest, _Mapping]] = ...) -> None: ...

class OpResponse(_message.Message):
    __slots__ = ("opaque", "get", "exists", "insert", "upsert", "replace", "remove", "touch", "get_and_touch", "get_and_lock", "unlock", "increment", "decrement", "append", "prepend", "get_replica", "observe_seqno", "status", "message")
    OPAQUE_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    INSERT_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    TOUCH_FIELD_NUMBER: _ClassVar[int]
    GET_AND_TOUCH_FIELD_NUMBER: _ClassVar[int]
    GET_AND_LOCK_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_FIELD_NUMBER: _ClassVar[int]
    INCREMENT_FIELD_NUMBER: _ClassVar[int]
    DECREMENT_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    PREPEND_FIELD_NUMBER: _ClassVar[int]
    GET_REPLICA_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_SEQNO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    opaque: int
    get: GetResponse
    exists: ExistsResponse
    insert: MutationResponse
    upsert: MutationResponse
    replace: MutationResponse
    remove: MutationResponse
    touch: MutationResponse
    get_and_touch: GetResponse
    get_and_lock: GetResponse
    unlock: UnlockResponse
    increment: MutationResponse
    decrement: MutationResponse
    append: MutationResponse
    prepend: MutationResponse
    get_replica: GetResponse
    observe_seqno: ObserveSeqnoResponse
    status: Status
    message: str
    def __init__(self, opaque: _Optional[int] = ..., get: _Optional[_Union[GetResponse, _Mapping]] = ..., exists: _Optional[_Union[ExistsResponse, _Mapping]] = ..., insert: _Optional[_Union[MutationResponse, _Mapping]] = ..., upsert: _Optional[_Union[MutationResponse, _Mapping]] = ..., replace: _Optional[_Union[MutationResponse, _Mapping]] = ..., remove: _Optional[_Union[MutationResponse, _Mapping]] = ..., touch: _Optional[_Union[MutationResponse, _Mapping]] = ..., get_and_touch: _Optional[_Union[GetResponse, _Mapping]] = ..., get_and_lock: _Optional[_Union[GetResponse, _Mapping]] = ..., unlock: _Optional[_Union[UnlockResponse, _Mapping]] = ..., increment: _Optional[_Union[MutationResponse, _Mapping]] = ..., decrement: _Optional[_Union[MutationResponse, _Mapping]] = ..., append: _Optional[_Union[MutationResponse, _Mapping]] = ..., prepend: _Optional[_Union[MutationResponse, _Mapping]] = ..., get_replica: _Optional[_Union[GetResponse, _Mapping]] = ..., observe_seqno: _Optional[_Union[ObserveSeqnoResponse, _Mapping]] = ..., status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpRequest]
    def __init__(self, ops: _Optional[_Iterable[_Union[OpRequest, _Mapping]]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpResponse]
    def __init__(self, ops: _Optional[_Iterable[_Union[OpResponse, _Mapping]]] = ...) -> None: ...

class OpRequestBatch(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpRequest]
    def __init__(self, ops: _Optional[_Iterable[_Union[OpRequest, _Mapping]]] = ...) -> None: ...

class OpResponseBatch(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[OpResponse]
    def __init__(self, ops: _Optional[_Iterable[_Union[OpResponse, _Mapping]]] = ...) -> None: ...

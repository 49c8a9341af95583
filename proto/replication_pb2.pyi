from durakv.proto import cluster_pb2 as _cluster_pb2
from durakv.proto import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SnapshotFlag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_FLAG_NONE: _ClassVar[SnapshotFlag]
    SNAPSHOT_FLAG_MEMORY: _ClassVar[SnapshotFlag]
    SNAPSHOT_FLAG_DISK: _ClassVar[SnapshotFlag]
    SNAPSHOT_FLAG_CHECKPOINT: _ClassVar[SnapshotFlag]
    SNAPSHOT_FLAG_ACK: _ClassVar[SnapshotFlag]

class StreamEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_END_REASON_OK: _ClassVar[StreamEndReason]
    STREAM_END_REASON_CLOSED: _ClassVar[StreamEndReason]
    STREAM_END_REASON_STATE_CHANGED: _ClassVar[StreamEndReason]
    STREAM_END_REASON_DISCONNECTED: _ClassVar[StreamEndReason]
    STREAM_END_REASON_TOO_SLOW: _ClassVar[StreamEndReason]
    STREAM_END_REASON_BACKFILL_FAILED: _ClassVar[StreamEndReason]
    STREAM_END_REASON_ROLLBACK: _ClassVar[StreamEndReason]
    STREAM_END_REASON_FILTER_EMPTY: _ClassVar[StreamEndReason]
    STREAM_END_REASON_LOST_PRIVILEGES: _ClassVar[StreamEndReason]
SNAPSHOT_FLAG_NONE: SnapshotFlag
SNAPSHOT_FLAG_MEMORY: SnapshotFlag
SNAPSHOT_FLAG_DISK: SnapshotFlag
SNAPSHOT_FLAG_CHECKPOINT: SnapshotFlag
SNAPSHOT_FLAG_ACK: SnapshotFlag
STREAM_END_REASON_OK: StreamEndReason
STREAM_END_REASON_CLOSED: StreamEndReason
STREAM_END_REASON_STATE_CHANGED: StreamEndReason
STREAM_END_REASON_DISCONNECTED: StreamEndReason
STREAM_END_REASON_TOO_SLOW: StreamEndReason
STREAM_END_REASON_BACKFILL_FAILED: StreamEndReason
STREAM_END_REASON_ROLLBACK: StreamEndReason
STREAM_END_REASON_FILTER_EMPTY: StreamEndReason
STREAM_END_REASON_LOST_PRIVILEGES: StreamEndReason

class Open(_message.Message):
    __slots__ = ("consumer_node_id", "bucket", "bucket_uuid", "buffer_bytes", "noop_interval_ms", "config_epoch", "config_revision")
    CONSUMER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    BUCKET_UUID_FIELD_NUMBER: _ClassVar[int]
    BUFFER_BYTES_FIELD_NUMBER: _ClassVar[int]
    NOOP_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    consumer_node_id: str
    bucket: str
    bucket_uuid: str
    buffer_bytes: int
    noop_interval_ms: int
    config_epoch: int
    config_revision: int
    def __init__(self, consumer_node_id: _Optional[str] = ..., bucket: _Optional[str] = ..., bucket_uuid: _Optional[str] = ..., buffer_bytes: _Optional[int] = ..., noop_interval_ms: _Optional[int] = ..., config_epoch: _Optional[int] = ..., config_revision: _Optional[int] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("vbucket", "vbucket_uuid", "start_seqno", "end_seqno", "snapshot_start_seqno", "snapshot_end_seqno")
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    VBUCKET_UUID_FIELD_NUMBER: _ClassVar[int]
    START_SEQNO_FIELD_NUMBER: _ClassVar[int]
    END_SEQNO_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_START_SEQNO_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_SEQNO_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    vbucket_uuid: int
    start_seqno: int
    end_seqno: int
    snapshot_start_seqno: int
    snapshot_end_seqno: int
    def __init__(self, vbucket: _Optional[int] = ..., vbucket_uuid: _Optional[int] = ..., start_seqno: _Optional[int] = ..., end_seqno: _Optional[int] = ..., snapshot_start_seqno: _Optional[int] = ..., snapshot_end_seqno: _Optional[int] = ...) -> None: ...

class CloseStream(_message.Message):
    __slots__ = ("vbucket",)
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    def __init__(self, vbucket: _Optional[int] = ...) -> None: ...

class SeqnoAck(_message.Message):
    __slots__ = ("vbucket", "high_prepared_seqno", "received_seqno", "persisted_seqno")
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    HIGH_PREPARED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    high_prepared_seqno: int
    received_seqno: int
    persisted_seqno: int
    def __init__(self, vbucket: _Optional[int] = ..., high_prepared_seqno: _Optional[int] = ..., received_seqno: _Optional[int] = ..., persisted_seqno: _Optional[int] = ...) -> None: ...

class BufferAck(_message.Message):
    __slots__ = ("bytes",)
    BYTES_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    def __init__(self, bytes: _Optional[int] = ...) -> None: ...

class Noop(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class ReplicaMessage(_message.Message):
    __slots__ = ("open", "stream_request", "close_stream", "seqno_ack", "buffer_ack", "noop")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STREAM_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQNO_ACK_FIELD_NUMBER: _ClassVar[int]
    BUFFER_ACK_FIELD_NUMBER: _ClassVar[int]
    NOOP_FIELD_NUMBER: _ClassVar[int]
    open: Open
    stream_request: StreamRequest
    close_stream: CloseStream
    seqno_ack: SeqnoAck
    buffer_ack: BufferAck
    noop: Noop
    def __init__(self, open: _Optional[_Union[Open, _Mapping]] = ..., stream_request: _Optional[_Union[StreamRequest, _Mapping]] = ..., close_stream: _Optional[_Union[CloseStream, _Mapping]] = ..., seqno_ack: _Optional[_Union[SeqnoAck, _Mapping]] = ..., buffer_ack: _Optional[_Union[BufferAck, _Mapping]] = ..., noop: _Optional[_Union[Noop, _Mapping]] = ...) -> None: ...

class ReplicaMessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ReplicaMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ReplicaMessage, _Mapping]]] = ...) -> None: ...

class OpenResponse(_message.Message):
    __slots__ = ("status", "message", "producer_node_id", "noop_interval_ms")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NOOP_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    status: _kv_pb2.Status
    message: str
    producer_node_id: str
    noop_interval_ms: int
    def __init__(self, status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., producer_node_id: _Optional[str] = ..., noop_interval_ms: _Optional[int] = ...) -> None: ...

class FailoverEntry(_message.Message):
    __slots__ = ("uuid", "seqno")
    UUID_FIELD_NUMBER: _ClassVar[int]
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    uuid: int
    seqno: int
    def __init__(self, uuid: _Optional[int] = ..., seqno: _Optional[int] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("vbucket", "status", "message", "failover_log", "rollback_seqno")
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_LOG_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_SEQNO_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    status: _kv_pb2.Status
    message: str
    failover_log: _containers.RepeatedCompositeFieldContainer[FailoverEntry]
    rollback_seqno: int
    def __init__(self, vbucket: _Optional[int] = ..., status: _Optional[_Union[_kv_pb2.Status, str]] = ..., message: _Optional[str] = ..., failover_log: _Optional[_Iterable[_Union[FailoverEntry, _Mapping]]] = ..., rollback_seqno: _Optional[int] = ...) -> None: ...

class SnapshotMarker(_message.Message):
    __slots__ = ("vbucket", "start_seqno", "end_seqno", "flags", "high_completed_seqno", "high_prepared_seqno")
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    START_SEQNO_FIELD_NUMBER: _ClassVar[int]
    END_SEQNO_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    HIGH_COMPLETED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    HIGH_PREPARED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    start_seqno: int
    end_seqno: int
    flags: int
    high_completed_seqno: int
    high_prepared_seqno: int
    def __init__(self, vbucket: _Optional[int] = ..., start_seqno: _Optional[int] = ..., end_seqno: _Optional[int] = ..., flags: _Optional[int] = ..., high_completed_seqno: _Optional[int] = ..., high_prepared_seqno: _Optional[int] = ...) -> None: ...

class Mutation(_message.Message):
    __slots__ = ("collection_id", "key", "seqno", "rev_seqno", "cas", "flags", "expiry", "value")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    REV_SEQNO_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int
    flags: int
    expiry: int
    value: bytes
    def __init__(self, collection_id: _Optional[int] = ..., key: _Optional[bytes] = ..., seqno: _Optional[int] = ..., rev_seqno: _Optional[int] = ..., cas: _Optional[int] = ..., flags: _Optional[int] = ..., expiry: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class Deletion(_message.Message):
    __slots__ = ("collection_id", "key", "seqno", "rev_seqno", "cas")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    REV_SEQNO_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int
    def __init__(self, collection_id: _Optional[int] = ..., key: _Optional[bytes] = ..., seqno: _Optional[int] = ..., rev_seqno: _Optional[int] = ..., cas: _Optional[int] = ...) -> None: ...

class Expiration(_message.Message):
    __slots__ = ("collection_id", "key", "seqno", "rev_seqno", "cas")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    REV_SEQNO_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int
    def __init__(self, collection_id: _Optional[int] = ..., key: _Optional[bytes] = ..., seqno: _Optional[int] = ..., rev_seqno: _Optional[int] = ..., cas: _Optional[int] = ...) -> None: ...

class Prepare(_message.Message):
    __slots__ = ("collection_id", "key", "seqno", "rev_seqno", "cas", "flags", "expiry", "value", "deleted", "level")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    REV_SEQNO_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int
    flags: int
    expiry: int
    value: bytes
    deleted: bool
    level: _cluster_pb2.DurabilityLevel
    def __init__(self, collection_id: _Optional[int] = ..., key: _Optional[bytes] = ..., seqno: _Optional[int] = ..., rev_seqno: _Optional[int] = ..., cas: _Optional[int] = ..., flags: _Optional[int] = ..., expiry: _Optional[int] = ..., value: _Optional[bytes] = ..., deleted: _Optional[bool] = ..., level: _Optional[_Union[_cluster_pb2.DurabilityLevel, str]] = ...) -> None: ...

class Commit(_message.Message):
    __slots__ = ("collection_id", "key", "prepared_seqno", "commit_seqno")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREPARED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQNO_FIELD_NUMBER: _ClassVar[int]
    collection_id: int
    key: bytes
    prepared_seqno: int
    commit_seqno: int
    def __init__(self, collection_id: _Optional[int] = ..., key: _Optional[bytes] = ..., prepared_seqno: _Optional[int] = ..., commit_seqno: _Optional[int] = ...) -> None: ...

class Abort(_message.Message):
    __slots__ = ("collection_id", "key", "prepared_seqno", "abort_seqno")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREPARED_SEQNO_FIELD_NUMBER: _ClassVar[int]
    ABORT_SEQNO_FIELD_NUMBER: _ClassVar[int]
    collection_id: int
    key: bytes
    prepared_seqno: int
    abort_seqno: int
    def __init__(self, collection_id: _Optional[int] = ..., key: _Optional[bytes] = ..., prepared_seqno: _Optional[int] = ..., abort_seqno: _Optional[int] = ...) -> None: ...

class SeqnoAdvanced(_message.Message):
    __slots__ = ("seqno",)
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    seqno: int
    def __init__(self, seqno: _Optional[int] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("mutation", "deletion", "expiration", "prepare", "commit", "abort", "seqno_advanced")
    MUTATION_FIELD_NUMBER: _ClassVar[int]
    DELETION_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    PREPARE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    SEQNO_ADVANCED_FIELD_NUMBER: _ClassVar[int]
    mutation: Mutation
    deletion: Deletion
    expiration: Expiration
    prepare: Prepare
    commit: Commit
    abort: Abort
    seqno_advanced: SeqnoAdvanced
    def __init__(self, mutation: _Optional[_Union[Mutation, _Mapping]] = ..., deletion: _Optional[_Union[Deletion, _Mapping]] = ..., expiration: _Optional[_Union[Expiration, _Mapping]] = ..., prepare: _Optional[_Union[Prepare, _Mapping]] = ..., commit: _Optional[_Union[Commit, _Mapping]] = ..., abort: _Optional[_Union[Abort, _Mapping]] = ..., seqno_advanced: _Optional[_Union[SeqnoAdvanced, _Mapping]] = ...) -> None: ...

class ItemBatch(_message.Message):
    __slots__ = ("vbucket", "items")
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, vbucket: _Optional[int] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("vbucket", "reason", "message")
    VBUCKET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    vbucket: int
    reason: StreamEndReason
    message: str
    def __init__(self, vbucket: _Optional[int] = ..., reason: _Optional[_Union[StreamEndReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ProducerMessage(_message.Message):
    __slots__ = ("open_response", "stream_response", "snapshot_marker", "item_batch", "stream_end", "noop")
    OPEN_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STREAM_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_MARKER_FIELD_NUMBER: _ClassVar[int]
    ITEM_BATCH_FIELD_NUMBER: _ClassVar[int]
    STREAM_END_FIELD_NUMBER: _ClassVar[int]
    NOOP_FIELD_NUMBER: _ClassVar[int]
    open_response: OpenResponse
    stream_response: StreamResponse
    snapshot_marker: SnapshotMarker
    item_batch: ItemBatch
    stream_end: StreamEnd
    noop: Noop
    def __init__(self, open_response: _Optional[_Union[OpenResponse, _Mapping]] = ..., stream_response: _Optional[_Union[StreamResponse, _Mapping]] = ..., snapshot_marker: _Optional[_Union[SnapshotMarker, _Mapping]] = ..., item_batch: _Optional[_Union[ItemBatch, _Mapping]] = ..., stream_end: _Optional[_Union[StreamEnd, _Mapping]] = ..., noop: _Optional[_Union[Noop, _Mapping]] = ...) -> None: ...

class ProducerMessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ProducerMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ProducerMessage, _Mapping]]] = ...) -> None: ...

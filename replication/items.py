"""The values one vbucket's replication stream carries, shared by the producer and consumer cores.

Plain frozen dataclasses mirroring `proto/replication.proto` field for field (the shell converts
to and from the generated messages; nothing here imports grpc or protobuf), the byte measure
both sides use for flow control, and the conversions from what the engine holds (WAL records,
stored documents) to items. Pure: no I/O, no clock.

Flow control counts `wire_size` of SnapshotMarker and ItemBatch messages only: those are the
ones the producer throttles. StreamResponse, StreamEnd and Noop are control messages, neither
throttled nor counted, so a stream's window balances exactly even when a request is answered
by a rollback or a stream ends. `wire_size` is a fixed, additive estimate at or above the
protobuf size, computed the same way on both sides; it never depends on the encoder.

Errors: `StreamProtocolError` means the peer broke the stream protocol (a message out of
order, a seqno going backwards, an ack of something never sent). Misuse of a core by its own
shell is our bug and is caught by `assert`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from durakv.engine import records
from durakv.engine.document import Document
from durakv.engine.durability import Level, as_level
from durakv.engine.errors import EngineError, Status

# -- limits (bytes; counted with wire_size) ----------------------------------------------------
ITEM_BATCH_BYTES_MAX = 1024 * 1024  # one ItemBatch stops growing here (a single larger item goes alone)
MEMORY_SNAPSHOT_BYTES_MAX = 4 * 1024 * 1024  # a memory snapshot is cut here (a single larger item alone)
BACKFILL_BUFFER_BYTES_MAX = 20 * 1024 * 1024  # backfill items a producer holds unsent (dcp_backfill_byte_limit)
BUFFER_ACK_RATIO = 0.2  # a consumer returns BufferAck once this share of the window is processed
STREAM_BUFFER_BYTES_DEFAULT = 10 * 1024 * 1024  # the window a replica announces by default

# Framing estimates (bytes) of the messages; see wire_size.
_MESSAGE_OVERHEAD = 16
_MARKER_SIZE = 56
_DOC_ITEM_OVERHEAD = 48
_COMPLETION_OVERHEAD = 32
_SEQNO_ADVANCED_SIZE = 12


class StreamError(EngineError):
    """Root of the replication stream cores' errors."""


class StreamProtocolError(StreamError):
    """The peer broke the stream protocol; the stream must be dropped and re-requested."""

    def __init__(self, vbucket: int, reason: str) -> None:
        super().__init__(f"vbucket {vbucket}: {reason}")
        self.vbucket = vbucket
        self.reason = reason


# -- items ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Mutation:
    """A document version (the state after the change)."""

    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int
    flags: int
    expiry: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Deletion:
    """A removal: the document becomes a tombstone."""

    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int


@dataclass(frozen=True, slots=True)
class Expiration:
    """A removal by expiry, decided by the active; replicas apply it, never decide it."""

    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int


@dataclass(frozen=True, slots=True)
class Prepare:
    """A SyncWrite's prepare: the version it would commit, invisible until its Commit."""

    collection_id: int
    key: bytes
    seqno: int
    rev_seqno: int
    cas: int
    flags: int
    expiry: int
    value: bytes
    deleted: bool
    level: Level


@dataclass(frozen=True, slots=True)
class Commit:
    """The prepare at prepared_seqno commits; the document takes commit_seqno."""

    collection_id: int
    key: bytes
    prepared_seqno: int
    commit_seqno: int

    @property
    def seqno(self) -> int:
        return self.commit_seqno


@dataclass(frozen=True, slots=True)
class Abort:
    """The prepare at prepared_seqno is dropped; abort_seqno is consumed."""

    collection_id: int
    key: bytes
    prepared_seqno: int
    abort_seqno: int

    @property
    def seqno(self) -> int:
        return self.abort_seqno


@dataclass(frozen=True, slots=True)
class SeqnoAdvanced:
    """The snapshot reaches `seqno` although no item is sent for it."""

    seqno: int


Item = Mutation | Deletion | Expiration | Prepare | Commit | Abort | SeqnoAdvanced
DOCUMENT_ITEMS = (Mutation, Deletion, Expiration, Prepare)


# -- producer -> replica ----------------------------------------------------------------------
class SnapshotFlag(IntFlag):
    NONE = 0
    MEMORY = 0x01
    DISK = 0x02
    CHECKPOINT = 0x04
    ACK = 0x08


_DISK = int(SnapshotFlag.DISK)


class StreamEndReason(IntEnum):
    OK = 0
    CLOSED = 1
    STATE_CHANGED = 2
    DISCONNECTED = 3
    TOO_SLOW = 4
    BACKFILL_FAILED = 5
    ROLLBACK = 6
    FILTER_EMPTY = 7
    LOST_PRIVILEGES = 8


FailoverLog = tuple[tuple[int, int], ...]  # (uuid, seqno) entries, newest first, as VBucket.failover_log


@dataclass(frozen=True, slots=True)
class StreamResponse:
    vbucket: int
    status: Status
    failover_log: FailoverLog = ()
    rollback_seqno: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotMarker:
    vbucket: int
    start_seqno: int
    end_seqno: int
    flags: SnapshotFlag
    high_completed_seqno: int = 0  # disk snapshots only
    high_prepared_seqno: int = 0  # disk snapshots only

    @property
    def disk(self) -> bool:
        return int(self.flags) & _DISK != 0  # int arithmetic: Flag operators are slow on this path


@dataclass(frozen=True, slots=True)
class ItemBatch:
    vbucket: int
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class StreamEnd:
    vbucket: int
    reason: StreamEndReason
    message: str = ""


ProducerMessage = StreamResponse | SnapshotMarker | ItemBatch | StreamEnd


# -- replica -> producer ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamRequest:
    vbucket: int
    vbucket_uuid: int
    start_seqno: int
    snapshot_start_seqno: int
    snapshot_end_seqno: int
    end_seqno: int = 0  # 0 = never stop (a replica's stream)


@dataclass(frozen=True, slots=True)
class SeqnoAck:
    vbucket: int
    high_prepared_seqno: int
    received_seqno: int
    persisted_seqno: int


@dataclass(frozen=True, slots=True)
class BufferAck:
    bytes: int


@dataclass(frozen=True, slots=True)
class CloseStream:
    vbucket: int


# -- measures ---------------------------------------------------------------------------------
def item_size(item: Item) -> int:
    """Flow-control bytes of one item inside an ItemBatch."""
    match item:
        case Mutation() | Prepare():
            return _DOC_ITEM_OVERHEAD + len(item.key) + len(item.value)
        case Deletion() | Expiration():
            return _DOC_ITEM_OVERHEAD + len(item.key)
        case Commit() | Abort():
            return _COMPLETION_OVERHEAD + len(item.key)
        case SeqnoAdvanced():
            return _SEQNO_ADVANCED_SIZE
    raise TypeError(f"not an item: {item!r}")


def wire_size(message: ProducerMessage) -> int:
    """Flow-control bytes of a producer message: 0 for the uncounted control messages."""
    match message:
        case SnapshotMarker():
            return _MARKER_SIZE
        case ItemBatch():
            return _MESSAGE_OVERHEAD + sum(item_size(i) for i in message.items)
        case StreamResponse() | StreamEnd():
            return 0
    raise TypeError(f"not a producer message: {message!r}")


BATCH_OVERHEAD = _MESSAGE_OVERHEAD  # wire_size(ItemBatch(v, items)) == BATCH_OVERHEAD + sum(item_size)


# -- from the engine --------------------------------------------------------------------------
def document_item(collection_id: int, key: bytes, doc: Document, *, expired: bool = False) -> Item:
    """A committed document version as a Mutation, or a Deletion/Expiration if it is a tombstone."""
    if not doc.deleted:
        return Mutation(collection_id, key, doc.seqno, doc.rev, doc.cas, doc.flags, doc.expiry, doc.value)
    kind = Expiration if expired else Deletion
    return kind(collection_id, key, doc.seqno, doc.rev, doc.cas)


def prepare_item(collection_id: int, key: bytes, doc: Document, level: int) -> Prepare:
    """A pending prepare (as the WAL or the store's `prepares` database holds it)."""
    return Prepare(
        collection_id, key, doc.seqno, doc.rev, doc.cas, doc.flags, doc.expiry, doc.value, doc.deleted, as_level(level)
    )


def item_from_record(record: records.Record) -> Item | None:
    """The item a WAL record replicates as, or None for records that are not vbucket changes."""
    kind = record.kind
    if kind in (records.Kind.MUTATION, records.Kind.DELETION, records.Kind.EXPIRATION):
        assert record.document is not None
        return document_item(record.collection_id, record.key, record.document, expired=kind is records.Kind.EXPIRATION)
    if kind is records.Kind.PREPARE:
        assert record.document is not None
        return prepare_item(record.collection_id, record.key, record.document, record.level)
    if kind is records.Kind.COMMIT:
        return Commit(record.collection_id, record.key, record.prepare_seqno, record.seqno)
    if kind is records.Kind.ABORT:
        return Abort(record.collection_id, record.key, record.prepare_seqno, record.seqno)
    return None


def document_of(item: Mutation | Deletion | Expiration | Prepare) -> Document:
    """The engine Document an item carries (a tombstone for removals)."""
    match item:
        case Mutation():
            return Document(item.cas, item.seqno, item.rev_seqno, item.expiry, item.flags, False, item.value)
        case Prepare():
            return Document(item.cas, item.seqno, item.rev_seqno, item.expiry, item.flags, item.deleted, item.value)
        case Deletion() | Expiration():
            return Document(item.cas, item.seqno, item.rev_seqno, 0, 0, True, b"")
    raise TypeError(f"not a document item: {item!r}")

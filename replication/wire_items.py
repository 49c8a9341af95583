"""Conversions between the stream cores' values (`replication.items`) and the generated messages.

Owns: the one mapping, field for field, of every item, producer message and replica
message of `proto/replication.proto` to and from the frozen dataclasses the pure cores use
(`items.py`), plus the few messages only the shells see (Open, OpenResponse, Noop), and
`coalesce_acks`, which drops SeqnoAcks a later one makes redundant before a batch of replica
messages is sent, and `batches`, which packs messages into the envelopes of a StreamBatched
call. Pure: no I/O, no clock, no decisions -- the cores validate the protocol,
this module only the encoding.

Direction matters for errors. Encoding our own values cannot fail (an unknown value type
is our bug: TypeError). Decoding is the peer's input: a message with no oneof set, an enum
number this build does not know, or a field out of range raises `WireError` (a
`StreamProtocolError`), and the shell drops the call; nothing half-decoded is returned.

Invariant (the round-trip tests): `x == from_proto(to_proto(x))` for every value, and the
encoders never set a field the decoders ignore.
"""

from __future__ import annotations

from collections.abc import Sequence

from durakv.engine.durability import Level, as_level
from durakv.engine.errors import Status
from durakv.proto import replication_pb2 as pb

from .items import (
    Abort,
    BufferAck,
    CloseStream,
    Commit,
    Deletion,
    Expiration,
    Item,
    ItemBatch,
    Mutation,
    Prepare,
    ProducerMessage,
    SeqnoAck,
    SeqnoAdvanced,
    SnapshotFlag,
    SnapshotMarker,
    StreamEnd,
    StreamEndReason,
    StreamProtocolError,
    StreamRequest,
    StreamResponse,
)

NO_VBUCKET = -1  # the vbucket a WireError names when the message had none
BATCH_BYTES_MAX = 1024 * 1024  # one StreamBatched message holds at most this much (or one larger message)
BATCH_MESSAGES_MAX = 1024  # ... and at most this many messages

ReplicaMessage = StreamRequest | SeqnoAck | BufferAck | CloseStream


class WireError(StreamProtocolError):
    """A message from the peer does not decode into a stream value (missing oneof, unknown enum)."""


def _status(vbucket: int, number: int) -> Status:
    try:
        return Status(number)
    except ValueError:
        raise WireError(vbucket, f"unknown status {number}") from None


def _level(vbucket: int, number: int) -> Level:
    try:
        return as_level(number)
    except ValueError:
        raise WireError(vbucket, f"unknown durability level {number}") from None


_FLAG_BITS = SnapshotFlag.MEMORY | SnapshotFlag.DISK | SnapshotFlag.CHECKPOINT | SnapshotFlag.ACK
_FLAGS = {n: SnapshotFlag(n) for n in range(int(_FLAG_BITS) + 1)}  # every combination of known bits


def _known_flags(vbucket: int, flags: int) -> SnapshotFlag:
    known = _FLAGS.get(flags)
    if known is None:
        raise WireError(vbucket, f"unknown snapshot flags {flags:#x}")
    return known


# -- items ------------------------------------------------------------------------------------
def item_to_proto(item: Item) -> pb.Item:
    match item:
        case Mutation():
            return pb.Item(
                mutation=pb.Mutation(
                    collection_id=item.collection_id,
                    key=item.key,
                    seqno=item.seqno,
                    rev_seqno=item.rev_seqno,
                    cas=item.cas,
                    flags=item.flags,
                    expiry=item.expiry,
                    value=item.value,
                )
            )
        case Deletion():
            return pb.Item(
                deletion=pb.Deletion(
                    collection_id=item.collection_id,
                    key=item.key,
                    seqno=item.seqno,
                    rev_seqno=item.rev_seqno,
                    cas=item.cas,
                )
            )
        case Expiration():
            return pb.Item(
                expiration=pb.Expiration(
                    collection_id=item.collection_id,
                    key=item.key,
                    seqno=item.seqno,
                    rev_seqno=item.rev_seqno,
                    cas=item.cas,
                )
            )
        case Prepare():
            return pb.Item(
                prepare=pb.Prepare(
                    collection_id=item.collection_id,
                    key=item.key,
                    seqno=item.seqno,
                    rev_seqno=item.rev_seqno,
                    cas=item.cas,
                    flags=item.flags,
                    expiry=item.expiry,
                    value=item.value,
                    deleted=item.deleted,
                    level=int(item.level),
                )
            )
        case Commit():
            return pb.Item(
                commit=pb.Commit(
                    collection_id=item.collection_id,
                    key=item.key,
                    prepared_seqno=item.prepared_seqno,
                    commit_seqno=item.commit_seqno,
                )
            )
        case Abort():
            return pb.Item(
                abort=pb.Abort(
                    collection_id=item.collection_id,
                    key=item.key,
                    prepared_seqno=item.prepared_seqno,
                    abort_seqno=item.abort_seqno,
                )
            )
        case SeqnoAdvanced():
            return pb.Item(seqno_advanced=pb.SeqnoAdvanced(seqno=item.seqno))
    raise TypeError(f"not an item: {item!r}")


def item_from_proto(message: pb.Item, vbucket: int = NO_VBUCKET) -> Item:
    which = message.WhichOneof("item")
    match which:
        case "mutation":
            m = message.mutation
            return Mutation(m.collection_id, m.key, m.seqno, m.rev_seqno, m.cas, m.flags, m.expiry, m.value)
        case "deletion":
            d = message.deletion
            return Deletion(d.collection_id, d.key, d.seqno, d.rev_seqno, d.cas)
        case "expiration":
            e = message.expiration
            return Expiration(e.collection_id, e.key, e.seqno, e.rev_seqno, e.cas)
        case "prepare":
            p = message.prepare
            level = _level(vbucket, p.level)
            return Prepare(
                p.collection_id, p.key, p.seqno, p.rev_seqno, p.cas, p.flags, p.expiry, p.value, p.deleted, level
            )
        case "commit":
            c = message.commit
            return Commit(c.collection_id, c.key, c.prepared_seqno, c.commit_seqno)
        case "abort":
            a = message.abort
            return Abort(a.collection_id, a.key, a.prepared_seqno, a.abort_seqno)
        case "seqno_advanced":
            return SeqnoAdvanced(message.seqno_advanced.seqno)
    raise WireError(vbucket, "an item with nothing set")


# -- producer -> replica --------------------------------------------------------------------
def producer_to_proto(message: ProducerMessage) -> pb.ProducerMessage:
    match message:
        case StreamResponse():
            response = pb.StreamResponse(
                vbucket=message.vbucket,
                status=int(message.status),
                message=message.message,
                rollback_seqno=message.rollback_seqno,
            )
            response.failover_log.extend(pb.FailoverEntry(uuid=u, seqno=s) for u, s in message.failover_log)
            return pb.ProducerMessage(stream_response=response)
        case SnapshotMarker():
            return pb.ProducerMessage(
                snapshot_marker=pb.SnapshotMarker(
                    vbucket=message.vbucket,
                    start_seqno=message.start_seqno,
                    end_seqno=message.end_seqno,
                    flags=int(message.flags),
                    high_completed_seqno=message.high_completed_seqno,
                    high_prepared_seqno=message.high_prepared_seqno,
                )
            )
        case ItemBatch():
            batch = pb.ItemBatch(vbucket=message.vbucket)
            batch.items.extend(item_to_proto(i) for i in message.items)
            return pb.ProducerMessage(item_batch=batch)
        case StreamEnd():
            return pb.ProducerMessage(
                stream_end=pb.StreamEnd(vbucket=message.vbucket, reason=int(message.reason), message=message.message)
            )
    raise TypeError(f"not a producer message: {message!r}")


def producer_from_proto(message: pb.ProducerMessage) -> ProducerMessage:
    """A per-vbucket producer message (OpenResponse and Noop are the shell's: see `which`)."""
    which = message.WhichOneof("message")
    match which:
        case "stream_response":
            r = message.stream_response
            log = tuple((e.uuid, e.seqno) for e in r.failover_log)
            return StreamResponse(r.vbucket, _status(r.vbucket, r.status), log, r.rollback_seqno, r.message)
        case "snapshot_marker":
            m = message.snapshot_marker
            flags = _known_flags(m.vbucket, m.flags)
            return SnapshotMarker(
                m.vbucket, m.start_seqno, m.end_seqno, flags, m.high_completed_seqno, m.high_prepared_seqno
            )
        case "item_batch":
            b = message.item_batch
            return ItemBatch(b.vbucket, tuple(item_from_proto(i, b.vbucket) for i in b.items))
        case "stream_end":
            e = message.stream_end
            try:
                reason = StreamEndReason(e.reason)
            except ValueError:
                raise WireError(e.vbucket, f"unknown stream end reason {e.reason}") from None
            return StreamEnd(e.vbucket, reason, e.message)
    raise WireError(NO_VBUCKET, f"not a per-vbucket producer message: {which}")


# -- replica -> producer ----------------------------------------------------------------------
def replica_to_proto(message: ReplicaMessage) -> pb.ReplicaMessage:
    match message:
        case StreamRequest():
            return pb.ReplicaMessage(
                stream_request=pb.StreamRequest(
                    vbucket=message.vbucket,
                    vbucket_uuid=message.vbucket_uuid,
                    start_seqno=message.start_seqno,
                    end_seqno=message.end_seqno,
                    snapshot_start_seqno=message.snapshot_start_seqno,
                    snapshot_end_seqno=message.snapshot_end_seqno,
                )
            )
        case SeqnoAck():
            return pb.ReplicaMessage(
                seqno_ack=pb.SeqnoAck(
                    vbucket=message.vbucket,
                    high_prepared_seqno=message.high_prepared_seqno,
                    received_seqno=message.received_seqno,
                    persisted_seqno=message.persisted_seqno,
                )
            )
        case BufferAck():
            return pb.ReplicaMessage(buffer_ack=pb.BufferAck(bytes=message.bytes))
        case CloseStream():
            return pb.ReplicaMessage(close_stream=pb.CloseStream(vbucket=message.vbucket))
    raise TypeError(f"not a replica message: {message!r}")


def replica_from_proto(message: pb.ReplicaMessage) -> ReplicaMessage:
    """A per-stream replica message (Open and Noop are the shell's: see `which`)."""
    which = message.WhichOneof("message")
    match which:
        case "stream_request":
            r = message.stream_request
            return StreamRequest(
                r.vbucket, r.vbucket_uuid, r.start_seqno, r.snapshot_start_seqno, r.snapshot_end_seqno, r.end_seqno
            )
        case "seqno_ack":
            a = message.seqno_ack
            return SeqnoAck(a.vbucket, a.high_prepared_seqno, a.received_seqno, a.persisted_seqno)
        case "buffer_ack":
            return BufferAck(message.buffer_ack.bytes)
        case "close_stream":
            return CloseStream(message.close_stream.vbucket)
    raise WireError(NO_VBUCKET, f"not a per-stream replica message: {which}")


def which(message: pb.ProducerMessage | pb.ReplicaMessage) -> str | None:
    """The name of the oneof field a message carries (None: nothing set)."""
    return message.WhichOneof("message")


def noop_replica(sequence: int) -> pb.ReplicaMessage:
    return pb.ReplicaMessage(noop=pb.Noop(sequence=sequence))


def noop_producer(sequence: int) -> pb.ProducerMessage:
    return pb.ProducerMessage(noop=pb.Noop(sequence=sequence))


def coalesce_acks(batch: Sequence[pb.ReplicaMessage]) -> list[pb.ReplicaMessage]:
    """Drop a SeqnoAck that a later one of the same vbucket, on the same stream, makes redundant.

    Acks only go forward on a stream, so the later one says everything the earlier one did; a
    StreamRequest or CloseStream in between starts or ends a stream, and the acks around it stay.
    """
    later: set[int] = set()
    kept: list[pb.ReplicaMessage] = []
    for message in reversed(batch):
        kind = message.WhichOneof("message")
        if kind == "seqno_ack":
            vbid = message.seqno_ack.vbucket
            if vbid in later:
                continue
            later.add(vbid)
        elif kind == "stream_request":
            later.discard(message.stream_request.vbucket)
        elif kind == "close_stream":
            later.discard(message.close_stream.vbucket)
        kept.append(message)
    kept.reverse()
    return kept


def batches(
    messages: Sequence[pb.ProducerMessage] | Sequence[pb.ReplicaMessage],
    *,
    max_bytes: int = BATCH_BYTES_MAX,
    max_messages: int = BATCH_MESSAGES_MAX,
) -> list[pb.ProducerMessageBatch] | list[pb.ReplicaMessageBatch]:
    """`messages`, in order, in as few StreamBatched envelopes as the caps allow (none for none).

    A batch holds at most `max_messages` messages and `max_bytes` of them, except that a
    single message larger than `max_bytes` goes alone. All messages are of one direction.
    """
    if not messages:
        return []
    envelope = pb.ProducerMessageBatch if isinstance(messages[0], pb.ProducerMessage) else pb.ReplicaMessageBatch
    out = []
    chunk: list = []
    size = 0
    for message in messages:
        n = message.ByteSize()
        if chunk and (len(chunk) >= max_messages or size + n > max_bytes):
            out.append(envelope(messages=chunk))
            chunk, size = [], 0
        chunk.append(message)
        size += n
    out.append(envelope(messages=chunk))
    return out

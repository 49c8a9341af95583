"""replication.wire_items: every stream value survives a trip through its protobuf bytes, the
decoders refuse what the peer cannot have meant (nothing set, unknown enum numbers), and
coalescing drops only the SeqnoAcks a later one on the same stream makes redundant."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durakv.engine.durability import Level
from durakv.engine.errors import Status
from durakv.proto import replication_pb2 as pb
from durakv.replication import wire_items as wi
from durakv.replication.items import (
    Abort,
    BufferAck,
    CloseStream,
    Commit,
    Deletion,
    Expiration,
    ItemBatch,
    Mutation,
    Prepare,
    SeqnoAck,
    SeqnoAdvanced,
    SnapshotFlag,
    SnapshotMarker,
    StreamEnd,
    StreamEndReason,
    StreamProtocolError,
    StreamRequest,
    StreamResponse,
    wire_size,
)

U16 = st.integers(0, 2**16 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
KEYS = st.binary(min_size=1, max_size=250)
VALUES = st.binary(max_size=300)
LEVELS = st.sampled_from(list(Level))

ITEMS = st.one_of(
    st.builds(Mutation, U32, KEYS, U64, U64, U64, U32, U32, VALUES),
    st.builds(Deletion, U32, KEYS, U64, U64, U64),
    st.builds(Expiration, U32, KEYS, U64, U64, U64),
    st.builds(Prepare, U32, KEYS, U64, U64, U64, U32, U32, VALUES, st.booleans(), LEVELS),
    st.builds(Commit, U32, KEYS, U64, U64),
    st.builds(Abort, U32, KEYS, U64, U64),
    st.builds(SeqnoAdvanced, U64),
)
FLAGS = st.sampled_from(
    [
        SnapshotFlag.MEMORY,
        SnapshotFlag.DISK | SnapshotFlag.ACK,
        SnapshotFlag.MEMORY | SnapshotFlag.ACK | SnapshotFlag.CHECKPOINT,
        SnapshotFlag.NONE,
    ]
)
FAILOVER_LOGS = st.lists(st.tuples(U64, U64), max_size=5).map(tuple)
PRODUCER_MESSAGES = st.one_of(
    st.builds(StreamResponse, U16, st.sampled_from(list(Status)), FAILOVER_LOGS, U64, st.text(max_size=30)),
    st.builds(SnapshotMarker, U16, U64, U64, FLAGS, U64, U64),
    st.builds(ItemBatch, U16, st.lists(ITEMS, max_size=6).map(tuple)),
    st.builds(StreamEnd, U16, st.sampled_from(list(StreamEndReason)), st.text(max_size=30)),
)
REPLICA_MESSAGES = st.one_of(
    st.builds(StreamRequest, U16, U64, U64, U64, U64, U64),
    st.builds(SeqnoAck, U16, U64, U64, U64),
    st.builds(BufferAck, U64),
    st.builds(CloseStream, U16),
)


def over_the_wire(message):
    """Serialize and parse again, as the call does."""
    return type(message).FromString(message.SerializeToString())


# -- round trips ------------------------------------------------------------------------------
@given(ITEMS)
def test_item_round_trip_equal(item):
    assert wi.item_from_proto(over_the_wire(wi.item_to_proto(item))) == item


@given(PRODUCER_MESSAGES)
def test_producer_message_round_trip_equal(message):
    back = wi.producer_from_proto(over_the_wire(wi.producer_to_proto(message)))
    assert back == message
    assert type(back.status if isinstance(back, StreamResponse) else back) is type(
        message.status if isinstance(message, StreamResponse) else message
    )


@given(REPLICA_MESSAGES)
def test_replica_message_round_trip_equal(message):
    assert wi.replica_from_proto(over_the_wire(wi.replica_to_proto(message))) == message


def test_item_round_trip_keeps_enum_types():
    prepare = Prepare(8, b"k", 5, 4, 3, 2, 1, b"v", True, Level.PERSIST_TO_MAJORITY)
    back = wi.item_from_proto(over_the_wire(wi.item_to_proto(prepare)))
    assert isinstance(back.level, Level) and back.level is Level.PERSIST_TO_MAJORITY
    end = wi.producer_from_proto(over_the_wire(wi.producer_to_proto(StreamEnd(3, StreamEndReason.STATE_CHANGED))))
    assert end.reason is StreamEndReason.STATE_CHANGED
    marker = SnapshotMarker(3, 1, 9, SnapshotFlag.DISK | SnapshotFlag.ACK, 4, 5)
    back_marker = wi.producer_from_proto(over_the_wire(wi.producer_to_proto(marker)))
    assert isinstance(back_marker.flags, SnapshotFlag) and back_marker.disk


def test_stream_response_failover_log_keeps_order():
    log = ((0xAAAA, 90), (0xBBBB, 40), (0xCCCC, 0))
    response = StreamResponse(7, Status.SUCCESS, log)
    back = wi.producer_from_proto(over_the_wire(wi.producer_to_proto(response)))
    assert back.failover_log == log


def test_encoders_set_every_field_of_the_message():
    """A field the encoder forgets would round-trip as its default; all-non-default values catch it."""
    prepare = Prepare(1, b"k", 2, 3, 4, 5, 6, b"v", True, Level.MAJORITY)
    fields = wi.item_to_proto(prepare).prepare.ListFields()
    assert {f.name for f, _ in fields} == set(pb.Prepare.DESCRIPTOR.fields_by_name)
    mutation = Mutation(1, b"k", 2, 3, 4, 5, 6, b"v")
    fields = wi.item_to_proto(mutation).mutation.ListFields()
    assert {f.name for f, _ in fields} == set(pb.Mutation.DESCRIPTOR.fields_by_name)
    request = wi.replica_to_proto(StreamRequest(1, 2, 3, 4, 5, 6)).stream_request
    assert {f.name for f, _ in request.ListFields()} == set(pb.StreamRequest.DESCRIPTOR.fields_by_name)
    marker = wi.producer_to_proto(SnapshotMarker(1, 2, 3, SnapshotFlag.MEMORY, 4, 5)).snapshot_marker
    assert {f.name for f, _ in marker.ListFields()} == set(pb.SnapshotMarker.DESCRIPTOR.fields_by_name)


# Seqnos below 2**40 and collection ids below 2**24: a vbucket writing a million changes a second
# reaches 2**40 after 12 days of it. Past those ranges the estimate can fall a few bytes short of
# the varints (a flow-control estimate only; the window is not a hard memory bound).
SEQNOS = st.integers(0, 2**40)
CIDS = st.integers(0, 2**24)
REALISTIC_ITEMS = st.one_of(
    st.builds(Mutation, CIDS, KEYS, SEQNOS, SEQNOS, U64, U32, U32, VALUES),
    st.builds(Deletion, CIDS, KEYS, SEQNOS, SEQNOS, U64),
    st.builds(Expiration, CIDS, KEYS, SEQNOS, SEQNOS, U64),
    st.builds(Prepare, CIDS, KEYS, SEQNOS, SEQNOS, U64, U32, U32, VALUES, st.booleans(), LEVELS),
    st.builds(Commit, CIDS, KEYS, SEQNOS, SEQNOS),
    st.builds(Abort, CIDS, KEYS, SEQNOS, SEQNOS),
    st.builds(SeqnoAdvanced, SEQNOS),
)


@given(
    st.one_of(
        st.builds(SnapshotMarker, U16, U64, U64, FLAGS, U64, U64),
        st.builds(ItemBatch, U16, st.lists(REALISTIC_ITEMS, max_size=6).map(tuple)),
    )
)
def test_wire_size_at_least_the_encoded_size(message):
    """Flow control counts items.wire_size; it must not undercount what actually travels."""
    assert wire_size(message) >= wi.producer_to_proto(message).ByteSize()


# -- refusals -----------------------------------------------------------------------------------
def test_item_from_proto_nothing_set_raises_wire_error():
    with pytest.raises(wi.WireError) as caught:
        wi.item_from_proto(pb.Item(), vbucket=4)
    assert caught.value.vbucket == 4
    assert isinstance(caught.value, StreamProtocolError)


def test_producer_from_proto_unknown_status_raises_wire_error():
    message = pb.ProducerMessage(stream_response=pb.StreamResponse(vbucket=2, status=0x7777))
    with pytest.raises(wi.WireError) as caught:
        wi.producer_from_proto(message)
    assert caught.value.vbucket == 2


def test_producer_from_proto_unknown_end_reason_raises_wire_error():
    message = pb.ProducerMessage(stream_end=pb.StreamEnd(vbucket=2, reason=99))
    with pytest.raises(wi.WireError):
        wi.producer_from_proto(message)


def test_producer_from_proto_unknown_snapshot_flag_raises_wire_error():
    message = pb.ProducerMessage(snapshot_marker=pb.SnapshotMarker(vbucket=2, start_seqno=1, end_seqno=1, flags=0x40))
    with pytest.raises(wi.WireError):
        wi.producer_from_proto(message)


def test_item_from_proto_unknown_level_raises_wire_error():
    message = pb.Item(prepare=pb.Prepare(key=b"k", seqno=1, level=9))
    with pytest.raises(wi.WireError):
        wi.item_from_proto(message, vbucket=1)


@pytest.mark.parametrize(
    "message",
    [pb.ProducerMessage(), pb.ProducerMessage(noop=pb.Noop(sequence=1)), pb.ProducerMessage(open_response={})],
)
def test_producer_from_proto_shell_messages_raise_wire_error(message):
    with pytest.raises(wi.WireError):
        wi.producer_from_proto(message)


@pytest.mark.parametrize(
    "message",
    [pb.ReplicaMessage(), pb.ReplicaMessage(noop=pb.Noop(sequence=1)), pb.ReplicaMessage(open={})],
)
def test_replica_from_proto_shell_messages_raise_wire_error(message):
    with pytest.raises(wi.WireError):
        wi.replica_from_proto(message)


def test_encoders_refuse_foreign_values():
    with pytest.raises(TypeError):
        wi.item_to_proto(StreamEnd(1, StreamEndReason.OK))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wi.producer_to_proto(SeqnoAck(1, 0, 0, 0))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wi.replica_to_proto(StreamEnd(1, StreamEndReason.OK))  # type: ignore[arg-type]


def test_noops_and_which():
    assert wi.which(wi.noop_replica(7)) == "noop" and wi.noop_replica(7).noop.sequence == 7
    assert wi.which(wi.noop_producer(8)) == "noop" and wi.noop_producer(8).noop.sequence == 8
    assert wi.which(pb.ReplicaMessage()) is None


# -- coalescing acks ----------------------------------------------------------------------------
def ack(vbid: int, hps: int, received: int | None = None) -> pb.ReplicaMessage:
    received = hps if received is None else received
    return wi.replica_to_proto(SeqnoAck(vbid, hps, received, 0))


def request(vbid: int) -> pb.ReplicaMessage:
    return wi.replica_to_proto(StreamRequest(vbid, 1, 0, 0, 0))


def test_coalesce_acks_keeps_the_last_ack_per_vbucket_in_place():
    batch = [ack(1, 1), ack(2, 5), ack(1, 3), wi.replica_to_proto(BufferAck(9)), ack(1, 4)]
    assert wi.coalesce_acks(batch) == [ack(2, 5), wi.replica_to_proto(BufferAck(9)), ack(1, 4)]


def test_coalesce_acks_stream_request_between_keeps_both():
    batch = [ack(1, 7), request(1), ack(1, 2)]
    assert wi.coalesce_acks(batch) == batch
    closed = [ack(3, 7), wi.replica_to_proto(CloseStream(3)), ack(3, 8)]
    assert wi.coalesce_acks(closed) == closed


def test_coalesce_acks_other_vbuckets_request_does_not_split():
    batch = [ack(1, 1), request(2), ack(1, 2)]
    assert wi.coalesce_acks(batch) == [request(2), ack(1, 2)]


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("ack"), st.integers(0, 3)),
            st.tuples(st.just("request"), st.integers(0, 3)),
            st.tuples(st.just("buffer"), st.integers(1, 100)),
        ),
        max_size=30,
    )
)
def test_coalesce_acks_last_ack_of_every_stream_survives(script):
    """Against a naive model: per (vbucket, stream) only the last ack, everything else untouched."""
    batch = []
    for counter, (kind, n) in enumerate(script, start=1):
        if kind == "ack":
            batch.append(ack(n, counter))
        elif kind == "request":
            batch.append(request(n))
        else:
            batch.append(wi.replica_to_proto(BufferAck(n)))
    out = wi.coalesce_acks(batch)
    # naive: label each ack with its stream generation, keep the last of each label
    labels, generation = [], {}
    for message in batch:
        kind = message.WhichOneof("message")
        if kind == "stream_request":
            generation[message.stream_request.vbucket] = generation.get(message.stream_request.vbucket, 0) + 1
        labels.append(
            (message.seqno_ack.vbucket, generation.get(message.seqno_ack.vbucket, 0)) if kind == "seqno_ack" else None
        )
    last = {label: i for i, label in enumerate(labels) if label is not None}
    expected = [m for i, (m, label) in enumerate(zip(batch, labels, strict=True)) if label is None or last[label] == i]
    assert out == expected


def test_batches_keep_order_within_the_caps():
    messages = [wi.noop_producer(i) for i in range(1, 11)]  # all of one size
    assert wi.batches([]) == []
    assert wi.batches(messages) == [pb.ProducerMessageBatch(messages=messages)]
    by_count = wi.batches(messages, max_messages=4)
    assert [len(b.messages) for b in by_count] == [4, 4, 2]
    assert [m for b in by_count for m in b.messages] == messages
    size = messages[0].ByteSize()
    by_bytes = wi.batches(messages, max_bytes=3 * size)
    assert [len(b.messages) for b in by_bytes] == [3, 3, 3, 1]
    assert [m for b in by_bytes for m in b.messages] == messages


def test_batches_send_an_oversized_message_alone_and_know_the_direction():
    big = wi.replica_to_proto(BufferAck(1))
    acks = [ack(1, 1), big, ack(2, 2)]
    out = wi.batches(acks, max_bytes=1)
    assert all(isinstance(b, pb.ReplicaMessageBatch) for b in out)
    assert [list(b.messages) for b in out] == [[m] for m in acks]

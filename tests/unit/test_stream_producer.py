"""replication.stream_producer: snapshots from memory and from the store, flow control, acks, ends."""

from __future__ import annotations

import pytest

from durakv.engine import records
from durakv.engine.document import Document
from durakv.engine.durability import Level
from durakv.engine.errors import Status
from durakv.replication.items import (
    BATCH_OVERHEAD,
    Abort,
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
    document_of,
    item_from_record,
    item_size,
    wire_size,
)
from durakv.replication.stream_producer import ProducerState, StreamProducer, open_stream

VB = 9
UUID = 0x1234


def mut(seqno: int, size: int = 0, key: bytes | None = None) -> Mutation:
    return Mutation(0, key or b"k%d" % seqno, seqno, seqno, seqno, 0, 0, b"v" * size)


def prep(seqno: int, key: bytes = b"p") -> Prepare:
    return Prepare(0, key, seqno, seqno, seqno, 0, 0, b"x", False, Level.MAJORITY)


def producer(start=0, memory_start=1, window=0, **limits) -> StreamProducer:
    return StreamProducer(VB, start_seqno=start, memory_start=memory_start, buffer_bytes=window, **limits)


def drain(p: StreamProducer, max_bytes: int = 1 << 30) -> list:
    return p.next_batch(max_bytes)


def items_of(messages) -> list:
    return [i for m in messages if isinstance(m, ItemBatch) for i in m.items]


def markers_of(messages) -> list[SnapshotMarker]:
    return [m for m in messages if isinstance(m, SnapshotMarker)]


# -- opening -------------------------------------------------------------------------------------
def test_producer_open_resume_answers_success_with_the_failover_log():
    log = ((UUID, 0),)
    response, p = open_stream(
        StreamRequest(VB, 0, 0, 0, 0), failover_log=log, high_seqno=5, purge_seqno=0, memory_start=1, buffer_bytes=0
    )
    assert response.status is Status.SUCCESS and response.failover_log == log and p is not None
    assert p.state is ProducerState.IN_MEMORY


def test_producer_open_rollback_answers_rollback_seqno_and_no_producer():
    response, p = open_stream(
        StreamRequest(VB, 0xBAD, 5, 5, 5),
        failover_log=((UUID, 0),),
        high_seqno=9,
        purge_seqno=0,
        memory_start=1,
        buffer_bytes=0,
    )
    assert (response.status, response.rollback_seqno, p) == (Status.ROLLBACK, 0, None)


def test_producer_open_bad_range_answers_range_error():
    response, p = open_stream(
        StreamRequest(VB, UUID, 5, 6, 9),
        failover_log=((UUID, 0),),
        high_seqno=9,
        purge_seqno=0,
        memory_start=1,
        buffer_bytes=0,
    )
    assert (response.status, p) == (Status.RANGE_ERROR, None)


# -- memory snapshots --------------------------------------------------------------------------------
def test_producer_memory_first_marker_starts_at_request_start_then_tiles():
    p = producer(start=2, memory_start=1)
    for s in range(1, 6):
        p.on_item(mut(s))  # the window replay: 1 and 2 are already at the replica
    first = drain(p)
    assert markers_of(first) == [SnapshotMarker(VB, 2, 5, SnapshotFlag.MEMORY)]
    assert [i.seqno for i in items_of(first)] == [3, 4, 5]
    p.on_item(mut(6))
    p.on_item(prep(7))
    second = drain(p)
    assert markers_of(second) == [SnapshotMarker(VB, 6, 7, SnapshotFlag.MEMORY | SnapshotFlag.ACK)]
    assert p.sent_seqno == 7


def test_producer_memory_snapshot_cut_at_its_byte_limit():
    size = item_size(mut(1, 10))
    p = producer(memory_snapshot_bytes_max=2 * size)
    for s in range(1, 6):
        p.on_item(mut(s, 10))
    assert [(m.start_seqno, m.end_seqno) for m in markers_of(drain(p))] == [(0, 2), (3, 4), (5, 5)]


def test_producer_memory_snapshot_limit_plus_one_byte_takes_one_more_item():
    size = item_size(mut(1, 10))
    p = producer(memory_snapshot_bytes_max=2 * size - 1)
    for s in range(1, 4):
        p.on_item(mut(s, 10))
    assert [(m.start_seqno, m.end_seqno) for m in markers_of(drain(p))] == [(0, 1), (2, 2), (3, 3)]


def test_producer_item_batches_split_at_their_limit_and_never_span_snapshots():
    size = item_size(mut(1, 10))
    p = producer(item_batch_bytes_max=BATCH_OVERHEAD + 2 * size, memory_snapshot_bytes_max=3 * size)
    for s in range(1, 7):
        p.on_item(mut(s, 10))
    messages = drain(p)
    shape = [
        (type(m).__name__, [i.seqno for i in m.items] if isinstance(m, ItemBatch) else m.end_seqno) for m in messages
    ]
    assert shape == [
        ("SnapshotMarker", 3),
        ("ItemBatch", [1, 2]),
        ("ItemBatch", [3]),
        ("SnapshotMarker", 6),
        ("ItemBatch", [4, 5]),
        ("ItemBatch", [6]),
    ]


def test_producer_on_item_backwards_is_a_bug():
    p = producer()
    p.on_item(mut(2))
    with pytest.raises(AssertionError):
        p.on_item(mut(2))


# -- flow control ----------------------------------------------------------------------------------
def test_producer_window_full_sends_nothing_until_buffer_ack():
    size = item_size(mut(1, 50))
    marker = wire_size(SnapshotMarker(VB, 0, 0, SnapshotFlag.MEMORY))
    window = marker + BATCH_OVERHEAD + 2 * size  # exactly marker + two items
    p = producer(window=window)
    for s in range(1, 5):
        p.on_item(mut(s, 50))
    first = drain(p)
    assert [i.seqno for i in items_of(first)] == [1, 2] and p.bytes_in_flight == window
    assert drain(p) == []
    p.buffer_ack(size)
    second = drain(p)
    assert [i.seqno for i in items_of(second)] == [3]  # one item, then the window is reached again
    assert p.bytes_in_flight == window + BATCH_OVERHEAD


def test_producer_window_one_byte_short_overshoots_by_one_item_only():
    size = item_size(mut(1, 50))
    marker = wire_size(SnapshotMarker(VB, 0, 0, SnapshotFlag.MEMORY))
    window = marker + BATCH_OVERHEAD + 2 * size + 1  # limit + 1: room for a third item to start
    p = producer(window=window)
    for s in range(1, 6):
        p.on_item(mut(s, 50))
    assert [i.seqno for i in items_of(drain(p))] == [1, 2, 3]
    assert window < p.bytes_in_flight < window + size


def test_producer_oversized_item_goes_alone_below_the_window():
    p = producer(window=100)
    p.on_item(mut(1, 5000))
    p.on_item(mut(2))
    messages = drain(p)
    assert [i.seqno for i in items_of(messages)] == [1] and p.bytes_in_flight > 5000
    p.buffer_ack(p.bytes_in_flight)
    assert [i.seqno for i in items_of(drain(p))] == [2]


def test_producer_max_bytes_bounds_one_call_like_the_window():
    p = producer()
    for s in range(1, 11):
        p.on_item(mut(s, 100))
    messages = p.next_batch(1)
    assert markers_of(messages) and items_of(messages) == []  # the marker alone reaches 1 byte
    assert len(items_of(p.next_batch(2 * item_size(mut(1, 100))))) == 2


def test_producer_buffer_ack_beyond_in_flight_is_a_peer_error():
    p = producer(window=1000)
    p.on_item(mut(1))
    drain(p)
    with pytest.raises(StreamProtocolError):
        p.buffer_ack(p.bytes_in_flight + 1)


# -- backfill ------------------------------------------------------------------------------------------
def test_producer_behind_memory_backfills_then_switches_to_memory():
    p = producer(start=2, memory_start=8)
    for s in range(8, 11):
        p.on_item(mut(s))
    assert p.state is ProducerState.BACKFILL_NEEDED and p.backfill_from == 3
    assert drain(p) == []
    assert p.backfill_begin(8, high_completed_seqno=4, high_prepared_seqno=5, purge_seqno=1)
    assert p.state is ProducerState.BACKFILLING
    p.backfill_item(mut(4, key=b"a"))
    p.backfill_item(mut(6, key=b"b"))
    first = drain(p)
    assert markers_of(first) == [SnapshotMarker(VB, 2, 8, SnapshotFlag.DISK | SnapshotFlag.ACK, 4, 5)]
    assert [i.seqno for i in items_of(first)] == [4, 6]
    p.backfill_end()  # the store holds nothing newer than 6 up to 8: the snapshot still reaches 8
    second = drain(p)
    assert items_of(second)[0] == SeqnoAdvanced(8)
    assert markers_of(second) == [SnapshotMarker(VB, 9, 10, SnapshotFlag.MEMORY)]
    assert [i.seqno for i in items_of(second)[1:]] == [9, 10]  # the queued 8 was covered by the store


def test_producer_falls_behind_finishes_the_open_snapshot_then_backfills():
    size = item_size(mut(1))
    p = producer(memory_snapshot_bytes_max=2 * size, item_batch_bytes_max=size)
    for s in range(1, 7):
        p.on_item(mut(s))
    first = p.next_batch(wire_size(SnapshotMarker(VB, 0, 0, SnapshotFlag.MEMORY)) + 1)
    assert [i.seqno for i in items_of(first)] == [1]  # snapshot [0, 2] is open
    p.set_memory_start(6)  # the window let go of 3..5 before they were sent
    rest = drain(p)
    assert [i.seqno for i in items_of(rest)] == [2] and p.state is ProducerState.BACKFILL_NEEDED
    assert p.backfill_from == 3


def test_producer_backfill_below_purge_seqno_ends_stream_with_rollback():
    p = producer(start=2, memory_start=8)
    assert not p.backfill_begin(8, high_completed_seqno=0, high_prepared_seqno=0, purge_seqno=3)
    assert p.state is ProducerState.CLOSED
    assert drain(p) == [StreamEnd(VB, StreamEndReason.ROLLBACK, "backfill below the purge seqno")]


def test_producer_backfill_from_nothing_ignores_the_purge_seqno():
    p = producer(start=0, memory_start=8)
    assert p.backfill_begin(8, high_completed_seqno=0, high_prepared_seqno=0, purge_seqno=7)


def test_producer_backfill_room_shrinks_and_recovers_as_items_go():
    size = item_size(mut(1))
    p = producer(start=0, memory_start=9, backfill_buffer_bytes_max=2 * size)
    p.backfill_begin(8, high_completed_seqno=0, high_prepared_seqno=0, purge_seqno=0)
    p.backfill_item(mut(1))
    p.backfill_item(mut(2))
    assert p.backfill_room_bytes == 0
    drain(p)
    assert p.backfill_room_bytes == 2 * size


# -- acks and ends ------------------------------------------------------------------------------------
def sent_producer() -> StreamProducer:
    p = producer()
    for s in range(1, 4):
        p.on_item(mut(s))
    p.on_item(Commit(0, b"x", 2, 4))
    drain(p)
    return p


def test_producer_seqno_ack_recorded():
    p = sent_producer()
    p.seqno_ack(SeqnoAck(VB, 2, 4, 3))
    assert p.acked == SeqnoAck(VB, 2, 4, 3)


@pytest.mark.parametrize(
    "ack",
    [
        SeqnoAck(VB, 1, 5, 1),  # received beyond what was sent
        SeqnoAck(VB, 4, 3, 1),  # HPS above received
        SeqnoAck(VB, 1, 3, 4),  # persisted above received
        SeqnoAck(VB + 1, 1, 3, 1),  # another vbucket
    ],
)
def test_producer_seqno_ack_impossible_is_a_peer_error(ack):
    with pytest.raises(StreamProtocolError):
        sent_producer().seqno_ack(ack)


def test_producer_seqno_ack_backwards_is_a_peer_error():
    p = sent_producer()
    p.seqno_ack(SeqnoAck(VB, 2, 4, 3))
    with pytest.raises(StreamProtocolError):
        p.seqno_ack(SeqnoAck(VB, 2, 4, 2))


def test_producer_close_sends_stream_end_once_then_nothing():
    p = sent_producer()
    p.close()
    p.on_item(Deletion(0, b"k", 5, 5, 5))
    assert drain(p) == [StreamEnd(VB, StreamEndReason.CLOSED)]
    assert drain(p) == [] and p.state is ProducerState.CLOSED


def test_producer_end_seqno_ends_after_the_snapshot_holding_it():
    p = StreamProducer(VB, start_seqno=0, memory_start=1, buffer_bytes=0, end_seqno=2)
    for s in range(1, 4):
        p.on_item(mut(s))
    messages = drain(p)
    assert messages[-1] == StreamEnd(VB, StreamEndReason.OK) and items_of(messages)[-1].seqno == 3


# -- items from what the engine holds -------------------------------------------------------------------
def test_items_from_wal_records_round_trip_through_the_record_codec():
    doc = Document(cas=77, seqno=5, rev=2, expiry=9, flags=3, deleted=False, value=b"val")
    tomb = Document(cas=78, seqno=6, rev=3, expiry=0, flags=0, deleted=True, value=b"")
    cases = [
        (
            records.Kind.MUTATION,
            records.encode_document_record(VB, 8, b"k", doc.encode()),
            Mutation(8, b"k", 5, 2, 77, 3, 9, b"val"),
        ),
        (
            records.Kind.DELETION,
            records.encode_document_record(VB, 8, b"k", tomb.encode()),
            Deletion(8, b"k", 6, 3, 78),
        ),
        (
            records.Kind.EXPIRATION,
            records.encode_document_record(VB, 8, b"k", tomb.encode()),
            Expiration(8, b"k", 6, 3, 78),
        ),
        (
            records.Kind.PREPARE,
            records.encode_prepare(VB, 8, b"k", 3, doc.encode()),
            Prepare(8, b"k", 5, 2, 77, 3, 9, b"val", False, Level.PERSIST_TO_MAJORITY),
        ),
        (records.Kind.COMMIT, records.encode_completion(VB, 8, b"k", 5, 7), Commit(8, b"k", 5, 7)),
        (records.Kind.ABORT, records.encode_completion(VB, 8, b"k", 5, 7), Abort(8, b"k", 5, 7)),
    ]
    for kind, payload, expected in cases:
        item = item_from_record(records.decode(kind, payload))
        assert item == expected
        if kind in (records.Kind.MUTATION, records.Kind.PREPARE):
            assert document_of(item) == doc
        elif kind in (records.Kind.DELETION, records.Kind.EXPIRATION):
            assert document_of(item) == tomb
    assert item_from_record(records.decode(records.Kind.MANIFEST, records.encode_meta(0, b"{}"))) is None

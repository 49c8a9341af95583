"""replication.stream_consumer: requests, whole-snapshot apply, rollback, restore, acks, peer errors."""

from __future__ import annotations

import pytest

from durakv.engine.document import store_key
from durakv.engine.durability import Level
from durakv.engine.durability import Prepare as TrackedPrepare
from durakv.engine.errors import Status
from durakv.replication import stream_consumer as sc
from durakv.replication.items import (
    Abort,
    BufferAck,
    Commit,
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
    item_size,
    wire_size,
)
from durakv.replication.stream_consumer import ConsumerState, ReplicaState, StreamConsumer

VB = 4
LOG = ((0xC0, 6), (0xA0, 0))
MEMORY, DISK = SnapshotFlag.MEMORY, SnapshotFlag.DISK | SnapshotFlag.ACK


def mut(seqno: int, key: bytes | None = None, size: int = 0) -> Mutation:
    return Mutation(0, key or b"k%d" % seqno, seqno, seqno, seqno, 0, 0, b"v" * size)


def prep(seqno: int, key: bytes = b"p", level: Level = Level.MAJORITY) -> Prepare:
    return Prepare(0, key, seqno, seqno, seqno, 0, 0, b"x", False, level)


def skey(key: bytes) -> bytes:
    return store_key(VB, 0, key)


def marker(start: int, end: int, flags=MEMORY, hcs: int = 0) -> SnapshotMarker:
    return SnapshotMarker(VB, start, end, flags, hcs, 0)


def batch(*items) -> ItemBatch:
    return ItemBatch(VB, tuple(items))


def streaming(state: ReplicaState = ReplicaState(), window: int = 0, **kwargs) -> StreamConsumer:
    c = StreamConsumer(VB, state=state, buffer_bytes=window, **kwargs)
    c.stream_request()
    c.on_message(StreamResponse(VB, Status.SUCCESS, LOG))
    return c


def of(actions, kind) -> list:
    return [a for a in actions if isinstance(a, kind)]


def feed(c: StreamConsumer, *messages) -> list:
    actions = []
    for m in messages:
        actions += c.on_message(m)
    return actions


# -- requests and responses ----------------------------------------------------------------------
def test_consumer_fresh_request_says_it_has_nothing():
    c = StreamConsumer(VB, buffer_bytes=0)
    assert c.stream_request() == StreamRequest(VB, 0, 0, 0, 0)
    assert c.state is ConsumerState.REQUESTED


def test_consumer_request_resumes_from_the_last_complete_snapshot():
    c = StreamConsumer(VB, state=ReplicaState(LOG, 5, 9, persisted_seqno=9), buffer_bytes=0)
    assert c.stream_request() == StreamRequest(VB, 0xC0, 9, 5, 9)


def test_consumer_success_adopts_the_log_and_acks_its_position():
    c = StreamConsumer(VB, state=ReplicaState((), 0, 3, persisted_seqno=3), buffer_bytes=0)
    c.stream_request()
    actions = c.on_message(StreamResponse(VB, Status.SUCCESS, LOG))
    assert actions == [sc.AdoptFailoverLog(VB, LOG), SeqnoAck(VB, 3, 3, 3)]
    assert c.state is ConsumerState.STREAMING


@pytest.mark.parametrize("log", [(), ((0, 0),), ((0xA0, 0), (0xC0, 6))])
def test_consumer_malformed_failover_log_is_a_peer_error(log):
    c = StreamConsumer(VB, buffer_bytes=0)
    c.stream_request()
    with pytest.raises(StreamProtocolError):
        c.on_message(StreamResponse(VB, Status.SUCCESS, log))


def test_consumer_refusal_goes_idle_for_a_later_request():
    c = StreamConsumer(VB, buffer_bytes=0)
    c.stream_request()
    assert c.on_message(StreamResponse(VB, Status.NOT_MY_VBUCKET)) == [sc.StreamRefused(VB, Status.NOT_MY_VBUCKET)]
    assert c.state is ConsumerState.IDLE


def test_consumer_message_before_the_response_is_a_peer_error():
    c = StreamConsumer(VB, buffer_bytes=0)
    c.stream_request()
    with pytest.raises(StreamProtocolError):
        c.on_message(marker(0, 3))


# -- snapshots ---------------------------------------------------------------------------------------
def test_consumer_snapshot_exposed_only_at_its_end():
    c = streaming()
    assert feed(c, marker(0, 3), batch(mut(1), mut(2))) == []
    actions = feed(c, batch(mut(3)))
    assert of(actions, sc.Apply) == [sc.Apply(VB, 0, 3, False, (mut(1), mut(2), mut(3)))]
    assert c.high_seqno == 3


def test_consumer_seqno_advanced_completes_a_disk_snapshot():
    c = streaming()
    actions = feed(c, marker(0, 9, DISK), batch(mut(4), SeqnoAdvanced(9)))
    assert of(actions, sc.Apply) == [sc.Apply(VB, 0, 9, True, (mut(4),))]


def test_consumer_disconnect_mid_snapshot_applies_nothing_and_resumes_from_the_complete_one():
    c = streaming()
    feed(c, marker(0, 2), batch(mut(1), mut(2)), marker(3, 5), batch(mut(3), mut(4)))
    c.disconnected()
    assert c.state is ConsumerState.IDLE
    assert c.stream_request() == StreamRequest(VB, 0xC0, 2, 0, 2)


def test_consumer_items_already_held_are_dropped_not_applied_twice():
    c = streaming(ReplicaState(LOG, 0, 5, persisted_seqno=5))
    actions = feed(c, marker(3, 7), batch(mut(4), mut(5), mut(6), mut(7)))
    assert of(actions, sc.Apply) == [sc.Apply(VB, 3, 7, False, (mut(6), mut(7)))]


def test_consumer_snapshot_held_whole_already_is_ignored():
    c = streaming(ReplicaState(LOG, 0, 5, persisted_seqno=5))
    assert of(feed(c, marker(2, 4), batch(mut(3), mut(4))), sc.Apply) == []
    assert c.high_seqno == 5


@pytest.mark.parametrize(
    "messages",
    [
        [marker(7, 9)],  # starts past high + 1: a gap
        [marker(5, 4)],  # ends before it starts
        [SnapshotMarker(VB, 6, 9, SnapshotFlag.NONE)],  # neither memory nor disk
        [marker(6, 9), marker(6, 10)],  # a marker inside an open snapshot
        [batch(mut(6))],  # items outside a snapshot
        [marker(6, 9), batch(mut(7), mut(7))],  # seqno not increasing
        [marker(6, 9), batch(mut(10))],  # beyond the snapshot end
        [marker(6, 7), batch(mut(6), mut(7), mut(8))],  # a batch spanning two snapshots
        [ItemBatch(VB + 1, (mut(6),))],  # another vbucket
        [marker(6, 7), batch(mut(6), Commit(0, b"p", 3, 7))],  # completes no pending prepare
        [marker(6, 7), batch(prep(6, b"q"), prep(7, b"q"))],  # prepare over a pending one (memory)
        [StreamResponse(VB, Status.SUCCESS, LOG)],  # a response while streaming
    ],
)
def test_consumer_protocol_violation_is_a_peer_error(messages):
    c = streaming(ReplicaState(LOG, 0, 5, persisted_seqno=5))
    with pytest.raises(StreamProtocolError):
        feed(c, *messages)


def test_consumer_invalid_completion_changes_no_durability_state():
    c = streaming(ReplicaState(LOG, 0, 5, prepares=(TrackedPrepare(3, skey(b"p"), Level.MAJORITY),)))
    before = c.replica_state
    with pytest.raises(StreamProtocolError):
        feed(c, marker(6, 8), batch(prep(6, b"a"), Commit(0, b"p", 3, 7), Abort(0, b"zz", 4, 8)))
    assert c.replica_state == before


def test_consumer_memory_snapshot_over_its_limit_is_a_peer_error_and_at_it_is_fine():
    size = item_size(mut(1))
    fine = streaming(memory_snapshot_bytes_max=2 * size)
    assert of(feed(fine, marker(0, 2), batch(mut(1), mut(2))), sc.Apply)
    over = streaming(memory_snapshot_bytes_max=2 * size - 1)
    with pytest.raises(StreamProtocolError):
        feed(over, marker(0, 2), batch(mut(1), mut(2)))
    alone = streaming(memory_snapshot_bytes_max=1)  # one item alone may exceed it
    assert of(feed(alone, marker(0, 1), batch(mut(1, size=100))), sc.Apply)


def test_consumer_stream_end_drops_the_partial_snapshot():
    c = streaming()
    actions = feed(c, marker(0, 3), batch(mut(1)), StreamEnd(VB, StreamEndReason.STATE_CHANGED))
    assert of(actions, sc.StreamEnded) == [sc.StreamEnded(VB, StreamEndReason.STATE_CHANGED)]
    assert not of(actions, sc.Apply) and c.state is ConsumerState.IDLE and c.high_seqno == 0


# -- durability ------------------------------------------------------------------------------------------
def test_consumer_majority_prepare_acked_at_snapshot_end():
    c = streaming()
    actions = feed(c, marker(0, 2), batch(prep(1), mut(2)))
    assert of(actions, SeqnoAck) == [SeqnoAck(VB, 1, 2, 0)]


def test_consumer_persist_to_majority_prepare_acked_once_its_snapshot_is_persisted_whole():
    c = streaming()
    feed(c, marker(0, 3), batch(prep(1, level=Level.PERSIST_TO_MAJORITY), prep(2, b"q"), mut(3)))
    assert c.high_prepared_seqno == 0  # the fence holds the MAJORITY prepare behind it too
    assert c.persisted(1) == []  # the HPS has not moved: nothing for the active's monitor
    assert c.persisted(3) == [SeqnoAck(VB, 2, 3, 3)]


def test_consumer_persisted_lower_or_equal_sends_nothing():
    c = streaming()
    feed(c, marker(0, 3), batch(mut(3)))
    c.persisted(3)
    assert c.persisted(3) == [] and c.persisted(2) == []


def test_consumer_persisted_between_streams_is_acked_when_the_next_starts():
    c = streaming()
    feed(c, marker(0, 3), batch(mut(3)))
    c.disconnected()
    assert c.persisted(3) == []
    c.stream_request()
    assert of(c.on_message(StreamResponse(VB, Status.SUCCESS, LOG)), SeqnoAck) == [SeqnoAck(VB, 0, 3, 3)]


def test_consumer_disk_snapshot_hcs_resolves_held_prepares():
    held = (TrackedPrepare(2, skey(b"a"), Level.MAJORITY), TrackedPrepare(4, skey(b"b"), Level.MAJORITY))
    c = streaming(ReplicaState(LOG, 0, 5, 4, 0, held, 5))
    actions = feed(c, marker(5, 9, DISK, hcs=2), batch(mut(7, b"a"), SeqnoAdvanced(9)))
    (apply,) = of(actions, sc.Apply)
    assert apply.resolved_prepares == ((2, skey(b"a")),) and apply.high_completed_seqno == 2
    assert [p.seqno for p in c.replica_state.prepares] == [4]


def test_consumer_disk_snapshot_newer_prepare_replaces_the_held_one():
    held = (TrackedPrepare(3, skey(b"a"), Level.MAJORITY),)
    c = streaming(ReplicaState(LOG, 0, 5, 3, 0, held, 5))
    (apply,) = of(feed(c, marker(5, 8, DISK), batch(prep(8, b"a"))), sc.Apply)
    assert apply.resolved_prepares == ((3, skey(b"a")),)
    assert [p.seqno for p in c.replica_state.prepares] == [8]


def test_consumer_commit_and_abort_complete_held_prepares():
    c = streaming()
    feed(c, marker(0, 2), batch(prep(1, b"a"), prep(2, b"b")))
    feed(c, marker(3, 4), batch(Commit(0, b"a", 1, 3), Abort(0, b"b", 2, 4)))
    assert c.replica_state.prepares == () and c.replica_state.high_completed_seqno == 2


def test_consumer_acks_never_repeat_on_one_stream():
    c = streaming()
    acks = of(feed(c, marker(0, 1), batch(prep(1))), SeqnoAck)
    acks += of(c.persisted(1), SeqnoAck)
    acks += of(feed(c, marker(2, 3), batch(Commit(0, b"p", 1, 2), prep(3, level=Level.PERSIST_TO_MAJORITY))), SeqnoAck)
    acks += of(c.persisted(3), SeqnoAck)
    assert acks == [SeqnoAck(VB, 1, 1, 0), SeqnoAck(VB, 3, 3, 3)]


def test_consumer_acks_only_when_the_hps_moves():
    c = streaming()
    assert of(feed(c, marker(0, 2), batch(mut(1), mut(2))), SeqnoAck) == []
    assert c.persisted(2) == []
    acks = of(feed(c, marker(3, 3), batch(prep(3))), SeqnoAck)
    assert acks == [SeqnoAck(VB, 3, 3, 2)]
    assert of(feed(c, marker(4, 4), batch(Commit(0, b"p", 3, 4))), SeqnoAck) == []


# -- flow control -------------------------------------------------------------------------------------
def test_consumer_buffer_ack_at_twenty_percent_of_the_window():
    m = marker(0, 1)
    window = 5 * wire_size(m)  # the threshold is exactly one marker's bytes
    c = streaming(window=window)
    assert c.on_message(m) == [BufferAck(wire_size(m))]
    under = streaming(window=window + 5)  # threshold one byte above: not yet
    assert under.on_message(m) == []


def test_consumer_buffer_ack_flushed_at_stream_end():
    c = streaming(window=10_000)
    m = marker(0, 3)
    actions = feed(c, m, StreamEnd(VB, StreamEndReason.TOO_SLOW))
    assert actions == [BufferAck(wire_size(m)), sc.StreamEnded(VB, StreamEndReason.TOO_SLOW)]


def test_consumer_buffer_ack_now_returns_pending_bytes_once():
    c = streaming(window=10_000)
    c.on_message(marker(0, 3))
    assert c.buffer_ack_now() == [BufferAck(wire_size(marker(0, 3)))]
    assert c.buffer_ack_now() == []


# -- rollback and restore ----------------------------------------------------------------------------
def test_consumer_rollback_response_asks_the_shell_then_prunes_the_log():
    c = StreamConsumer(VB, state=ReplicaState(LOG, 9, 9, 9, 0, (), 9), buffer_bytes=0)
    c.stream_request()
    assert c.on_message(StreamResponse(VB, Status.ROLLBACK, rollback_seqno=4)) == [sc.Rollback(VB, 4)]
    assert c.state is ConsumerState.ROLLING_BACK
    c.disconnected()  # a broken call does not cancel a rollback in progress
    assert c.state is ConsumerState.ROLLING_BACK
    assert c.rolled_back(3, prepares=(), high_completed_seqno=0) == [sc.AdoptFailoverLog(VB, ((0xA0, 0),))]
    assert c.stream_request() == StreamRequest(VB, 0xA0, 3, 3, 3)
    assert c.replica_state.persisted_seqno == 3 and c.high_prepared_seqno == 3


def test_consumer_rollback_to_zero_forgets_the_log_and_has_nothing():
    c = StreamConsumer(VB, state=ReplicaState(LOG, 0, 0), buffer_bytes=0)
    c.stream_request()
    c.on_message(StreamResponse(VB, Status.ROLLBACK, rollback_seqno=0))
    assert c.rolled_back(0, prepares=(), high_completed_seqno=0) == [sc.AdoptFailoverLog(VB, ())]
    assert c.stream_request() == StreamRequest(VB, 0, 0, 0, 0)


def test_consumer_rollback_to_its_own_high_seqno_is_a_peer_error():
    c = StreamConsumer(VB, state=ReplicaState(LOG, 9, 9), buffer_bytes=0)
    c.stream_request()
    with pytest.raises(StreamProtocolError):
        c.on_message(StreamResponse(VB, Status.ROLLBACK, rollback_seqno=9))


def test_consumer_restored_after_crash_acks_what_it_persisted():
    held = (TrackedPrepare(4, skey(b"a"), Level.PERSIST_TO_MAJORITY),)
    c = streaming(ReplicaState(LOG, 5, 6, 0, 0, held, 6))
    assert c.high_prepared_seqno == 6  # everything held is persisted: acked as a persisted disk snapshot
    not_persisted = streaming(ReplicaState(LOG, 5, 6, 0, 0, held, 2))
    assert not_persisted.high_prepared_seqno == 0
    assert not_persisted.persisted(6) == [SeqnoAck(VB, 6, 6, 6)]
    # A held prepare still completes normally.
    feed(c, marker(7, 7), batch(Commit(0, b"a", 4, 7)))
    assert c.replica_state.prepares == ()

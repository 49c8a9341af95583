"""The counting rules of observe-based durability (ClientDurability), as a table."""

import pytest

from durakv._backend import KVRequest, KVResponse, ObservedCopy, Op
from durakv._observe import POLL_DEADLINE_S, ObservePoll, nodes_to_persist, replicas_needed, satisfied
from durakv.durability import PersistTo, PersistToExtended, ReplicateTo
from durakv.exceptions import AmbiguousTimeoutException, DurabilityImpossibleException

ACTIVE_PERSISTED = ObservedCopy(True, 1, 10, 10)
ACTIVE_RECEIVED = ObservedCopy(True, 1, 10, 9)
REPLICA_PERSISTED = ObservedCopy(False, 1, 10, 10)
REPLICA_RECEIVED = ObservedCopy(False, 1, 10, 5)
REPLICA_BEHIND = ObservedCopy(False, 1, 9, 9)


@pytest.mark.parametrize(
    ("copies", "replicate_to", "persist_to", "expected"),
    [
        ([ACTIVE_RECEIVED], ReplicateTo.NONE, PersistToExtended.ACTIVE, False),
        ([ACTIVE_PERSISTED], ReplicateTo.NONE, PersistToExtended.ACTIVE, True),
        ([ACTIVE_RECEIVED, REPLICA_PERSISTED], ReplicateTo.NONE, PersistToExtended.ACTIVE, False),
        ([ACTIVE_RECEIVED, REPLICA_PERSISTED], ReplicateTo.NONE, PersistTo.ONE, True),
        ([ACTIVE_PERSISTED, REPLICA_RECEIVED], ReplicateTo.NONE, PersistTo.TWO, False),
        ([ACTIVE_PERSISTED, REPLICA_PERSISTED], ReplicateTo.NONE, PersistTo.TWO, True),
        ([ACTIVE_PERSISTED], ReplicateTo.ONE, PersistTo.NONE, False),  # the active never counts as a replica
        ([ACTIVE_RECEIVED, REPLICA_BEHIND], ReplicateTo.ONE, PersistTo.NONE, False),
        ([ACTIVE_RECEIVED, REPLICA_RECEIVED], ReplicateTo.ONE, PersistTo.NONE, True),
        ([ACTIVE_RECEIVED, REPLICA_RECEIVED, REPLICA_BEHIND], ReplicateTo.TWO, PersistTo.NONE, False),
        ([ACTIVE_PERSISTED, REPLICA_PERSISTED, REPLICA_PERSISTED], ReplicateTo.TWO, PersistTo.THREE, True),
    ],
)
def test_observe_satisfied_table(copies, replicate_to, persist_to, expected):
    assert satisfied(copies, 10, int(replicate_to), int(persist_to)) is expected


@pytest.mark.parametrize(
    ("replicate_to", "persist_to", "replicas"),
    [
        (ReplicateTo.NONE, PersistToExtended.ACTIVE, 0),
        (ReplicateTo.NONE, PersistTo.ONE, 0),
        (ReplicateTo.NONE, PersistTo.TWO, 1),
        (ReplicateTo.ONE, PersistTo.NONE, 1),
        (ReplicateTo.TWO, PersistToExtended.FOUR, 3),
    ],
)
def test_observe_replicas_needed_table(replicate_to, persist_to, replicas):
    assert replicas_needed(int(replicate_to), int(persist_to)) == replicas


def test_observe_persist_counts_nodes_not_replicas():
    assert [nodes_to_persist(int(p)) for p in PersistToExtended] == [0, 1, 1, 2, 3, 4]


# -- the poll: time is a parameter ----------------------------------------------------------------


def poll_for(replicate_to: int, num_replicas: int = 1) -> ObservePoll:
    request = KVRequest(Op.UPSERT, "default", "_default", "_default", b"k")
    request.client_durability = (replicate_to, 0)
    return ObservePoll(request, KVResponse(seqno=10), num_replicas, now=100.0)


def test_observe_poll_backs_off_from_1_ms_to_100_ms_then_times_out_ambiguous_at_5_s():
    poll = poll_for(ReplicateTo.ONE)
    now, pauses = 100.0, []
    with pytest.raises(AmbiguousTimeoutException):
        while True:
            pause = poll.after([ACTIVE_RECEIVED, REPLICA_BEHIND], now)
            pauses.append(pause)
            now += pause
    assert pauses[:8] == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.1]
    assert set(pauses[8:-1]) == {0.1}
    assert now == pytest.approx(100.0 + POLL_DEADLINE_S)  # the last pause ends at the deadline


def test_observe_poll_ends_as_soon_as_the_copies_satisfy_it():
    poll = poll_for(ReplicateTo.ONE)
    assert poll.after([ACTIVE_RECEIVED, REPLICA_BEHIND], 100.0) == 0.001
    assert poll.after([ACTIVE_RECEIVED, REPLICA_RECEIVED], 100.001) is None


def test_observe_poll_needing_more_replicas_than_the_bucket_has_is_impossible_at_once():
    with pytest.raises(DurabilityImpossibleException, match="the write itself was made"):
        poll_for(ReplicateTo.TWO, num_replicas=1)

"""The counting rules of observe-based durability (ClientDurability), as a table."""

import pytest

from durakv._backend import ObservedCopy
from durakv._observe import nodes_to_persist, replicas_needed, satisfied
from durakv.durability import PersistTo, PersistToExtended, ReplicateTo

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

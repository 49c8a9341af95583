"""Edge cases of the durability monitors, one claim per test (names as kv_engine's DM tests)."""

from __future__ import annotations

import pytest

from durakv.engine.durability import (
    ActiveDurabilityMonitor,
    Chain,
    Completion,
    Level,
    Outcome,
    PassiveDurabilityMonitor,
    Prepare,
    UnknownPrepareError,
)
from durakv.engine.errors import EngineError

M = Level.MAJORITY
MPA = Level.MAJORITY_AND_PERSIST_TO_ACTIVE
PTM = Level.PERSIST_TO_MAJORITY
COMMIT, ABORT, UNDECIDED = Outcome.COMMIT, Outcome.ABORT, Outcome.UNDECIDED
T = 100.0  # a deadline far after every `now` used below unless a test says otherwise


def active(*replicas: str | None, **kwargs: int) -> ActiveDurabilityMonitor:
    return ActiveDurabilityMonitor(Chain("a", replicas), **kwargs)


def done(dm: ActiveDurabilityMonitor) -> list[tuple[int, Outcome]]:
    return [(c.seqno, c.outcome) for c in dm.take_completions()]


# -- Chain -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "majority", "possible"),
    [
        ((), 1, True),
        ((None,), 2, False),  # 1 replica, slot empty: a 1-node cluster
        (("b",), 2, True),
        ((None, None), 2, False),
        (("b", None), 2, True),
        ((None, "c"), 2, True),
        (("b", "c"), 2, True),
        ((None, None, None), 3, False),
        (("b", None, "d"), 3, True),  # 3 slots, one empty: every defined node must ack
        (("b", "c", "d"), 3, False),  # 4 defined nodes > SYNC_WRITE_REPLICAS_MAX + 1
    ],
)
def test_chain_majority_and_possibility_table_match_reference(replicas, majority, possible):
    chain = Chain("a", replicas)
    assert chain.majority == majority
    assert chain.durability_possible() is possible
    assert chain.defined_nodes() == ("a", *(r for r in replicas if r is not None))


@pytest.mark.parametrize("replicas", [("a",), ("b", "b"), ("b", "c", "d", "e")])
def test_chain_duplicate_node_or_too_many_slots_raises(replicas):
    with pytest.raises(ValueError):
        Chain("a", replicas)


# -- Active: commits ---------------------------------------------------------------------


def test_active_no_replicas_majority_commits_on_add():
    dm = active()
    dm.add_prepare(1, b"k", M, T, cookie="c1")
    assert dm.take_completions() == [Completion(1, b"k", COMMIT, "c1")]
    assert (dm.high_prepared_seqno, dm.high_completed_seqno, dm.pending_count) == (1, 1, 0)


@pytest.mark.parametrize("level", [MPA, PTM])
def test_active_no_replicas_persist_level_commits_after_local_persist(level):
    dm = active()
    dm.add_prepare(1, b"k", level, T)
    assert done(dm) == [] and dm.high_prepared_seqno == 0
    dm.local_persisted(1)
    assert done(dm) == [(1, COMMIT)]


def test_active_seqno_ack_beyond_pending_commits_all():
    dm = active("b")
    for seqno in (1, 2, 3):
        dm.add_prepare(seqno, b"k%d" % seqno, M, T)
    dm.seqno_ack("b", 1000)
    assert done(dm) == [(1, COMMIT), (2, COMMIT), (3, COMMIT)]
    assert dm.node_hps() == {"a": 3, "b": 1000}


def test_active_seqno_ack_beyond_pending_sparse_seqnos_commits_all():
    dm = active("b")
    for seqno in (1, 3, 5):  # 2 and 4 are plain mutations
        dm.add_prepare(seqno, b"k%d" % seqno, M, T)
    dm.seqno_ack("b", 10)
    assert done(dm) == [(1, COMMIT), (3, COMMIT), (5, COMMIT)]


def test_active_seqno_ack_between_sparse_prepares_commits_prefix():
    dm = active("b")
    for seqno in (1, 3, 5):
        dm.add_prepare(seqno, b"k%d" % seqno, M, T)
    dm.seqno_ack("b", 4)
    assert done(dm) == [(1, COMMIT), (3, COMMIT)]
    assert dm.pending_count == 1


def test_active_ack_below_earlier_ack_ignored():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, T)
    dm.add_prepare(2, b"k2", M, T)
    dm.seqno_ack("b", 1)
    dm.seqno_ack("b", 0)  # a replica that went back (or a reordered message) takes nothing back
    assert dm.node_hps()["b"] == 1
    assert done(dm) == [(1, COMMIT)]


@pytest.mark.parametrize("level", [MPA, PTM])
def test_active_replica_ack_without_active_persist_waits(level):
    dm = active("b")
    dm.add_prepare(1, b"k", level, T)
    dm.seqno_ack("b", 1)  # majority of 2 reached only with the active itself (MB-35190)
    assert done(dm) == []
    dm.local_persisted(1)
    assert done(dm) == [(1, COMMIT)]


def test_active_majority_behind_persist_fence_waits_for_persist():
    dm = active("b")
    dm.add_prepare(1, b"k1", PTM, T)
    dm.add_prepare(2, b"k2", M, T)
    dm.seqno_ack("b", 2)
    assert dm.high_prepared_seqno == 0  # the unpersisted prepare fences the MAJORITY one
    assert done(dm) == []
    dm.local_persisted(1)
    assert dm.high_prepared_seqno == 2
    assert done(dm) == [(1, COMMIT), (2, COMMIT)]


def test_active_mixed_levels_hps_stops_before_first_unpersisted_persist_level():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, T)
    dm.add_prepare(3, b"k3", M, T)
    dm.add_prepare(4, b"k4", MPA, T)
    dm.add_prepare(6, b"k6", M, T)
    dm.add_prepare(7, b"k7", PTM, T)
    dm.add_prepare(8, b"k8", M, T)
    assert dm.high_prepared_seqno == 3
    dm.local_persisted(5)  # covers 4 but not 7: the fence moves to 7
    assert dm.high_prepared_seqno == 6
    dm.seqno_ack("b", 8)
    assert done(dm) == [(1, COMMIT), (3, COMMIT), (4, COMMIT), (6, COMMIT)]
    dm.local_persisted(7)
    assert dm.high_prepared_seqno == 8
    assert done(dm) == [(7, COMMIT), (8, COMMIT)]


def test_active_two_replicas_one_slot_empty_commits_on_active_plus_one():
    dm = active("b", None)
    dm.add_prepare(1, b"k", M, T)
    assert done(dm) == []  # the active alone is 1 of 2
    dm.seqno_ack("b", 1)
    assert done(dm) == [(1, COMMIT)]


def test_active_two_replicas_one_ack_is_enough():
    dm = active("b", "c")
    dm.add_prepare(1, b"k", PTM, T)
    dm.local_persisted(1)
    dm.seqno_ack("c", 1)
    assert done(dm) == [(1, COMMIT)]


def test_active_three_slots_one_empty_needs_every_defined_node():
    dm = active("b", None, "d")
    dm.add_prepare(1, b"k", M, T)
    dm.seqno_ack("b", 1)
    assert done(dm) == []  # 2 of a majority of 3
    dm.seqno_ack("d", 1)
    assert done(dm) == [(1, COMMIT)]


def test_active_one_replica_slot_empty_never_commits():
    dm = active(None)
    dm.add_prepare(1, b"k", M, None)  # a warmed-up prepare: accepted, never aborted
    dm.local_persisted(1)
    dm.process_timeouts(1e12)
    assert done(dm) == [] and dm.pending_count == 1
    dm.set_chain(Chain("a", ("b",)))
    dm.seqno_ack("b", 1)
    assert done(dm) == [(1, COMMIT)]


def test_active_chain_shrinks_to_active_only_commits_pending():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, T)
    dm.add_prepare(2, b"k2", PTM, T)
    dm.set_chain(Chain("a", ()))
    assert done(dm) == [(1, COMMIT)]
    dm.local_persisted(2)
    assert done(dm) == [(2, COMMIT)]


def test_active_chain_change_keeps_acks_of_staying_nodes():
    dm = active("b", "c")
    dm.add_prepare(1, b"k", PTM, T)
    dm.seqno_ack("b", 1)
    dm.set_chain(Chain("a", ("c", "b")))
    dm.local_persisted(1)
    assert done(dm) == [(1, COMMIT)]


def test_active_node_removed_from_chain_forgets_its_ack():
    dm = active("b")
    dm.add_prepare(1, b"k", PTM, T)
    dm.seqno_ack("b", 1)
    dm.set_chain(Chain("a", ("c",)))
    dm.set_chain(Chain("a", ("b",)))  # b is back, maybe rolled back: it must ack again
    dm.local_persisted(1)
    assert done(dm) == [] and dm.node_hps()["b"] == 0
    dm.seqno_ack("b", 1)
    assert done(dm) == [(1, COMMIT)]


def test_active_ack_from_node_before_chain_contains_it_is_replayed():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, T)
    dm.add_prepare(2, b"k2", M, T)
    dm.seqno_ack("c", 1)
    dm.seqno_ack("c", 2)
    dm.seqno_ack("c", 1)  # queued acks keep the highest, like acks of chain members
    assert done(dm) == [] and "c" not in dm.node_hps()
    dm.set_chain(Chain("a", ("c",)))
    assert dm.node_hps() == {"a": 2, "c": 2}
    assert done(dm) == [(1, COMMIT), (2, COMMIT)]


def test_active_queued_ack_consumed_once_in_chain():
    dm = active("b")
    dm.add_prepare(1, b"k1", PTM, T)
    dm.seqno_ack("c", 1)
    dm.set_chain(Chain("a", ("c",)))
    dm.set_chain(Chain("a", ("b",)))  # c leaves: its ack goes with it, not back to the queue
    dm.set_chain(Chain("a", ("c",)))
    dm.local_persisted(1)
    assert done(dm) == []


# -- Active: aborts ----------------------------------------------------------------------


def test_active_chain_change_to_impossible_aborts_only_finite():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, None)  # promoted / warmed up
    dm.add_prepare(2, b"k2", M, T)
    dm.add_prepare(3, b"k3", M, None)
    dm.add_prepare(4, b"k4", PTM, T)
    dm.set_chain(Chain("a", (None,)))
    assert done(dm) == []  # 2 and 4 are aborted but wait behind 1 (completion is in order)
    assert dm.pending_count == 4
    dm.set_chain(Chain("a", ("b",)))
    dm.seqno_ack("b", 3)
    assert done(dm) == [(1, COMMIT), (2, ABORT), (3, COMMIT), (4, ABORT)]


def test_active_chain_change_to_impossible_aborts_front_at_once():
    dm = active("b", "c")
    dm.add_prepare(1, b"k1", M, T)
    dm.add_prepare(2, b"k2", PTM, T)
    dm.set_chain(Chain("a", (None, None)))
    assert done(dm) == [(1, ABORT), (2, ABORT)]
    dm.set_chain(Chain("a", ("b", "c")))  # possible again: nothing left to decide
    dm.seqno_ack("b", 2)
    dm.local_persisted(2)
    assert done(dm) == [] and dm.high_completed_seqno == 2


def test_active_three_replica_chain_is_impossible_aborts_finite():
    dm = active("b", "c")
    dm.add_prepare(1, b"k", M, T)
    dm.set_chain(Chain("a", ("b", "c", "d")))
    assert done(dm) == [(1, ABORT)]


def test_active_timeouts_front_only_stop_at_first_unexpired():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, 10.0)
    dm.add_prepare(2, b"k2", M, 30.0)  # a long timeout ahead...
    dm.add_prepare(3, b"k3", M, 20.0)  # ...delays the abort of a shorter one behind it
    dm.process_timeouts(25.0)
    assert done(dm) == [(1, ABORT)]
    dm.process_timeouts(30.0)  # a deadline equal to now has passed
    assert done(dm) == [(2, ABORT), (3, ABORT)]


def test_active_timeout_behind_infinite_prepare_never_fires():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, None)
    dm.add_prepare(2, b"k2", M, 1.0)
    dm.process_timeouts(1e9)
    assert done(dm) == [] and dm.pending_count == 2
    dm.seqno_ack("b", 1)
    assert done(dm) == [(1, COMMIT)]
    dm.process_timeouts(1e9)
    assert done(dm) == [(2, ABORT)]


def test_active_timeout_of_persist_fence_lets_later_majority_commit():
    dm = active("b")
    dm.add_prepare(1, b"k1", PTM, 10.0)
    dm.add_prepare(2, b"k2", M, 10.0)
    dm.seqno_ack("b", 2)
    dm.process_timeouts(10.0)
    # 1 aborts; without it the active's HPS passes to 2, which is satisfied, so it commits
    # rather than being aborted by the same sweep.
    assert done(dm) == [(1, ABORT), (2, COMMIT)]
    assert dm.high_prepared_seqno == 2


def test_active_no_double_completion_after_commit():
    dm = active("b")
    dm.add_prepare(1, b"k", M, 10.0)
    dm.seqno_ack("b", 1)
    assert done(dm) == [(1, COMMIT)]
    dm.seqno_ack("b", 5)
    dm.process_timeouts(50.0)
    dm.set_chain(Chain("a", (None,)))
    dm.local_persisted(9)
    assert done(dm) == [] and dm.pending_count == 0


def test_active_no_double_completion_after_abort():
    dm = active("b")
    dm.add_prepare(1, b"k", M, None)
    dm.add_prepare(2, b"k2", M, 10.0)
    dm.set_chain(Chain("a", (None,)))  # 2 is aborted, waiting behind 1
    dm.process_timeouts(50.0)  # 1 has no deadline: nothing moves, 2 is not aborted twice
    dm.set_chain(Chain("a", ("b",)))
    dm.seqno_ack("b", 2)  # 2 is satisfied now, but its abort stands
    assert done(dm) == [(1, COMMIT), (2, ABORT)]
    dm.process_timeouts(99.0)
    assert done(dm) == []


# -- Active: hand-out, transition, carried-over prepares ---------------------------------


def test_active_completions_accumulate_in_order_until_taken():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, 5.0)
    dm.add_prepare(2, b"k2", M, T)
    dm.process_timeouts(6.0)
    dm.seqno_ack("b", 2)
    assert dm.high_completed_seqno == 0 and dm.pending_count == 2  # not handed out yet
    assert done(dm) == [(1, ABORT), (2, COMMIT)]
    assert dm.high_completed_seqno == 2 and dm.pending_count == 0


def test_active_abort_all_for_transition_returns_undecided_and_keeps_prepares():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, T, cookie="c1")
    dm.add_prepare(2, b"k2", PTM, T, cookie="c2")
    dm.add_prepare(3, b"k3", M, None)
    dm.seqno_ack("b", 1)  # 1 is decided but the caller has not taken it
    assert dm.abort_all_for_transition() == [
        Completion(1, b"k1", UNDECIDED, "c1"),
        Completion(2, b"k2", UNDECIDED, "c2"),
        Completion(3, b"k3", UNDECIDED, None),
    ]
    assert dm.take_completions() == []
    assert dm.pending_prepares() == (Prepare(1, b"k1", M), Prepare(2, b"k2", PTM), Prepare(3, b"k3", M))
    assert (dm.high_prepared_seqno, dm.high_completed_seqno) == (1, 0)
    with pytest.raises(AssertionError):
        dm.seqno_ack("b", 3)


def test_active_initial_hps_counts_carried_prepares_as_passed():
    # A promoted replica had acked up to 5 (its PERSIST_TO_MAJORITY prepare 4 persisted).
    dm = active("b", high_prepared_seqno=5, high_completed_seqno=2)
    dm.add_prepare(4, b"k4", PTM, None)
    dm.add_prepare(6, b"k6", PTM, None)
    assert dm.high_prepared_seqno == 5
    dm.seqno_ack("b", 6)
    assert done(dm) == [(4, COMMIT)]
    dm.local_persisted(6)
    assert done(dm) == [(6, COMMIT)]
    assert dm.high_completed_seqno == 6


@pytest.mark.parametrize(
    ("seqno", "deadline"),
    [(3, None), (2, T)],  # not after the last prepare; a new prepare at/below the HPS
)
def test_active_prepare_seqno_not_forward_asserts(seqno, deadline):
    dm = active("b", high_prepared_seqno=2)
    dm.add_prepare(3, b"k3", M, None)
    with pytest.raises(AssertionError):
        dm.add_prepare(seqno, b"x", M, deadline)


def test_active_level_none_or_self_ack_asserts():
    dm = active("b")
    with pytest.raises(AssertionError):
        dm.add_prepare(1, b"k", Level.NONE, T)
    with pytest.raises(AssertionError):
        dm.seqno_ack("a", 1)


def test_active_local_persisted_lower_value_ignored():
    dm = active()
    dm.local_persisted(5)
    dm.local_persisted(3)
    dm.add_prepare(6, b"k", PTM, T)
    dm.local_persisted(4)
    assert done(dm) == []
    dm.local_persisted(6)
    assert done(dm) == [(6, COMMIT)]


# -- Passive -------------------------------------------------------------------------------


def test_passive_majority_acked_only_at_snapshot_end():
    pdm = PassiveDurabilityMonitor()
    pdm.add_prepare(1, b"k1", M)
    pdm.add_prepare(2, b"k2", MPA)  # persisting on the active only: received is enough here
    assert pdm.high_prepared_seqno == 0
    pdm.snapshot_end(3)
    assert pdm.high_prepared_seqno == 2


def test_passive_persist_fence_blocks_later_majority():
    pdm = PassiveDurabilityMonitor()
    pdm.add_prepare(1, b"k1", M)
    pdm.add_prepare(2, b"k2", PTM)
    pdm.add_prepare(3, b"k3", M)
    pdm.snapshot_end(3)
    pdm.add_prepare(5, b"k5", M)
    pdm.snapshot_end(5)
    assert pdm.high_prepared_seqno == 1
    pdm.persisted(2)  # the prepare is on disk but its snapshot is not whole: still fenced
    assert pdm.high_prepared_seqno == 1
    pdm.persisted(3)
    assert pdm.high_prepared_seqno == 5


def test_passive_disk_snapshot_acks_only_after_persisted():
    pdm = PassiveDurabilityMonitor()
    pdm.add_prepare(2, b"k2", M)
    pdm.snapshot_end(10, disk=True)
    pdm.add_prepare(11, b"k11", M)
    pdm.snapshot_end(12)  # a memory snapshot after an unpersisted disk one waits for it
    assert pdm.high_prepared_seqno == 0
    pdm.persisted(10)
    assert pdm.high_prepared_seqno == 11
    pdm.persisted(12)
    assert pdm.high_prepared_seqno == 11


def test_passive_disk_snapshot_without_prepares_moves_hps_to_its_end():
    pdm = PassiveDurabilityMonitor()
    pdm.snapshot_end(7, disk=True)
    pdm.persisted(7)
    assert pdm.high_prepared_seqno == 7  # deduplicated prepares inside it are persisted too


def test_passive_completion_does_not_lift_fence():
    pdm = PassiveDurabilityMonitor()
    pdm.add_prepare(1, b"k1", PTM)
    pdm.add_prepare(2, b"k2", M)
    pdm.snapshot_end(2)
    pdm.complete(1)
    assert (pdm.high_prepared_seqno, pdm.high_completed_seqno, pdm.pending_count) == (0, 1, 1)
    pdm.persisted(2)
    assert pdm.high_prepared_seqno == 2


def test_passive_completion_out_of_order_moves_hcs_to_highest():
    pdm = PassiveDurabilityMonitor()
    pdm.add_prepare(1, b"k1", M)
    pdm.add_prepare(2, b"k2", M)
    pdm.snapshot_end(2, disk=True)
    pdm.complete(2)
    pdm.complete(1)
    assert pdm.high_completed_seqno == 2 and pdm.pending_prepares() == ()


@pytest.mark.parametrize("twice", [False, True])
def test_passive_complete_unknown_or_completed_prepare_raises(twice):
    pdm = PassiveDurabilityMonitor()
    pdm.add_prepare(1, b"k1", M)
    pdm.snapshot_end(1)
    if twice:
        pdm.complete(1)
    with pytest.raises(UnknownPrepareError) as info:
        pdm.complete(1 if twice else 9)
    assert isinstance(info.value, EngineError)
    assert info.value.prepare_seqno == (1 if twice else 9)


def test_passive_prepare_in_ended_snapshot_asserts():
    pdm = PassiveDurabilityMonitor()
    pdm.snapshot_end(5)
    with pytest.raises(AssertionError):
        pdm.add_prepare(5, b"k", M)
    with pytest.raises(AssertionError):
        pdm.snapshot_end(5)


def test_passive_promoted_to_active_commits_carried_prepares():
    pdm = PassiveDurabilityMonitor()
    pdm.add_prepare(1, b"k1", M)
    pdm.add_prepare(2, b"k2", PTM)
    pdm.snapshot_end(2)
    pdm.complete(1)
    dm = ActiveDurabilityMonitor(
        Chain("a", ("c",)),
        high_prepared_seqno=pdm.high_prepared_seqno,
        high_completed_seqno=pdm.high_completed_seqno,
    )
    for prepare in pdm.pending_prepares():
        dm.add_prepare(prepare.seqno, prepare.key, prepare.level, None)
    dm.seqno_ack("c", 2)
    assert done(dm) == []  # 2 is not persisted on the new active yet
    dm.local_persisted(2)
    assert done(dm) == [(2, COMMIT)]


def test_passive_seeded_from_active_after_transition_acks_carried_prepares():
    dm = active("b")
    dm.add_prepare(1, b"k1", M, T)
    dm.add_prepare(2, b"k2", PTM, T)
    dm.abort_all_for_transition()
    pdm = PassiveDurabilityMonitor(
        high_prepared_seqno=dm.high_prepared_seqno, high_completed_seqno=dm.high_completed_seqno
    )
    for prepare in dm.pending_prepares():
        pdm.add_prepare(prepare.seqno, prepare.key, prepare.level)
    pdm.snapshot_end(2)
    assert pdm.high_prepared_seqno == 1
    pdm.persisted(2)
    assert pdm.high_prepared_seqno == 2

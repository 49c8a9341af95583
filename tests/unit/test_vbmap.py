"""replication.vbmap: the planner's balance rules (Hypothesis), failover as a table, the views and encodings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durakv.engine.durability import Chain
from durakv.replication import vbmap
from durakv.replication.vbmap import VBucketMapError, failover, failover_preserves_majority, plan_map

NODES = tuple(f"n{i}" for i in range(8))


def spread(counts: dict[str, int], nodes) -> int:
    values = [counts.get(node, 0) for node in nodes]
    return max(values) - min(values)


def C(active, *replicas) -> Chain:  # short: it fills tables
    return Chain(active, replicas)


# -- planning: properties ----------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    num_nodes=st.integers(1, 8),
    num_replicas=st.integers(0, 3),
    num_vbuckets=st.one_of(st.integers(1, 1024), st.sampled_from([1, 7, 64, 128, 1023, 1024])),
)
def test_plan_map_any_shape_is_balanced_and_never_on_own_node(num_nodes, num_replicas, num_vbuckets):
    nodes = NODES[:num_nodes]
    vbm = plan_map(nodes, num_vbuckets, num_replicas)
    filled = min(num_replicas, num_nodes - 1)

    assert len(vbm) == num_vbuckets
    for chain in vbm:
        assert chain is not None and len(chain.replicas) == num_replicas
        assert all(r is not None for r in chain.replicas[:filled])
        assert all(r is None for r in chain.replicas[filled:])  # too few nodes: the rest stay empty
        assert chain.active not in chain.replicas  # never on its active's node
        defined = chain.defined_nodes()
        assert len(set(defined)) == len(defined) and set(defined) <= set(nodes)

    actives = vbmap.active_counts(vbm)
    replicas = vbmap.replica_counts(vbm)
    totals = {node: actives.get(node, 0) + replicas.get(node, 0) for node in nodes}
    assert spread(actives, nodes) <= 1
    assert spread(replicas, nodes) <= 1
    assert spread(totals, nodes) <= 1
    assert sum(replicas.values()) == num_vbuckets * filled
    assert plan_map(list(nodes), num_vbuckets, num_replicas) == vbm  # deterministic


@settings(max_examples=100, deadline=None)
@given(num_nodes=st.integers(3, 8), num_replicas=st.integers(1, 3), data=st.data())
def test_plan_map_full_rounds_spread_each_nodes_replicas_over_all_others(num_nodes, num_replicas, data):
    nodes = NODES[:num_nodes]
    cycle = num_nodes * (num_nodes - 1)  # each node active n-1 times: once per other node
    vbm = plan_map(nodes, cycle * data.draw(st.integers(1, 1024 // cycle)), num_replicas)
    for active in nodes:
        others = [n for n in nodes if n != active]
        first = {n: 0 for n in others}
        anywhere = {n: 0 for n in others}
        for chain in vbm:
            if chain.active == active:
                first[chain.replicas[0]] += 1
                for r in chain.replicas:
                    if r is not None:
                        anywhere[r] += 1
        assert spread(first, others) == 0
        assert spread(anywhere, others) <= 1


@pytest.mark.parametrize("num_nodes", range(1, 9))
def test_plan_map_every_small_shape_is_balanced(num_nodes):
    nodes = NODES[:num_nodes]
    for num_replicas in range(4):
        for num_vbuckets in (*range(1, 65), 128, 1023, 1024):
            vbm = plan_map(nodes, num_vbuckets, num_replicas)
            actives, replicas = vbmap.active_counts(vbm), vbmap.replica_counts(vbm)
            assert spread(actives, nodes) <= 1 and spread(replicas, nodes) <= 1, (num_replicas, num_vbuckets)
            assert all(chain.active not in chain.replicas for chain in vbm)


def test_plan_map_four_nodes_one_replica_golden():
    assert plan_map(("a", "b", "c", "d"), 6, 1) == (
        C("a", "b"),
        C("b", "c"),
        C("c", "d"),
        C("d", "a"),
        C("a", "c"),
        C("b", "d"),
    )


def test_plan_map_one_node_three_replicas_all_slots_empty():
    assert plan_map(["solo"], 3, 3) == (C("solo", None, None, None),) * 3


@pytest.mark.parametrize(
    "nodes, num_vbuckets, num_replicas",
    [
        ((), 64, 1),
        (("a", "a"), 64, 1),
        (("a", ""), 64, 1),
        (("a", 7), 64, 1),
        (("a",), 0, 0),
        (("a",), 1025, 0),
        (("a",), 64, 4),
        (("a",), 64, -1),
        (("a",), 64.0, 1),
        (("a",), True, 1),
    ],
)
def test_plan_map_bad_input_raises_vbucket_map_error(nodes, num_vbuckets, num_replicas):
    with pytest.raises(VBucketMapError):
        plan_map(nodes, num_vbuckets, num_replicas)


# -- failover: the table -------------------------------------------------------------------
# (chain before, positions {node: (hps, high_seqno)} of reachable copies, chain after)
FAILOVER_TABLE = {
    "one_replica_active_failed_replica_promoted": (C("x", "b"), {"b": (5, 9)}, C("b", None)),
    "one_replica_replica_failed_slot_emptied": (C("a", "x"), {}, C("a", None)),
    "one_replica_not_in_chain_unchanged": (C("a", "b"), {}, C("a", "b")),
    "one_replica_active_failed_replica_slot_empty_lost": (C("x", None), {}, None),
    "no_replica_active_failed_lost": (C("x"), {}, None),
    "two_replicas_highest_hps_wins": (C("x", "b", "c"), {"b": (3, 20), "c": (4, 4)}, C("c", "b", None)),
    "two_replicas_hps_tie_high_seqno_wins": (C("x", "b", "c"), {"b": (4, 10), "c": (4, 11)}, C("c", "b", None)),
    "two_replicas_full_tie_first_slot_wins": (C("x", "b", "c"), {"b": (4, 4), "c": (4, 4)}, C("b", "c", None)),
    "two_replicas_unknown_ranks_below_known": (C("x", "b", "c"), {"c": (0, 0)}, C("c", "b", None)),
    "two_replicas_none_known_first_slot": (C("x", "b", "c"), {}, C("b", "c", None)),
    "two_replicas_first_replica_failed_moves_up": (C("a", "x", "c"), {}, C("a", "c", None)),
    "two_replicas_second_replica_failed": (C("a", "b", "x"), {}, C("a", "b", None)),
    "two_replicas_active_failed_one_slot_empty": (C("x", None, "c"), {"c": (1, 1)}, C("c", None, None)),
    "two_replicas_replica_failed_other_slot_empty": (C("a", None, "x"), {}, C("a", None, None)),
    "two_replicas_all_others_empty_lost": (C("x", None, None), {}, None),
    "three_replicas_middle_promoted": (
        C("x", "b", "c", "d"),
        {"b": (1, 1), "c": (9, 9), "d": (2, 2)},
        C("c", "b", "d", None),
    ),
}


@pytest.mark.parametrize("before, positions, after", FAILOVER_TABLE.values(), ids=FAILOVER_TABLE.keys())
def test_failover_table(before, positions, after):
    as_mapping = failover((before,), "x", {0: positions})
    as_sequence = failover((before,), "x", [positions])
    as_function = failover((before,), "x", lambda vb, node: positions.get(node))
    assert as_mapping == as_sequence == as_function == (after,)


def test_failover_lost_vbucket_stays_lost_and_input_is_untouched():
    before = (None, C("x", "b"))
    assert failover(before, "x", None) == (None, C("b", None))
    assert before == (None, C("x", "b"))


@pytest.mark.parametrize("position", [(5, 4), (-1, 3), (1,), (1, 2, 3), ("1", 2), 7, (1.0, 2)])
def test_failover_malformed_position_raises(position):
    with pytest.raises(VBucketMapError):
        failover((C("x", "b", "c"),), "x", {0: {"b": position}})


@settings(max_examples=150, deadline=None)
@given(
    num_nodes=st.integers(1, 8),
    num_replicas=st.integers(0, 3),
    num_vbuckets=st.integers(1, 256),
    failed_index=st.integers(0, 7),
    rnd=st.randoms(use_true_random=False),
)
def test_failover_any_map_promotes_best_reachable_replica(num_nodes, num_replicas, num_vbuckets, failed_index, rnd):
    nodes = NODES[:num_nodes]
    failed = nodes[failed_index % num_nodes]
    before = plan_map(nodes, num_vbuckets, num_replicas)

    def position():  # small ranges so that ties and unreachable copies are common
        if rnd.random() < 0.2:
            return None
        hps = rnd.randint(0, 3)
        return (hps, hps + rnd.randint(0, 2))

    positions = {(vb, node): position() for vb in range(num_vbuckets) for node in nodes}
    after = failover(before, failed, lambda vb, node: positions[(vb, node)])

    assert len(after) == len(before)
    for vb, (old, new) in enumerate(zip(before, after, strict=True)):
        survivors = [r for r in old.replicas if r is not None and r != failed]
        if failed not in old.defined_nodes():
            assert new == old
        elif old.active != failed:
            assert new == Chain(old.active, (*survivors, *(None,) * (num_replicas - len(survivors))))
        elif not survivors:
            assert new is None
        else:
            # Naive oracle: best known position, unknown lowest, ties to the earliest slot.
            def rank(node, vb=vb):
                p = positions[(vb, node)]
                return (0, 0, 0) if p is None else (1, *p)

            best = max(rank(node) for node in survivors)
            expected = next(node for node in survivors if rank(node) == best)
            rest = [node for node in survivors if node != expected]
            assert new == Chain(expected, (*rest, *(None,) * (num_replicas - len(rest))))
        assert new is None or failed not in new.defined_nodes()


def test_failover_tied_positions_spread_promotions_over_survivors():
    nodes = ("a", "b", "c", "d")
    after = failover(plan_map(nodes, 64, 1), "a", None)
    assert vbmap.active_counts(after) == {"b": 22, "c": 21, "d": 21}


@pytest.mark.parametrize(
    "chains, failed, preserved",
    [
        ((C("a", "b"),), {"a"}, True),  # 1 replica: one of two may go
        ((C("a", "b"),), {"a", "b"}, False),
        ((C("a", "b", "c"),), {"c"}, True),  # 2 replicas: one of three may go
        ((C("a", "b", "c"),), {"b", "c"}, False),
        ((C("a", "b", None),), {"b"}, False),  # an empty slot already used the slack
        ((C("a", "b", "c", "d"),), {"a"}, True),
        ((C("a", "b", "c", "d"),), {"a", "b"}, True),
        ((C("a", "b", "c", "d"),), {"a", "b", "c"}, False),
        ((C("a"),), {"a"}, False),
        ((None, C("a", "b")), {"z"}, True),
    ],
)
def test_failover_preserves_majority_table(chains, failed, preserved):
    assert failover_preserves_majority(chains, failed) is preserved


# -- views and encodings -------------------------------------------------------------------
MAP = (C("a", "b", "c"), C("b", "c", None), None, C("c", "a", "b"))


def test_views_count_and_list_per_node():
    assert vbmap.active_counts(MAP) == {"a": 1, "b": 1, "c": 1}
    assert vbmap.replica_counts(MAP) == {"a": 1, "b": 2, "c": 2}
    assert vbmap.node_vbuckets(MAP, "c") == ((3,), (0, 1))
    assert vbmap.node_vbuckets(MAP, "zz") == ((), ())
    assert vbmap.replication_sources(MAP, "c") == {"a": (0,), "b": (1,)}
    assert vbmap.replication_sources(MAP, "b") == {"a": (0,), "c": (3,)}


def test_encode_decode_map_round_trips():
    raw = vbmap.encode_map(MAP)
    assert raw == [["a", "b", "c"], ["b", "c", None], None, ["c", "a", "b"]]
    assert vbmap.decode_map(raw, 4, 2, ["a", "b", "c"]) == MAP


@pytest.mark.parametrize(
    "raw",
    [
        "not a list",
        [["a", "b", "c"]] * 3,  # too few vbuckets
        [["a", "b"]] * 4,  # too few slots
        [["a", "b", "z"]] * 4,  # unknown node
        [["a", "a", None]] * 4,  # a node twice
        [[None, "a", "b"]] * 4,  # no active
        [["a", 1, None]] * 4,
    ],
)
def test_decode_map_bad_input_raises(raw):
    with pytest.raises(VBucketMapError):
        vbmap.decode_map(raw, 4, 2, ["a", "b", "c"])


def test_index_form_uses_server_list_and_minus_one():
    assert vbmap.index_form(MAP, ["c", "b", "a"], 2) == [[2, 1, 0], [1, 0, -1], [-1, -1, -1], [0, 2, 1]]


# -- adding a failed-over node back ---------------------------------------------------------------
def test_add_back_fills_the_first_empty_slot_of_chains_without_the_node():
    before = (
        Chain("a", ("b", None)),  # the node's slot was emptied by the failover
        Chain("b", (None, None)),
        Chain("a", ("c", "b")),  # full: unchanged
        Chain("c", ("n", None)),  # already holds the node: unchanged
        None,  # lost: stays lost
    )
    assert vbmap.add_back(before, "n") == (
        Chain("a", ("b", "n")),
        Chain("b", ("n", None)),
        Chain("a", ("c", "b")),
        Chain("c", ("n", None)),
        None,
    )


@settings(max_examples=100, deadline=None)
@given(nodes=st.integers(2, 6), replicas=st.integers(1, 3), vbuckets=st.integers(1, 64), pick=st.integers(0, 5))
def test_failover_then_add_back_restores_every_copy_count(nodes, replicas, vbuckets, pick):
    names = [f"n{i}" for i in range(nodes)]
    planned = plan_map(names, vbuckets, replicas)
    failed = names[pick % nodes]
    back = vbmap.add_back(failover(planned, failed), failed)
    for old, new in zip(planned, back, strict=True):
        if new is None:  # the failed node held its only copy
            assert old is not None and old.defined_nodes() == (failed,)
            continue
        assert len(new.defined_nodes()) == len(old.defined_nodes())
        assert set(new.defined_nodes()) == set(old.defined_nodes())
        assert new.active != failed  # actives stay where the failover put them

"""Automatic failover decisions (replication/auto_failover.py): when the manager fails a node over by itself."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durakv.replication.auto_failover import AutoFailover, Settings, Verdict

NODES = ("n1", "n2", "n3")
KEEPS = lambda _node: True  # the majority guard holds


def auto(timeout_s: float = 5.0, max_count: int = 1, enabled: bool = True) -> tuple[AutoFailover, Settings]:
    return AutoFailover(), Settings(enabled=enabled, timeout_s=timeout_s, max_count=max_count)


def test_a_node_down_for_the_timeout_is_failed_over():
    a, s = auto()
    a.probe("n2", False, 100.0)
    assert a.decide(104.9, s, 0, NODES, KEEPS).verdict is Verdict.WAITING
    decision = a.decide(105.0, s, 0, NODES, KEEPS)
    assert decision.verdict is Verdict.FAIL_OVER and decision.node == "n2" and "5.0 s" in decision.reason


def test_one_answered_probe_starts_the_wait_over():
    a, s = auto()
    a.probe("n2", False, 100.0)
    a.probe("n2", True, 103.0)
    a.probe("n2", False, 104.0)
    assert a.decide(108.0, s, 0, NODES, KEEPS).node is None
    assert a.decide(109.0, s, 0, NODES, KEEPS).node == "n2"


def test_later_failed_probes_do_not_restart_the_wait():
    a, s = auto()
    for t in (100.0, 101.0, 102.0, 104.0):
        a.probe("n2", False, t)
    assert a.decide(105.0, s, 0, NODES, KEEPS).node == "n2"


def test_two_unreachable_nodes_are_never_failed_over():
    a, s = auto()
    a.probe("n2", False, 100.0)
    a.probe("n3", False, 104.0)  # not down yet, but unreachable: a partition looks the same
    decision = a.decide(200.0, s, 0, ("n1", "n2", "n3", "n4"), KEEPS)
    assert decision.verdict is Verdict.REFUSED and decision.node is None and "several nodes" in decision.reason
    a.probe("n3", True, 201.0)
    assert a.decide(201.0, s, 0, ("n1", "n2", "n3", "n4"), KEEPS).node == "n2"


def test_fewer_than_three_active_nodes_never_fail_over():
    a, s = auto()
    a.probe("n2", False, 100.0)
    decision = a.decide(200.0, s, 0, ("n1", "n2"), KEEPS)
    assert decision.node is None and "3 active nodes" in decision.reason


def test_max_count_then_reset():
    a, s = auto(max_count=1)
    a.probe("n2", False, 100.0)
    assert a.decide(105.0, s, 0, ("n1", "n2", "n3", "n4"), KEEPS).node == "n2"
    # n2 failed over (the configuration counts it); n3 goes down next.
    a.probe("n3", False, 110.0)
    decision = a.decide(120.0, s, 1, ("n1", "n3", "n4"), KEEPS)
    assert decision.node is None and "--reset" in decision.reason
    assert a.decide(120.0, s, 0, ("n1", "n3", "n4"), KEEPS).node == "n3"  # the count reset


def test_the_majority_guard_refuses():
    a, s = auto()
    a.probe("n2", False, 100.0)
    decision = a.decide(105.0, s, 0, NODES, lambda node: node != "n2")
    assert decision.node is None and "majority" in decision.reason


def test_disabled_never_fails_over():
    a, s = auto(enabled=False)
    a.probe("n2", False, 100.0)
    assert a.decide(1e6, s, 0, NODES, KEEPS).node is None


def test_a_node_no_longer_active_is_forgotten():
    a, s = auto()
    a.probe("gone", False, 100.0)
    assert a.decide(200.0, s, 0, NODES, KEEPS).verdict is Verdict.ALL_UP
    assert a.unreachable(200.0) == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0.5},
        {"timeout_s": 3601},
        {"timeout_s": "5"},
        {"timeout_s": True},
        {"max_count": 0},
        {"max_count": 101},
        {"max_count": 1.5},
        {"enabled": "yes"},
    ],
)
def test_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        Settings(**kwargs)


# -- against a naive model ------------------------------------------------------------------------
probes = st.lists(st.tuples(st.sampled_from(("n1", "n2", "n3", "n4")), st.booleans(), st.floats(0, 10)), max_size=30)


def naive(history, now, active, timeout_s, count, max_count, guard):
    """From the whole probe log: the nodes whose probes have all failed since their last success."""
    first_bad: dict[str, float] = {}
    for node, ok, t in history:
        if ok:
            first_bad.pop(node, None)
        elif node not in first_bad:
            first_bad[node] = t
    bad = {n: t for n, t in first_bad.items() if n in active}
    if len(bad) != 1 or len(active) < 3 or count >= max_count:
        return None
    ((node, since),) = bad.items()
    return node if now - since >= timeout_s and guard(node) else None


@settings(max_examples=300, deadline=None)
@given(
    steps=probes,
    active=st.sets(st.sampled_from(("n1", "n2", "n3", "n4")), min_size=1),
    gap=st.floats(0, 10),
    count=st.integers(0, 2),
    guard_refuses=st.sets(st.sampled_from(("n1", "n2", "n3", "n4"))),
)
def test_decisions_match_a_naive_model(steps, active, gap, count, guard_refuses):
    a = AutoFailover()
    history, now = [], 0.0
    for node, ok, dt in steps:
        now += dt
        a.probe(node, ok, now)
        history.append((node, ok, now))
    now += gap
    guard = lambda node: node not in guard_refuses
    expected = naive(history, now, active, 3.0, count, 2, guard)
    assert a.decide(now, Settings(timeout_s=3.0, max_count=2), count, active, guard).node == expected

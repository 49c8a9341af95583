"""`durakv cluster chaos`'s verdict (cli/chaos_check.py): which losses each level's guarantee excuses."""

from __future__ import annotations

from durakv.cli.chaos_check import Fault, Write, judge, loss_allowed

KILL_N1 = Fault("kill", "n1", 5.0, 6.0)


def write(level: str, outcome: str = "acked", started: float = 1.0, active: str = "n1", key: str = "k") -> Write:
    return Write(key, level, outcome, started, active)


def test_persisted_levels_never_excuse_a_loss():
    for level in ("PERSIST_TO_MAJORITY", "MAJORITY_AND_PERSIST_TO_ACTIVE"):
        assert not loss_allowed(write(level), [KILL_N1, Fault("power-loss", "n1", 2.0, 3.0)])


def test_memory_levels_excuse_a_loss_only_after_their_active_crashed():
    for level in ("MAJORITY", "NONE"):
        assert loss_allowed(write(level), [KILL_N1])
        assert not loss_allowed(write(level, active="n2"), [KILL_N1])  # another node crashed
        assert not loss_allowed(write(level, started=7.0), [KILL_N1])  # written after it came back
        assert not loss_allowed(write(level), [Fault("partition", "n1", 5.0, 6.0)])  # nothing lost to a cut


def test_judge_tallies_outcomes_and_names_violations():
    writes = [
        write("PERSIST_TO_MAJORITY", key="a"),
        write("PERSIST_TO_MAJORITY", key="b"),
        write("MAJORITY", key="c"),
        write("NONE", "ambiguous", key="d"),
        write("NONE", "ambiguous", key="e"),
        write("NONE", "failed", key="f"),
    ]
    present = {"a": True, "b": False, "c": False, "d": True, "e": False, "f": False}
    tally, violations = judge(writes, present, [KILL_N1])
    assert tally["PERSIST_TO_MAJORITY"] == {"acked": 2, "lost": 1}
    assert tally["MAJORITY"] == {"acked": 1, "lost": 1}  # excused: n1 was killed
    assert tally["NONE"] == {"ambiguous_applied": 1, "ambiguous_absent": 1, "failed": 1}
    assert [w.key for w in violations] == ["b"]

"""Automatic failover: when the cluster manager fails a node over by itself (DESIGN §6).

A pure object: the manager's prober reports each probe of each active node (`probe`, with
the time as a parameter), and `decide` answers which node to fail over now, if any, and why
(not). It never reads a clock, a socket or the configuration itself; the manager runs the
failover it decides on exactly as `durakv cluster failover` does; `decide` forgets a node
once it is no longer an active node of the configuration.

The rules are Couchbase's (reference §4.6 and §2.7):
- a node is down once every probe of it has failed for `timeout_s` (default 120 s, allowed
  1 s to 3,600 s); one successful probe makes it up again;
- only one node at a time: while two or more nodes are unreachable (down or not yet), none is
  failed over automatically -- a simultaneous failure of several nodes looks like a
  partition of the manager as much as like failed nodes;
- the cluster must have at least 3 active nodes;
- at most `max_count` automatic failovers (default 1, at most 100) until the count is reset
  (`durakv cluster auto-failover --reset`), so that two sequential failovers cannot
  remove both nodes that held a just-committed PERSIST_TO_MAJORITY write;
- only when every chain keeps a durability majority without the node (the
  "preserve durable writes" guard; `ClusterConfig.failover_preserves_majority`).

Must never: fail over a node on its own (the manager does), or decide on a node that is not
an active node of the configuration it is given (a node failed over is forgotten by the next
`decide`, which no longer sees it among the active nodes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

TIMEOUT_S_DEFAULT = 120.0
TIMEOUT_S_MIN, TIMEOUT_S_MAX = 1.0, 3600.0
MAX_COUNT_DEFAULT = 1
MAX_COUNT_MAX = 100
NODES_MIN = 3  # active nodes the cluster needs for any automatic failover


@dataclass(frozen=True, slots=True)
class Settings:
    enabled: bool = True
    timeout_s: float = TIMEOUT_S_DEFAULT
    max_count: int = MAX_COUNT_DEFAULT

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"auto-failover enabled must be true or false, not {self.enabled!r}")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float):
            raise ValueError(f"auto-failover timeout must be a number of seconds, not {self.timeout_s!r}")
        if not TIMEOUT_S_MIN <= self.timeout_s <= TIMEOUT_S_MAX:
            raise ValueError(
                f"auto-failover timeout must be {TIMEOUT_S_MIN:g} to {TIMEOUT_S_MAX:g} s, not {self.timeout_s!r}"
            )
        if isinstance(self.max_count, bool) or not isinstance(self.max_count, int):
            raise ValueError(f"auto-failover max count must be an integer, not {self.max_count!r}")
        if not 1 <= self.max_count <= MAX_COUNT_MAX:
            raise ValueError(f"auto-failover max count must be 1 to {MAX_COUNT_MAX}, not {self.max_count}")
        object.__setattr__(self, "timeout_s", float(self.timeout_s))  # one canonical form


class Verdict(StrEnum):
    ALL_UP = "all_up"  # every active node answers
    WAITING = "waiting"  # one node is unreachable, not yet for the timeout
    FAIL_OVER = "fail_over"  # fail `node` over now
    REFUSED = "refused"  # something is unreachable, and a rule forbids an automatic failover


@dataclass(frozen=True, slots=True)
class Decision:
    """`node`: fail it over now (None: nothing to do); `reason`: why, or why not, for people."""

    verdict: Verdict
    reason: str
    node: str | None = None


def why_not(
    settings: Settings, count: int, active_nodes: Iterable[str], node: str, preserves_majority: Callable[[str], bool]
) -> str | None:
    """The rule that forbids failing `node` over automatically now, whatever the timing; None if none does.

    The configuration's own guard when it applies an automatic failover (a manual change may
    have come between the decision and the failover)."""
    active = set(active_nodes)
    if not settings.enabled:
        return "automatic failover is disabled"
    if node not in active:
        return f"{node} is not an active node"
    if len(active) < NODES_MIN:
        return f"automatic failover needs {NODES_MIN} active nodes"
    if count >= settings.max_count:
        return (
            f"{count} automatic failover(s) were made already "
            f"(max {settings.max_count}; `durakv cluster auto-failover --reset` resets the count)"
        )
    if not preserves_majority(node):
        return "failing it over would leave a chain without a durability majority"
    return None


@dataclass
class AutoFailover:
    """What the manager's probes found: since when each unreachable node has not answered.

    The settings and the count of automatic failovers made are the cluster configuration's
    (`ClusterConfig.auto_failover`, `auto_failover_count`); `decide` is given them."""

    _unreachable_since: dict[str, float] = field(default_factory=dict)

    def probe(self, node_id: str, ok: bool, now: float) -> None:
        """One probe of `node_id` at `now`: answered (`ok`) or not (error, timeout)."""
        if ok:
            self._unreachable_since.pop(node_id, None)
        else:
            self._unreachable_since.setdefault(node_id, now)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what is known of nodes no longer active (failed over, removed)."""
        kept = set(keep)
        for node_id in [n for n in self._unreachable_since if n not in kept]:
            del self._unreachable_since[node_id]

    def unreachable(self, now: float) -> dict[str, float]:
        """node -> seconds it has been unreachable."""
        return {node: now - since for node, since in self._unreachable_since.items()}

    def decide(
        self,
        now: float,
        settings: Settings,
        count: int,
        active_nodes: Iterable[str],
        preserves_majority: Callable[[str], bool],
    ) -> Decision:
        """Which node to fail over at `now`, given the configuration's settings, count of automatic
        failovers made, active nodes and majority guard."""
        active = set(active_nodes)
        self.forget(active)
        if not self._unreachable_since:
            return Decision(Verdict.ALL_UP, "every node answers")
        if not settings.enabled:
            return Decision(Verdict.REFUSED, "automatic failover is disabled")
        if len(self._unreachable_since) > 1:
            nodes = ", ".join(sorted(self._unreachable_since))
            reason = f"several nodes are unreachable ({nodes}): none is failed over automatically"
            return Decision(Verdict.REFUSED, reason)
        ((node, since),) = self._unreachable_since.items()
        waited = now - since
        if waited < settings.timeout_s:
            return Decision(Verdict.WAITING, f"{node} unreachable for {waited:.1f} s of {settings.timeout_s:g} s")
        refused = why_not(settings, count, active, node, preserves_majority)
        if refused is not None:
            return Decision(Verdict.REFUSED, f"{node} is down, but {refused}")
        return Decision(Verdict.FAIL_OVER, f"{node} unreachable for {waited:.1f} s", node)

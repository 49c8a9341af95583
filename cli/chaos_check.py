"""What `durakv cluster chaos` concludes from a run: per durability level, what survived the faults.

Pure: the writes the workload made (each with its level, its outcome and the active node of
its vbucket) and the faults that happened go in; a per-level tally and the violations come
out. No I/O, no clock.

The guarantees checked, for faults that hit one node at a time and no failover (a node that
crashes comes back and recovers from its own write-ahead log, so the active of a vbucket is
always the same node):
- PERSIST_TO_MAJORITY and MAJORITY_AND_PERSIST_TO_ACTIVE: an acknowledged write is never
  lost -- the active fsynced it before the answer, and the active is what survives;
- MAJORITY and NONE: an acknowledged write may be lost only if its active was killed or lost
  power after the write began (acknowledged from memory, reference §2.1; a replica's copy is
  rolled back to the active's history when the active comes back);
- an ambiguous write may end applied or absent, whatever the faults;
- a write refused outright (an unambiguous error) must be absent or hold an older value --
  not checked here: each key is written once.

Must never: read a document or a clock (the runner does), or excuse a loss its level covers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LEVELS = ("NONE", "MAJORITY", "MAJORITY_AND_PERSIST_TO_ACTIVE", "PERSIST_TO_MAJORITY")
PERSISTED_LEVELS = ("MAJORITY_AND_PERSIST_TO_ACTIVE", "PERSIST_TO_MAJORITY")
LOSS_FAULTS = ("kill", "power-loss")  # faults that can take what a node held only in memory


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    level: str
    outcome: str  # "acked", "ambiguous" or "failed"
    started: float  # seconds into the run
    active: str  # the node that was the vbucket's active


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    node: str
    started: float
    ended: float


def loss_allowed(write: Write, faults: Iterable[Fault]) -> bool:
    """May this acknowledged write be gone, given the faults? (the module docstring's rules)"""
    if write.level in PERSISTED_LEVELS:
        return False
    return any(f.kind in LOSS_FAULTS and f.node == write.active and f.ended >= write.started for f in faults)


def judge(
    writes: Iterable[Write], present: Mapping[str, bool], faults: Iterable[Fault]
) -> tuple[dict[str, Counter[str]], list[Write]]:
    """Per level: acked, lost (allowed), ambiguous_applied, ambiguous_absent, failed; and the
    acknowledged writes lost against their level's guarantee."""
    faults = list(faults)
    tally: dict[str, Counter[str]] = {level: Counter() for level in LEVELS}
    violations: list[Write] = []
    for write in writes:
        counts = tally[write.level]
        here = present[write.key]
        if write.outcome == "acked":
            counts["acked"] += 1
            if not here:
                counts["lost"] += 1
                if not loss_allowed(write, faults):
                    violations.append(write)
        elif write.outcome == "ambiguous":
            counts["ambiguous_applied" if here else "ambiguous_absent"] += 1
        else:
            counts["failed"] += 1
    return tally, violations

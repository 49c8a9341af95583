"""The durability monitor of an active vbucket: which SyncWrites commit, which abort, and when.

A pure object: acks, local progress and the time (as a number the caller passes) go in,
completions come out. It never reads a clock, does no I/O, starts no thread and takes no
lock; the vbucket calls it under its own serialization and writes the commit or abort
records itself. The replica side (`PassiveDurabilityMonitor`, which computes the HPS a
replica acks) lives in `durability_passive` and is re-exported here.

Rules (DESIGN §4, reference §2.2-2.7):

- **Chain.** One active and up to 3 replica slots; an empty slot is `None`. The majority is
  ⌊slots/2⌋+1, counting empty slots. Durability is possible iff the defined nodes number at
  least the majority and at most `SYNC_WRITE_REPLICAS_MAX` + 1.
- **Local satisfaction on the active.** A MAJORITY prepare is satisfied once queued (tracking
  it implies it is queued); MAJORITY_AND_PERSIST_TO_ACTIVE and PERSIST_TO_MAJORITY once the
  active's WAL is fsynced past it.
- **HPS** (high prepared seqno): the highest prepare such that it and every earlier prepare is
  locally satisfied. An unpersisted persist-level prepare is a fence that later prepares,
  MAJORITY ones included, cannot pass. Aborted prepares no longer need to be satisfied, so they
  stop fencing. Prepares at or below the HPS given to the constructor (a warmed-up or promoted
  vbucket) count as passed.
- **Commit.** A prepare commits when the active's HPS has passed it and at least `majority`
  defined chain nodes (the active included) have an HPS at or above it. A replica's ack of N
  acks every prepare <= N; acks never go backwards (a lower ack is ignored).
- **Abort.** Only (a) on timeout, from the front of the queue only: `process_timeouts` stops at
  the first prepare that has not expired (or has no deadline), as kv_engine's `removeExpired`
  does; or (b) when `set_chain` makes durability impossible: every prepare with a finite
  deadline is aborted. Prepares with no deadline (warmed-up or promoted, which may already have
  committed elsewhere) are never aborted.
- **Order.** Completions come out strictly in prepare-seqno order, each seqno exactly once. A
  decided SyncWrite waits behind an earlier undecided one. Because every node's HPS covers a
  prefix, a satisfied prepare can never sit behind an unsatisfied one; the waiting that does
  happen is an abort (durability became impossible) behind a prepare with no deadline.
- **Hand-out.** `take_completions` hands out what was decided since the last call; the HCS
  (high completed seqno) moves then, as the caller writes those commit and abort records.
  When the vbucket stops being active, `abort_all_for_transition` hands back everything not
  yet handed out as UNDECIDED: its clients are answered ambiguous and the next active decides.

Invariants asserted below: prepare seqnos go forward; the HPS and HCS never go backwards; a
SyncWrite is decided once (never both committed and aborted, never aborted twice); a commit is
never ahead of the active's own HPS; completions are handed out in seqno order.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from .errors import EngineError
from .limits import NUM_REPLICAS_MAX, SYNC_WRITE_REPLICAS_MAX

__all__ = [
    "ActiveDurabilityMonitor",
    "Chain",
    "Completion",
    "Level",
    "Outcome",
    "PassiveDurabilityMonitor",  # noqa: F822 (resolved by __getattr__ below)
    "Prepare",
    "UnknownPrepareError",
]


class Level(IntEnum):
    """Durability level of a write, numbered as on the wire (reference §2.1)."""

    NONE = 0
    MAJORITY = 1
    MAJORITY_AND_PERSIST_TO_ACTIVE = 2
    PERSIST_TO_MAJORITY = 3


_LEVELS = {int(level): level for level in Level}


def as_level(number: int) -> Level:
    """`Level(number)` by a lookup (calling an enum class is slow on the write path); ValueError
    for a number that is no level."""
    level = _LEVELS.get(number)
    if level is None:
        raise ValueError(f"{number!r} is not a valid Level")
    return level


@dataclass(frozen=True)
class Chain:
    """The nodes that hold one vbucket: the active, then the replica slots (`None` = empty slot)."""

    active: str
    replicas: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicas", tuple(self.replicas))
        if not isinstance(self.active, str) or not self.active:
            raise ValueError("a chain's active must be a node name")
        if len(self.replicas) > NUM_REPLICAS_MAX:
            raise ValueError(f"a chain has at most {NUM_REPLICAS_MAX} replica slots, not {len(self.replicas)}")
        nodes = self.defined_nodes()
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"a node appears twice in the chain {nodes}")

    @property
    def majority(self) -> int:
        # Empty slots count: a 2-slot chain with its replica missing cannot reach 2 acks.
        return (1 + len(self.replicas)) // 2 + 1

    def defined_nodes(self) -> tuple[str, ...]:
        return (self.active, *(r for r in self.replicas if r is not None))

    def durability_possible(self) -> bool:
        defined = len(self.defined_nodes())
        return self.majority <= defined <= SYNC_WRITE_REPLICAS_MAX + 1


class Outcome(Enum):
    """How a SyncWrite ended."""

    COMMIT = "commit"
    ABORT = "abort"
    # Only from `abort_all_for_transition`: the vbucket stopped being active before this
    # node decided. Neither a commit nor an abort may be written; the client is answered
    # SYNC_WRITE_AMBIGUOUS and the prepare stays for the next active to decide.
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class Completion:
    """A decided SyncWrite, handed out once, in prepare-seqno order."""

    seqno: int  # the prepare's seqno
    key: bytes
    outcome: Outcome
    cookie: object | None


@dataclass(frozen=True)
class Prepare:
    """A tracked prepare, as needed to seed the other kind of monitor on a state change."""

    seqno: int
    key: bytes
    level: Level


class UnknownPrepareError(EngineError):
    """A completion names a prepare that the monitor does not track (or already completed)."""

    def __init__(self, prepare_seqno: int) -> None:
        super().__init__(f"no tracked prepare at seqno {prepare_seqno}")
        self.prepare_seqno = prepare_seqno


@dataclass(slots=True)
class _SyncWrite:
    seqno: int
    key: bytes
    level: Level
    deadline: float | None  # None: never times out, never aborted for impossibility
    cookie: object | None
    outcome: Outcome | None = None  # decided; handed out only once everything before it is


def _seqno(sw: _SyncWrite) -> int:
    return sw.seqno


class ActiveDurabilityMonitor:
    """Tracks the SyncWrites of one active vbucket and decides their commit or abort."""

    def __init__(self, chain: Chain, *, high_prepared_seqno: int = 0, high_completed_seqno: int = 0) -> None:
        assert high_prepared_seqno >= 0 and high_completed_seqno >= 0
        self._chain = chain
        self._hps = high_prepared_seqno
        self._hcs = high_completed_seqno
        self._queued_seqno = 0
        self._persisted_seqno = 0
        self._replica_hps: dict[str, int] = dict.fromkeys(chain.defined_nodes()[1:], 0)
        # Acks from nodes outside the chain, replayed when a chain containing them arrives
        # (kv_engine's queuedSeqnoAcks): a replica may ack before the topology reaches us.
        self._queued_acks: dict[str, int] = {}
        # Undelivered SyncWrites in seqno order from `_head` on (a list with a moving head so
        # the HPS scan can bisect; the released prefix is cut off now and then).
        self._writes: list[_SyncWrite] = []
        self._head = 0
        self._ready: list[_SyncWrite] = []  # decided, released in order, not yet taken
        self._last_tracked_seqno = 0
        self._last_released_seqno = 0
        self._closed = False

    # -- inputs ------------------------------------------------------------------------
    def add_prepare(
        self, seqno: int, key: bytes, level: Level, deadline: float | None, cookie: object | None = None
    ) -> None:
        """Track a prepare. `deadline` None = infinite (warmed-up or promoted prepares).

        Callers check `chain.durability_possible()` first; a prepare added under an impossible
        chain simply waits for its deadline or for a chain that can satisfy it.
        """
        self._assert_open()
        level = as_level(level)
        assert level is not Level.NONE, "a NONE write is not a SyncWrite"
        assert seqno > self._last_tracked_seqno, "prepare seqnos go forward"
        # Only carried-over prepares (no deadline) may sit at or below the inherited HPS/HCS.
        assert deadline is None or seqno > max(self._hps, self._hcs), "a new prepare must be above HPS and HCS"
        self._last_tracked_seqno = seqno
        self._writes.append(_SyncWrite(seqno, key, level, deadline, cookie))
        self._queued_seqno = max(self._queued_seqno, seqno)  # tracked implies in memory
        self._update()

    def local_queued(self, seqno: int) -> None:
        """The active holds every item up to `seqno` in memory."""
        self._assert_open()
        if seqno > self._queued_seqno:
            self._queued_seqno = seqno
            self._update()

    def local_persisted(self, seqno: int) -> None:
        """The active's WAL is fsynced up to `seqno`. Lower values than before are ignored
        (the flusher may report out of order; persistence itself never goes back)."""
        self._assert_open()
        if seqno > self._persisted_seqno:
            self._persisted_seqno = seqno
            self._update()

    def seqno_ack(self, node: str, hps: int) -> None:
        """A replica reports its HPS: it has every prepare <= `hps` locally satisfied."""
        self._assert_open()
        assert node != self._chain.active, "the active does not ack itself over the wire"
        assert hps >= 0
        if node not in self._replica_hps:
            self._queued_acks[node] = max(self._queued_acks.get(node, 0), hps)
            return
        if hps <= self._replica_hps[node]:
            return  # stale or repeated: an ack never takes back what an earlier one gave
        self._replica_hps[node] = hps
        self._update()

    def set_chain(self, chain: Chain) -> None:
        """Apply a new topology. Nodes that stay keep their HPS; nodes that leave are
        forgotten (a node that comes back may have rolled back, so it must ack again); queued
        acks of nodes that join are replayed. If durability is now impossible, every prepare
        with a finite deadline is aborted (it waits for its turn if one with no deadline is
        ahead of it)."""
        self._assert_open()
        assert chain.active == self._chain.active, "a monitor belongs to one active node"
        old = self._replica_hps
        self._chain = chain
        self._replica_hps = {
            node: max(old.get(node, 0), self._queued_acks.pop(node, 0)) for node in chain.defined_nodes()[1:]
        }
        if not chain.durability_possible():
            for sw in self._unreleased():
                if sw.outcome is None and sw.deadline is not None:
                    sw.outcome = Outcome.ABORT
        self._update()

    def process_timeouts(self, now: float) -> None:
        """Abort expired prepares (deadline <= now) from the front only, stopping at the first
        unexpired one. After each abort the HPS may pass the aborted fence, so later prepares
        may commit before the next front is looked at (a satisfied prepare is never aborted)."""
        self._assert_open()
        while self._head < len(self._writes):
            front = self._writes[self._head]
            assert front.outcome is None, "a decided SyncWrite at the front is released at once"
            if front.deadline is None or front.deadline > now:
                return
            front.outcome = Outcome.ABORT
            self._update()

    # -- outputs -----------------------------------------------------------------------
    def take_completions(self) -> list[Completion]:
        """Hand out the SyncWrites decided since the last call, in prepare-seqno order. The
        HCS moves here: the caller writes the commit or abort records for exactly these."""
        ready, self._ready = self._ready, []
        if ready:
            self._hcs = max(self._hcs, ready[-1].seqno)
        completions = []
        for sw in ready:
            assert sw.outcome is Outcome.COMMIT or sw.outcome is Outcome.ABORT
            completions.append(Completion(sw.seqno, sw.key, sw.outcome, sw.cookie))
        return completions

    def abort_all_for_transition(self) -> list[Completion]:
        """The vbucket stops being active. Returns, in seqno order, every SyncWrite not yet
        handed out, decided or not, with outcome UNDECIDED: the caller answers their cookies
        (which may be None) SYNC_WRITE_AMBIGUOUS and writes no commit or abort, since the next
        active decides (as kv_engine's `prepareTransitionAwayFromActive`). The monitor then
        takes no more input; `pending_prepares()` still lists the prepares, to seed a
        `PassiveDurabilityMonitor` (with this monitor's HPS and HCS)."""
        self._assert_open()
        remaining = [*self._ready, *self._unreleased()]
        self._writes, self._head, self._ready = remaining, 0, []
        self._closed = True
        return [Completion(sw.seqno, sw.key, Outcome.UNDECIDED, sw.cookie) for sw in remaining]

    @property
    def chain(self) -> Chain:
        return self._chain

    @property
    def high_prepared_seqno(self) -> int:
        return self._hps

    @property
    def high_completed_seqno(self) -> int:
        return self._hcs

    @property
    def pending_count(self) -> int:
        """SyncWrites not yet handed out by `take_completions`."""
        return len(self._ready) + len(self._writes) - self._head

    def node_hps(self) -> dict[str, int]:
        """HPS of every defined chain node (the active's own first)."""
        return {self._chain.active: self._hps, **self._replica_hps}

    def pending_prepares(self) -> tuple[Prepare, ...]:
        """The prepares not yet handed out, in seqno order."""
        return tuple(Prepare(sw.seqno, sw.key, sw.level) for sw in [*self._ready, *self._unreleased()])

    def __repr__(self) -> str:
        return (
            f"ActiveDurabilityMonitor(chain={self._chain}, hps={self._hps}, hcs={self._hcs}, "
            f"pending={self.pending_count}, persisted={self._persisted_seqno}, acks={self._replica_hps})"
        )

    # -- the decision ------------------------------------------------------------------
    def _update(self) -> None:
        # Order matters: the HPS first (commits need it), then commits, then release.
        self._advance_hps()
        self._decide_commits()
        self._release()

    def _locally_satisfied(self, sw: _SyncWrite) -> bool:
        if sw.seqno <= self._persisted_seqno:
            return True
        return sw.level is Level.MAJORITY and sw.seqno <= self._queued_seqno

    def _advance_hps(self) -> None:
        start = bisect.bisect_right(self._writes, self._hps, lo=self._head, key=_seqno)
        for i in range(start, len(self._writes)):
            sw = self._writes[i]
            if sw.outcome is Outcome.ABORT:
                continue  # an aborted prepare needs no local satisfaction: not a fence
            if not self._locally_satisfied(sw):
                break  # the fence: nothing later passes it
            assert sw.seqno > self._hps, "the HPS goes forward"
            self._hps = sw.seqno

    def _commit_seqno(self) -> int:
        """Every prepare at or below this is satisfied: the majority-th highest HPS among the
        defined nodes, capped by the active's own (it must have passed the prepare itself)."""
        majority = self._chain.majority
        hps = sorted((self._hps, *self._replica_hps.values()), reverse=True)
        if len(hps) < majority:
            return 0  # too few defined nodes: nothing can reach a majority
        return min(self._hps, hps[majority - 1])

    def _decide_commits(self) -> None:
        commit_seqno = self._commit_seqno()
        for i in range(self._head, len(self._writes)):
            sw = self._writes[i]
            if sw.outcome is not None:
                continue  # already aborted for impossibility, waiting for its turn
            if sw.seqno > commit_seqno:
                break  # HPSs cover prefixes: nothing later is satisfied either
            sw.outcome = Outcome.COMMIT

    def _release(self) -> None:
        writes = self._writes
        while self._head < len(writes) and writes[self._head].outcome is not None:
            sw = writes[self._head]
            assert sw.seqno > self._last_released_seqno, "completions go in seqno order"
            assert sw.outcome is not Outcome.COMMIT or sw.seqno <= self._hps, "a commit passed the active"
            self._last_released_seqno = sw.seqno
            self._ready.append(sw)
            self._head += 1
        if self._head > 64 and self._head * 2 > len(writes):
            del writes[: self._head]  # amortized O(1) per SyncWrite
            self._head = 0

    def _unreleased(self) -> Sequence[_SyncWrite]:
        return self._writes[self._head :]

    def _assert_open(self) -> None:
        assert not self._closed, "the vbucket is no longer active: this monitor takes no input"


def __getattr__(name: str) -> object:
    # `PassiveDurabilityMonitor` lives in `durability_passive` (which needs the types above);
    # resolving it lazily lets both monitors be imported from here without an import cycle.
    if name == "PassiveDurabilityMonitor":
        from .durability_passive import PassiveDurabilityMonitor

        return PassiveDurabilityMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

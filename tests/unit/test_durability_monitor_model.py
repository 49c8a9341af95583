"""Both durability monitors against deliberately naive models, driven by Hypothesis.

The models keep everything they were ever told (every prepare, each node's set of acked
prepares, the set of persisted prepares) and recompute every decision from the definitions
in DESIGN §4 after every step, in the most direct and slowest way. The monitors are
incremental (a moving HPS, a majority-th-highest commit seqno, a released prefix); any
difference in completions, HPS, HCS or pending count fails the run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from durakv.engine.durability import (
    ActiveDurabilityMonitor,
    Chain,
    Level,
    Outcome,
    PassiveDurabilityMonitor,
    Prepare,
)

LEVELS = (Level.MAJORITY, Level.MAJORITY_AND_PERSIST_TO_ACTIVE, Level.PERSIST_TO_MAJORITY)
ACTIVE = "a"
REPLICAS = ("b", "c", "d", "e")  # more than any chain holds: some ack from outside the chain


@dataclass
class ModelPrepare:
    seqno: int
    key: bytes
    level: Level
    deadline: float | None
    outcome: Outcome | None = None
    released: bool = False


class NaiveActive:
    """The active side, from the definitions. Kept naive on purpose: no cursors, no prefixes."""

    def __init__(self, chain: Chain, hps: int, hcs: int) -> None:
        self.chain = chain
        self.initial_hps = hps
        self.hps = hps
        self.hcs = hcs
        self.prepares: list[ModelPrepare] = []
        self.persisted: set[int] = set()  # prepare seqnos the active has fsynced
        self.acked: dict[str, set[int]] = {r: set() for r in chain.defined_nodes()[1:]}
        self.queued_acks: dict[str, int] = {}
        self.ready: list[tuple[int, bytes, Outcome]] = []

    def prepares_upto(self, seqno: int) -> set[int]:
        return {p.seqno for p in self.prepares if p.seqno <= seqno}

    def locally_satisfied(self, p: ModelPrepare) -> bool:
        return p.seqno <= self.initial_hps or p.level is Level.MAJORITY or p.seqno in self.persisted

    def brute_force_hps(self) -> int:
        live = [p for p in self.prepares if p.outcome is not Outcome.ABORT]
        passed = [p.seqno for p in live if all(self.locally_satisfied(q) for q in live if q.seqno <= p.seqno)]
        return max([self.initial_hps, *passed])

    def satisfied(self, p: ModelPrepare) -> bool:
        if self.hps < p.seqno:
            return False
        acks = 1 + sum(1 for node in self.chain.defined_nodes()[1:] if p.seqno in self.acked[node])
        return acks >= self.chain.majority

    def settle(self) -> None:
        self.hps = max(self.hps, self.brute_force_hps())  # the HPS is a high-water mark
        for p in self.prepares:
            if p.outcome is None and self.satisfied(p):
                p.outcome = Outcome.COMMIT
        for p in self.prepares:
            if p.released:
                continue
            if p.outcome is None:
                break
            p.released = True
            self.ready.append((p.seqno, p.key, p.outcome))
        # The rules imply satisfaction covers a prefix: no commit may wait behind anything.
        assert all(p.released for p in self.prepares if p.outcome is Outcome.COMMIT)

    # -- the same inputs as the monitor --
    def add_prepare(self, seqno: int, key: bytes, level: Level, deadline: float | None) -> None:
        self.prepares.append(ModelPrepare(seqno, key, level, deadline))
        self.settle()

    def local_persisted(self, seqno: int) -> None:
        self.persisted |= self.prepares_upto(seqno)
        self.settle()

    def seqno_ack(self, node: str, seqno: int) -> None:
        if node in self.acked:
            self.acked[node] |= self.prepares_upto(seqno)
        else:
            self.queued_acks[node] = max(self.queued_acks.get(node, 0), seqno)
        self.settle()

    def set_chain(self, chain: Chain) -> None:
        acked = {}
        for node in chain.defined_nodes()[1:]:
            acked[node] = set(self.acked.get(node, set()))
            if node in self.queued_acks:
                acked[node] |= self.prepares_upto(self.queued_acks.pop(node))
        self.chain, self.acked = chain, acked
        if not chain.durability_possible():
            for p in self.prepares:
                if p.outcome is None and p.deadline is not None:
                    p.outcome = Outcome.ABORT
        self.settle()

    def process_timeouts(self, now: float) -> None:
        while True:
            self.settle()
            front = next((p for p in self.prepares if not p.released), None)
            if front is None or front.deadline is None or front.deadline > now:
                return
            front.outcome = Outcome.ABORT

    def take(self) -> list[tuple[int, bytes, Outcome]]:
        ready, self.ready = self.ready, []
        if ready:
            self.hcs = max(self.hcs, ready[-1][0])
        return ready

    def pending(self) -> list[ModelPrepare]:
        return [p for p in self.prepares if not p.released]


chains = st.lists(st.sampled_from((None, *REPLICAS)), max_size=3).filter(
    lambda slots: len([s for s in slots if s]) == len({s for s in slots if s})
)


class ActiveMonitorMachine(RuleBasedStateMachine):
    @initialize(
        replicas=chains,
        hps=st.integers(0, 4),
        hcs=st.integers(0, 2),
        carried=st.lists(st.tuples(st.sampled_from(LEVELS), st.integers(0, 1)), max_size=3),
    )
    def start(self, replicas, hps, hcs, carried):
        # A warmed-up or promoted monitor: prepares with no deadline, some below its HPS.
        chain = Chain(ACTIVE, tuple(replicas))
        self.dm = ActiveDurabilityMonitor(chain, high_prepared_seqno=hps, high_completed_seqno=hcs)
        self.model = NaiveActive(chain, hps, hcs)
        self.high = 0  # the vbucket's high seqno: prepares and plain mutations take one each
        self.now = 0.0
        self.completed: dict[int, Outcome] = {}
        for level, gap in carried:
            self.high += 1 + gap
            self.both_add(level, None)
        self.high = max(self.high, hps, hcs)
        self.compare()

    def both_add(self, level: Level, deadline: float | None) -> None:
        key = b"k%d" % self.high
        self.dm.add_prepare(self.high, key, level, deadline, cookie=self.high)
        self.model.add_prepare(self.high, key, level, deadline)

    @rule(level=st.sampled_from(LEVELS), gap=st.integers(0, 2), timeout=st.none() | st.integers(1, 12))
    def prepare(self, level, gap, timeout):
        self.high += 1 + gap
        if timeout is not None and not self.dm.chain.durability_possible():
            return  # refused with DURABILITY_IMPOSSIBLE before reaching the monitor
        self.both_add(level, None if timeout is None else self.now + timeout)

    @rule(count=st.integers(1, 3))
    def mutation(self, count):
        self.high += count

    @rule(behind=st.integers(0, 4))
    def persist(self, behind):
        seqno = max(0, self.high - behind)
        self.dm.local_persisted(seqno)
        self.model.local_persisted(seqno)

    @rule(behind=st.integers(0, 4))
    def queue(self, behind):
        self.dm.local_queued(max(0, self.high - behind))  # implied by tracking: no effect on rules

    @rule(node=st.sampled_from(REPLICAS), behind=st.integers(0, 4))
    def ack(self, node, behind):
        seqno = max(0, self.high - behind)
        self.dm.seqno_ack(node, seqno)
        self.model.seqno_ack(node, seqno)

    @rule(replicas=chains)
    def set_chain(self, replicas):
        chain = Chain(ACTIVE, tuple(replicas))
        self.dm.set_chain(chain)
        self.model.set_chain(chain)

    @rule(elapsed=st.integers(0, 6))
    def tick(self, elapsed):
        self.now += elapsed
        self.dm.process_timeouts(self.now)
        self.model.process_timeouts(self.now)

    @rule()
    def transition(self):
        # On a copy, so the run goes on: every SyncWrite not handed out comes back undecided.
        dm = copy.deepcopy(self.dm)
        got = [(c.seqno, c.key, c.outcome, c.cookie) for c in dm.abort_all_for_transition()]
        pending = self.model.pending()
        assert got == [(p.seqno, p.key, Outcome.UNDECIDED, p.seqno) for p in pending]
        assert dm.pending_prepares() == tuple(Prepare(p.seqno, p.key, p.level) for p in pending)

    @invariant()
    def compare(self):
        got = [(c.seqno, c.key, c.outcome) for c in self.dm.take_completions()]
        assert got == self.model.take()
        for seqno, _, outcome in got:
            assert seqno not in self.completed, "completed twice"
            assert not self.completed or seqno > max(self.completed), "completed out of order"
            self.completed[seqno] = outcome
        assert self.dm.high_prepared_seqno == self.model.hps
        assert self.dm.high_completed_seqno == self.model.hcs
        assert self.dm.pending_count == len(self.model.pending())
        assert self.dm.node_hps()[ACTIVE] == self.model.hps
        assert tuple(self.dm.node_hps()) == self.dm.chain.defined_nodes()


ActiveMonitorMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
test_active_monitor_matches_naive_model = ActiveMonitorMachine.TestCase


# -- the replica side ----------------------------------------------------------------------


class NaivePassive:
    """The replica's HPS from the definitions: the highest point up to which every prepare is
    acknowledgeable and every disk snapshot before it is persisted."""

    def __init__(self, hps: int) -> None:
        self.initial_hps = hps
        self.prepares: list[tuple[int, Level]] = []
        self.completed: set[int] = set()
        self.snapshots: list[tuple[int, bool]] = []  # (end, disk)
        self.persisted = 0

    def acknowledgeable(self, seqno: int, level: Level) -> bool:
        if seqno <= self.initial_hps:
            return True
        snapshot = next((s for s in self.snapshots if s[0] >= seqno), None)
        if snapshot is None:
            return False  # its snapshot has not been received whole
        end, disk = snapshot
        return self.persisted >= end or (not disk and level is not Level.PERSIST_TO_MAJORITY)

    def clear_upto(self, point: int) -> bool:
        if not all(self.acknowledgeable(s, lv) for s, lv in self.prepares if s <= point):
            return False
        return all(self.persisted >= end for end, disk in self.snapshots if disk and end < point)

    def hps(self) -> int:
        points = [s for s, lv in self.prepares if self.acknowledgeable(s, lv)]
        points += [end for end, disk in self.snapshots if disk and self.persisted >= end]
        return max([self.initial_hps, *(p for p in points if self.clear_upto(p))])


passive_ops = st.lists(
    st.one_of(
        st.tuples(st.just("prepare"), st.sampled_from(LEVELS), st.integers(0, 2)),
        st.tuples(st.just("mutation"), st.integers(1, 2)),
        st.tuples(st.just("snapshot"), st.booleans()),
        st.tuples(st.just("persist"), st.integers(0, 4)),
        st.tuples(st.just("complete"), st.integers(0, 10)),
    ),
    max_size=50,
)


@settings(max_examples=400, deadline=None)
@given(hps=st.integers(0, 3), carried=st.lists(st.sampled_from(LEVELS), max_size=2), ops=passive_ops)
def test_passive_monitor_matches_naive_model(hps, carried, ops):
    pdm = PassiveDurabilityMonitor(high_prepared_seqno=hps)
    model = NaivePassive(hps)
    high = last_end = 0
    for level in carried:  # seeded from an active monitor on a state change
        high += 1
        pdm.add_prepare(high, b"k%d" % high, level)
        model.prepares.append((high, level))
    high = max(high, hps)
    last_hps = pdm.high_prepared_seqno
    for op in ops:
        if op[0] == "prepare":
            high += 1 + op[2]
            pdm.add_prepare(high, b"k%d" % high, op[1])
            model.prepares.append((high, op[1]))
        elif op[0] == "mutation":
            high += op[1]
        elif op[0] == "snapshot":
            if high == last_end:
                high += 1  # a snapshot holds at least one item
            pdm.snapshot_end(high, disk=op[1])
            model.snapshots.append((high, op[1]))
            last_end = high
        elif op[0] == "persist":
            model.persisted = max(model.persisted, high - op[1])
            pdm.persisted(high - op[1])
        else:
            open_prepares = [s for s, _ in model.prepares if s not in model.completed]
            if open_prepares:
                seqno = open_prepares[op[1] % len(open_prepares)]
                pdm.complete(seqno)
                model.completed.add(seqno)
        assert pdm.high_prepared_seqno == model.hps()
        assert pdm.high_prepared_seqno >= last_hps, "the HPS went backwards"
        last_hps = pdm.high_prepared_seqno
        assert pdm.high_completed_seqno == max([0, *model.completed])
        assert [p.seqno for p in pdm.pending_prepares()] == [s for s, _ in model.prepares if s not in model.completed]
        assert pdm.pending_count == len(model.prepares) - len(model.completed)

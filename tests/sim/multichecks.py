"""The multi-node checks: each node's history as the oracle keeps it, and what every copy must hold.

Owns the multi-node additions to the checker (checker.py):
- `NodeHistory`: a node's WAL records, cut by crashes exactly as a single node's. Records of
  the vbuckets the node is the active of (`judged`) are judged one by one as a single node's;
  the others are replica copies, judged against their active by `check_copy` instead. A node
  promoted by a failover `adopt`s its vbucket's history up to the seqno it held; every
  completion a replica copy ever logged is kept for the never-flip check, except those on a
  branch a rollback or a failover discarded;
- `check_copy`: one engine's copy of a vbucket equals what the vbucket's history implies (high
  seqno, what each key reads as, pending prepares); used at a promotion and for convergence;
- the end-of-run checks of multinode.py's docstring: `check_persist_to_majority` (after every
  replica lost power at once), `check_convergence`, `check_failover_acknowledgements` and
  `check_completions`.

Must never: decide what is right by asking an engine (the histories are the oracle; an engine
is only compared with them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from durakv.engine.document import store_key
from durakv.engine.durability import Level
from durakv.engine.keys import vbucket_of
from durakv.engine.records import Kind

from .checker import Entry, History, Tally, Violation, check_acknowledgements
from .multiconfig import describe_chain

if TYPE_CHECKING:
    from .multicluster import MultiCluster
    from .replication_shell import Replication


class NodeHistory(History):
    """A node's WAL records. Crashes cut it exactly as a single node's (so the recovery check
    holds on every node). Records of the vbuckets the node is the active of (`judged`) are
    judged one by one, as a single node's; the others are replica copies, judged against
    their active instead (disk snapshots skip seqnos, rollbacks undo them). A promoted node
    `adopt`s its vbucket's history up to what it held. Keeps every completion a replica copy
    ever logged, lost or not, for the never-flip check, except those on a branch a rollback or
    a failover discarded."""

    def __post_init__(self) -> None:
        self.judged: set[int] = set()
        self.seeded: list[Entry] = []  # adopted at a promotion: the vbucket's history before it
        self.completions: list[tuple[int, int, Kind, int]] = []  # (vbucket, prepare seqno, kind, seqno)
        super().__post_init__()

    def append(self, lsn: int, end: int, kind: int, payload: bytes) -> None:
        super().append(lsn, end, kind, payload)
        record = self.entries[-1].record
        if record.kind is Kind.MANIFEST or record.vbucket in self.judged:
            return
        if record.kind in (Kind.COMMIT, Kind.ABORT):
            self.completions.append((record.vbucket, record.prepare_seqno, record.kind, record.seqno))
        elif record.kind is Kind.ROLLBACK:  # record.seqno: where the rollback landed
            self.forget_completions(record.vbucket, record.seqno)

    def forget_completions(self, vb: int, above: int) -> None:
        """The vbucket's history above `above` is gone (a rollback, or a failover that kept only
        that much): completions logged there no longer belong to it."""
        self.completions = [c for c in self.completions if c[0] != vb or c[3] <= above]

    def completion_kinds(self) -> dict[tuple[int, int], set[Kind]]:
        kinds: dict[tuple[int, int], set[Kind]] = {}
        for vb, prepare_seqno, kind, _ in self.completions:
            kinds.setdefault((vb, prepare_seqno), set()).add(kind)
        return kinds

    def _apply(self, entry) -> None:
        if entry.record.vbucket in self.judged:
            super()._apply(entry)

    def adopt(self, vb: int, prefix: list[Entry]) -> dict[Entry, Entry]:
        """Become the active of `vb`, whose history so far is `prefix` (the old active's records
        up to what this node held): judged from now on, starting from copies of those records
        (a write keeps whether it was acknowledged). Returns old entry -> copy."""
        assert vb not in self.judged
        self.judged.add(vb)
        copies = {}
        for entry in prefix:
            copy = Entry(entry.lsn, entry.end, entry.record, entry.incarnation, acked=entry.acked)
            super()._apply(copy)
            self.seeded.append(copy)
            copies[entry] = copy
        return copies

    def holds(self, entry: Entry) -> bool:
        """The entry is part of this node's judged history (its own, or adopted)."""
        return entry.lost_by is None and (entry in self.entries or entry in self.seeded)

    def recovered(self, recovered_end: int) -> list[Entry]:
        assert not self.seeded, f"{self.node}: a promoted node never restarts in this version"
        return super().recovered(recovered_end)

    def check_engine(self, engine, skeys) -> None:
        if len(self.judged) == self.num_vbuckets:  # an active of everything: as a single node
            super().check_engine(engine, skeys)

    def check_reads(self, engine, keys, now) -> None:
        if len(self.judged) == self.num_vbuckets:
            super().check_reads(engine, keys, now)


def check_copy(engine, truth: History, vb: int, keys: list[bytes], who: str, when: str) -> None:
    """`engine`'s copy of `vb` is exactly what the vbucket's history (`truth`) implies: high
    seqno, what each key reads as, pending prepares."""
    mine = engine.vbuckets[vb]
    if mine.high_seqno != truth.vb_high[vb]:
        raise Violation(f"{when}: {who} high seqno {mine.high_seqno}, the active's {truth.vb_high[vb]}")
    for key in keys:
        skey = store_key(vb, 0, key)
        held, expected = engine.committed(skey), truth.committed.get(skey)
        if _comparable(held) != _comparable(expected):
            raise Violation(f"{when}: {who} key {key!r} holds {held}, the active's history says {expected}")
    prepares = {skey: p.document.seqno for skey, p in mine.prepares.items()}
    expected_prepares = {s: e.record.seqno for s, e in truth.pending.items() if e.record.vbucket == vb}
    if prepares != expected_prepares:
        raise Violation(f"{when}: {who} holds prepares {prepares}, the active {expected_prepares}")


def check_convergence(cluster: MultiCluster, replication: Replication, keys: list[bytes], when: str) -> None:
    """Each replica's copy of each vbucket equals what the vbucket's history implies; so does
    the copy of an active promoted by a failover."""
    count = cluster.config.num_vbuckets
    by_vb = [[key for key in keys if vbucket_of(key, count) == vb] for vb in range(count)]
    for link in replication.links.values():
        engine = cluster.nodes[link.replica].engine
        assert engine is not None
        vb = link.vbucket
        check_copy(engine, replication.truth_history(vb), vb, by_vb[vb], link.name, when)
    for vb in range(count):
        if replication.failed_over(vb):
            active = replication.active_of(vb)
            check_copy(active.engine, replication.truth_history(vb), vb, by_vb[vb], f"{active.node_id}/vb{vb}", when)


def _comparable(doc):
    """A tombstone travels as a Deletion (no value, flags or expiry) and an absent key reads
    like one: compare what a client can see, and the CAS and seqno of the removal."""
    if doc is None:
        return None
    if doc.deleted:
        return ("deleted", doc.cas, doc.seqno)
    return doc


def check_persist_to_majority(cluster: MultiCluster, replication: Replication, writes, tally: Tally) -> None:
    """After every replica lost power at once: each acknowledged PERSIST_TO_MAJORITY write is
    still held by a majority of its chain. One acknowledged before a failover: the failed
    node's copy is gone (it rolled back to its successor's), so it must be held by the new
    active (a node that rejoined an empty slot made no promise about it)."""
    for write in writes:
        if write.outcome != "ack" or write.level is not Level.PERSIST_TO_MAJORITY:
            continue
        if write.id in replication.failover_lost:
            continue  # judged at the failover: never allowed
        entry = write.entry
        assert entry is not None
        vb, seqno = entry.record.vbucket, entry.record.seqno
        chain = cluster.chains[vb]
        assert chain is not None
        truth = replication.truth_history(vb)
        holders = [chain.active] if truth.holds(entry) else []
        for replica in chain.replicas:
            if replica is None:
                continue
            engine = cluster.nodes[replica].engine
            assert engine is not None
            if engine.vbuckets[vb].high_seqno >= seqno:
                holders.append(replica)
        needed = 1 if entry in truth.seeded else chain.majority
        if len(holders) < needed:
            raise Violation(
                f"acknowledged PERSIST_TO_MAJORITY {write.describe()} (prepare vb={vb} seqno={seqno}) is held by "
                f"{holders} after a power cut of every replica; the chain {describe_chain(chain)} needs {needed}"
            )
        tally.add(write.level, "survived_replica_power_cut")


def check_completions(cluster: MultiCluster, replication: Replication) -> None:
    """No replica ever logged a completion (not undone by a rollback) that differs from the
    vbucket's history."""
    for node_id, node in cluster.nodes.items():
        history = node.history
        assert isinstance(history, NodeHistory)
        for (vb, seqno), kinds in sorted(history.completion_kinds().items()):
            prepare = replication.truth_history(vb).by_place.get((vb, seqno))
            truth = prepare.completion.record.kind if prepare is not None and prepare.completion else None
            if kinds != {truth}:
                raise Violation(
                    f"{node_id} logged {sorted(k.name for k in kinds)} for prepare vb={vb} seqno={seqno}; "
                    f"the active {truth.name if truth else 'has not completed it'}"
                )


def check_failover_acknowledgements(replication: Replication, writes, tally: Tally) -> None:
    """check_acknowledgements for every write still in a vbucket's history; the ones a
    failover removed were judged at the failover (`multifaults.fail_over`)."""
    lost = replication.failover_lost
    check_acknowledgements([write for write in writes if write.id not in lost], tally)
    for write in writes:
        if write.id not in lost:
            continue
        if write.outcome == "ack":
            tally.add(write.level, "lost_in_failover")
        elif write.outcome == "ambiguous":
            tally.add(write.level, "ambiguous_absent")
        else:
            raise Violation(f"{write.describe()} ended {write.outcome}, yet it wrote a record")

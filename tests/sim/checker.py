"""The checker: each node's record history, the state it implies, and the guarantees of a run.

Owns the oracle. A `History` is the sequence of WAL records a node's engine appended, decoded
with the real record codec, in LSN order, as it stands now: a crash cuts it where recovery cut
the WAL, and the records cut are marked lost, with the crash that lost them. Checkpoints do
not touch it (they move records into the store, they do not remove them from the node's
history). From the history alone the checker derives what the node must hold (`committed`,
`pending`, each vbucket's high seqno), independently of the engine's memtable, store and
replay code, and compares that with the engine after every recovery and with every read.

Checked as records are appended (`History.append`):
- LSNs are contiguous, each vbucket's seqnos consecutive, and its CAS values increasing;
- a prepare is never written while its key has one pending, nor a plain write;
- a commit or abort completes the key's pending prepare (never a lost or completed one), in
  prepare-seqno order per vbucket; so a durable abort is never followed by a commit;
- an acknowledged SyncWrite is never aborted.

Checked at every restart (`History.recovered`, `check_engine`): recovery cut the WAL exactly
after the last record that was intact on disk (the disk model says what was intact; the real
codec must keep every such record and no other); the engine then holds exactly the history's
committed documents, pending prepares and high seqnos.

Checked after the run (`check_acknowledgements`): an acknowledged write whose record was lost
was allowed to be (see `loss_allowed`); an acknowledged SyncWrite whose prepare survived is
committed; an ambiguous one is committed or absent, never left pending.

Must never: consult the engine to decide what is right.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durakv.engine import records
from durakv.engine.document import Document, store_key
from durakv.engine.durability import Level
from durakv.engine.errors import KVError, Status
from durakv.engine.records import Kind
from durakv.engine.wal import codec

if TYPE_CHECKING:
    from durakv.engine.kv import BucketEngine

    from .workload import Write

VANISHED_SEGMENT = "the segment holding it vanished"
PERSIST_LEVELS = (Level.MAJORITY_AND_PERSIST_TO_ACTIVE, Level.PERSIST_TO_MAJORITY)
_DOCUMENT_KINDS = (Kind.MUTATION, Kind.DELETION, Kind.EXPIRATION)
SCOPE, COLLECTION = "_default", "_default"


class Violation(AssertionError):
    """A guarantee or invariant that the run broke."""


@dataclass
class Crash:
    """One stop of a node, and what the disk kept."""

    node: str
    kind: str  # "process" (SIGKILL), "power" (power cut), "clean" (close)
    time: float
    persisted_lsn: int  # fsync completed and reported to the engine
    written_lsn: int  # in the page cache
    end_lsn: int  # appended
    intact_lsn: int  # every byte below this is on disk as written (the disk model's truth)
    vanished: tuple[str, ...] = ()  # files the power cut removed (created, directory never fsynced)
    recovered_end: int | None = None

    @property
    def guaranteed_lsn(self) -> int:
        """Records ending at or below this must survive: the page cache survives a process
        crash, only fsynced bytes survive a power cut, a clean close fsyncs everything."""
        return {"process": self.written_lsn, "power": self.persisted_lsn, "clean": self.end_lsn}[self.kind]

    def describe(self) -> str:
        vanished = f", vanished: {' '.join(self.vanished)} (created, directory never fsynced)" if self.vanished else ""
        return (
            f"{self.kind} crash of {self.node} at t={self.time:.6f} (persisted={self.persisted_lsn}, "
            f"written={self.written_lsn}, end={self.end_lsn}, intact={self.intact_lsn}, "
            f"recovered={self.recovered_end}{vanished})"
        )


@dataclass(eq=False)
class Entry:
    """One record of a node's history."""

    lsn: int
    end: int
    record: records.Record
    incarnation: int
    lost_by: Crash | None = None
    prepare: Entry | None = None  # a commit/abort: the prepare it completes
    completion: Entry | None = None  # a prepare: its commit/abort, while both are in the history
    acked: bool = False  # a client was told this write (mutation or prepare) succeeded

    @property
    def skey(self) -> bytes:
        return store_key(self.record.vbucket, self.record.collection_id, self.record.key)

    def describe(self) -> str:
        r = self.record
        what = f"{r.kind.name} vb={r.vbucket} key={r.key!r} seqno={r.seqno}"
        if r.kind in (Kind.COMMIT, Kind.ABORT):
            what += f" prepare={r.prepare_seqno}"
        return f"{what} lsn={self.lsn}..{self.end}"


@dataclass
class History:
    """A node's surviving records and the state they imply (see the module docstring)."""

    node: str
    num_vbuckets: int
    entries: list[Entry] = field(default_factory=list)
    lost: list[Entry] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    incarnation: int = 0

    def __post_init__(self) -> None:
        self._rebuild()

    @property
    def end(self) -> int:
        return self.entries[-1].end if self.entries else 0

    @property
    def count(self) -> int:
        return len(self.entries)

    # -- the state the history implies --------------------------------------------------
    def _rebuild(self) -> None:
        self.committed: dict[bytes, Document] = {}
        self.pending: dict[bytes, Entry] = {}
        self.vb_high = [0] * self.num_vbuckets
        self.vb_completed = [0] * self.num_vbuckets  # highest completed prepare seqno
        self.vb_cas = [0] * self.num_vbuckets  # highest CAS handed out
        self.by_place: dict[tuple[int, int], Entry] = {}
        for entry in self.entries:
            entry.completion = None
        for entry in self.entries:
            self._apply(entry)

    def visible(self, skey: bytes) -> Document | None:
        doc = self.committed.get(skey)
        return None if doc is None or doc.deleted else doc

    def append(self, lsn: int, end: int, kind: int, payload: bytes) -> None:
        """A record the engine appended to the WAL (the SimLog's append hook)."""
        if lsn != self.end:
            raise Violation(f"{self.node}: record at LSN {lsn}, the history ends at {self.end}")
        entry = Entry(lsn, end, records.decode(kind, payload), self.incarnation)
        self._apply(entry)
        self.entries.append(entry)

    def _apply(self, entry: Entry) -> None:
        record = entry.record
        if record.kind in (Kind.MANIFEST, Kind.VBUCKET_STATE):
            return
        vb = record.vbucket
        if record.seqno != self.vb_high[vb] + 1:
            raise Violation(f"{self.node}: {entry.describe()} after seqno {self.vb_high[vb]}: seqnos not consecutive")
        self.vb_high[vb] = record.seqno
        self.by_place[(vb, record.seqno)] = entry
        if record.document is not None:  # a new version: a CAS the vbucket never handed out before
            if record.document.cas <= self.vb_cas[vb]:
                raise Violation(f"{self.node}: {entry.describe()} has CAS {record.document.cas} <= {self.vb_cas[vb]}")
            self.vb_cas[vb] = record.document.cas
        skey = entry.skey
        pending = self.pending.get(skey)
        if record.kind is Kind.PREPARE:
            if pending is not None:
                raise Violation(f"{self.node}: {entry.describe()} while {pending.describe()} is pending")
            self.pending[skey] = entry
        elif record.kind in (Kind.COMMIT, Kind.ABORT):
            if pending is None or pending.record.seqno != record.prepare_seqno:
                raise Violation(f"{self.node}: {entry.describe()} completes no pending prepare of its key")
            if record.prepare_seqno <= self.vb_completed[vb]:
                raise Violation(
                    f"{self.node}: {entry.describe()} after prepare {self.vb_completed[vb]} was completed: "
                    "completions out of seqno order"
                )
            if record.kind is Kind.ABORT and pending.acked:
                raise Violation(f"{self.node}: {entry.describe()} aborts an acknowledged SyncWrite")
            self.vb_completed[vb] = record.prepare_seqno
            del self.pending[skey]
            entry.prepare, pending.completion = pending, entry
            if record.kind is Kind.COMMIT:
                self.committed[skey] = pending.record.document._replace(seqno=record.seqno)
        else:
            assert record.kind in _DOCUMENT_KINDS, record.kind
            if pending is not None:
                raise Violation(f"{self.node}: {entry.describe()} while {pending.describe()} is pending")
            self.committed[skey] = record.document

    # -- crashes and recovery -----------------------------------------------------------
    def crashed(self, crash: Crash) -> None:
        self.crashes.append(crash)

    def recovered(self, recovered_end: int) -> list[Entry]:
        """Recovery of the last crash cut the WAL at `recovered_end`: check the cut, drop the
        records after it (lost), return them."""
        crash = self.crashes[-1]
        crash.recovered_end = recovered_end
        ends = [entry.end for entry in self.entries]
        expected = ends[bisect.bisect_right(ends, crash.intact_lsn) - 1] if ends and ends[0] <= crash.intact_lsn else 0
        if recovered_end != expected:
            raise Violation(
                f"{self.node}: recovery kept the WAL up to LSN {recovered_end}, but the disk held every record "
                f"up to {expected} intact after the {crash.describe()}"
            )
        keep = bisect.bisect_right(ends, recovered_end)
        lost = self.entries[keep:]
        for entry in lost:
            entry.lost_by = crash
        del self.entries[keep:]
        self.lost.extend(lost)
        self.incarnation += 1
        self._rebuild()
        return lost

    def check_engine(self, engine: BucketEngine, skeys: Iterable[bytes]) -> None:
        """The engine holds exactly what the history implies (after a recovery, or at any time)."""
        for skey in sorted(set(skeys) | self.committed.keys() | self.pending.keys()):
            held = engine.committed(skey)
            expected = self.committed.get(skey)
            if held != expected:
                raise Violation(f"{self.node}: key {skey!r} holds {held}, the history says {expected}")
        for vb in engine.vbuckets:
            prepares = {skey: p.document.seqno for skey, p in vb.prepares.items()}
            expected_prepares = {
                skey: e.record.seqno for skey, e in self.pending.items() if e.record.vbucket == vb.vbid
            }
            if prepares != expected_prepares:
                raise Violation(
                    f"{self.node}: vbucket {vb.vbid} holds prepares {prepares}, the history says {expected_prepares}"
                )
            if vb.high_seqno != self.vb_high[vb.vbid]:
                expected_high = self.vb_high[vb.vbid]
                raise Violation(
                    f"{self.node}: vbucket {vb.vbid} high seqno {vb.high_seqno}, the history says {expected_high}"
                )

    def check_reads(self, engine: BucketEngine, keys: Iterable[bytes], now: float) -> None:
        """Every key reads back as the history's last committed version says."""
        for key in keys:
            vb = engine.locate(SCOPE, COLLECTION, key).vb.vbid
            check_read(self, store_key(vb, 0, key), key, _get(engine, key, now))


def _get(engine: BucketEngine, key: bytes, now: float):
    try:
        return engine.get(SCOPE, COLLECTION, key, now)
    except KVError as error:
        return error


def check_read(history: History, skey: bytes, key: bytes, outcome) -> None:
    """A get's outcome (ReadOutcome or KVError) against the history, at the same instant."""
    doc = history.visible(skey)
    if isinstance(outcome, KVError):
        if outcome.status is Status.KEY_ENOENT and doc is None:
            return
        if outcome.status is Status.SYNC_WRITE_RECOMMIT_IN_PROGRESS and skey in history.pending:
            return
        raise Violation(f"{history.node}: get {key!r} failed {outcome!r}, the history says {doc}")
    if doc is None or outcome.value != doc.value or outcome.cas != doc.cas:
        raise Violation(f"{history.node}: get {key!r} read cas={outcome.cas} {outcome.value!r}, the history says {doc}")


# -- after the run: the acknowledgements ---------------------------------------------------
def loss_allowed(level: Level, entry: Entry) -> bool:
    """May this acknowledged write's record have been lost to the crash that lost it?

    On one node a persist-level ack means its prepare was fsynced: nothing may lose it.
    NONE and MAJORITY are acknowledged from memory (MAJORITY: a majority of one is the active
    itself), so they may be lost, unless their record had reached what the crash keeps."""
    crash = entry.lost_by
    assert crash is not None
    if level in PERSIST_LEVELS:
        return False
    return entry.end > crash.guaranteed_lsn


@dataclass
class Tally:
    """Per durability level: what happened to the writes (DESIGN §8's chaos summary)."""

    counts: Counter = field(default_factory=Counter)

    def add(self, level: Level, what: str) -> None:
        self.counts[(level.name, what)] += 1

    def total(self, what: str, level: Level | None = None) -> int:
        return sum(n for (name, w), n in self.counts.items() if w == what and (level is None or name == level.name))

    def lines(self) -> list[str]:
        out = []
        for level in Level:
            row = {w: n for (name, w), n in self.counts.items() if name == level.name}
            if row:
                out.append(f"{level.name:<31} " + " ".join(f"{w}={row[w]}" for w in sorted(row)))
        return out


def _diagnosis(entry: Entry) -> str:
    crash = entry.lost_by
    assert crash is not None
    starts = [codec.parse_segment_file_name(name) for name in crash.vanished]
    if any(start is not None and start <= entry.lsn for start in starts):
        return f"; {VANISHED_SEGMENT}: created and fsynced, but its directory entry never was"
    return ""


def check_acknowledgements(writes: Iterable[Write], tally: Tally) -> None:
    """The guarantees of every write's answer, given the crashes that happened (run's end)."""
    for write in writes:
        if write.outcome == "ack":
            entry = write.entry
            assert entry is not None
            if entry.lost_by is not None:
                if not loss_allowed(write.level, entry):
                    raise Violation(
                        f"acknowledged {write.level.name} {write.describe()} lost: its record "
                        f"{entry.describe()} was cut by the {entry.lost_by.describe()}{_diagnosis(entry)}"
                    )
                tally.add(write.level, "lost_allowed")
                continue
            if write.level is not Level.NONE and (
                entry.completion is None or entry.completion.record.kind is not Kind.COMMIT
            ):
                raise Violation(
                    f"acknowledged {write.level.name} {write.describe()}: its prepare {entry.describe()} ends "
                    f"{entry.completion.describe() if entry.completion else 'pending'}"
                )
            tally.add(write.level, "acked_kept")
        elif write.outcome == "ambiguous":
            entry = write.entry
            if entry is None or entry.lost_by is not None:
                tally.add(write.level, "ambiguous_absent")
            elif entry.completion is None:
                raise Violation(f"ambiguous {write.describe()}: its prepare {entry.describe()} is still pending")
            elif entry.completion.record.kind is Kind.COMMIT:
                tally.add(write.level, "ambiguous_applied")
            else:
                tally.add(write.level, "ambiguous_absent")
        elif write.outcome == "error":
            tally.add(write.level, "refused")
        else:
            raise Violation(f"{write.describe()} never got an answer")

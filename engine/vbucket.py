"""One vbucket's own state: its role, seqnos, failover log, CAS clock, locks, prepares.

Pure bookkeeping, no I/O. Invariants: `high_seqno` only grows (except by an explicit
rollback); every change in an active vbucket takes `high_seqno + 1` (a replica takes the
seqnos its active gave); `persisted_seqno` <= `high_seqno`; `high_prepared_seqno` <=
`last_prepare_seqno` <= `high_seqno` and `high_completed_seqno` <= `high_seqno`; the failover
log is newest first, at most FAILOVER_LOG_ENTRIES_MAX entries, its seqnos never decrease
towards the front, and it is never empty while the vbucket is active (a replica's is the one
its active gave it, empty after a rollback to zero: "I hold nothing").

The state JSON (`state_json`, kept in the store's meta as b"vb:<id>" and in VBUCKET_STATE
records) holds the seqnos a backfill and a restart need: high, HCS, HPS (the last prepare in
that state), purge seqno and the last complete snapshot's range. Fields added later are read
with a default, so older states load unchanged.
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from .document import Document, decode_document
from .hlc import HybridLogicalClock
from .limits import FAILOVER_LOG_ENTRIES_MAX


class VBState(Enum):
    ACTIVE = "active"
    REPLICA = "replica"
    PENDING = "pending"
    DEAD = "dead"


@dataclass(slots=True)
class Lock:
    cas: int  # the lock CAS handed to the locker
    until: float  # unix seconds


@dataclass(slots=True)
class PendingPrepare:
    """A SyncWrite in flight: its document becomes visible only when committed."""

    skey: bytes
    collection_id: int
    key: bytes
    document: Document
    level: int
    maybe_visible: bool = False  # reloaded at restart or received as a replica: reads wait for it


def encode_prepare_value(prepare: PendingPrepare) -> bytes:
    """A prepare as the store's `prepares` database holds it: durability level u8 | encoded Document."""
    return bytes((prepare.level,)) + prepare.document.encode()


def decode_prepare_value(value: bytes) -> tuple[int, Document]:
    """(level, document) of a stored prepare."""
    return value[0], decode_document(value[1:])


@dataclass
class VBucket:
    vbid: int
    state: VBState = VBState.ACTIVE
    high_seqno: int = 0
    persisted_seqno: int = 0
    failover_log: list[tuple[int, int]] = field(default_factory=list)
    hlc: HybridLogicalClock = field(default_factory=HybridLogicalClock)
    locks: dict[bytes, Lock] = field(default_factory=dict)
    prepares: dict[bytes, PendingPrepare] = field(default_factory=dict)
    high_completed_seqno: int = 0  # the highest prepare seqno committed or aborted (HCS)
    last_prepare_seqno: int = 0  # the highest prepare seqno this vbucket holds or held
    # The highest prepare seqno at or below the persisted seqno: every prepare up to it is
    # locally satisfied at any level. A replica restarts from it; a promotion seeds it.
    high_prepared_seqno: int = 0
    purge_seqno: int = 0  # tombstones at or below it may be gone from the store
    snapshot_start: int = 0  # the last complete snapshot a replica applied
    snapshot_end: int = 0
    prepares_unpersisted: deque[int] = field(default_factory=deque)  # prepare seqnos above persisted_seqno

    def next_seqno(self) -> int:
        self.high_seqno += 1
        return self.high_seqno

    def release_seqno(self, seqno: int) -> None:
        """Give back the seqno just taken for a record the log refused: seqnos stay gapless."""
        assert seqno == self.high_seqno, f"vbucket {self.vbid}: giving back {seqno}, the newest is {self.high_seqno}"
        self.high_seqno -= 1

    @property
    def uuid(self) -> int:
        return self.failover_log[0][0] if self.failover_log else 0

    def new_failover_entry(self, rng: random.Random) -> None:
        """Start a new history branch at the current high seqno (on becoming active, after a crash)."""
        # Entries above the high seqno belong to a branch that no longer exists here.
        self.failover_log = [(u, s) for (u, s) in self.failover_log if s <= self.high_seqno]
        uuid = 0
        while uuid == 0:
            uuid = rng.getrandbits(48)
        self.failover_log.insert(0, (uuid, self.high_seqno))
        del self.failover_log[FAILOVER_LOG_ENTRIES_MAX:]

    def note_prepare(self, seqno: int) -> None:
        """A prepare at `seqno` was logged (not yet known to be persisted)."""
        self.last_prepare_seqno = seqno
        self.prepares_unpersisted.append(seqno)

    def mark_persisted(self, seqno: int) -> None:
        if seqno > self.persisted_seqno:
            self.persisted_seqno = seqno
            pending = self.prepares_unpersisted
            while pending and pending[0] <= seqno:
                self.high_prepared_seqno = pending.popleft()

    def set_persisted(self, seqno: int) -> None:
        """Persistence as a restart or rollback finds it (may go back, unlike mark_persisted)."""
        self.persisted_seqno = seqno
        pending = self.prepares_unpersisted
        while pending and pending[0] <= seqno:
            self.high_prepared_seqno = pending.popleft()

    # -- persistence of the state itself (meta record / LMDB meta) -------------------
    def state_json(self) -> bytes:
        return json.dumps(
            {
                "state": self.state.value,
                "high_seqno": self.high_seqno,
                "failover_log": self.failover_log,
                "max_cas": self.hlc.max_cas,
                "high_completed_seqno": self.high_completed_seqno,
                "high_prepared_seqno": self.last_prepare_seqno,
                "purge_seqno": self.purge_seqno,
                "snapshot": [self.snapshot_start, self.snapshot_end],
            },
            separators=(",", ":"),
        ).encode()

    def load_state_json(self, raw: bytes) -> None:
        doc = json.loads(raw)
        self.state = VBState(doc["state"])
        self.high_seqno = max(self.high_seqno, doc["high_seqno"])
        self.failover_log = [(int(u), int(s)) for u, s in doc["failover_log"]]
        self.hlc.observe(doc["max_cas"])
        self.high_completed_seqno = max(self.high_completed_seqno, doc.get("high_completed_seqno", 0))
        self.last_prepare_seqno = max(self.last_prepare_seqno, doc.get("high_prepared_seqno", 0))
        self.purge_seqno = max(self.purge_seqno, doc.get("purge_seqno", 0))
        start, end = doc.get("snapshot", (0, 0))
        if end >= self.snapshot_end:
            self.snapshot_start, self.snapshot_end = start, end


class StoredSeqnos(NamedTuple):
    """The seqnos of a vbucket state as a checkpoint recorded them (all 0 for none)."""

    high_seqno: int = 0
    high_completed_seqno: int = 0
    high_prepared_seqno: int = 0
    purge_seqno: int = 0


def state_meta_key(vbid: int) -> bytes:
    """Where a checkpoint keeps a vbucket's state JSON in the store's meta."""
    return b"vb:%d" % vbid


def stored_seqnos(raw: bytes | None) -> StoredSeqnos:
    if raw is None:
        return StoredSeqnos()
    doc = json.loads(raw)
    return StoredSeqnos(
        doc["high_seqno"], doc.get("high_completed_seqno", 0), doc.get("high_prepared_seqno", 0),
        doc.get("purge_seqno", 0),
    )  # fmt: skip

"""One vbucket's own state: its role, seqnos, failover log, CAS clock, locks, prepares.

Pure bookkeeping, no I/O. Invariants: `high_seqno` only grows (except by an explicit
rollback); every change in the vbucket takes `high_seqno + 1`; `persisted_seqno` <=
`high_seqno`; the failover log is newest first, never empty, at most
FAILOVER_LOG_ENTRIES_MAX entries, and its seqnos never decrease towards the front.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from enum import Enum

from .document import Document
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

    def next_seqno(self) -> int:
        self.high_seqno += 1
        return self.high_seqno

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

    def mark_persisted(self, seqno: int) -> None:
        if seqno > self.persisted_seqno:
            self.persisted_seqno = seqno

    # -- persistence of the state itself (meta record / LMDB meta) -------------------
    def state_json(self) -> bytes:
        return json.dumps(
            {
                "state": self.state.value,
                "high_seqno": self.high_seqno,
                "failover_log": self.failover_log,
                "max_cas": self.hlc.max_cas,
            },
            separators=(",", ":"),
        ).encode()

    def load_state_json(self, raw: bytes) -> None:
        doc = json.loads(raw)
        self.state = VBState(doc["state"])
        self.high_seqno = max(self.high_seqno, doc["high_seqno"])
        self.failover_log = [(int(u), int(s)) for u, s in doc["failover_log"]]
        self.hlc.observe(doc["max_cas"])

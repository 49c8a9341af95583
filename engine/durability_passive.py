"""The durability monitor of a replica vbucket: the HPS (high prepared seqno) it acks.

A pure object like the active monitor: prepares, snapshot ends, persistence and completions
go in; `high_prepared_seqno` comes out, and the replication shell sends it to the active
whenever it moves. It decides nothing about commit or abort; those arrive from the active.

Rules (DESIGN §4-§5, reference §2.2, kv_engine's PassiveDM):

- Nothing is acked before the whole snapshot holding it is received (`snapshot_end`), and
  snapshots are taken in order: the HPS never passes into a snapshot it cannot finish.
- In a memory snapshot, MAJORITY and MAJORITY_AND_PERSIST_TO_ACTIVE prepares are satisfied
  once the snapshot is received; PERSIST_TO_MAJORITY ones once the whole snapshot is persisted.
  "Whole" matters: after a crash the replica resumes from its last complete snapshot, so a
  prepare persisted in the middle of one may still be rolled back.
- In a disk snapshot (backfill) nothing is satisfied until the whole snapshot is persisted,
  because deduplication may have replaced a persist-level prepare by a lower-level one. Once
  it is, the HPS moves to the snapshot's end even if that is not a prepare: prepares the
  backfill deduplicated away are persisted too and must be acked.
- An unsatisfied prepare is a fence: later prepares, whatever their level, do not pass it.
  A commit or abort received from the active does not lift the fence (the ack speaks for
  this node's copy, not the active's decision); a completed prepare is dropped once the HPS
  has passed it.

Invariants asserted: prepare seqnos and snapshot ends go forward, a prepare belongs to a
snapshot not yet ended, and the HPS and HCS never go backwards.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

from .durability import Level, Prepare, UnknownPrepareError, as_level


@dataclass(slots=True)
class _PassiveWrite:
    seqno: int
    key: bytes
    level: Level
    completed: bool = False


def _seqno(write: _PassiveWrite) -> int:
    return write.seqno


class PassiveDurabilityMonitor:
    """Computes the HPS that one replica vbucket acks to its active."""

    def __init__(self, *, high_prepared_seqno: int = 0, high_completed_seqno: int = 0) -> None:
        assert high_prepared_seqno >= 0 and high_completed_seqno >= 0
        self._hps = high_prepared_seqno
        self._hcs = high_completed_seqno
        self._persisted_seqno = 0
        self._writes: list[_PassiveWrite] = []  # seqno order from `_head` on
        self._head = 0
        self._by_seqno: dict[int, _PassiveWrite] = {}
        self._pending = 0  # tracked and not completed
        # Received snapshot ends the HPS has not yet moved through: (end seqno, disk?).
        self._snapshot_ends: deque[tuple[int, bool]] = deque()
        self._last_prepare_seqno = 0
        self._last_snapshot_end = 0

    def add_prepare(self, seqno: int, key: bytes, level: Level) -> None:
        """A prepare received in the snapshot now open (or carried over from an active
        monitor; those at or below the initial HPS count as passed)."""
        level = as_level(level)
        assert level is not Level.NONE, "a NONE write is not a SyncWrite"
        assert seqno > self._last_prepare_seqno, "prepare seqnos go forward"
        assert seqno > self._last_snapshot_end, "a prepare belongs to a snapshot not yet ended"
        self._last_prepare_seqno = seqno
        write = _PassiveWrite(seqno, key, level)
        self._writes.append(write)
        self._by_seqno[seqno] = write
        self._pending += 1

    def snapshot_end(self, seqno: int, *, disk: bool = False) -> None:
        """The whole snapshot ending at `seqno` has been received (`disk`: a backfill)."""
        assert seqno > self._last_snapshot_end, "snapshot ends go forward"
        assert seqno >= self._last_prepare_seqno, "a snapshot ends at or after its last prepare"
        self._last_snapshot_end = seqno
        self._snapshot_ends.append((seqno, disk))
        self._update_hps()

    def persisted(self, seqno: int) -> None:
        """The replica's WAL is fsynced up to `seqno` (lower values than before are ignored)."""
        if seqno > self._persisted_seqno:
            self._persisted_seqno = seqno
            self._update_hps()

    def complete(self, prepare_seqno: int) -> None:
        """A commit or abort for the prepare at `prepare_seqno` was received. Completions
        may come in any order (a disk snapshot deduplicates); an unknown or already
        completed prepare is the peer's mistake."""
        write = self._by_seqno.get(prepare_seqno)
        if write is None or write.completed:
            raise UnknownPrepareError(prepare_seqno)
        write.completed = True
        self._pending -= 1
        self._hcs = max(self._hcs, prepare_seqno)
        self._drop_passed()

    @property
    def high_prepared_seqno(self) -> int:
        return self._hps

    @property
    def high_completed_seqno(self) -> int:
        return self._hcs

    @property
    def pending_count(self) -> int:
        """Prepares received and not yet completed."""
        return self._pending

    def pending_prepares(self) -> tuple[Prepare, ...]:
        """The prepares not yet completed, in seqno order (to seed an active monitor on
        promotion, each with no deadline, along with this monitor's HPS and HCS)."""
        return tuple(Prepare(w.seqno, w.key, w.level) for w in self._writes[self._head :] if not w.completed)

    def __repr__(self) -> str:
        return (
            f"PassiveDurabilityMonitor(hps={self._hps}, hcs={self._hcs}, pending={self._pending}, "
            f"persisted={self._persisted_seqno}, snapshot_ends={list(self._snapshot_ends)})"
        )

    def _update_hps(self) -> None:
        writes = self._writes
        i = bisect.bisect_right(writes, self._hps, lo=self._head, key=_seqno)
        while self._snapshot_ends:
            end, disk = self._snapshot_ends[0]
            whole_persisted = self._persisted_seqno >= end
            while i < len(writes) and writes[i].seqno <= end:
                write = writes[i]
                if not (whole_persisted or (not disk and write.level is not Level.PERSIST_TO_MAJORITY)):
                    break  # the fence
                assert write.seqno > self._hps, "the HPS goes forward"
                self._hps = write.seqno
                i += 1
            if disk and whole_persisted:
                self._hps = max(self._hps, end)  # covers prepares the backfill deduplicated
            if disk and not whole_persisted:
                break  # nothing beyond an unpersisted disk snapshot may be acked
            if i < len(writes) and writes[i].seqno <= end:
                break  # stopped inside this snapshot, at a fence
            self._snapshot_ends.popleft()
        self._drop_passed()

    def _drop_passed(self) -> None:
        # A prepare stays tracked until it is both completed and passed by the HPS: until then
        # it may still be the fence.
        writes = self._writes
        while self._head < len(writes) and writes[self._head].completed and writes[self._head].seqno <= self._hps:
            del self._by_seqno[writes[self._head].seqno]
            self._head += 1
        if self._head > 64 and self._head * 2 > len(writes):
            del writes[: self._head]
            self._head = 0

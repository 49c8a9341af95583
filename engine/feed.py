"""The change feed: one vbucket's recent records, held in memory for the active's streams.

Every record of a vbucket also goes into its `VBucketFeed`, which the shell's producers
replay (`records_since`). A feed keeps at most FEED_RECORDS_MAX records and FEED_BYTES_MAX
bytes (less with many vbuckets: the bucket's feeds together stay within
FEED_BUCKET_RECORDS_MAX and FEED_BUCKET_BYTES_MAX), but never lets go of a record the store
has not checkpointed (the memtable-size checkpoint bounds those): the shell backfills from
the store only below `memory_start`, and `memory_start <= checkpointed_seqno + 1` whenever
`streamable`. Records of a disk snapshot a replica applied are deduplicated, so they are
never replayed as memory: the feed restarts after them and is not `streamable` until a
checkpoint covers them.

A feed does no I/O and reads no clock; `BucketCore` adds records to it and resets it
(engine/replica.py, engine/snapshot_apply.py, engine/replica_rollback.py), under the bucket lock.
"""

from __future__ import annotations

import bisect

from .errors import EngineError
from .records import Record

FEED_RECORDS_MAX = 10_000  # records a vbucket's feed holds once the store has them
FEED_BYTES_MAX = 4 * 1024 * 1024  # ... and bytes (key + value + _RECORD_OVERHEAD each)
FEED_BUCKET_RECORDS_MAX = 640_000  # the same for all of a bucket's feeds together
FEED_BUCKET_BYTES_MAX = 256 * 1024 * 1024
_RECORD_OVERHEAD = 64


class FeedTrimmedError(EngineError):
    """Records asked of a feed fell out of its window: the stream must backfill again."""

    def __init__(self, vbucket: int, from_seqno: int, memory_start: int) -> None:
        super().__init__(f"vbucket {vbucket}: records from {from_seqno} asked, the feed starts at {memory_start}")
        self.vbucket = vbucket
        self.from_seqno = from_seqno
        self.memory_start = memory_start


def _size(record: Record) -> int:
    doc = record.document
    return len(record.key) + (len(doc.value) if doc is not None else 0) + _RECORD_OVERHEAD


def _seqno(record: Record) -> int:
    return record.seqno


class VBucketFeed:
    """One vbucket's recent records, oldest first, for the active's streams to replay.

    Every record with seqno >= `memory_start` is held (a replica's disk snapshots aside, see
    the module docstring); `checkpointed_seqno` is the vbucket's high seqno in the store as
    of the last applied checkpoint. Read and changed only under the bucket lock."""

    __slots__ = ("_bytes", "_bytes_max", "_head", "_records", "_records_max", "checkpointed_seqno", "memory_start",
                 "vbucket")  # fmt: skip

    def __init__(self, vbucket: int, *, records_max: int = FEED_RECORDS_MAX, bytes_max: int = FEED_BYTES_MAX) -> None:
        self.vbucket = vbucket
        self._records_max = records_max
        self._bytes_max = bytes_max
        self._records: list[Record] = []
        self._head = 0
        self._bytes = 0
        self.memory_start = 1
        self.checkpointed_seqno = 0

    @property
    def streamable(self) -> bool:
        """A backfill from the store reaches the memory window (else: refuse streams for now)."""
        return self.memory_start <= self.checkpointed_seqno + 1

    def records_since(self, from_seqno: int) -> list[Record]:
        """The records with seqno >= from_seqno, in order. FeedTrimmedError when from_seqno is
        below `memory_start` (they are only in the store now)."""
        if from_seqno < self.memory_start:
            raise FeedTrimmedError(self.vbucket, from_seqno, self.memory_start)
        start = bisect.bisect_left(self._records, from_seqno, lo=self._head, key=_seqno)
        return self._records[start:]

    def __len__(self) -> int:
        return len(self._records) - self._head

    def _add(self, record: Record) -> None:
        self._records.append(record)
        self._bytes += _size(record)
        if len(self._records) - self._head > self._records_max or self._bytes > self._bytes_max:
            self._trim()

    def _trim(self) -> None:
        held = self._records
        while len(held) - self._head > self._records_max or self._bytes > self._bytes_max:
            oldest = held[self._head]
            if oldest.seqno > self.checkpointed_seqno:
                break  # only the store could serve it: it stays
            self._bytes -= _size(oldest)
            self._head += 1
            self.memory_start = oldest.seqno + 1
        if self._head > 1024 and self._head * 2 > len(held):
            del held[: self._head]
            self._head = 0

    def _reset(self, memory_start: int) -> None:
        self._records = []
        self._head = 0
        self._bytes = 0
        self.memory_start = memory_start

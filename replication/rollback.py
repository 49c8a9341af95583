"""The producer's answer to a stream request: resume, roll back (to which seqno), or refuse.

A pure function of the request and the producer vbucket's failover log, high seqno and purge
seqno (reference §3.3-3.5, Couchbase's rollback.md and FailoverTable::needsRollback). It owns
nothing and must never look at anything else: same inputs, same answer.

Pre-step (normalisation of the replica's snapshot): if start == snapshot end, the snapshot is
complete (snapshot start := snapshot end); else if start == snapshot start, nothing of it was
received (snapshot end := snapshot start). Only a replica strictly inside a snapshot keeps a
range; its consistent points are its snapshot end and anything up to its snapshot start.

`upper(uuid)` is where the replica's branch stops being the producer's history: the seqno of
the next-newer failover-log entry, or the producer's high seqno if the uuid is the newest.

The decision table, first matching row wins (`ROWS`; the test enumerates every row):

| row | when | answer |
|---|---|---|
| START_OUTSIDE_SNAPSHOT | not snapshot_start <= start <= snapshot_end (as sent) | Refusal |
| END_BEFORE_START | end != 0 and start > end | Refusal |
| NOTHING_HELD | start == 0 and uuid == 0 | Resume |
| PURGED | start != 0 and snapshot_start < purge seqno (unless purged tombstones are ignored) | Rollback(0) |
| UNKNOWN_UUID | uuid not in the failover log | Rollback(0) |
| WITHIN_BRANCH | snapshot_end <= upper | Resume |
| AFTER_BRANCH_MOSTLY | midpoint option, snapshot_start > upper, more than half of start rolled back | Rollback(0) |
| AFTER_BRANCH | snapshot_start > upper | Rollback(upper) |
| ACROSS_BRANCH_MOSTLY | midpoint option, more than half of start rolled back | Rollback(0) |
| ACROSS_BRANCH | snapshot_start <= upper < snapshot_end | Rollback(snapshot_start) |

"More than half": 2 * (start - rollback seqno) > start (Couchbase's
couchstore_midpoint_rollback_optimisation, default on: past that point a rebuild from 0 is
cheaper than undoing). Couchbase applies it in the replica's store; here the producer applies
it to its answer, which the replica follows the same way.

Invariants (asserted, and proven by the exhaustive test): a Rollback seqno is never above the
request's start, and a Resume never has start above the producer's high seqno. The latter is
why "start <= high seqno" is not a refusal row: with the rows above it can only fail where a
rule already answers Rollback, and a refusal there would leave a replica that is ahead of a
newly promoted active unable to ever roll back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from .items import StreamRequest


class Row(Enum):
    START_OUTSIDE_SNAPSHOT = "start_outside_snapshot"
    END_BEFORE_START = "end_before_start"
    NOTHING_HELD = "nothing_held"
    PURGED = "purged"
    UNKNOWN_UUID = "unknown_uuid"
    WITHIN_BRANCH = "within_branch"
    AFTER_BRANCH_MOSTLY = "after_branch_mostly"
    AFTER_BRANCH = "after_branch"
    ACROSS_BRANCH_MOSTLY = "across_branch_mostly"
    ACROSS_BRANCH = "across_branch"


@dataclass(frozen=True, slots=True)
class Resume:
    """Stream from the request's start: the replica's history is the producer's."""

    row: Row


@dataclass(frozen=True, slots=True)
class Rollback:
    """The replica must roll back to at most `seqno`, then request again."""

    seqno: int
    row: Row


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request contradicts itself (RANGE_ERROR on the wire); `row` says how."""

    row: Row


Decision = Resume | Rollback | Refusal


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything a row may look at, snapshot range already normalised."""

    start: int
    end: int
    uuid: int
    snapshot_start_sent: int
    snapshot_end_sent: int
    snapshot_start: int
    snapshot_end: int
    purge_seqno: int
    upper: int | None  # None: the uuid is not in the producer's failover log
    midpoint_to_zero: bool
    ignore_purged_tombstones: bool


def _mostly(start: int, seqno: int) -> bool:
    return 2 * (start - seqno) > start


def _upper(f: Facts) -> int:
    assert f.upper is not None
    return f.upper


@dataclass(frozen=True, slots=True)
class TableRow:
    row: Row
    when: Callable[[Facts], bool]
    answer: Callable[[Facts], Decision]


ROWS: tuple[TableRow, ...] = (
    TableRow(
        Row.START_OUTSIDE_SNAPSHOT,
        lambda f: not (f.snapshot_start_sent <= f.start <= f.snapshot_end_sent),
        lambda f: Refusal(Row.START_OUTSIDE_SNAPSHOT),
    ),
    TableRow(Row.END_BEFORE_START, lambda f: f.end != 0 and f.start > f.end, lambda f: Refusal(Row.END_BEFORE_START)),
    TableRow(Row.NOTHING_HELD, lambda f: f.start == 0 and f.uuid == 0, lambda f: Resume(Row.NOTHING_HELD)),
    TableRow(
        Row.PURGED,
        lambda f: f.start != 0 and f.snapshot_start < f.purge_seqno and not f.ignore_purged_tombstones,
        lambda f: Rollback(0, Row.PURGED),
    ),
    TableRow(Row.UNKNOWN_UUID, lambda f: f.upper is None, lambda f: Rollback(0, Row.UNKNOWN_UUID)),
    TableRow(Row.WITHIN_BRANCH, lambda f: f.snapshot_end <= _upper(f), lambda f: Resume(Row.WITHIN_BRANCH)),
    TableRow(
        Row.AFTER_BRANCH_MOSTLY,
        lambda f: f.midpoint_to_zero and f.snapshot_start > _upper(f) and _mostly(f.start, _upper(f)),
        lambda f: Rollback(0, Row.AFTER_BRANCH_MOSTLY),
    ),
    TableRow(Row.AFTER_BRANCH, lambda f: f.snapshot_start > _upper(f), lambda f: Rollback(_upper(f), Row.AFTER_BRANCH)),
    TableRow(
        Row.ACROSS_BRANCH_MOSTLY,
        lambda f: f.midpoint_to_zero and _mostly(f.start, f.snapshot_start),
        lambda f: Rollback(0, Row.ACROSS_BRANCH_MOSTLY),
    ),
    # The only case left: snapshot_start <= upper < snapshot_end.
    TableRow(Row.ACROSS_BRANCH, lambda f: True, lambda f: Rollback(f.snapshot_start, Row.ACROSS_BRANCH)),
)


def normalise(start: int, snapshot_start: int, snapshot_end: int) -> tuple[int, int]:
    """The pre-step: a snapshot the replica finished, or never started, collapses to `start`."""
    if start == snapshot_end:
        return snapshot_end, snapshot_end
    if start == snapshot_start:
        return snapshot_start, snapshot_start
    return snapshot_start, snapshot_end


def branch_upper(failover_log: Sequence[tuple[int, int]], uuid: int, high_seqno: int) -> int | None:
    """Where the branch `uuid` stops being this history (None: not in the log)."""
    upper = high_seqno
    for entry_uuid, entry_seqno in failover_log:  # newest first
        if entry_uuid == uuid:
            return upper
        upper = min(entry_seqno, high_seqno)  # an entry is never above the high seqno; clamp anyway
    return None


def decide(
    request: StreamRequest,
    *,
    failover_log: Sequence[tuple[int, int]],
    high_seqno: int,
    purge_seqno: int,
    midpoint_to_zero: bool = True,
    ignore_purged_tombstones: bool = False,
) -> Decision:
    """The answer to `request` from a producer whose vbucket has this log and these seqnos."""
    assert failover_log, "a vbucket's failover log is never empty"
    assert 0 <= purge_seqno <= high_seqno
    start = request.start_seqno
    snapshot_start, snapshot_end = normalise(start, request.snapshot_start_seqno, request.snapshot_end_seqno)
    facts = Facts(
        start=start,
        end=request.end_seqno,
        uuid=request.vbucket_uuid,
        snapshot_start_sent=request.snapshot_start_seqno,
        snapshot_end_sent=request.snapshot_end_seqno,
        snapshot_start=snapshot_start,
        snapshot_end=snapshot_end,
        purge_seqno=purge_seqno,
        upper=branch_upper(failover_log, request.vbucket_uuid, high_seqno),
        midpoint_to_zero=midpoint_to_zero,
        ignore_purged_tombstones=ignore_purged_tombstones,
    )
    for table_row in ROWS:
        if table_row.when(facts):
            decision = table_row.answer(facts)
            break
    else:  # pragma: no cover - the last row matches everything
        raise AssertionError("the decision table is not exhaustive")
    if isinstance(decision, Rollback):
        assert 0 <= decision.seqno <= start, (decision, request)
    if isinstance(decision, Resume):
        assert start <= high_seqno, (decision, request, high_seqno)
    return decision

"""replication.rollback: every row of the decision table, every input of a small domain, and a
Hypothesis run against a brute-force restatement of the rules.

The restatement does not follow the table: it lists the seqnos at which the replica's copy is
consistent (anything up to the start of an unfinished snapshot, and that snapshot's end), takes
the largest one the producer's history still shares with the replica's branch, and resumes if
that is the start, else rolls back to it.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durakv.replication.items import StreamRequest
from durakv.replication.rollback import ROWS, Refusal, Resume, Rollback, Row, branch_upper, decide, normalise

A, B, C, UNKNOWN = 0xA1, 0xB2, 0xC3, 0xD4
LOG = ((C, 8), (B, 4), (A, 0))  # newest first: A's history ran to 4, B's to 8, C's is current
HIGH = 12


def req(start, snap_start=None, snap_end=None, uuid=C, end=0):
    snap_start = start if snap_start is None else snap_start
    snap_end = start if snap_end is None else snap_end
    return StreamRequest(
        vbucket=0,
        vbucket_uuid=uuid,
        start_seqno=start,
        snapshot_start_seqno=snap_start,
        snapshot_end_seqno=snap_end,
        end_seqno=end,
    )


# One line per row: the request, the producer, the answer. Together they cover ROWS.
ROW_CASES = [
    # row, request, purge seqno, midpoint option, expected
    (Row.START_OUTSIDE_SNAPSHOT, req(5, 6, 9), 0, True, Refusal(Row.START_OUTSIDE_SNAPSHOT)),
    (Row.START_OUTSIDE_SNAPSHOT, req(9, 2, 7), 0, True, Refusal(Row.START_OUTSIDE_SNAPSHOT)),
    (Row.END_BEFORE_START, req(9, end=5), 0, True, Refusal(Row.END_BEFORE_START)),
    (Row.NOTHING_HELD, req(0, uuid=0), 3, True, Resume(Row.NOTHING_HELD)),
    (Row.PURGED, req(6), 7, True, Rollback(0, Row.PURGED)),
    (Row.UNKNOWN_UUID, req(6, uuid=UNKNOWN), 0, True, Rollback(0, Row.UNKNOWN_UUID)),
    (Row.UNKNOWN_UUID, req(0, uuid=UNKNOWN), 0, True, Rollback(0, Row.UNKNOWN_UUID)),
    (Row.WITHIN_BRANCH, req(10), 0, True, Resume(Row.WITHIN_BRANCH)),
    (Row.WITHIN_BRANCH, req(8, uuid=B), 0, True, Resume(Row.WITHIN_BRANCH)),  # exactly at the branch end
    (Row.WITHIN_BRANCH, req(3, 2, 4, uuid=A), 0, True, Resume(Row.WITHIN_BRANCH)),  # mid-snapshot, inside
    (Row.AFTER_BRANCH_MOSTLY, req(10, uuid=A), 0, True, Rollback(0, Row.AFTER_BRANCH_MOSTLY)),
    (Row.AFTER_BRANCH, req(10, uuid=A), 0, False, Rollback(4, Row.AFTER_BRANCH)),
    (Row.AFTER_BRANCH, req(11, uuid=B), 0, True, Rollback(8, Row.AFTER_BRANCH)),
    (Row.ACROSS_BRANCH_MOSTLY, req(9, 3, 11, uuid=A), 0, True, Rollback(0, Row.ACROSS_BRANCH_MOSTLY)),
    (Row.ACROSS_BRANCH, req(9, 3, 11, uuid=A), 0, False, Rollback(3, Row.ACROSS_BRANCH)),
    (Row.ACROSS_BRANCH, req(9, 7, 10, uuid=B), 0, True, Rollback(7, Row.ACROSS_BRANCH)),
]


@pytest.mark.parametrize(("row", "request_", "purge", "midpoint", "expected"), ROW_CASES, ids=lambda v: str(v))
def test_rollback_decide_each_row_answers_as_the_table(row, request_, purge, midpoint, expected):
    decision = decide(request_, failover_log=LOG, high_seqno=HIGH, purge_seqno=purge, midpoint_to_zero=midpoint)
    assert decision == expected
    assert decision.row is row


def test_rollback_row_cases_cover_every_row():
    assert {case[0] for case in ROW_CASES} == {r.row for r in ROWS} == set(Row)


def test_rollback_normalise_complete_or_untouched_snapshot_collapses_to_start():
    assert normalise(7, 3, 7) == (7, 7)  # finished: complete
    assert normalise(3, 3, 7) == (3, 3)  # nothing of it received
    assert normalise(5, 3, 7) == (3, 7)  # strictly inside: kept


def test_rollback_purged_ignored_when_the_option_says_so():
    decision = decide(req(6), failover_log=LOG, high_seqno=HIGH, purge_seqno=7, ignore_purged_tombstones=True)
    assert decision == Resume(Row.WITHIN_BRANCH)


def test_rollback_purge_below_a_complete_snapshot_start_resumes():
    # The pre-step makes a finished snapshot [2, 6] count from 6, above the purge seqno.
    assert decide(req(6, 2, 6), failover_log=LOG, high_seqno=HIGH, purge_seqno=5) == Resume(Row.WITHIN_BRANCH)


def test_rollback_midpoint_exactly_half_keeps_the_exact_seqno():
    # start 8, rollback to 4: exactly half goes, not more than half.
    assert decide(req(8, uuid=A), failover_log=LOG, high_seqno=HIGH, purge_seqno=0) == Rollback(4, Row.AFTER_BRANCH)
    assert decide(req(9, uuid=A), failover_log=LOG, high_seqno=HIGH, purge_seqno=0) == Rollback(
        0, Row.AFTER_BRANCH_MOSTLY
    )


def test_rollback_replica_ahead_of_a_promoted_active_rolls_back_not_refused():
    # The new active (B's branch began at 4, it holds 6) sees a replica at 9 on A: roll back.
    log = ((B, 6), (A, 0))
    assert decide(req(9, uuid=A), failover_log=log, high_seqno=6, purge_seqno=0, midpoint_to_zero=False) == Rollback(
        6, Row.AFTER_BRANCH
    )
    assert decide(req(9, uuid=B), failover_log=log, high_seqno=6, purge_seqno=0, midpoint_to_zero=False) == Rollback(
        6, Row.AFTER_BRANCH
    )


def test_rollback_branch_upper_clamps_to_the_high_seqno():
    assert branch_upper(LOG, C, HIGH) == HIGH
    assert branch_upper(LOG, B, HIGH) == 8
    assert branch_upper(LOG, A, HIGH) == 4
    assert branch_upper(LOG, A, 3) == 3
    assert branch_upper(LOG, UNKNOWN, HIGH) is None


# -- the brute-force restatement -----------------------------------------------------------------
def brute(request: StreamRequest, log, high, purge, midpoint, ignore_purged):
    s, ss, se, uuid = (
        request.start_seqno,
        request.snapshot_start_seqno,
        request.snapshot_end_seqno,
        request.vbucket_uuid,
    )
    if not ss <= s <= se:
        return ("refuse", Row.START_OUTSIDE_SNAPSHOT)
    if request.end_seqno and s > request.end_seqno:
        return ("refuse", Row.END_BEFORE_START)
    if s == 0 and uuid == 0:
        return ("resume",)
    inside = ss < s < se  # the replica stopped in the middle of a snapshot
    consistent_from = ss if inside else s
    if s != 0 and consistent_from < purge and not ignore_purged:
        return ("rollback", 0)
    uuids = [u for u, _ in log]
    if uuid not in uuids:
        return ("rollback", 0)
    newer = [seqno for _, seqno in log[: uuids.index(uuid)]]
    shared_up_to = min([*newer, high])  # the newer branches began at these seqnos
    points = set(range(ss + 1)) | {se} if inside else set(range(s + 1))
    best = max(p for p in points if p <= shared_up_to)
    if best >= s:
        return ("resume",)
    if midpoint and 2 * (s - best) > s:
        best = 0
    return ("rollback", best)


def shape(decision):
    match decision:
        case Resume():
            return ("resume",)
        case Rollback(seqno=seqno):
            return ("rollback", seqno)
        case Refusal(row=row):
            return ("refuse", row)


LOGS = (
    ((A, 0),),
    ((B, 2), (A, 0)),
    ((C, 3), (B, 2), (A, 0)),
    ((B, 0), (A, 0)),  # a failover before anything was written
)


def test_rollback_every_input_of_a_small_domain_matches_brute_force_and_hits_every_row():
    fired: set[Row] = set()
    for log, high, purge, uuid, start, snap_start, snap_end, end, midpoint, ignore in itertools.product(
        LOGS, range(5), range(3), (0, A, B, C), range(5), range(5), range(5), (0, 2), (True, False), (True, False)
    ):
        if high < log[0][1] or purge > high:
            continue  # no vbucket is in this state
        request = StreamRequest(0, uuid, start, snap_start, snap_end, end)
        decision = decide(
            request,
            failover_log=log,
            high_seqno=high,
            purge_seqno=purge,
            midpoint_to_zero=midpoint,
            ignore_purged_tombstones=ignore,
        )
        assert shape(decision) == brute(request, log, high, purge, midpoint, ignore), (request, log, high, purge)
        fired.add(decision.row)
    assert fired == set(Row)


def test_rollback_unknown_uuid_at_start_zero_rolls_back_to_zero():
    # uuid != 0 with start 0 is still checked (reference §3.5 rule 1).
    assert decide(req(0, uuid=UNKNOWN), failover_log=LOG, high_seqno=HIGH, purge_seqno=0) == Rollback(
        0, Row.UNKNOWN_UUID
    )


@st.composite
def producers(draw):
    seqnos = sorted(draw(st.lists(st.integers(0, 2_000), min_size=1, max_size=25)), reverse=True)
    uuids = draw(st.lists(st.integers(1, 2**48 - 1), min_size=len(seqnos), max_size=len(seqnos), unique=True))
    log = tuple(zip(uuids, seqnos, strict=True))
    high = draw(st.integers(seqnos[0], 2_400))
    purge = draw(st.integers(0, high))
    return log, high, purge


@settings(max_examples=1000, deadline=None)
@given(
    producer=producers(),
    points=st.lists(st.integers(0, 2_500), min_size=3, max_size=3),
    uuid_pick=st.integers(-2, 24),
    end=st.one_of(st.just(0), st.integers(0, 2_500)),
    midpoint=st.booleans(),
    ignore=st.booleans(),
)
def test_rollback_decide_matches_brute_force(producer, points, uuid_pick, end, midpoint, ignore):
    log, high, purge = producer
    if uuid_pick == -2:
        uuid = 0
    elif uuid_pick == -1 or uuid_pick >= len(log):
        uuid = 2**48  # not in the log
    else:
        uuid = log[uuid_pick][0]
    snap_start, start, snap_end = sorted(points) if uuid_pick % 3 else points  # mostly well formed
    request = StreamRequest(0, uuid, start, snap_start, snap_end, end)
    decision = decide(
        request,
        failover_log=log,
        high_seqno=high,
        purge_seqno=purge,
        midpoint_to_zero=midpoint,
        ignore_purged_tombstones=ignore,
    )
    assert shape(decision) == brute(request, log, high, purge, midpoint, ignore)
    if isinstance(decision, Rollback):
        assert decision.seqno <= start
    if isinstance(decision, Resume):
        assert start <= high

"""Document expiry through the SDK, and the engine's expiry pager (reference §5.4, §5.5, §5.1).

The SDK sends durations under 30 days as relative seconds and longer ones as absolute unix
times; either way a `timedelta` means "this long from now". Expired documents read as missing;
an access or the pager turns them into tombstones. Waiting for an expiry polls against a
deadline.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from durakv.exceptions import DocumentNotFoundException, InvalidArgumentException
from durakv.options import (
    GetAndTouchOptions,
    GetOptions,
    InsertOptions,
    ReplaceOptions,
    TouchOptions,
    UpsertOptions,
)

DAY_S = 24 * 3600


def expiry_in(coll, key: str, **kwargs) -> float | None:
    """Seconds from now until `key` expires, or None if it never does."""
    expiry_time = coll.get(key, GetOptions(with_expiry=True), **kwargs).expiry_time
    return None if expiry_time is None else expiry_time.timestamp() - time.time()


def gone(coll, key: str) -> bool:
    try:
        coll.get(key)
    except DocumentNotFoundException:
        return True
    return False


# -- how a timedelta becomes an expiry --------------------------------------------------------


@pytest.mark.parametrize(
    "ttl",
    [
        timedelta(seconds=10),
        timedelta(hours=1),
        timedelta(days=29),
        timedelta(days=30) - timedelta(seconds=1),
        timedelta(days=30),
        timedelta(days=31),
        timedelta(days=365),
        timedelta(days=50 * 365),
    ],
    ids=["10s", "1h", "29d", "30d-1s", "30d", "31d", "1y", "50y"],
)
def test_expiry_is_that_long_from_now_on_both_sides_of_30_days(coll, ttl):
    coll.upsert("k", {"v": 1}, expiry=ttl)
    remaining = expiry_in(coll, "k")
    assert remaining is not None
    assert ttl.total_seconds() - 3 <= remaining <= ttl.total_seconds() + 1


def test_expiry_beyond_30_days_is_not_taken_as_already_past(coll):
    coll.insert("k", {"v": 1}, InsertOptions(expiry=timedelta(days=31)))
    assert coll.exists("k").exists is True
    assert expiry_in(coll, "k") > 30 * DAY_S


def test_fractional_seconds_are_truncated(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(seconds=100, milliseconds=900))
    assert 97 <= expiry_in(coll, "k") <= 100.5


def test_zero_expiry_means_never(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(0))
    assert expiry_in(coll, "k") is None


@pytest.mark.parametrize(
    "write",
    [
        lambda c, e: c.insert("new", {"v": 1}, expiry=e),
        lambda c, e: c.upsert("k", {"v": 2}, UpsertOptions(expiry=e)),
        lambda c, e: c.replace("k", {"v": 2}, expiry=e),
        lambda c, e: c.touch("k", e),
        lambda c, e: c.get_and_touch("k", e),
    ],
    ids=["insert", "upsert", "replace", "touch", "get_and_touch"],
)
@pytest.mark.parametrize("bad", [timedelta(seconds=-1), 10, 10.0, "10s"], ids=["negative", "int", "float", "str"])
def test_negative_or_non_timedelta_expiry_raises_invalid_argument_and_changes_nothing(coll, probe, write, bad):
    stored = coll.upsert("k", {"v": 1})
    before = probe.high_seqno_total()
    with pytest.raises(InvalidArgumentException):
        write(coll, bad)
    assert probe.high_seqno_total() == before
    got = coll.get("k", with_expiry=True)
    assert got.cas == stored.cas
    assert got.expiry_time is None
    assert coll.exists("new").exists is False


# -- expired documents ------------------------------------------------------------------------


def test_document_is_gone_once_its_expiry_passes(coll, wait_until):
    coll.upsert("k", {"v": 1}, expiry=timedelta(seconds=1))
    assert coll.get("k").content_as[dict] == {"v": 1}
    wait_until(lambda: gone(coll, "k"), deadline_s=4, what="expiry")
    assert coll.exists("k").exists is False
    with pytest.raises(DocumentNotFoundException):
        coll.replace("k", {"v": 2})
    coll.insert("k", {"v": 3})  # an expired document does not block insert
    assert coll.get("k").content_as[dict] == {"v": 3}


def test_expired_document_accessed_becomes_a_tombstone(coll, probe, wait_until):
    coll.upsert("k", {"v": 1}, expiry=timedelta(seconds=1))
    wait_until(lambda: gone(coll, "k"), deadline_s=4, what="expiry")
    tomb = probe.document("k")
    assert tomb is not None and tomb.deleted is True


def test_expiry_pager_turns_expired_documents_into_tombstones(coll, probe, wait_until):
    expiring = [f"exp-{i}" for i in range(5)]
    for key in expiring:
        coll.upsert(key, {"v": key}, expiry=timedelta(seconds=1))
    coll.upsert("keeper", {"v": 1}, expiry=timedelta(hours=1))
    coll.upsert("forever", {"v": 1})
    before = probe.high_seqno_total()
    # Poll the pager itself (nothing reads the documents, so only the pager can expire them).
    expired = []

    def pager_expired_all() -> bool:
        expired.append(probe.embedded.run_expiry_pager())
        return sum(expired) >= 5

    wait_until(pager_expired_all, what="pager")
    assert sum(expired) == 5
    assert probe.high_seqno_total() == before + 5  # one expiration record each
    for key in expiring:
        tomb = probe.document(key)
        assert tomb is not None and tomb.deleted is True and tomb.value == b""
        assert coll.exists(key).exists is False
    assert probe.document("keeper").deleted is False
    assert probe.document("forever").deleted is False
    assert probe.embedded.run_expiry_pager() == 0  # nothing left to expire


def test_expiry_pager_finds_expired_documents_in_the_checkpoint_store(coll, probe, wait_until):
    coll.upsert("k", {"v": 1}, expiry=timedelta(seconds=1))
    assert probe.embedded.checkpoint() is True  # now only in LMDB, not in the memtable
    wait_until(lambda: probe.embedded.run_expiry_pager() == 1, what="pager")
    assert probe.document("k").deleted is True


# -- touch / get_and_touch ----------------------------------------------------------------------


def test_touch_sets_a_new_expiry_and_cas(coll):
    stored = coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    touched = coll.touch("k", timedelta(hours=2), TouchOptions(timeout=timedelta(seconds=2)))
    assert touched.cas != stored.cas
    assert 7190 <= expiry_in(coll, "k") <= 7201
    got = coll.get("k")
    assert got.cas == touched.cas
    assert got.content_as[dict] == {"v": 1}


def test_touch_with_zero_clears_the_expiry(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    coll.touch("k", timedelta(0))
    assert expiry_in(coll, "k") is None


def test_touch_with_the_same_expiry_keeps_the_cas(coll):
    stored = coll.upsert("k", {"v": 1})  # no expiry
    assert coll.touch("k", timedelta(0)).cas == stored.cas
    assert coll.get("k").cas == stored.cas


def test_touch_to_the_same_absolute_expiry_keeps_the_cas(coll):
    # Two touches within one wall-clock second compute the same absolute expiry.
    coll.upsert("k", {"v": 1})
    for _ in range(10):
        second_started = int(time.time())
        first = coll.touch("k", timedelta(hours=1))
        second = coll.touch("k", timedelta(hours=1))
        if int(time.time()) == second_started:
            assert second.cas == first.cas
            return
    pytest.fail("never managed two touches within one wall-clock second")


def test_touch_missing_document_raises_document_not_found(coll):
    with pytest.raises(DocumentNotFoundException):
        coll.touch("missing", timedelta(hours=1))


def test_get_and_touch_returns_the_document_and_changes_expiry(coll):
    stored = coll.upsert("k", {"v": 1})
    got = coll.get_and_touch("k", timedelta(hours=1), GetAndTouchOptions(timeout=timedelta(seconds=2)))
    assert got.content_as[dict] == {"v": 1}
    assert got.cas != stored.cas
    assert got.cas == coll.get("k").cas
    assert 3590 <= expiry_in(coll, "k") <= 3601


def test_get_and_touch_missing_document_raises_document_not_found(coll):
    with pytest.raises(DocumentNotFoundException):
        coll.get_and_touch("missing", timedelta(hours=1))


def test_touch_positional_expiry_wins_over_options(coll):
    coll.upsert("k", {"v": 1})
    coll.touch("k", timedelta(hours=2), TouchOptions(expiry=timedelta(hours=5)))
    assert 7190 <= expiry_in(coll, "k") <= 7201


# -- preserve_expiry ----------------------------------------------------------------------------


def test_plain_upsert_resets_expiry_to_none(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    coll.upsert("k", {"v": 2})
    assert expiry_in(coll, "k") is None


def test_plain_replace_resets_expiry_to_none(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    coll.replace("k", {"v": 2})
    assert expiry_in(coll, "k") is None


def test_upsert_with_preserve_expiry_keeps_the_expiry(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    before = coll.get("k", with_expiry=True).expiry_time
    coll.upsert("k", {"v": 2}, UpsertOptions(preserve_expiry=True))
    got = coll.get("k", with_expiry=True)
    assert got.expiry_time == before
    assert got.content_as[dict] == {"v": 2}


def test_upsert_with_preserve_expiry_ignores_a_new_expiry_for_an_existing_document(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    before = coll.get("k", with_expiry=True).expiry_time
    coll.upsert("k", {"v": 2}, expiry=timedelta(hours=5), preserve_expiry=True)
    assert coll.get("k", with_expiry=True).expiry_time == before


def test_upsert_with_preserve_expiry_of_missing_document_uses_the_given_expiry(coll):
    coll.upsert("new", {"v": 1}, expiry=timedelta(hours=1), preserve_expiry=True)
    assert 3590 <= expiry_in(coll, "new") <= 3601


def test_replace_with_preserve_expiry_keeps_the_expiry(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    before = coll.get("k", with_expiry=True).expiry_time
    coll.replace("k", {"v": 2}, ReplaceOptions(preserve_expiry=True))
    assert coll.get("k", with_expiry=True).expiry_time == before


def test_replace_with_expiry_and_preserve_expiry_raises_invalid_argument(coll, probe):
    stored = coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    before = probe.high_seqno_total()
    with pytest.raises(InvalidArgumentException):
        coll.replace("k", {"v": 2}, ReplaceOptions(expiry=timedelta(hours=2), preserve_expiry=True))
    with pytest.raises(InvalidArgumentException):
        coll.replace("k", {"v": 2}, expiry=timedelta(hours=2), preserve_expiry=True)
    assert probe.high_seqno_total() == before
    assert coll.get("k").cas == stored.cas


def test_counter_keeps_the_expiry_of_an_existing_document(coll):
    coll.binary().increment("c", expiry=timedelta(hours=1))
    before = coll.get("c", with_expiry=True).expiry_time
    coll.binary().increment("c")
    assert coll.get("c", with_expiry=True).expiry_time == before

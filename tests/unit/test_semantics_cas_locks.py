"""get_and_lock / unlock and writes against a locked document (reference §1.5, §1.8, §5.1, §5.7).

A locked document refuses every mutation that does not carry the lock CAS with LOCKED; the SDK
retries that until its deadline and then raises `DocumentLockedException`, so these tests pass a
short timeout. A plain get of a locked document shows CAS 2**64-1.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from durakv.exceptions import (
    CasMismatchException,
    DocumentLockedException,
    DocumentNotFoundException,
    DocumentNotLockedException,
)
from durakv.options import GetAndLockOptions, ReplaceOptions, UnlockOptions, UpsertOptions

SHORT_TIMEOUT = timedelta(milliseconds=300)
CAS_LOCKED = 2**64 - 1
LOCK_TIME_DEFAULT_S = 15


@pytest.fixture
def locked(coll):
    """A document 'k' = {"v": 1}, locked for 10 s: (its pre-lock CAS, the lock CAS)."""
    stored = coll.upsert("k", {"v": 1})
    lock = coll.get_and_lock("k", timedelta(seconds=10))
    return stored.cas, lock.cas


def test_get_and_lock_returns_document_with_a_lock_cas_distinct_from_its_cas(coll):
    stored = coll.upsert("k", {"v": 1})
    lock = coll.get_and_lock("k", timedelta(seconds=10))
    assert lock.content_as[dict] == {"v": 1}
    assert lock.cas not in (0, stored.cas, CAS_LOCKED)


def test_get_of_locked_document_shows_cas_all_ones(coll, locked):
    _, lock_cas = locked
    got = coll.get("k")
    assert got.cas == CAS_LOCKED
    assert got.cas != lock_cas
    assert got.content_as[dict] == {"v": 1}


@pytest.mark.parametrize(
    "write",
    [
        lambda c: c.upsert("k", {"v": 2}, UpsertOptions(timeout=SHORT_TIMEOUT)),
        lambda c: c.replace("k", {"v": 2}, timeout=SHORT_TIMEOUT),
        lambda c: c.remove("k", timeout=SHORT_TIMEOUT),
    ],
    ids=["upsert", "replace", "remove"],
)
def test_write_without_lock_cas_while_locked_raises_document_locked(coll, locked, write, probe):
    before = probe.high_seqno_total()
    started = time.monotonic()
    with pytest.raises(DocumentLockedException):
        write(coll)
    assert time.monotonic() - started >= 0.25  # the SDK retried until its deadline
    assert probe.high_seqno_total() == before
    assert coll.get("k").content_as[dict] == {"v": 1}


def test_replace_with_pre_lock_cas_while_locked_is_refused(coll, locked):
    # Only the lock CAS opens the lock; the document's own CAS does not.
    pre_lock_cas, _ = locked
    with pytest.raises(DocumentLockedException):
        coll.replace("k", {"v": 2}, cas=pre_lock_cas, timeout=SHORT_TIMEOUT)
    assert coll.get("k").content_as[dict] == {"v": 1}


def test_replace_with_lock_cas_succeeds_and_releases_the_lock(coll, locked):
    _, lock_cas = locked
    replaced = coll.replace("k", {"v": 2}, ReplaceOptions(cas=lock_cas))
    assert replaced.cas not in (lock_cas, CAS_LOCKED)
    got = coll.get("k")
    assert got.cas == replaced.cas
    assert got.content_as[dict] == {"v": 2}
    coll.upsert("k", {"v": 3}, timeout=SHORT_TIMEOUT)  # no lock any more
    assert coll.get("k").content_as[dict] == {"v": 3}


def test_remove_with_lock_cas_succeeds(coll, locked):
    _, lock_cas = locked
    coll.remove("k", cas=lock_cas)
    assert coll.exists("k").exists is False


def test_unlock_with_lock_cas_restores_the_pre_lock_cas(coll, locked):
    pre_lock_cas, lock_cas = locked
    assert coll.unlock("k", lock_cas) is None
    assert coll.get("k").cas == pre_lock_cas
    coll.upsert("k", {"v": 2}, timeout=SHORT_TIMEOUT)


def test_unlock_with_options_object(coll, locked):
    _, lock_cas = locked
    coll.unlock("k", lock_cas, UnlockOptions(timeout=timedelta(seconds=2)))
    assert coll.get("k").cas != CAS_LOCKED


def test_unlock_with_wrong_cas_raises_cas_mismatch_and_keeps_the_lock(coll, locked):
    pre_lock_cas, lock_cas = locked
    with pytest.raises(CasMismatchException):
        coll.unlock("k", pre_lock_cas)
    assert coll.get("k").cas == CAS_LOCKED
    coll.unlock("k", lock_cas)


def test_unlock_of_unlocked_document_raises_document_not_locked(coll):
    stored = coll.upsert("k", {"v": 1})
    with pytest.raises(DocumentNotLockedException):
        coll.unlock("k", stored.cas)


def test_unlock_of_missing_document_raises_document_not_found(coll):
    with pytest.raises(DocumentNotFoundException):
        coll.unlock("missing", 12345)


def test_get_and_lock_of_locked_document_raises_document_locked(coll, locked):
    with pytest.raises(DocumentLockedException):
        coll.get_and_lock("k", timedelta(seconds=5), GetAndLockOptions(timeout=SHORT_TIMEOUT))


def test_get_and_lock_of_missing_document_raises_document_not_found(coll):
    with pytest.raises(DocumentNotFoundException):
        coll.get_and_lock("missing", timedelta(seconds=5))


def test_lock_expires_after_lock_time(coll, wait_until):
    stored = coll.upsert("k", {"v": 1})
    coll.get_and_lock("k", timedelta(seconds=1))
    assert coll.get("k").cas == CAS_LOCKED
    wait_until(lambda: coll.get("k").cas != CAS_LOCKED, deadline_s=4, what="lock expiry")
    assert coll.get("k").cas == stored.cas
    coll.upsert("k", {"v": 2}, timeout=SHORT_TIMEOUT)


@pytest.mark.parametrize("lock_time", [timedelta(0), timedelta(seconds=31)], ids=["zero", "above_max"])
def test_lock_time_zero_or_above_30s_becomes_the_15s_default(coll, probe, lock_time):
    coll.upsert("k", {"v": 1})
    before = time.time()
    lock = coll.get_and_lock("k", lock_time)
    held = probe.lock_of("k")
    assert held is not None and held.cas == lock.cas
    assert LOCK_TIME_DEFAULT_S - 1 <= held.until - before <= LOCK_TIME_DEFAULT_S + 1
    assert coll.get("k").cas == CAS_LOCKED  # the lock is held, not skipped
    coll.unlock("k", lock.cas)
    assert coll.get("k").cas != CAS_LOCKED


def test_lock_time_of_30s_is_kept(coll, probe):
    coll.upsert("k", {"v": 1})
    before = time.time()
    lock = coll.get_and_lock("k", timedelta(seconds=30))
    assert 29 <= probe.lock_of("k").until - before <= 31
    coll.unlock("k", lock.cas)


def test_exists_of_locked_document_is_true(coll, locked):
    assert coll.exists("k").exists is True


def test_each_get_and_lock_hands_out_a_new_lock_cas(coll):
    coll.upsert("k", {"v": 1})
    first = coll.get_and_lock("k", timedelta(seconds=10))
    coll.unlock("k", first.cas)
    second = coll.get_and_lock("k", timedelta(seconds=10))
    assert second.cas != first.cas
    coll.unlock("k", second.cas)

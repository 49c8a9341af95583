"""The KV core (BucketEngine) driven directly, over the real WAL and LMDB store, with a fake clock.

Time is a parameter of every operation, so expiry, lock expiry and durability timeouts are
tested by passing a later `now`, never by waiting. WAL persistence reaches the engine only when
a test calls `rig.persist()` (enginekit), so a persist-level prepare can be held unpersisted.

What is checked beyond the answer: every refusal leaves the footprint (every vbucket's high
seqno, the WAL end, the memtable, prepares, locks, manifest) exactly as it was, and a write the
WAL refuses answers TMPFAIL without consuming a seqno.
"""

from __future__ import annotations

import pytest

import durakv.engine.kv as kv_module
from durakv.engine.bucket import BucketConfig, MutationOutcome
from durakv.engine.durability import Level
from durakv.engine.errors import KVError, Status
from durakv.engine.hlc import CAS_LOCKED
from durakv.engine.limits import (
    DURABILITY_TIMEOUT_MAX_MS,
    EXPIRY_ABSOLUTE_MAX_S,
    EXPIRY_RELATIVE_MAX_S,
    KEY_LEN_MAX_DEFAULT_COLLECTION,
    KEY_LEN_MAX_NAMED_COLLECTION,
    LOCK_TIME_DEFAULT_S,
    VALUE_SIZE_MAX,
)
from durakv.engine.pending import Pending
from durakv.engine.records import Kind
from durakv.engine.vbucket import VBState

try:
    from enginekit import T0, EngineRig, RefusingWal, keys_in_one_vbucket, refused
except ImportError:  # tests/unit became a package
    from tests.unit.enginekit import T0, EngineRig, RefusingWal, keys_in_one_vbucket, refused

D = ("_default", "_default")  # scope, collection
NAMED = ("_default", "named")
# Levels as the wire carries them (plain ints); test_durability_level_enum_is_accepted covers Level itself.
MAJORITY = int(Level.MAJORITY)
MAJORITY_AND_PERSIST = int(Level.MAJORITY_AND_PERSIST_TO_ACTIVE)
PERSIST = int(Level.PERSIST_TO_MAJORITY)
PERSIST_LEVELS = [MAJORITY_AND_PERSIST, PERSIST]
DURABLE_LEVELS = [MAJORITY, *PERSIST_LEVELS]


@pytest.fixture
def make_rig(tmp_path):
    rigs: list[EngineRig] = []

    def make(config: BucketConfig | None = None, **kwargs) -> EngineRig:
        rig = EngineRig(tmp_path / f"bucket{len(rigs)}", config, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.abandon()


@pytest.fixture
def rig(make_rig) -> EngineRig:
    return make_rig()


def named_collection(rig: EngineRig, name: str = "named", max_ttl_s: int = 0) -> None:
    rig.engine.change_manifest(lambda m: m.create_collection("_default", name, max_ttl_s))


# -- expiry ----------------------------------------------------------------------------------


def test_expiry_of_exactly_30_days_is_relative_and_one_second_more_is_absolute(make_rig):
    rig = make_rig(now=1000.0)
    e = rig.engine
    e.upsert(*D, b"relative", b"v", 0, 1000.0, expiry=EXPIRY_RELATIVE_MAX_S)
    e.upsert(*D, b"absolute", b"v", 0, 1000.0, expiry=EXPIRY_RELATIVE_MAX_S + 1)
    assert EXPIRY_RELATIVE_MAX_S == 2_592_000
    assert e.get(*D, b"relative", 1000.0).expiry == 1000 + 2_592_000
    assert e.get(*D, b"absolute", 1000.0).expiry == 2_592_001


def test_expiry_relative_counts_whole_seconds_from_now(make_rig):
    rig = make_rig(now=1000.0)
    rig.engine.upsert(*D, b"k", b"v", 0, 1000.75, expiry=30)
    assert rig.engine.get(*D, b"k", 1000.75).expiry == 1030


@pytest.mark.parametrize(
    "absolute",
    [int(T0) - 100, int(T0) + 10],
    ids=["before_the_node_started", "after_start_before_now"],
)
def test_expiry_absolute_in_the_past_is_expired_at_once(rig, absolute):
    now = T0 + 31
    rig.engine.insert(*D, b"k", b"v", 0, now, expiry=absolute)
    stored = rig.document(b"k")
    assert stored.expiry <= now
    if absolute <= T0:
        assert stored.expiry == int(T0) + 1  # "one second after the start", as Couchbase
    with refused(Status.KEY_ENOENT):
        rig.engine.get(*D, b"k", now)
    assert rig.document(b"k").deleted


def test_expiry_at_the_32_bit_limit_is_taken_and_beyond_it_is_einval(rig):
    rig.engine.upsert(*D, b"k", b"v", 0, T0, expiry=EXPIRY_ABSOLUTE_MAX_S)
    assert rig.engine.get(*D, b"k", T0).expiry == 2**32 - 1
    before = rig.footprint()
    with refused(Status.EINVAL):
        rig.engine.upsert(*D, b"k", b"w", 0, T0, expiry=EXPIRY_ABSOLUTE_MAX_S + 1)
    assert rig.footprint() == before


def test_expiry_relative_that_overflows_32_bits_is_einval(make_rig):
    late = float(EXPIRY_ABSOLUTE_MAX_S - 10)
    rig = make_rig(now=late)
    before = rig.footprint()
    with refused(Status.EINVAL):
        rig.engine.insert(*D, b"k", b"v", 0, late, expiry=11)
    assert rig.footprint() == before
    rig.engine.insert(*D, b"k", b"v", 0, late, expiry=10)
    assert rig.engine.get(*D, b"k", late).expiry == EXPIRY_ABSOLUTE_MAX_S


@pytest.mark.parametrize(
    ("wire", "expected_offset"),
    [(0, 60), (30, 30), (60, 60), (120, 60), (int(T0) + 10**6, 60)],
    ids=["none", "below_cap", "at_cap", "above_cap", "absolute_above_cap"],
)
def test_expiry_is_capped_by_bucket_max_ttl(make_rig, wire, expected_offset):
    rig = make_rig(BucketConfig("b", num_vbuckets=4, max_ttl_s=60))
    rig.engine.upsert(*D, b"k", b"v", 0, T0, expiry=wire)
    assert rig.engine.get(*D, b"k", T0).expiry == int(T0) + expected_offset


@pytest.mark.parametrize(
    ("collection_ttl", "wire", "expected_offset"),
    [(10, 0, 10), (10, 5, 5), (10, 30, 10), (120, 0, 120), (120, 90, 90), (0, 0, 60)],
    ids=["short_none", "short_below", "short_above", "long_none", "long_below", "unset_uses_bucket"],
)
def test_expiry_collection_max_ttl_replaces_the_bucket_cap(make_rig, collection_ttl, wire, expected_offset):
    rig = make_rig(BucketConfig("b", num_vbuckets=4, max_ttl_s=60))
    named_collection(rig, max_ttl_s=collection_ttl)
    rig.engine.upsert(*NAMED, b"k", b"v", 0, T0, expiry=wire)
    assert rig.engine.get(*NAMED, b"k", T0).expiry == int(T0) + expected_offset


def test_lazy_expiry_on_read_writes_an_expiration_record_and_a_tombstone(rig):
    rig.engine.upsert(*D, b"k", b"v", 0, T0, expiry=30)
    vb = rig.vbucket(b"k")
    assert rig.engine.get(*D, b"k", T0 + 29.999).value == b"v"
    seqno = vb.high_seqno
    with refused(Status.KEY_ENOENT):
        rig.engine.get(*D, b"k", T0 + 31)
    assert vb.high_seqno == seqno + 1
    tomb = rig.document(b"k")
    assert tomb.deleted and tomb.value == b"" and tomb.seqno == seqno + 1
    (expiration,) = rig.records_of(Kind.EXPIRATION)
    assert expiration.key == b"k" and expiration.seqno == seqno + 1 and expiration.document.deleted
    # Seen once: later reads find the tombstone and write nothing more.
    assert rig.engine.exists(*D, b"k", T0 + 32) == (False, tomb.cas)
    assert vb.high_seqno == seqno + 1


def test_lazy_expiry_at_exactly_the_expiry_second_hides_the_document(rig):
    rig.engine.upsert(*D, b"k", b"v", 0, T0, expiry=30)
    exists, _ = rig.engine.exists(*D, b"k", T0 + 30)
    assert exists is False
    assert rig.document(b"k").deleted


def test_expiry_pager_expires_only_what_is_still_expired(rig):
    rig.engine.upsert(*D, b"old", b"v", 0, T0, expiry=30)
    rig.engine.upsert(*D, b"young", b"v", 0, T0, expiry=300)
    skeys = list(rig.engine.memtable.live)
    assert rig.engine.expire(skeys, T0 + 31) == 1
    assert rig.document(b"old").deleted
    assert rig.engine.get(*D, b"young", T0 + 31).value == b"v"
    assert [r.key for r in rig.records_of(Kind.EXPIRATION)] == [b"old"]


def test_expiry_pager_leaves_a_document_under_a_pending_sync_write_and_does_not_count_it(rig):
    # Reference §5.5: pending prepares never expire until completed; the committed version under
    # one is hidden from reads once past its expiry, but no expiration is written for it.
    rig.engine.upsert(*D, b"k", b"v", 0, T0, expiry=30)
    rig.engine.replace(*D, b"k", b"w", 0, T0, expiry=30, level=PERSIST)
    seqnos = rig.high_seqnos()
    skeys = list(rig.engine.memtable.live)
    assert rig.engine.expire(skeys, T0 + 31) == 0
    assert rig.high_seqnos() == seqnos and not rig.records_of(Kind.EXPIRATION)


# -- locks -----------------------------------------------------------------------------------


def test_lock_holds_until_just_before_its_end_and_is_gone_at_exactly_until(rig):
    e = rig.engine
    stored = e.upsert(*D, b"k", b"v", 0, T0)
    lock = e.get_and_lock(*D, b"k", 10, T0)
    assert lock.cas not in (stored.cas, CAS_LOCKED)
    assert rig.vbucket(b"k").locks[rig.engine.locate(*D, b"k").skey].until == T0 + 10
    just_before = T0 + 10 - 0.001
    assert e.get(*D, b"k", just_before).cas == CAS_LOCKED
    with refused(Status.LOCKED):
        e.upsert(*D, b"k", b"w", 0, just_before)
    assert e.get(*D, b"k", T0 + 10).cas == stored.cas
    e.upsert(*D, b"k", b"w", 0, T0 + 10)
    assert e.get(*D, b"k", T0 + 10).value == b"w"


@pytest.mark.parametrize("lock_time_s", [0, 31], ids=["zero", "above_max"])
def test_lock_time_zero_or_above_max_is_the_default(rig, lock_time_s):
    rig.engine.upsert(*D, b"k", b"v", 0, T0)
    rig.engine.get_and_lock(*D, b"k", lock_time_s, T0)
    lock = rig.vbucket(b"k").locks[rig.engine.locate(*D, b"k").skey]
    assert lock.until == T0 + LOCK_TIME_DEFAULT_S


def test_lock_cas_unlocks_and_write_with_lock_cas_releases_it(rig):
    e = rig.engine
    stored = e.upsert(*D, b"k", b"v", 0, T0)
    lock = e.get_and_lock(*D, b"k", 10, T0)
    e.unlock(*D, b"k", lock.cas, T0 + 1)
    assert e.get(*D, b"k", T0 + 1).cas == stored.cas
    lock = e.get_and_lock(*D, b"k", 10, T0 + 2)
    replaced = e.replace(*D, b"k", b"w", 0, T0 + 3, cas=lock.cas)
    assert e.get(*D, b"k", T0 + 3).cas == replaced.cas


# -- touch -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "again", "later_s"),
    [(100, 69, 31), (0, 0, 31), (int(T0) + 5000, int(T0) + 5000, 31)],
    ids=["relative_to_the_same_second", "none_to_none", "same_absolute"],
)
def test_touch_with_the_same_absolute_expiry_changes_nothing(rig, first, again, later_s):
    stored = rig.engine.upsert(*D, b"k", b"v", 0, T0, expiry=first)
    before = rig.footprint()
    touched = rig.engine.touch(*D, b"k", again, T0 + later_s)
    assert (touched.cas, touched.seqno) == (stored.cas, stored.seqno)
    assert rig.footprint() == before


def test_touch_with_a_new_expiry_takes_a_new_cas_and_seqno_and_keeps_the_value(rig):
    stored = rig.engine.upsert(*D, b"k", b"v", 7, T0, expiry=100)
    touched = rig.engine.touch(*D, b"k", 200, T0 + 1)
    assert touched.cas > stored.cas and touched.seqno == stored.seqno + 1
    got = rig.engine.get(*D, b"k", T0 + 1)
    assert (got.value, got.flags, got.expiry, got.cas) == (b"v", 7, int(T0) + 201, touched.cas)


# -- SyncWrites ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", PERSIST_LEVELS, ids=lambda lv: Level(lv).name)
def test_persist_level_prepare_is_invisible_until_persisted_then_commits(rig, level):
    e = rig.engine
    old = e.upsert(*D, b"k", b"old", 0, T0)
    e.insert(*D, b"fresh-seed", b"x", 0, T0)  # something unrelated before the prepares
    before_prepares = rig.persist()
    pending = e.upsert(*D, b"k", b"new", 0, T0, level=level)
    fresh = e.insert(*D, b"fresh", b"new", 0, T0, level=level)
    assert isinstance(pending, Pending) and not pending.done and not fresh.done
    assert e.get(*D, b"k", T0).value == b"old" and e.get(*D, b"k", T0).cas == old.cas
    with refused(Status.KEY_ENOENT):
        e.get(*D, b"fresh", T0)
    assert e.exists(*D, b"fresh", T0)[0] is False
    (prepare, _) = rig.records_of(Kind.PREPARE)
    assert prepare.key == b"k" and prepare.level == level and not rig.records_of(Kind.COMMIT)

    e.on_persisted(before_prepares)  # an fsync that ends before the prepares: no change
    assert not pending.done

    rig.persist()
    assert pending.done and fresh.done
    outcome = pending.outcome()
    assert isinstance(outcome, MutationOutcome)
    assert outcome.cas == prepare.document.cas
    got = e.get(*D, b"k", T0)
    assert (got.value, got.cas) == (b"new", outcome.cas)
    assert e.get(*D, b"fresh", T0).value == b"new"
    commits = {r.key: r for r in rig.records_of(Kind.COMMIT)}
    assert commits[b"k"].prepare_seqno == prepare.seqno
    assert commits[b"k"].seqno == outcome.seqno > prepare.seqno


def _pending_write_ops():
    return {
        "insert": lambda e, now: e.insert(*D, b"k", b"x", 0, now),
        "upsert": lambda e, now: e.upsert(*D, b"k", b"x", 0, now),
        "upsert_durable": lambda e, now: e.upsert(*D, b"k", b"x", 0, now, level=MAJORITY),
        "replace": lambda e, now: e.replace(*D, b"k", b"x", 0, now),
        "replace_with_cas": lambda e, now: e.replace(*D, b"k", b"x", 0, now, cas=e.get(*D, b"k", now).cas),
        "remove": lambda e, now: e.remove(*D, b"k", now),
        "touch": lambda e, now: e.touch(*D, b"k", 100, now),
        "get_and_touch": lambda e, now: e.get_and_touch(*D, b"k", 100, now),
        "get_and_lock": lambda e, now: e.get_and_lock(*D, b"k", 10, now),
        "unlock": lambda e, now: e.unlock(*D, b"k", 12345, now),
        "increment": lambda e, now: e.counter(*D, b"k", 1, 0, now),
        "decrement": lambda e, now: e.counter(*D, b"k", -1, None, now),
        "append": lambda e, now: e.concat(*D, b"k", b"x", now),
        "prepend": lambda e, now: e.concat(*D, b"k", b"x", now, prepend=True),
    }


@pytest.mark.parametrize("op", list(_pending_write_ops()))
def test_write_while_a_sync_write_is_pending_is_sync_write_in_progress(rig, op):
    e = rig.engine
    e.upsert(*D, b"k", b"1", 0, T0)
    pending = e.upsert(*D, b"k", b"2", 0, T0, level=PERSIST)
    before = rig.footprint()
    with refused(Status.SYNC_WRITE_IN_PROGRESS):
        _pending_write_ops()[op](e, T0 + 1)
    assert rig.footprint() == before
    rig.persist()
    assert pending.done and e.get(*D, b"k", T0 + 1).value == b"2"
    try:  # once the SyncWrite completed the key is free: the op now succeeds or fails on its own merits
        _pending_write_ops()[op](e, T0 + 2)
    except KVError as exc:
        assert exc.status is not Status.SYNC_WRITE_IN_PROGRESS


def test_insert_while_a_new_key_is_only_prepared_is_sync_write_in_progress(rig):
    rig.engine.insert(*D, b"k", b"1", 0, T0, level=PERSIST)
    before = rig.footprint()
    with refused(Status.SYNC_WRITE_IN_PROGRESS):
        rig.engine.insert(*D, b"k", b"2", 0, T0)
    with refused(Status.SYNC_WRITE_IN_PROGRESS):
        rig.engine.upsert(*D, b"k", b"2", 0, T0)
    with refused(Status.KEY_ENOENT):  # existence is checked first (MB-37342)
        rig.engine.replace(*D, b"k", b"2", 0, T0)
    assert rig.footprint() == before


def test_durability_timeout_aborts_answers_ambiguous_and_keeps_the_old_value(rig):
    e = rig.engine
    old = e.upsert(*D, b"k", b"old", 0, T0)
    pending = e.upsert(*D, b"k", b"new", 0, T0, level=PERSIST, timeout_ms=1500)
    (prepare,) = rig.records_of(Kind.PREPARE)
    e.tick(T0 + 1.499)
    assert not pending.done
    e.tick(T0 + 1.5)
    assert pending.done
    with refused(Status.SYNC_WRITE_AMBIGUOUS):
        pending.outcome()
    got = e.get(*D, b"k", T0 + 2)
    assert (got.value, got.cas) == (b"old", old.cas)
    (abort,) = rig.records_of(Kind.ABORT)
    assert abort.prepare_seqno == prepare.seqno and abort.seqno == prepare.seqno + 1
    assert rig.vbucket(b"k").high_seqno == abort.seqno
    rig.persist()  # the aborted prepare reaching the disk commits nothing
    assert e.get(*D, b"k", T0 + 2).value == b"old" and not rig.records_of(Kind.COMMIT)
    e.upsert(*D, b"k", b"after", 0, T0 + 2)  # the key is free again
    assert e.get(*D, b"k", T0 + 2).value == b"after"


def test_durability_timeout_default_is_30_seconds(rig):
    pending = rig.engine.upsert(*D, b"k", b"v", 0, T0, level=PERSIST)
    rig.engine.tick(T0 + 29.999)
    assert not pending.done
    rig.engine.tick(T0 + 30)
    assert pending.done and pending.error.status is Status.SYNC_WRITE_AMBIGUOUS


def test_sync_writes_complete_in_seqno_order_behind_an_unpersisted_fence(rig):
    e = rig.engine
    a, b = keys_in_one_vbucket(2, rig.config.num_vbuckets)
    order: list[bytes] = []
    first = e.upsert(*D, a, b"A", 0, T0, level=PERSIST)
    second = e.upsert(*D, b, b"B", 0, T0, level=MAJORITY)
    first.add_callback(lambda _: order.append(a))
    second.add_callback(lambda _: order.append(b))
    assert not second.done  # a MAJORITY prepare cannot pass the persist-level one before it
    with refused(Status.KEY_ENOENT):
        e.get(*D, b, T0)
    rig.persist()
    assert order == [a, b]
    commits = rig.records_of(Kind.COMMIT)
    assert [c.key for c in commits] == [a, b]
    assert commits[0].seqno < commits[1].seqno
    assert first.outcome().seqno < second.outcome().seqno


def test_abort_of_the_front_prepare_lets_the_one_behind_it_commit(rig):
    e = rig.engine
    a, b = keys_in_one_vbucket(2, rig.config.num_vbuckets)
    order: list[tuple[bytes, bool]] = []
    first = e.upsert(*D, a, b"A", 0, T0, level=PERSIST, timeout_ms=1000)
    second = e.upsert(*D, b, b"B", 0, T0, level=MAJORITY, timeout_ms=60_000)
    first.add_callback(lambda p: order.append((a, p.error is None)))
    second.add_callback(lambda p: order.append((b, p.error is None)))
    e.tick(T0 + 1)
    assert order == [(a, False), (b, True)]
    assert e.get(*D, b, T0 + 1).value == b"B"
    with refused(Status.KEY_ENOENT):
        e.get(*D, a, T0 + 1)


def test_majority_on_zero_replicas_commits_at_once(rig):
    e = rig.engine
    pending = e.insert(*D, b"k", b"v", 0, T0, level=MAJORITY)
    assert pending.done  # no fsync needed: the active alone is the majority, and MAJORITY is satisfied when queued
    outcome = pending.outcome()
    got = e.get(*D, b"k", T0)
    assert (got.value, got.cas) == (b"v", outcome.cas)
    assert rig.document_kinds() == [Kind.PREPARE, Kind.COMMIT]


def test_sync_writes_beyond_the_pending_limit_are_tmpfail(rig, monkeypatch):
    monkeypatch.setattr(kv_module, "PENDING_PREPARES_MAX", 3)
    pendings = [rig.engine.upsert(*D, b"k%d" % i, b"v", 0, T0, level=PERSIST) for i in range(3)]
    before = rig.footprint()
    with refused(Status.TMPFAIL):
        rig.engine.upsert(*D, b"k3", b"v", 0, T0, level=PERSIST)
    assert rig.footprint() == before
    rig.engine.upsert(*D, b"k3", b"v", 0, T0)  # plain writes are not limited
    rig.persist()
    assert all(p.done for p in pendings)
    assert rig.engine.upsert(*D, b"k4", b"v", 0, T0, level=PERSIST) is not None


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
@pytest.mark.parametrize("level", DURABLE_LEVELS, ids=lambda lv: Level(lv).name)
def test_durable_write_with_replicas_configured_on_one_node_is_impossible(make_rig, num_replicas, level):
    rig = make_rig(BucketConfig("b", num_vbuckets=4, num_replicas=num_replicas))
    e = rig.engine
    e.upsert(*D, b"k", b"1", 0, T0)
    before = rig.footprint()
    writes = [
        lambda: e.insert(*D, b"new", b"v", 0, T0, level=level),
        lambda: e.upsert(*D, b"k", b"v", 0, T0, level=level),
        lambda: e.replace(*D, b"k", b"v", 0, T0, level=level),
        lambda: e.remove(*D, b"k", T0, level=level),
        lambda: e.counter(*D, b"c", 1, 0, T0, level=level),
        lambda: e.concat(*D, b"k", b"v", T0, level=level),
    ]
    for write in writes:
        with refused(Status.DURABILITY_IMPOSSIBLE):
            write()
    assert rig.footprint() == before
    assert isinstance(e.upsert(*D, b"k", b"2", 0, T0), MutationOutcome)  # plain writes still work


def test_durability_min_level_persist_makes_a_plain_write_a_sync_write(make_rig):
    rig = make_rig(BucketConfig("b", num_vbuckets=4, durability_min_level=PERSIST))
    e = rig.engine
    pending = e.upsert(*D, b"k", b"v", 0, T0)
    assert isinstance(pending, Pending) and not pending.done
    raised = e.upsert(*D, b"j", b"v", 0, T0, level=MAJORITY)
    assert [r.level for r in rig.records_of(Kind.PREPARE)] == [PERSIST] * 2
    with refused(Status.KEY_ENOENT):
        e.get(*D, b"k", T0)
    rig.persist()
    assert pending.done and raised.done
    assert e.get(*D, b"k", T0).value == b"v"


def test_durability_min_level_majority_commits_a_plain_write_at_once(make_rig):
    rig = make_rig(BucketConfig("b", num_vbuckets=4, durability_min_level=MAJORITY))
    pending = rig.engine.upsert(*D, b"k", b"v", 0, T0)
    assert isinstance(pending, Pending) and pending.done
    assert rig.document_kinds() == [Kind.PREPARE, Kind.COMMIT]


def test_durability_min_level_on_a_replicated_bucket_makes_plain_writes_impossible(make_rig):
    rig = make_rig(BucketConfig("b", num_vbuckets=4, num_replicas=1, durability_min_level=MAJORITY))
    before = rig.footprint()
    with refused(Status.DURABILITY_IMPOSSIBLE):
        rig.engine.upsert(*D, b"k", b"v", 0, T0)
    assert rig.footprint() == before


def test_durability_level_enum_is_accepted(make_rig):
    # durakv.engine.durability.Level is an IntEnum numbered as on the wire: the engine's own
    # name for a level must be as good as the number, in a request and in a bucket config.
    rig = make_rig()
    pending = rig.engine.upsert(*D, b"k", b"v", 0, T0, level=Level.MAJORITY)
    assert pending.done and rig.engine.get(*D, b"k", T0).value == b"v"
    assert BucketConfig("c", durability_min_level=Level.MAJORITY).durability_min_level == 1


@pytest.mark.parametrize("level", [True, 1.0, "1", None], ids=["bool", "float", "str", "none"])
def test_durability_level_of_another_type_is_invalid_level(rig, level):
    before = rig.footprint()
    with refused(Status.DURABILITY_INVALID_LEVEL):
        rig.engine.upsert(*D, b"k", b"v", 0, T0, level=level)
    assert rig.footprint() == before


@pytest.mark.parametrize("timeout_ms", [0, DURABILITY_TIMEOUT_MAX_MS + 1, -1], ids=["zero", "65535", "negative"])
def test_durability_reserved_timeouts_are_invalid_level(rig, timeout_ms):
    assert DURABILITY_TIMEOUT_MAX_MS + 1 == 65535
    before = rig.footprint()
    with refused(Status.DURABILITY_INVALID_LEVEL):
        rig.engine.upsert(*D, b"k", b"v", 0, T0, level=MAJORITY, timeout_ms=timeout_ms)
    assert rig.footprint() == before


@pytest.mark.parametrize("timeout_ms", [1, DURABILITY_TIMEOUT_MAX_MS])
def test_durability_timeouts_at_the_ends_of_the_range_are_taken(rig, timeout_ms):
    pending = rig.engine.upsert(*D, b"k", b"v", 0, T0, level=PERSIST, timeout_ms=timeout_ms)
    rig.engine.tick(T0 + timeout_ms / 1000 - 0.0005)
    assert not pending.done
    rig.engine.tick(T0 + timeout_ms / 1000)
    assert pending.done and pending.error.status is Status.SYNC_WRITE_AMBIGUOUS


# -- refusals change nothing -----------------------------------------------------------------

BIG = b"x" * (VALUE_SIZE_MAX - 1)


def _bad_requests():
    """(name, status, request(engine, locked_cas)) -- each must be refused and change nothing."""
    long_default = b"k" * (KEY_LEN_MAX_DEFAULT_COLLECTION + 1)
    long_named = b"k" * (KEY_LEN_MAX_NAMED_COLLECTION + 1)
    return [
        ("empty_key", Status.EINVAL, lambda e, _: e.insert(*D, b"", b"v", 0, T0)),
        ("key_251_default", Status.EINVAL, lambda e, _: e.upsert(*D, long_default, b"v", 0, T0)),
        ("key_247_named", Status.EINVAL, lambda e, _: e.upsert(*NAMED, long_named, b"v", 0, T0)),
        ("get_key_251", Status.EINVAL, lambda e, _: e.get(*D, long_default, T0)),
        ("value_too_big", Status.E2BIG, lambda e, _: e.upsert(*D, b"doc", b"x" * (VALUE_SIZE_MAX + 1), 0, T0)),
        ("insert_too_big", Status.E2BIG, lambda e, _: e.insert(*D, b"new", b"x" * (VALUE_SIZE_MAX + 1), 0, T0)),
        ("append_grows_too_big", Status.E2BIG, lambda e, _: e.concat(*D, b"big", b"yy", T0)),
        ("insert_existing", Status.KEY_EEXISTS, lambda e, _: e.insert(*D, b"doc", b"v", 0, T0)),
        ("replace_wrong_cas", Status.KEY_EEXISTS, lambda e, _: e.replace(*D, b"doc", b"v", 0, T0, cas=1)),
        ("remove_wrong_cas", Status.KEY_EEXISTS, lambda e, _: e.remove(*D, b"doc", T0, cas=1)),
        ("append_wrong_cas", Status.KEY_EEXISTS, lambda e, _: e.concat(*D, b"doc", b"v", T0, cas=1)),
        ("replace_missing", Status.KEY_ENOENT, lambda e, _: e.replace(*D, b"missing", b"v", 0, T0)),
        ("remove_missing", Status.KEY_ENOENT, lambda e, _: e.remove(*D, b"missing", T0)),
        ("touch_missing", Status.KEY_ENOENT, lambda e, _: e.touch(*D, b"missing", 10, T0)),
        ("lock_missing", Status.KEY_ENOENT, lambda e, _: e.get_and_lock(*D, b"missing", 10, T0)),
        ("unlock_missing", Status.KEY_ENOENT, lambda e, _: e.unlock(*D, b"missing", 1, T0)),
        ("decrement_missing", Status.KEY_ENOENT, lambda e, _: e.counter(*D, b"missing", -1, None, T0)),
        ("append_missing", Status.NOT_STORED, lambda e, _: e.concat(*D, b"missing", b"v", T0)),
        ("counter_not_a_number", Status.DELTA_BADVAL, lambda e, _: e.counter(*D, b"doc", 1, 0, T0)),
        ("upsert_locked", Status.LOCKED, lambda e, _: e.upsert(*D, b"locked", b"v", 0, T0)),
        ("replace_locked", Status.LOCKED, lambda e, _: e.replace(*D, b"locked", b"v", 0, T0)),
        ("remove_locked", Status.LOCKED, lambda e, _: e.remove(*D, b"locked", T0)),
        ("touch_locked", Status.LOCKED, lambda e, _: e.touch(*D, b"locked", 100, T0)),
        ("append_locked", Status.LOCKED, lambda e, _: e.concat(*D, b"locked", b"v", T0)),
        ("counter_locked", Status.LOCKED, lambda e, _: e.counter(*D, b"locked", 1, 0, T0)),
        ("relock", Status.LOCKED, lambda e, _: e.get_and_lock(*D, b"locked", 10, T0)),
        ("unlock_wrong_cas", Status.LOCKED, lambda e, cas: e.unlock(*D, b"locked", cas + 1, T0)),
        ("unlock_zero_cas", Status.EINVAL, lambda e, _: e.unlock(*D, b"locked", 0, T0)),
        ("unlock_not_locked", Status.NOT_LOCKED, lambda e, _: e.unlock(*D, b"doc", 1, T0)),
        ("lock_negative_time", Status.EINVAL, lambda e, _: e.get_and_lock(*D, b"doc", -1, T0)),
        ("unknown_collection", Status.UNKNOWN_COLLECTION, lambda e, _: e.upsert("_default", "nope", b"k", b"v", 0, T0)),
        ("unknown_scope", Status.UNKNOWN_SCOPE, lambda e, _: e.upsert("nope", "_default", b"k", b"v", 0, T0)),
        ("level_4", Status.DURABILITY_INVALID_LEVEL, lambda e, _: e.upsert(*D, b"doc", b"v", 0, T0, level=4)),
        ("level_minus_1", Status.DURABILITY_INVALID_LEVEL, lambda e, _: e.upsert(*D, b"doc", b"v", 0, T0, level=-1)),
        (
            "timeout_0",
            Status.DURABILITY_INVALID_LEVEL,
            lambda e, _: e.remove(*D, b"doc", T0, level=1, timeout_ms=0),
        ),
        ("expiry_overflow", Status.EINVAL, lambda e, _: e.upsert(*D, b"doc", b"v", 0, T0, expiry=2**32)),
        ("expiry_negative", Status.EINVAL, lambda e, _: e.insert(*D, b"new", b"v", 0, T0, expiry=-1)),
        ("touch_expiry_overflow", Status.EINVAL, lambda e, _: e.touch(*D, b"doc", 2**32, T0)),
        (
            "collection_exists",
            Status.COLLECTION_EXISTS,
            lambda e, _: e.change_manifest(lambda m: m.create_collection("_default", "named")),
        ),
    ]


@pytest.mark.parametrize(
    ("status", "request_"), [(s, r) for _, s, r in _bad_requests()], ids=[name for name, _, _ in _bad_requests()]
)
def test_refused_request_changes_nothing(rig, status, request_):
    e = rig.engine
    named_collection(rig)
    e.upsert(*D, b"doc", b"not a number", 0, T0)
    e.upsert(*D, b"locked", b"12", 0, T0)
    e.upsert(*D, b"big", BIG, 0, T0)
    lock = e.get_and_lock(*D, b"locked", 20, T0)
    rig.persist()
    before = rig.footprint()
    with refused(status):
        request_(e, lock.cas)
    assert rig.footprint() == before


def test_request_for_a_vbucket_that_is_not_active_here_is_not_my_vbucket_and_changes_nothing(rig):
    e = rig.engine
    e.upsert(*D, b"k", b"v", 0, T0)
    e.set_topology(rig.vbucket(b"k").vbid, VBState.REPLICA)
    before = rig.footprint()
    for request in (
        lambda: e.get(*D, b"k", T0),
        lambda: e.upsert(*D, b"k", b"w", 0, T0),
        lambda: e.remove(*D, b"k", T0),
        lambda: e.get_and_lock(*D, b"k", 10, T0),
    ):
        with refused(Status.NOT_MY_VBUCKET):
            request()
    assert rig.footprint() == before


# -- the WAL refusing appends --------------------------------------------------------------------


def _refusable_writes():
    return {
        "insert": lambda e: e.insert(*D, b"new", b"v", 0, T0 + 1),
        "upsert": lambda e: e.upsert(*D, b"doc", b"v2", 0, T0 + 1),
        "replace": lambda e: e.replace(*D, b"doc", b"v2", 0, T0 + 1),
        "remove": lambda e: e.remove(*D, b"doc", T0 + 1),
        "touch": lambda e: e.touch(*D, b"doc", 500, T0 + 1),
        "get_and_touch": lambda e: e.get_and_touch(*D, b"doc", 500, T0 + 1),
        "counter_create": lambda e: e.counter(*D, b"count", 1, 5, T0 + 1),
        "counter_increment": lambda e: e.counter(*D, b"num", 1, None, T0 + 1),
        "append": lambda e: e.concat(*D, b"doc", b"+", T0 + 1),
        "upsert_majority": lambda e: e.upsert(*D, b"doc", b"v2", 0, T0 + 1, level=MAJORITY),
        "upsert_persist": lambda e: e.upsert(*D, b"doc", b"v2", 0, T0 + 1, level=PERSIST),
        "create_collection": lambda e: e.change_manifest(lambda m: m.create_collection("_default", "c2")),
    }


@pytest.mark.parametrize("op", list(_refusable_writes()))
def test_write_the_wal_refuses_is_tmpfail_and_consumes_no_seqno(make_rig, op):
    rig = make_rig(wal_cls=RefusingWal)
    e = rig.engine
    e.upsert(*D, b"doc", b"v", 0, T0, expiry=100)
    e.upsert(*D, b"num", b"7", 0, T0)
    before = rig.footprint()
    rig.wal.refuse = True
    with refused(Status.TMPFAIL):
        _refusable_writes()[op](e)
    assert rig.footprint() == before
    assert e.get(*D, b"doc", T0 + 1).value == b"v"
    rig.wal.refuse = False
    vb = rig.vbucket(b"doc")
    next_seqno = vb.high_seqno + 1
    assert e.upsert(*D, b"doc", b"v3", 0, T0 + 2).seqno == next_seqno  # no gap in the vbucket's seqnos


def test_lazy_expiry_the_wal_refuses_hides_the_document_and_writes_it_later(make_rig):
    rig = make_rig(wal_cls=RefusingWal)
    e = rig.engine
    e.upsert(*D, b"k", b"v", 0, T0, expiry=30)
    before = rig.footprint()
    rig.wal.refuse = True
    with refused(Status.KEY_ENOENT):
        e.get(*D, b"k", T0 + 31)
    assert rig.footprint() == before
    rig.wal.refuse = False
    with refused(Status.KEY_ENOENT):
        e.get(*D, b"k", T0 + 31)
    (expiration,) = rig.records_of(Kind.EXPIRATION)
    assert expiration.seqno == before[0][rig.vbucket(b"k").vbid] + 1


def test_write_to_a_closed_wal_is_tmpfail_and_changes_nothing(rig):
    rig.engine.upsert(*D, b"doc", b"v", 0, T0)
    rig.wal.close()
    before = rig.footprint()
    with refused(Status.TMPFAIL):
        rig.engine.upsert(*D, b"doc", b"w", 0, T0)
    with refused(Status.TMPFAIL):
        rig.engine.insert(*D, b"new", b"w", 0, T0, level=PERSIST)
    assert rig.footprint() == before
    rig.closed = True
    rig.store.close()


def test_commit_the_wal_refuses_answers_ambiguous_keeps_the_prepare_and_is_written_later(make_rig):
    rig = make_rig(wal_cls=RefusingWal)
    e = rig.engine
    e.upsert(*D, b"k", b"old", 0, T0)
    pending = e.upsert(*D, b"k", b"new", 0, T0, level=PERSIST)
    (prepare,) = rig.records_of(Kind.PREPARE)
    lsn = rig.sync_wal()
    seqnos = rig.high_seqnos()
    rig.wal.refuse = True
    e.on_persisted(lsn)
    assert pending.done and pending.error.status is Status.SYNC_WRITE_AMBIGUOUS
    assert rig.high_seqnos() == seqnos
    assert e.get(*D, b"k", T0).value == b"old"
    e.tick(T0 + 1)  # still refused: still owed, nothing written
    assert rig.high_seqnos() == seqnos and not rig.records_of(Kind.COMMIT)
    rig.wal.refuse = False
    with refused(Status.SYNC_WRITE_IN_PROGRESS):  # decided, not yet written: the key still waits
        e.upsert(*D, b"k", b"other", 0, T0 + 1)
    e.tick(T0 + 2)  # the log accepts again: the owed commit is written, once, in order
    (commit,) = rig.records_of(Kind.COMMIT)
    assert commit.prepare_seqno == prepare.seqno and commit.seqno == prepare.seqno + 1
    got = e.get(*D, b"k", T0 + 2)
    assert (got.value, got.cas) == (b"new", prepare.document.cas)
    e.upsert(*D, b"k", b"other", 0, T0 + 2)


# -- collections dropped under a SyncWrite -------------------------------------------------------


@pytest.mark.parametrize("completion", ["persisted", "timed_out"])
def test_drop_collection_with_a_pending_sync_write_answers_its_waiter_and_keeps_working(rig, completion):
    e = rig.engine
    named_collection(rig)
    pending = e.upsert(*NAMED, b"k", b"v", 0, T0, level=PERSIST, timeout_ms=1000)
    e.change_manifest(lambda m: m.drop_collection("_default", "named"))
    # The monitor still tracks the prepare; completing it must not trip over the dropped key.
    if completion == "persisted":
        rig.persist()
    else:
        e.tick(T0 + 1)
    assert pending.done
    assert pending.error is not None
    assert pending.error.status in (Status.SYNC_WRITE_AMBIGUOUS, Status.UNKNOWN_COLLECTION)
    e.upsert(*D, b"other", b"v", 0, T0 + 2, level=PERSIST)
    rig.persist()
    assert e.get(*D, b"other", T0 + 2).value == b"v"


def test_a_sync_write_pending_when_the_default_collection_is_dropped_is_aborted_not_committed(rig):
    e = rig.engine
    pending = e.upsert(*D, b"k", b"v", 0, T0, level=PERSIST, timeout_ms=1000)
    e.change_manifest(lambda m: m.drop_collection("_default", "_default"))
    rig.persist()
    assert pending.done and pending.error is not None and pending.error.status == Status.SYNC_WRITE_AMBIGUOUS
    assert rig.records_of(Kind.COMMIT) == [] and len(rig.records_of(Kind.ABORT)) == 1

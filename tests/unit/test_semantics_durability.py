"""Durability levels on one embedded node (reference §1.2 trap, §1.4, §2.3; DESIGN §4).

The default bucket has 0 replicas: its chain is the active alone, majority 1, so every level is
possible and a persist level waits for the WAL fsync. A bucket with 1-3 replicas on one node has
empty replica slots (or more replicas than SyncWrites allow): every durable write is refused
with DurabilityImpossible at once and writes nothing, while plain writes work.

Concurrent PERSIST_TO_MAJORITY writers share fsyncs (group commit): the WAL's fsync count stays
well below the number of writes.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from durakv.durability import (
    ClientDurability,
    Durability,
    DurabilityLevel,
    PersistTo,
    PersistToExtended,
    ReplicateTo,
    ServerDurability,
)
from durakv.exceptions import (
    DurabilityImpossibleException,
    InvalidArgumentException,
)
from durakv.management.buckets import CreateBucketSettings
from durakv.options import (
    AppendOptions,
    IncrementOptions,
    InsertOptions,
    RemoveOptions,
    ReplaceOptions,
    UpsertOptions,
)
from durakv.transcoder import RawBinaryTranscoder

ALL_LEVELS = list(DurabilityLevel)
DURABLE_LEVELS = [level for level in DurabilityLevel if level != DurabilityLevel.NONE]
WRITERS = 16
WRITES_PER_WRITER = 8


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"{n}_replicas")
def replicated(request, cluster, probe_for):
    """A bucket with `num_replicas` = 1, 2 or 3 on this one node: (its default collection, probe)."""
    name = f"r{request.param}"
    cluster.buckets().create_bucket(CreateBucketSettings(name=name, num_replicas=request.param))
    return cluster.bucket(name).default_collection(), probe_for(cluster, name)


# -- 0 replicas: every level succeeds ---------------------------------------------------------


@pytest.mark.parametrize("level", ALL_LEVELS, ids=lambda lv: lv.name)
def test_every_level_succeeds_on_zero_replicas_and_the_value_is_readable(coll, level):
    durability = ServerDurability(level)
    inserted = coll.insert("k", {"v": 1}, InsertOptions(durability=durability))
    assert coll.get("k").cas == inserted.cas
    upserted = coll.upsert("k", {"v": 2}, UpsertOptions(durability=durability))
    replaced = coll.replace("k", {"v": 3}, ReplaceOptions(durability=durability, cas=upserted.cas))
    got = coll.get("k")
    assert got.content_as[dict] == {"v": 3}
    assert got.cas == replaced.cas
    assert replaced.mutation_token().sequence_number > upserted.mutation_token().sequence_number
    coll.remove("k", RemoveOptions(durability=durability))
    assert coll.exists("k").exists is False


@pytest.mark.parametrize("level", ALL_LEVELS, ids=lambda lv: lv.name)
def test_durable_counter_and_append_succeed_on_zero_replicas(coll, level):
    durability = ServerDurability(level)
    assert coll.binary().increment("c", IncrementOptions(durability=durability)).content == 0
    assert coll.binary().increment("c", durability=durability).content == 1
    coll.upsert("b", b"a", transcoder=RawBinaryTranscoder())
    coll.binary().append("b", b"b", AppendOptions(durability=durability))
    assert coll.get("b", transcoder=RawBinaryTranscoder()).value == b"ab"


def test_persist_level_write_is_persisted_when_acknowledged(coll, probe):
    result = coll.upsert("k", {"v": 1}, durability=ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY))
    token = result.mutation_token()
    vbucket = probe.engine.vbuckets[token.partition_id]
    # The token names the commit; its prepare took the seqno just before it (nothing else wrote
    # to this vbucket) and must be on disk before the ack. The commit record itself may follow.
    assert vbucket.persisted_seqno >= token.sequence_number - 1


def test_deprecated_durability_enum_is_accepted(coll):
    coll.upsert("k", {"v": 1}, durability=ServerDurability(Durability.PERSIST_TO_MAJORITY))
    assert coll.get("k").content_as[dict] == {"v": 1}


def test_durable_write_with_short_timeout_still_succeeds(coll):
    # The SDK raises a durable op's timeout to its 1.5 s floor.
    coll.upsert(
        "k", {"v": 1}, durability=ServerDurability(DurabilityLevel.MAJORITY), timeout=timedelta(milliseconds=10)
    )
    assert coll.get("k").content_as[dict] == {"v": 1}


def test_server_durability_with_a_bad_level_raises_invalid_argument():
    with pytest.raises(InvalidArgumentException):
        ServerDurability(7)


# -- 1..3 replicas on one node: durability impossible ----------------------------------------


@pytest.mark.parametrize("level", DURABLE_LEVELS, ids=lambda lv: lv.name)
def test_every_durable_write_is_impossible_without_replica_nodes(replicated, level):
    coll, probe = replicated
    stored = coll.upsert("k", {"v": 1})  # a plain write works
    coll.upsert("b", b"a", transcoder=RawBinaryTranscoder())
    before = probe.high_seqno_total()
    durability = ServerDurability(level)
    writes = {
        "insert": lambda: coll.insert("new", {"v": 1}, InsertOptions(durability=durability)),
        "upsert": lambda: coll.upsert("k", {"v": 2}, UpsertOptions(durability=durability)),
        "replace": lambda: coll.replace("k", {"v": 2}, ReplaceOptions(durability=durability)),
        "remove": lambda: coll.remove("k", RemoveOptions(durability=durability)),
        "increment": lambda: coll.binary().increment("c", IncrementOptions(durability=durability)),
        "decrement": lambda: coll.binary().decrement("c", durability=durability),
        "append": lambda: coll.binary().append("b", b"x", AppendOptions(durability=durability)),
        "prepend": lambda: coll.binary().prepend("b", b"x", durability=durability),
    }
    for name, write in writes.items():
        with pytest.raises(DurabilityImpossibleException):
            write()
        assert probe.high_seqno_total() == before, name
    got = coll.get("k")
    assert got.cas == stored.cas
    assert got.content_as[dict] == {"v": 1}
    assert coll.exists("new").exists is False
    assert coll.exists("c").exists is False


def test_plain_and_none_level_writes_work_with_replicas_configured(replicated):
    coll, _ = replicated
    coll.upsert("k", {"v": 1})
    coll.upsert("k", {"v": 2}, durability=ServerDurability(DurabilityLevel.NONE))
    coll.remove("k")
    coll.insert("k", {"v": 3})
    assert coll.get("k").content_as[dict] == {"v": 3}


def test_bare_durability_level_is_ignored_like_the_sdk_does(replicated):
    # The Couchbase SDK trap: a level not wrapped in ServerDurability parses to nothing, so the
    # write runs without durability -- and therefore succeeds where a real durable write cannot.
    coll, _ = replicated
    coll.upsert("k", {"v": 1}, durability=DurabilityLevel.MAJORITY)
    coll.upsert("k", {"v": 2}, UpsertOptions(durability=DurabilityLevel.PERSIST_TO_MAJORITY))
    assert coll.get("k").content_as[dict] == {"v": 2}
    with pytest.raises(DurabilityImpossibleException):
        coll.upsert("k", {"v": 3}, durability=ServerDurability(DurabilityLevel.MAJORITY))


# -- client (observe-based) durability --------------------------------------------------------


def test_client_durability_without_requirements_is_a_plain_write(coll, replicated):
    coll.upsert("k", {"v": 1}, durability=ClientDurability())
    assert coll.get("k").content_as[dict] == {"v": 1}
    replicated_coll, _ = replicated
    replicated_coll.upsert("k", {"v": 1}, durability=ClientDurability(ReplicateTo.NONE, PersistTo.NONE))


@pytest.mark.parametrize(
    "durability",
    [ClientDurability(persist_to=PersistTo.ONE), ClientDurability(persist_to=PersistToExtended.ACTIVE)],
    ids=["persist_one", "persist_active"],
)
def test_client_durability_persist_on_the_active_waits_for_the_fsync(coll, probe, durability):
    result = coll.upsert("k", {"v": 1}, UpsertOptions(durability=durability))
    token = result.mutation_token()
    assert probe.engine.vbuckets[token.partition_id].persisted_seqno >= token.sequence_number
    assert coll.get("k").content_as[dict] == {"v": 1}


@pytest.mark.parametrize(
    "durability",
    [ClientDurability(replicate_to=ReplicateTo.ONE), ClientDurability(ReplicateTo.TWO, PersistToExtended.FOUR)],
    ids=["replicate_one", "replicate_two_persist_four"],
)
def test_client_durability_beyond_the_buckets_replicas_is_impossible_after_the_write(coll, durability):
    # As Couchbase's SDK: the write is made first, then the requirement is found impossible.
    with pytest.raises(DurabilityImpossibleException):
        coll.upsert("k", {"v": 1}, UpsertOptions(durability=durability))
    assert coll.get("k").content_as[dict] == {"v": 1}


# -- group commit -------------------------------------------------------------------------------


def test_concurrent_persist_to_majority_writers_share_fsyncs(coll, probe):
    durability = ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY)
    coll.upsert("warmup", 0, durability=durability)
    fsyncs_before = probe.wal.fsync_count
    start = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            start.wait()
            for i in range(WRITES_PER_WRITER):
                coll.upsert(f"w{index}-{i}", {"i": i}, UpsertOptions(durability=durability))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    writes = WRITERS * WRITES_PER_WRITER
    for index in range(WRITERS):
        for i in range(WRITES_PER_WRITER):
            assert coll.get(f"w{index}-{i}").content_as[dict] == {"i": i}
    fsyncs = probe.wal.fsync_count - fsyncs_before
    assert 1 <= fsyncs <= writes // 2, f"{fsyncs} fsyncs for {writes} persisted writes"


def test_client_durability_on_a_multi_write_waits_for_each_key_as_a_single_write_does(coll, probe):
    # Each key's answer is replayed into the single-key path, which must still reach the
    # backend's observe for the wait.
    result = coll.upsert_multi({"a": 1, "b": 2}, durability=ClientDurability(persist_to=PersistTo.ONE))
    assert result.all_ok, result.exceptions
    for key, one in result.results.items():
        token = one.mutation_token()
        assert probe.engine.vbuckets[token.partition_id].persisted_seqno >= token.sequence_number, key

"""The SDK against a real networked cluster: every KV operation, multi-ops, asyncio, management, auth.

One cluster serves the module: `durakv cluster up --nodes 3 --replicas 1` (a manager and
three node processes started the way users start them, on free ports), and `durakv
cluster down` at the end whatever happens. The SDK connects with the connection string
`up` prints and the cluster's admin user, exactly as an application would.

What the tests claim:
- every operation works for keys of every vbucket, so every node serves as active and the
  client routes each key to its vbucket's active (a wrong route would be NOT_MY_VBUCKET,
  retried until the deadline: a timeout, not a pass);
- refusals come back as the same exceptions as embedded, with their error context;
- multi-ops (one KV.Batch per node) give per-key results and exceptions;
- many threads share one Cluster; the asyncio SDK keeps 64 operations in flight at once,
  sent together in a few stream messages;
- management goes through any node to the manager, and the client sees the new bucket;
- wrong or missing credentials are `AuthenticationException`.

The module is skipped only when `durakv cluster` does not exist in this build.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import timedelta
from types import MappingProxyType

import pytest

import durakv.exceptions as exc
from durakv.aio.cluster import Cluster as AsyncCluster
from durakv.auth import PasswordAuthenticator
from durakv.cluster import Cluster
from durakv.durability import ClientDurability, DurabilityLevel, PersistTo, ReplicateTo, ServerDurability
from durakv.management.buckets import CreateBucketSettings
from durakv.options import (
    ClusterOptions,
    DeltaValue,
    GetOptions,
    IncrementOptions,
    ReplaceOptions,
    SignedInt64,
    UpsertOptions,
)
from durakv.transcoder import RawBinaryTranscoder

from .clusterkit import (
    ADMIN,
    VBUCKETS,
    cluster_up,
    free_base_port,
    keys_for_every_vbucket,
    sdk,
)

LOCK_PROBE_TIMEOUT = timedelta(milliseconds=200)
DURABLE_PROBE_TIMEOUT = timedelta(seconds=10)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with cluster_up(tmp_path_factory.mktemp("remote"), "--replicas", "1") as up:
        yield up


@pytest.fixture(scope="module")
def connstr(running):
    return running.connstr


@pytest.fixture(scope="module")
def cluster(running):
    with sdk(running) as cluster:
        yield cluster


@pytest.fixture
def coll(cluster):
    return cluster.bucket("default").default_collection()


# -- every operation, keys of every vbucket ------------------------------------------------------


def test_remote_crud_on_every_vbucket(coll):
    keys = keys_for_every_vbucket("crud")
    for vb, key in keys.items():
        inserted = coll.insert(key, {"vb": vb})
        assert inserted.cas
        token = inserted.mutation_token()
        assert token is not None and token.partition_id == vb
        got = coll.get(key)
        assert got.content_as[dict] == {"vb": vb} and got.cas == inserted.cas
        assert coll.exists(key).exists
        replaced = coll.replace(key, {"vb": vb, "n": 2}, ReplaceOptions(cas=got.cas))
        assert replaced.cas != got.cas
        upserted = coll.upsert(key, {"vb": vb, "n": 3}, UpsertOptions(expiry=timedelta(hours=1)))
        with_expiry = coll.get(key, GetOptions(with_expiry=True))
        assert with_expiry.cas == upserted.cas and with_expiry.expiry_time is not None
        assert coll.get(key, GetOptions(project=["n"])).content_as[dict] == {"n": 3}
        coll.touch(key, timedelta(hours=2))
        assert coll.get_and_touch(key, timedelta(0)).content_as[dict]["n"] == 3
        coll.remove(key)
        with pytest.raises(exc.DocumentNotFoundException):
            coll.get(key)
        assert not coll.exists(key).exists


def test_remote_counters_and_binary_on_every_vbucket(coll):
    for vb, key in keys_for_every_vbucket("ctr").items():
        binary = coll.binary()
        assert binary.increment(key, IncrementOptions(initial=SignedInt64(10))).content == 10
        assert binary.increment(key, delta=DeltaValue(5)).content == 15
        assert binary.decrement(key, delta=DeltaValue(20)).content == 0
        raw = f"raw-{vb}"
        coll.upsert(raw, b"mid", transcoder=RawBinaryTranscoder())
        binary.append(raw, b">")
        binary.prepend(raw, b"<")
        assert coll.get(raw, transcoder=RawBinaryTranscoder()).content_as[bytes] == b"<mid>"
        coll.remove(key)
        coll.remove(raw)


def test_remote_lock_and_unlock_on_every_vbucket(coll):
    keys = keys_for_every_vbucket("lock")
    for key in keys.values():
        coll.upsert(key, {"locked": False})
        locked = coll.get_and_lock(key, timedelta(seconds=10))
        assert coll.get(key).cas != locked.cas  # a locked document's CAS reads as all ones
        with pytest.raises(exc.CasMismatchException):
            coll.unlock(key, locked.cas + 1)
        coll.unlock(key, locked.cas)
        with pytest.raises(exc.DocumentNotLockedException):
            coll.unlock(key, locked.cas)
    # Writes to a locked document are retried until the deadline, then DocumentLocked.
    key = keys[0]
    locked = coll.get_and_lock(key, timedelta(seconds=10))
    with pytest.raises(exc.DocumentLockedException) as caught:
        coll.upsert(key, {"locked": True}, timeout=LOCK_PROBE_TIMEOUT)
    assert "key_value_locked" in caught.value.context.retry_reasons
    coll.replace(key, {"locked": "released by its cas"}, cas=locked.cas)
    assert coll.get(key).content_as[dict] == {"locked": "released by its cas"}


def test_remote_replica_reads_on_every_vbucket(coll):
    for vb, key in keys_for_every_vbucket("replica").items():
        coll.upsert(key, {"vb": vb})
        any_copy = coll.get_any_replica(key)
        assert any_copy.content_as[dict] == {"vb": vb}
        copies = coll.get_all_replicas(key)
        assert copies and all(c.content_as[dict] == {"vb": vb} for c in copies)
        assert any(not c.is_replica for c in copies)  # the active always has it
    with pytest.raises(exc.DocumentUnretrievableException):
        coll.get_any_replica("replica-never-written")
    with pytest.raises(exc.DocumentNotFoundException):
        coll.get_all_replicas("replica-never-written")


def test_remote_durable_write_is_acknowledged_by_its_replica(coll):
    key = "durable-majority"
    durable = ServerDurability(DurabilityLevel.MAJORITY)
    result = coll.upsert(key, {"d": 1}, durability=durable, timeout=DURABLE_PROBE_TIMEOUT)
    assert coll.get(key).cas == result.cas


def test_remote_multi_write_with_client_durability_observes_each_key(coll):
    # Each key's batched answer is replayed into the single-key path, whose observe-based wait
    # must reach the real backend.
    durability = ClientDurability(replicate_to=ReplicateTo.ONE, persist_to=PersistTo.ONE)
    result = coll.upsert_multi({"observed-a": 1, "observed-b": 2}, durability=durability)
    assert result.all_ok, result.exceptions
    assert coll.get("observed-b").content_as[int] == 2


# -- refusals carry the embedded exceptions and their context -----------------------------------


def test_remote_refusals_map_to_sdk_exceptions_with_context(cluster, coll):
    coll.upsert("refusal", {"a": 1})
    with pytest.raises(exc.DocumentExistsException) as caught:
        coll.insert("refusal", {"a": 2})
    context = caught.value.context
    assert (context.key, context.bucket_name, context.scope_name, context.collection_name) == (
        "refusal",
        "default",
        "_default",
        "_default",
    )
    assert context.status_code == 0x02
    with pytest.raises(exc.CasMismatchException):
        coll.replace("refusal", {"a": 3}, cas=12345)
    with pytest.raises(exc.DocumentNotFoundException):
        coll.remove("refusal-missing")
    with pytest.raises(exc.DocumentNotFoundException):
        coll.binary().append("refusal-missing", b"x")
    coll.upsert("refusal-text", {"not": "a number"})
    with pytest.raises(exc.DeltaInvalidException):
        coll.binary().increment("refusal-text")
    with pytest.raises(exc.CollectionNotFoundException):
        cluster.bucket("default").collection("no-such-collection").upsert("k", 1)


def test_remote_unknown_bucket_is_bucket_not_found(cluster):
    with pytest.raises(exc.BucketNotFoundException):
        cluster.bucket("no-such-bucket")


# -- a stale configuration: NOT_MY_VBUCKET, adopted, retried -------------------------------------


def stale_routing(backend) -> tuple:
    """Swap every chain's active and replica, dated one revision back: every key goes to the wrong node."""
    routing = backend.routing()
    route = routing.bucket("default")
    epoch, revision = route.version
    swapped = tuple(chain[1:2] + chain[:1] + chain[2:] for chain in route.chains)
    stale = dataclasses.replace(route, chains=swapped, version=(epoch, revision - 1))
    buckets = MappingProxyType({**routing.buckets, "default": stale})
    return dataclasses.replace(routing, version=(routing.version[0], routing.version[1] - 1), buckets=buckets), route


def test_remote_stale_routing_recovers_through_not_my_vbucket(cluster, coll):
    backend = cluster._backend
    backend._routing, current = stale_routing(backend)
    keys = keys_for_every_vbucket("stale")
    for vb, key in keys.items():
        assert coll.upsert(key, {"vb": vb}).mutation_token().partition_id == vb
    assert backend.routing().bucket("default").chains == current.chains
    backend._routing, _ = stale_routing(backend)
    got = coll.get_multi(list(keys.values()))
    assert got.all_ok
    assert backend.routing().bucket("default").chains == current.chains


# -- multi-ops ----------------------------------------------------------------------------------


def test_remote_multi_ops_cover_every_node(coll):
    docs = {f"multi-{i}": {"i": i} for i in range(400)}
    assert coll.upsert_multi(docs).all_ok
    got = coll.get_multi([*docs, "multi-missing"])
    assert not got.all_ok
    assert {k: r.content_as[dict] for k, r in got.results.items()} == docs
    assert isinstance(got.exceptions["multi-missing"], exc.DocumentNotFoundException)
    assert got.exceptions["multi-missing"].context.key == "multi-missing"
    exists = coll.exists_multi(["multi-1", "multi-missing"])
    assert exists.results["multi-1"].exists and not exists.results["multi-missing"].exists
    replaced = coll.replace_multi({k: {"i": -1} for k in list(docs)[:50]} | {"multi-missing": {}})
    assert set(replaced.results) == set(list(docs)[:50])
    assert isinstance(replaced.exceptions["multi-missing"], exc.DocumentNotFoundException)
    inserted = coll.insert_multi({"multi-0": {}, "multi-new": {}})
    assert isinstance(inserted.exceptions["multi-0"], exc.DocumentExistsException)
    assert "multi-new" in inserted.results
    with pytest.raises(exc.DocumentExistsException):
        coll.insert_multi({"multi-0": {}}, return_exceptions=False)
    removed = coll.remove_multi([*docs, "multi-new"])
    assert removed.all_ok
    assert not any(r.exists for r in coll.exists_multi(list(docs)).results.values())


# -- concurrency --------------------------------------------------------------------------------


def test_remote_threads_share_one_cluster(coll):
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                key = f"thread-{n}-{i}"
                coll.upsert(key, {"n": n, "i": i})
                assert coll.get(key).content_as[dict] == {"n": n, "i": i}
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_remote_aio_64_operations_run_concurrently(connstr):
    async def scenario() -> int:
        cluster = await AsyncCluster.connect(connstr, ClusterOptions(ADMIN))
        try:
            bucket = cluster.bucket("default")
            await bucket.on_connect()
            coll = bucket.default_collection()
            backend = cluster._backend
            execute = backend.execute
            in_flight = peak = 0

            async def counted(request):
                nonlocal in_flight, peak
                in_flight += 1
                peak = max(peak, in_flight)
                try:
                    return await execute(request)
                finally:
                    in_flight -= 1

            backend.execute = counted
            backend._routing, current = stale_routing(backend)  # the first answers are NOT_MY_VBUCKET
            keys = [f"aio-{i}" for i in range(64)]
            written = await asyncio.gather(*(coll.upsert(k, {"k": k}) for k in keys))
            assert all(r.cas for r in written)
            assert backend.routing().bucket("default").chains == current.chains
            read = await asyncio.gather(*(coll.get(k) for k in keys))
            assert [r.content_as[dict]["k"] for r in read] == keys
            assert all(r.exists for r in await asyncio.gather(*(coll.exists(k) for k in keys)))
            with pytest.raises(exc.DocumentNotFoundException):
                await coll.get("aio-missing")
            assert (await coll.binary().increment("aio-counter", delta=DeltaValue(2))).content in (0, 2, 4)
            multi = await coll.get_multi(keys)
            assert multi.all_ok
            assert "default" in [b.name for b in await cluster.buckets().get_all_buckets()]
            await asyncio.gather(*(coll.remove(k) for k in keys))
            return peak
        finally:
            await cluster.close()

    peak = asyncio.run(scenario())
    assert peak >= 8, f"at most {peak} operations were in flight at once"


def test_remote_aio_client_durability_observes_the_replicas(connstr):
    # The asyncio SDK awaits the same observe-based wait as the synchronous one: the write
    # returns once a replica holds it and a node has persisted it, for one key and for many.
    async def scenario() -> None:
        cluster = await AsyncCluster.connect(connstr, ClusterOptions(ADMIN))
        try:
            coll = cluster.bucket("default").default_collection()
            durability = ClientDurability(replicate_to=ReplicateTo.ONE, persist_to=PersistTo.TWO)
            result = await coll.upsert("aio-observed", {"o": 1}, durability=durability)
            copies = await cluster._backend.observe("default", result.mutation_token().partition_id,
                                                    result.mutation_token().partition_uuid)  # fmt: skip
            seqno = result.mutation_token().sequence_number
            assert sum(c.current_seqno >= seqno for c in copies if not c.is_active) >= 1
            assert sum(c.persisted_seqno >= seqno for c in copies) >= 2
            multi = await coll.upsert_multi({"aio-observed-a": 1, "aio-observed-b": 2}, durability=durability)
            assert multi.all_ok, multi.exceptions
            # More replicas than the bucket has: impossible, raised after the write (as Couchbase does).
            with pytest.raises(exc.DurabilityImpossibleException):
                await coll.upsert("aio-impossible", 1, durability=ClientDurability(replicate_to=ReplicateTo.THREE))
            assert (await coll.get("aio-impossible")).content_as[int] == 1
        finally:
            await cluster.close()

    asyncio.run(scenario())


def test_remote_aio_coalesces_concurrent_operations_into_few_messages(connstr):
    async def scenario() -> None:
        cluster = await AsyncCluster.connect(connstr, ClusterOptions(ADMIN))
        try:
            bucket = cluster.bucket("default")
            await bucket.on_connect()
            coll = bucket.default_collection()
            keys = [f"coalesced-{i}" for i in range(64)]
            await coll.upsert("coalesced-warmup", {"k": 0})  # the first stream's setup is not measured
            nodes = cluster._backend._nodes.values()

            def sent() -> tuple[int, int]:
                streams = [n.pipeline for n in nodes if n.pipeline is not None]
                assert streams and all(s.batched and s.broken is None for s in streams)
                return sum(s.messages_sent for s in streams), sum(s.ops_sent for s in streams)

            for run in (
                lambda: asyncio.gather(*(coll.upsert(k, {"k": k}) for k in keys)),
                lambda: asyncio.gather(*(coll.get(k) for k in keys)),
            ):
                messages_before, ops_before = sent()
                results = await run()
                messages, ops = sent()
                assert len(results) == 64 and all(r.cas for r in results)
                # 64 operations over three nodes' PipelineBatched streams in a handful of messages.
                assert ops - ops_before >= 64
                assert messages - messages_before <= 8, f"{messages - messages_before} messages for 64 operations"
            read = await asyncio.gather(*(coll.get(k) for k in keys))
            assert [r.content_as[dict]["k"] for r in read] == keys
            await asyncio.gather(*(coll.remove(k) for k in [*keys, "coalesced-warmup"]))
        finally:
            await cluster.close()

    asyncio.run(scenario())


# -- management ---------------------------------------------------------------------------------


def test_remote_bucket_and_collection_management(cluster):
    buckets = cluster.buckets()
    assert "default" in [b.name for b in buckets.get_all_buckets()]
    assert buckets.get_bucket("default").num_vbuckets == VBUCKETS
    buckets.create_bucket(CreateBucketSettings(name="remote-mgmt", num_vbuckets=16, num_replicas=1))
    try:
        with pytest.raises(exc.BucketAlreadyExistsException):
            buckets.create_bucket(CreateBucketSettings(name="remote-mgmt"))
        bucket = cluster.bucket("remote-mgmt")
        for key in keys_for_every_vbucket("mgmt", 16).values():
            bucket.default_collection().upsert(key, {"key": key})
            assert bucket.default_collection().get(key).content_as[dict] == {"key": key}
        manager = bucket.collections()
        manager.create_scope("tenant")
        manager.create_collection("tenant", "users")
        with pytest.raises(exc.CollectionAlreadyExistsException):
            manager.create_collection("tenant", "users")
        scopes = {s.name: [c.name for c in s.collections] for s in manager.get_all_scopes()}
        assert scopes["tenant"] == ["users"]
        users = bucket.scope("tenant").collection("users")
        users.upsert("u1", {"name": "one"})
        assert users.get("u1").content_as[dict] == {"name": "one"}
    finally:
        buckets.drop_bucket("remote-mgmt")
    with pytest.raises(exc.BucketDoesNotExistException):
        buckets.drop_bucket("remote-mgmt")
    with pytest.raises(exc.BucketNotFoundException):
        cluster.bucket("remote-mgmt")


# -- connecting ---------------------------------------------------------------------------------


def test_remote_wrong_password_is_authentication_exception(connstr):
    with pytest.raises(exc.AuthenticationException):
        Cluster(connstr, ClusterOptions(PasswordAuthenticator("admin", "not-the-password")))


def test_remote_no_authenticator_is_authentication_exception(connstr):
    with pytest.raises(exc.AuthenticationException):
        Cluster(connstr)


def test_remote_aio_wrong_password_is_authentication_exception(connstr):
    async def scenario() -> None:
        await AsyncCluster.connect(connstr, ClusterOptions(PasswordAuthenticator("nobody", "x")))

    with pytest.raises(exc.AuthenticationException):
        asyncio.run(scenario())


def test_remote_first_seed_down_bootstraps_from_the_next(connstr):
    dead = free_base_port()
    seeds = connstr.removeprefix("durakv://")
    cluster = Cluster(f"durakv://127.0.0.1:{dead},{seeds}", ClusterOptions(ADMIN))
    try:
        assert cluster.bucket("default").default_collection().upsert("seed-order", 1).cas
    finally:
        cluster.close()


def test_remote_no_reachable_seed_is_unambiguous_timeout():
    dead = free_base_port()
    start = time.monotonic()
    with pytest.raises(exc.UnAmbiguousTimeoutException):
        Cluster(f"durakv://127.0.0.1:{dead}", ClusterOptions(ADMIN), bootstrap_timeout=timedelta(seconds=1))
    assert time.monotonic() - start < 5

"""The networked cluster when things go wrong: a killed node, configuration changes, bad requests.

One cluster serves the module: `durakv cluster up --nodes 3 --replicas 1` on free ports (a
manager and three node processes, started the way users start them), destroyed at the end
whatever happens. Every wait polls with a deadline; nothing sleeps a fixed time.

What the tests claim:
- a killed node (`durakv cluster kill node2`, SIGKILL): operations on keys whose vbucket is
  active on node2 end after their timeout, not later, with the exception the SDK documents
  for a request that never reached a node (`UnAmbiguousTimeoutException`; a write may be
  `AmbiguousTimeoutException` if the connection broke under it), through the sync SDK, its
  multi-ops and the asyncio SDK; keys on node1 and node3 keep working meanwhile; after
  `durakv cluster start node2` node2's keys work again;
- configuration changes reach SDK instances that bootstrapped before them: a bucket created
  through one SDK is usable from an asyncio SDK (and a sync SDK) that never polled
  since; a collection created through one SDK is usable from another at once; a bucket
  dropped and recreated with another vbucket count is re-routed;
- garbage and oversized requests over raw gRPC stubs are refused with EINVAL /
  RESOURCE_EXHAUSTED / E2BIG, and every process stays up and serving.

The stale SDK instances poll the configuration once an hour: whatever they learn, they
learn on demand (missing bucket, NOT_MY_VBUCKET), not from the 2.5 s poll.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import grpc
import pytest

import durakv.exceptions as exc
from durakv.aio.cluster import Cluster as AsyncCluster
from durakv.cluster import Cluster
from durakv.engine.errors import Status
from durakv.management.buckets import CreateBucketSettings
from durakv.options import ClusterOptions
from durakv.proto import admin_pb2, admin_pb2_grpc, kv_pb2, kv_pb2_grpc
from durakv.replication.auth import basic_metadata
from durakv.transcoder import RawBinaryTranscoder

from .clusterkit import (
    ADMIN,
    VBUCKETS,
    RunningCluster,
    checked,
    cluster_up,
    keys_for_every_vbucket,
    sdk,
    vbucket_of,
    wait_until,
)

RAW_ADMIN = basic_metadata("admin", "password")
PROBE_TIMEOUT = timedelta(milliseconds=800)  # operations on the killed node
TIMEOUT_SLACK_S = 0.6  # how much later than its timeout a failing operation may end (a loaded machine)
RECOVERY_DEADLINE_S = 30.0
CONVERGE_DEADLINE_S = 20.0
NEVER_POLL = timedelta(hours=1)  # config_poll_interval of the stale SDK instances
MIB = 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
TIMEOUTS = (exc.UnAmbiguousTimeoutException, exc.AmbiguousTimeoutException)


# -- the cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with cluster_up(tmp_path_factory.mktemp("failures"), "--replicas", "1") as up:
        yield up


@pytest.fixture(scope="module")
def cluster(running):
    with sdk(running) as cluster:
        yield cluster


def keys_by_node(cluster: Cluster, running: RunningCluster, prefix: str) -> dict[str, list[str]]:
    """One key per vbucket of `default`, grouped by the node (node1..) its vbucket is active on."""
    route = cluster._backend.routing().bucket("default")
    names = {address: name for name, address in running.addresses.items()}
    grouped: dict[str, list[str]] = {name: [] for name in running.addresses}
    for vb, key in keys_for_every_vbucket(prefix).items():
        grouped[names[route.active(vb)]].append(key)
    assert all(grouped.values()), grouped
    return grouped


def health(address: str) -> admin_pb2.HealthResponse:
    with grpc.insecure_channel(address) as channel:
        return admin_pb2_grpc.AdminStub(channel).Health(admin_pb2.HealthRequest(), timeout=5)


def wait_nodes_run_manager_revision(running: RunningCluster) -> None:
    """Every node runs the manager's current configuration (the manager pushes it after answering)."""

    def converged() -> bool:
        wanted = health(running.manager).config_revision
        return all(health(a).config_revision >= wanted for a in running.addresses.values())

    wait_until(converged, "every node runs the manager's configuration", CONVERGE_DEADLINE_S)


def timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        call()
    except Exception as error:
        return error, time.monotonic() - start
    return None, time.monotonic() - start


def assert_times_out(error: BaseException | None, elapsed_s: float, expected: tuple[type, ...], what: str) -> None:
    timeout_s = PROBE_TIMEOUT.total_seconds()
    assert isinstance(error, expected), f"{what}: expected {[e.__name__ for e in expected]}, got {error!r}"
    assert timeout_s * 0.75 <= elapsed_s <= timeout_s + TIMEOUT_SLACK_S, f"{what}: took {elapsed_s:.3f} s"


# -- (a) a killed node ----------------------------------------------------------------------------


def test_killed_node_times_out_its_keys_others_serve_and_it_comes_back(running, cluster):
    coll = cluster.bucket("default").default_collection()
    by_node = keys_by_node(cluster, running, "kill")
    for keys in by_node.values():
        for key in keys:
            coll.upsert(key, {"key": key, "phase": "before"})
    dead, alive = by_node["node2"], by_node["node1"] + by_node["node3"]

    checked("kill", "--dir", str(running.dir), "node2")
    try:
        # Keys on node2: never sent (the connection is refused), retried until the deadline.
        for key in dead[:2]:
            error, took = timed(lambda k=key: coll.get(k, timeout=PROBE_TIMEOUT))
            assert_times_out(error, took, (exc.UnAmbiguousTimeoutException,), f"get {key}")
            assert error.context.key == key and error.context.retry_attempts > 0
            error, took = timed(lambda k=key: coll.exists(k, timeout=PROBE_TIMEOUT))
            assert_times_out(error, took, (exc.UnAmbiguousTimeoutException,), f"exists {key}")
            error, took = timed(lambda k=key: coll.upsert(k, {"phase": "during"}, timeout=PROBE_TIMEOUT))
            assert_times_out(error, took, TIMEOUTS, f"upsert {key}")
            error, took = timed(lambda k=key: coll.remove(k, timeout=PROBE_TIMEOUT))
            assert_times_out(error, took, TIMEOUTS, f"remove {key}")

        # Keys on node1 and node3 are served meanwhile, each well within the timeout.
        for key in alive:
            coll.upsert(key, {"key": key, "phase": "during"}, timeout=PROBE_TIMEOUT)
            assert coll.get(key, timeout=PROBE_TIMEOUT).content_as[dict]["phase"] == "during"

        # Multi-ops: node2's keys fail with the timeout, the others succeed, all in about the timeout.
        start = time.monotonic()
        got = cluster.bucket("default").default_collection().get_multi([*dead, *alive], timeout=PROBE_TIMEOUT)
        took = time.monotonic() - start
        assert set(got.exceptions) == set(dead)
        assert all(isinstance(e, exc.UnAmbiguousTimeoutException) for e in got.exceptions.values())
        assert {k: r.content_as[dict]["phase"] for k, r in got.results.items()} == dict.fromkeys(alive, "during")
        assert took <= PROBE_TIMEOUT.total_seconds() + TIMEOUT_SLACK_S, f"get_multi took {took:.3f} s"

        # The asyncio SDK (operations on each node's KV.Pipeline stream) ends the same way.
        async def aio_probe() -> None:
            aio = await AsyncCluster.connect(running.connstr, ClusterOptions(ADMIN))
            try:
                acoll = aio.bucket("default").default_collection()
                assert (await acoll.get(alive[0], timeout=PROBE_TIMEOUT)).content_as[dict]["phase"] == "during"
                for op, expected in (("get", (exc.UnAmbiguousTimeoutException,)), ("upsert", TIMEOUTS)):
                    start = time.monotonic()
                    with pytest.raises(expected) as caught:
                        if op == "get":
                            await acoll.get(dead[0], timeout=PROBE_TIMEOUT)
                        else:
                            await acoll.upsert(dead[0], {"phase": "during"}, timeout=PROBE_TIMEOUT)
                    assert_times_out(caught.value, time.monotonic() - start, expected, f"aio {op} {dead[0]}")
                assert (await acoll.get(alive[-1], timeout=PROBE_TIMEOUT)).content_as[dict]["phase"] == "during"
            finally:
                await aio.close()

        asyncio.run(aio_probe())
    finally:
        started = checked("start", "--dir", str(running.dir), "node2")
    assert "node2 serving" in started.stdout

    # node2 is back: its keys work again (the SDK reconnects on its own; poll with a deadline).
    def node2_serves() -> bool:
        try:
            coll.upsert(dead[0], {"key": dead[0], "phase": "after"}, timeout=PROBE_TIMEOUT)
        except TIMEOUTS:
            return False
        return True

    wait_until(node2_serves, "the restarted node2 serves its keys", RECOVERY_DEADLINE_S)
    for key in dead + alive:
        coll.upsert(key, {"key": key, "phase": "after"})
        assert coll.get(key).content_as[dict] == {"key": key, "phase": "after"}
    assert cluster.bucket("default").default_collection().get_multi(dead + alive).all_ok


# -- (b) configuration changes reach SDK instances that bootstrapped before them ------------------


def stale_sdk(running: RunningCluster) -> Cluster:
    return Cluster(running.connstr, ClusterOptions(ADMIN), config_poll_interval=NEVER_POLL)


def test_new_bucket_is_served_to_an_aio_sdk_that_bootstrapped_before(running, cluster):
    async def scenario() -> None:
        stale = await AsyncCluster.connect(running.connstr, ClusterOptions(ADMIN), config_poll_interval=NEVER_POLL)
        try:
            assert "late-aio" not in stale._backend.bucket_names()
            cluster.buckets().create_bucket(CreateBucketSettings(name="late-aio", num_vbuckets=16, num_replicas=1))
            wait_nodes_run_manager_revision(running)
            bucket = stale.bucket("late-aio")
            await bucket.on_connect()  # the bucket is not in its configuration: it refreshes
            coll = bucket.default_collection()
            keys = keys_for_every_vbucket("late-aio", 16)
            await asyncio.gather(*(coll.upsert(key, {"vb": vb}) for vb, key in keys.items()))
            read = await asyncio.gather(*(coll.get(key) for key in keys.values()))
            assert [r.content_as[dict]["vb"] for r in read] == list(keys)
            assert (await coll.get_multi(list(keys.values()))).all_ok
        finally:
            await stale.close()

    try:
        asyncio.run(scenario())
    finally:
        cluster.buckets().drop_bucket("late-aio")


def test_new_bucket_is_served_to_a_sync_sdk_that_bootstrapped_before(running, cluster):
    stale = stale_sdk(running)
    try:
        assert "late-sync" not in stale._backend.bucket_names()
        cluster.buckets().create_bucket(CreateBucketSettings(name="late-sync", num_vbuckets=16, num_replicas=1))
        wait_nodes_run_manager_revision(running)
        coll = stale.bucket("late-sync").default_collection()
        keys = keys_for_every_vbucket("late-sync", 16)
        for vb, key in keys.items():
            coll.upsert(key, {"vb": vb})
            assert coll.get(key).content_as[dict] == {"vb": vb}
    finally:
        stale.close()
        cluster.buckets().drop_bucket("late-sync")


def test_new_collection_is_usable_from_another_sdk_created_before(running, cluster):
    other = stale_sdk(running)
    try:
        before = other.bucket("default").default_collection()
        before.upsert("before-the-collection", 1)  # the second instance is in use before the change
        manager = cluster.bucket("default").collections()
        manager.create_scope("late")
        manager.create_collection("late", "items")
        wait_nodes_run_manager_revision(running)
        items = other.bucket("default").scope("late").collection("items")
        keys = keys_for_every_vbucket("late-item")
        for vb, key in keys.items():
            items.upsert(key, {"vb": vb})
            assert items.get(key).content_as[dict] == {"vb": vb}
        assert items.get_multi(list(keys.values())).all_ok
        with pytest.raises(exc.DocumentNotFoundException):  # a separate keyspace from the default collection
            items.get("before-the-collection")
        scopes = {
            s.name: [c.name for c in s.collections] for s in other.bucket("default").collections().get_all_scopes()
        }
        assert scopes["late"] == ["items"]
    finally:
        other.close()
        cluster.bucket("default").collections().drop_scope("late")


def test_recreated_bucket_with_other_vbucket_count_is_rerouted_through_not_my_vbucket(running, cluster):
    buckets = cluster.buckets()
    buckets.create_bucket(CreateBucketSettings(name="reshaped", num_vbuckets=16, num_replicas=1))
    stale = stale_sdk(running)  # bootstraps with `reshaped` at 16 vbuckets
    try:
        wait_nodes_run_manager_revision(running)
        coll = stale.bucket("reshaped").default_collection()
        coll.upsert("first", 1)
        buckets.drop_bucket("reshaped")
        buckets.create_bucket(CreateBucketSettings(name="reshaped", num_vbuckets=32, num_replicas=1))
        wait_nodes_run_manager_revision(running)
        keys = keys_for_every_vbucket("reshaped", 32)
        for vb, key in keys.items():
            assert coll.upsert(key, {"vb": vb}).mutation_token().partition_id == vb
        assert stale._backend.routing().bucket("reshaped").num_vbuckets == 32
    finally:
        stale.close()
        buckets.drop_bucket("reshaped")


# -- (c) garbage and oversized requests -----------------------------------------------------------


def test_garbage_and_oversized_requests_are_refused_and_every_process_stays_up(running, cluster):
    coll = cluster.bucket("default").default_collection()
    key = keys_by_node(cluster, running, "raw")["node1"][0]
    address = running.addresses["node1"]
    pids = {
        p["name"]: p["pid"]
        for p in json.loads(checked("status", "--dir", str(running.dir), "--json").stdout)["processes"]
    }
    header = kv_pb2.RequestHeader(bucket="default", key=key.encode(), vbucket=vbucket_of(key, VBUCKETS))
    garbage = b"\xff\xff\xff\xff not a protobuf message"
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        kv = kv_pb2_grpc.KVStub(channel)

        def raw(method: str, payload: bytes, metadata=RAW_ADMIN) -> bytes:
            return channel.unary_unary(method)(payload, metadata=metadata, timeout=10)

        assert kv_pb2.GetResponse.FromString(raw("/durakv.kv.v1.KV/Get", garbage)).status == Status.EINVAL
        truncated = kv_pb2.UpsertRequest(header=header, value=b"v" * 100).SerializeToString()[:-40]
        assert kv_pb2.MutationResponse.FromString(raw("/durakv.kv.v1.KV/Upsert", truncated)).status == Status.EINVAL
        changed = admin_pb2.ChangeResponse.FromString(raw("/durakv.admin.v1.Admin/CreateBucket", garbage))
        assert changed.status == Status.EINVAL  # answered by the node, not forwarded to the manager
        with pytest.raises(grpc.RpcError) as caught:
            raw("/durakv.kv.v1.KV/Batch", garbage)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            raw("/durakv.kv.v1.KV/NoSuchMethod", b"")
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as caught:  # past the node's 32 MiB receive limit
            kv.Upsert(kv_pb2.UpsertRequest(header=header, value=b"x" * (33 * MIB)), metadata=RAW_ADMIN, timeout=30)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        get = kv_pb2.OpRequest(get=kv_pb2.GetRequest(header=header))
        with pytest.raises(grpc.RpcError) as caught:  # more operations than one Batch may hold
            kv.Batch(kv_pb2.BatchRequest(ops=[get] * 10_001), metadata=RAW_ADMIN, timeout=30)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as caught:  # garbage without credentials
            kv.Get(kv_pb2.GetRequest(header=header), metadata=basic_metadata("admin", "wrong"), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # The manager (Admin only, reached by nodes forwarding and by management clients) refuses garbage
    # too: as EINVAL, or as a gRPC error from the generated handler that does not decode it.
    with grpc.insecure_channel(running.manager) as channel:
        try:
            answer = channel.unary_unary("/durakv.admin.v1.Admin/CreateBucket")(garbage, metadata=RAW_ADMIN, timeout=10)
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNKNOWN), error
        else:
            assert admin_pb2.ChangeResponse.FromString(answer).status == Status.EINVAL
    assert "default" in [b.name for b in cluster.buckets().get_all_buckets()]  # the manager still answers

    # Through the SDK: a value over the node's limit is ValueTooLarge, at the protocol limit too.
    with pytest.raises(exc.ValueTooLargeException):
        coll.upsert(key, b"x" * (20 * MIB + 1), transcoder=RawBinaryTranscoder())
    with pytest.raises(exc.ValueTooLargeException):
        coll.upsert(key, b"x" * (33 * MIB), transcoder=RawBinaryTranscoder())

    # Every process is the same one as before and serves.
    after = {
        p["name"]: p for p in json.loads(checked("status", "--dir", str(running.dir), "--json").stdout)["processes"]
    }
    assert {name: p["pid"] for name, p in after.items()} == pids
    assert all(p["alive"] and p["health"] == "serving" for p in after.values()), after
    for vb, k in keys_for_every_vbucket("after-garbage").items():
        coll.upsert(k, {"vb": vb})
        assert coll.get(k).content_as[dict] == {"vb": vb}


def test_a_management_read_waits_for_a_restarting_manager(running, cluster):
    # Nodes forward Admin calls to the manager; one that is down for a moment (restarting) is
    # waited for within the call's deadline instead of refusing at once.
    checked("kill", "--dir", str(running.dir), "manager")
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append([b.name for b in cluster.buckets().get_all_buckets()])
        except Exception as error:  # the assertion below reports it
            outcome.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        checked("start", "--dir", str(running.dir), "manager")
    finally:
        reader.join(60)
    assert outcome and isinstance(outcome[0], list) and "default" in outcome[0], outcome

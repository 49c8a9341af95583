"""Replication between real node processes: replicas receive the writes, durable writes need them.

Two clusters, each started the way users start one (`durakv cluster up --nodes 3` on free
ports, `--replicas 2` and `--replicas 1`), destroyed at the end whatever happens. The SDK
connects with the connection string `up` prints. Every wait polls with a deadline.

What the tests claim:
- (a) writes without durability reach every replica: `get_all_replicas` answers the value
  from each replica node (`is_replica`), for keys of every vbucket;
- (b) every durability level (MAJORITY, MAJORITY_AND_PERSIST_TO_ACTIVE, PERSIST_TO_MAJORITY)
  is acknowledged with two replicas and with one, and the value then reaches every replica;
- (c) with two replicas and one of a vbucket's replica nodes killed (SIGKILL), every level
  still succeeds on that vbucket (the active and the other replica are a majority);
- (d) with one replica and that replica's node killed, durable writes end
  `DurabilitySyncWriteAmbiguousException` after their timeout (not before, not much later);
  after `durakv cluster start` the node catches up -- including writes made while it was
  down, more than the active's change feed keeps once they are checkpointed and more than the
  stream's flow-control window, so served by a backfill from the active's store under flow
  control -- and durable writes succeed again;
- (e) a node serves both Replication.StreamBatched and Stream, and a replica whose producer
  answers StreamBatched UNIMPLEMENTED (an older node) streams over Stream instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

import durakv.exceptions as exc
from durakv.cluster import Cluster
from durakv.durability import DurabilityLevel, ServerDurability
from durakv.engine.replica import FEED_BYTES_MAX
from durakv.proto import admin_pb2, admin_pb2_grpc, replication_pb2, replication_pb2_grpc
from durakv.replication import launcher, node_faults, replicator_link
from durakv.replication.auth import basic_metadata
from durakv.replication.items import STREAM_BUFFER_BYTES_DEFAULT

from .clusterkit import (
    VBUCKETS,
    checked,
    cluster_up,
    keys_for_every_vbucket,
    sdk,
    vbucket_of,
    wait_until,
)

DURABLE_TIMEOUT = timedelta(seconds=5)  # a durable write that should succeed
AMBIGUOUS_TIMEOUT = timedelta(milliseconds=1500)  # a durable write that cannot (its only replica is down)
TIMEOUT_SLACK_S = 1.0  # how much later than its timeout a failing write may end (a loaded machine)
REPLICATED_DEADLINE_S = 15.0
CATCH_UP_DEADLINE_S = 30.0
CHECKPOINT_DEADLINE_S = 20.0  # the engine checkpoints a non-empty memtable every 5 s
PAD_BYTES = 100_000  # the documents written while a replica is down
LEVELS = (
    DurabilityLevel.MAJORITY,
    DurabilityLevel.MAJORITY_AND_PERSIST_TO_ACTIVE,
    DurabilityLevel.PERSIST_TO_MAJORITY,
)


# -- the clusters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningCluster:
    dir: Path
    replicas: int
    names: dict[str, str]  # host:port -> node1..
    sdk: Cluster

    @property
    def coll(self):
        return self.sdk.bucket("default").default_collection()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return checked(*args, "--dir", str(self.dir))

    def chain(self, key: str) -> tuple[str, ...]:
        """Node names holding the key's vbucket: the active, then its replicas."""
        route = self.sdk._backend.routing().bucket("default")
        return tuple(self.names[address] for address in route.holders(vbucket_of(key)))


def start_cluster(base: Path, replicas: int) -> Iterator[RunningCluster]:
    with cluster_up(base, "--replicas", str(replicas)) as up, sdk(up) as cluster:
        names = {address: name for name, address in up.addresses.items()}
        yield RunningCluster(up.dir, replicas, names, cluster)


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    yield from start_cluster(tmp_path_factory.mktemp("replicas2"), 2)


@pytest.fixture(scope="module")
def one_replica(tmp_path_factory):
    yield from start_cluster(tmp_path_factory.mktemp("replicas1"), 1)


@pytest.fixture(params=["two_replicas", "one_replica"])
def running(request) -> RunningCluster:
    return request.getfixturevalue(request.param)


# -- helpers --------------------------------------------------------------------------------------


def replica_values(running: RunningCluster, key: str) -> list[object]:
    """The values `get_all_replicas` answers from replica nodes (not the active)."""
    try:
        copies = running.coll.get_all_replicas(key)
    except exc.DocumentNotFoundException:
        return []
    return [c.content_as[dict] for c in copies if c.is_replica]


def on_every_replica(running: RunningCluster, key: str, value: object, replicas: int | None = None) -> bool:
    wanted = running.replicas if replicas is None else replicas
    values = replica_values(running, key)
    return len(values) == wanted and all(v == value for v in values)


def wait_replicated(running: RunningCluster, expected: dict[str, object], replicas: int | None = None) -> None:
    pending = dict(expected)

    def all_there() -> bool:
        for key in list(pending):
            if on_every_replica(running, key, pending[key], replicas):
                del pending[key]
        return not pending

    wait_until(all_there, f"{len(pending)} keys on every replica, e.g. {sorted(pending)[:3]}", REPLICATED_DEADLINE_S)


def durable(level: DurabilityLevel) -> ServerDurability:
    return ServerDurability(level)


def checkpoints(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stats = admin_pb2_grpc.AdminStub(channel).Stats(
            admin_pb2.StatsRequest(bucket="default"), metadata=basic_metadata("admin", "password"), timeout=5
        )
    return stats.buckets[0].counters["checkpoints"]


def address_of(running: RunningCluster, name: str) -> str:
    return next(address for address, n in running.names.items() if n == name)


# -- (a) and (b): every replica receives, every level is acknowledged ----------------------------


def test_writes_without_durability_reach_every_replica(running):
    expected = {key: {"vb": vb, "level": "none"} for vb, key in keys_for_every_vbucket("none").items()}
    for key, value in expected.items():
        running.coll.upsert(key, value)
    wait_replicated(running, expected)
    # Every replica holds the newest version, also of a document changed and removed since.
    key = next(iter(expected))
    running.coll.upsert(key, {"version": 2})
    wait_replicated(running, {key: {"version": 2}})
    running.coll.remove(key)
    wait_until(lambda: replica_values(running, key) == [], f"{key} removed on every replica", REPLICATED_DEADLINE_S)


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
def test_every_level_is_acknowledged_and_replicated(running, level):
    keys = keys_for_every_vbucket(f"durable-{level.name}")
    expected = {}
    for vb, key in list(keys.items())[:: max(1, VBUCKETS // 16)]:  # 16 vbuckets: every node as active
        value = {"vb": vb, "level": level.name}
        result = running.coll.upsert(key, value, durability=durable(level), timeout=DURABLE_TIMEOUT)
        assert result.cas and running.coll.get(key).cas == result.cas
        expected[key] = value  # the replicas held the prepare; its commit follows it
    wait_replicated(running, expected)
    # A durable remove commits a tombstone everywhere.
    key = next(iter(expected))
    running.coll.remove(key, durability=durable(level), timeout=DURABLE_TIMEOUT)
    wait_until(lambda: replica_values(running, key) == [], f"{key} removed on every replica", REPLICATED_DEADLINE_S)


# -- (c) two replicas, one down -------------------------------------------------------------------


def test_two_replicas_one_down_every_level_succeeds(two_replicas):
    running = two_replicas
    key = "one-replica-down"
    _active, *replicas = running.chain(key)
    victim = replicas[0]
    running.cli("kill", victim)
    try:
        for level in LEVELS:
            value = {"level": level.name, "while": f"{victim} down"}
            running.coll.upsert(key, value, durability=durable(level), timeout=DURABLE_TIMEOUT)
            assert running.coll.get(key).content_as[dict] == value
            wait_replicated(running, {key: value}, replicas=1)  # the replica still up
    finally:
        running.cli("start", victim)
    wait_replicated(running, {key: {"level": LEVELS[-1].name, "while": f"{victim} down"}})


# -- (d) one replica, down: ambiguous, then it catches up -----------------------------------------


def test_only_replica_down_durable_writes_ambiguous_then_catch_up(one_replica):
    running = one_replica
    key = "only-replica-down"
    active, replica = running.chain(key)
    running.coll.upsert(key, {"phase": "before"}, durability=durable(DurabilityLevel.MAJORITY))
    # Written to the key's vbucket while its replica is down: more than the active's change feed
    # keeps once checkpointed, so the replica's restart position is only in the active's store,
    # and more than a stream's flow-control window, so the backfill waits for BufferAcks.
    count = max(FEED_BYTES_MAX, STREAM_BUFFER_BYTES_DEFAULT) * 5 // 4 // PAD_BYTES + 1
    vb = vbucket_of(key)
    same_vbucket = [k for k in (f"catch-up-{i}" for i in range(4 * count * VBUCKETS)) if vbucket_of(k) == vb][:count]
    assert len(same_vbucket) == count

    running.cli("kill", replica)
    try:
        for level in LEVELS:
            start = time.monotonic()
            with pytest.raises(exc.DurabilitySyncWriteAmbiguousException):
                running.coll.upsert(key, {"phase": level.name}, durability=durable(level), timeout=AMBIGUOUS_TIMEOUT)
            took = time.monotonic() - start
            timeout_s = AMBIGUOUS_TIMEOUT.total_seconds()
            assert 0.8 * timeout_s <= took <= timeout_s + TIMEOUT_SLACK_S, f"{level.name}: ended after {took:.2f} s"
        missed = {k: {"phase": "while down", "pad": k * (PAD_BYTES // len(k))} for k in same_vbucket}
        for k, value in missed.items():
            running.coll.upsert(k, value)
        # A checkpoint takes them into the store, and the feed lets go of what it no longer must keep.
        before = checkpoints(address_of(running, active))
        wait_until(
            lambda: checkpoints(address_of(running, active)) > before, f"{active} checkpoints", CHECKPOINT_DEADLINE_S
        )
    finally:
        running.cli("start", replica)

    wait_replicated(running, missed)

    def durable_write_succeeds() -> bool:
        try:
            running.coll.upsert(
                key,
                {"phase": "after"},
                durability=durable(DurabilityLevel.PERSIST_TO_MAJORITY),
                timeout=DURABLE_TIMEOUT,
            )
        except (exc.DurabilitySyncWriteAmbiguousException, exc.AmbiguousTimeoutException):
            return False
        return True

    wait_until(durable_write_succeeds, "a durable write succeeds again", CATCH_UP_DEADLINE_S)
    for level in LEVELS:
        value = {"phase": "after", "level": level.name}
        running.coll.upsert(key, value, durability=durable(level), timeout=DURABLE_TIMEOUT)
        wait_replicated(running, {key: value})


# -- both stream RPCs are served ------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ["StreamBatched", "Stream"])
def test_both_stream_rpcs_answer_open(two_replicas, rpc):
    """StreamBatched answers in ProducerMessageBatch; Stream (for older replicas) is still served."""
    (producer, producer_name), (_, consumer_name) = list(two_replicas.names.items())[:2]
    secret = launcher.ClusterDir(two_replicas.dir).secret()
    opening = replication_pb2.ReplicaMessage(
        open=replication_pb2.Open(consumer_node_id=consumer_name, bucket="default", noop_interval_ms=1000)
    )
    with grpc.insecure_channel(producer) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        metadata = (("authorization", f"Bearer {secret}"),)
        if rpc == "StreamBatched":
            call = stub.StreamBatched(
                iter([replication_pb2.ReplicaMessageBatch(messages=[opening])]), metadata=metadata
            )
            (first,) = next(call).messages
        else:
            call = stub.Stream(iter([opening]), metadata=metadata)
            first = next(call)
        call.cancel()
    assert first.WhichOneof("message") == "open_response"
    assert (first.open_response.status, first.open_response.producer_node_id) == (0, producer_name)


@contextlib.asynccontextmanager
async def replica_link_to(method: str, handler, request_type, response_type):
    """A fake producer serving only Replication.`method` with `handler`, and a replica's link to it."""
    rpc = grpc.stream_stream_rpc_method_handler(
        handler, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("durakv.replication.v1.Replication", {method: rpc}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    runtime = SimpleNamespace(node_id="new", version=(1, 1), faults=node_faults.NodeFaults())
    parent = SimpleNamespace(rt=runtime, buffer_bytes=0, channel=lambda _address: channel, secret=lambda: "s" * 64)
    bucket = SimpleNamespace(config=SimpleNamespace(name="default"))
    spec = replicator_link.LinkSpec(bucket, "", "old", f"127.0.0.1:{port}", ())
    link = replicator_link.Link(parent, spec, SimpleNamespace(owners={}, consumers={}))
    try:
        yield link
    finally:
        await link.stop()
        await channel.close()
        await server.stop(None)


def test_replica_falls_back_to_stream_when_the_producer_lacks_stream_batched():
    asyncio.run(_falls_back_to_stream())


async def _falls_back_to_stream() -> None:
    opened = asyncio.get_running_loop().create_future()

    async def stream(requests, context):  # an older producer: Stream only
        first = await requests.__aiter__().__anext__()
        if not opened.done():
            opened.set_result(first)
        response = replication_pb2.OpenResponse(status=0, producer_node_id="old", noop_interval_ms=1000)
        await context.write(replication_pb2.ProducerMessage(open_response=response))
        await asyncio.sleep(30)

    async with replica_link_to(
        "Stream", stream, replication_pb2.ReplicaMessage, replication_pb2.ProducerMessage
    ) as link:
        first = await asyncio.wait_for(opened, 10)
        assert first.WhichOneof("message") == "open" and first.open.consumer_node_id == "new"
        assert not link._batched


def test_replica_drops_a_producer_that_goes_silent_and_reconnects():
    asyncio.run(_drops_a_silent_producer())


async def _drops_a_silent_producer() -> None:
    opens: asyncio.Queue = asyncio.Queue()

    async def stream_batched(requests, context):  # answers Open, then never a Noop
        first = await requests.__aiter__().__anext__()
        opens.put_nowait((first, asyncio.get_running_loop().time()))
        response = replication_pb2.OpenResponse(status=0, producer_node_id="old", noop_interval_ms=100)
        batch = replication_pb2.ProducerMessageBatch(messages=[replication_pb2.ProducerMessage(open_response=response)])
        await context.write(batch)
        await asyncio.sleep(30)

    async with replica_link_to(
        "StreamBatched", stream_batched, replication_pb2.ReplicaMessageBatch, replication_pb2.ProducerMessageBatch
    ):
        _, first_at = await asyncio.wait_for(opens.get(), 10)
        # Two noop intervals without a word end the call; the link opens a new one.
        second, second_at = await asyncio.wait_for(opens.get(), 10)
        assert second.messages[0].WhichOneof("message") == "open"
        assert second_at - first_at >= 0.2

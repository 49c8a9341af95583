"""Routing (durakv._routing): Couchbase's key -> vbucket hash, chains with empty slots, config versions."""

from __future__ import annotations

import zlib

import pytest

from durakv._routing import Routing, vbucket_of
from durakv.proto import cluster_pb2

ACTIVE = cluster_pb2.NODE_STATE_ACTIVE
FAILED = cluster_pb2.NODE_STATE_FAILED


def config(revision: int = 1, epoch: int = 1, chains=None, buckets=("default",), nodes=3) -> cluster_pb2.ClusterConfig:
    cfg = cluster_pb2.ClusterConfig(epoch=epoch, revision=revision, cluster_uuid="c1")
    for i in range(nodes):
        cfg.nodes.add(node_id=f"node{i + 1}", address=f"10.0.0.{i + 1}:7101", state=ACTIVE)
    for name in buckets:
        bucket = cfg.buckets.add(uuid=f"u-{name}", manifest_uid=3)
        bucket.settings.name = name
        bucket.settings.num_replicas = 1
        maps = chains if chains is not None else [[vb % nodes, (vb + 1) % nodes] for vb in range(4)]
        bucket.settings.num_vbuckets = len(maps)
        for chain in maps:
            bucket.vbucket_map.add(nodes=chain)
    return cfg


# -- the hash ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "vbucket"), [(b"foo", 115), (b"airline_10", 361), (b"hello", 528)])
def test_vbucket_of_matches_couchbase_known_values_1024(key, vbucket):
    assert vbucket_of(key, 1024) == vbucket


@pytest.mark.parametrize("num_vbuckets", [1, 7, 64, 128, 1024])
def test_vbucket_of_is_couchbase_formula(num_vbuckets):
    for i in range(2000):
        key = f"key-{i}".encode()
        assert vbucket_of(key, num_vbuckets) == ((zlib.crc32(key) >> 16) & 0x7FFF) % num_vbuckets


def test_vbucket_of_hashes_key_bytes_only():
    assert vbucket_of("ключ".encode(), 1024) == ((zlib.crc32("ключ".encode()) >> 16) & 0x7FFF) % 1024


# -- chains --------------------------------------------------------------------------------------


def test_route_resolves_active_and_replicas_to_addresses():
    route = Routing.from_config(config()).bucket("default")
    assert route is not None
    assert route.num_vbuckets == 4
    assert route.active(0) == "10.0.0.1:7101"
    assert route.holders(0) == ("10.0.0.1:7101", "10.0.0.2:7101")
    assert route.active(2) == "10.0.0.3:7101"
    assert route.holders(2) == ("10.0.0.3:7101", "10.0.0.1:7101")
    assert (route.uuid, route.manifest_uid, route.version) == ("u-default", 3, (1, 1))


def test_route_key_goes_to_its_vbucket_active():
    route = Routing.from_config(config(chains=[[i % 3, -1] for i in range(64)])).bucket("default")
    for i in range(200):
        key = f"doc{i}".encode()
        vb = route.vbucket(key)
        assert vb == vbucket_of(key, 64)
        assert route.active(vb) == f"10.0.0.{vb % 3 + 1}:7101"


def test_route_empty_replica_slot_is_skipped():
    route = Routing.from_config(config(chains=[[0, -1], [1, -1]])).bucket("default")
    assert route.chains[0] == ("10.0.0.1:7101", None)
    assert route.holders(0) == ("10.0.0.1:7101",)


def test_route_empty_active_slot_has_no_active_but_keeps_replicas():
    route = Routing.from_config(config(chains=[[-1, 2], [0, 1]])).bucket("default")
    assert route.active(0) is None
    assert route.holders(0) == ("10.0.0.3:7101",)
    assert route.active(1) == "10.0.0.1:7101"


def test_route_chain_without_slots_has_no_holder():
    route = Routing.from_config(config(chains=[[], [0]])).bucket("default")
    assert route.active(0) is None
    assert route.holders(0) == ()


def test_route_node_index_out_of_range_is_an_empty_slot():
    route = Routing.from_config(config(chains=[[7, 0], [0, -9]])).bucket("default")
    assert route.active(0) is None
    assert route.holders(0) == ("10.0.0.1:7101",)
    assert route.holders(1) == ("10.0.0.1:7101",)


def test_routing_lists_buckets_and_active_nodes_only():
    cfg = config(buckets=("default", "travel"))
    cfg.nodes[1].state = FAILED
    routing = Routing.from_config(cfg)
    assert routing.bucket_names() == ["default", "travel"]
    assert routing.node_addresses() == ["10.0.0.1:7101", "10.0.0.3:7101"]
    assert routing.bucket("missing") is None


# -- versions ------------------------------------------------------------------------------------


def test_adopt_full_takes_newer_and_drops_missing_buckets():
    routing = Routing.from_config(config(revision=5, buckets=("default", "old")))
    newer = routing.adopt_full(config(revision=6, buckets=("default",)))
    assert newer.version == (1, 6)
    assert newer.bucket_names() == ["default"]


@pytest.mark.parametrize(("epoch", "revision"), [(1, 5), (1, 4), (0, 99)])
def test_adopt_full_ignores_same_or_older(epoch, revision):
    routing = Routing.from_config(config(revision=5))
    assert routing.adopt_full(config(epoch=epoch, revision=revision, buckets=())) is routing


def test_adopt_full_newer_epoch_wins_over_higher_revision():
    routing = Routing.from_config(config(epoch=1, revision=50))
    assert routing.adopt_full(config(epoch=2, revision=1)).version == (2, 1)


def test_adopt_bucket_replaces_one_bucket_and_keeps_full_version():
    routing = Routing.from_config(config(revision=5, buckets=("default", "travel")))
    scoped = config(revision=7, buckets=("default",), chains=[[2, 0], [2, 0], [2, 0], [2, 0]])
    adopted = routing.adopt_bucket(scoped, "default")
    assert adopted.version == (1, 5)  # the next poll still fetches revision 7 whole
    assert adopted.bucket("default").version == (1, 7)
    assert adopted.bucket("default").active(0) == "10.0.0.3:7101"
    assert adopted.bucket("travel") is routing.bucket("travel")
    assert routing.bucket("default").active(0) == "10.0.0.1:7101"  # the old value is untouched


def test_adopt_bucket_ignores_older_than_route_or_full():
    routing = Routing.from_config(config(revision=5))
    assert routing.adopt_bucket(config(revision=5), "default") is routing
    assert routing.adopt_bucket(config(revision=4), "default") is routing
    newer = routing.adopt_bucket(config(revision=8), "default")
    assert newer.adopt_bucket(config(revision=7), "default") is newer


def test_adopt_bucket_without_that_bucket_changes_nothing():
    routing = Routing.from_config(config(revision=5))
    assert routing.adopt_bucket(config(revision=9, buckets=("other",)), "default") is routing


def test_adopt_bucket_can_add_a_bucket_not_yet_polled():
    routing = Routing.from_config(config(revision=5, buckets=("default",)))
    adopted = routing.adopt_bucket(config(revision=6, buckets=("new",)), "new")
    assert adopted.bucket_names() == ["default", "new"]


def test_empty_routing_has_no_version_and_nothing_to_route():
    routing = Routing()
    assert routing.version == (0, 0)
    assert routing.bucket_names() == []
    assert routing.node_addresses() == []
    assert routing.adopt_full(config(revision=1)).version == (1, 1)


def test_bucket_without_map_routes_nowhere():
    cfg = config(chains=[])
    cfg.buckets[0].settings.num_vbuckets = 0
    route = Routing.from_config(cfg).bucket("default")
    assert route.num_vbuckets == 1
    assert route.active(route.vbucket(b"any")) is None

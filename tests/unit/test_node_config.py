"""node_config: what one node runs for a configuration, and how its buckets must change. Pure.

Configurations are made the way the manager makes them (`cluster_config` changes, encoded
by `config_proto`), and the plan is checked against `vbmap`'s own per-node view.
"""

from __future__ import annotations

import dataclasses

import pytest

from durakv.engine.bucket import BucketConfig
from durakv.engine.durability import Chain
from durakv.engine.errors import Status
from durakv.engine.vbucket import VBState
from durakv.replication import config_proto, vbmap
from durakv.replication.cluster_config import ClusterConfig
from durakv.replication.node_config import (
    NO_VERSION,
    ConfigDiff,
    ConfigError,
    LocalBucket,
    VBucketPlan,
    client_view,
    diff,
    plan_node,
    version_of,
)

EPOCH = 1


def cluster(num_nodes: int = 3, num_replicas: int = 1, num_vbuckets: int = 16) -> ClusterConfig:
    config = ClusterConfig.new()
    for i in range(1, num_nodes + 1):
        config = config.add_node(f"node{i}", f"127.0.0.1:{7100 + i}")
    config = config.create_bucket(BucketConfig("default", num_vbuckets=num_vbuckets, num_replicas=num_replicas))
    return config.create_collection("default", "_default", "users")


def wire(config: ClusterConfig, *, manifests: bool = True):
    return config_proto.cluster_config_to_proto(config, epoch=EPOCH, manifests=manifests)


@pytest.mark.parametrize("node_id", ["node1", "node2", "node3"])
def test_plan_node_states_and_chains_match_the_map(node_id):
    config = cluster()
    plan = plan_node(wire(config), node_id)["default"]
    entry = config.bucket("default")
    active, replica = vbmap.node_vbuckets(entry.vbmap, node_id)
    assert [vb for vb, p in enumerate(plan.vbuckets) if p.state is VBState.ACTIVE] == list(active)
    assert [vb for vb, p in enumerate(plan.vbuckets) if p.state is VBState.REPLICA] == list(replica)
    assert [p.chain for p in plan.vbuckets] == list(entry.vbmap)
    assert plan.config == entry.config
    assert all(p.state is VBState.DEAD for vb, p in enumerate(plan.vbuckets) if vb not in active + replica)


def test_plan_node_full_form_carries_the_managers_manifest():
    config = cluster()
    plan = plan_node(wire(config), "node1")["default"]
    assert plan.manifest is not None
    want = config.bucket("default").manifest
    assert plan.manifest.collection_id("_default", "users") == want.collection_id("_default", "users")
    assert plan.manifest.describe() == want.describe()
    assert plan.manifest_uid == plan.manifest.uid == 1


def test_plan_node_client_form_has_no_manifest_but_its_uid():
    plan = plan_node(wire(cluster(), manifests=False), "node1")["default"]
    assert plan.manifest is None
    assert plan.manifest_uid == 1


def test_plan_node_after_failover_failed_node_is_dead_everywhere_and_lost_vbuckets_dead():
    config = cluster(num_nodes=2, num_replicas=0, num_vbuckets=8).mark_failed("node2")
    plan = plan_node(wire(config), "node2")["default"]
    assert {p.state for p in plan.vbuckets} == {VBState.DEAD}
    survivor = plan_node(wire(config), "node1")["default"]
    lost = [vb for vb, chain in enumerate(config.bucket("default").vbmap) if chain is None]
    assert lost, "with no replicas, node2's vbuckets are lost"
    assert all(survivor.vbuckets[vb] == VBucketPlan(VBState.DEAD, None) for vb in lost)


def test_plan_node_promoted_replica_becomes_active_with_the_shortened_chain():
    config = cluster(num_nodes=3, num_replicas=1, num_vbuckets=12)
    before = plan_node(wire(config), "node2")["default"]
    after = plan_node(wire(config.mark_failed("node1")), "node2")["default"]
    promoted = [
        vb
        for vb in range(12)
        if before.vbuckets[vb].state is VBState.REPLICA and after.vbuckets[vb].state is VBState.ACTIVE
    ]
    assert promoted
    for vb in promoted:
        assert after.vbuckets[vb].chain == Chain("node2", (None,))


def test_plan_node_unknown_node_holds_nothing():
    plan = plan_node(wire(cluster()), "node9")["default"]
    assert {p.state for p in plan.vbuckets} == {VBState.DEAD}


def _broken(edit):
    msg = wire(cluster())
    edit(msg)
    return msg


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: m.buckets[0].vbucket_map[0].nodes.__setitem__(0, 7), id="index-past-the-nodes"),
        pytest.param(lambda m: m.buckets[0].vbucket_map.pop(), id="map-too-short"),
        pytest.param(lambda m: m.buckets[0].vbucket_map[0].nodes.append(1), id="chain-too-long"),
        pytest.param(
            lambda m: m.buckets[0].vbucket_map[0].nodes.__setitem__(1, m.buckets[0].vbucket_map[0].nodes[0]),
            id="node-twice-in-chain",
        ),
        pytest.param(lambda m: m.buckets.append(m.buckets[0]), id="bucket-twice"),
        pytest.param(lambda m: m.buckets[0].settings.__setattr__("num_replicas", 9), id="bad-settings"),
        pytest.param(lambda m: m.buckets[0].settings.__setattr__("name", ".hidden"), id="bad-bucket-name"),
        pytest.param(lambda m: m.buckets[0].manifest.scopes[0].__setattr__("id", 5), id="manifest-misnumbered"),
        pytest.param(lambda m: m.nodes.append(m.nodes[0]), id="node-twice"),
        pytest.param(lambda m: m.__setattr__("revision", 0), id="no-revision"),
    ],
)
def test_plan_node_malformed_config_refused_whole_with_einval(edit):
    with pytest.raises(ConfigError) as info:
        plan_node(_broken(edit), "node1")
    assert info.value.status is Status.EINVAL


def local_of(plans) -> dict[str, LocalBucket]:
    return {name: LocalBucket(plan.config, plan.uuid) for name, plan in plans.items()}


def test_diff_same_config_changes_nothing():
    plans = plan_node(wire(cluster()), "node1")
    assert diff(local_of(plans), plans) == ConfigDiff()


def test_diff_new_and_missing_buckets_created_and_dropped():
    config = cluster()
    old = plan_node(wire(config), "node1")
    new = plan_node(wire(config.drop_bucket("default").create_bucket(BucketConfig("b2"))), "node1")
    changes = diff(local_of(old), new)
    assert (changes.create, changes.drop, changes.recreate, changes.update) == (("b2",), ("default",), (), ())


def test_diff_vbucket_count_or_uuid_change_recreates_the_bucket():
    plans = plan_node(wire(cluster(num_vbuckets=16)), "node1")
    other_count = {"default": LocalBucket(dataclasses.replace(plans["default"].config, num_vbuckets=64))}
    assert diff(other_count, plans).recreate == ("default",)
    uuid_plans = {"default": dataclasses.replace(plans["default"], uuid="bbbb")}
    assert diff({"default": LocalBucket(plans["default"].config, "aaaa")}, uuid_plans).recreate == ("default",)
    # An unknown uuid on either side is no evidence of another bucket.
    assert diff({"default": LocalBucket(plans["default"].config, "")}, uuid_plans).recreate == ()


def test_diff_other_settings_change_updates_in_place():
    plans = plan_node(wire(cluster()), "node1")
    local = {"default": LocalBucket(dataclasses.replace(plans["default"].config, durability_min_level=2))}
    changes = diff(local, plans)
    assert (changes.update, changes.recreate) == (("default",), ())


def test_client_view_has_no_manifests_and_one_bucket_when_asked():
    config = cluster().create_bucket(BucketConfig("b2", num_vbuckets=4))
    msg = wire(config)
    whole = client_view(msg)
    assert [b.settings.name for b in whole.buckets] == ["default", "b2"]
    assert not any(b.HasField("manifest") for b in whole.buckets)
    assert list(whole.nodes) == list(msg.nodes)
    one = client_view(msg, "b2")
    assert [b.settings.name for b in one.buckets] == ["b2"]
    assert list(one.buckets[0].vbucket_map) == list(msg.buckets[1].vbucket_map)
    assert version_of(one) == version_of(msg) == (EPOCH, config.revision)
    assert client_view(msg, "nope") is None
    assert msg.buckets[0].HasField("manifest"), "the input is left as it was"


def test_version_order_epoch_first():
    assert NO_VERSION < (0, 1) < (1, 0) < (1, 5) < (2, 1)

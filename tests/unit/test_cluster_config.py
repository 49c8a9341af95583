"""replication.cluster_config and replication.manager_state: changes, refusals, serialisation, the file on disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durakv.engine.bucket import BucketConfig
from durakv.engine.errors import DataDirError, DataDirLockedError, FormatVersionError, KVError, Status
from durakv.replication import auto_failover, manager_state, vbmap
from durakv.replication.cluster_config import (
    ClusterConfig,
    ClusterConfigError,
    ConfigDecodeError,
    NodeState,
    Refusal,
)
from durakv.replication.manager_state import ManagerState
from durakv.replication.users import InvalidRoleError, ScryptParams, authorize

FAST = ScryptParams(n=2, r=1, p=1)  # tests only
UUID = "0123456789abcdef0123456789abcdef"
SECRET = "ab" * 32


def cluster(num_nodes: int = 3) -> ClusterConfig:
    config = ClusterConfig.new(cluster_uuid=UUID, secret=SECRET)
    for i in range(1, num_nodes + 1):
        config = config.add_node(f"n{i}", f"127.0.0.1:{7100 + i}")
    return config


def populated() -> ClusterConfig:
    config = cluster().create_bucket(BucketConfig("travel", num_vbuckets=16, num_replicas=2, durability_min_level=1))
    config = config.create_scope("travel", "inventory").create_collection("travel", "inventory", "hotels", 3600)
    config = config.create_user("admin", "password", ["admin"], FAST)
    return config.create_user("reader", "password", ["data_reader[travel]"], FAST)


def refusal_of(change) -> Refusal:
    with pytest.raises(ClusterConfigError) as info:
        change()
    return info.value.refusal


# -- changes -------------------------------------------------------------------------------
def test_new_config_revision_one_and_fresh_identity():
    first, second = ClusterConfig.new(), ClusterConfig.new()
    assert first.revision == 1 and not first.nodes and not first.buckets and not first.users
    assert len(first.cluster_uuid) == 32 and len(first.secret) == 64
    assert first.cluster_uuid != second.cluster_uuid and first.secret != second.secret
    with pytest.raises(ValueError):
        ClusterConfig.new(secret="short")


def test_every_change_bumps_revision_by_one_and_leaves_the_old_config_alone():
    config = populated()
    before = config.to_json()
    changes = [
        lambda c: c.add_node("n9", "10.0.0.9:7101"),
        lambda c: c.mark_failed("n2"),
        lambda c: c.create_bucket(BucketConfig("other")),
        lambda c: c.drop_bucket("travel"),
        lambda c: c.create_scope("travel", "s2"),
        lambda c: c.drop_scope("travel", "inventory"),
        lambda c: c.create_collection("travel", "_default", "c2"),
        lambda c: c.drop_collection("travel", "inventory", "hotels"),
        lambda c: c.create_user("bob", "password", ["data_writer[*]"], FAST),
        lambda c: c.drop_user("reader"),
    ]
    for change in changes:
        assert change(config).revision == config.revision + 1
    assert config.to_json() == before


def test_config_maps_are_read_only_and_manifest_is_a_copy():
    config = populated()
    with pytest.raises(TypeError):
        config.nodes["x"] = None
    config.bucket("travel").manifest.create_scope("sneaky")
    assert "sneaky" not in config.bucket("travel").manifest.scopes


def test_create_bucket_plans_over_active_nodes_only():
    config = cluster(4).mark_failed("n2").create_bucket(BucketConfig("b", num_vbuckets=64, num_replicas=1))
    entry = config.bucket("b")
    assert entry.vbmap == vbmap.plan_map(["n1", "n3", "n4"], 64, 1)
    assert entry.manifest.collection_id("_default", "_default") == 0


def test_create_bucket_more_replicas_than_nodes_leaves_empty_slots():
    config = cluster(2).create_bucket(BucketConfig("b", num_vbuckets=8, num_replicas=3))
    assert all(chain.replicas[1:] == (None, None) for chain in config.bucket("b").vbmap)


def test_mark_failed_fails_over_every_bucket_with_its_positions():
    config = cluster(3).create_bucket(BucketConfig("a", num_vbuckets=4, num_replicas=2))
    config = config.create_bucket(BucketConfig("b", num_vbuckets=4, num_replicas=0))
    # Bucket "a": everywhere n1 is active, make n3 the most advanced replica.
    positions = {"a": lambda vb, node: (9, 9) if node == "n3" else (1, 1)}
    after = config.mark_failed("n1", positions)
    assert after.nodes["n1"].state is NodeState.FAILED
    for old, new in zip(config.bucket("a").vbmap, after.bucket("a").vbmap, strict=True):
        if old.active == "n1":
            assert new.active == "n3"
        assert "n1" not in new.defined_nodes()
    assert after.bucket("b").vbmap == vbmap.failover(config.bucket("b").vbmap, "n1")
    assert None in after.bucket("b").vbmap  # no replica: n1's vbuckets are lost


def test_automatic_failovers_are_counted_until_reset_and_round_trip():
    config = cluster(3).create_bucket(BucketConfig("a", num_vbuckets=4, num_replicas=2))
    assert config.auto_failover == auto_failover.Settings() and config.auto_failover_count == 0
    config = config.set_auto_failover(auto_failover.Settings(timeout_s=5, max_count=2))
    by_hand = config.mark_failed("n1")
    assert by_hand.auto_failover_count == 0  # a failover by command does not count
    automatic = config.mark_failed("n1", automatic=True)
    assert automatic.auto_failover_count == 1 and automatic.auto_failover.timeout_s == 5.0
    assert ClusterConfig.from_json(automatic.to_json()) == automatic
    assert ClusterConfig.from_json(automatic.to_json()).to_json() == automatic.to_json()
    reset = automatic.reset_auto_failover()
    assert reset.auto_failover_count == 0 and reset.revision == automatic.revision + 1


def test_an_automatic_failover_is_refused_when_its_rules_forbid_it():
    config = cluster(4).create_bucket(BucketConfig("a", num_vbuckets=8, num_replicas=2))
    once = config.mark_failed("n1", automatic=True)
    with pytest.raises(ClusterConfigError) as refused:
        once.mark_failed("n2", automatic=True)  # max count 1
    assert refused.value.refusal is Refusal.AUTO_FAILOVER_REFUSED and "--reset" in refused.value.message
    with pytest.raises(ClusterConfigError) as refused:
        once.reset_auto_failover().mark_failed("n2", automatic=True)  # chains of 3 would keep 1
    assert refused.value.refusal is Refusal.AUTO_FAILOVER_REFUSED and "majority" in refused.value.message
    off = config.set_auto_failover(auto_failover.Settings(enabled=False))
    with pytest.raises(ClusterConfigError) as refused:
        off.mark_failed("n1", automatic=True)
    assert refused.value.refusal is Refusal.AUTO_FAILOVER_REFUSED and "disabled" in refused.value.message
    assert off.mark_failed("n1").nodes["n1"].state is NodeState.FAILED  # by command it still goes


def test_recover_node_makes_it_active_and_a_replica_where_a_copy_is_missing():
    config = cluster(3).create_bucket(BucketConfig("a", num_vbuckets=8, num_replicas=1))
    failed = config.mark_failed("n2")
    with pytest.raises(ClusterConfigError) as refused:
        config.recover_node("n2")
    assert refused.value.refusal is Refusal.NODE_NOT_FAILED
    with pytest.raises(ClusterConfigError) as unknown:
        failed.recover_node("n9")
    assert unknown.value.refusal is Refusal.NODE_NOT_FOUND
    back = failed.recover_node("n2")
    assert back.nodes["n2"].state is NodeState.ACTIVE and back.revision == failed.revision + 1
    for chain in back.bucket("a").vbmap:
        assert chain.active != "n2" and None not in chain.replicas
    assert ClusterConfig.from_json(back.to_json()) == back


def test_a_configuration_saved_before_automatic_failover_existed_gets_the_defaults():
    doc = json.loads(cluster(3).to_json())
    del doc["auto_failover"]
    config = ClusterConfig.from_json(json.dumps(doc).encode())
    assert config.auto_failover == auto_failover.Settings() and config.auto_failover_count == 0


@pytest.mark.parametrize(
    "auto", [{"timeout_s": 0.1}, {"max_count": 0}, {"count": -1}, {"count": "1"}, {"enabled": 1}, {"bogus": 1}]
)
def test_a_malformed_automatic_failover_section_is_refused(auto):
    doc = json.loads(cluster(3).to_json())
    doc["auto_failover"].update(auto)
    with pytest.raises(ConfigDecodeError):
        ClusterConfig.from_json(json.dumps(doc).encode())


def test_drop_bucket_drops_roles_on_it():
    config = populated().create_user("w", "password", ["data_writer[travel]", "data_reader[*]"], FAST)
    dropped = config.drop_bucket("travel")
    assert [str(r) for r in dropped.users["w"].roles] == ["data_reader[*]"]
    assert dropped.users["reader"].roles == ()
    recreated = dropped.create_bucket(BucketConfig("travel"))
    assert not authorize(recreated.users["reader"], "read", "travel")


def test_failover_preserves_majority_over_buckets():
    config = cluster(3).create_bucket(BucketConfig("b", num_vbuckets=8, num_replicas=2))
    assert config.failover_preserves_majority(["n1"])
    assert not config.failover_preserves_majority(["n1", "n2"])


def test_check_secret_constant_time_match():
    config = cluster(1)
    assert config.check_secret(SECRET)
    assert not config.check_secret("cd" * 32) and not config.check_secret(None)


# -- refusals ------------------------------------------------------------------------------
# (change on populated(), refusal, wire status)
REFUSALS = {
    "node_exists": (lambda c: c.add_node("n1", "10.0.0.1:1"), Refusal.NODE_EXISTS, Status.KEY_EEXISTS),
    "address_in_use": (lambda c: c.add_node("n9", "127.0.0.1:7101"), Refusal.ADDRESS_IN_USE, Status.EINVAL),
    "node_id_empty": (lambda c: c.add_node("", "10.0.0.1:1"), Refusal.INVALID_NODE_ID, Status.EINVAL),
    "node_id_slash": (lambda c: c.add_node("a/b", "10.0.0.1:1"), Refusal.INVALID_NODE_ID, Status.EINVAL),
    "node_id_long": (lambda c: c.add_node("n" * 65, "10.0.0.1:1"), Refusal.INVALID_NODE_ID, Status.EINVAL),
    "address_no_port": (lambda c: c.add_node("n9", "host"), Refusal.INVALID_ADDRESS, Status.EINVAL),
    "address_port_zero": (lambda c: c.add_node("n9", "host:0"), Refusal.INVALID_ADDRESS, Status.EINVAL),
    "address_port_big": (lambda c: c.add_node("n9", "host:65536"), Refusal.INVALID_ADDRESS, Status.EINVAL),
    "address_v6_bare": (lambda c: c.add_node("n9", "::1:7101"), Refusal.INVALID_ADDRESS, Status.EINVAL),
    "address_not_str": (lambda c: c.add_node("n9", 7101), Refusal.INVALID_ADDRESS, Status.EINVAL),
    "fail_unknown": (lambda c: c.mark_failed("n9"), Refusal.NODE_NOT_FOUND, Status.KEY_ENOENT),
    "fail_twice": (lambda c: c.mark_failed("n1").mark_failed("n1"), Refusal.NODE_FAILED, Status.EINVAL),
    "fail_last": (
        lambda c: c.mark_failed("n1").mark_failed("n2").mark_failed("n3"),
        Refusal.LAST_ACTIVE_NODE,
        Status.EINVAL,
    ),
    "bucket_exists": (lambda c: c.create_bucket(BucketConfig("travel")), Refusal.BUCKET_EXISTS, Status.BUCKET_EXISTS),
    "bucket_not_found_drop": (lambda c: c.drop_bucket("nope"), Refusal.BUCKET_NOT_FOUND, Status.BUCKET_NOT_FOUND),
    "bucket_not_found_scope": (
        lambda c: c.create_scope("nope", "s"),
        Refusal.BUCKET_NOT_FOUND,
        Status.BUCKET_NOT_FOUND,
    ),
    "no_active_node": (
        lambda c: ClusterConfig.new().create_bucket(BucketConfig("b")),
        Refusal.NO_ACTIVE_NODE,
        Status.EINVAL,
    ),
    "user_exists": (
        lambda c: c.create_user("admin", "password", ["admin"], FAST),
        Refusal.USER_EXISTS,
        Status.KEY_EEXISTS,
    ),
    "user_role_missing_bucket": (
        lambda c: c.create_user("u", "password", ["data_reader[nope]"], FAST),
        Refusal.BUCKET_NOT_FOUND,
        Status.BUCKET_NOT_FOUND,
    ),
    "user_not_found": (lambda c: c.drop_user("nope"), Refusal.USER_NOT_FOUND, Status.KEY_ENOENT),
    "last_admin": (lambda c: c.drop_user("admin"), Refusal.LAST_ADMIN, Status.EINVAL),
}


@pytest.mark.parametrize("change, refusal, status", REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_change_raises_typed_error_and_changes_nothing(change, refusal, status):
    config = populated()
    before = config.to_json()
    with pytest.raises(ClusterConfigError) as info:
        change(config)
    assert info.value.refusal is refusal and info.value.status is status
    assert config.to_json() == before


def test_buckets_max_refused():
    config = cluster(1)
    for i in range(30):
        config = config.create_bucket(BucketConfig(f"b{i}", num_vbuckets=1))
    assert refusal_of(lambda: config.create_bucket(BucketConfig("one-more", num_vbuckets=1))) is Refusal.BUCKETS_MAX


def test_nodes_max_refused():
    config = ClusterConfig.new()
    for i in range(64):
        config = config.add_node(f"n{i}", f"h:{1000 + i}")
    assert refusal_of(lambda: config.add_node("n64", "h:2000")) is Refusal.NODES_MAX


@pytest.mark.parametrize(
    "change, status",
    [
        (lambda c: c.create_scope("travel", "inventory"), Status.SCOPE_EXISTS),
        (lambda c: c.create_scope("travel", "_bad"), Status.EINVAL),
        (lambda c: c.drop_scope("travel", "_default"), Status.EINVAL),
        (lambda c: c.drop_scope("travel", "nope"), Status.UNKNOWN_SCOPE),
        (lambda c: c.create_collection("travel", "inventory", "hotels"), Status.COLLECTION_EXISTS),
        (lambda c: c.create_collection("travel", "nope", "c"), Status.UNKNOWN_SCOPE),
        (lambda c: c.create_collection("travel", "_default", "_default"), Status.EINVAL),
        (lambda c: c.drop_collection("travel", "inventory", "nope"), Status.UNKNOWN_COLLECTION),
        (lambda c: c.create_bucket(BucketConfig("x", num_replicas=4)), Status.EINVAL),
    ],
)
def test_manifest_and_bucket_settings_refusals_are_kv_errors(change, status):
    config = populated()
    before = config.to_json()
    with pytest.raises(KVError) as info:
        change(config)
    assert info.value.status is status
    assert config.to_json() == before


def test_create_user_bad_role_raises_invalid_role_error():
    with pytest.raises(InvalidRoleError):
        populated().create_user("u", "password", ["data_reader"], FAST)


# -- a random walk of changes: revision, invariants, round trip ------------------------------
NODE_IDS = ["n1", "n2", "n3", "n4"]
BUCKET_NAMES = ["a", "b"]
CHANGES = st.one_of(
    st.tuples(st.just("add_node"), st.sampled_from(NODE_IDS), st.integers(7101, 7104)),
    st.tuples(st.just("mark_failed"), st.sampled_from(NODE_IDS)),
    st.tuples(st.just("create_bucket"), st.sampled_from(BUCKET_NAMES), st.integers(1, 16), st.integers(0, 3)),
    st.tuples(st.just("drop_bucket"), st.sampled_from(BUCKET_NAMES)),
    st.tuples(st.just("create_scope"), st.sampled_from(BUCKET_NAMES), st.sampled_from(["s", "t"])),
    st.tuples(st.just("drop_scope"), st.sampled_from(BUCKET_NAMES), st.sampled_from(["s", "t"])),
    st.tuples(st.just("create_collection"), st.sampled_from(BUCKET_NAMES), st.sampled_from(["s", "_default"])),
    st.tuples(st.just("create_user"), st.sampled_from(["u", "v"]), st.sampled_from(["admin", "data_reader[a]"])),
    st.tuples(st.just("drop_user"), st.sampled_from(["u", "v"])),
)


def apply(config: ClusterConfig, change: tuple) -> ClusterConfig:
    kind, *args = change
    if kind == "add_node":
        return config.add_node(args[0], f"127.0.0.1:{args[1]}")
    if kind == "create_bucket":
        return config.create_bucket(BucketConfig(args[0], num_vbuckets=args[1], num_replicas=args[2]))
    if kind == "create_collection":
        return config.create_collection(args[0], args[1], "c")
    if kind == "create_user":
        return config.create_user(args[0], "password", [args[1]], FAST)
    return getattr(config, kind)(*args)


def check_invariants(config: ClusterConfig) -> None:
    active = set(config.active_nodes())
    for entry in config.buckets.values():
        assert len(entry.vbmap) == entry.config.num_vbuckets
        for chain in entry.vbmap:
            assert chain is None or (
                len(chain.replicas) == entry.config.num_replicas and set(chain.defined_nodes()) <= active
            )
    for user in config.users.values():
        assert all(r.bucket in (None, "*") or r.bucket in config.buckets for r in user.roles)


@settings(max_examples=150, deadline=None)
@given(changes=st.lists(CHANGES, min_size=5, max_size=40))
def test_random_changes_keep_revision_monotonic_invariants_and_exact_round_trip(changes):
    config = cluster(2).create_bucket(BucketConfig("a", num_vbuckets=8, num_replicas=1))
    for change in changes:
        before = config.to_json()
        try:
            changed = apply(config, change)
        except KVError:
            assert config.to_json() == before  # a refusal changes nothing
            continue
        assert changed.revision == config.revision + 1
        config = changed
        check_invariants(config)
        raw = config.to_json()
        again = ClusterConfig.from_json(raw)
        assert again == config and again.to_json() == raw


# -- views and decoding ----------------------------------------------------------------------
def test_client_view_has_maps_and_manifests_but_no_secrets():
    config = populated().mark_failed("n2")
    view = config.client_view()
    text = json.dumps(view)
    assert SECRET not in text and "password" not in text and "users" not in view
    for user in config.users.values():
        assert user.password.digest.hex() not in text and user.password.salt.hex() not in text
    assert view["revision"] == config.revision and view["cluster_uuid"] == UUID
    assert [n["state"] for n in view["nodes"]] == ["active", "failed", "active"]
    bucket = view["buckets"]["travel"]
    assert bucket["num_replicas"] == 2 and bucket["durability_min_level"] == 1
    server_list = bucket["vbucket_map"]["server_list"]
    assert server_list == ["n1", "n2", "n3"]
    for chain, row in zip(config.bucket("travel").vbmap, bucket["vbucket_map"]["map"], strict=True):
        assert row == [server_list.index(n) if n else -1 for n in (chain.active, *chain.replicas)]
    assert bucket["manifest"]["uid"] == config.bucket("travel").manifest.uid == 2


def test_from_json_round_trip_of_populated_config_is_exact():
    config = populated().mark_failed("n3")
    assert ClusterConfig.from_json(config.to_json()) == config


def _mutated(edit) -> bytes:
    doc = json.loads(populated().to_json())
    edit(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"[]",
        _mutated(lambda d: d.pop("nodes")),
        _mutated(lambda d: d.update(revision=0)),
        _mutated(lambda d: d.update(revision="7")),
        _mutated(lambda d: d.update(cluster_uuid="xyz")),
        _mutated(lambda d: d.update(secret="")),
        _mutated(lambda d: d["nodes"].append(d["nodes"][0])),
        _mutated(lambda d: d["nodes"][0].update(state="sleeping")),
        _mutated(lambda d: d["nodes"][0].update(address="nowhere")),
        _mutated(lambda d: d["nodes"][0].update(id=7)),
        _mutated(lambda d: d["nodes"][0].update(state="failed")),  # still holds slots in the map
        _mutated(lambda d: d["buckets"][0]["map"].pop()),
        _mutated(lambda d: d["buckets"][0]["map"][0].__setitem__(0, "ghost")),
        _mutated(lambda d: d["buckets"][0]["config"].update(num_replicas=9)),
        _mutated(lambda d: d["buckets"][0]["config"].update(colour="blue")),
        _mutated(lambda d: d["buckets"].append(d["buckets"][0])),
        _mutated(lambda d: d["buckets"].clear()),  # a role now names a missing bucket
        _mutated(lambda d: d["users"][0]["password"].update(salt="00")),
        _mutated(lambda d: d["users"][0].update(roles=["root"])),
    ],
)
def test_from_json_malformed_raises_config_decode_error(raw):
    with pytest.raises(ConfigDecodeError):
        ClusterConfig.from_json(raw)


# -- manager_state: the file on disk ---------------------------------------------------------
def new_config() -> ClusterConfig:
    return ClusterConfig.new(cluster_uuid=UUID, secret=SECRET)


def test_manager_state_new_directory_saves_a_fresh_config_owner_only(tmp_path):
    directory = tmp_path / "mgr"
    with ManagerState(directory) as state:
        assert state.config.revision == 1
        secret = state.config.secret
    path = directory / manager_state.CONFIG_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with ManagerState(directory) as state:
        assert state.config.secret == secret  # drawn once, kept


def test_manager_state_update_saves_and_reopen_sees_it(tmp_path):
    with ManagerState(tmp_path, new_config=new_config) as state:
        state.update(lambda c: c.add_node("n1", "127.0.0.1:7101"))
        saved = state.update(lambda c: c.create_bucket(BucketConfig("b", num_vbuckets=8)))
    with ManagerState(tmp_path, create=False) as state:
        assert state.config == saved and state.config.revision == 3
    assert manager_state.read_config(tmp_path) == saved


def test_manager_state_refused_change_writes_nothing(tmp_path):
    with ManagerState(tmp_path, new_config=new_config) as state:
        raw = (tmp_path / manager_state.CONFIG_FILE_NAME).read_bytes()
        with pytest.raises(ClusterConfigError):
            state.update(lambda c: c.drop_bucket("nope"))
        assert state.config.revision == 1
        assert (tmp_path / manager_state.CONFIG_FILE_NAME).read_bytes() == raw


def test_manager_state_failed_write_keeps_file_and_config(tmp_path, monkeypatch):
    with ManagerState(tmp_path, new_config=new_config) as state:
        raw = (tmp_path / manager_state.CONFIG_FILE_NAME).read_bytes()

        def disk_full(path, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(manager_state, "atomic_write", disk_full)
        with pytest.raises(OSError):
            state.update(lambda c: c.add_node("n1", "127.0.0.1:7101"))
        assert state.config.revision == 1 and not state.config.nodes
        assert (tmp_path / manager_state.CONFIG_FILE_NAME).read_bytes() == raw


def test_manager_state_older_revision_is_an_assertion(tmp_path):
    with ManagerState(tmp_path, new_config=new_config) as state:
        old = state.config
        state.update(lambda c: c.add_node("n1", "127.0.0.1:7101"))
        with pytest.raises(AssertionError):
            state.save(old.add_node("n2", "127.0.0.1:7102"))  # revision 2 again


def test_manager_state_second_open_is_locked_out(tmp_path):
    with ManagerState(tmp_path), pytest.raises(DataDirLockedError):
        ManagerState(tmp_path)


def test_manager_state_missing_config_without_create_is_data_dir_error(tmp_path):
    with pytest.raises(DataDirError):
        ManagerState(tmp_path / "absent", create=False)
    with pytest.raises(DataDirError) as info:
        ManagerState(tmp_path, create=False)
    assert info.value.path == str(tmp_path / manager_state.CONFIG_FILE_NAME)


def _write_state(directory, edit) -> str:
    path = directory / manager_state.CONFIG_FILE_NAME
    path.write_bytes(edit(manager_state.encode_state(populated())))
    return str(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw[: len(raw) // 2],  # cut short
        lambda raw: b"",
        lambda raw: raw.replace(b'"revision":', b'"revision":1', 1),  # changed behind our back
        lambda raw: raw.replace(b'"checksum_crc32":', b'"checksum_crc32":1', 1),
        lambda raw: raw.replace(b'"format_version"', b'"format_verzion"', 1),
    ],
    ids=["truncated", "empty", "content_changed", "checksum_changed", "no_version"],
)
def test_manager_state_corrupt_file_is_data_dir_error_naming_it(tmp_path, edit):
    path = _write_state(tmp_path, edit)
    with pytest.raises(DataDirError) as info:
        ManagerState(tmp_path)
    assert info.value.path == path and path in str(info.value)
    assert not isinstance(info.value, FormatVersionError)


def test_manager_state_config_breaking_invariants_is_data_dir_error(tmp_path):
    body = populated().to_json().replace(b'"state":"active"', b'"state":"failed"', 1)  # failed, yet in the maps
    doc = {
        "format_version": manager_state.FORMAT_VERSION,
        "checksum_crc32": zlib.crc32(body),
        "config": json.loads(body),
    }
    (tmp_path / manager_state.CONFIG_FILE_NAME).write_text(json.dumps(doc))
    with pytest.raises(DataDirError) as info:
        ManagerState(tmp_path)
    assert isinstance(info.value.__cause__, ConfigDecodeError)


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_manager_state_unknown_format_version_names_the_file(tmp_path, version):
    path = _write_state(
        tmp_path, lambda raw: raw.replace(b'"format_version":1', b'"format_version":' + json.dumps(version).encode())
    )
    with pytest.raises(FormatVersionError) as info:
        ManagerState(tmp_path)
    assert info.value.path == path and path in str(info.value)


def test_manager_state_removes_stale_temp_files(tmp_path):
    ManagerState(tmp_path).close()
    stale = tmp_path / f".{manager_state.CONFIG_FILE_NAME}.tmp.123.abcd"
    stale.write_bytes(b"half a config")
    ManagerState(tmp_path).close()
    assert not stale.exists()


def test_encode_state_is_json_with_version_and_checksum():
    config = populated()
    doc = json.loads(manager_state.encode_state(config))
    assert doc["format_version"] == manager_state.FORMAT_VERSION
    assert doc["checksum_crc32"] == zlib.crc32(config.to_json())
    assert ClusterConfig.from_json(json.dumps(doc["config"]).encode()) == config


# A manager that saves forever: the revision alone says what the config must hold.
_SAVER = textwrap.dedent(
    """
    import sys
    from durakv.engine.bucket import BucketConfig
    from durakv.replication.manager_state import ManagerState

    state = ManagerState(sys.argv[1])
    if not state.config.nodes:
        state.update(lambda c: c.add_node("n1", "127.0.0.1:7101"))  # revision 2
    while True:
        if "b" in state.config.buckets:
            state.update(lambda c: c.drop_bucket("b"))
        else:
            state.update(lambda c: c.create_bucket(BucketConfig("b", num_vbuckets=1024, num_replicas=0)))
        print(state.config.revision, flush=True)
    """
)


def test_manager_state_save_survives_kill_mid_loop(tmp_path):
    directory = str(tmp_path / "mgr")
    last_seen = 0
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", _SAVER, directory], stdout=subprocess.PIPE, text=True)
        try:
            target = last_seen + 20
            for line in child.stdout:
                last_seen = int(line)
                if last_seen >= target:
                    break
            child.send_signal(signal.SIGKILL)
            rest = child.stdout.read().split()  # revisions printed before the kill landed
            printed = max([last_seen, *map(int, rest)])
        finally:
            child.kill()
            child.wait(timeout=60)
            child.stdout.close()
        with ManagerState(directory, create=False) as state:
            config = state.config
            # Whole, and of the revision saved last or the one after it (saved, not yet printed).
            assert printed <= config.revision <= printed + 1
            assert ("b" in config.buckets) == (config.revision % 2 == 1)
            if "b" in config.buckets:
                assert len(config.bucket("b").vbmap) == 1024
        assert not [n for n in os.listdir(directory) if ".tmp." in n]
        last_seen = config.revision

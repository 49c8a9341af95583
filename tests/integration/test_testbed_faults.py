"""Testbed faults on real processes (`durakv cluster fault`, NodeControl.InjectFault; DESIGN §8).

Each test starts its own cluster with `durakv cluster up` (3 nodes, 2 replicas) on free ports
and destroys it at the end. Every wait polls with a deadline.

What the tests claim:
- a power cut of every node at once (each drops what it had not fsynced, then exits 137), on
  a cluster whose nodes fsync only when a durable write asks (`up --fsync never`):
  after `durakv cluster up` restarts them, every write acknowledged as PERSIST_TO_MAJORITY is
  there with its value -- a majority fsynced it, and a power cut drops only unsynced bytes.
  Acknowledged MAJORITY and NONE writes may be lost; they are counted, not asserted;
- a slow disk on a vbucket's active makes a PERSIST_TO_MAJORITY write to it wait at least
  the injected fsync delay (the active must fsync it too), and `clear` removes the fault;
- fsync errors on one replica are absorbed: its log fails, rewrites from memory and
  recovers, the errors are used up, and durable writes go on succeeding (the other replica
  and the active make the majority);
- a full disk (every write of the node's log fails with ENOSPC): writes to the vbuckets it
  is active for are refused (TemporaryFailException), their reads are served, durable
  writes where it is a replica still succeed, and once cleared it takes writes again;
- a replication delay on both replicas (their acks leave late), or on the active (its
  prepare leaves late), makes a MAJORITY write wait at least that delay; `clear` ends it;
- lost replication messages (20 % on two nodes) end calls, which reconnect, and every
  PERSIST_TO_MAJORITY write still lands;
- a paused replica (SIGSTOP) does not stop PERSIST_TO_MAJORITY writes (the active and the
  other replica are a majority); resumed, it serves again; a paused node still stops cleanly;
- `durakv cluster chaos` (a workload at every level under seeded faults, one node at a time)
  ends with every node running and no acknowledged write lost against its level;
- `durakv cluster bench` measures every level at every concurrency asked for on the running
  cluster (ops/s, p50 <= p99, NONE's ratio 1, the nodes' CPU) and leaves its keys written;
- a replica partitioned from the other nodes (1 replica): a durable write to a vbucket it
  is the only replica of ends ambiguous, a NONE write succeeds (clients still reach the
  active), and once healed durable writes succeed again.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from durakv.durability import DurabilityLevel, ServerDurability
from durakv.exceptions import (
    AmbiguousTimeoutException,
    DocumentNotFoundException,
    DurabilitySyncWriteAmbiguousException,
    TemporaryFailException,
)
from durakv.replication import launcher

from .clusterkit import (
    NODES,
    checked,
    cluster_up,
    durakv_cluster,
    keys_for_every_vbucket,
    sdk,
    vbucket_of,
    wait_until,
)

OP_TIMEOUT = timedelta(seconds=15)
AMBIGUOUS = (DurabilitySyncWriteAmbiguousException, AmbiguousTimeoutException)
LEVELS = {
    "ptm": ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY),
    "majority": ServerDurability(DurabilityLevel.MAJORITY),
    "none": None,
}


def faults_shown(running) -> dict[str, list[str]]:
    """Each node's testbed faults as `durakv cluster status --json` lists them."""
    status = json.loads(checked("status", "--dir", str(running.dir), "--json").stdout)
    return {p["name"]: p["faults"] for p in status["processes"] if p["name"] != "manager"}


def test_power_loss_of_every_node_keeps_every_persist_to_majority_write(tmp_path):
    # fsync never: only durable writes ask for an fsync, so the other levels are at risk.
    with cluster_up(tmp_path, "--replicas", "2", "--fsync", "never") as running:
        written = {}
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            for level, durability in LEVELS.items():
                for key in keys_for_every_vbucket(level).values():
                    options = {"durability": durability} if durability else {}
                    coll.upsert(key, {"key": key, "level": level}, timeout=OP_TIMEOUT, **options)
                    written[key] = level
        for node in (f"node{i}" for i in range(1, NODES + 1)):
            out = checked("fault", "--dir", str(running.dir), node, "power-loss").stdout
            assert f"{node} lost power" in out, out
        assert "injected power loss" in (running.dir / "logs" / "node1.log").read_text()

        checked("up", "--dir", str(running.dir))
        lost: dict[str, int] = {level: 0 for level in LEVELS}
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            for key, level in written.items():
                try:
                    assert coll.get(key, timeout=OP_TIMEOUT).content_as[dict] == {"key": key, "level": level}
                except DocumentNotFoundException:
                    lost[level] += 1
        print(f"acknowledged writes lost to the power cut, per level: {lost}")
        assert lost["ptm"] == 0, lost


def test_slow_disk_on_the_active_delays_persist_to_majority_then_clears(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        cdir = running.cdir
        chain = cdir.manager_config().buckets["default"].vbmap[0]
        key = next(k for k in (f"slow-{i}" for i in range(10_000)) if vbucket_of(k) == 0)
        shown = checked("fault", "--dir", str(running.dir), chain.active, "slow-disk", "300").stdout
        assert "fsync delay 300 ms" in shown, shown
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            started = time.monotonic()
            coll.upsert(key, {"slow": True}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            assert time.monotonic() - started >= 0.3  # the active fsynced it through the slow disk
            cleared = checked("fault", "--dir", str(running.dir), chain.active, "clear").stdout
            assert "fsync delay 0 ms" in cleared, cleared
            coll.upsert(key, {"slow": False}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            assert coll.get(key).content_as[dict] == {"slow": False}


def test_fsync_errors_on_a_replica_are_absorbed_and_used_up(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        checked("fault", "--dir", str(running.dir), "node3", "disk-errors", "3")
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            for key in keys_for_every_vbucket("errors").values():
                coll.upsert(key, {"key": key}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            for key in keys_for_every_vbucket("errors").values():
                assert coll.get(key, timeout=OP_TIMEOUT).content_as[dict] == {"key": key}
        shown = checked("fault", "--dir", str(running.dir), "node3", "show").stdout
        assert "0 fsync errors to come" in shown, shown
        assert "injected fsync error" in (running.dir / "logs" / "node3.log").read_text()
        refused = durakv_cluster("fault", "--dir", str(running.dir), "node9", "show")
        assert refused.returncode == 1 and "not a node" in refused.stderr


def test_a_full_disk_refuses_writes_on_its_actives_keeps_reads_and_recovers_when_cleared(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        vbmap = running.cdir.manager_config().buckets["default"].vbmap
        keys = keys_for_every_vbucket("full")
        on_full = [key for vb, key in keys.items() if vbmap[vb].active == "node1"]
        elsewhere = [key for vb, key in keys.items() if vbmap[vb].active != "node1"]
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            for key in on_full:
                coll.upsert(key, {"before": True}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            shown = checked("fault", "--dir", str(running.dir), "node1", "disk-full").stdout
            assert "disk full" in shown, shown
            assert faults_shown(running)["node1"] == ["disk full"]  # `durakv cluster status` lists it
            # A write taken before the log meets the full disk is acknowledged (held in memory);
            # from then on its log refuses every write, cleanly.
            probe, acked = on_full[1], []

            def refused() -> bool:
                try:
                    coll.upsert(probe, {"n": len(acked)}, timeout=timedelta(seconds=1))
                except TemporaryFailException:
                    return True
                acked.append(len(acked))
                return False

            wait_until(refused, "a write refused by the full disk", 15)
            assert coll.get(on_full[0]).content_as[dict] == {"before": True}  # reads are served
            # As a replica it cannot persist either; the active and the other replica are a majority.
            for key in elsewhere[:8]:
                coll.upsert(key, {"elsewhere": True}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            cleared = checked("fault", "--dir", str(running.dir), "node1", "clear").stdout
            assert "disk full" not in cleared, cleared

            def accepted() -> bool:
                try:
                    coll.upsert(on_full[0], {"after": True}, durability=LEVELS["ptm"], timeout=timedelta(seconds=2))
                except (TemporaryFailException, *AMBIGUOUS):
                    return False
                return True

            wait_until(accepted, "a durable write on the node whose disk had room again", 30)
            expected = {"n": acked[-1]} if acked else {"before": True}
            assert coll.get(probe).content_as[dict] == expected  # what was acknowledged was kept
            for key in on_full[1:]:
                coll.upsert(key, {"after": True}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            assert all(coll.get(key).content_as[dict] == {"after": True} for key in on_full)
        assert "injected full disk" in (running.dir / "logs" / "node1.log").read_text()


def test_a_partitioned_replica_makes_durable_writes_ambiguous_until_healed(tmp_path):
    with cluster_up(tmp_path, "--replicas", "1") as running:
        vbmap = running.cdir.manager_config().buckets["default"].vbmap
        vb = next(v for v, chain in enumerate(vbmap) if chain.active == "node1" and chain.replicas == ("node2",))
        keys = [k for k in (f"cut-{i}" for i in range(100_000)) if vbucket_of(k) == vb][:3]
        out = checked("fault", "--dir", str(running.dir), "node2", "partition", "node1,node3").stdout
        assert "partitioned from node1, node3" in out, out
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            with pytest.raises(AMBIGUOUS):  # the only replica cannot be reached
                coll.upsert(keys[0], {"cut": True}, durability=LEVELS["ptm"], timeout=timedelta(seconds=2))
            coll.upsert(keys[1], {"cut": True}, timeout=OP_TIMEOUT)  # clients still reach the active
            assert "partitioned from nobody" in checked("fault", "--dir", str(running.dir), "node2", "heal").stdout
            coll.upsert(keys[2], {"healed": True}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            assert coll.get(keys[2]).content_as[dict] == {"healed": True}
        bad = durakv_cluster("fault", "--dir", str(running.dir), "node2", "partition", "node9")
        assert bad.returncode == 1 and "not other nodes" in bad.stderr


def test_a_replication_delay_on_the_replicas_delays_durable_writes_by_at_least_it(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        vbmap = running.cdir.manager_config().buckets["default"].vbmap
        vb = next(v for v, chain in enumerate(vbmap) if chain.active == "node1")
        key = next(k for k in (f"far-{i}" for i in range(100_000)) if vbucket_of(k) == vb)
        for replica in ("node2", "node3"):  # their acks to node1 leave 300 ms late
            out = checked("fault", "--dir", str(running.dir), replica, "net-delay", "300").stdout
            assert "replication delay 300 ms" in out, out
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            started = time.monotonic()
            coll.upsert(key, {"far": True}, durability=LEVELS["majority"], timeout=OP_TIMEOUT)
            assert time.monotonic() - started >= 0.3
            for replica in ("node2", "node3"):
                assert "replication delay 0 ms" in checked("fault", "--dir", str(running.dir), replica, "clear").stdout
            # The active's own rounds delayed instead: the prepare reaches the replicas late.
            checked("fault", "--dir", str(running.dir), "node1", "net-delay", "300")
            started = time.monotonic()
            coll.upsert(key, {"far": "again"}, durability=LEVELS["majority"], timeout=OP_TIMEOUT)
            assert time.monotonic() - started >= 0.3
            checked("fault", "--dir", str(running.dir), "node1", "clear")
            coll.upsert(key, {"far": False}, durability=LEVELS["majority"], timeout=OP_TIMEOUT)
            assert coll.get(key).content_as[dict] == {"far": False}
        bad = durakv_cluster("fault", "--dir", str(running.dir), "node2", "net-delay", "5000")
        assert bad.returncode == 2 and "0 to 1000" in bad.stderr  # a usage error


def test_a_paused_replica_does_not_stop_durable_writes_and_a_paused_node_still_stops(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        vbmap = running.cdir.manager_config().buckets["default"].vbmap
        vb = next(v for v, chain in enumerate(vbmap) if chain.active == "node1" and "node3" in chain.replicas)
        on_node3 = next(v for v, chain in enumerate(vbmap) if chain.active == "node3")
        key = next(k for k in (f"pause-{i}" for i in range(100_000)) if vbucket_of(k) == vb)
        other = next(k for k in (f"pause-{i}" for i in range(100_000)) if vbucket_of(k) == on_node3)
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            assert "node3 paused" in checked("fault", "--dir", str(running.dir), "node3", "pause").stdout
            # node1 and node2 are a majority of the chain: the paused node3 is not needed.
            coll.upsert(key, {"paused": True}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            assert faults_shown(running) == {"node1": [], "node2": [], "node3": ["paused"]}
            assert "node3 resumed" in checked("fault", "--dir", str(running.dir), "node3", "resume").stdout
            coll.upsert(other, {"resumed": True}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            assert coll.get(other).content_as[dict] == {"resumed": True}
        checked("fault", "--dir", str(running.dir), "node2", "pause")
        started = time.monotonic()
        checked("stop", "--dir", str(running.dir), "node2")  # SIGTERM reaches a paused node: no SIGKILL wait
        assert time.monotonic() - started < launcher.STOP_TIMEOUT_S_DEFAULT


def test_lost_replication_messages_end_calls_and_every_durable_write_still_lands(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        for node in ("node1", "node2"):
            out = checked("fault", "--dir", str(running.dir), node, "net-drop", "20").stdout
            assert "20 % dropped" in out, out
        keys = keys_for_every_vbucket("lossy")
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            for key in keys.values():  # the calls break and reconnect; the SDK and the streams retry
                coll.upsert(key, {"key": key}, durability=LEVELS["ptm"], timeout=OP_TIMEOUT)
            for node in ("node1", "node2"):
                assert "0 % dropped" in checked("fault", "--dir", str(running.dir), node, "clear").stdout
            for key in keys.values():
                copies = [c.content_as[dict] for c in coll.get_all_replicas(key, timeout=OP_TIMEOUT)]
                assert {"key": key} in copies, key
        logs = (running.dir / "logs" / "node1.log").read_text() + (running.dir / "logs" / "node2.log").read_text()
        assert "a message lost (an injected fault)" in logs


def test_chaos_writes_at_every_level_under_faults_and_finds_no_loss_a_level_forbids(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2", "--fsync", "never") as running:
        d = str(running.dir)
        checked("auto-failover", "--dir", d, "--timeout", "5")  # could fail a killed node over mid-run
        refused = durakv_cluster("chaos", "--dir", d, "--seconds", "8", "--seed", "11")
        assert refused.returncode == 1 and "automatic failover after 5 s" in refused.stderr, refused.stderr
        checked("auto-failover", "--dir", d, "--timeout", "120")
        run = durakv_cluster("chaos", "--dir", d, "--seconds", "8", "--seed", "11", "--workers", "4", "--json")
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert report["faults"] and report["violations"] == []
        for level in ("PERSIST_TO_MAJORITY", "MAJORITY_AND_PERSIST_TO_ACTIVE"):
            assert report["levels"][level]["acked"] > 0 and not report["levels"][level].get("lost"), report
        assert all(launcher.running_pid(running.cdir, n) for n in running.cdir.spec.nodes)


def test_bench_measures_every_level_at_every_concurrency_on_the_running_cluster(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        d = str(running.dir)
        run = durakv_cluster(
            "bench", "--dir", d, "--seconds", "0.4", "--rounds", "2", "--warmup", "0", "--concurrency", "1,4",
            "--keys", "512", "--json",
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert (report["nodes"], report["replicas"]) == (NODES, 2)
        for c in (1, 4):
            assert report[f"none_c{c}_vs_none_ratio"] == 1.0
            for level in ("none", "majority", "majority_and_persist_to_active", "persist_to_majority"):
                name = f"{level}_c{c}"
                assert report[f"{name}_ops_s"] > 0 and 0 < report[f"{name}_p50_ms"] <= report[f"{name}_p99_ms"]
                assert report["measurements"][name]["server_cpu_us"] > 0  # the nodes' pids were found
        with sdk(running) as cluster:
            assert cluster.bucket("default").default_collection().get("bench::000511").content_as[dict]["id"] == 4711
        refused = durakv_cluster("bench", "--dir", d, "--concurrency", "0")
        assert refused.returncode == 2 and "--concurrency" in refused.stderr

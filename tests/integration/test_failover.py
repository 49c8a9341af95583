"""Hard failover of a node with real processes (`durakv cluster failover NODE`, Admin.Failover).

Each test starts its own cluster with `durakv cluster up` on free ports and destroys it at
the end whatever happens. Every wait polls with a deadline; nothing sleeps a fixed time.

What the tests claim:
- hard failover (3 nodes, 1 replica): after `durakv cluster kill node2` and `durakv cluster
  failover node2`, the manager's map no longer names node2, every vbucket node2 was active
  for is active on the node that held its replica, and an SDK instance that bootstrapped
  before the failover reads every acknowledged PERSIST_TO_MAJORITY write again; a new
  durable write to a vbucket whose chain lost node2 ends DurabilityImpossibleException
  (one replica configured, its slot now empty) while a NONE write succeeds; chains without
  node2 still take durable writes; failing node2 over again, or an unknown node, is refused;
- promotion and divergence (3 nodes, 2 replicas; vbucket V with active A, replicas B and
  C): B is killed, NONE writes to V reach A and C only, C is stopped, a PERSIST_TO_MAJORITY
  write to V ends ambiguous (only A has its prepare), A is killed, B is started and A is
  failed over while C is down. B is promoted (it is the only replica that can be asked);
  every write acknowledged as PERSIST_TO_MAJORITY before B went down is read from B, while
  the NONE writes and the ambiguous write are gone -- the loss failover allows. When C
  starts again, its copy of V holds history B never had: its stream request to B is
  answered with a rollback (reference §3.5), C rolls back, and then holds exactly B's
  documents (same high seqno and item count; the diverged documents found on no copy).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import grpc
import pytest

import durakv.exceptions as exc
from durakv.durability import DurabilityLevel, ServerDurability
from durakv.engine.errors import Status
from durakv.proto import admin_pb2, admin_pb2_grpc
from durakv.replication.auth import basic_metadata

from .clusterkit import (
    VBUCKETS,
    RunningCluster,
    checked,
    cluster_up,
    durakv_cluster,
    keys_for_every_vbucket,
    sdk,
    vbucket_of,
    wait_until,
)

OP_TIMEOUT = timedelta(seconds=15)  # reads and writes that must succeed (the SDK retries meanwhile)
AMBIGUOUS_TIMEOUT = timedelta(seconds=2)  # a durable write that cannot complete
DEADLINE_S = 30.0
PERSIST = ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY)
AMBIGUOUS = (exc.DurabilitySyncWriteAmbiguousException, exc.AmbiguousTimeoutException)


# -- helpers --------------------------------------------------------------------------------------


def keys_in_vbucket(prefix: str, vb: int, count: int) -> list[str]:
    keys, i = [], 0
    while len(keys) < count:
        key = f"{prefix}-{i}"
        if vbucket_of(key) == vb:
            keys.append(key)
        i += 1
    return keys


def vbucket_copy(running: RunningCluster, node: str, vb: int) -> admin_pb2.VBucketStats | None:
    """`node`'s copy of `default` vbucket `vb` (NodeControl.GetVBucketStates), None if it holds none."""
    metadata = (("authorization", f"Bearer {running.cdir.secret()}"),)
    with grpc.insecure_channel(running.address(node)) as channel:
        response = admin_pb2_grpc.NodeControlStub(channel).GetVBucketStates(
            admin_pb2.GetVBucketStatesRequest(bucket="default"), timeout=5, metadata=metadata
        )
    assert response.status == Status.SUCCESS, response.message
    return next((v for v in response.vbuckets if v.vbucket == vb), None)


# -- (1) hard failover ----------------------------------------------------------------------------


def test_hard_failover_promotes_replicas_and_keeps_every_acknowledged_write(tmp_path):
    with cluster_up(tmp_path, "--replicas", "1") as running, sdk(running) as cluster:
        coll = cluster.bucket("default").default_collection()
        keys = keys_for_every_vbucket("acked")
        for key in keys.values():
            coll.upsert(key, {"key": key}, durability=PERSIST, timeout=OP_TIMEOUT)
        before = {vb: running.chain(vb) for vb in range(VBUCKETS)}
        was_active = [vb for vb, chain in before.items() if chain.active == "node2"]
        was_replica = [vb for vb, chain in before.items() if "node2" in chain.replicas]
        untouched = [vb for vb in range(VBUCKETS) if vb not in was_active and vb not in was_replica]
        assert was_active and was_replica and untouched, before

        checked("kill", "--dir", str(running.dir), "node2")
        out = checked("failover", "--dir", str(running.dir), "node2")
        assert "node2 failed over" in out.stdout, out

        # The manager's map: node2 is named nowhere; its vbuckets are active where their replica was.
        config = running.cdir.manager_config()
        assert config.nodes["node2"].state == "failed"
        for vb, chain in before.items():
            after = running.chain(vb)
            assert "node2" not in after.defined_nodes(), (vb, after)
            if vb in was_active:
                assert after.active == chain.replicas[0] and after.replicas == (None,), (vb, chain, after)
            elif vb in was_replica:
                assert after.active == chain.active and after.replicas == (None,), (vb, chain, after)
            else:
                assert after == chain

        # The SDK that bootstrapped before the failover finds every acknowledged write again.
        for vb, key in keys.items():
            assert coll.get(key, timeout=OP_TIMEOUT).content_as[dict] == {"key": key}, (vb, key)

        # Chains that lost node2: durable writes are impossible, NONE writes work.
        for vb in (*was_active[:3], *was_replica[:3]):
            key = keys[vb]
            with pytest.raises(exc.DurabilityImpossibleException):
                coll.upsert(key, {"key": key, "phase": "after"}, durability=PERSIST, timeout=OP_TIMEOUT)
            coll.upsert(key, {"key": key, "phase": "after"}, timeout=OP_TIMEOUT)
            assert coll.get(key, timeout=OP_TIMEOUT).content_as[dict]["phase"] == "after"
        # Chains without node2 still take them.
        key = keys[untouched[0]]
        coll.upsert(key, {"key": key, "phase": "durable"}, durability=PERSIST, timeout=OP_TIMEOUT)

        # Refusals: node2 again, an unknown node (CLI and raw RPC, through a node's forwarding).
        again = durakv_cluster("failover", "--dir", str(running.dir), "node2")
        assert again.returncode == 1 and "already been failed over" in again.stderr, again
        unknown = durakv_cluster("failover", "--dir", str(running.dir), "node9")
        assert unknown.returncode != 0 and "node9" in unknown.stderr, unknown
        with grpc.insecure_channel(running.address("node1")) as channel:
            response = admin_pb2_grpc.AdminStub(channel).Failover(
                admin_pb2.FailoverRequest(node_id="node9"), timeout=10, metadata=basic_metadata("admin", "password")
            )
        assert response.status == Status.KEY_ENOENT, response


# -- (2) promotion of a replica that is behind, and rollback of one that diverged ------------------


def test_failover_to_an_older_replica_loses_only_unacknowledged_writes_and_rolls_back_divergence(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        vb = 5
        chain = running.chain(vb)
        a, (b, c) = chain.active, chain.replicas
        acked = keys_in_vbucket("acked", vb, 4)
        diverged = keys_in_vbucket("diverged", vb, 6)
        ambiguous = keys_in_vbucket("ambiguous", vb, 1)[0]
        later = keys_in_vbucket("later", vb, 3)

        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            for key in acked:
                coll.upsert(key, {"key": key}, durability=PERSIST, timeout=OP_TIMEOUT)
            # A majority (A and one replica) persisted them; B is the copy promoted below while
            # C is unreachable, so B must hold them too -- a hard failover to a replica that
            # never had an acknowledged write would lose it, as in Couchbase.
            acked_high = vbucket_copy(running, a, vb).high_seqno

            def b_has_the_acked_writes() -> bool:
                return vbucket_copy(running, b, vb).persisted_seqno >= acked_high

            wait_until(b_has_the_acked_writes, f"{b} persisted vbucket {vb} up to seqno {acked_high}")
            # A replica reports the HPS it acknowledges (failover ranks copies by it, reference §2.7).
            active_hps = vbucket_copy(running, a, vb).high_prepared_seqno
            assert active_hps > 0
            wait_until(
                lambda: vbucket_copy(running, b, vb).high_prepared_seqno == active_hps,
                f"{b} reports vbucket {vb}'s HPS {active_hps}",
            )

            # B goes down; NONE writes reach A and, by replication, C only.
            checked("kill", "--dir", str(running.dir), b)
            for key in diverged:
                coll.upsert(key, {"key": key, "branch": "a"}, timeout=OP_TIMEOUT)
            high = vbucket_copy(running, a, vb).high_seqno

            def c_has_everything() -> bool:
                copy = vbucket_copy(running, c, vb)
                return copy.high_seqno == high and copy.persisted_seqno == high

            wait_until(c_has_everything, f"{c} holds and persisted vbucket {vb} up to seqno {high}")
            checked("stop", "--dir", str(running.dir), c)

            # Only A is left in the chain: a durable write cannot complete and ends ambiguous.
            with pytest.raises(AMBIGUOUS):
                coll.upsert(ambiguous, {"key": ambiguous}, durability=PERSIST, timeout=AMBIGUOUS_TIMEOUT)

        checked("kill", "--dir", str(running.dir), a)
        checked("start", "--dir", str(running.dir), b)
        checked("failover", "--dir", str(running.dir), a)
        after = running.chain(vb)
        assert after.active == b and after.replicas == (c, None), after  # C could not be asked

        with sdk(running, every_node_up=False) as cluster:  # C is down
            coll = cluster.bucket("default").default_collection()
            for key in acked:
                assert coll.get(key, timeout=OP_TIMEOUT).content_as[dict] == {"key": key}
            for key in (*diverged, ambiguous):
                with pytest.raises(exc.DocumentNotFoundException):
                    coll.get(key, timeout=OP_TIMEOUT)
            for key in later:
                coll.upsert(key, {"key": key, "branch": "b"}, timeout=OP_TIMEOUT)

            # C comes back with history B never had: it must roll back, then follow B.
            checked("start", "--dir", str(running.dir), c)

            def c_follows_b() -> bool:
                copy_b, copy_c = vbucket_copy(running, b, vb), vbucket_copy(running, c, vb)
                return (
                    copy_c is not None
                    and copy_c.state == admin_pb2.VBUCKET_STATE_REPLICA
                    and (copy_c.high_seqno, copy_c.item_count) == (copy_b.high_seqno, copy_b.item_count)
                )

            wait_until(c_follows_b, f"{c}'s replica of vbucket {vb} matches {b}'s active copy")
            log = running.cdir.log_path(c).read_text(errors="replace")
            assert re.search(rf"vb {vb} rolled back to \d+", log), f"no rollback of vb {vb} in {c}'s log"
            copy_b, copy_c = vbucket_copy(running, b, vb), vbucket_copy(running, c, vb)
            assert copy_c.uuid == copy_b.uuid, (copy_b, copy_c)  # C adopted B's failover log

            # C serves B's new documents (once the SDK reaches C again: it was down a while ago) ...
            def c_serves(key: str) -> bool:
                copies = coll.get_all_replicas(key, timeout=OP_TIMEOUT)
                assert all(r.content_as[dict] == {"key": key, "branch": "b"} for r in copies), key
                return any(r.is_replica for r in copies)

            for key in later:
                wait_until(lambda k=key: c_serves(k), f"a replica read of {key} answered by {c}")
            # ... and no copy has the diverged documents any more.
            for key in (*diverged, ambiguous):
                with pytest.raises(exc.DocumentNotFoundException):
                    coll.get_all_replicas(key, timeout=OP_TIMEOUT)


def test_failover_json_status_shows_the_node_gone(tmp_path):
    """`durakv cluster status --json` after a failover still lists the process; the map does not."""
    with cluster_up(tmp_path, "--replicas", "1") as running:
        checked("kill", "--dir", str(running.dir), "node3")
        checked("failover", "--dir", str(running.dir), "node3")
        status = json.loads(checked("status", "--dir", str(running.dir), "--json").stdout)
        procs = {p["name"]: p for p in status["processes"]}
        assert procs["node3"]["alive"] is False
        assert procs["node1"]["active_vbuckets"] + procs["node2"]["active_vbuckets"] == VBUCKETS
        assert procs["node1"]["replica_vbuckets"] + procs["node2"]["replica_vbuckets"] < VBUCKETS


# -- (3) automatic failover -------------------------------------------------------------------------


def test_automatic_failover_of_a_killed_node_once_then_no_more_until_reset(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        d = str(running.dir)
        shown = checked("auto-failover", "--dir", d).stdout
        assert "automatic failover enabled: timeout 120 s, 0 of 1" in shown, shown
        checked("auto-failover", "--dir", d, "--timeout", "2")
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            keys = keys_for_every_vbucket("auto")
            for key in keys.values():
                coll.upsert(key, {"key": key}, durability=PERSIST, timeout=OP_TIMEOUT)

            checked("kill", "--dir", d, "node2")
            wait_until(
                lambda: running.cdir.manager_config().nodes["node2"].state == "failed",
                "the manager fails node2 over by itself",
            )
            config = running.cdir.manager_config()
            assert config.auto_failover_count == 1
            assert all("node2" not in running.chain(vb).defined_nodes() for vb in range(VBUCKETS))
            # Every acknowledged PERSIST_TO_MAJORITY write is there, and durable writes go on
            # (chains of 3 keep 2 copies: a majority).
            for key in keys.values():
                assert coll.get(key, timeout=OP_TIMEOUT).content_as[dict] == {"key": key}
                coll.upsert(key, {"key": key, "after": True}, durability=PERSIST, timeout=OP_TIMEOUT)

            # A second node down: the count is used up (and 2 active nodes are too few anyway).
            checked("kill", "--dir", d, "node3")

            def refused() -> bool:
                out = checked("auto-failover", "--dir", d).stdout
                return "node3 unreachable" in out and "node3 is down, but" in out

            wait_until(refused, "the manager declines to fail node3 over")
            assert running.cdir.manager_config().nodes["node3"].state == "active"
            assert "1 of 1 automatic failover(s) made" in checked("auto-failover", "--dir", d).stdout
            reset = checked("auto-failover", "--dir", d, "--reset").stdout
            assert "0 of 1 automatic failover(s) made" in reset and "needs 3 active nodes" in reset


def test_auto_failover_settings_out_of_range_are_refused(tmp_path):
    with cluster_up(tmp_path, "--replicas", "1") as running:
        bad = durakv_cluster("auto-failover", "--dir", str(running.dir), "--timeout", "0.5")
        assert bad.returncode == 2 and "--timeout" in bad.stderr  # a usage error
        off = checked("auto-failover", "--dir", str(running.dir), "--disable").stdout
        assert "automatic failover disabled" in off


# -- (4) recovering a failed-over node --------------------------------------------------------------


def test_a_failed_over_node_recovers_as_a_replica_of_every_vbucket_missing_a_copy(tmp_path):
    with cluster_up(tmp_path, "--replicas", "2") as running:
        d = str(running.dir)
        with sdk(running) as cluster:
            coll = cluster.bucket("default").default_collection()
            before = keys_for_every_vbucket("before")
            for key in before.values():
                coll.upsert(key, {"key": key}, durability=PERSIST, timeout=OP_TIMEOUT)
            checked("kill", "--dir", d, "node2")
            checked("failover", "--dir", d, "node2")
            during = keys_for_every_vbucket("during")
            for key in during.values():
                coll.upsert(key, {"key": key}, durability=PERSIST, timeout=OP_TIMEOUT)

            refused = durakv_cluster("recover", "--dir", d, "node3")
            assert refused.returncode == 1 and "has not been failed over" in refused.stderr
            checked("start", "--dir", d, "node2")
            out = checked("recover", "--dir", d, "node2")
            assert "node2 recovered" in out.stdout, out

            config = running.cdir.manager_config()
            assert config.nodes["node2"].state == "active"
            chains = [running.chain(vb) for vb in range(VBUCKETS)]
            assert all("node2" in c.replicas and None not in c.replicas for c in chains), chains

            def node2_caught_up() -> bool:
                for vb, chain in enumerate(chains):
                    mine, theirs = vbucket_copy(running, "node2", vb), vbucket_copy(running, chain.active, vb)
                    if mine is None or mine.state != admin_pb2.VBUCKET_STATE_REPLICA:
                        return False
                    if mine.high_seqno != theirs.high_seqno:
                        return False
                return True

            wait_until(node2_caught_up, "node2 holds every vbucket's history as a replica")
            # The SDK learns the new map by polling; then every key has its three copies again.
            wait_until(lambda: len(list(coll.get_all_replicas(before[0], timeout=OP_TIMEOUT))) == 3, "3 copies")
            for key in [*before.values(), *during.values()]:
                copies = list(coll.get_all_replicas(key, timeout=OP_TIMEOUT))
                assert len(copies) == 3 and all(c.content_as[dict] == {"key": key} for c in copies), key

            # node2's copies count again: with node3 failed over too, node2 is promoted where needed.
            checked("kill", "--dir", d, "node3")
            checked("failover", "--dir", d, "node3")
            for key in [*before.values(), *during.values()]:
                assert coll.get(key, timeout=OP_TIMEOUT).content_as[dict] == {"key": key}

"""`durakv cluster` end to end: real manager and node processes, started the way users start them.

One run walks a cluster through its life: `up` (waits until every vbucket is served and
prints the connection string), a second `up` (says it already runs), `status`, `kill` and
`start` of a node, `down`, `up` again from the same directory, `destroy`. Each step is
checked against what the processes themselves report (`status --json` asks them over
gRPC) and against the kernel (a killed or stopped process is gone). Every command polls;
the test never sleeps. Whatever happens, the processes are SIGKILLed at the end.

The refusals (`destroy` of a directory that is not a cluster's, `up` with a port taken by
another program) start no process and run without the node and manager commands.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from durakv.replication import launcher

from .clusterkit import NODES, VBUCKETS, checked, durakv_cluster, free_base_port


def process_exists(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie left to a parent that does not reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def status(cluster_dir) -> dict[str, dict]:
    doc = json.loads(checked("status", "--dir", str(cluster_dir), "--json").stdout)
    return {p["name"]: p for p in doc["processes"]}


@pytest.fixture
def cluster_dir(tmp_path):
    path = tmp_path / "cluster"
    try:
        yield path
    finally:
        cdir = launcher.ClusterDir(path)
        if cdir.exists():
            launcher.kill(cdir, cdir.spec.names)  # only pids whose start time matches their pid file


def test_cluster_cli_up_kill_start_down_up_destroy(cluster_dir):
    base = free_base_port(NODES)
    addresses = [f"127.0.0.1:{base + i}" for i in range(NODES)]
    connection = "durakv://" + ",".join(addresses)
    common = ["--dir", str(cluster_dir)]

    up = checked("up", *common, "--nodes", str(NODES), "--replicas", "1", "--base-port", str(base))
    assert up.stdout.splitlines()[-1] == f"cluster ready: {connection}  (user admin / password password)"
    again = checked("up", *common)
    assert again.stdout.splitlines()[-1] == f"cluster already running: {connection}  (user admin / password password)"

    first = status(cluster_dir)
    assert list(first) == ["manager", "node1", "node2", "node3"]
    assert all(p["alive"] and p["health"] == "serving" for p in first.values()), first
    nodes = [first[f"node{i}"] for i in range(1, NODES + 1)]
    assert [n["address"] for n in nodes] == addresses
    assert sum(n["active_vbuckets"] for n in nodes) == VBUCKETS
    assert sum(n["replica_vbuckets"] for n in nodes) == VBUCKETS  # one replica each
    table = checked("status", *common).stdout
    assert all(name in table for name in first)

    # kill: SIGKILL, the process is gone, the others go on.
    killed_pid = first["node2"]["pid"]
    checked("kill", *common, "node2")
    assert not process_exists(killed_pid)
    after_kill = status(cluster_dir)
    assert not after_kill["node2"]["alive"]
    assert all(after_kill[name]["alive"] for name in ("manager", "node1", "node3"))

    # start: back, serving the same vbuckets as before.
    checked("start", *common, "node2")
    restarted = status(cluster_dir)["node2"]
    assert restarted["alive"] and restarted["health"] == "serving"
    assert restarted["pid"] != killed_pid
    assert restarted["active_vbuckets"] == first["node2"]["active_vbuckets"]

    # down: every process gone; the directory stays and `up` brings the same cluster back.
    pids = [p["pid"] for p in status(cluster_dir).values()]
    checked("down", *common)
    assert not any(process_exists(pid) for pid in pids)
    assert not any(p["alive"] for p in status(cluster_dir).values())
    up = checked("up", *common)
    assert up.stdout.splitlines()[-1] == f"cluster ready: {connection}  (user admin / password password)"

    # destroy: processes gone, directory gone.
    pids = [p["pid"] for p in status(cluster_dir).values()]
    checked("destroy", *common)
    assert not cluster_dir.exists()
    assert not any(process_exists(pid) for pid in pids)


def test_cluster_cli_destroy_refuses_a_directory_that_is_not_a_cluster(tmp_path):
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("not a cluster")
    result = durakv_cluster("destroy", "--dir", str(other))
    assert result.returncode == 1
    assert (other / "keep.txt").read_text() == "not a cluster"


def test_cluster_cli_up_refuses_a_port_in_use_and_starts_nothing(cluster_dir):
    base = free_base_port(NODES)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1))  # node2's port
        squatter.listen()
        result = durakv_cluster("up", "--dir", str(cluster_dir), "--base-port", str(base))
    assert result.returncode == 1
    assert f"127.0.0.1:{base + 1}" in result.stderr
    cdir = launcher.ClusterDir(cluster_dir)
    assert all(launcher.running_pid(cdir, name) is None for name in cdir.spec.names)
    assert not any(cdir.pids_dir.iterdir())
    assert os.path.exists(cdir.secret_path)  # the cluster was created; only its start was refused

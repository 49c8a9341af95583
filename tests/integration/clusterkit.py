"""What the tests that start a real cluster share: running `durakv cluster`, free ports, a
cluster for the length of a test and an SDK on it, the key -> vbucket oracle, and polling
with a deadline."""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from durakv.auth import PasswordAuthenticator
from durakv.cluster import Cluster
from durakv.options import ClusterOptions
from durakv.replication import launcher

CLI = [sys.executable, "-m", "durakv.cli.main"]
NODES = 3
VBUCKETS = 64  # `durakv cluster up`'s default for the `default` bucket
COMMAND_TIMEOUT_S = 120  # the slowest command (`up`) waits up to 30 s for readiness by itself
POLL_INTERVAL_S = 0.05
ADMIN = PasswordAuthenticator(launcher.ADMIN_USER, launcher.ADMIN_PASSWORD)
READY_TIMEOUT = timedelta(seconds=30)


def durakv_cluster(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `durakv cluster ARGS` as a user would (a new process, no console script needed)."""
    return subprocess.run([*CLI, "cluster", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)


def checked(*args: str) -> subprocess.CompletedProcess[str]:
    result = durakv_cluster(*args)
    assert result.returncode == 0, f"cluster {args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def free_base_port(nodes: int = NODES) -> int:
    """A base port whose node ports and manager port are all free on loopback."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        ports = (*range(base, base + nodes), base + launcher.MANAGER_PORT_OFFSET)
        if all(launcher.port_is_free(f"127.0.0.1:{port}") for port in ports):
            return base
    raise AssertionError("no free port range found")


def vbucket_of(key: str, num_vbuckets: int = VBUCKETS) -> int:
    """Couchbase's formula, written out here as the independent oracle."""
    return ((zlib.crc32(key.encode()) >> 16) & 0x7FFF) % num_vbuckets


def keys_for_every_vbucket(prefix: str, num_vbuckets: int = VBUCKETS) -> dict[int, str]:
    """One key per vbucket: {vbucket: key}."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < num_vbuckets:
        key = f"{prefix}-{i}"
        found.setdefault(vbucket_of(key, num_vbuckets), key)
        i += 1
    return found


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {deadline_s:.0f} s waiting for: {what}"
        time.sleep(POLL_INTERVAL_S)


@dataclass(frozen=True)
class RunningCluster:
    dir: Path
    connstr: str

    @property
    def cdir(self) -> launcher.ClusterDir:
        return launcher.ClusterDir(self.dir)

    def address(self, name: str) -> str:
        return self.cdir.spec.address(name)

    @property
    def addresses(self) -> dict[str, str]:
        """node1.. -> host:port"""
        return dict(self.cdir.spec.nodes)

    @property
    def manager(self) -> str:
        return self.address(launcher.MANAGER)

    def chain(self, vb: int):
        """The manager's (persisted) chain of `default` vbucket `vb`: engine Chain or None."""
        return self.cdir.manager_config().buckets["default"].vbmap[vb]


@contextlib.contextmanager
def cluster_up(tmp_path: Path, *options: str) -> Iterator[RunningCluster]:
    """`durakv cluster up` (NODES nodes, free ports, `options` added) for the test; destroyed after."""
    cluster_dir = tmp_path / "cluster"
    try:
        up = checked(
            "up", "--dir", str(cluster_dir), "--nodes", str(NODES), "--base-port", str(free_base_port()), *options
        )
        yield RunningCluster(cluster_dir, re.search(r"durakv://\S+", up.stdout).group(0))
    finally:
        destroyed = durakv_cluster("destroy", "--dir", str(cluster_dir))
        cdir = launcher.ClusterDir(cluster_dir)
        if cdir.exists():  # destroy failed: at least no process outlives the test
            launcher.kill(cdir, cdir.spec.names)
        assert destroyed.returncode == 0, f"cluster destroy exited {destroyed.returncode}\n{destroyed.stderr}"


@contextlib.contextmanager
def sdk(running: RunningCluster, *, every_node_up: bool = True) -> Iterator[Cluster]:
    """An SDK instance; waits until every node of the configuration serves, if they all should."""
    cluster = Cluster(running.connstr, ClusterOptions(ADMIN))
    try:
        if every_node_up:
            cluster.wait_until_ready(READY_TIMEOUT)
        yield cluster
    finally:
        cluster.close()

"""A local cluster's processes: the cluster directory, starting and stopping them, probing them.

The library behind `durakv cluster` (cli/cluster.py holds only the commands), in three
modules this one gathers: `cluster_dir` (the directory and `ClusterSpec`),
`launcher_processes` (pid files, start, stop, kill, pause) and `launcher_probe` (health,
status, readiness). It creates a cluster directory, starts the manager and the nodes as background processes (their own
session, so they outlive the command and a Ctrl-C in its terminal), records them in pid
files, stops or kills them, and asks them over gRPC whether they are healthy and serve
their vbuckets. It decides nothing about the cluster configuration: the initial one is
built with `ClusterConfig` and saved with `ManagerState`; after that the manager owns it.

Cluster directory (`--dir`, default `./durakv-cluster`; owner-only, it holds the secret):

    <dir>/cluster.json      what `up` was asked for: node ids and addresses, the manager's
                            address, base port, replicas, vbuckets (`ClusterSpec`); its
                            `"format": "durakv-cluster"` marks the directory as ours
    <dir>/secret            the cluster secret (0600), also the manager's config secret
    <dir>/LOCK              flock held by a command that starts or stops processes
    <dir>/manager/          the manager's state (manager_state.py); seeded by `up`, then the
                            manager's own (`durakv manager --dir <dir>` uses <dir>/manager/)
    <dir>/nodeN/            node N's data directory (data-directory.md)
    <dir>/logs/NAME.log     stdout and stderr of each process, appended across restarts
    <dir>/pids/NAME.pid     {"pid": ..., "start_ticks": ...} of the running process

Addresses: node i listens on 127.0.0.1:(base_port + i - 1), the manager on
127.0.0.1:(base_port + 100); base port 7101 by default, so the manager is on 7201.
The seeded configuration has nodes `node1..nodeN` in that order, the bucket `default`
with the requested replicas and vbuckets, and the user `admin` / `password` (role admin).
The secret is 64 hex digits, the form `ClusterConfig` requires.

A pid file alone does not prove a process is ours: pids are reused. It also records the
process's start time (clock ticks since boot, /proc/PID/stat field 22), and a process
counts as running only if a process with that pid and that start time exists and is not
a zombie. (Without /proc the pid alone is trusted.)

Invariants: a cluster directory is created whole or not at all (seeded in a temporary
sibling, then renamed into place); a command never starts a process whose pid file names a
running one, and never signals a pid whose start time does not match its pid file.
"""

from __future__ import annotations

from durakv.replication.cluster_dir import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    BASE_PORT_DEFAULT,
    DIR_DEFAULT,
    EXITED,
    MANAGER,
    MANAGER_PORT_OFFSET,
    NODES_DEFAULT,
    POLL_INTERVAL_S,
    READY_TIMEOUT_S_DEFAULT,
    REPLICAS_DEFAULT,
    RPC_TIMEOUT_S,
    STOP_TIMEOUT_S_DEFAULT,
    VBUCKETS_DEFAULT,
    ClusterDir,
    ClusterSpec,
    LauncherError,
    PortInUseError,
    UnknownProcessError,
    create,
)
from durakv.replication.launcher_probe import (
    gather_status,
    wait_ready,
)
from durakv.replication.launcher_processes import (
    Ending,
    destroy,
    down,
    kill,
    log_tail,
    pause,
    port_is_free,
    running_pid,
    start,
    stop,
)

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "BASE_PORT_DEFAULT",
    "DIR_DEFAULT",
    "EXITED",
    "MANAGER",
    "MANAGER_PORT_OFFSET",
    "NODES_DEFAULT",
    "POLL_INTERVAL_S",
    "READY_TIMEOUT_S_DEFAULT",
    "REPLICAS_DEFAULT",
    "RPC_TIMEOUT_S",
    "STOP_TIMEOUT_S_DEFAULT",
    "VBUCKETS_DEFAULT",
    "ClusterDir",
    "ClusterSpec",
    "Ending",
    "LauncherError",
    "PortInUseError",
    "UnknownProcessError",
    "create",
    "destroy",
    "down",
    "gather_status",
    "kill",
    "log_tail",
    "pause",
    "port_is_free",
    "running_pid",
    "start",
    "stop",
    "wait_ready",
]

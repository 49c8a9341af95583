"""A local cluster's processes: the cluster directory, starting and stopping them, probing them.

The library behind `durakv cluster` (cli/cluster.py holds only the commands). It creates a
cluster directory, starts the manager and the nodes as background processes (their own
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

import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import grpc

from durakv.engine.bucket import BucketConfig
from durakv.engine.errors import DataDirError, DataDirLockedError
from durakv.engine.files import DataDirLock, atomic_write
from durakv.engine.wal import FsyncPolicy
from durakv.proto import admin_pb2, admin_pb2_grpc, kv_pb2
from durakv.replication import manager_state, vbmap
from durakv.replication.cluster_config import ClusterConfig

HOST = "127.0.0.1"
BASE_PORT_DEFAULT = 7101
MANAGER_PORT_OFFSET = 100  # the manager listens this far above the base port
NODES_DEFAULT = 3
REPLICAS_DEFAULT = 1
VBUCKETS_DEFAULT = 64
BUCKET_NAME = "default"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "password"
MANAGER = "manager"
EXITED = "exited"  # the reason `not_ready` gives for a process that is no longer running
DIR_DEFAULT = "./durakv-cluster"

READY_TIMEOUT_S_DEFAULT = 30.0
STOP_TIMEOUT_S_DEFAULT = 10.0  # SIGTERM grace before SIGKILL
KILL_WAIT_S = 5.0  # how long a SIGKILLed process may take to disappear
POLL_INTERVAL_S = 0.1
RPC_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 20
LOG_TAIL_BYTES_MAX = 64 * 1024
GRPC_MESSAGE_SIZE_MAX = 32 * 1024 * 1024  # proto/README.md rule 3

SPEC_FILE = "cluster.json"
SPEC_FORMAT = "durakv-cluster"
SPEC_FORMAT_VERSION = 1
SPEC_FILE_SIZE_MAX = 1024 * 1024

# How the processes are started: the running interpreter, so no console script on PATH is needed.
PROGRAM: tuple[str, ...] = (sys.executable, "-m", "durakv.cli.main")

_LOG_HEADER = "--- durakv cluster: starting at "  # opens each run's part of a log
_HAVE_PROC = os.path.exists("/proc/self/stat")
# Processes started by this process: polled so that ones which exited are reaped, not zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


class LauncherError(Exception):
    """Root of the launcher's errors: a cluster directory or process request that cannot be done."""


class NotAClusterError(LauncherError):
    """The directory is missing or is not a durakv cluster directory."""


class UnknownProcessError(LauncherError):
    """A process name that the cluster does not have."""


class PortInUseError(LauncherError):
    """Another program listens on a port the cluster needs."""


_SPEC_FIELDS = ("base_port", "num_replicas", "num_vbuckets", "manager_address")


@dataclass(frozen=True)
class ClusterSpec:
    """The contents of `<dir>/cluster.json`: the processes and how the cluster was made."""

    base_port: int
    num_replicas: int
    num_vbuckets: int
    manager_address: str
    nodes: Mapping[str, str]  # node id -> host:port, in cluster order
    fsync_policy: str = "always"  # every node's WAL fsync policy (`durakv node --fsync`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))

    @classmethod
    def plan(
        cls,
        *,
        nodes: int,
        replicas: int,
        vbuckets: int,
        base_port: int,
        host: str = HOST,
        fsync_policy: str = "always",
    ) -> ClusterSpec:
        if not 1 <= nodes <= MANAGER_PORT_OFFSET:
            raise LauncherError(f"a local cluster has 1..{MANAGER_PORT_OFFSET} nodes, not {nodes}")
        if not 1 <= base_port <= 65535 - MANAGER_PORT_OFFSET:
            raise LauncherError(f"base port {base_port}: the manager's port (base + {MANAGER_PORT_OFFSET}) must fit")
        return cls(
            base_port=base_port,
            num_replicas=replicas,
            num_vbuckets=vbuckets,
            manager_address=f"{host}:{base_port + MANAGER_PORT_OFFSET}",
            nodes={f"node{i}": f"{host}:{base_port + i - 1}" for i in range(1, nodes + 1)},
            fsync_policy=str(FsyncPolicy.parse(fsync_policy)),
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Every process, the manager first (the order they start in)."""
        return (MANAGER, *self.nodes)

    def address(self, name: str) -> str:
        if name == MANAGER:
            return self.manager_address
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.names)
            raise UnknownProcessError(f"no process {name!r} in this cluster (it has {known})") from None

    @property
    def connection_string(self) -> str:
        return "durakv://" + ",".join(self.nodes.values())

    def to_json(self) -> bytes:
        fields = {f: getattr(self, f) for f in _SPEC_FIELDS}
        doc = {
            "format": SPEC_FORMAT,
            "format_version": SPEC_FORMAT_VERSION,
            **fields,
            "nodes": dict(self.nodes),
            "fsync_policy": self.fsync_policy,
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, path: Path) -> ClusterSpec:
        try:
            doc = json.loads(raw)
            if doc.get("format") != SPEC_FORMAT:
                raise NotAClusterError(f"{path} is not a durakv cluster file")
            if doc.get("format_version") != SPEC_FORMAT_VERSION:
                raise NotAClusterError(f"{path} has format version {doc.get('format_version')!r}")
            # fsync_policy: absent from files written before it could be chosen ("always").
            spec = cls(
                **{f: doc[f] for f in _SPEC_FIELDS}, nodes=doc["nodes"], fsync_policy=doc.get("fsync_policy", "always")
            )
            FsyncPolicy.parse(spec.fsync_policy)
            if not all(isinstance(v, str) for v in (spec.manager_address, *spec.nodes, *spec.nodes.values())):
                raise TypeError("addresses and node ids are strings")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NotAClusterError(f"{path} is corrupt: {exc!r}") from exc
        return spec


class ClusterDir:
    """The paths of one cluster directory (see the module docstring) and its spec and secret."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.spec_path = self.path / SPEC_FILE
        self.secret_path = self.path / "secret"
        self.manager_dir = self.path / "manager"
        self.logs_dir = self.path / "logs"
        self.pids_dir = self.path / "pids"
        self._spec: ClusterSpec | None = None

    def node_dir(self, node_id: str) -> Path:
        return self.path / node_id

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    def exists(self) -> bool:
        return self.spec_path.is_file()

    @property
    def spec(self) -> ClusterSpec:
        """The spec; NotAClusterError if the directory has none (or a broken one)."""
        if self._spec is None:
            try:
                with open(self.spec_path, "rb") as f:
                    raw = f.read(SPEC_FILE_SIZE_MAX)
            except FileNotFoundError:
                raise NotAClusterError(f"no durakv cluster in {self.path} (no {SPEC_FILE})") from None
            except OSError as exc:
                raise NotAClusterError(f"{self.spec_path} cannot be read: {exc.strerror}") from exc
            self._spec = ClusterSpec.from_json(raw, self.spec_path)
        return self._spec

    def secret(self) -> str:
        return self.secret_path.read_text().strip()

    def manager_config(self) -> ClusterConfig | None:
        """The configuration the manager last saved (read without its lock), or None."""
        with contextlib.suppress(DataDirError):
            return manager_state.read_config(self.manager_dir)
        return None

    def lock(self) -> DataDirLock:
        """Exclusive use for starting and stopping; LauncherError if another command has it."""
        try:
            return DataDirLock(self.path)
        except DataDirLockedError as exc:
            raise LauncherError(f"another command is using {self.path} (pid {exc.pid})") from None


def create(path: str | os.PathLike[str], spec: ClusterSpec) -> ClusterDir:
    """Make a cluster directory for `spec` with the manager's initial configuration.

    Built in a temporary sibling and renamed into place, so an interrupted `create` leaves no
    half-made cluster. `path` must not exist or be an empty directory.
    """
    cdir = ClusterDir(path)
    if cdir.path.exists() and (not cdir.path.is_dir() or any(cdir.path.iterdir())):
        raise NotAClusterError(f"{cdir.path} exists and is not a durakv cluster directory")
    cdir.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cdir.path.name}.creating-", dir=cdir.path.parent))
    try:
        staged = ClusterDir(tmp)
        config = ClusterConfig.new()  # draws the cluster uuid and secret
        atomic_write(staged.secret_path, config.secret.encode(), mode=0o600)
        for node_id, address in spec.nodes.items():
            config = config.add_node(node_id, address)
        config = config.create_bucket(BucketConfig(BUCKET_NAME, spec.num_vbuckets, spec.num_replicas))
        config = config.create_user(ADMIN_USER, ADMIN_PASSWORD, ["admin"])
        manager_state.ManagerState(staged.manager_dir, new_config=lambda: config).close()
        for directory in (staged.logs_dir, staged.pids_dir):
            directory.mkdir()
        atomic_write(staged.spec_path, spec.to_json(), mode=0o644)
        os.rename(tmp, cdir.path)  # replaces an empty directory; fails on a non-empty one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cdir


# -- processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int | None  # None where there is no /proc


class Ending(NamedTuple):
    """How `stop` or `kill` ended a process."""

    pid: int
    killed_after_timeout: bool  # `stop`: it outlived SIGTERM's grace period and was SIGKILLed


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parens
    return fields[0], int(fields[19])


def _is_running(record: PidRecord) -> bool:
    child = _children.get(record.pid)
    if child is not None and child.poll() is not None:  # reaps our own exited child
        del _children[record.pid]
        return False
    if _HAVE_PROC:
        stat = _proc_stat(record.pid)
        return stat is not None and stat[0] not in ("Z", "X") and stat[1] == record.start_ticks
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def read_pid(cdir: ClusterDir, name: str) -> PidRecord | None:
    """The pid file's record, or None if there is none or it is unreadable."""
    try:
        doc = json.loads(cdir.pid_path(name).read_bytes())
        return PidRecord(int(doc["pid"]), doc["start_ticks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pid(cdir: ClusterDir, name: str) -> int | None:
    """The pid of `name` if it runs (its pid file names a live process with the recorded start)."""
    record = read_pid(cdir, name)
    return record.pid if record is not None and _is_running(record) else None


def command_line(cdir: ClusterDir, name: str) -> list[str]:
    spec = cdir.spec
    address = spec.address(name)
    if name == MANAGER:
        role = ["manager", "--dir", str(cdir.path)]  # it keeps its state in <dir>/manager/
    else:
        role = ["node", "--data", str(cdir.node_dir(name)), "--manager", spec.manager_address, "--node-id", name]
        role += ["--fsync", spec.fsync_policy]
    return [*PROGRAM, *role, "--listen", address, "--secret-file", str(cdir.secret_path)]


def port_is_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the gRPC server sets it: a port held only by TIME_WAIT connections is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def start(cdir: ClusterDir, name: str) -> int:
    """Start `name` in the background (its log appended, its pid file written); its pid.

    LauncherError if it already runs; PortInUseError if something else holds its port.
    """
    address = cdir.spec.address(name)
    pid = running_pid(cdir, name)
    if pid is not None:
        raise LauncherError(f"{name} is already running (pid {pid})")
    if not port_is_free(address):
        raise PortInUseError(f"{address}, the address of {name}, is in use by another program")
    argv = command_line(cdir, name)
    cdir.logs_dir.mkdir(exist_ok=True)
    cdir.pids_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(cdir.log_path(name), "ab") as log:
        log.write(f"{_LOG_HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cdir.path,
            env=env,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    stat = _proc_stat(proc.pid) if _HAVE_PROC else None  # our unreaped child: /proc has it even if it exited
    record = {"pid": proc.pid, "start_ticks": stat[1] if stat else None}
    atomic_write(cdir.pid_path(name), json.dumps(record).encode() + b"\n", mode=0o644)
    return proc.pid


def _signal(record: PidRecord, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signum)


def _wait_gone(records: Iterable[PidRecord], timeout_s: float) -> list[PidRecord]:
    """Poll until none of `records` runs or the timeout passes; those still running."""
    deadline = time.monotonic() + timeout_s
    left = list(records)
    while True:
        left = [r for r in left if _is_running(r)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_INTERVAL_S)


def _running_records(cdir: ClusterDir, names: Iterable[str]) -> dict[str, PidRecord]:
    """The running ones among `names`; the pid files of the others (stale) are removed."""
    running = {}
    for name in names:
        cdir.spec.address(name)  # UnknownProcessError for a name the cluster does not have
        record = read_pid(cdir, name)
        if record is not None and _is_running(record):
            running[name] = record
        else:
            cdir.pid_path(name).unlink(missing_ok=True)
    return running


def _end(cdir: ClusterDir, names: Iterable[str], signum: int, timeout_s: float) -> dict[str, Ending]:
    """Send `signum` to the running processes of `names` at once, SIGKILL the ones still up
    after `timeout_s`, wait until all are gone, remove their pid files. Only the processes
    that were running are in the result."""
    running = _running_records(cdir, names)
    for record in running.values():
        _signal(record, signum)
        if signum != signal.SIGKILL:
            _signal(record, signal.SIGCONT)  # a paused process (`pause`) must see it now
    stubborn = _wait_gone(running.values(), timeout_s)
    for record in stubborn:
        _signal(record, signal.SIGKILL)
    left = _wait_gone(stubborn, KILL_WAIT_S)
    if left:
        raise LauncherError(f"processes {[r.pid for r in left]} survived SIGKILL for {KILL_WAIT_S} s")
    for name in running:
        cdir.pid_path(name).unlink(missing_ok=True)
    overdue = signum != signal.SIGKILL
    return {name: Ending(record.pid, overdue and record in stubborn) for name, record in running.items()}


def stop(cdir: ClusterDir, names: Iterable[str], timeout_s: float = STOP_TIMEOUT_S_DEFAULT) -> dict[str, Ending]:
    """SIGTERM the running processes of `names`; SIGKILL the ones still up after `timeout_s`."""
    return _end(cdir, names, signal.SIGTERM, timeout_s)


def pause(cdir: ClusterDir, names: Iterable[str], *, resume: bool = False) -> dict[str, int]:
    """SIGSTOP (or, `resume`, SIGCONT) the running processes of `names`: a testbed pause; name -> pid."""
    running = _running_records(cdir, names)
    for record in running.values():
        _signal(record, signal.SIGCONT if resume else signal.SIGSTOP)
    return {name: record.pid for name, record in running.items()}


def kill(cdir: ClusterDir, names: Iterable[str]) -> dict[str, Ending]:
    """SIGKILL the running processes of `names`: a crash, no shutdown."""
    return _end(cdir, names, signal.SIGKILL, KILL_WAIT_S)


def down(cdir: ClusterDir, timeout_s: float = STOP_TIMEOUT_S_DEFAULT) -> dict[str, Ending]:
    """Stop the whole cluster: the manager first (so it does not react to nodes going away), then the nodes."""
    return {**stop(cdir, [MANAGER], timeout_s), **stop(cdir, cdir.spec.nodes, timeout_s)}


def destroy(cdir: ClusterDir, timeout_s: float = STOP_TIMEOUT_S_DEFAULT) -> None:
    """Stop every process and remove the directory; NotAClusterError for a directory that is not ours."""
    cdir.spec  # noqa: B018 -- refuses anything without a valid cluster.json before touching it
    with cdir.lock():
        down(cdir, timeout_s)
        shutil.rmtree(cdir.path)


def log_tail(cdir: ClusterDir, name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines the process's latest run logged (from its `start` header on)."""
    try:
        with open(cdir.log_path(name), "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES_MAX))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    run = text.splitlines()
    starts = [i for i, line in enumerate(run) if line.startswith(_LOG_HEADER)]
    return run[starts[-1] if starts else 0 :][-lines:]


# -- probing ---------------------------------------------------------------------------


class Probe:
    """Raw gRPC calls to the cluster's processes; one channel per address, kept until close()."""

    def __init__(self, secret: str) -> None:
        self._bearer = (("authorization", f"Bearer {secret}"),)
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, address: str) -> grpc.Channel:
        if address not in self._channels:
            size = GRPC_MESSAGE_SIZE_MAX
            options = [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]
            self._channels[address] = grpc.insecure_channel(address, options=options)
        return self._channels[address]

    def health(self, address: str) -> admin_pb2.HealthResponse | None:
        """The process's answer, or None if it does not answer."""
        stub = admin_pb2_grpc.AdminStub(self._channel(address))
        try:
            return stub.Health(admin_pb2.HealthRequest(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            return None

    def vbucket_states(self, address: str, bucket: str) -> dict[int, int] | None:
        """vbucket -> admin_pb2.VBucketState of a node's copies of `bucket`; None if it cannot tell."""
        stub = admin_pb2_grpc.NodeControlStub(self._channel(address))
        request = admin_pb2.GetVBucketStatesRequest(bucket=bucket)
        try:
            response = stub.GetVBucketStates(request, timeout=RPC_TIMEOUT_S, metadata=self._bearer)
        except grpc.RpcError:
            return None
        if response.status != kv_pb2.SUCCESS:  # e.g. BUCKET_NOT_FOUND before the node has the bucket
            return None
        return {vb.vbucket: vb.state for vb in response.vbuckets}

    def faults(self, address: str) -> tuple[str, ...] | None:
        """The testbed faults injected into a node, in words; None if it cannot tell."""
        from durakv.replication.node_faults import describe

        stub = admin_pb2_grpc.NodeControlStub(self._channel(address))
        try:
            response = stub.ListFaults(admin_pb2.ListFaultsRequest(), timeout=RPC_TIMEOUT_S, metadata=self._bearer)
        except grpc.RpcError:
            return None
        if response.status != kv_pb2.SUCCESS:
            return None
        return describe(response.disk, response.network, response.partitioned_from)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def health_name(state: int) -> str:
    return admin_pb2.HealthState.Name(state).removeprefix("HEALTH_STATE_").lower()


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    address: str
    pid: int | None  # from the pid file, running or not
    alive: bool
    health: str | None = None  # serving / starting / degraded / stopping; None when it does not answer
    problems: tuple[str, ...] = ()
    config_revision: int | None = None
    active_vbuckets: int | None = None  # summed over buckets; None for the manager or when unknown
    replica_vbuckets: int | None = None
    faults: tuple[str, ...] = ()  # testbed faults in place: "paused", and what NodeControl.ListFaults lists

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather_status(cdir: ClusterDir) -> list[ProcessStatus]:
    """Every process of the cluster: pid, whether it runs, health, revision, vbuckets it holds."""
    config = cdir.manager_config()
    buckets = list(config.buckets) if config is not None else []
    probe = Probe(cdir.secret())
    try:
        statuses = []
        for name in cdir.spec.names:
            address = cdir.spec.address(name)
            record = read_pid(cdir, name)
            alive = record is not None and _is_running(record)
            paused = alive and _HAVE_PROC and (_proc_stat(record.pid) or ("",))[0] == "T"
            health = probe.health(address) if alive and not paused else None
            fields: dict[str, Any] = {"faults": ("paused",)} if paused else {}
            if health is not None:
                fields = {
                    "health": health_name(health.state),
                    "problems": tuple(health.problems),
                    "config_revision": health.config_revision,
                }
                if name != MANAGER:
                    fields["faults"] = probe.faults(address) or ()
                    answers = [probe.vbucket_states(address, bucket) for bucket in buckets]
                    if None not in answers:
                        states = [state for answer in answers for state in answer.values()]
                        fields["active_vbuckets"] = states.count(admin_pb2.VBUCKET_STATE_ACTIVE)
                        fields["replica_vbuckets"] = states.count(admin_pb2.VBUCKET_STATE_REPLICA)
            pid = record.pid if record is not None else None
            statuses.append(ProcessStatus(name, address, pid, alive, **fields))
        return statuses
    finally:
        probe.close()


def not_ready(cdir: ClusterDir, names: Iterable[str], probe: Probe) -> dict[str, str]:
    """Why each of `names` is not ready yet (empty: all are). EXITED marks a process that died.

    Ready: the manager answers Health; a node answers Health as serving and reports itself
    active for every vbucket the manager's configuration makes it the active of.
    """
    config = cdir.manager_config()
    reasons: dict[str, str] = {}
    for name in names:
        address = cdir.spec.address(name)
        if running_pid(cdir, name) is None:
            reasons[name] = EXITED
            continue
        health = probe.health(address)
        if health is None:
            reasons[name] = f"does not answer Admin.Health at {address} yet"
        elif name != MANAGER and health.state != admin_pb2.HEALTH_STATE_SERVING:
            reasons[name] = f"health {health_name(health.state)}: {'; '.join(health.problems) or '-'}"
        elif name != MANAGER:
            if config is None:
                reasons[name] = f"the manager has no configuration in {cdir.manager_dir}"
                continue
            for bucket, entry in config.buckets.items():
                expected = vbmap.node_vbuckets(entry.vbmap, name)[0]
                states = probe.vbucket_states(address, bucket) or {}
                missing = [vb for vb in expected if states.get(vb) != admin_pb2.VBUCKET_STATE_ACTIVE]
                if missing:
                    reasons[name] = f"bucket {bucket}: {len(missing)} of its {len(expected)} active vbuckets not served"
                    break
    if config is not None and set(cdir.spec.nodes) <= set(names):
        for bucket, entry in config.buckets.items():
            orphans = [vb for vb, chain in enumerate(entry.vbmap) if chain is None]
            if orphans:
                reasons["cluster"] = f"bucket {bucket}: {len(orphans)} vbuckets have no copy left"
    return reasons


def wait_ready(
    cdir: ClusterDir, names: Iterable[str] | None = None, timeout_s: float = READY_TIMEOUT_S_DEFAULT
) -> dict[str, str]:
    """Poll `not_ready` until nothing is left (returns {}), a process exits, or the timeout passes."""
    names = list(cdir.spec.names if names is None else names)
    deadline = time.monotonic() + timeout_s
    probe = Probe(cdir.secret())
    try:
        while True:
            reasons = not_ready(cdir, names, probe)
            if not reasons or EXITED in reasons.values() or time.monotonic() >= deadline:
                return reasons
            time.sleep(POLL_INTERVAL_S)
    finally:
        probe.close()

"""A local cluster's directory: what `durakv cluster up` was asked for, and where things live.

Owns `ClusterSpec` (node ids and addresses, the manager's address, base port, replicas,
vbuckets; `cluster.json`), `ClusterDir` (the paths, the secret, the LOCK, the manager's
saved configuration) and `create`, which seeds a directory whole or not at all. The layout,
the addresses and the invariants are in replication/launcher.py's docstring. Starts no
process and opens no connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from durakv.engine.bucket import BucketConfig
from durakv.engine.errors import DataDirError, DataDirLockedError
from durakv.engine.files import DataDirLock, atomic_write
from durakv.engine.wal import FsyncPolicy
from durakv.replication import manager_state
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

"""The cluster manager process: its directory and secret file, and the Admin service served until told to stop.

A shell (DESIGN §6, docs/cluster-protocol.md): every decision about a change is
`cluster_config`'s, the file is `manager_state`'s, the wire form `config_proto`'s. The
manager is built from modules named for what each owns:
- `manager`: the running `Manager`, which serialises changes (one at a time: apply,
  persist atomically, then announce) and runs a hard failover under the same lock;
- `manager_admin`: the Admin RPCs (`AdminService`): authenticate and authorize the
  caller, answer reads from the current configuration, hand changes to the `Manager`;
- `manager_users`: authenticating callers (`Authenticator`) and `upsert_user`;
- `config_pusher`: pushing each new revision to every node until the node acknowledges it;
- `node_watch`: probing every node each second for automatic failover;
- `manager_failover`: the survivors' seqnos a failover promotes by.
This module owns starting and stopping the process: locking and loading the manager's
directory, reconciling the secret file, listening, and a clean stop on SIGTERM or
SIGINT.

The secret file: it must hold the configuration's secret (64 lowercase hex digits). A
directory without a configuration adopts the file's secret for the new cluster; a missing
file is written (0600) from the configuration's secret, new or existing.

The epoch: `ClusterConfig` has none, so the manager serves every revision under epoch
`CONFIG_EPOCH`. A recreated manager directory has a new cluster uuid, which nodes refuse
(EINVAL), so two histories are never compared by revision.

Must never start serving with a secret file that holds another secret than the
cluster's, or decide anything about a change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import stat
from pathlib import Path

import grpc

from durakv.engine.errors import EngineError
from durakv.engine.files import atomic_write
from durakv.proto import admin_pb2
from durakv.replication import event_loop
from durakv.replication.cluster_config import SECRET_SIZE, ClusterConfig
from durakv.replication.config_pusher import CHANNEL_OPTIONS
from durakv.replication.grpc_handlers import add_service
from durakv.replication.manager import Manager
from durakv.replication.manager_admin import AdminService
from durakv.replication.manager_state import ManagerState

log = logging.getLogger("durakv.manager")

STATE_DIR_NAME = "manager"  # the manager's state: <cluster dir>/manager/
SECRET_FILE_NAME = "secret"  # default secret file: <cluster dir>/secret
LISTEN_DEFAULT = "127.0.0.1:7100"
SHUTDOWN_GRACE_S = 1.0
SECRET_FILE_SIZE_MAX = 4096  # bytes; the secret and some whitespace

_SECRET_RE = re.compile(rf"[0-9a-f]{{{2 * SECRET_SIZE}}}")


class ManagerError(EngineError):
    """The manager cannot start as configured (the message says what to fix)."""


class SecretFileError(ManagerError):
    """The secret file cannot be read or written, or does not hold a secret."""


class SecretMismatchError(ManagerError):
    """The secret file holds another secret than the cluster's configuration."""


class ListenError(ManagerError):
    """The manager cannot listen on the address it was given."""


# -- start-up: the directory and the secret ------------------------------------------------
def read_secret_file(path: Path) -> str | None:
    """The secret in `path`, or None if there is no such file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(SECRET_FILE_SIZE_MAX + 1)
            mode = os.fstat(f.fileno()).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretFileError(f"cannot read the secret file {path}: {exc.strerror}") from exc
    secret = raw.decode("ascii", errors="replace").strip()
    if len(raw) > SECRET_FILE_SIZE_MAX or not _SECRET_RE.fullmatch(secret):
        raise SecretFileError(f"the secret file {path} does not hold {2 * SECRET_SIZE} lowercase hex digits")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the secret file %s is readable by others than its owner (mode %o)", path, mode & 0o777)
    return secret


def open_manager_state(state_dir: Path, secret_file: Path) -> ManagerState:
    """Lock and load the directory (creating a cluster if empty) and reconcile the secret file.

    DataDirLockedError if another manager holds the directory; SecretMismatchError if the
    file holds another secret; SecretFileError for a malformed or unwritable file.
    """
    file_secret = read_secret_file(secret_file)
    state = ManagerState(state_dir, new_config=lambda: ClusterConfig.new(secret=file_secret))
    try:
        if file_secret is None:
            try:
                atomic_write(secret_file, f"{state.config.secret}\n".encode(), mode=0o600)
            except OSError as exc:
                raise SecretFileError(f"cannot write the secret file {secret_file}: {exc.strerror}") from exc
            log.info("wrote the cluster secret to %s", secret_file)
        elif not state.config.check_secret(file_secret):
            raise SecretMismatchError(f"the secret in {secret_file} is not the secret of the cluster in {state_dir}")
    except BaseException:
        state.close()
        raise
    return state


# -- serving -------------------------------------------------------------------------------
async def serve(state: ManagerState, *, listen: str, push_interval_s: float) -> None:
    """Serve Admin on `listen` until SIGTERM or SIGINT, then stop cleanly. ListenError if it cannot bind."""
    manager = Manager(state, push_interval_s=push_interval_s)
    server = grpc.aio.server(options=[*CHANNEL_OPTIONS[:2], ("grpc.so_reuseport", 0)])
    add_service(server, AdminService(manager), admin_pb2.DESCRIPTOR.services_by_name["Admin"])
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise ListenError(f"cannot listen on {listen}: the address is in use or not local") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    config = manager.config
    log.info(
        "manager serving Admin on %s (port %d), directory %s, pid %d, revision %d, %d nodes, %d buckets, %d users",
        listen,
        port,
        state.directory,
        os.getpid(),
        config.revision,
        len(config.nodes),
        len(config.buckets),
        len(config.users),
    )
    if not config.users:
        log.warning("the cluster has no users yet: only holders of the cluster secret can manage it")
    manager.pusher.start()
    manager.watch.start()
    try:
        await stop.wait()
    finally:
        log.info("manager stopping")
        manager.stopping = True
        await manager.watch.stop()
        await server.stop(SHUTDOWN_GRACE_S)
        await manager.pusher.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("manager stopped at revision %d", manager.config.revision)


def run(cluster_dir: Path, *, listen: str, secret_file: Path | None, push_interval_s: float) -> None:
    """Open `<cluster_dir>/manager`, then serve until told to stop; typed errors if it cannot start."""
    state = open_manager_state(cluster_dir / STATE_DIR_NAME, secret_file or cluster_dir / SECRET_FILE_NAME)
    try:
        event_loop.run(serve(state, listen=listen, push_interval_s=push_interval_s))
    finally:
        state.close()

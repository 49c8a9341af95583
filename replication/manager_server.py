"""The cluster manager process: the `Admin` service over the configuration, and the config pusher.

A shell (DESIGN §6, docs/cluster-protocol.md): every decision about a change is
`cluster_config`'s, the file is `manager_state`'s, the wire form `config_proto`'s. This
module authenticates callers, serialises changes (one at a time: apply, persist
atomically, then announce), answers reads from the current configuration, and pushes
each new revision to every node until the node acknowledges it.

Authentication (gRPC metadata `authorization`):
- `Basic base64(user:password)`: checked against the users' scrypt hashes (off the event
  loop); a successful check is cached, keyed by a keyed hash of the credentials and
  valid only while the user's stored digest is the same, so scrypt runs once per user and
  password, and a changed password or dropped user is never served from the cache.
- `Bearer <cluster secret>`: a node (or a tool holding the secret file); allowed every call.
Missing or wrong credentials end the call with gRPC UNAUTHENTICATED. A user without the
role an RPC needs gets status EACCESS: admin for everything but GetClusterConfig (any user),
GetCollectionsManifest (any role on the bucket) and Health (no credentials at all).

GetClusterConfig answers a configuration only if it is newer than the caller's (epoch,
revision). Users get the client form (no manifests); secret holders the full form, and
a secret holder asking from behind (a node that starts, or lost its state) also makes
the pusher push to every node at once: users and the secret travel only in pushes.

The epoch: `ClusterConfig` has none, so the manager serves every revision under epoch
`CONFIG_EPOCH`. A recreated manager directory has a new cluster uuid, which nodes refuse
(EINVAL), so two histories are never compared by revision.

The secret file: it must hold the configuration's secret (64 lowercase hex digits). A
directory without a configuration adopts the file's secret for the new cluster; a missing
file is written (0600) from the configuration's secret, new or existing.

Failover (hard, by the admin's command): under the change lock, the manager asks every
surviving node that holds a replica of a vbucket the failed node was active for for its
(HPS, high seqno) (NodeControl.GetVBucketStates, all at once, a few seconds at most), then
`ClusterConfig.mark_failed` promotes the best replica of each; a node that does not answer
ranks lowest. The new revision is persisted and pushed like any change.

Invariants: a change is persisted before any caller or node can see it; the pusher only
ever sends the current configuration; a node's acknowledged revision is what the node
said it runs, never assumed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from durakv import __version__
from durakv.engine.errors import EngineError, KVError, Status
from durakv.engine.files import atomic_write
from durakv.proto import admin_pb2, admin_pb2_grpc
from durakv.replication import config_proto, event_loop, vbmap
from durakv.replication import users as users_mod
from durakv.replication.cluster_config import SECRET_SIZE, ClusterConfig, ClusterConfigError, NodeState, Refusal
from durakv.replication.manager_state import ManagerState
from durakv.replication.users import Action, AuthenticationError, Role, RoleName, User

log = logging.getLogger("durakv.manager")

MANAGER_ID = "manager"  # HealthResponse.node_id and StatsResponse.node_id of the manager
CONFIG_EPOCH = 1
STATE_DIR_NAME = "manager"  # the manager's state: <cluster dir>/manager/
SECRET_FILE_NAME = "secret"  # default secret file: <cluster dir>/secret
LISTEN_DEFAULT = "127.0.0.1:7100"
PUSH_INTERVAL_S_DEFAULT = 1.0
PUSH_TIMEOUT_S = 2.0
VBUCKET_STATES_TIMEOUT_S = 3.0  # failover: how long a surviving node may take to report its seqnos
PUSH_FAILURE_LOG_INTERVAL_S = 30.0  # a node that keeps failing is logged at most this often
AUTH_CACHE_SIZE_MAX = 1024  # cached successful password checks
GRPC_MESSAGE_SIZE_MAX = 32 * 1024 * 1024
SHUTDOWN_GRACE_S = 1.0
SECRET_FILE_SIZE_MAX = 4096  # bytes; the secret and some whitespace

_SECRET_RE = re.compile(rf"[0-9a-f]{{{2 * SECRET_SIZE}}}")
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", GRPC_MESSAGE_SIZE_MAX),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_SIZE_MAX),
    # A node that was down must be reachable again within a push interval or two.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_SUCCESS = int(Status.SUCCESS)


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


# -- a rule the configuration model lacks: replacing a user ----------------------------------
def upsert_user(
    config: ClusterConfig,
    name: str,
    password: str | None,
    roles: Iterable[str | Role],
    params: users_mod.ScryptParams = users_mod.SCRYPT_DEFAULT,
) -> ClusterConfig:
    """Replace an existing user's roles (and password, unless None), under create_user's rules.

    Refused as ClusterConfigError: a role on a missing bucket, or taking admin away from
    the last admin (as drop_user refuses dropping it).
    """
    existing = config.users.get(name)
    if existing is None:
        raise ClusterConfigError(Refusal.USER_NOT_FOUND, f"user {name!r} not found")
    parsed = users_mod.parse_roles(roles)
    for role in parsed:
        if role.bucket not in (None, users_mod.ALL_BUCKETS) and role.bucket not in config.buckets:
            raise ClusterConfigError(Refusal.BUCKET_NOT_FOUND, f"role {role} names a bucket that does not exist")
    admin = Role(RoleName.ADMIN)
    admins = [u.name for u in config.users.values() if admin in u.roles]
    if admins == [name] and admin not in parsed:
        raise ClusterConfigError(Refusal.LAST_ADMIN, f"user {name!r} is the last admin")
    hashed = existing.password if password is None else users_mod.hash_password(password, params)
    users = {**config.users, name: User(name, parsed, hashed)}
    return dataclasses.replace(config, revision=config.revision + 1, users=users)


# -- authentication ----------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, or (user None) a holder of the cluster secret."""

    user: User | None

    @property
    def is_node(self) -> bool:
        return self.user is None

    def may(self, action: Action, bucket: str | None = None) -> bool:
        return self.user is None or users_mod.authorize(self.user, action, bucket)


class Authenticator:
    """Checks the `authorization` metadata of a call against a configuration."""

    def __init__(self, cache_size_max: int = AUTH_CACHE_SIZE_MAX) -> None:
        self._cache_key = secrets.token_bytes(32)  # the cache holds no plain-crackable hashes
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()  # credentials -> the digest they matched
        self._cache_size_max = cache_size_max

    async def authenticate(self, config: ClusterConfig, metadata: Iterable[tuple[str, object]]) -> Principal:
        """The caller; AuthenticationError for missing or wrong credentials."""
        values = [value for key, value in metadata if key == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            raise AuthenticationError()
        scheme, _, credential = values[0].partition(" ")
        if scheme.lower() == "bearer":
            if config.check_secret(credential.strip()):
                return Principal(None)
            raise AuthenticationError()
        if scheme.lower() != "basic":
            raise AuthenticationError()
        try:
            name, sep, password = base64.b64decode(credential.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError() from None
        if not sep:
            raise AuthenticationError()
        key = hmac.new(self._cache_key, json.dumps([name, password]).encode(), hashlib.sha256).digest()
        user = config.users.get(name)
        cached = self._cache.get(key)
        if user is not None and cached is not None and hmac.compare_digest(cached, user.password.digest):
            self._cache.move_to_end(key)
            return Principal(user)
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(None, users_mod.authenticate, config.users, name, password)
        self._cache[key] = user.password.digest
        while len(self._cache) > self._cache_size_max:
            self._cache.popitem(last=False)
        return Principal(user)


# -- the pusher --------------------------------------------------------------------------
@dataclass
class NodePushState:
    """What the pusher knows of one node."""

    node_id: str
    address: str
    acked: config_proto.Version = (0, 0)  # what the node last said it runs
    pushes_ok: int = 0
    pushes_failed: int = 0
    failures_consecutive: int = 0
    last_error: str = ""
    failure_logged_at_s: float | None = None
    failures_unlogged: int = 0
    force: bool = False  # push even if acked is current (the node may have lost its state)


class ConfigPusher:
    """One task per node: push the current configuration whenever the node's acknowledgement is behind.

    A task wakes on `kick()` (after every change) and every `interval_s`; a failed push is
    retried on the next wake-up, so a node that was down gets the newest revision soon
    after it is back.
    """

    def __init__(
        self,
        current: Callable[[], ClusterConfig],
        *,
        epoch: int,
        interval_s: float,
        timeout_s: float = PUSH_TIMEOUT_S,
        failure_log_interval_s: float = PUSH_FAILURE_LOG_INTERVAL_S,
    ) -> None:
        self._current = current
        self._epoch = epoch
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._failure_log_interval_s = failure_log_interval_s
        self._states: dict[str, NodePushState] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self._encoded: admin_pb2.PushConfigRequest | None = None
        self._running = False

    @property
    def states(self) -> Mapping[str, NodePushState]:
        return self._states

    def start(self) -> None:
        self._running = True
        self.kick()

    def kick(self, *, force: bool = False) -> None:
        """Wake every node's task (starting tasks for new nodes); `force`: push even to current nodes."""
        if not self._running:
            return
        for node in self._current().nodes.values():
            if node.node_id not in self._tasks:
                self._states[node.node_id] = NodePushState(node.node_id, node.address)
                self._wakes[node.node_id] = asyncio.Event()
                self._tasks[node.node_id] = asyncio.create_task(self._run(node.node_id), name=f"push-{node.node_id}")
        for node_id, state in self._states.items():
            state.force = state.force or force
            self._wakes[node_id].set()

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for _, channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _run(self, node_id: str) -> None:
        state, wake = self._states[node_id], self._wakes[node_id]
        while True:
            wake.clear()
            config = self._current()
            node = config.nodes.get(node_id)
            if node is not None and (state.force or state.acked < (self._epoch, config.revision)):
                state.force = False
                state.address = node.address
                try:
                    await self._push(state, config)
                except Exception:  # a bug here must not silently end this node's pushes
                    log.exception("pushing to node %s failed unexpectedly", node_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._interval_s)

    async def _push(self, state: NodePushState, config: ClusterConfig) -> None:
        if self._encoded is None or self._encoded.config.revision != config.revision:
            self._encoded = config_proto.push_request(config, epoch=self._epoch, target_node_id="")
        request = admin_pb2.PushConfigRequest()
        request.CopyFrom(self._encoded)
        request.target_node_id = state.node_id
        stub = admin_pb2_grpc.NodeControlStub(await self._channel(state))
        metadata = (("authorization", f"Bearer {config.secret}"),)
        try:
            response = await stub.PushConfig(request, timeout=self._timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            await self._close_channel(state.node_id)  # a fresh connection next time, no backoff carried over
            self._failed(state, config.revision, f"{exc.code().name}: {exc.details()}")
            return
        if response.status != _SUCCESS:
            self._failed(state, config.revision, f"{_status_name(response.status)}: {response.message}")
            return
        state.acked = (response.config_epoch, response.config_revision)
        if state.acked < (self._epoch, config.revision):
            self._failed(state, config.revision, f"the node still runs {state.acked} after the push")
            return
        state.pushes_ok += 1
        if state.failures_consecutive:
            log.info(
                "node %s (%s) runs revision %d again, after %d failed pushes",
                state.node_id,
                state.address,
                state.acked[1],
                state.failures_consecutive,
            )
        else:
            log.debug("node %s runs revision %d", state.node_id, state.acked[1])
        state.failures_consecutive, state.last_error = 0, ""
        state.failure_logged_at_s, state.failures_unlogged = None, 0

    def _failed(self, state: NodePushState, revision: int, error: str) -> None:
        state.pushes_failed += 1
        state.failures_consecutive += 1
        state.last_error = error
        now = time.monotonic()
        if state.failure_logged_at_s is None or now - state.failure_logged_at_s >= self._failure_log_interval_s:
            more = (
                f" ({state.failures_unlogged} more failures since the last report)" if state.failures_unlogged else ""
            )
            log.warning(
                "push of revision %d to node %s (%s) failed: %s%s", revision, state.node_id, state.address, error, more
            )
            state.failure_logged_at_s, state.failures_unlogged = now, 0
        else:
            state.failures_unlogged += 1

    async def _channel(self, state: NodePushState) -> grpc.aio.Channel:
        held = self._channels.get(state.node_id)
        if held is not None and held[0] != state.address:
            await self._close_channel(state.node_id)
            held = None
        if held is None:
            held = (state.address, grpc.aio.insecure_channel(state.address, options=_CHANNEL_OPTIONS))
            self._channels[state.node_id] = held
        return held[1]

    async def _close_channel(self, node_id: str) -> None:
        held = self._channels.pop(node_id, None)
        if held is not None:
            await held[1].close()


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status {status}"


# -- failover: the survivors' seqnos ---------------------------------------------------------
@dataclass(frozen=True)
class FailoverChoice:
    """Who became the active of one vbucket the failed node was active for (None: lost)."""

    bucket: str
    vbucket: int
    node_id: str | None
    position: vbmap.Position | None  # (HPS, high seqno) it was chosen with; None if not asked


async def gather_positions(
    config: ClusterConfig, failed_node: str, timeout_s: float = VBUCKET_STATES_TIMEOUT_S
) -> tuple[dict[str, dict[int, dict[str, vbmap.Position]]], list[str]]:
    """bucket -> vbucket -> node -> (HPS, high seqno) of the replicas that may be promoted.

    Asks (NodeControl.GetVBucketStates, with the cluster secret, all at once) every node
    other than `failed_node` that holds a replica of a vbucket `failed_node` is active for;
    only replica copies count. Also returns the nodes that did not answer (their copies stay
    unknown and rank lowest, `vbmap.failover`).
    """
    wanted: dict[str, dict[str, set[int]]] = {}  # node -> bucket -> vbuckets
    for name, entry in config.buckets.items():
        for vb, chain in enumerate(entry.vbmap):
            if chain is None or chain.active != failed_node:
                continue
            for replica in chain.replicas:
                if replica is not None and replica != failed_node:
                    wanted.setdefault(replica, {}).setdefault(name, set()).add(vb)
    metadata = (("authorization", f"Bearer {config.secret}"),)

    async def ask(node_id: str) -> tuple[str, dict[str, dict[int, vbmap.Position]] | None]:
        answers: dict[str, dict[int, vbmap.Position]] = {}
        async with grpc.aio.insecure_channel(config.nodes[node_id].address, options=_CHANNEL_OPTIONS) as channel:
            stub = admin_pb2_grpc.NodeControlStub(channel)
            for bucket, vbuckets in wanted[node_id].items():
                request = admin_pb2.GetVBucketStatesRequest(bucket=bucket)
                try:
                    response = await stub.GetVBucketStates(request, timeout=timeout_s, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    log.warning("failover: node %s did not answer GetVBucketStates: %s", node_id, exc.code().name)
                    return node_id, None
                if response.status != _SUCCESS:
                    log.warning("failover: node %s has no copy of bucket %s: %s", node_id, bucket, response.message)
                    continue
                answers[bucket] = {
                    vb.vbucket: (min(vb.high_prepared_seqno, vb.high_seqno), vb.high_seqno)
                    for vb in response.vbuckets
                    if vb.vbucket in vbuckets and vb.state == admin_pb2.VBUCKET_STATE_REPLICA
                }
        return node_id, answers

    positions: dict[str, dict[int, dict[str, vbmap.Position]]] = {}
    unreachable = []
    for node_id, answers in await asyncio.gather(*(ask(node) for node in sorted(wanted))):
        if answers is None:
            unreachable.append(node_id)
            continue
        for bucket, by_vb in answers.items():
            for vb, position in by_vb.items():
                positions.setdefault(bucket, {}).setdefault(vb, {})[node_id] = position
    return positions, unreachable


def failover_choices(
    before: ClusterConfig,
    after: ClusterConfig,
    failed_node: str,
    positions: Mapping[str, Mapping[int, Mapping[str, vbmap.Position]]],
) -> list[FailoverChoice]:
    """The new active of every vbucket `failed_node` was the active of in `before`."""
    choices = []
    for name, entry in before.buckets.items():
        new_map = after.buckets[name].vbmap
        for vb, chain in enumerate(entry.vbmap):
            if chain is None or chain.active != failed_node:
                continue
            new = new_map[vb]
            node = new.active if new is not None else None
            position = positions.get(name, {}).get(vb, {}).get(node) if node is not None else None
            choices.append(FailoverChoice(name, vb, node, position))
    return choices


# -- the manager -----------------------------------------------------------------------------
class Manager:
    """The running manager: its state, authenticator and pusher; changes go through `apply`."""

    def __init__(self, state: ManagerState, *, push_interval_s: float, epoch: int = CONFIG_EPOCH) -> None:
        self.state = state
        self.epoch = epoch
        self.auth = Authenticator()
        self.pusher = ConfigPusher(lambda: self.state.config, epoch=epoch, interval_s=push_interval_s)
        self.started_at_s = time.monotonic()
        self.stopping = False
        self._change_lock = asyncio.Lock()

    @property
    def config(self) -> ClusterConfig:
        return self.state.config

    async def apply(self, what: str, change: Callable[[ClusterConfig], ClusterConfig]) -> ClusterConfig:
        """Apply and persist one change (typed errors leave everything as it was), then push it."""
        async with self._change_lock:
            loop = asyncio.get_running_loop()  # scrypt and fsync stay off the event loop
            config = await loop.run_in_executor(None, self.state.update, change)
        log.info("revision %d: %s", config.revision, what)
        self.pusher.kick()
        return config

    async def failover(self, node_id: str) -> tuple[ClusterConfig, list[FailoverChoice], list[str]]:
        """Hard failover of `node_id`: ask the survivors for their seqnos, then mark it failed.

        Under the change lock throughout, so the chains the seqnos were gathered for are the
        chains `mark_failed` rewrites. Returns the new configuration, one choice per vbucket
        the node was active for, and the surviving nodes holding copies that did not answer.
        Typed errors (ClusterConfigError, OSError) leave everything as it was.
        """
        async with self._change_lock:
            before = self.config
            before.mark_failed(node_id)  # refuse an unknown, failed or last node before asking anyone
            positions, unreachable = await gather_positions(before, node_id)
            loop = asyncio.get_running_loop()
            config = await loop.run_in_executor(None, self.state.update, lambda c: c.mark_failed(node_id, positions))
        choices = failover_choices(before, config, node_id, positions)
        lost = sum(1 for choice in choices if choice.node_id is None)
        log.warning(
            "revision %d: failed over node %s: %d vbuckets promoted, %d lost%s",
            config.revision,
            node_id,
            len(choices) - lost,
            lost,
            f", not answering: {', '.join(unreachable)}" if unreachable else "",
        )
        self.pusher.kick()
        return config, choices, unreachable

    def push_problems(self) -> list[str]:
        """One line per active node that does not run the current revision."""
        config = self.config
        problems = []
        for node_id, push in self.pusher.states.items():
            node = config.nodes.get(node_id)
            if node is None or node.state is not NodeState.ACTIVE or push.acked >= (self.epoch, config.revision):
                continue
            why = f": {push.last_error}" if push.last_error else ""
            problems.append(f"node {node_id} ({node.address}) runs revision {push.acked[1]} of {config.revision}{why}")
        return problems


# -- the Admin service ---------------------------------------------------------------------
class AdminService(admin_pb2_grpc.AdminServicer):
    """Admin RPCs over a Manager: authenticate, authorize, then read or `apply` a change."""

    def __init__(self, manager: Manager) -> None:
        self._m = manager

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        try:
            return await self._m.auth.authenticate(self._m.config, context.invocation_metadata() or ())
        except AuthenticationError:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication failed")
            raise  # abort raises; this line is never reached

    async def _admin(self, context: grpc.aio.ServicerContext) -> bool:
        return (await self._principal(context)).may(Action.MANAGE)

    async def _change(
        self,
        context: grpc.aio.ServicerContext,
        what: str,
        change: Callable[[ClusterConfig], ClusterConfig],
        manifest_of: str | None = None,
    ) -> admin_pb2.ChangeResponse:
        if not await self._admin(context):
            return admin_pb2.ChangeResponse(status=Status.EACCESS, message="this change needs the admin role")
        try:
            config = await self._m.apply(what, change)
        except KVError as exc:
            return admin_pb2.ChangeResponse(status=exc.status, message=exc.message)
        except EngineError as exc:  # a rule of vbmap or the model refused the input
            return admin_pb2.ChangeResponse(status=Status.EINVAL, message=str(exc))
        except OSError as exc:  # the configuration could not be saved: nothing changed
            log.error("could not save revision for %s: %s", what, exc)
            return admin_pb2.ChangeResponse(status=Status.TMPFAIL, message=f"cannot save the configuration: {exc}")
        response = admin_pb2.ChangeResponse(
            status=Status.SUCCESS, config_epoch=self._m.epoch, config_revision=config.revision
        )
        if manifest_of is not None:
            response.manifest_uid = config.bucket(manifest_of).manifest.uid
        return response

    # -- configuration ---------------------------------------------------------------------
    async def GetClusterConfig(self, request, context):
        principal = await self._principal(context)
        config = self._m.config
        if request.bucket and request.bucket not in config.buckets:
            return admin_pb2.GetClusterConfigResponse(
                status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.bucket!r} not found"
            )
        if (self._m.epoch, config.revision) <= (request.config_epoch, request.config_revision):
            return admin_pb2.GetClusterConfigResponse(status=Status.SUCCESS)
        if principal.is_node:
            self._m.pusher.kick(force=True)  # users and the secret reach nodes only by push
        msg = config_proto.cluster_config_to_proto(
            config, epoch=self._m.epoch, bucket=request.bucket or None, manifests=principal.is_node
        )
        return admin_pb2.GetClusterConfigResponse(status=Status.SUCCESS, config=msg)

    # -- buckets -----------------------------------------------------------------------------
    async def CreateBucket(self, request, context):
        settings = request.settings
        return await self._change(
            context,
            f"create bucket {settings.name!r}",
            lambda c: c.create_bucket(config_proto.bucket_settings_from_proto(settings, create=True)),
        )

    async def DropBucket(self, request, context):
        return await self._change(context, f"drop bucket {request.name!r}", lambda c: c.drop_bucket(request.name))

    async def GetBucket(self, request, context):
        if not await self._admin(context):
            return admin_pb2.GetBucketResponse(status=Status.EACCESS, message="needs the admin role")
        entry = self._m.config.buckets.get(request.name)
        if entry is None:
            return admin_pb2.GetBucketResponse(status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.name!r}")
        settings = config_proto.bucket_settings_to_proto(entry.config)
        return admin_pb2.GetBucketResponse(status=Status.SUCCESS, settings=settings)

    async def ListBuckets(self, request, context):
        if not await self._admin(context):
            return admin_pb2.ListBucketsResponse(status=Status.EACCESS, message="needs the admin role")
        buckets = [config_proto.bucket_settings_to_proto(b.config) for b in self._m.config.buckets.values()]
        return admin_pb2.ListBucketsResponse(status=Status.SUCCESS, buckets=buckets)

    # -- scopes and collections ----------------------------------------------------------------
    async def CreateScope(self, request, context):
        b, s = request.bucket, request.scope
        what = f"create scope {s!r} in {b!r}"
        return await self._change(context, what, lambda c: c.create_scope(b, s), manifest_of=b)

    async def DropScope(self, request, context):
        b, s = request.bucket, request.scope
        return await self._change(context, f"drop scope {s!r} in {b!r}", lambda c: c.drop_scope(b, s), manifest_of=b)

    async def CreateCollection(self, request, context):
        b, s, n, ttl = request.bucket, request.scope, request.collection, request.max_ttl_s
        what = f"create collection {s!r}.{n!r} in {b!r}"
        return await self._change(context, what, lambda c: c.create_collection(b, s, n, ttl), manifest_of=b)

    async def DropCollection(self, request, context):
        b, s, n = request.bucket, request.scope, request.collection
        return await self._change(
            context, f"drop collection {s!r}.{n!r} in {b!r}", lambda c: c.drop_collection(b, s, n), manifest_of=b
        )

    async def GetCollectionsManifest(self, request, context):
        principal = await self._principal(context)
        if not (principal.may(Action.READ, request.bucket) or principal.may(Action.WRITE, request.bucket)):
            return admin_pb2.GetCollectionsManifestResponse(status=Status.EACCESS, message="no role on this bucket")
        entry = self._m.config.buckets.get(request.bucket)
        if entry is None:
            return admin_pb2.GetCollectionsManifestResponse(
                status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.bucket!r} not found"
            )
        manifest = config_proto.manifest_to_proto(entry.manifest)
        return admin_pb2.GetCollectionsManifestResponse(status=Status.SUCCESS, manifest=manifest)

    # -- users -------------------------------------------------------------------------------
    async def CreateUser(self, request, context):
        name, password, upsert = request.user.username, request.password, request.upsert

        def change(config: ClusterConfig) -> ClusterConfig:
            roles = [config_proto.role_from_proto(role) for role in request.user.roles]
            if upsert and name in config.users:
                return upsert_user(config, name, password or None, roles)
            return config.create_user(name, password, roles)

        return await self._change(context, f"{'upsert' if upsert else 'create'} user {name!r}", change)

    async def DropUser(self, request, context):
        name = request.username
        return await self._change(context, f"drop user {name!r}", lambda c: c.drop_user(name))

    async def GetUser(self, request, context):
        if not await self._admin(context):
            return admin_pb2.GetUserResponse(status=Status.EACCESS, message="needs the admin role")
        user = self._m.config.users.get(request.username)
        if user is None:
            return admin_pb2.GetUserResponse(status=Status.KEY_ENOENT, message=f"user {request.username!r}")
        return admin_pb2.GetUserResponse(status=Status.SUCCESS, user=config_proto.user_to_proto(user))

    async def ListUsers(self, request, context):
        if not await self._admin(context):
            return admin_pb2.ListUsersResponse(status=Status.EACCESS, message="needs the admin role")
        users = [config_proto.user_to_proto(user) for user in self._m.config.users.values()]
        return admin_pb2.ListUsersResponse(status=Status.SUCCESS, users=users)

    # -- stats and health ----------------------------------------------------------------------
    async def Stats(self, request, context):
        """Per bucket: its shape from the configuration; bucket "": the manager's own counters."""
        if not await self._admin(context):
            return admin_pb2.StatsResponse(status=Status.EACCESS, message="needs the admin role")
        config = self._m.config
        if request.bucket and request.bucket not in config.buckets:
            return admin_pb2.StatsResponse(status=Status.BUCKET_NOT_FOUND, message=f"bucket {request.bucket!r}")
        names = [request.bucket] if request.bucket else list(config.buckets)
        buckets = [admin_pb2.BucketStats(bucket=name, counters=_bucket_counters(config, name)) for name in names]
        if not request.bucket:
            buckets.append(admin_pb2.BucketStats(bucket="", counters=self._manager_counters(config)))
        return admin_pb2.StatsResponse(status=Status.SUCCESS, node_id=MANAGER_ID, buckets=buckets)

    def _manager_counters(self, config: ClusterConfig) -> dict[str, int]:
        current = (self._m.epoch, config.revision)
        pushes = self._m.pusher.states
        counters = {
            "config_epoch": self._m.epoch,
            "config_revision": config.revision,
            "nodes": len(config.nodes),
            "nodes_active": len(config.active_nodes()),
            "nodes_current": sum(1 for p in pushes.values() if p.acked >= current),
            "buckets": len(config.buckets),
            "users": len(config.users),
            "pushes_ok": sum(p.pushes_ok for p in pushes.values()),
            "pushes_failed": sum(p.pushes_failed for p in pushes.values()),
        }
        for node_id, push in pushes.items():
            counters[f"node.{node_id}.config_revision"] = push.acked[1]
            counters[f"node.{node_id}.push_failures_consecutive"] = push.failures_consecutive
        return counters

    # -- failover ----------------------------------------------------------------------------
    async def Failover(self, request, context):
        if not await self._admin(context):
            return admin_pb2.FailoverResponse(status=Status.EACCESS, message="failover needs the admin role")
        try:
            config, choices, unreachable = await self._m.failover(request.node_id)
        except KVError as exc:
            return admin_pb2.FailoverResponse(status=exc.status, message=exc.message)
        except EngineError as exc:
            return admin_pb2.FailoverResponse(status=Status.EINVAL, message=str(exc))
        except OSError as exc:
            log.error("could not save the failover of %s: %s", request.node_id, exc)
            return admin_pb2.FailoverResponse(status=Status.TMPFAIL, message=f"cannot save the configuration: {exc}")
        response = admin_pb2.FailoverResponse(
            status=Status.SUCCESS,
            config_epoch=self._m.epoch,
            config_revision=config.revision,
            unreachable_nodes=unreachable,
        )
        for choice in choices:
            hps, high = choice.position or (0, 0)
            response.promotions.add(
                bucket=choice.bucket,
                vbucket=choice.vbucket,
                node_id=choice.node_id or "",
                high_prepared_seqno=hps,
                high_seqno=high,
            )
        return response

    async def Health(self, request, context):
        config = self._m.config
        return admin_pb2.HealthResponse(
            status=Status.SUCCESS,
            node_id=MANAGER_ID,
            state=admin_pb2.HEALTH_STATE_STOPPING if self._m.stopping else admin_pb2.HEALTH_STATE_SERVING,
            config_epoch=self._m.epoch,
            config_revision=config.revision,
            problems=self._m.push_problems(),
            version=__version__,
            uptime_s=int(time.monotonic() - self._m.started_at_s),
        )


def _bucket_counters(config: ClusterConfig, name: str) -> dict[str, int]:
    entry = config.bucket(name)
    manifest = entry.manifest
    return {
        "num_vbuckets": entry.config.num_vbuckets,
        "num_replicas": entry.config.num_replicas,
        "manifest_uid": manifest.uid,
        "scopes": len(manifest.scopes),
        "collections": len(manifest.collection_ids()),
        "vbuckets_lost": sum(1 for chain in entry.vbmap if chain is None),
        "replica_slots_empty": sum(chain.replicas.count(None) for chain in entry.vbmap if chain is not None),
    }


# -- serving -------------------------------------------------------------------------------
async def serve(state: ManagerState, *, listen: str, push_interval_s: float) -> None:
    """Serve Admin on `listen` until SIGTERM or SIGINT, then stop cleanly. ListenError if it cannot bind."""
    manager = Manager(state, push_interval_s=push_interval_s)
    server = grpc.aio.server(options=[*_CHANNEL_OPTIONS[:2], ("grpc.so_reuseport", 0)])
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(manager), server)
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
    try:
        await stop.wait()
    finally:
        log.info("manager stopping")
        manager.stopping = True
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

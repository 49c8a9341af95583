"""`durakv manager` as a real process: Admin over gRPC, its directory, and the config pusher.

Each test seeds a cluster directory through `manager_state` (two nodes at unused loopback
ports, the bucket `default`, the user `admin`), writes the secret file, starts
`durakv manager` as a subprocess on a free loopback port and talks to it with the
generated stubs, as the SDK and nodes do. The pusher is checked against `FakeNode`: a
real gRPC server on loopback serving `NodeControl.PushConfig` in this process, standing
in for node1 (node2 is never up). Everything is polled against deadlines; subprocesses
are killed in `finally`.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from durakv.engine.bucket import BucketConfig
from durakv.engine.errors import Status
from durakv.proto import admin_pb2, admin_pb2_grpc, cluster_pb2
from durakv.replication import config_proto, manager_server
from durakv.replication.cluster_config import ClusterConfig
from durakv.replication.manager_state import ManagerState

DEADLINE_S = 15.0
POLL_INTERVAL_S = 0.05
PUSH_INTERVAL_S = 0.2
RPC_TIMEOUT_S = 5.0
ADMIN = ("admin", "password")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def basic(user: str, password: str) -> tuple[tuple[str, str], ...]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def wait_until(condition: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> object:
    end = time.monotonic() + deadline_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


class FakeNode(admin_pb2_grpc.NodeControlServicer):
    """A real NodeControl server on loopback that records every push it gets."""

    def __init__(self, port: int, secret: str) -> None:
        self.port, self.secret = port, secret
        self.pushes: list[admin_pb2.PushConfigRequest] = []
        self.revision = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def PushConfig(self, request, context):
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {self.secret}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong secret")
        with self._lock:
            self.pushes.append(request)
            self.revision = max(self.revision, request.config.revision)
            return admin_pb2.PushConfigResponse(
                status=Status.SUCCESS,
                node_id=request.target_node_id,
                config_epoch=request.config.epoch,
                config_revision=self.revision,
            )

    def revisions(self) -> list[int]:
        with self._lock:
            return [p.config.revision for p in self.pushes]

    def start(self) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        admin_pb2_grpc.add_NodeControlServicer_to_server(self, self._server)
        assert self._server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(None).wait()
            self._server = None


class ManagerProcess:
    """`durakv manager` started the way a user starts it."""

    def __init__(self, cluster_dir: Path, secret_file: Path, port: int, log_path: Path) -> None:
        self.cluster_dir, self.secret_file, self.port, self.log_path = cluster_dir, secret_file, port, log_path
        self.proc: subprocess.Popen | None = None
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.admin = admin_pb2_grpc.AdminStub(self.channel)

    def start(self) -> ManagerProcess:
        command = [sys.executable, "-m", "durakv.cli.main", "manager", "--dir", str(self.cluster_dir)]
        command += ["--listen", f"127.0.0.1:{self.port}", "--secret-file", str(self.secret_file)]
        command += ["--push-interval-s", str(PUSH_INTERVAL_S)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self) -> None:
        def serving() -> bool:
            assert self.proc.poll() is None, f"the manager exited with {self.proc.returncode}:\n{self.log()}"
            try:
                health = self.admin.Health(admin_pb2.HealthRequest(), timeout=1.0)
            except grpc.RpcError:
                return False
            return health.state == admin_pb2.HEALTH_STATE_SERVING

        wait_until(serving, "the manager to serve")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE_S)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.channel.close()


class Cluster:
    """A seeded cluster directory and its secret; node1 and node2 at unused ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "cluster"
        self.secret = secrets.token_hex(32)
        self.secret_file = root / "secret"
        self.node_ports = {"node1": free_port(), "node2": free_port()}
        self.managers: list[ManagerProcess] = []

        def seed(config: ClusterConfig) -> ClusterConfig:
            for node_id, port in self.node_ports.items():
                config = config.add_node(node_id, f"127.0.0.1:{port}")
            config = config.create_bucket(BucketConfig("default", num_vbuckets=16, num_replicas=1))
            return config.create_user(*ADMIN, ["admin"])

        with ManagerState(self.dir / "manager", new_config=lambda: ClusterConfig.new(secret=self.secret)) as state:
            self.seeded = state.update(seed)
        self.secret_file.write_text(self.secret + "\n")
        os.chmod(self.secret_file, 0o600)

    def manager(self, port: int | None = None) -> ManagerProcess:
        index = len(self.managers)
        process = ManagerProcess(self.dir, self.secret_file, port or free_port(), self.root / f"manager{index}.log")
        self.managers.append(process)
        return process.start()

    def close(self) -> None:
        for process in self.managers:
            process.kill()


@pytest.fixture
def cluster(tmp_path):
    seeded = Cluster(tmp_path)
    try:
        yield seeded
    finally:
        seeded.close()


@pytest.fixture
def manager(cluster):
    process = cluster.manager()
    process.wait_serving()
    return process


def call(manager: ManagerProcess, rpc: str, request, auth=ADMIN):
    metadata = basic(*auth) if isinstance(auth, tuple) and len(auth) == 2 and isinstance(auth[0], str) else auth
    return getattr(manager.admin, rpc)(request, metadata=metadata, timeout=RPC_TIMEOUT_S)


def revision(manager: ManagerProcess) -> int:
    return manager.admin.Health(admin_pb2.HealthRequest(), timeout=RPC_TIMEOUT_S).config_revision


# -- buckets, scopes, collections --------------------------------------------------------------
def test_manager_bucket_scope_collection_changes_answer_statuses_and_revisions(manager):
    listed = call(manager, "ListBuckets", admin_pb2.ListBucketsRequest())
    assert listed.status == Status.SUCCESS and [b.name for b in listed.buckets] == ["default"]
    start = revision(manager)

    travel = cluster_pb2.BucketSettings(name="travel", num_replicas=1, durability_min_level=1)
    created = call(manager, "CreateBucket", admin_pb2.CreateBucketRequest(settings=travel))
    assert (created.status, created.config_epoch, created.config_revision) == (Status.SUCCESS, 1, start + 1)
    again = call(manager, "CreateBucket", admin_pb2.CreateBucketRequest(settings=travel))
    assert again.status == Status.BUCKET_EXISTS and again.config_revision == 0
    bad = cluster_pb2.BucketSettings(name=".hidden")
    assert call(manager, "CreateBucket", admin_pb2.CreateBucketRequest(settings=bad)).status == Status.EINVAL
    got = call(manager, "GetBucket", admin_pb2.GetBucketRequest(name="travel"))
    assert got.status == Status.SUCCESS and got.settings.num_vbuckets == 64 and got.settings.num_replicas == 1
    assert call(manager, "GetBucket", admin_pb2.GetBucketRequest(name="nope")).status == Status.BUCKET_NOT_FOUND

    def change(rpc, request, status=Status.SUCCESS):
        response = call(manager, rpc, request)
        assert response.status == status, (rpc, request, response)
        return response

    scope = change("CreateScope", admin_pb2.CreateScopeRequest(bucket="travel", scope="inventory"))
    assert scope.config_revision == start + 2 and scope.manifest_uid == 1
    change("CreateScope", admin_pb2.CreateScopeRequest(bucket="travel", scope="inventory"), Status.SCOPE_EXISTS)
    change("CreateScope", admin_pb2.CreateScopeRequest(bucket="nope", scope="s"), Status.BUCKET_NOT_FOUND)
    hotels = admin_pb2.CreateCollectionRequest(bucket="travel", scope="inventory", collection="hotels", max_ttl_s=60)
    assert change("CreateCollection", hotels).manifest_uid == 2
    change("CreateCollection", hotels, Status.COLLECTION_EXISTS)
    orphan = admin_pb2.CreateCollectionRequest(bucket="travel", scope="nope", collection="c")
    change("CreateCollection", orphan, Status.UNKNOWN_SCOPE)

    manifest = call(manager, "GetCollectionsManifest", admin_pb2.GetCollectionsManifestRequest(bucket="travel"))
    scopes = {s.name: s for s in manifest.manifest.scopes}
    assert manifest.manifest.uid == 2 and set(scopes) == {"_default", "inventory"}
    assert [(c.name, c.id, c.max_ttl_s) for c in scopes["inventory"].collections] == [("hotels", 9, 60)]

    drop_hotels = admin_pb2.DropCollectionRequest(bucket="travel", scope="inventory", collection="hotels")
    change("DropCollection", drop_hotels)
    change("DropCollection", drop_hotels, Status.UNKNOWN_COLLECTION)
    change("DropScope", admin_pb2.DropScopeRequest(bucket="travel", scope="inventory"))
    change("DropScope", admin_pb2.DropScopeRequest(bucket="travel", scope="inventory"), Status.UNKNOWN_SCOPE)
    change("DropScope", admin_pb2.DropScopeRequest(bucket="travel", scope="_default"), Status.EINVAL)
    dropped = change("DropBucket", admin_pb2.DropBucketRequest(name="travel"))
    change("DropBucket", admin_pb2.DropBucketRequest(name="travel"), Status.BUCKET_NOT_FOUND)
    assert dropped.config_revision == start + 6 == revision(manager)  # refusals made no revision
    listed = call(manager, "ListBuckets", admin_pb2.ListBucketsRequest())
    assert [b.name for b in listed.buckets] == ["default"]


# -- users and authentication ----------------------------------------------------------------
def test_manager_users_roles_and_credentials_enforced(cluster, manager):
    reader = cluster_pb2.User(
        username="reader", roles=[cluster_pb2.Role(name=cluster_pb2.ROLE_NAME_DATA_READER, bucket="default")]
    )
    created = call(manager, "CreateUser", admin_pb2.CreateUserRequest(user=reader, password="secret1"))
    assert created.status == Status.SUCCESS
    again = call(manager, "CreateUser", admin_pb2.CreateUserRequest(user=reader, password="secret1"))
    assert again.status == Status.KEY_EEXISTS
    missing_bucket = cluster_pb2.User(
        username="x", roles=[cluster_pb2.Role(name=cluster_pb2.ROLE_NAME_DATA_WRITER, bucket="nope")]
    )
    refused = call(manager, "CreateUser", admin_pb2.CreateUserRequest(user=missing_bucket, password="secret1"))
    assert refused.status == Status.BUCKET_NOT_FOUND
    no_role = admin_pb2.CreateUserRequest(user=cluster_pb2.User(username="y"), password="secret1")
    assert call(manager, "CreateUser", no_role).status == Status.EINVAL
    short_password = admin_pb2.CreateUserRequest(user=reader, password="p", upsert=True)
    assert call(manager, "CreateUser", short_password).status == Status.EINVAL

    # A data role: reads the configuration and the bucket's manifest, manages nothing.
    as_reader = ("reader", "secret1")
    got = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(), as_reader)
    assert got.status == Status.SUCCESS and got.config.revision == revision(manager)
    manifest = call(
        manager, "GetCollectionsManifest", admin_pb2.GetCollectionsManifestRequest(bucket="default"), as_reader
    )
    assert manifest.status == Status.SUCCESS
    forbidden = call(manager, "CreateBucket", admin_pb2.CreateBucketRequest(settings={"name": "b"}), as_reader)
    assert forbidden.status == Status.EACCESS
    assert call(manager, "ListUsers", admin_pb2.ListUsersRequest(), as_reader).status == Status.EACCESS

    # Upsert: new roles, an empty password keeps the old one.
    writer = cluster_pb2.User(
        username="reader", roles=[cluster_pb2.Role(name=cluster_pb2.ROLE_NAME_DATA_WRITER, bucket="*")]
    )
    upserted = call(manager, "CreateUser", admin_pb2.CreateUserRequest(user=writer, upsert=True))
    assert upserted.status == Status.SUCCESS
    got = call(manager, "GetUser", admin_pb2.GetUserRequest(username="reader"))
    assert got.user == writer
    listed = call(manager, "ListUsers", admin_pb2.ListUsersRequest())
    assert [u.username for u in listed.users] == ["admin", "reader"]
    assert call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(), as_reader).status == Status.SUCCESS
    demote = cluster_pb2.User(username="admin", roles=writer.roles)
    assert call(manager, "CreateUser", admin_pb2.CreateUserRequest(user=demote, upsert=True)).status == Status.EINVAL

    # Credentials: missing, wrong, malformed -> UNAUTHENTICATED; Health needs none.
    for metadata in [(), basic("reader", "wrong-password"), basic("nobody", "password"), bearer("ab" * 32),
                     (("authorization", "Basic %%%"),), (("authorization", "Token x"),)]:  # fmt: skip
        with pytest.raises(grpc.RpcError) as info:
            manager.admin.ListBuckets(admin_pb2.ListBucketsRequest(), metadata=metadata, timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
    assert manager.admin.Health(admin_pb2.HealthRequest(), timeout=RPC_TIMEOUT_S).status == Status.SUCCESS
    # The secret holder may manage.
    as_node = bearer(cluster.secret)
    assert call(manager, "ListUsers", admin_pb2.ListUsersRequest(), as_node).status == Status.SUCCESS

    # A dropped user is refused at once (no stale cached password check), the last admin stays.
    assert call(manager, "DropUser", admin_pb2.DropUserRequest(username="reader")).status == Status.SUCCESS
    with pytest.raises(grpc.RpcError) as info:
        call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(), as_reader)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert call(manager, "DropUser", admin_pb2.DropUserRequest(username="reader")).status == Status.KEY_ENOENT
    assert call(manager, "DropUser", admin_pb2.DropUserRequest(username="admin")).status == Status.EINVAL


# -- GetClusterConfig ------------------------------------------------------------------------
def test_manager_get_cluster_config_answers_only_when_newer(cluster, manager):
    current = revision(manager)
    full = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest())
    view = config_proto.view_from_proto(full.config)
    assert view.version == (1, current) and view.cluster_uuid == cluster.seeded.cluster_uuid
    assert list(view.nodes) == ["node1", "node2"] and list(view.buckets) == ["default"]
    assert view.buckets["default"].vbmap == cluster.seeded.bucket("default").vbmap
    assert view.buckets["default"].manifest is None  # the client form
    assert cluster.secret.encode() not in full.SerializeToString()

    same = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(config_epoch=1, config_revision=current))
    assert same.status == Status.SUCCESS and not same.HasField("config")
    older = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(config_epoch=1, config_revision=1))
    assert older.config.revision == current
    newer_epoch = admin_pb2.GetClusterConfigRequest(config_epoch=2, config_revision=1)
    assert not call(manager, "GetClusterConfig", newer_epoch).HasField("config")

    call(manager, "CreateBucket", admin_pb2.CreateBucketRequest(settings={"name": "other", "num_vbuckets": 4}))
    bumped = call(
        manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(config_epoch=1, config_revision=current)
    )
    assert bumped.config.revision == current + 1 and len(bumped.config.buckets) == 2
    scoped = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(bucket="other"))
    assert [b.settings.name for b in scoped.config.buckets] == ["other"] and len(scoped.config.nodes) == 2
    missing = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(bucket="nope"))
    assert missing.status == Status.BUCKET_NOT_FOUND

    as_node = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(), bearer(cluster.secret))
    assert all(b.HasField("manifest") for b in as_node.config.buckets)  # the full form for nodes


# -- the directory -------------------------------------------------------------------------------
def test_manager_restart_keeps_revision_and_changes(cluster, manager):
    for name in ("a", "b"):
        call(manager, "CreateBucket", admin_pb2.CreateBucketRequest(settings={"name": name, "num_vbuckets": 4}))
    call(manager, "CreateScope", admin_pb2.CreateScopeRequest(bucket="a", scope="s"))
    before = revision(manager)
    assert manager.terminate() == 0

    restarted = cluster.manager(manager.port)
    restarted.wait_serving()
    assert revision(restarted) == before
    listed = call(restarted, "ListBuckets", admin_pb2.ListBucketsRequest())
    assert [b.name for b in listed.buckets] == ["default", "a", "b"]
    manifest = call(restarted, "GetCollectionsManifest", admin_pb2.GetCollectionsManifestRequest(bucket="a"))
    assert [s.name for s in manifest.manifest.scopes] == ["_default", "s"]
    next_change = call(restarted, "DropBucket", admin_pb2.DropBucketRequest(name="b"))
    assert next_change.config_revision == before + 1


def test_manager_second_on_same_dir_exits_1(cluster, manager):
    second = cluster.manager()
    assert second.proc.wait(timeout=DEADLINE_S) == 1
    assert "error:" in second.log()
    assert revision(manager) == cluster.seeded.revision  # the first one is unaffected


def test_manager_secret_file_mismatch_exits_1(cluster):
    cluster.secret_file.write_text(secrets.token_hex(32))
    process = cluster.manager()
    assert process.proc.wait(timeout=DEADLINE_S) == 1


def test_manager_listen_address_taken_exits_1(cluster):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = cluster.manager(taken.getsockname()[1])
        assert process.proc.wait(timeout=DEADLINE_S) == 1


def test_open_manager_state_new_cluster_adopts_file_secret(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(secrets.token_hex(32) + "\n")
    state = manager_server.open_manager_state(tmp_path / "manager", secret_file)
    try:
        assert state.config.check_secret(secret_file.read_text().strip())
    finally:
        state.close()


def test_open_manager_state_missing_secret_file_written_owner_only(cluster):
    cluster.secret_file.unlink()
    state = manager_server.open_manager_state(cluster.dir / "manager", cluster.secret_file)
    try:
        assert cluster.secret_file.read_text().strip() == cluster.secret
        assert cluster.secret_file.stat().st_mode & 0o777 == 0o600
    finally:
        state.close()


def test_open_manager_state_malformed_secret_file_refused(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("not a secret")
    with pytest.raises(manager_server.SecretFileError):
        manager_server.open_manager_state(tmp_path / "manager", secret_file)
    assert not (tmp_path / "manager" / "LOCK").exists()  # refused before the directory was touched


# -- the pusher ----------------------------------------------------------------------------
def push_counters(manager: ManagerProcess) -> dict[str, int]:
    stats = call(manager, "Stats", admin_pb2.StatsRequest())
    return dict(next(b for b in stats.buckets if b.bucket == "").counters)


def test_manager_pusher_node_gets_every_revision_even_after_downtime(cluster):
    node = FakeNode(cluster.node_ports["node1"], cluster.secret)
    node.start()
    try:
        manager = cluster.manager()
        manager.wait_serving()
        current = revision(manager)
        wait_until(lambda: current in node.revisions(), "node1 to get the current revision")

        push = node.pushes[-1]
        assert push.target_node_id == "node1" and push.cluster_secret == cluster.secret
        assert push.config.epoch == 1 and all(b.HasField("manifest") for b in push.config.buckets)
        (admin,) = push.users
        assert (
            admin.user.username == "admin"
            and admin.password_hash.digest == cluster.seeded.users["admin"].password.digest
        )
        _, decoded = config_proto.config_from_push_request(push)
        assert decoded.to_json() == cluster.seeded.to_json()

        # Every change reaches the node.
        for name in ("b1", "b2", "b3"):
            response = call(manager, "CreateBucket", admin_pb2.CreateBucketRequest(settings={"name": name}))
            wait_until(lambda r=response.config_revision: r in node.revisions(), f"node1 to get {name}")
        counters = wait_until(
            lambda: (c := push_counters(manager))["node.node1.config_revision"] == revision(manager) and c,
            "Stats to show node1 current",
        )
        assert counters["node.node2.config_revision"] == 0  # never up
        assert counters["node.node2.push_failures_consecutive"] >= 1 and counters["pushes_failed"] >= 1
        health = manager.admin.Health(admin_pb2.HealthRequest(), timeout=RPC_TIMEOUT_S)
        assert len(health.problems) == 1  # node2 only

        # node1 goes down and misses two revisions; once back, it gets the newest.
        node.stop()
        call(manager, "DropBucket", admin_pb2.DropBucketRequest(name="b1"))
        latest = call(manager, "DropBucket", admin_pb2.DropBucketRequest(name="b2")).config_revision
        wait_until(lambda: push_counters(manager)["node.node1.push_failures_consecutive"] >= 2, "failed pushes")
        assert push_counters(manager)["node.node1.config_revision"] < latest
        node.start()
        wait_until(lambda: latest in node.revisions(), "node1 to get the newest revision after its downtime")
        wait_until(lambda: push_counters(manager)["node.node1.push_failures_consecutive"] == 0, "node1 current")

        # A node pulling from behind with the secret makes the manager push to it again.
        pushes_before = len(node.pushes)
        pulled = call(manager, "GetClusterConfig", admin_pb2.GetClusterConfigRequest(), bearer(cluster.secret))
        assert pulled.config.revision == latest
        wait_until(lambda: len(node.pushes) > pushes_before, "a push after a pull from behind")
    finally:
        node.stop()


def test_manager_answers_a_request_that_does_not_decode_einval_and_changes_nothing(manager):
    before = revision(manager)
    garbage = b"\xff\xff\xff\xff not a protobuf message"
    raw = manager.channel.unary_unary("/durakv.admin.v1.Admin/CreateBucket")
    answer = admin_pb2.ChangeResponse.FromString(raw(garbage, metadata=basic(*ADMIN), timeout=RPC_TIMEOUT_S))
    assert answer.status == Status.EINVAL and "does not decode" in answer.message
    assert revision(manager) == before
    assert (
        manager.admin.Health(admin_pb2.HealthRequest(), timeout=RPC_TIMEOUT_S).state == admin_pb2.HEALTH_STATE_SERVING
    )

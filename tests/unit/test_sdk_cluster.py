"""Cluster, Bucket, Scope, authenticators and the management APIs over a fake backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

import durakv._backends as backends
import durakv.exceptions as exc
from durakv._backend import BackendStatusError, KVResponse
from durakv._errors import KVStatus
from durakv.auth import PasswordAuthenticator
from durakv.bucket import Bucket
from durakv.cluster import Cluster
from durakv.collection import Collection
from durakv.durability import DurabilityLevel
from durakv.management.buckets import BucketSettings, BucketType, CreateBucketSettings
from durakv.management.collections import CollectionSpec, CreateCollectionSettings, ScopeSpec
from durakv.options import ClusterOptions, ClusterTimeoutOptions
from durakv.scope import Scope
from durakv.transcoder import FMT_UTF8, RawStringTranscoder


class FakeBackend:
    def __init__(self, buckets=("default",)) -> None:
        self.buckets = list(buckets)
        self.manage_calls: list[tuple[str, dict]] = []
        self.manage_answer: object = None
        self.closed = 0
        self.waited: list[float] = []
        self.requests = []

    def execute(self, request):
        self.requests.append(request)
        return KVResponse(cas=1, value=b"hello", flags=FMT_UTF8)

    def bucket_names(self):
        return self.buckets

    def manage(self, action, **args):
        self.manage_calls.append((action, args))
        if isinstance(self.manage_answer, BaseException):
            raise self.manage_answer
        return self.manage_answer

    def close(self):
        self.closed += 1

    def wait_until_ready(self, timeout_s):
        self.waited.append(timeout_s)


# --- cluster ---------------------------------------------------------------------------------


def test_unknown_bucket_is_bucket_not_found():
    cluster = Cluster.from_backend(FakeBackend())
    with pytest.raises(exc.BucketNotFoundException) as info:
        cluster.bucket("nope")
    assert info.value.error_context.bucket_name == "nope"


def test_context_manager_closes_once():
    backend = FakeBackend()
    with Cluster.from_backend(backend) as cluster:
        assert cluster.connected
    cluster.close()
    assert backend.closed == 1
    with pytest.raises(exc.MissingConnectionException):
        cluster.bucket("default")


@pytest.mark.parametrize("connstr", ["couchbase://localhost", "http://x", "", 5])
def test_non_durakv_connection_string_is_invalid_argument(connstr):
    with pytest.raises(exc.InvalidArgumentException):
        Cluster(connstr)


def test_remote_cluster_gets_backend_from_factory_with_merged_options(monkeypatch):
    seen = {}
    backend = FakeBackend()

    def open_remote_backend(connstr, options):
        seen["args"] = (connstr, options)
        return backend

    monkeypatch.setattr(backends, "open_remote_backend", open_remote_backend)
    auth = PasswordAuthenticator("admin", "secret")
    cluster = Cluster.connect(
        "durakv://127.0.0.1:7101",
        ClusterOptions(auth, timeout_options=ClusterTimeoutOptions(kv_timeout=timedelta(seconds=4))),
        kv_timeout=timedelta(seconds=3),
    )
    connstr, options = seen["args"]
    assert connstr == "durakv://127.0.0.1:7101"
    assert options["authenticator"] is auth
    assert options["kv_timeout"] == timedelta(seconds=3)
    cluster.bucket("default").default_collection().get("k", transcoder=RawStringTranscoder())
    assert backend.requests[-1].timeout_s == 3.0


def test_embedded_splits_cluster_options_from_node_options(monkeypatch, tmp_path):
    seen = {}
    backend = FakeBackend()

    def open_embedded_backend(path, **kwargs):
        seen["args"] = (path, kwargs)
        return backend

    monkeypatch.setattr(backends, "open_embedded_backend", open_embedded_backend)
    cluster = Cluster.embedded(tmp_path, transcoder=RawStringTranscoder(), fsync_policy="never")
    assert seen["args"] == (tmp_path, {"fsync_policy": "never"})
    assert cluster.bucket("default").default_collection().get("k").value == "hello"
    cluster.wait_until_ready(timedelta(seconds=2))
    assert backend.waited == [2.0]


def test_wait_until_ready_needs_timedelta():
    with pytest.raises(exc.InvalidArgumentException):
        Cluster.from_backend(FakeBackend()).wait_until_ready(5)


def test_invalid_cluster_options():
    with pytest.raises(exc.InvalidArgumentException):
        Cluster.from_backend(FakeBackend(), transcoder=object())
    with pytest.raises(exc.InvalidArgumentException):
        Cluster.from_backend(FakeBackend(), kv_timeout=2.5)


def test_bucket_scope_collection_names():
    bucket = Cluster.from_backend(FakeBackend()).bucket("default")
    assert isinstance(bucket, Bucket)
    assert bucket.name == "default"
    assert bucket.default_scope().name == Scope.default_name() == "_default"
    scope = bucket.scope("s1")
    assert (scope.name, scope.bucket_name) == ("s1", "default")
    coll = scope.collection("c1")
    assert isinstance(coll, Collection)
    assert (coll.name, coll.scope_name, coll.bucket_name) == ("c1", "s1", "default")
    assert (bucket.collection("c2").scope_name, bucket.collection("c2").name) == ("_default", "c2")
    assert bucket.default_collection().name == Collection.default_name() == "_default"
    assert coll.binary() is coll.binary()


def test_password_authenticator():
    auth = PasswordAuthenticator("admin", "secret")
    assert (auth.username, auth.password) == ("admin", "secret")
    assert "secret" not in repr(auth)


# --- bucket management -----------------------------------------------------------------------


def test_create_bucket_sends_exact_settings():
    backend = FakeBackend()
    manager = Cluster.from_backend(backend).buckets()
    manager.create_bucket(
        CreateBucketSettings(
            name="b1",
            num_replicas=2,
            bucket_type=BucketType.COUCHBASE,
            ram_quota_mb=256,
            max_expiry=timedelta(hours=1),
            durability_min_level=DurabilityLevel.MAJORITY,
            num_vbuckets=16,
        )
    )
    assert backend.manage_calls == [
        (
            "create_bucket",
            {
                "settings": {
                    "name": "b1",
                    "num_replicas": 2,
                    "num_vbuckets": 16,
                    "durability_min_level": 1,
                    "max_ttl_s": 3600,
                }
            },
        )
    ]


def test_create_bucket_unset_values_left_to_backend():
    backend = FakeBackend()
    Cluster.from_backend(backend).buckets().create_bucket(CreateBucketSettings(name="b1"))
    assert backend.manage_calls[0][1]["settings"] == {
        "name": "b1",
        "num_replicas": None,
        "num_vbuckets": None,
        "durability_min_level": 0,
        "max_ttl_s": 0,
    }


def test_create_bucket_couchbase_spellings():
    backend = FakeBackend()
    settings = CreateBucketSettings(
        name="b1", minimum_durability_level=DurabilityLevel.PERSIST_TO_MAJORITY, max_ttl=60, bucket_type="couchbase"
    )
    Cluster.from_backend(backend).buckets().create_bucket(settings)
    sent = backend.manage_calls[0][1]["settings"]
    assert (sent["durability_min_level"], sent["max_ttl_s"]) == (3, 60)


def test_create_non_couchbase_bucket_is_feature_unavailable():
    backend = FakeBackend()
    with pytest.raises(exc.FeatureUnavailableException):
        Cluster.from_backend(backend).buckets().create_bucket(
            CreateBucketSettings(name="e", bucket_type=BucketType.EPHEMERAL)
        )
    assert backend.manage_calls == []


def test_bucket_settings_need_a_name():
    with pytest.raises(exc.InvalidArgumentException):
        BucketSettings(name="")


def test_create_existing_bucket():
    backend = FakeBackend()
    backend.manage_answer = BackendStatusError(KVStatus.BUCKET_EXISTS, "exists")
    with pytest.raises(exc.BucketAlreadyExistsException):
        Cluster.from_backend(backend).buckets().create_bucket(CreateBucketSettings(name="b1"))


def test_drop_missing_bucket():
    backend = FakeBackend()
    backend.manage_answer = BackendStatusError(KVStatus.BUCKET_NOT_FOUND, "no")
    with pytest.raises(exc.BucketDoesNotExistException) as info:
        Cluster.from_backend(backend).buckets().drop_bucket("b9")
    assert isinstance(info.value, exc.BucketNotFoundException)
    assert backend.manage_calls == [("drop_bucket", {"name": "b9"})]


def test_get_bucket_and_get_all_buckets():
    backend = FakeBackend()
    backend.manage_answer = {
        "name": "b1",
        "num_vbuckets": 64,
        "num_replicas": 1,
        "durability_min_level": 2,
        "max_ttl_s": 30,
    }
    settings = Cluster.from_backend(backend).buckets().get_bucket("b1")
    assert backend.manage_calls[-1] == ("get_bucket", {"name": "b1"})
    assert (settings.name, settings.num_replicas, settings.num_vbuckets) == ("b1", 1, 64)
    assert settings.minimum_durability_level is DurabilityLevel.MAJORITY_AND_PERSIST_TO_ACTIVE
    assert settings.max_expiry == timedelta(seconds=30)
    assert settings.bucket_type is BucketType.COUCHBASE
    backend.manage_answer = [backend.manage_answer, {**backend.manage_answer, "name": "b2"}]
    assert [s.name for s in Cluster.from_backend(backend).buckets().get_all_buckets()] == ["b1", "b2"]
    assert backend.manage_calls[-1] == ("get_all_buckets", {})


# --- collection management -------------------------------------------------------------------


@pytest.fixture
def managed():
    backend = FakeBackend()
    return backend, Cluster.from_backend(backend).bucket("default").collections()


def test_scope_actions(managed):
    backend, manager = managed
    manager.create_scope("s1")
    manager.drop_scope("s1")
    assert backend.manage_calls == [
        ("create_scope", {"bucket": "default", "scope": "s1"}),
        ("drop_scope", {"bucket": "default", "scope": "s1"}),
    ]


def test_create_collection_both_forms(managed):
    backend, manager = managed
    manager.create_collection("s1", "c1")
    manager.create_collection("s1", "c2", CreateCollectionSettings(max_expiry=timedelta(minutes=2)))
    manager.create_collection(CollectionSpec("c3", "s1", max_expiry=timedelta(seconds=5)))
    assert [args for _, args in backend.manage_calls] == [
        {"bucket": "default", "scope": "s1", "collection": "c1", "max_expiry_s": 0},
        {"bucket": "default", "scope": "s1", "collection": "c2", "max_expiry_s": 120},
        {"bucket": "default", "scope": "s1", "collection": "c3", "max_expiry_s": 5},
    ]


def test_drop_collection_both_forms(managed):
    backend, manager = managed
    manager.drop_collection("s1", "c1")
    manager.drop_collection(CollectionSpec("c2", "s1"))
    assert backend.manage_calls == [
        ("drop_collection", {"bucket": "default", "scope": "s1", "collection": "c1"}),
        ("drop_collection", {"bucket": "default", "scope": "s1", "collection": "c2"}),
    ]


def test_create_collection_bad_arguments(managed):
    _, manager = managed
    with pytest.raises(exc.InvalidArgumentException):
        manager.create_collection("s1")
    with pytest.raises(exc.InvalidArgumentException):
        manager.create_collection("s1", "c1", {"max_expiry": 5})


def test_get_all_scopes(managed):
    backend, manager = managed
    backend.manage_answer = [
        {"name": "_default", "collections": [{"name": "_default", "max_expiry_s": 0}]},
        {"name": "s1", "collections": [{"name": "c1", "max_expiry_s": 60}]},
    ]
    scopes = manager.get_all_scopes()
    assert backend.manage_calls == [("get_all_scopes", {"bucket": "default"})]
    assert all(isinstance(s, ScopeSpec) for s in scopes)
    assert [s.name for s in scopes] == ["_default", "s1"]
    c1 = scopes[1].collections[0]
    assert (c1.name, c1.scope_name, c1.max_expiry) == ("c1", "s1", timedelta(seconds=60))


@pytest.mark.parametrize(
    "status, expected",
    [
        (KVStatus.SCOPE_EXISTS, exc.ScopeAlreadyExistsException),
        (KVStatus.UNKNOWN_SCOPE, exc.ScopeNotFoundException),
        (KVStatus.COLLECTION_EXISTS, exc.CollectionAlreadyExistsException),
        (KVStatus.UNKNOWN_COLLECTION, exc.CollectionNotFoundException),
    ],
)
def test_collection_management_errors(managed, status, expected):
    backend, manager = managed
    backend.manage_answer = BackendStatusError(status, "refused")
    with pytest.raises(expected) as info:
        manager.create_collection("s1", "c1")
    assert info.value.error_context.status_code == status

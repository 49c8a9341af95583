"""Scopes, collections and buckets through the SDK's managers (reference §5.2, §5.8, §1.8).

Includes the tutorial's scoped upsert into `tenant_agent_00.users`, the name rules, the key
limits (250 bytes in the default collection, 246 in a named one -- bytes, not characters) and
bucket create / list / drop.

An operation on a collection that does not exist: Couchbase's SDK keeps re-resolving the
collection until its deadline; durakv's SDK documents (`durakv.scope`) that it raises
`CollectionNotFoundException` on the first operation, and that is what is asserted here.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from durakv.exceptions import (
    BucketAlreadyExistsException,
    BucketNotFoundException,
    CollectionAlreadyExistsException,
    CollectionNotFoundException,
    DocumentExistsException,
    DocumentNotFoundException,
    InvalidArgumentException,
    ScopeAlreadyExistsException,
    ScopeNotFoundException,
)
from durakv.management.buckets import BucketSettings, CreateBucketSettings
from durakv.management.collections import CollectionSpec, ScopeSpec

SCOPE = "tenant_agent_00"
COLLECTION = "users"
SHORT_TIMEOUT = timedelta(milliseconds=300)


def scope_map(bucket) -> dict[str, set[str]]:
    scopes = bucket.collections().get_all_scopes()
    assert all(isinstance(s, ScopeSpec) for s in scopes)
    return {s.name: {c.name for c in s.collections} for s in scopes}


# -- scopes and collections ---------------------------------------------------------------------


def test_new_bucket_has_only_the_default_scope_and_collection(bucket):
    assert scope_map(bucket) == {"_default": {"_default"}}


def test_create_scope_and_collection_shows_in_get_all_scopes(bucket):
    manager = bucket.collections()
    manager.create_scope(SCOPE)
    manager.create_collection(SCOPE, COLLECTION)
    manager.create_collection(SCOPE, "bookings")
    assert scope_map(bucket) == {"_default": {"_default"}, SCOPE: {COLLECTION, "bookings"}}
    specs = next(s for s in manager.get_all_scopes() if s.name == SCOPE).collections
    assert all(isinstance(c, CollectionSpec) and c.scope_name == SCOPE for c in specs)


def test_create_collection_with_a_collection_spec_still_works(bucket):
    manager = bucket.collections()
    manager.create_scope(SCOPE)
    manager.create_collection(CollectionSpec(COLLECTION, scope_name=SCOPE))
    assert COLLECTION in scope_map(bucket)[SCOPE]
    manager.drop_collection(CollectionSpec(COLLECTION, scope_name=SCOPE))
    assert scope_map(bucket)[SCOPE] == set()


def test_tutorial_scoped_upsert_into_users(bucket, users):
    agent_scope = bucket.scope("tenant_agent_00")
    users_collection = agent_scope.collection("users")
    content = {"name": "John Doe", "preferred_email": "johndoe111@test123.test"}
    result = users_collection.upsert("user-key", content)
    assert result.cas > 0
    assert users_collection.get("user-key").content_as[dict] == content


def test_named_collection_full_crud(users):
    inserted = users.insert("u1", {"name": "Ann"})
    with pytest.raises(DocumentExistsException):
        users.insert("u1", {"name": "Bob"})
    assert users.get("u1").cas == inserted.cas
    upserted = users.upsert("u1", {"name": "Ann", "age": 40})
    replaced = users.replace("u1", {"name": "Ann", "age": 41}, cas=upserted.cas)
    assert users.exists("u1").exists is True
    assert users.get("u1").content_as[dict] == {"name": "Ann", "age": 41}
    assert users.binary().increment("visits").content == 0
    users.remove("u1", cas=replaced.cas)
    assert users.exists("u1").exists is False
    with pytest.raises(DocumentNotFoundException):
        users.get("u1")
    users.insert("u1", {"name": "again"})
    token = users.upsert("u1", {"name": "token"}).mutation_token()
    assert token.bucket_name == "default"


def test_same_key_in_two_collections_is_two_documents(coll, users):
    coll.upsert("k", {"where": "default"})
    users.upsert("k", {"where": "users"})
    assert coll.get("k").content_as[dict] == {"where": "default"}
    assert users.get("k").content_as[dict] == {"where": "users"}
    users.remove("k")
    assert coll.exists("k").exists is True


def test_collection_of_the_default_scope_via_bucket_collection(bucket):
    manager = bucket.collections()
    manager.create_collection("_default", "extra")
    extra = bucket.collection("extra")
    extra.upsert("k", 1)
    assert bucket.default_scope().collection("extra").get("k").value == 1


@pytest.mark.parametrize(
    "op",
    [
        lambda c: c.get("k", timeout=SHORT_TIMEOUT),
        lambda c: c.upsert("k", {"v": 1}, timeout=SHORT_TIMEOUT),
        lambda c: c.insert("k", {"v": 1}, timeout=SHORT_TIMEOUT),
        lambda c: c.remove("k", timeout=SHORT_TIMEOUT),
    ],
    ids=["get", "upsert", "insert", "remove"],
)
def test_operation_on_unknown_collection_raises_collection_not_found(bucket, op):
    bucket.collections().create_scope(SCOPE)
    with pytest.raises(CollectionNotFoundException):
        op(bucket.scope(SCOPE).collection("nope"))
    with pytest.raises(CollectionNotFoundException):
        op(bucket.collection("nope"))


def test_operation_on_unknown_scope_raises_scope_not_found(bucket):
    with pytest.raises(ScopeNotFoundException):
        bucket.scope("nope").collection("users").upsert("k", 1, timeout=SHORT_TIMEOUT)


def test_exists_on_unknown_collection_raises_collection_not_found(bucket):
    with pytest.raises(CollectionNotFoundException):
        bucket.collection("nope").exists("k", timeout=SHORT_TIMEOUT)


def test_dropped_collection_refuses_operations_and_recreated_one_is_empty(bucket, users):
    users.upsert("k", {"v": 1})
    manager = bucket.collections()
    manager.drop_collection(SCOPE, COLLECTION)
    assert scope_map(bucket)[SCOPE] == set()
    with pytest.raises(CollectionNotFoundException):
        users.get("k", timeout=SHORT_TIMEOUT)
    manager.create_collection(SCOPE, COLLECTION)
    with pytest.raises(DocumentNotFoundException):
        users.get("k")


def test_drop_scope_drops_its_collections(bucket, users):
    users.upsert("k", {"v": 1})
    bucket.collections().drop_scope(SCOPE)
    assert scope_map(bucket) == {"_default": {"_default"}}
    with pytest.raises((ScopeNotFoundException, CollectionNotFoundException)):
        users.get("k", timeout=SHORT_TIMEOUT)


def test_default_scope_cannot_be_dropped(bucket, coll):
    coll.upsert("k", 1)
    with pytest.raises(InvalidArgumentException):
        bucket.collections().drop_scope("_default")
    assert coll.get("k").value == 1


def test_collection_named_default_cannot_be_created(bucket):
    bucket.collections().create_scope(SCOPE)
    with pytest.raises(InvalidArgumentException):
        bucket.collections().create_collection(SCOPE, "_default")


def test_duplicate_scope_and_collection_are_refused(bucket, users):
    manager = bucket.collections()
    with pytest.raises(ScopeAlreadyExistsException):
        manager.create_scope(SCOPE)
    with pytest.raises(CollectionAlreadyExistsException):
        manager.create_collection(SCOPE, COLLECTION)


def test_missing_scope_or_collection_in_management_calls(bucket):
    manager = bucket.collections()
    with pytest.raises(ScopeNotFoundException):
        manager.create_collection("nope", COLLECTION)
    with pytest.raises(ScopeNotFoundException):
        manager.drop_scope("nope")
    manager.create_scope(SCOPE)
    with pytest.raises(CollectionNotFoundException):
        manager.drop_collection(SCOPE, "nope")


@pytest.mark.parametrize(
    "name",
    ["", "_private", "%percent", "has space", "dot.ted", "slash/ed", "ümlaut", "x" * 252, "$dollar"],
    ids=["empty", "underscore", "percent", "space", "dot", "slash", "non_ascii", "too_long", "dollar"],
)
def test_bad_scope_or_collection_name_raises_invalid_argument(bucket, name):
    manager = bucket.collections()
    with pytest.raises(InvalidArgumentException):
        manager.create_scope(name)
    manager.create_scope(SCOPE)
    with pytest.raises(InvalidArgumentException):
        manager.create_collection(SCOPE, name)
    assert scope_map(bucket) == {"_default": {"_default"}, SCOPE: set()}


def test_longest_and_unusual_valid_names_are_accepted(bucket):
    manager = bucket.collections()
    long_name = "s" * 251
    manager.create_scope(long_name)
    manager.create_collection(long_name, "c-1_%x")
    manager.create_collection(long_name, "C" * 251)
    bucket.scope(long_name).collection("C" * 251).upsert("k", 1)
    assert scope_map(bucket)[long_name] == {"c-1_%x", "C" * 251}


def test_names_are_case_sensitive(bucket):
    manager = bucket.collections()
    manager.create_scope("Tenant")
    manager.create_scope("tenant")
    assert {"Tenant", "tenant"} <= set(scope_map(bucket))


# -- key limits (reference §5.2) ----------------------------------------------------------------


@pytest.mark.parametrize("where, limit", [("default", 250), ("named", 246)])
def test_key_length_limit_in_bytes(coll, users, probe, where, limit):
    target = coll if where == "default" else users
    target.upsert("k" * limit, {"v": 1})
    assert target.get("k" * limit).content_as[dict] == {"v": 1}
    before = probe.high_seqno_total()
    too_long = "k" * (limit + 1)
    for write in (
        lambda: target.upsert(too_long, {"v": 1}),
        lambda: target.insert(too_long, {"v": 1}),
        lambda: target.replace(too_long, {"v": 1}),
        lambda: target.binary().increment(too_long),
    ):
        with pytest.raises(InvalidArgumentException):
            write()
    with pytest.raises(InvalidArgumentException):
        target.get(too_long)
    assert probe.high_seqno_total() == before


def test_key_limit_counts_utf8_bytes_not_characters(coll, probe):
    coll.upsert("é" * 125, 1)  # 250 bytes
    before = probe.high_seqno_total()
    with pytest.raises(InvalidArgumentException):
        coll.upsert("é" * 126, 1)  # 252 bytes, 126 characters
    assert probe.high_seqno_total() == before


# -- buckets ------------------------------------------------------------------------------------


def test_create_list_use_and_drop_a_bucket(cluster):
    manager = cluster.buckets()
    manager.create_bucket(CreateBucketSettings(name="b2", num_replicas=0))
    names = {b.name for b in manager.get_all_buckets()}
    assert names == {"default", "b2"}
    settings = manager.get_bucket("b2")
    assert isinstance(settings, BucketSettings)
    assert settings.num_replicas == 0
    b2 = cluster.bucket("b2").default_collection()
    b2.upsert("k", {"in": "b2"})
    assert b2.get("k").content_as[dict] == {"in": "b2"}
    with pytest.raises(DocumentNotFoundException):
        cluster.bucket("default").default_collection().get("k")
    manager.drop_bucket("b2")
    assert {b.name for b in manager.get_all_buckets()} == {"default"}
    with pytest.raises(BucketNotFoundException):
        cluster.bucket("b2")
    with pytest.raises(BucketNotFoundException):
        b2.get("k")


def test_create_bucket_with_couchbase_style_settings(cluster):
    cluster.buckets().create_bucket(CreateBucketSettings(name="travel", ram_quota_mb=100, num_replicas=1))
    assert cluster.buckets().get_bucket("travel").num_replicas == 1
    cluster.bucket("travel").default_collection().upsert("k", 1)


def test_bucket_that_does_not_exist_raises_bucket_not_found(cluster):
    with pytest.raises(BucketNotFoundException):
        cluster.bucket("missing")
    with pytest.raises(BucketNotFoundException):
        cluster.buckets().get_bucket("missing")
    with pytest.raises(BucketNotFoundException):
        cluster.buckets().drop_bucket("missing")


def test_duplicate_bucket_raises_bucket_already_exists(cluster):
    manager = cluster.buckets()
    manager.create_bucket(CreateBucketSettings(name="b2", num_replicas=0))
    with pytest.raises(BucketAlreadyExistsException):
        manager.create_bucket(CreateBucketSettings(name="b2", num_replicas=0))
    with pytest.raises(BucketAlreadyExistsException):
        manager.create_bucket(CreateBucketSettings(name="default"))


def test_recreated_bucket_starts_empty(cluster):
    manager = cluster.buckets()
    manager.create_bucket(CreateBucketSettings(name="b2", num_replicas=0))
    cluster.bucket("b2").default_collection().upsert("k", 1)
    manager.drop_bucket("b2")
    manager.create_bucket(CreateBucketSettings(name="b2", num_replicas=0))
    assert cluster.bucket("b2").default_collection().exists("k").exists is False


@pytest.mark.parametrize("name", ["", "bad name", ".dot", "x" * 101, "sl/ash"])
def test_bad_bucket_name_raises_invalid_argument(cluster, name):
    with pytest.raises(InvalidArgumentException):
        cluster.buckets().create_bucket(CreateBucketSettings(name=name))
    assert {b.name for b in cluster.buckets().get_all_buckets()} == {"default"}


@pytest.mark.parametrize("num_replicas", [-1, 4])
def test_bucket_replicas_out_of_range_raise_invalid_argument(cluster, num_replicas):
    with pytest.raises(InvalidArgumentException):
        cluster.buckets().create_bucket(CreateBucketSettings(name="b2", num_replicas=num_replicas))
    assert {b.name for b in cluster.buckets().get_all_buckets()} == {"default"}

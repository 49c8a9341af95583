"""Whole-document CRUD through the public SDK on an embedded node (reference §1.2, §1.5, §1.6, §5.1).

Covers insert / get / upsert / replace / remove / exists with and without option objects, keyword
arguments overriding them, the Couchbase KV tutorial's flows written as the tutorial writes them,
CAS rules, mutation tokens, and get's `with_expiry` / `project`.
"""

from __future__ import annotations

import time
import zlib
from datetime import timedelta

import pytest

from durakv.collection import UpsertOptions as DeprecatedUpsertOptions
from durakv.durability import Durability, DurabilityLevel, ServerDurability
from durakv.exceptions import (
    CasMismatchException,
    DocumentExistsException,
    DocumentNotFoundException,
    InvalidArgumentException,
)
from durakv.options import (
    ExistsOptions,
    GetOptions,
    InsertOptions,
    RemoveOptions,
    ReplaceOptions,
    UpsertOptions,
)
from durakv.result import ExistsResult, GetResult, MutationResult, MutationToken

NUM_VBUCKETS = 64
DOC = {"foo": "bar", "bar": "foo"}


def vbucket_of(key: str) -> int:
    return ((zlib.crc32(key.encode()) >> 16) & 0x7FFF) % NUM_VBUCKETS


def expiry_seconds_from_now(result: GetResult) -> float:
    assert result.expiry_time is not None
    return result.expiry_time.timestamp() - time.time()


# -- the tutorial, literally ------------------------------------------------------------------


def test_tutorial_insert_returns_cas(coll):
    document = {"foo": "bar", "bar": "foo"}
    result = coll.insert("document-key", document)
    cas = result.cas
    assert isinstance(result, MutationResult)
    assert isinstance(cas, int) and cas > 0
    assert coll.get("document-key").cas == cas


def test_tutorial_insert_with_options_and_expiry_kwarg(coll):
    document = {"foo": "bar", "bar": "foo"}
    opts = InsertOptions(timeout=timedelta(seconds=5))
    result = coll.insert("document-key-opts", document, opts, expiry=timedelta(seconds=30))
    assert result.cas > 0
    got = coll.get("document-key-opts", GetOptions(with_expiry=True))
    assert got.content_as[dict] == document
    assert 25 <= expiry_seconds_from_now(got) <= 31


def test_tutorial_get_with_and_without_options(coll):
    coll.insert("document-key", DOC)
    result = coll.get("document-key")
    assert result.content_as[dict] == DOC
    opts = GetOptions(timeout=timedelta(seconds=5))
    result = coll.get("document-key", opts)
    assert result.content_as[dict] == DOC


def test_tutorial_upsert_then_get_content(coll):
    coll.insert("document-key", DOC)
    content = {"foobar": "barfoo"}
    coll.upsert("document-key", content)
    updated_doc = coll.get("document-key")
    assert updated_doc.content == content
    coll.upsert("document-key-1", DOC)
    assert coll.get("document-key-1").content == DOC


def test_tutorial_remove_with_wrong_cas_and_durability_raises_cas_mismatch(coll):
    stored = coll.insert("document-key", DOC)
    with pytest.raises(CasMismatchException):
        coll.remove("document-key", RemoveOptions(cas=12345, durability=ServerDurability(Durability.MAJORITY)))
    assert coll.get("document-key").cas == stored.cas
    removed = coll.remove(
        "document-key", RemoveOptions(cas=stored.cas, durability=ServerDurability(Durability.MAJORITY))
    )
    assert removed.cas != stored.cas
    assert coll.exists("document-key").exists is False


def test_tutorial_replace_then_get_shows_new_content(coll):
    coll.insert("document-key", {"before": True})
    result = coll.get("document-key")
    assert result.content == {"before": True}
    document = {"foo": "bar", "bar": "foo"}
    coll.replace("document-key", document)
    assert coll.get("document-key").content == document


def test_tutorial_upsert_with_majority_durability_via_deprecated_import_path(coll):
    # `from couchbase.collection import UpsertOptions` still works in the SDK (deprecated).
    document = dict(foo="bar", bar="foo")
    opts = DeprecatedUpsertOptions(durability=ServerDurability(Durability.MAJORITY))
    result = coll.upsert("document-key", document, opts)
    assert result.cas > 0
    assert coll.get("document-key").content_as[dict] == document


def test_tutorial_replace_with_cas_succeeds_only_with_current_cas(coll):
    first = coll.upsert("document-key", {"v": 1})
    second = coll.replace("document-key", {"v": 2}, ReplaceOptions(cas=first.cas))
    with pytest.raises(CasMismatchException):
        coll.replace("document-key", {"v": 3}, ReplaceOptions(cas=first.cas))
    got = coll.get("document-key")
    assert got.content_as[dict] == {"v": 2}
    assert got.cas == second.cas


# -- insert / get / exists --------------------------------------------------------------------


def test_insert_existing_key_raises_document_exists_and_keeps_value(coll):
    first = coll.insert("k", {"v": 1})
    with pytest.raises(DocumentExistsException):
        coll.insert("k", {"v": 2})
    got = coll.get("k")
    assert got.content_as[dict] == {"v": 1}
    assert got.cas == first.cas


def test_get_missing_key_raises_document_not_found(coll):
    with pytest.raises(DocumentNotFoundException):
        coll.get("missing")


def test_get_result_fields(coll):
    stored = coll.upsert("k", {"a": [1, 2, 3], "b": None})
    got = coll.get("k")
    assert isinstance(got, GetResult)
    assert got.cas == stored.cas
    assert got.key == "k"
    assert got.success is True
    assert got.value == {"a": [1, 2, 3], "b": None}
    assert got.expiry_time is None  # not asked for


def test_exists_reports_live_document_with_its_cas(coll):
    stored = coll.upsert("k", {"v": 1})
    result = coll.exists("k")
    assert isinstance(result, ExistsResult)
    assert result.exists is True
    assert result.cas == stored.cas


def test_exists_missing_key_is_false_not_an_error(coll):
    assert coll.exists("missing").exists is False
    assert coll.exists("missing", ExistsOptions(timeout=timedelta(seconds=1))).exists is False


def test_json_scalar_and_list_values_round_trip(coll):
    for key, value in [("s", "text"), ("i", 42), ("f", 1.5), ("b", True), ("l", [1, "two", None]), ("n", None)]:
        coll.upsert(key, value)
        assert coll.get(key).value == value


# -- upsert / replace / remove ----------------------------------------------------------------


def test_upsert_creates_then_overwrites_with_new_cas(coll):
    created = coll.upsert("k", {"v": 1})
    overwritten = coll.upsert("k", {"v": 2})
    assert created.cas != overwritten.cas
    got = coll.get("k")
    assert got.content_as[dict] == {"v": 2}
    assert got.cas == overwritten.cas


def test_replace_missing_key_raises_document_not_found(coll):
    with pytest.raises(DocumentNotFoundException):
        coll.replace("missing", {"v": 1})
    assert coll.exists("missing").exists is False


def test_replace_with_stale_cas_raises_cas_mismatch_and_keeps_value(coll):
    first = coll.upsert("k", {"v": 1})
    second = coll.upsert("k", {"v": 2})
    with pytest.raises(CasMismatchException):
        coll.replace("k", {"v": 3}, cas=first.cas)
    got = coll.get("k")
    assert got.content_as[dict] == {"v": 2}
    assert got.cas == second.cas


def test_replace_with_cas_of_missing_key_raises_document_not_found(coll):
    stored = coll.upsert("k", {"v": 1})
    coll.remove("k")
    with pytest.raises(DocumentNotFoundException):
        coll.replace("k", {"v": 2}, cas=stored.cas)


def test_remove_with_stale_cas_raises_cas_mismatch_and_keeps_document(coll):
    first = coll.upsert("k", {"v": 1})
    second = coll.upsert("k", {"v": 2})
    with pytest.raises(CasMismatchException):
        coll.remove("k", RemoveOptions(cas=first.cas))
    assert coll.get("k").cas == second.cas


def test_remove_leaves_exists_false_and_get_not_found(coll):
    coll.upsert("k", {"v": 1})
    removed = coll.remove("k")
    assert isinstance(removed, MutationResult)
    assert removed.cas > 0
    assert coll.exists("k").exists is False
    with pytest.raises(DocumentNotFoundException):
        coll.get("k")


def test_remove_missing_key_raises_document_not_found(coll):
    with pytest.raises(DocumentNotFoundException):
        coll.remove("missing")


def test_remove_twice_raises_document_not_found_the_second_time(coll):
    coll.upsert("k", {"v": 1})
    coll.remove("k")
    with pytest.raises(DocumentNotFoundException):
        coll.remove("k")


def test_insert_after_remove_succeeds(coll):
    coll.insert("k", {"v": 1})
    coll.remove("k")
    again = coll.insert("k", {"v": 2})
    got = coll.get("k")
    assert got.content_as[dict] == {"v": 2}
    assert got.cas == again.cas


def test_remove_leaves_a_tombstone_in_the_engine(coll, probe):
    coll.upsert("k", {"v": 1})
    removed = coll.remove("k")
    tomb = probe.document("k")
    assert tomb is not None
    assert tomb.deleted is True
    assert tomb.cas == removed.cas
    assert tomb.value == b""


def test_cas_changes_on_every_mutation(coll):
    cas_values = [
        coll.insert("k", {"v": 1}).cas,
        coll.upsert("k", {"v": 2}).cas,
        coll.replace("k", {"v": 3}).cas,
        coll.touch("k", timedelta(hours=1)).cas,
        coll.binary().increment("counter").cas,  # a different key, same vbucket clock or not
        coll.remove("k").cas,
        coll.insert("k", {"v": 4}).cas,
    ]
    assert len(set(cas_values)) == len(cas_values)
    assert coll.get("k").cas == cas_values[-1]


def test_cas_of_the_same_key_only_grows(coll):
    cas_values = [coll.upsert("k", {"v": i}).cas for i in range(20)]
    assert cas_values == sorted(cas_values)
    assert len(set(cas_values)) == 20


# -- options objects and keyword arguments (reference §1.2) ----------------------------------


def test_kwarg_overrides_the_same_field_of_the_options_object(coll):
    coll.upsert("k", {"v": 1}, UpsertOptions(expiry=timedelta(seconds=10)), expiry=timedelta(hours=1))
    got = coll.get("k", with_expiry=True)
    assert 3590 <= expiry_seconds_from_now(got) <= 3601


def test_kwarg_cas_overrides_stale_cas_in_options(coll):
    first = coll.upsert("k", {"v": 1})
    second = coll.upsert("k", {"v": 2})
    third = coll.replace("k", {"v": 3}, ReplaceOptions(cas=first.cas), cas=second.cas)
    assert coll.get("k").cas == third.cas


def test_kwarg_stale_cas_overrides_good_cas_in_options(coll):
    first = coll.upsert("k", {"v": 1})
    second = coll.upsert("k", {"v": 2})
    with pytest.raises(CasMismatchException):
        coll.replace("k", {"v": 3}, ReplaceOptions(cas=second.cas), cas=first.cas)


def test_kwarg_with_expiry_overrides_get_options(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(hours=1))
    assert coll.get("k", GetOptions(with_expiry=False), with_expiry=True).expiry_time is not None
    assert coll.get("k", GetOptions(with_expiry=True), with_expiry=False).expiry_time is None


def test_only_the_first_positional_options_object_is_used(coll):
    coll.upsert("k", {"v": 1}, UpsertOptions(expiry=timedelta(hours=1)), UpsertOptions(expiry=timedelta(hours=5)))
    got = coll.get("k", GetOptions(with_expiry=True), GetOptions(with_expiry=False))
    assert 3590 <= expiry_seconds_from_now(got) <= 3601


def test_options_object_is_not_modified_by_kwargs(coll):
    opts = UpsertOptions(expiry=timedelta(seconds=10))
    coll.upsert("k", {"v": 1}, opts, expiry=timedelta(hours=1))
    assert opts["expiry"] == timedelta(seconds=10)


def test_operations_accept_kwargs_without_options_object(coll):
    coll.insert("k", {"v": 1}, timeout=timedelta(seconds=2), expiry=timedelta(hours=1))
    stored = coll.upsert("k", {"v": 2}, timeout=timedelta(seconds=2))
    replaced = coll.replace("k", {"v": 3}, cas=stored.cas, timeout=timedelta(seconds=2))
    coll.remove("k", cas=replaced.cas, timeout=timedelta(seconds=2))
    assert coll.exists("k", timeout=timedelta(seconds=2)).exists is False


def test_durability_kwarg_overrides_options_durability(coll):
    # NONE in the options, PERSIST_TO_MAJORITY by keyword: the keyword wins (and succeeds on 0 replicas).
    opts = UpsertOptions(durability=ServerDurability(DurabilityLevel.NONE))
    result = coll.upsert("k", {"v": 1}, opts, durability=ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY))
    assert coll.get("k").cas == result.cas


# -- mutation tokens (reference §1.6, DESIGN §2) ---------------------------------------------


def test_mutation_token_names_vbucket_bucket_and_seqno(coll):
    result = coll.upsert("airline_10", {"v": 1})
    token = result.mutation_token()
    assert isinstance(token, MutationToken)
    assert token.partition_id == vbucket_of("airline_10")
    assert token.bucket_name == "default"
    assert isinstance(token.partition_uuid, int) and token.partition_uuid > 0
    assert token.sequence_number > 0
    assert token.as_tuple() == (token.partition_id, token.partition_uuid, token.sequence_number, "default")
    assert token.as_dict()["sequence_number"] == token.sequence_number


def test_mutation_token_partition_matches_crc32_formula_for_many_keys(coll):
    for i in range(40):
        key = f"key-{i}"
        assert coll.upsert(key, i).mutation_token().partition_id == vbucket_of(key)


def test_mutation_token_sequence_number_increases_per_vbucket(coll):
    # Keys in one vbucket share its seqno counter: every mutation takes the next seqno.
    target = vbucket_of("anchor")
    same_vb = [k for k in (f"k{i}" for i in range(2000)) if vbucket_of(k) == target][:5]
    assert len(same_vb) == 5
    seqnos = [coll.upsert("anchor", 0).mutation_token().sequence_number]
    for key in same_vb:
        seqnos.append(coll.upsert(key, 1).mutation_token().sequence_number)
        seqnos.append(coll.remove(key).mutation_token().sequence_number)
    assert seqnos == sorted(seqnos)
    assert len(set(seqnos)) == len(seqnos)
    assert seqnos[-1] - seqnos[0] == len(seqnos) - 1  # consecutive: nothing else wrote to that vbucket


def test_mutation_token_seqnos_of_different_vbuckets_are_independent(coll):
    a, b = "alpha", next(k for k in (f"b{i}" for i in range(100)) if vbucket_of(k) != vbucket_of("alpha"))
    first_a = coll.upsert(a, 1).mutation_token()
    for _ in range(5):
        coll.upsert(b, 1)
    second_a = coll.upsert(a, 2).mutation_token()
    assert second_a.sequence_number == first_a.sequence_number + 1
    assert second_a.partition_uuid == first_a.partition_uuid


# -- get with_expiry / project ----------------------------------------------------------------


def test_get_with_expiry_reports_expiry_time_near_now_plus_ttl(coll):
    coll.upsert("k", {"v": 1}, expiry=timedelta(seconds=100))
    got = coll.get("k", GetOptions(with_expiry=True))
    assert 95 <= expiry_seconds_from_now(got) <= 101
    assert got.content_as[dict] == {"v": 1}


def test_get_with_expiry_of_document_without_expiry_is_none(coll):
    coll.upsert("k", {"v": 1})
    assert coll.get("k", with_expiry=True).expiry_time is None


def test_get_project_returns_only_the_paths_asked_for(coll):
    coll.upsert("k", {"name": "Ann", "address": {"city": "Oslo", "zip": "0150"}, "tags": ["a"], "age": 40})
    got = coll.get("k", GetOptions(project=["name", "address.city"]))
    assert got.content_as[dict] == {"name": "Ann", "address": {"city": "Oslo"}}


def test_get_project_missing_path_is_absent(coll):
    coll.upsert("k", {"name": "Ann", "age": 40})
    got = coll.get("k", project=["name", "no_such_field"])
    assert got.content_as[dict] == {"name": "Ann"}


def test_get_project_with_expiry_together(coll):
    coll.upsert("k", {"name": "Ann", "age": 40}, expiry=timedelta(hours=1))
    got = coll.get("k", project=["age"], with_expiry=True)
    assert got.content_as[dict] == {"age": 40}
    assert 3590 <= expiry_seconds_from_now(got) <= 3601


@pytest.mark.parametrize("bad", ["name", [1, 2], ["name", None], ("name",)], ids=["str", "ints", "none", "tuple"])
def test_get_project_that_is_not_a_list_of_str_raises_invalid_argument(coll, bad):
    coll.upsert("k", {"name": "Ann"})
    with pytest.raises(InvalidArgumentException):
        coll.get("k", project=bad)

"""Option classes and the options/kwargs merge rule (reference §1.2, §5.4)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from durakv import collection as collection_module
from durakv.durability import ClientDurability, DurabilityLevel, PersistTo, ReplicateTo, ServerDurability
from durakv.exceptions import InvalidArgumentException
from durakv.options import (
    THIRTY_DAYS_IN_SECONDS,
    ClusterOptions,
    ClusterTimeoutOptions,
    DeltaValue,
    GetAndLockOptions,
    GetOptions,
    IncrementOptions,
    InsertOptions,
    ReplaceOptions,
    SignedInt64,
    UnsignedInt32,
    UpsertOptions,
    forward_args,
    timedelta_as_timestamp,
)

ALL_KV_OPTION_NAMES = [
    "GetOptions",
    "ExistsOptions",
    "InsertOptions",
    "UpsertOptions",
    "ReplaceOptions",
    "RemoveOptions",
    "TouchOptions",
    "GetAndTouchOptions",
    "GetAndLockOptions",
    "UnlockOptions",
    "GetAnyReplicaOptions",
    "GetAllReplicasOptions",
    "IncrementOptions",
    "DecrementOptions",
    "AppendOptions",
    "PrependOptions",
]


@pytest.mark.parametrize("name", ALL_KV_OPTION_NAMES)
def test_option_class_constructor_drops_none_values(name):
    import durakv.options as options_module

    cls = getattr(options_module, name)
    opts = cls(timeout=timedelta(seconds=1), transcoder=None, cas=None)
    assert isinstance(opts, dict)
    assert opts == {"timeout": timedelta(seconds=1)}


@pytest.mark.parametrize("name", ALL_KV_OPTION_NAMES)
def test_option_classes_importable_from_collection_module(name):
    import durakv.options as options_module

    assert getattr(collection_module, name) is getattr(options_module, name)


def test_forward_args_uses_only_first_options_object():
    args = forward_args({}, GetOptions(with_expiry=True), GetOptions(project=["a"]))
    assert args == {"with_expiry": True}


def test_forward_args_kwarg_overrides_options_field():
    opts = UpsertOptions(timeout=timedelta(seconds=5), preserve_expiry=False)
    args = forward_args({"timeout": timedelta(seconds=1), "preserve_expiry": True}, opts)
    assert args["timeout"] == 1.0
    assert args["preserve_expiry"] is True


def test_forward_args_does_not_mutate_options_object():
    opts = InsertOptions(timeout=timedelta(seconds=5))
    forward_args({"timeout": timedelta(seconds=1)}, opts)
    assert opts == {"timeout": timedelta(seconds=5)}


def test_forward_args_injected_positional_wins_over_options_object():
    # The collection injects lock_time (a positional argument) into kwargs before merging.
    opts = GetAndLockOptions(lock_time=timedelta(seconds=20))
    args = forward_args({"lock_time": timedelta(seconds=3)}, opts)
    assert args["lock_time"] == 3


def test_forward_args_unknown_keys_pass_through():
    assert forward_args({"span": "s", "custom": 1}) == {"span": "s", "custom": 1}


def test_forward_args_none_kwarg_counts_as_not_given():
    assert forward_args({"expiry": None, "timeout": None}, InsertOptions(timeout=timedelta(seconds=2))) == {
        "timeout": 2.0
    }


def test_forward_args_non_mapping_options_object_is_invalid_argument():
    with pytest.raises(InvalidArgumentException):
        forward_args({}, ServerDurability(DurabilityLevel.MAJORITY))


@pytest.mark.parametrize("bad", [5, 2.5, "1s"])
def test_forward_args_timeout_not_timedelta_is_invalid_argument(bad):
    with pytest.raises(InvalidArgumentException):
        forward_args({"timeout": bad})


def test_forward_args_negative_timeout_is_invalid_argument():
    with pytest.raises(InvalidArgumentException):
        forward_args({"timeout": timedelta(seconds=-1)})


def test_forward_args_zero_timeout_counts_as_not_given():
    assert "timeout" not in forward_args({"timeout": timedelta(0)})


@pytest.mark.parametrize("bad", [10, 10.0, "10"])
def test_forward_args_expiry_not_timedelta_is_invalid_argument(bad):
    with pytest.raises(InvalidArgumentException):
        forward_args({"expiry": bad})


@pytest.mark.parametrize("bad", ["12", 1.5, True, -1, 2**64, b"\x00"])
def test_forward_args_cas_not_unsigned_64_bit_int_is_invalid_argument(bad):
    with pytest.raises(InvalidArgumentException):
        forward_args({"cas": bad})


def test_forward_args_cas_bounds_accepted():
    assert forward_args({"cas": 2**64 - 1})["cas"] == 2**64 - 1
    assert forward_args({"cas": 0})["cas"] == 0


def test_forward_args_lock_time_not_timedelta_is_invalid_argument():
    with pytest.raises(InvalidArgumentException):
        forward_args({"lock_time": 5})


def test_forward_args_server_durability_becomes_int_level():
    args = forward_args({}, UpsertOptions(durability=ServerDurability(DurabilityLevel.PERSIST_TO_MAJORITY)))
    assert args["durability"] == 3
    assert type(args["durability"]) is int


def test_forward_args_client_durability_becomes_dict():
    durability = ClientDurability(replicate_to=ReplicateTo.TWO, persist_to=PersistTo.ONE)
    assert forward_args({"durability": durability})["durability"] == {"replicate_to": 2, "persist_to": 2}


def test_expiry_under_thirty_days_is_relative_seconds():
    assert timedelta_as_timestamp(timedelta(seconds=10), now=1_000_000) == 10
    assert timedelta_as_timestamp(timedelta(seconds=THIRTY_DAYS_IN_SECONDS - 1), now=1_000_000) == (
        THIRTY_DAYS_IN_SECONDS - 1
    )


def test_expiry_of_exactly_thirty_days_becomes_absolute():
    assert timedelta_as_timestamp(timedelta(days=30), now=1_000_000) == 1_000_000 + THIRTY_DAYS_IN_SECONDS


def test_expiry_beyond_thirty_days_becomes_absolute_now_plus_seconds():
    assert timedelta_as_timestamp(timedelta(days=365 * 50), now=1_700_000_000) == 1_700_000_000 + 365 * 50 * 86400


def test_expiry_zero_means_never():
    assert timedelta_as_timestamp(timedelta(0)) == 0


def test_expiry_fractional_seconds_truncated():
    assert timedelta_as_timestamp(timedelta(seconds=1.9)) == 1


def test_expiry_negative_is_invalid_argument():
    with pytest.raises(InvalidArgumentException):
        timedelta_as_timestamp(timedelta(seconds=-1))


def test_forward_args_long_expiry_uses_wall_clock():
    before = int(time.time())
    wire = forward_args({"expiry": timedelta(days=31)})["expiry"]
    after = int(time.time())
    assert before + 31 * 86400 <= wire <= after + 31 * 86400


def test_replace_options_fields_kept():
    opts = ReplaceOptions(cas=7, preserve_expiry=True, expiry=timedelta(seconds=3))
    assert opts["cas"] == 7
    assert opts.expiry == timedelta(seconds=3)


def test_get_options_defaults():
    assert GetOptions().with_expiry is False
    assert GetOptions().project == []


def test_options_timeout_builder_sets_field():
    assert GetOptions().timeout(timedelta(seconds=4)) == {"timeout": timedelta(seconds=4)}


def test_cluster_options_flattens_timeout_options():
    opts = ClusterOptions(
        "auth", timeout_options=ClusterTimeoutOptions(kv_timeout=timedelta(seconds=1), connect_timeout=None)
    )
    assert opts == {"authenticator": "auth", "kv_timeout": timedelta(seconds=1)}


def test_cluster_options_explicit_key_wins_over_timeout_options():
    opts = ClusterOptions(
        None,
        kv_timeout=timedelta(seconds=3),
        timeout_options=ClusterTimeoutOptions(kv_timeout=timedelta(seconds=1)),
    )
    assert opts["kv_timeout"] == timedelta(seconds=3)


@pytest.mark.parametrize(
    "cls, value",
    [
        (SignedInt64, -(2**63)),
        (SignedInt64, 2**63 - 1),
        (DeltaValue, 0),
        (DeltaValue, 2**63 - 1),
        (UnsignedInt32, 2**32 - 1),
    ],
)
def test_constrained_int_accepts_bounds(cls, value):
    assert int(cls(value)) == value


@pytest.mark.parametrize(
    "cls, value",
    [(SignedInt64, 2**63), (SignedInt64, -(2**63) - 1), (DeltaValue, -1), (DeltaValue, 1.5), (DeltaValue, True)],
)
def test_constrained_int_out_of_range_is_invalid_argument(cls, value):
    with pytest.raises(InvalidArgumentException):
        cls(value)


def test_constrained_int_equality_is_by_type_and_value():
    assert SignedInt64(5) == SignedInt64(5)
    assert SignedInt64(5) != DeltaValue(5)
    assert hash(SignedInt64(5)) == hash(SignedInt64(5))


def test_increment_options_carry_counter_values():
    opts = IncrementOptions(delta=DeltaValue(3), initial=SignedInt64(-1))
    assert opts["delta"] == DeltaValue(3)
    assert opts["initial"] == SignedInt64(-1)

"""Option classes and the rule that merges them with keyword arguments (Couchbase SDK 4.x).

Every option class is a `dict` whose constructor drops `None` values. An operation takes
`*options, **kwargs`; `forward_args` merges them exactly as Couchbase's `forward_args` does:
only the *first* positional options object is used (copied), keyword arguments override its
fields, and positional method arguments that are really options (`expiry` of touch,
`lock_time` of get_and_lock, `cas` of unlock) are injected into the keyword arguments by the
caller, so they win over both. During the merge:
- `timeout` must be a `timedelta` (else `InvalidArgumentException`); it becomes float seconds;
- `expiry` must be a `timedelta` (else `InvalidArgumentException`); it becomes the wire form
  of `timedelta_as_timestamp` (relative seconds below 30 days, else absolute unix seconds);
- `cas` must be an unsigned 64-bit int (else `InvalidArgumentException`);
- `lock_time` becomes whole seconds; `durability` becomes an int level, a client-durability
  dict, or is dropped (see `durakv.durability`). Unknown keys pass through untouched.

One leniency: a keyword argument whose value is `None` counts as not given (Couchbase would
try to convert it and fail).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .durability import DurabilityParser
from .exceptions import InvalidArgumentException

THIRTY_DAYS_IN_SECONDS = 30 * 24 * 60 * 60


def timedelta_as_timestamp(duration: timedelta, now: float | None = None) -> int:
    """The wire expiry for a duration: seconds if under 30 days, else `now + seconds`."""
    if not isinstance(duration, timedelta):
        raise InvalidArgumentException(f"expected a timedelta expiry, got {duration!r}")
    seconds = int(duration.total_seconds())
    if seconds < 0:
        raise InvalidArgumentException(f"expiry must not be negative: {duration!r}")
    if seconds < THIRTY_DAYS_IN_SECONDS:
        return seconds
    return seconds + int(time.time() if now is None else now)


def timedelta_as_seconds(duration: timedelta) -> float | None:
    """A timeout as float seconds; a zero timeout counts as not given (the default applies)."""
    if not isinstance(duration, timedelta):
        raise InvalidArgumentException(f"expected a timedelta timeout, got {duration!r}")
    seconds = duration.total_seconds()
    if seconds < 0:
        raise InvalidArgumentException(f"timeout must not be negative: {duration!r}")
    return seconds or None


def _lock_time_as_seconds(duration: timedelta) -> int:
    if not isinstance(duration, timedelta):
        raise InvalidArgumentException(f"expected a timedelta lock_time, got {duration!r}")
    return int(duration.total_seconds())


def _validate_cas(cas: int) -> int:
    if not isinstance(cas, int) or isinstance(cas, bool) or not 0 <= cas < 2**64:
        raise InvalidArgumentException(f"cas must be an unsigned 64-bit int, not {cas!r}")
    return cas


_CONVERSIONS = {
    "cas": _validate_cas,
    "timeout": timedelta_as_seconds,
    "expiry": timedelta_as_timestamp,
    "lock_time": _lock_time_as_seconds,
    "durability": DurabilityParser.parse_durability,
}


def forward_args(kwargs: Mapping[str, Any] | None, *options: Any) -> dict[str, Any]:
    """Merge the first options object with keyword arguments and convert the known fields."""
    first = options[0] if options else None
    if first and not isinstance(first, Mapping):
        raise InvalidArgumentException(f"expected an options object, got {first!r}")
    merged = dict(first) if first else {}
    if kwargs:
        merged.update((k, v) for k, v in kwargs.items() if v is not None)
    final: dict[str, Any] = {}
    for key, value in merged.items():
        if value is None:
            continue
        convert = _CONVERSIONS.get(key)
        if convert is not None:
            value = convert(value)
            if value is None:
                continue
        final[key] = value
    return final


class OptionsTimeout(dict):
    """Base of the KV option classes: a dict without `None` values, with a `timeout`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({k: v for k, v in kwargs.items() if v is not None})

    def timeout(self, timeout: timedelta) -> OptionsTimeout:
        self["timeout"] = timeout
        return self

    def span(self, span: Any) -> OptionsTimeout:
        self["span"] = span
        return self


class DurabilityOptionBlock(OptionsTimeout):
    """Options of operations that accept `durability` (and usually `expiry`)."""

    @property
    def expiry(self) -> timedelta | None:
        return self.get("expiry")


class GetOptions(OptionsTimeout):
    """get: timeout, with_expiry (bool), project (list of str), transcoder."""

    @property
    def with_expiry(self) -> bool:
        return self.get("with_expiry", False)

    @property
    def project(self) -> list[str]:
        return self.get("project", [])


class ExistsOptions(OptionsTimeout):
    """exists: timeout."""


class GetAndTouchOptions(OptionsTimeout):
    """get_and_touch: timeout, transcoder."""


class GetAndLockOptions(OptionsTimeout):
    """get_and_lock: timeout, transcoder."""


class GetAnyReplicaOptions(OptionsTimeout):
    """get_any_replica: timeout, transcoder, read_preference."""


class GetAllReplicasOptions(OptionsTimeout):
    """get_all_replicas: timeout, transcoder, read_preference."""


class TouchOptions(OptionsTimeout):
    """touch: timeout."""


class UnlockOptions(OptionsTimeout):
    """unlock: timeout."""


class InsertOptions(DurabilityOptionBlock):
    """insert: timeout, expiry, durability, transcoder."""


class UpsertOptions(DurabilityOptionBlock):
    """upsert: timeout, expiry, preserve_expiry, durability, transcoder."""


class ReplaceOptions(DurabilityOptionBlock):
    """replace: timeout, expiry, cas, preserve_expiry, durability, transcoder."""


class RemoveOptions(DurabilityOptionBlock):
    """remove: timeout, cas, durability."""


class AppendOptions(DurabilityOptionBlock):
    """append: timeout, durability, cas."""


class PrependOptions(DurabilityOptionBlock):
    """prepend: timeout, durability, cas."""


class IncrementOptions(DurabilityOptionBlock):
    """increment: timeout, expiry, durability, delta (DeltaValue, default 1), initial (SignedInt64, default 0)."""


class DecrementOptions(DurabilityOptionBlock):
    """decrement: timeout, expiry, durability, delta (DeltaValue, default 1), initial (SignedInt64, default 0)."""


class _MultiOptions(OptionsTimeout):
    """Multi-key options: the single-op fields plus per_key_options and return_exceptions."""


class GetMultiOptions(_MultiOptions):
    """get_multi options."""


class ExistsMultiOptions(_MultiOptions):
    """exists_multi options."""


class InsertMultiOptions(_MultiOptions):
    """insert_multi options."""


class UpsertMultiOptions(_MultiOptions):
    """upsert_multi options."""


class ReplaceMultiOptions(_MultiOptions):
    """replace_multi options."""


class RemoveMultiOptions(_MultiOptions):
    """remove_multi options."""


class WaitUntilReadyOptions(OptionsTimeout):
    """wait_until_ready: desired_state, service_types."""


class ClusterTimeoutOptions(dict):
    """Cluster-wide default timeouts (timedelta values): kv_timeout, kv_durable_timeout, ..."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("config_total_timeout", None)  # legacy, ignored as in Couchbase
        super().__init__({k: v for k, v in kwargs.items() if v is not None})

    def as_dict(self) -> dict[str, float]:
        return {k: v.total_seconds() if isinstance(v, timedelta) else v for k, v in self.items()}


class ClusterTracingOptions(dict):
    """Accepted for compatibility; durakv does not trace yet."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({k: v for k, v in kwargs.items() if v is not None})


class ClusterOptions(dict):
    """Cluster options: authenticator, timeout_options, transcoder, enable_mutation_tokens, ...

    As in Couchbase, `timeout_options` and `tracing_options` are flattened into this dict
    (an explicit keyword wins over the same key inside them).
    """

    def __init__(self, authenticator: Any = None, **kwargs: Any) -> None:
        if authenticator is not None:
            kwargs["authenticator"] = authenticator
        for nested in ("tracing_options", "timeout_options"):
            for key, value in dict(kwargs.pop(nested, None) or {}).items():
                kwargs.setdefault(key, value)
        super().__init__({k: v for k, v in kwargs.items() if v is not None})


class ConstrainedInt:
    """An int that must lie in [min(), max()]; counters take these instead of plain ints."""

    def __init__(self, value: Any) -> None:
        self.value = type(self).verify_value(value)

    @classmethod
    def verify_value(cls, item: Any) -> int:
        value = getattr(item, "value", item)
        if isinstance(value, bool) or not isinstance(value, int) or not cls.min() <= value <= cls.max():
            raise InvalidArgumentException(f"integer in [{cls.min()}, {cls.max()}] required, got {item!r}")
        return value

    @classmethod
    def is_valid(cls, item: Any) -> bool:
        return isinstance(item, cls)

    @classmethod
    def min(cls) -> int:
        raise NotImplementedError

    @classmethod
    def max(cls) -> int:
        raise NotImplementedError

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __neg__(self) -> int:
        return -self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.value))

    def __lt__(self, other: ConstrainedInt) -> bool:
        return self.value < other.value

    def __gt__(self, other: ConstrainedInt) -> bool:
        return self.value > other.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value})"


class SignedInt64(ConstrainedInt):
    """-2**63 .. 2**63-1: a counter's `initial` (negative = do not create the document)."""

    @classmethod
    def min(cls) -> int:
        return -0x8000000000000000

    @classmethod
    def max(cls) -> int:
        return 0x7FFFFFFFFFFFFFFF


class UnsignedInt32(ConstrainedInt):
    """0 .. 2**32-1."""

    @classmethod
    def min(cls) -> int:
        return 0

    @classmethod
    def max(cls) -> int:
        return 0xFFFFFFFF


class UnsignedInt64(ConstrainedInt):
    """0 .. 2**64-1."""

    @classmethod
    def min(cls) -> int:
        return 0

    @classmethod
    def max(cls) -> int:
        return 0xFFFFFFFFFFFFFFFF


class DeltaValue(ConstrainedInt):
    """0 .. 2**63-1: a counter's `delta`."""

    @classmethod
    def min(cls) -> int:
        return 0

    @classmethod
    def max(cls) -> int:
        return 0x7FFFFFFFFFFFFFFF

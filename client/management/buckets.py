"""Bucket management (`cluster.buckets()`), with the Couchbase SDK 4.x settings classes.

`BucketManager` turns settings into one `backend.manage(action, **args)` call:
"create_bucket" {settings: {name, num_replicas, num_vbuckets, durability_min_level, max_ttl_s}},
"drop_bucket" {name}, "get_bucket" {name} -> dict, "get_all_buckets" {} -> list of dicts,
"flush_bucket" {name}. A refusal comes back as `BackendStatusError` and is raised as the
matching exception (`BucketAlreadyExistsException`, `BucketDoesNotExistException`, ...).

durakv buckets are all of Couchbase's "couchbase" type; asking for an ephemeral or memcached
bucket raises `FeatureUnavailableException`. `num_vbuckets` is a durakv extra (Couchbase uses
1024; durakv defaults to 64). `num_replicas` / `num_vbuckets` left unset are sent as None and
the backend applies its defaults. Settings that have no meaning here (RAM quota, eviction,
compression, storage backend) are accepted and kept but not sent.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Any

from .._backend import Backend, BackendStatusError
from .._errors import management_exception
from ..durability import DurabilityLevel
from ..exceptions import FeatureUnavailableException, InvalidArgumentException


class BucketType(Enum):
    COUCHBASE = "membase"
    MEMCACHED = "memcached"
    EPHEMERAL = "ephemeral"
    UNKNOWN = "unknown"


class ConflictResolutionType(Enum):
    TIMESTAMP = "lww"
    SEQUENCE_NUMBER = "seqno"
    CUSTOM = "custom"
    UNKNOWN = "unknown"


class StorageBackend(Enum):
    UNDEFINED = "undefined"
    COUCHSTORE = "couchstore"
    MAGMA = "magma"


class EvictionPolicyType(Enum):
    NOT_RECENTLY_USED = "nruEviction"
    NO_EVICTION = "noEviction"
    FULL = "fullEviction"
    VALUE_ONLY = "valueOnly"


class CompressionMode(Enum):
    OFF = "off"
    PASSIVE = "passive"
    ACTIVE = "active"
    UNKNOWN = "unknown"


class BucketSettings(dict):
    """A bucket's settings: name, num_replicas, max_expiry, minimum_durability_level, ..."""

    def __init__(self, **kwargs: Any) -> None:
        name = kwargs.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgumentException("a bucket needs a non-empty name")
        if kwargs.get("bucket_type") == "couchbase":
            kwargs["bucket_type"] = BucketType.COUCHBASE
        # durakv spelling and Couchbase's deprecated max_ttl map onto Couchbase's names.
        if kwargs.get("minimum_durability_level") is None:
            kwargs["minimum_durability_level"] = kwargs.pop("durability_min_level", None)
        kwargs.pop("durability_min_level", None)
        if kwargs.get("max_expiry") is None:
            kwargs["max_expiry"] = kwargs.pop("max_ttl", None)
        kwargs.pop("max_ttl", None)
        super().__init__({k: v for k, v in kwargs.items() if v is not None})

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def bucket_type(self) -> BucketType | None:
        return self.get("bucket_type")

    @property
    def num_replicas(self) -> int | None:
        return self.get("num_replicas")

    @property
    def num_vbuckets(self) -> int | None:
        return self.get("num_vbuckets")

    @property
    def ram_quota_mb(self) -> int | None:
        return self.get("ram_quota_mb")

    @property
    def max_expiry(self) -> timedelta | int | float | None:
        return self.get("max_expiry")

    @property
    def max_ttl(self) -> timedelta | int | float | None:
        """**DEPRECATED** use `max_expiry`."""
        return self.get("max_expiry")

    @property
    def minimum_durability_level(self) -> DurabilityLevel | None:
        return self.get("minimum_durability_level")

    @property
    def durability_min_level(self) -> DurabilityLevel | None:
        """durakv spelling of `minimum_durability_level`."""
        return self.get("minimum_durability_level")

    @property
    def flush_enabled(self) -> bool | None:
        return self.get("flush_enabled")

    @property
    def replica_index(self) -> bool | None:
        return self.get("replica_index")

    @property
    def eviction_policy(self) -> EvictionPolicyType | None:
        return self.get("eviction_policy")

    @property
    def compression_mode(self) -> CompressionMode | None:
        return self.get("compression_mode")

    @property
    def storage_backend(self) -> StorageBackend | None:
        return self.get("storage_backend")

    @classmethod
    def from_backend(cls, data: dict[str, Any]) -> BucketSettings:
        """Settings from a backend's "get_bucket" answer."""
        level = data.get("durability_min_level")
        max_ttl_s = data.get("max_ttl_s")
        return cls(
            name=data["name"],
            bucket_type=BucketType.COUCHBASE,
            num_replicas=data.get("num_replicas"),
            num_vbuckets=data.get("num_vbuckets"),
            minimum_durability_level=None if level is None else DurabilityLevel(level),
            max_expiry=None if max_ttl_s is None else timedelta(seconds=max_ttl_s),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class CreateBucketSettings(BucketSettings):
    """Settings of a bucket to create (adds conflict_resolution_type)."""

    @property
    def conflict_resolution_type(self) -> ConflictResolutionType | None:
        return self.get("conflict_resolution_type")


def _seconds(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    raise InvalidArgumentException(f"{what} must be a timedelta or seconds, not {value!r}")


def _wire_settings(settings: BucketSettings) -> dict[str, Any]:
    bucket_type = settings.bucket_type
    if bucket_type is not None and bucket_type is not BucketType.COUCHBASE:
        raise FeatureUnavailableException(f"durakv buckets are all of type COUCHBASE, not {bucket_type}")
    level = settings.minimum_durability_level
    return {
        "name": settings.name,
        "num_replicas": settings.num_replicas,
        "num_vbuckets": settings.num_vbuckets,
        "durability_min_level": int(level) if level is not None else 0,
        "max_ttl_s": _seconds(settings.max_expiry, "max_expiry"),
    }


class BucketManager:
    """Create, drop and inspect buckets."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _manage(self, action: str, **args: Any) -> Any:
        try:
            return self._backend.manage(action, **args)
        except BackendStatusError as error:
            name = args.get("name") or args.get("settings", {}).get("name")
            raise management_exception(error.status, action, error.message, bucket_name=name) from None

    def create_bucket(self, settings: CreateBucketSettings, *options: Any, **kwargs: Any) -> None:
        if not isinstance(settings, BucketSettings):
            raise InvalidArgumentException("create_bucket takes a CreateBucketSettings")
        self._manage("create_bucket", settings=_wire_settings(settings))

    def drop_bucket(self, bucket_name: str, *options: Any, **kwargs: Any) -> None:
        self._manage("drop_bucket", name=bucket_name)

    def get_bucket(self, bucket_name: str, *options: Any, **kwargs: Any) -> BucketSettings:
        return BucketSettings.from_backend(self._manage("get_bucket", name=bucket_name))

    def get_all_buckets(self, *options: Any, **kwargs: Any) -> list[BucketSettings]:
        return [BucketSettings.from_backend(data) for data in self._manage("get_all_buckets")]

    def flush_bucket(self, bucket_name: str, *options: Any, **kwargs: Any) -> None:
        self._manage("flush_bucket", name=bucket_name)

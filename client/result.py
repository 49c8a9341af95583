"""Result objects returned by KV operations (shapes of the Couchbase Python SDK 4.x).

`GetResult` is built on every `get`, so it is cheap: `__slots__`, and the value is decoded
by the transcoder only on first access (then cached). Multi-key operations return
`MultiGetResult` / `MultiMutationResult` / ... with `all_ok`, `results` and `exceptions`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .exceptions import CouchbaseException

_UNDECODED = object()


class ContentProxy:
    """`result.content_as[T]` returns `T(value)`, e.g. `content_as[dict]`."""

    __slots__ = ("_content",)

    def __init__(self, content: Any) -> None:
        self._content = content

    def __getitem__(self, type_: Any) -> Any:
        return type_(self._content)


class Result:
    """Base: key, cas (0 if absent), flags, value, success (cas != 0)."""

    __slots__ = ("_cas", "_flags", "_key")

    def __init__(self, key: str | bytes | None, cas: int = 0, flags: int = 0) -> None:
        self._key = key
        self._cas = cas
        self._flags = flags

    @property
    def cas(self) -> int:
        return self._cas

    @property
    def flags(self) -> int:
        return self._flags

    @property
    def key(self) -> str | bytes | None:
        return self._key

    @property
    def value(self) -> Any:
        return None

    @property
    def success(self) -> bool:
        return self._cas != 0


class GetResult(Result):
    """A document read: `value` / `content_as[T]`, `cas`, `expiry_time` (if requested)."""

    __slots__ = ("_expiry", "_raw", "_transcoder", "_value")

    def __init__(
        self,
        key: str | bytes | None,
        cas: int,
        flags: int,
        raw: bytes,
        transcoder: Any,
        expiry: int | None = None,
        value: Any = _UNDECODED,
    ) -> None:
        self._key = key
        self._cas = cas
        self._flags = flags
        self._raw = raw
        self._transcoder = transcoder
        self._expiry = expiry
        self._value = value

    @property
    def value(self) -> Any:
        value = self._value
        if value is _UNDECODED:
            value = self._value = self._transcoder.decode_value(self._raw, self._flags)
        return value

    @property
    def content(self) -> Any:
        """**DEPRECATED** use `value` or `content_as`."""
        return self.value

    @property
    def content_as(self) -> ContentProxy:
        return ContentProxy(self.value)

    @property
    def expiry_time(self) -> datetime | None:
        """Naive local datetime of the expiry; None unless `with_expiry` was asked or if none is set."""
        if self._expiry:
            return datetime.fromtimestamp(self._expiry)
        return None

    @property
    def expiryTime(self) -> datetime | None:  # Couchbase's deprecated spelling
        """**DEPRECATED** use `expiry_time`."""
        return self.expiry_time

    def __repr__(self) -> str:
        return f"GetResult(key={self._key!r}, cas={self._cas}, value={self.value!r})"


class GetReplicaResult(GetResult):
    """A read from the active or a replica; `is_replica` says which."""

    __slots__ = ("_is_replica",)

    def __init__(self, *args: Any, is_replica: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._is_replica = is_replica

    @property
    def is_replica(self) -> bool:
        return self._is_replica

    @property
    def is_active(self) -> bool:
        """**DEPRECATED** use `is_replica`."""
        return not self._is_replica

    def __repr__(self) -> str:
        return f"GetReplicaResult(key={self._key!r}, cas={self._cas}, is_replica={self._is_replica})"


class ExistsResult(Result):
    """`exists` is False for a missing or deleted document."""

    __slots__ = ("_exists",)

    def __init__(self, key: str | bytes | None, exists: bool, cas: int = 0) -> None:
        super().__init__(key, cas)
        self._exists = exists

    @property
    def exists(self) -> bool:
        return self._exists

    def __repr__(self) -> str:
        return f"ExistsResult(key={self._key!r}, exists={self._exists}, cas={self._cas})"


class MutationToken:
    """Identifies a mutation: vbucket (partition) id and uuid, seqno, bucket."""

    __slots__ = ("_bucket_name", "_partition_id", "_partition_uuid", "_sequence_number")

    def __init__(self, partition_id: int, partition_uuid: int, sequence_number: int, bucket_name: str) -> None:
        self._partition_id = partition_id
        self._partition_uuid = partition_uuid
        self._sequence_number = sequence_number
        self._bucket_name = bucket_name

    @property
    def partition_id(self) -> int:
        return self._partition_id

    @property
    def partition_uuid(self) -> int:
        return self._partition_uuid

    @property
    def sequence_number(self) -> int:
        return self._sequence_number

    @property
    def bucket_name(self) -> str:
        return self._bucket_name

    def as_tuple(self) -> tuple[int, int, int, str]:
        return (self._partition_id, self._partition_uuid, self._sequence_number, self._bucket_name)

    def as_dict(self) -> dict[str, int | str]:
        return {
            "partition_id": self._partition_id,
            "partition_uuid": self._partition_uuid,
            "sequence_number": self._sequence_number,
            "bucket_name": self._bucket_name,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MutationToken) and self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return f"MutationToken({self.as_dict()})"


class MutationResult(Result):
    """A completed mutation: `cas` and `mutation_token()`."""

    __slots__ = ("_token",)

    def __init__(self, key: str | bytes | None, cas: int, token: MutationToken | None = None) -> None:
        super().__init__(key, cas)
        self._token = token

    def mutation_token(self) -> MutationToken | None:
        return self._token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self._key!r}, cas={self._cas}, token={self._token!r})"


class CounterResult(MutationResult):
    """An increment/decrement: `content` is the counter's new value."""

    __slots__ = ("_content",)

    def __init__(self, key: str | bytes | None, cas: int, content: int, token: MutationToken | None = None) -> None:
        super().__init__(key, cas, token)
        self._content = content

    @property
    def content(self) -> int:
        return self._content

    @property
    def value(self) -> int:
        return self._content


class MultiResult:
    """Per-key outcomes of a multi-key operation."""

    _result_type: type = Result

    def __init__(self, outcomes: dict[Any, Any]) -> None:
        self._outcomes = outcomes

    @property
    def all_ok(self) -> bool:
        return not any(isinstance(v, CouchbaseException) for v in self._outcomes.values())

    @property
    def results(self) -> dict[Any, Any]:
        return {k: v for k, v in self._outcomes.items() if not isinstance(v, CouchbaseException)}

    @property
    def exceptions(self) -> dict[Any, CouchbaseException]:
        return {k: v for k, v in self._outcomes.items() if isinstance(v, CouchbaseException)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._outcomes!r})"


class MultiGetResult(MultiResult):
    """`results`: key -> GetResult."""


class MultiExistsResult(MultiResult):
    """`results`: key -> ExistsResult."""


class MultiMutationResult(MultiResult):
    """`results`: key -> MutationResult."""


class MultiCounterResult(MultiResult):
    """`results`: key -> CounterResult."""

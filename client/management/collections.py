"""Scope and collection management (`bucket.collections()`), Couchbase SDK 4.x shapes.

`CollectionManager` makes one `backend.manage(action, **args)` call per method:
"create_scope"/"drop_scope" {bucket, scope}, "create_collection" {bucket, scope, collection,
max_expiry_s}, "drop_collection" {bucket, scope, collection}, "get_all_scopes" {bucket} ->
[{"name", "collections": [{"name", "max_expiry_s"}]}]. Refusals are raised as
`ScopeAlreadyExistsException`, `ScopeNotFoundException`, `CollectionAlreadyExistsException`,
`CollectionNotFoundException`, ...

`create_collection` takes the 4.x form `(scope_name, collection_name, settings=None)` and the
older `(CollectionSpec)` form; `drop_collection` likewise.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from .._backend import Backend, BackendStatusError
from .._errors import management_exception
from ..exceptions import InvalidArgumentException


class CreateCollectionSettings:
    """Settings of a collection to create: max_expiry (None = the bucket's; -1 s = never)."""

    def __init__(self, max_expiry: timedelta | None = None, history: bool | None = None) -> None:
        self._max_expiry = max_expiry
        self._history = history

    @property
    def max_expiry(self) -> timedelta | None:
        return self._max_expiry

    @property
    def history(self) -> bool | None:
        return self._history


class CollectionSpec:
    """A collection as `get_all_scopes` describes it (also the older create/drop argument)."""

    def __init__(
        self,
        collection_name: str,
        scope_name: str = "_default",
        max_expiry: timedelta | None = None,
        max_ttl: timedelta | None = None,
        history: bool | None = None,
    ) -> None:
        self._name = collection_name
        self._scope_name = scope_name
        self._max_expiry = max_expiry if max_expiry is not None else max_ttl
        self._history = history

    @property
    def name(self) -> str:
        return self._name

    @property
    def scope_name(self) -> str:
        return self._scope_name

    @property
    def max_expiry(self) -> timedelta | None:
        return self._max_expiry

    @property
    def max_ttl(self) -> timedelta | None:
        """**DEPRECATED** use `max_expiry`."""
        return self._max_expiry

    @property
    def history(self) -> bool | None:
        return self._history

    def __repr__(self) -> str:
        return f"CollectionSpec({self._scope_name}.{self._name}, max_expiry={self._max_expiry})"


class ScopeSpec:
    """A scope and its collections."""

    def __init__(self, name: str, collections: Iterable[CollectionSpec]) -> None:
        self._name = name
        self._collections = list(collections)

    @property
    def name(self) -> str:
        return self._name

    @property
    def collections(self) -> list[CollectionSpec]:
        return self._collections

    def __repr__(self) -> str:
        return f"ScopeSpec({self._name}, {self._collections})"


def _max_expiry_s(max_expiry: Any) -> int:
    if max_expiry is None:
        return 0
    if not isinstance(max_expiry, timedelta):
        raise InvalidArgumentException(f"max_expiry must be a timedelta, not {max_expiry!r}")
    return int(max_expiry.total_seconds())


class CollectionManager:
    """Create, drop and list the scopes and collections of one bucket."""

    def __init__(self, backend: Backend, bucket_name: str) -> None:
        self._backend = backend
        self._bucket_name = bucket_name

    def _manage(self, action: str, **args: Any) -> Any:
        try:
            return self._backend.manage(action, bucket=self._bucket_name, **args)
        except BackendStatusError as error:
            raise management_exception(
                error.status,
                action,
                error.message,
                bucket_name=self._bucket_name,
                scope_name=args.get("scope"),
                collection_name=args.get("collection"),
            ) from None

    def create_scope(self, scope_name: str, *options: Any, **kwargs: Any) -> None:
        self._manage("create_scope", scope=scope_name)

    def drop_scope(self, scope_name: str, *options: Any, **kwargs: Any) -> None:
        self._manage("drop_scope", scope=scope_name)

    def create_collection(self, *args: Any, **kwargs: Any) -> None:
        """create_collection(scope_name, collection_name, settings=None) or (CollectionSpec)."""
        if args and isinstance(args[0], CollectionSpec):
            spec = args[0]
            scope_name, collection_name, max_expiry = spec.scope_name, spec.name, spec.max_expiry
        else:
            scope_name = kwargs.pop("scope_name", None) if len(args) < 1 else args[0]
            collection_name = kwargs.pop("collection_name", None) if len(args) < 2 else args[1]
            settings = kwargs.pop("settings", None) if len(args) < 3 else args[2]
            if not isinstance(scope_name, str) or not isinstance(collection_name, str):
                raise InvalidArgumentException("create_collection(scope_name, collection_name, settings=None)")
            if settings is not None and not isinstance(settings, CreateCollectionSettings):
                raise InvalidArgumentException("settings must be a CreateCollectionSettings")
            max_expiry = settings.max_expiry if settings is not None else None
        self._manage(
            "create_collection",
            scope=scope_name,
            collection=collection_name,
            max_expiry_s=_max_expiry_s(max_expiry),
        )

    def drop_collection(self, *args: Any, **kwargs: Any) -> None:
        """drop_collection(scope_name, collection_name) or (CollectionSpec)."""
        if args and isinstance(args[0], CollectionSpec):
            scope_name, collection_name = args[0].scope_name, args[0].name
        else:
            scope_name = kwargs.pop("scope_name", None) if len(args) < 1 else args[0]
            collection_name = kwargs.pop("collection_name", None) if len(args) < 2 else args[1]
            if not isinstance(scope_name, str) or not isinstance(collection_name, str):
                raise InvalidArgumentException("drop_collection(scope_name, collection_name)")
        self._manage("drop_collection", scope=scope_name, collection=collection_name)

    def get_all_scopes(self, *options: Any, **kwargs: Any) -> list[ScopeSpec]:
        scopes = self._manage("get_all_scopes")
        return [
            ScopeSpec(
                scope["name"],
                [
                    CollectionSpec(
                        c["name"],
                        scope["name"],
                        max_expiry=None if c.get("max_expiry_s") is None else timedelta(seconds=c["max_expiry_s"]),
                    )
                    for c in scope.get("collections", ())
                ],
            )
            for scope in scopes
        ]

"""`Bucket`: a named set of scopes, opened with `cluster.bucket(name)` (Couchbase SDK 4.x shape)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .collection import Collection
from .management.collections import CollectionManager
from .scope import Scope

if TYPE_CHECKING:
    from .cluster import Cluster


class Bucket:
    """A bucket; `default_collection()` is where keys live unless collections are used."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self._cluster = cluster
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def default_scope(self) -> Scope:
        return Scope(self, Scope.default_name())

    def scope(self, name: str) -> Scope:
        return Scope(self, name)

    def collection(self, name: str) -> Collection:
        """A collection of the default scope."""
        return self.default_scope().collection(name)

    def default_collection(self) -> Collection:
        return self.default_scope().collection(Collection.default_name())

    def collections(self) -> CollectionManager:
        return CollectionManager(self._cluster._backend, self._name)

    def __repr__(self) -> str:
        return f"Bucket({self._name})"

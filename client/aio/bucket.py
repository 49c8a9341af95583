"""`durakv.aio.bucket.Bucket` (`AsyncBucket`): acouchbase's `Bucket`.

Opening a bucket does not wait: `await bucket.on_connect()` waits for the cluster's
bootstrap and raises `BucketNotFoundException` if the cluster has no such bucket (a
missing bucket also shows on the first operation, as the same exception).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..exceptions import BucketNotFoundException, KeyValueErrorContext
from .collection import AsyncCollection
from .management import CollectionManager
from .scope import AsyncScope

if TYPE_CHECKING:
    from .cluster import AsyncCluster


class AsyncBucket:
    """A bucket; `default_collection()` is where keys live unless collections are used."""

    def __init__(self, cluster: AsyncCluster, name: str) -> None:
        self._cluster = cluster
        self._name = name
        self._connect_ftr: Awaitable[None] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def loop(self) -> Any:
        return self._cluster.loop

    def on_connect(self) -> Awaitable[None]:
        """An awaitable that completes once the cluster is connected and has this bucket."""
        if self._connect_ftr is None:
            self._connect_ftr = self._cluster.loop.create_task(self._open())
        return self._connect_ftr

    async def _open(self) -> None:
        await self._cluster.on_connect()
        backend = self._cluster._backend
        if self._name not in backend.bucket_names():
            refresh = getattr(backend, "_refresh_recent", None)
            if refresh is not None:
                await refresh()
            if self._name not in backend.bucket_names():
                raise BucketNotFoundException(
                    f"bucket {self._name!r} does not exist", context=KeyValueErrorContext(bucket_name=self._name)
                )

    def default_scope(self) -> AsyncScope:
        return AsyncScope(self, AsyncScope.default_name())

    def scope(self, name: str) -> AsyncScope:
        return AsyncScope(self, name)

    def collection(self, name: str) -> AsyncCollection:
        """A collection of the default scope."""
        return self.default_scope().collection(name)

    def default_collection(self) -> AsyncCollection:
        return self.default_scope().collection(AsyncCollection.default_name())

    def collections(self) -> CollectionManager:
        return CollectionManager(self._cluster._backend, self._cluster.loop, self._name)

    def __repr__(self) -> str:
        return f"AsyncBucket({self._name})"


Bucket = AsyncBucket

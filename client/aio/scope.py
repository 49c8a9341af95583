"""`durakv.aio.scope.Scope` (`AsyncScope`): a namespace of collections within a bucket."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .collection import AsyncCollection

if TYPE_CHECKING:
    from .bucket import AsyncBucket


class AsyncScope:
    """A scope of a bucket; opening a collection does not contact the cluster."""

    def __init__(self, bucket: AsyncBucket, name: str) -> None:
        self._bucket = bucket
        self._name = name

    @staticmethod
    def default_name() -> str:
        return "_default"

    @property
    def name(self) -> str:
        return self._name

    @property
    def bucket_name(self) -> str:
        return self._bucket.name

    def collection(self, name: str) -> AsyncCollection:
        return AsyncCollection(self, name)

    def __repr__(self) -> str:
        return f"AsyncScope({self._bucket.name}.{self._name})"


Scope = AsyncScope

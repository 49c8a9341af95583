"""`Scope`: a namespace of collections within a bucket (Couchbase SDK 4.x shape).

Opening a collection does not contact the node; a missing collection shows up as
`CollectionNotFoundException` on the first operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .collection import Collection

if TYPE_CHECKING:
    from .bucket import Bucket


class Scope:
    """A scope of a bucket."""

    _collection_class: type = Collection  # durakv.aio's scope opens its asyncio collections

    def __init__(self, bucket: Bucket, name: str) -> None:
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

    def collection(self, name: str) -> Collection:
        return self._collection_class(self, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._bucket.name}.{self._name})"

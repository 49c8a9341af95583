"""`durakv.aio.scope.Scope` (`AsyncScope`): a namespace of collections within a bucket."""

from __future__ import annotations

from ..scope import Scope as _SyncScope
from .collection import AsyncCollection


class AsyncScope(_SyncScope):
    """A scope of a bucket, as durakv.scope.Scope; its collections are `AsyncCollection`s.
    Opening a collection does not contact the cluster."""

    _collection_class = AsyncCollection


Scope = AsyncScope

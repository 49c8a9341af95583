"""Bucket and collection management for asyncio code: `cluster.buckets()`, `bucket.collections()`.

The managers are the synchronous ones (`durakv.management.buckets.BucketManager`,
`durakv.management.collections.CollectionManager`: settings classes, argument forms,
validation, exception mapping), each call run on a worker thread (`asyncio.to_thread`)
whose `backend.manage` hands the Admin call back to the event loop and waits for it. The
loop itself never blocks; management calls are rare, so the thread hop costs nothing
that matters. (acouchbase keeps these in `acouchbase.management.buckets` /
`.collections`; durakv keeps both in this one module.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..management.buckets import BucketManager as _SyncBucketManager
from ..management.buckets import BucketSettings
from ..management.collections import CollectionManager as _SyncCollectionManager
from ..management.collections import ScopeSpec


class _BlockingBackend:
    """The synchronous managers' view of the asyncio backend (used from worker threads only)."""

    def __init__(self, backend: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._backend = backend
        self._loop = loop

    def manage(self, action: str, **args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(self._backend.manage(action, **args), self._loop).result()

    def bucket_names(self) -> list[str]:
        return self._backend.bucket_names()


class BucketManager:
    """Create, drop and inspect buckets (coroutines)."""

    def __init__(self, backend: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._sync = _SyncBucketManager(_BlockingBackend(backend, loop))

    async def create_bucket(self, settings: Any, *options: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self._sync.create_bucket, settings, *options, **kwargs)

    async def drop_bucket(self, bucket_name: str, *options: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self._sync.drop_bucket, bucket_name, *options, **kwargs)

    async def get_bucket(self, bucket_name: str, *options: Any, **kwargs: Any) -> BucketSettings:
        return await asyncio.to_thread(self._sync.get_bucket, bucket_name, *options, **kwargs)

    async def get_all_buckets(self, *options: Any, **kwargs: Any) -> list[BucketSettings]:
        return await asyncio.to_thread(self._sync.get_all_buckets, *options, **kwargs)

    async def flush_bucket(self, bucket_name: str, *options: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self._sync.flush_bucket, bucket_name, *options, **kwargs)


class CollectionManager:
    """Create, drop and list the scopes and collections of one bucket (coroutines)."""

    def __init__(self, backend: Any, loop: asyncio.AbstractEventLoop, bucket_name: str) -> None:
        self._sync = _SyncCollectionManager(_BlockingBackend(backend, loop), bucket_name)

    async def create_scope(self, scope_name: str, *options: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self._sync.create_scope, scope_name, *options, **kwargs)

    async def drop_scope(self, scope_name: str, *options: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self._sync.drop_scope, scope_name, *options, **kwargs)

    async def create_collection(self, *args: Any, **kwargs: Any) -> None:
        """create_collection(scope_name, collection_name, settings=None) or (CollectionSpec)."""
        await asyncio.to_thread(self._sync.create_collection, *args, **kwargs)

    async def drop_collection(self, *args: Any, **kwargs: Any) -> None:
        """drop_collection(scope_name, collection_name) or (CollectionSpec)."""
        await asyncio.to_thread(self._sync.drop_collection, *args, **kwargs)

    async def get_all_scopes(self, *options: Any, **kwargs: Any) -> list[ScopeSpec]:
        return await asyncio.to_thread(self._sync.get_all_scopes, *options, **kwargs)

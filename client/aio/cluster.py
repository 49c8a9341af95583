"""`durakv.aio.cluster.Cluster` (`AsyncCluster`): acouchbase's `Cluster`, over grpc.aio.

As in acouchbase, the constructor needs a running event loop and starts connecting in the
background; `await cluster.on_connect()` waits for that, and `await Cluster.connect(...)`
does both. Option merging, the connection string rules, the cluster-wide KV timeout and
transcoder are the synchronous `durakv.cluster.Cluster`'s (its helpers are called, not
copied). Only networked clusters are served here: an embedded node is synchronous
(`durakv.cluster.Cluster.embedded`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from ..cluster import REMOTE_SCHEMES, _merge_options
from ..cluster import Cluster as _SyncCluster
from ..exceptions import InvalidArgumentException, MissingConnectionException
from ..options import ClusterOptions, ClusterTimeoutOptions
from ..transcoder import Transcoder
from ._backend import AsyncRemoteBackend
from .bucket import AsyncBucket
from .management import BucketManager

__all__ = ["AsyncCluster", "Cluster", "ClusterOptions", "ClusterTimeoutOptions"]


class AsyncCluster:
    """A connection to a durakv cluster for asyncio code."""

    def __init__(self, connstr: str, *options: Any, **kwargs: Any) -> None:
        kwargs.pop("loop", None)  # acouchbase's argument: the running loop is the only one served
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("Event loop is not running.") from None
        if not isinstance(connstr, str) or not connstr.startswith(REMOTE_SCHEMES):
            raise InvalidArgumentException(
                f"connection string must start with {' or '.join(REMOTE_SCHEMES)}: {connstr!r}"
            )
        merged = _merge_options(options, kwargs)
        backend = AsyncRemoteBackend(connstr, merged)
        _SyncCluster._setup(self, backend, merged, connstr)  # type: ignore[arg-type]
        self._connect_ftr: asyncio.Task = backend.connect()

    @classmethod
    def from_backend(cls, backend: Any, *options: Any, **kwargs: Any) -> AsyncCluster:
        """A cluster over an existing asyncio backend object (tests, custom deployments)."""
        cluster = cls.__new__(cls)
        cluster._loop = asyncio.get_running_loop()
        _SyncCluster._setup(cluster, backend, _merge_options(options, kwargs), "")  # type: ignore[arg-type]
        connect = getattr(backend, "connect", None)
        cluster._connect_ftr = connect() if connect is not None else _done(cluster._loop)
        return cluster

    @staticmethod
    async def connect(connstr: str, *options: Any, **kwargs: Any) -> AsyncCluster:
        """Create a cluster and wait until it has bootstrapped."""
        cluster = AsyncCluster(connstr, *options, **kwargs)
        await cluster.on_connect()
        return cluster

    def on_connect(self) -> Awaitable[None]:
        """An awaitable that completes once the cluster configuration is in hand (or raises why not)."""
        return self._connect_ftr

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def connected(self) -> bool:
        return not self._closed and bool(getattr(self._backend, "connected", True))

    @property
    def transcoder(self) -> Transcoder:
        return self._transcoder

    def bucket(self, bucket_name: str) -> AsyncBucket:
        """A bucket; `await bucket.on_connect()` checks that it exists (BucketNotFoundException)."""
        self._check_open()
        return AsyncBucket(self, bucket_name)

    def buckets(self) -> BucketManager:
        self._check_open()
        return BucketManager(self._backend, self._loop)

    async def wait_until_ready(self, timeout: timedelta, *options: Any, **kwargs: Any) -> None:
        """Return once every node of the cluster serves requests (UnAmbiguousTimeoutException if not in time)."""
        self._check_open()
        if not isinstance(timeout, timedelta):
            raise InvalidArgumentException(f"timeout must be a timedelta, not {timeout!r}")
        wait = getattr(self._backend, "wait_until_ready", None)
        if wait is not None:
            await wait(timeout.total_seconds())

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise MissingConnectionException("the cluster is closed")

    async def __aenter__(self) -> AsyncCluster:
        await self.on_connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncCluster({self._connstr!r}, closed={self._closed})"


def _done(loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    future = loop.create_future()
    future.set_result(None)
    return future


Cluster = AsyncCluster

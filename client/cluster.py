"""`Cluster`: the entry point, shaped like the Couchbase Python SDK 4.x `Cluster`.

Two ways in, each getting its backend from `durakv._backends` (imported lazily, so importing
the SDK never loads the engine or gRPC):

    cluster = Cluster("durakv://127.0.0.1:7101", ClusterOptions(PasswordAuthenticator("u", "p")))
    cluster = Cluster.embedded("./data")   # an in-process node, no network

`Cluster.from_backend(backend, ...)` wraps any object implementing `durakv._backend.Backend`
(tests, custom deployments). Options merge as in Couchbase: the first `ClusterOptions`
positional object, then keyword arguments on top; `timeout_options` are flattened into it.
The cluster-wide defaults the KV layer reads are `kv_timeout` (2.5 s if unset),
`transcoder` (JSONTranscoder) and `enable_mutation_tokens` (True).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from ._backend import Backend
from ._retry import KV_TIMEOUT_DEFAULT_S
from .bucket import Bucket
from .exceptions import (
    BucketNotFoundException,
    InvalidArgumentException,
    KeyValueErrorContext,
    MissingConnectionException,
)
from .management.buckets import BucketManager
from .options import ClusterOptions, ClusterTimeoutOptions, timedelta_as_seconds
from .transcoder import JSONTranscoder, Transcoder

__all__ = ["Cluster", "ClusterOptions", "ClusterTimeoutOptions"]

REMOTE_SCHEMES = ("durakv://",)

# Keyword arguments of `Cluster.embedded` that configure the cluster, not the embedded node.
_TIMEOUT_KEYS = frozenset(
    {
        "bootstrap_timeout",
        "resolve_timeout",
        "connect_timeout",
        "kv_timeout",
        "kv_durable_timeout",
        "views_timeout",
        "query_timeout",
        "analytics_timeout",
        "search_timeout",
        "management_timeout",
        "dns_srv_timeout",
        "idle_http_connection_timeout",
        "config_idle_redial_timeout",
    }
)
_CLUSTER_KEYS = _TIMEOUT_KEYS | {
    "authenticator",
    "timeout_options",
    "tracing_options",
    "transcoder",
    "serializer",
    "enable_mutation_tokens",
}


def _merge_options(options: tuple, kwargs: dict[str, Any]) -> ClusterOptions:
    first = options[0] if options else None
    merged = ClusterOptions(**dict(first or {}))
    for key in ("timeout_options", "tracing_options"):
        for nested_key, value in dict(kwargs.get(key) or {}).items():
            merged[nested_key] = value
    merged.update(
        {k: v for k, v in kwargs.items() if v is not None and k not in ("timeout_options", "tracing_options")}
    )
    return merged


class Cluster:
    """A connection to a durakv cluster (or one embedded node)."""

    def __init__(self, connstr: str, *options: Any, **kwargs: Any) -> None:
        if not isinstance(connstr, str) or not connstr.startswith(REMOTE_SCHEMES):
            raise InvalidArgumentException(
                f"connection string must start with {' or '.join(REMOTE_SCHEMES)}: {connstr!r} "
                "(use Cluster.embedded(path) for an in-process node)"
            )
        merged = _merge_options(options, kwargs)
        from ._backends import open_remote_backend

        self._setup(open_remote_backend(connstr, merged), merged, connstr)

    @classmethod
    def connect(cls, connstr: str, *options: Any, **kwargs: Any) -> Cluster:
        return cls(connstr, *options, **kwargs)

    @classmethod
    def embedded(cls, path: str | os.PathLike[str], *options: Any, **kwargs: Any) -> Cluster:
        """An in-process node storing its data under `path`.

        Keyword arguments that are cluster options (`transcoder`, `kv_timeout`, ...) configure
        the cluster; the rest are passed to the embedded node.
        """
        cluster_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CLUSTER_KEYS}
        merged = _merge_options(options, cluster_kwargs)
        from ._backends import open_embedded_backend

        backend = open_embedded_backend(path, **kwargs)
        cluster = cls.__new__(cls)
        cluster._setup(backend, merged, os.fspath(path))
        return cluster

    @classmethod
    def from_backend(cls, backend: Backend, *options: Any, **kwargs: Any) -> Cluster:
        """A cluster over an existing backend object."""
        cluster = cls.__new__(cls)
        cluster._setup(backend, _merge_options(options, kwargs), "")
        return cluster

    def _setup(self, backend: Backend, options: ClusterOptions, connstr: str) -> None:
        transcoder = options.get("transcoder") or JSONTranscoder()
        if not isinstance(transcoder, Transcoder):
            raise InvalidArgumentException(f"not a transcoder: {transcoder!r}")
        kv_timeout = options.get("kv_timeout")
        if kv_timeout is not None and not isinstance(kv_timeout, timedelta):
            raise InvalidArgumentException(f"kv_timeout must be a timedelta, not {kv_timeout!r}")
        self._backend = backend
        self._options = options
        self._connstr = connstr
        self._transcoder = transcoder
        self._kv_timeout_s = (timedelta_as_seconds(kv_timeout) if kv_timeout else None) or KV_TIMEOUT_DEFAULT_S
        self._mutation_tokens = bool(options.get("enable_mutation_tokens", True))
        self._closed = False

    @property
    def connected(self) -> bool:
        return not self._closed

    @property
    def transcoder(self) -> Transcoder:
        return self._transcoder

    def bucket(self, bucket_name: str) -> Bucket:
        self._check_open()
        if bucket_name not in self._backend.bucket_names() and not self._bucket_appeared(bucket_name):
            raise BucketNotFoundException(
                f"bucket {bucket_name!r} does not exist", context=KeyValueErrorContext(bucket_name=bucket_name)
            )
        return Bucket(self, bucket_name)

    def _bucket_appeared(self, bucket_name: str) -> bool:
        """Perhaps created since the backend last looked: let it refresh once, then look again."""
        refresh = getattr(self._backend, "refresh_buckets", None)
        if refresh is None:
            return False
        refresh()
        return bucket_name in self._backend.bucket_names()

    def buckets(self) -> BucketManager:
        self._check_open()
        return BucketManager(self._backend)

    def wait_until_ready(self, timeout: timedelta, *options: Any, **kwargs: Any) -> None:
        """Return once the cluster can serve requests (at once for an embedded node)."""
        self._check_open()
        if not isinstance(timeout, timedelta):
            raise InvalidArgumentException(f"timeout must be a timedelta, not {timeout!r}")
        wait = getattr(self._backend, "wait_until_ready", None)
        if wait is not None:
            wait(timeout.total_seconds())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise MissingConnectionException("the cluster is closed")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cluster({self._connstr!r}, closed={self._closed})"

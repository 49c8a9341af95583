"""Bootstrap and configuration refresh: the cluster configuration the thread-based backend routes with.

Owns `ConfigRefresh`, the base of `RemoteBackend` (durakv._remote) that holds the current
`Routing` (an immutable value swapped whole under a lock) and keeps it fresh: bootstrap
from the nodes it knows and then the connection string's seeds, in turn, until one
answers (backing off up to `BOOTSTRAP_BACKOFF_MAX_S`, for at most the bootstrap timeout);
one daemon thread that polls every `config_poll_interval` (2.5 s, Couchbase's), and at
once, though not more often than `CONFIG_REFRESH_INTERVAL_MIN_S`, after NOT_MY_VBUCKET or
a vbucket without an active; a look before refusing a bucket created since the last poll;
and, after a management change, polling until the configuration that contains it arrives.
Also how a failed bootstrap or refused credentials surface (shared with the asyncio
backend).

Must never send a KV request, or judge which of two configurations is newer (`Routing`'s
`adopt_full`/`adopt_bucket` do, client/_routing.py). Refused credentials end a bootstrap
or a wait at once; any other failure is kept (`_config_error`) and the next address asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc

from durakv.proto import admin_pb2

from . import exceptions as exc
from ._backend import BackendStatusError, KVRequest
from ._channels import Node, NodePool
from ._errors import KVStatus
from ._remote_settings import Settings
from ._routing import BucketRoute, Routing, Version
from ._wire import bucket_not_found, rpc_failure

log = logging.getLogger("durakv.remote")

CONFIG_REFRESH_INTERVAL_MIN_S = 0.05  # refreshes asked for by NOT_MY_VBUCKET, at most this often
BOOTSTRAP_BACKOFF_MAX_S = 0.5
REVISION_WAIT_INTERVAL_S = 0.02  # after a configuration change, poll for it this often


def is_auth_failure(failure: Exception) -> bool:
    return isinstance(failure, BackendStatusError) and failure.status in (KVStatus.AUTH_ERROR, KVStatus.EACCESS)


def bootstrap_failure(seeds: Sequence[str], timeout_s: float, last: Exception | None) -> exc.CouchbaseException:
    return exc.UnAmbiguousTimeoutException(
        f"could not get the cluster configuration from any of {', '.join(seeds)} within {timeout_s:.1f} s"
        + (f" (last error: {last})" if last else ""),
        inner_cause=last,
    )


def authentication_failure(address: str, error: BackendStatusError) -> exc.AuthenticationException:
    return exc.AuthenticationException(f"the cluster refused the credentials ({error.message})", inner_cause=error)


class ConfigRefresh:
    """The configuration a backend routes with (`_routing`), fetched at bootstrap and kept fresh."""

    def __init__(self, settings: Settings, nodes: NodePool) -> None:
        self._settings = settings
        self._metadata = settings.metadata
        self._nodes = nodes
        self._lock = threading.Lock()  # swaps of _routing
        self._routing = Routing()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._refresh_lock = threading.Lock()
        self._refreshed_at = 0.0
        self._config_error: Exception | None = None
        self._poller: threading.Thread | None = None

    def _start_polling(self) -> None:
        self._poller = threading.Thread(target=self._poll, name="durakv-config-poll", daemon=True)
        self._poller.start()

    def _stop_polling(self) -> None:
        """Tell the poll thread to end (it does once its current round, if any, is over)."""
        self._stop.set()
        self._wake.set()

    def _join_poller(self) -> None:
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=1.0)

    def _node(self, address: str) -> Node:
        return self._nodes.get(address)

    def _route(self, bucket: str, timeout_s: float) -> BucketRoute:
        route = self._routing.bucket(bucket)
        if route is None:
            # Perhaps created since the last poll: look once before refusing.
            self._refresh_recent(timeout_s)
            route = self._routing.bucket(bucket)
            if route is None:
                raise bucket_not_found(bucket)
        return route

    def refresh_buckets(self) -> None:
        """Fetch a newer configuration now (unless one arrived a moment ago)."""
        self._refresh_recent(self._settings.connect_timeout_s)

    def _ensure_buckets(self, requests: Sequence[KVRequest]) -> None:
        if any(self._routing.bucket(r.bucket) is None for r in requests):
            self._refresh_recent(min(r.timeout_s for r in requests))

    def _refresh_recent(self, timeout_s: float) -> None:
        """Refresh now (waiting at most `timeout_s`) unless a refresh finished very recently."""
        timeout_s = min(timeout_s, self._settings.connect_timeout_s)
        self._refresh(time.monotonic() - CONFIG_REFRESH_INTERVAL_MIN_S, timeout_s)

    def _not_my_vbucket(self, bucket: str, response: Any) -> None:
        if response.HasField("config"):
            with self._lock:
                self._routing = self._routing.adopt_bucket(response.config, bucket)
        self._refresh_soon()

    def _adopt(self, config: Any) -> None:
        with self._lock:
            self._routing = self._routing.adopt_full(config)

    def _refresh_soon(self) -> None:
        self._wake.set()

    def _refresh(self, since: float, timeout_s: float) -> None:
        """Fetch a newer configuration unless one was fetched after `since` (one fetch at a time)."""
        with self._refresh_lock:
            if self._refreshed_at > since:
                return
            try:
                self._fetch_config(time.monotonic() + timeout_s)
            finally:
                self._refreshed_at = time.monotonic()

    def _config_addresses(self) -> list[str]:
        nodes = self._routing.node_addresses()
        return nodes + [seed for seed in self._settings.seeds if seed not in nodes]

    def _fetch_config(self, deadline: float) -> bool:
        """Ask the nodes (then the seeds) in turn for a configuration newer than ours; True if one answered."""
        version = self._routing.version
        request = admin_pb2.GetClusterConfigRequest(config_epoch=version[0], config_revision=version[1])
        for address in self._config_addresses():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                response = self._node(address).admin.GetClusterConfig(
                    request, timeout=min(remaining, self._settings.connect_timeout_s), metadata=self._metadata
                )
            except grpc.RpcError as error:
                failure = rpc_failure(error, address)
                if is_auth_failure(failure):
                    raise authentication_failure(address, failure) from None
                log.debug("configuration from %s failed: %s", address, failure)
                self._config_error = failure
                continue
            if response.status != KVStatus.SUCCESS:
                log.debug("configuration from %s refused: %s", address, response.message)
                self._config_error = BackendStatusError(response.status, f"{address}: {response.message}")
                continue
            if response.HasField("config"):
                self._adopt(response.config)
            return True
        return False

    def _bootstrap(self) -> None:
        timeout_s = self._settings.bootstrap_timeout_s
        deadline = time.monotonic() + timeout_s
        backoff_s = 0.01
        while True:
            try:
                if self._fetch_config(deadline) and self._routing.version > (0, 0):
                    return
            except exc.AuthenticationException:
                raise
            now = time.monotonic()
            if now >= deadline:
                raise bootstrap_failure(self._settings.seeds, timeout_s, self._config_error)
            time.sleep(min(backoff_s, deadline - now))
            backoff_s = min(backoff_s * 2, BOOTSTRAP_BACKOFF_MAX_S)

    def _poll(self) -> None:
        interval_s = self._settings.config_poll_interval_s
        while not self._stop.is_set():
            self._wake.wait(interval_s)
            if self._stop.is_set():
                return
            woken = self._wake.is_set()
            self._wake.clear()
            if woken:  # asked for by NOT_MY_VBUCKET: not more often than the floor
                wait_s = self._refreshed_at + CONFIG_REFRESH_INTERVAL_MIN_S - time.monotonic()
                if wait_s > 0 and self._stop.wait(wait_s):
                    return
            try:
                self._refresh(since=time.monotonic(), timeout_s=self._settings.connect_timeout_s)
            except Exception as error:  # keep polling whatever one round met
                log.warning("configuration refresh failed: %s", error)

    def bucket_names(self) -> list[str]:
        return self._routing.bucket_names()

    def num_replicas(self, bucket: str) -> int:
        return self._route(bucket, self._settings.connect_timeout_s).num_replicas

    def routing(self) -> Routing:
        """The configuration requests are routed with now (read-only)."""
        return self._routing

    def _await_version(self, version: Version, deadline: float) -> None:
        """After a change: poll until the routing has the configuration that contains it (or give up quietly)."""
        while self._routing.version < version and time.monotonic() < deadline:
            try:
                self._fetch_config(deadline)
            except exc.AuthenticationException:
                raise
            if self._routing.version < version:
                time.sleep(REVISION_WAIT_INTERVAL_S)

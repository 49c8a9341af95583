"""Fixtures for the SDK semantics tests: a real embedded node per test, used through the public SDK.

Every test gets its own data directory and `Cluster.embedded` node (closed at teardown), the
default collection (`coll`) and, on request, the named collection `tenant_agent_00.users`
(`users`), created through the collection manager exactly as an application would.

`probe` looks *under* the SDK, at the engine of one bucket (documents as stored, tombstones,
seqnos, locks, the WAL): the semantics tests use it only to check what the public API cannot
show -- that a refused request wrote nothing, that a tombstone exists, that group commit
batched fsyncs. `wait_until` polls a condition against a deadline; no test sleeps a fixed time.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from durakv.cluster import Cluster

SCOPE_NAME = "tenant_agent_00"
COLLECTION_NAME = "users"
NUM_VBUCKETS = 64
POLL_INTERVAL_S = 0.02
POLL_DEADLINE_S = 5.0


def vbucket_of(key: str, num_vbuckets: int = NUM_VBUCKETS) -> int:
    """Couchbase's key -> vbucket formula, written out here as the independent oracle."""
    return ((zlib.crc32(key.encode()) >> 16) & 0x7FFF) % num_vbuckets


def embedded_node(cluster: Cluster) -> Any:
    """The in-process engine node behind a `Cluster.embedded` (durakv.engine.embedded.EmbeddedNode)."""
    return cluster._backend.node


class EngineProbe:
    """Read-only views of one bucket's engine state, taken under the bucket's lock."""

    def __init__(self, cluster: Cluster, bucket_name: str = "default") -> None:
        self.embedded = embedded_node(cluster).bucket(bucket_name)
        self.engine = self.embedded.engine

    def _skey(self, key: str, scope: str, collection: str) -> bytes:
        from durakv.engine.document import store_key

        raw = key.encode()
        cid = self.engine.manifest.collection_id(scope, collection)
        return store_key(vbucket_of(key, self.engine.config.num_vbuckets), cid, raw)

    def document(self, key: str, scope: str = "_default", collection: str = "_default") -> Any:
        """The newest committed version (tombstones included) as the engine holds it, or None."""
        with self.embedded.lock:
            return self.engine.committed(self._skey(key, scope, collection))

    def lock_of(self, key: str, scope: str = "_default", collection: str = "_default") -> Any:
        with self.embedded.lock:
            skey = self._skey(key, scope, collection)
            return self.engine.vbuckets[vbucket_of(key, self.engine.config.num_vbuckets)].locks.get(skey)

    def high_seqno_total(self) -> int:
        """Sum of every vbucket's high seqno: unchanged iff nothing was written."""
        with self.embedded.lock:
            return sum(vb.high_seqno for vb in self.engine.vbuckets)

    @property
    def wal(self) -> Any:
        return self.embedded.wal


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def cluster(data_dir):
    cluster = Cluster.embedded(data_dir)
    yield cluster
    cluster.close()


@pytest.fixture
def bucket(cluster):
    return cluster.bucket("default")


@pytest.fixture
def coll(bucket):
    return bucket.default_collection()


@pytest.fixture
def users(bucket):
    manager = bucket.collections()
    manager.create_scope(SCOPE_NAME)
    manager.create_collection(SCOPE_NAME, COLLECTION_NAME)
    return bucket.scope(SCOPE_NAME).collection(COLLECTION_NAME)


@pytest.fixture
def probe(cluster) -> EngineProbe:
    return EngineProbe(cluster)


@pytest.fixture
def probe_for() -> type[EngineProbe]:
    """`probe_for(cluster, bucket_name)`: a probe on any bucket of any open cluster."""
    return EngineProbe


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """`wait_until(condition, deadline_s=5)`: poll until `condition()` is truthy; return its value."""

    def poll(condition: Callable[[], Any], deadline_s: float = POLL_DEADLINE_S, what: str = "condition") -> Any:
        deadline = time.monotonic() + deadline_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                pytest.fail(f"{what} not reached within {deadline_s} s")
            time.sleep(POLL_INTERVAL_S)

    return poll

"""Where SDK objects get their backend: an embedded node, or (later) a remote cluster.

`EmbeddedBackend` runs each `KVRequest` against an in-process engine node
(`durakv.engine.embedded`). It does one attempt and reports refusals as
`BackendStatusError` with the engine's KV status; retries and deadlines are the SDK's.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from ._backend import BackendStatusError, KVRequest, KVResponse, ObservedCopy, Op

_NODES: dict[str, Any] = {}
_NODES_LOCK = threading.Lock()


def open_embedded_backend(path: str | os.PathLike, **kwargs: Any) -> EmbeddedBackend:
    return EmbeddedBackend(path, **kwargs)


def open_remote_backend(connstr: str, options: Any) -> Any:
    """A networked cluster over gRPC (durakv._remote); bootstraps before returning."""
    from ._remote import RemoteBackend

    return RemoteBackend(connstr, options)


class BackendTimeoutError(Exception):
    """The node did not answer within the request's budget (the outcome is unknown)."""


class EmbeddedBackend:
    def __init__(self, path: str | os.PathLike, *, fsync_policy: str = "always") -> None:
        from durakv.engine.embedded import EmbeddedNode
        from durakv.engine.errors import KVError

        self._kv_error = KVError
        self.node = EmbeddedNode(path, fsync_policy=fsync_policy)

    # -- KV ------------------------------------------------------------------------------
    def execute(self, req: KVRequest) -> KVResponse | list[KVResponse]:
        try:
            bucket = self.node.buckets[req.bucket]
        except KeyError:
            raise BackendStatusError(0x1002, f"bucket {req.bucket!r} not found") from None
        try:
            return _HANDLERS[req.op](bucket, req)
        except self._kv_error as exc:
            raise BackendStatusError(int(exc.status), exc.message) from None
        except TimeoutError as exc:
            raise BackendTimeoutError(str(exc)) from None

    def reader(self, bucket: str, scope: str, collection: str):
        """A direct get for one collection: one attempt, engine errors raised as they are."""
        target = self.node.buckets.get(bucket)
        if target is None:
            return None
        lock, engine, now, buckets = target.lock, target.engine, time.time, self.node.buckets

        def read(key: bytes):
            if buckets.get(bucket) is not target:
                raise LookupError("the bucket was dropped")  # the caller takes the general path
            with lock:
                return engine.get(scope, collection, key, now())

        return read

    def bucket_names(self) -> list[str]:
        return list(self.node.buckets)

    def num_replicas(self, bucket: str) -> int:
        return self.node.bucket(bucket).config.num_replicas

    def observe(self, bucket: str, vbucket: int, vbucket_uuid: int) -> list[ObservedCopy]:
        """The one copy an embedded node holds: the active's received and persisted seqnos."""
        target = self.node.bucket(bucket)
        with target.lock:
            vb = target.engine.vbuckets[vbucket]
            return [ObservedCopy(True, vb.uuid, vb.high_seqno, vb.persisted_seqno)]

    # -- management -------------------------------------------------------------------------
    def manage(self, action: str, **args: Any) -> Any:
        from durakv.engine.bucket import BucketConfig

        try:
            if action == "create_bucket":
                s = args["settings"]
                self.node.create_bucket(
                    BucketConfig(
                        name=s["name"],
                        num_vbuckets=s.get("num_vbuckets") or 64,
                        num_replicas=s.get("num_replicas") or 0,
                        durability_min_level=s.get("durability_min_level") or 0,
                        max_ttl_s=s.get("max_ttl_s") or 0,
                    )
                )
                return None
            if action == "drop_bucket":
                return self.node.drop_bucket(args["name"])
            if action == "get_bucket":
                return self.node.bucket(args["name"]).config.to_dict()
            if action == "get_all_buckets":
                return [b.config.to_dict() for b in self.node.buckets.values()]
            bucket = self.node.bucket(args["bucket"])
            if action == "get_all_scopes":
                with bucket.lock:
                    return bucket.engine.manifest.describe()
            change = {
                "create_scope": lambda m: m.create_scope(args["scope"]),
                "drop_scope": lambda m: m.drop_scope(args["scope"]),
                "create_collection": lambda m: m.create_collection(
                    args["scope"], args["collection"], args.get("max_expiry_s") or 0
                ),
                "drop_collection": lambda m: m.drop_collection(args["scope"], args["collection"]),
            }.get(action)
            if change is None:
                raise ValueError(f"unknown management action {action!r}")
            return bucket.call("change_manifest", change)
        except self._kv_error as exc:
            raise BackendStatusError(int(exc.status), exc.message) from None

    def close(self) -> None:
        self.node.close()


# -- one handler per operation: KVRequest -> engine call -> KVResponse ------------------------


_mutation = KVResponse.of_mutation


def _read(outcome, with_expiry: bool = True) -> KVResponse:
    return KVResponse(
        cas=outcome.cas,
        value=outcome.value,
        flags=outcome.flags,
        expiry=outcome.expiry if with_expiry else 0,
        vbucket=outcome.vbucket,
    )


def _get(b, r):
    # The hot path: straight into the engine under the bucket lock. A ReadOutcome has the
    # fields a KVResponse for get needs (value, flags, cas, expiry, vbucket).
    with b.lock:
        return b.engine.get(r.scope, r.collection, r.key, time.time())


def _exists(b, r):
    exists, cas = b.call("exists", r.scope, r.collection, r.key, time.time())
    return KVResponse(cas=cas, exists=exists)


def _durable(r) -> dict[str, Any]:
    return {"level": r.durability_level, "timeout_ms": r.durability_timeout_ms}


def _insert(b, r):
    return _mutation(b.call("insert", r.scope, r.collection, r.key, r.value, r.flags, time.time(), expiry=r.expiry,
                            wait_s=r.timeout_s, **_durable(r)))  # fmt: skip


def _upsert(b, r):
    return _mutation(b.call("upsert", r.scope, r.collection, r.key, r.value, r.flags, time.time(), expiry=r.expiry,
                            preserve_expiry=r.preserve_expiry, wait_s=r.timeout_s, **_durable(r)))  # fmt: skip


def _replace(b, r):
    return _mutation(b.call("replace", r.scope, r.collection, r.key, r.value, r.flags, time.time(), cas=r.cas,
                            expiry=r.expiry, preserve_expiry=r.preserve_expiry, wait_s=r.timeout_s,
                            **_durable(r)))  # fmt: skip


def _remove(b, r):
    return _mutation(b.call("remove", r.scope, r.collection, r.key, time.time(), cas=r.cas, wait_s=r.timeout_s,
                            **_durable(r)))  # fmt: skip


def _touch(b, r):
    return _mutation(b.call("touch", r.scope, r.collection, r.key, r.expiry, time.time()))


def _get_and_touch(b, r):
    return _read(b.call("get_and_touch", r.scope, r.collection, r.key, r.expiry, time.time()))


def _get_and_lock(b, r):
    return _read(b.call("get_and_lock", r.scope, r.collection, r.key, r.lock_time_s, time.time()))


def _unlock(b, r):
    b.call("unlock", r.scope, r.collection, r.key, r.cas, time.time())
    return KVResponse()


def _counter(sign: int):
    def handler(b, r):
        return _mutation(b.call("counter", r.scope, r.collection, r.key, sign * r.delta, r.initial, time.time(),
                                expiry=r.expiry, wait_s=r.timeout_s, **_durable(r)))  # fmt: skip

    return handler


def _concat(prepend: bool):
    def handler(b, r):
        return _mutation(b.call("concat", r.scope, r.collection, r.key, r.value, time.time(), prepend=prepend,
                                cas=r.cas, wait_s=r.timeout_s, **_durable(r)))  # fmt: skip

    return handler


def _get_any_replica(b, r):
    # An embedded node holds only the active copy; it answers as the active.
    return _read(b.call("get", r.scope, r.collection, r.key, time.time()))


def _get_all_replicas(b, r):
    return [_get_any_replica(b, r)]


_HANDLERS = {
    Op.GET: _get,
    Op.EXISTS: _exists,
    Op.INSERT: _insert,
    Op.UPSERT: _upsert,
    Op.REPLACE: _replace,
    Op.REMOVE: _remove,
    Op.TOUCH: _touch,
    Op.GET_AND_TOUCH: _get_and_touch,
    Op.GET_AND_LOCK: _get_and_lock,
    Op.UNLOCK: _unlock,
    Op.INCREMENT: _counter(1),
    Op.DECREMENT: _counter(-1),
    Op.APPEND: _concat(False),
    Op.PREPEND: _concat(True),
    Op.GET_ANY_REPLICA: _get_any_replica,
    Op.GET_ALL_REPLICAS: _get_all_replicas,
}

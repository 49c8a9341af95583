"""Per-node KV batches for the multi-ops: which requests travel together in one KV.Batch.

Owns the grouping of requests by the node serving their key (in request order, split so
each batch fits one message: `BATCH_OPS_MAX` operations, `BATCH_SIZE_MAX` bytes), the
outcomes known before sending (unknown bucket, no active node, a value the wire cannot
carry), and matching a Batch's answers to its requests by opaque. Shared by the
thread-based and the asyncio backends.

Pure: it never sends a batch, waits for one or retries anything; replica reads are left
to be run one by one (`BatchPlan.singles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from durakv.proto import kv_pb2

from ._backend import BackendStatusError, KVRequest
from ._routing import BucketRoute, Routing
from ._wire import REPLICA_OPS, WIRE, bucket_not_found, encode, no_active, op_response

BATCH_OPS_MAX = 512  # operations in one KV.Batch
BATCH_SIZE_MAX = 16 * 1024 * 1024  # bytes of requests in one KV.Batch (the node takes 32 MiB)


@dataclass
class BatchPlan:
    """Which requests go in which KV.Batch; `early` holds outcomes known before sending."""

    batches: list[tuple[str, list[int], Any, float]]  # (address, request indexes, BatchRequest, timeout_s)
    early: dict[int, Exception]
    singles: list[int]  # replica reads: run one by one through execute
    routes: dict[int, BucketRoute]


def plan_batches(requests: Sequence[KVRequest], routing: Routing) -> BatchPlan:
    """Group requests by the node serving their key, in request order, split to fit one message each."""
    groups: dict[str, list[tuple[int, Any]]] = {}
    early: dict[int, Exception] = {}
    singles: list[int] = []
    routes: dict[int, BucketRoute] = {}
    for index, req in enumerate(requests):
        if req.op in REPLICA_OPS:
            singles.append(index)
            continue
        route = routing.bucket(req.bucket)
        if route is None:
            early[index] = bucket_not_found(req.bucket)
            continue
        vbucket = route.vbucket(req.key)
        address = route.active(vbucket)
        if address is None:
            early[index] = no_active(req, vbucket)
            continue
        try:
            message = encode(req, vbucket, route.version)
        except BackendStatusError as error:
            early[index] = error
            continue
        routes[index] = route
        groups.setdefault(address, []).append((index, message))
    batches = []
    for address, items in groups.items():
        chunk: list[tuple[int, Any]] = []
        size = 0
        for index, message in items:
            message_size = message.ByteSize() + 16
            if chunk and (len(chunk) >= BATCH_OPS_MAX or size + message_size > BATCH_SIZE_MAX):
                batches.append(_batch(address, chunk, requests))
                chunk, size = [], 0
            chunk.append((index, message))
            size += message_size
        if chunk:
            batches.append(_batch(address, chunk, requests))
    return BatchPlan(batches, early, singles, routes)


def _batch(address: str, chunk: list[tuple[int, Any]], requests: Sequence[KVRequest]) -> tuple:
    ops = [kv_pb2.OpRequest(opaque=index, **{WIRE[requests[index].op][2]: message}) for index, message in chunk]
    timeout_s = max(requests[index].timeout_s for index, _ in chunk)
    return address, [index for index, _ in chunk], kv_pb2.BatchRequest(ops=ops), timeout_s


def batch_answers(indexes: list[int], response: Any) -> dict[int, Any]:
    """The inner response of each request of one Batch, matched by opaque."""
    by_opaque = {item.opaque: op_response(item) for item in response.ops}
    return {index: by_opaque.get(index) for index in indexes}

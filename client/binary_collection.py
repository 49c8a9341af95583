"""`BinaryCollection` (`collection.binary()`): counters and raw append/prepend.

Counter options follow the Couchbase Python SDK exactly, traps included:
- `delta` must be a `DeltaValue` and `initial` a `SignedInt64`; a plain (non-zero) int is an
  `InvalidArgumentException`. A falsy value (unset, or a plain 0) means the default.
- With no `initial`, `SignedInt64(0)` is used, so incrementing or decrementing a missing key
  *creates* it with value 0. A negative `initial` means "do not create": a missing key then
  raises `DocumentNotFoundException`.
- Counters do not get the 10 s durable default timeout that other durable writes get.
`append`/`prepend` take str (sent as UTF-8), bytes or bytearray, and raise `ValueError` for
anything else, as Couchbase does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backend import Op
from ._retry import execute
from .options import DeltaValue, SignedInt64, forward_args
from .result import CounterResult, MutationResult
from .transcoder import FMT_BYTES

if TYPE_CHECKING:
    from .collection import Collection


class BinaryCollection:
    """Binary operations on the documents of one collection."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    def increment(self, key: str, *opts: Any, **kwargs: Any) -> CounterResult:
        return self._counter(Op.INCREMENT, key, opts, kwargs)

    def decrement(self, key: str, *opts: Any, **kwargs: Any) -> CounterResult:
        return self._counter(Op.DECREMENT, key, opts, kwargs)

    def append(self, key: str, value: str | bytes | bytearray, *opts: Any, **kwargs: Any) -> MutationResult:
        return self._concat(Op.APPEND, key, value, opts, kwargs)

    def prepend(self, key: str, value: str | bytes | bytearray, *opts: Any, **kwargs: Any) -> MutationResult:
        return self._concat(Op.PREPEND, key, value, opts, kwargs)

    def _counter(self, op: Op, key: str, opts: tuple, kwargs: dict[str, Any]) -> CounterResult:
        coll = self._collection
        args = forward_args(kwargs, *opts)
        delta = args.get("delta") or DeltaValue(1)
        initial = args.get("initial") or SignedInt64(0)
        if not DeltaValue.is_valid(delta):
            raise coll._invalid(key, "delta must be a DeltaValue")
        if not SignedInt64.is_valid(initial):
            raise coll._invalid(key, "initial must be a SignedInt64")
        request = coll._request(op, key, args)
        request.delta = int(delta)
        request.initial = int(initial) if int(initial) >= 0 else None
        request.expiry = args.get("expiry", 0)
        response = execute(coll._backend, request)
        return CounterResult(key, response.cas, response.counter, coll._token(response))

    def _concat(self, op: Op, key: str, value: Any, opts: tuple, kwargs: dict[str, Any]) -> MutationResult:
        coll = self._collection
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, bytearray):
            value = bytes(value)
        if not isinstance(value, bytes):
            raise ValueError("append/prepend take str, bytes or bytearray")
        args = forward_args(kwargs, *opts)
        request = coll._request(op, key, args)
        request.value = value
        request.flags = FMT_BYTES
        request.cas = args.get("cas", 0)
        response = execute(coll._backend, request)
        return MutationResult(key, response.cas, coll._token(response))

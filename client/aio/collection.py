"""`durakv.aio.collection.Collection` (`AsyncCollection`): the KV API as coroutines.

Every method behaves exactly as the synchronous `durakv.collection.Collection` method of
the same name, because it *is* that method, run in two synchronous steps around one
awaited step:
1. the synchronous method runs on a private copy of a synchronous `Collection` whose
   backend only records the request it is handed (options merged, key validated, value
   transcoded, timeouts and durability applied) and stops the method there;
2. that request runs on the asyncio backend through the asyncio retry loop
   (durakv.aio._retry: the synchronous rules, with `asyncio.sleep`), concurrently with
   whatever else the event loop has in flight;
3. the synchronous method runs again on a copy whose backend hands it that outcome, and
   builds the result (or raises, or -- for `exists` -- turns DocumentNotFound into
   `exists=False`) as it always does.
The request is built twice (a value is transcoded twice); in exchange nothing of the
synchronous SDK's option handling, results or exception mapping is restated here.

The multi-key methods (`get_multi`, `upsert_multi`, ...), which acouchbase does not have,
send one attempt per key in one KV.Batch per node, then retry each key on its own.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from .. import _retry
from .._backend import KVRequest, Op
from .._remote import Deferred, Recorder, Replay
from ..collection import Collection as _SyncCollection
from ..exceptions import CouchbaseException
from ..result import (
    ExistsResult,
    GetReplicaResult,
    GetResult,
    MultiExistsResult,
    MultiGetResult,
    MultiMutationResult,
    MutationResult,
)
from ._retry import execute
from .binary_collection import AsyncBinaryCollection


class AsyncCollection:
    """A collection of documents, addressed by key; every operation is a coroutine."""

    def __init__(self, scope: Any, name: str) -> None:
        self._scope = scope
        self._name = name
        # Builds requests and results; its own backend is never called.
        self._sync = _SyncCollection(scope, name)
        self._backend = self._sync._backend
        self._binary: AsyncBinaryCollection | None = None

    @staticmethod
    def default_name() -> str:
        return "_default"

    @property
    def name(self) -> str:
        return self._name

    @property
    def scope_name(self) -> str:
        return self._sync.scope_name

    @property
    def bucket_name(self) -> str:
        return self._sync.bucket_name

    def binary(self) -> AsyncBinaryCollection:
        if self._binary is None:
            self._binary = AsyncBinaryCollection(self)
        return self._binary

    # --- the three steps --------------------------------------------------------------------
    def _record(self, call: Callable[[_SyncCollection], Any]) -> tuple[KVRequest | None, Any]:
        """Step 1: (the request `call` builds, None) -- or (None, its result) if it needs no backend."""
        clone = copy.copy(self._sync)
        clone._reader = None
        recorder = clone._backend = Recorder()
        try:
            return None, call(clone)
        except Deferred:
            return recorder.request, None

    def _finish(self, call: Callable[[_SyncCollection], Any], outcome: Any) -> Any:
        """Step 3: `call` again, handed `outcome` (a response, or the final exception) as its one attempt."""
        clone = copy.copy(self._sync)
        clone._reader = None
        clone._backend = Replay(None, outcome, observed=True)  # execute() did any ClientDurability wait
        return call(clone)

    async def _run(self, call: Callable[[_SyncCollection], Any]) -> Any:
        request, result = self._record(call)
        if request is None:
            return result
        try:
            outcome = await execute(self._backend, request, request.op is Op.GET)
        except CouchbaseException as error:
            outcome = error
        return self._finish(call, outcome)

    # --- reads ------------------------------------------------------------------------------
    async def get(self, key: str, *opts: Any, **kwargs: Any) -> GetResult:
        return await self._run(lambda c: c.get(key, *opts, **kwargs))

    async def get_any_replica(self, key: str, *opts: Any, **kwargs: Any) -> GetReplicaResult:
        return await self._run(lambda c: c.get_any_replica(key, *opts, **kwargs))

    async def get_all_replicas(self, key: str, *opts: Any, **kwargs: Any) -> list[GetReplicaResult]:
        return await self._run(lambda c: c.get_all_replicas(key, *opts, **kwargs))

    async def exists(self, key: str, *opts: Any, **kwargs: Any) -> ExistsResult:
        return await self._run(lambda c: c.exists(key, *opts, **kwargs))

    async def get_and_touch(self, key: str, expiry: Any, *opts: Any, **kwargs: Any) -> GetResult:
        return await self._run(lambda c: c.get_and_touch(key, expiry, *opts, **kwargs))

    async def get_and_lock(self, key: str, lock_time: Any, *opts: Any, **kwargs: Any) -> GetResult:
        return await self._run(lambda c: c.get_and_lock(key, lock_time, *opts, **kwargs))

    # --- writes -----------------------------------------------------------------------------
    async def insert(self, key: str, value: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        return await self._run(lambda c: c.insert(key, value, *opts, **kwargs))

    async def upsert(self, key: str, value: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        return await self._run(lambda c: c.upsert(key, value, *opts, **kwargs))

    async def replace(self, key: str, value: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        return await self._run(lambda c: c.replace(key, value, *opts, **kwargs))

    async def remove(self, key: str, *opts: Any, **kwargs: Any) -> MutationResult:
        return await self._run(lambda c: c.remove(key, *opts, **kwargs))

    async def touch(self, key: str, expiry: Any, *opts: Any, **kwargs: Any) -> MutationResult:
        return await self._run(lambda c: c.touch(key, expiry, *opts, **kwargs))

    async def unlock(self, key: str, cas: int, *opts: Any, **kwargs: Any) -> None:
        return await self._run(lambda c: c.unlock(key, cas, *opts, **kwargs))

    # --- multi-key --------------------------------------------------------------------------
    async def get_multi(self, keys: list[str], *opts: Any, **kwargs: Any) -> MultiGetResult:
        return await self._multi("get", [(k, ()) for k in keys], opts, kwargs, MultiGetResult)

    async def exists_multi(self, keys: list[str], *opts: Any, **kwargs: Any) -> MultiExistsResult:
        return await self._multi("exists", [(k, ()) for k in keys], opts, kwargs, MultiExistsResult)

    async def insert_multi(self, keys_and_docs: dict[str, Any], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        items = [(k, (v,)) for k, v in keys_and_docs.items()]
        return await self._multi("insert", items, opts, kwargs, MultiMutationResult)

    async def upsert_multi(self, keys_and_docs: dict[str, Any], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        items = [(k, (v,)) for k, v in keys_and_docs.items()]
        return await self._multi("upsert", items, opts, kwargs, MultiMutationResult)

    async def replace_multi(self, keys_and_docs: dict[str, Any], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        items = [(k, (v,)) for k, v in keys_and_docs.items()]
        return await self._multi("replace", items, opts, kwargs, MultiMutationResult)

    async def remove_multi(self, keys: list[str], *opts: Any, **kwargs: Any) -> MultiMutationResult:
        return await self._multi("remove", [(k, ()) for k in keys], opts, kwargs, MultiMutationResult)

    async def _multi(self, name: str, items: list[tuple[Any, tuple]], opts: tuple, kwargs: dict, result_cls: type):
        # Option merging as durakv.collection.Collection._multi.
        merged = dict(opts[0]) if opts and opts[0] else {}
        merged.update(kwargs)
        per_key = merged.pop("per_key_options", None) or {}
        return_exceptions = merged.pop("return_exceptions", True)
        outcomes: dict[Any, Any] = {}
        pending: list[tuple[Any, Callable, KVRequest]] = []
        for key, positional in items:
            args = (*positional, {**merged, **per_key.get(key, {})})
            call = _method_call(name, key, args)
            try:
                request, result = self._record(call)
            except CouchbaseException as error:
                outcomes[key] = error
                continue
            if request is None:
                outcomes[key] = result
            else:
                pending.append((key, call, request))
        if pending:
            sent_at = _retry.monotonic()
            requests = [request for _, _, request in pending]
            answers = await self._backend.execute_many(requests)
            finals = await asyncio.gather(
                *(self._complete(request, answer, sent_at) for request, answer in zip(requests, answers, strict=True))
            )
            for (key, call, _), final in zip(pending, finals, strict=True):
                try:
                    outcomes[key] = self._finish(call, final)
                except CouchbaseException as error:
                    outcomes[key] = error
        ordered = {key: outcomes[key] for key, _ in items if key in outcomes}
        if not return_exceptions:
            for outcome in ordered.values():
                if isinstance(outcome, CouchbaseException):
                    raise outcome
        return result_cls(ordered)

    async def _complete(self, request: KVRequest, answer: Any, sent_at: float) -> Any:
        try:
            return await execute(self._backend, request, request.op is Op.GET, first=answer, start=sent_at)
        except CouchbaseException as error:
            return error

    def __repr__(self) -> str:
        return f"AsyncCollection({self.bucket_name}.{self.scope_name}.{self._name})"


def _method_call(name: str, key: Any, args: tuple) -> Callable[[_SyncCollection], Any]:
    return lambda c: getattr(c, name)(key, *args)


Collection = AsyncCollection

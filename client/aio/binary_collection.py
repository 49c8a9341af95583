"""`durakv.aio.binary_collection.BinaryCollection`: counters and raw append/prepend as coroutines.

Each method is the synchronous `durakv.binary_collection.BinaryCollection` method (its
option traps included), run by the owning `AsyncCollection` in the three steps its module
describes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..binary_collection import BinaryCollection as _SyncBinaryCollection
from ..result import CounterResult, MutationResult

if TYPE_CHECKING:
    from .collection import AsyncCollection


class AsyncBinaryCollection:
    """Binary operations on the documents of one collection."""

    def __init__(self, collection: AsyncCollection) -> None:
        self._collection = collection

    async def increment(self, key: str, *opts: Any, **kwargs: Any) -> CounterResult:
        return await self._collection._run(lambda c: _SyncBinaryCollection(c).increment(key, *opts, **kwargs))

    async def decrement(self, key: str, *opts: Any, **kwargs: Any) -> CounterResult:
        return await self._collection._run(lambda c: _SyncBinaryCollection(c).decrement(key, *opts, **kwargs))

    async def append(self, key: str, value: str | bytes | bytearray, *opts: Any, **kwargs: Any) -> MutationResult:
        return await self._collection._run(lambda c: _SyncBinaryCollection(c).append(key, value, *opts, **kwargs))

    async def prepend(self, key: str, value: str | bytes | bytearray, *opts: Any, **kwargs: Any) -> MutationResult:
        return await self._collection._run(lambda c: _SyncBinaryCollection(c).prepend(key, value, *opts, **kwargs))


BinaryCollection = AsyncBinaryCollection

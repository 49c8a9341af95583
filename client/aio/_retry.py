"""The asyncio twin of durakv._retry's attempt loop: same rules, `asyncio.sleep` between attempts.

Everything that decides -- which failures are retried and why, the backoff, when the
deadline turns into `AmbiguousTimeoutException` or `UnAmbiguousTimeoutException` and how
those are re-labelled -- is durakv._retry's `Retrying`, driven from here; only the waiting differs.
A ClientDurability wait after the write is durakv._observe's poll, awaited.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import _retry as sync
from .._backend import BackendStatusError, KVRequest
from .._backends import BackendTimeoutError
from .._observe import wait_for_client_durability_async

RETRIED = (BackendStatusError, ConnectionError, BackendTimeoutError)


async def execute(
    backend: Any, request: KVRequest, idempotent: bool = False, *, first: Any = None, start: float | None = None
) -> Any:
    """Run one KV request to completion on an asyncio backend.

    `first`, when given, is the outcome of an attempt already made (a response, or the
    failure of one item of a batch) that started at `start`.
    """
    if start is None:
        start = sync.monotonic()
    if first is None:
        try:
            response = await backend.execute(request)
        except RETRIED as failure:
            response = await _retry(backend, request, idempotent, start, failure)
    elif isinstance(first, BaseException):
        response = await _retry(backend, request, idempotent, start, first)
    else:
        response = first
    if request.client_durability is not None:
        await wait_for_client_durability_async(backend, request, response)
    return response


async def _retry(backend: Any, request: KVRequest, idempotent: bool, start: float, failure: Exception) -> Any:
    retrying = sync.Retrying(request, idempotent, start)
    while True:
        pause_s = retrying.pause(failure, sync.monotonic())
        if pause_s:
            await asyncio.sleep(pause_s)
        retrying.next_attempt(sync.monotonic())
        try:
            return await backend.execute(request)
        except RETRIED as again:
            failure = again

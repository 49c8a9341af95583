"""The asyncio twin of durakv._retry's attempt loop: same rules, `asyncio.sleep` between attempts.

Everything that decides -- which failures are retried and why, the backoff, when the
deadline turns into `AmbiguousTimeoutException` or `UnAmbiguousTimeoutException` and how
those are re-labelled -- is durakv._retry's, called from here; only the waiting differs.
A ClientDurability wait after the write is durakv._observe's poll, awaited.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import _retry as sync
from .._backend import BackendStatusError, KVRequest
from .._backends import BackendTimeoutError
from .._errors import kv_exception
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
    deadline = start + request.timeout_s
    retries = 0
    reasons: set[str] = set()
    maybe_sent = False
    backoff_s = sync.BACKOFF_FIRST_S
    while True:
        if isinstance(failure, BackendTimeoutError):
            raise sync._deadline_exception(request, deadline - start, idempotent, retries, reasons, failure)
        reason, sent = sync._classify(failure, request.op)
        if reason is None:
            assert isinstance(failure, BackendStatusError)
            raise kv_exception(
                failure.status, request, failure.message, retry_attempts=retries, retry_reasons=reasons
            ) from None
        reasons.add(reason)
        maybe_sent = maybe_sent or sent
        now = sync.monotonic()
        if now < deadline:
            await asyncio.sleep(min(backoff_s, deadline - now))
            backoff_s = min(backoff_s * 2, sync.BACKOFF_MAX_S)
            now = sync.monotonic()
        if now >= deadline:
            raise sync._deadline_exception(
                request, deadline - start, idempotent or not maybe_sent, retries, reasons, failure
            )
        retries += 1
        request.timeout_s = deadline - now
        try:
            return await backend.execute(request)
        except RETRIED as again:
            failure = again

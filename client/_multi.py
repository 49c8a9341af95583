"""Multi-ops: `Collection.*_multi` as one attempt per key, sent together through `execute_many`.

Owns `Recorder` and `Replay`, the two stand-in backends that let an SDK method build its
request without running it and then finish with an outcome already known, and
`run_batched`, which uses them so each key's result, retries and exceptions are the
single-key method's own. durakv.aio uses `Recorder`/`Replay` the same way, to run the
synchronous methods around an awaited attempt.

Must never restate what an SDK method does with options, results or errors: it only runs
the method, twice.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from . import exceptions as exc
from ._backend import KVRequest


class Deferred(Exception):
    """Raised by `Recorder` to stop an SDK method once its request is built (never escapes its caller)."""


class Recorder:
    """A backend that keeps the request it is handed instead of running it."""

    def __init__(self) -> None:
        self.request: KVRequest | None = None

    def execute(self, request: KVRequest) -> Any:
        self.request = request
        raise Deferred


class Replay:
    """A backend whose first attempt is an outcome already known; retries (if any) go to `backend`.

    The outcome may be a KVResponse, a backend failure the SDK retries (one item of a
    batch, answered `sent_at`), or a final `CouchbaseException` (from the asyncio retry
    loop), which passes through the sync retry loop untouched to the method's own handling.
    """

    def __init__(self, backend: Any, outcome: Any, sent_at: float | None = None, *, observed: bool = False) -> None:
        self._backend = backend
        self._outcome = outcome
        self._sent_at = sent_at
        self._first = True
        # True when the outcome's ClientDurability wait is already done (by the asyncio SDK).
        self.durability_observed = observed

    def __getattr__(self, name: str) -> Any:
        # Everything else (observe, num_replicas: a ClientDurability wait after the write) is the
        # real backend's.
        if self._backend is None:
            raise AttributeError(name)
        return getattr(self._backend, name)

    def execute(self, request: KVRequest) -> Any:
        if not self._first:
            return self._backend.execute(request)
        self._first = False
        if isinstance(self._outcome, BaseException):
            if self._sent_at is not None:
                # The retry loop's deadline counts from its own start: take off the time the batch took.
                request.timeout_s = max(request.timeout_s - (time.monotonic() - self._sent_at), 0.0)
            raise self._outcome
        return self._outcome


def run_batched(method: Any, calls: list[tuple[Any, tuple]]) -> dict[Any, Any]:
    """`method` over many keys with one attempt per key sent together (`backend.execute_many`).

    Each call runs the single-key method twice on a private copy of the collection: once
    with a `Recorder` to get the exact request the method builds (options, validation,
    transcoding), then, after the batch, with a `Replay` that hands the method the batch's
    answer, so results, retries and exceptions are the single-key method's own.
    """
    collection = method.__self__
    backend = collection._backend
    clone = copy.copy(collection)
    clone._reader = None
    bound = method.__func__.__get__(clone)
    outcomes: dict[Any, Any] = {}
    requests: list[KVRequest] = []
    sent: list[tuple[Any, tuple]] = []
    for key, args in calls:
        recorder = clone._backend = Recorder()
        try:
            outcomes[key] = bound(key, *args)  # a method that finishes without the backend
        except Deferred:
            assert recorder.request is not None
            requests.append(recorder.request)
            sent.append((key, args))
        except exc.CouchbaseException as error:
            outcomes[key] = error
    sent_at = time.monotonic()
    answers = backend.execute_many(requests) if requests else []
    for (key, args), answer in zip(sent, answers, strict=True):
        clone._backend = Replay(backend, answer, sent_at)
        clone._reader = None
        try:
            outcomes[key] = bound(key, *args)
        except exc.CouchbaseException as error:
            outcomes[key] = error
    return {key: outcomes[key] for key, _ in calls if key in outcomes}

"""Timeouts and the one attempt loop every KV operation runs through.

Timeouts (reference §1.3): the op timeout is the caller's `timeout`, else the cluster's
`kv_timeout` (2.5 s by default). A mutation carrying *server* durability and no explicit
timeout gets 10 s -- Couchbase's Python SDK hard-codes this for append, insert, prepend,
remove, replace and upsert, not for counters, and does not read `kv_durable_timeout`.
A durable op (level != NONE) never gets less than 1.5 s, and the node is sent 90 % of the op
timeout as its durability timeout.

Retries (reference §1.8): NOT_MY_VBUCKET, LOCKED (except for unlock), TMPFAIL,
SYNC_WRITE_IN_PROGRESS and SYNC_WRITE_RECOMMIT_IN_PROGRESS are retried with exponential
backoff (1 ms doubling, capped at 50 ms) until the deadline. A connection error is retried
too. At the deadline the op fails with `UnAmbiguousTimeoutException` if it is idempotent
(only `get`) or no attempt can have reached the node, else `AmbiguousTimeoutException`;
then, as the Python SDK does, a deadline whose retry reasons include "locked" becomes
`DocumentLockedException` and one that includes "temporary failure" becomes
`TemporaryFailException` (their `error_code` stays the timeout's, as in Couchbase).

A backend that gives up waiting for the node raises `BackendTimeoutError`: that is the
deadline, with an unknown outcome. A backend signals "never sent" by raising
`ConnectionRefusedError`; any other `ConnectionError` means the request may have been sent.
"""

from __future__ import annotations

import time
from typing import Any

from . import exceptions as exc
from ._backend import Backend, BackendStatusError, KVRequest, KVResponse, Op
from ._backends import BackendTimeoutError
from ._errors import KVStatus, kv_context, kv_exception

KV_TIMEOUT_DEFAULT_S = 2.5
DURABLE_TIMEOUT_DEFAULT_S = 10.0
DURABILITY_TIMEOUT_FLOOR_S = 1.5
DURABILITY_TIMEOUT_FRACTION = 0.9
DURABILITY_TIMEOUT_MAX_MS = 65_534  # the wire field is 16-bit; 0xFFFF is reserved
BACKOFF_FIRST_S = 0.001
BACKOFF_MAX_S = 0.050

# Retry reason names as the Couchbase core reports them in the error context.
REASON_NOT_MY_VBUCKET = "key_value_not_my_vbucket"
REASON_LOCKED = "key_value_locked"
REASON_TMPFAIL = "key_value_temporary_failure"
REASON_SYNC_WRITE_IN_PROGRESS = "key_value_sync_write_in_progress"
REASON_RECOMMIT_IN_PROGRESS = "key_value_sync_write_re_commit_in_progress"
REASON_NODE_NOT_AVAILABLE = "node_not_available"
REASON_SOCKET_CLOSED = "socket_closed_while_in_flight"

_RETRY_REASONS = {
    KVStatus.NOT_MY_VBUCKET: REASON_NOT_MY_VBUCKET,
    KVStatus.LOCKED: REASON_LOCKED,
    KVStatus.TMPFAIL: REASON_TMPFAIL,
    KVStatus.SYNC_WRITE_IN_PROGRESS: REASON_SYNC_WRITE_IN_PROGRESS,
    KVStatus.SYNC_WRITE_RECOMMIT_IN_PROGRESS: REASON_RECOMMIT_IN_PROGRESS,
}

# Mutations whose server-durable form gets the hard-coded 10 s default; counters take
# durability too but keep the plain KV timeout. Other ops ignore a `durability` option.
_DURABLE_DEFAULT_OPS = frozenset({Op.APPEND, Op.INSERT, Op.PREPEND, Op.REMOVE, Op.REPLACE, Op.UPSERT})
DURABLE_OPS = _DURABLE_DEFAULT_OPS | {Op.INCREMENT, Op.DECREMENT}

# Indirection so tests can drive time: the loop reads these at call time.
monotonic = time.monotonic
sleep = time.sleep


def apply_timeouts(request: KVRequest, args: dict[str, Any], default_timeout_s: float) -> None:
    """Set the request's timeout, durability level and durability timeout from merged options."""
    timeout_s = args.get("timeout")
    level = args.get("durability") if request.op in DURABLE_OPS else None
    server_durable = isinstance(level, int)
    if timeout_s is None:
        if server_durable and request.op in _DURABLE_DEFAULT_OPS:
            timeout_s = DURABLE_TIMEOUT_DEFAULT_S
        else:
            timeout_s = default_timeout_s
    if server_durable and level:
        if timeout_s < DURABILITY_TIMEOUT_FLOOR_S:
            timeout_s = DURABILITY_TIMEOUT_FLOOR_S
        request.durability_level = int(level)
        request.durability_timeout_ms = min(
            int(timeout_s * 1000 * DURABILITY_TIMEOUT_FRACTION), DURABILITY_TIMEOUT_MAX_MS
        )
    request.timeout_s = timeout_s


def execute(backend: Backend, request: KVRequest, idempotent: bool = False) -> Any:
    """Run one KV request to completion: retries, deadline, exception mapping."""
    start = monotonic()
    try:
        response = backend.execute(request)
    except (BackendStatusError, ConnectionError, BackendTimeoutError) as first:
        response = _retry(backend, request, idempotent, start, first)
    if request.client_durability is not None and not getattr(backend, "durability_observed", False):
        from ._observe import wait_for_client_durability

        wait_for_client_durability(backend, request, response)
    return response


class Retrying:
    """One request's retry rules after a failed attempt; the caller sleeps and sends again.

    `pause(failure, now)` raises the final exception (a refusal that is not retried, or a
    backend timeout), else records the retry reason and says how long to back off;
    `next_attempt(now)` raises the deadline's exception, else counts the retry and gives
    the request the time that is left. The sync and asyncio loops share it.
    """

    def __init__(self, request: KVRequest, idempotent: bool, start: float) -> None:
        self.request = request
        self.idempotent = idempotent
        self.start = start
        self.deadline = start + request.timeout_s
        self.retries = 0
        self.reasons: set[str] = set()
        self.maybe_sent = False
        self.backoff_s = BACKOFF_FIRST_S
        self.failure: Exception | None = None

    def pause(self, failure: Exception, now: float) -> float:
        request = self.request
        if isinstance(failure, BackendTimeoutError):
            raise _deadline_exception(
                request, self.deadline - self.start, self.idempotent, self.retries, self.reasons, failure
            )
        reason, sent = _classify(failure, request.op)
        if reason is None:
            assert isinstance(failure, BackendStatusError)
            raise kv_exception(
                failure.status, request, failure.message, retry_attempts=self.retries, retry_reasons=self.reasons
            ) from None
        self.reasons.add(reason)
        self.maybe_sent = self.maybe_sent or sent
        self.failure = failure
        if now >= self.deadline:
            return 0.0
        pause_s = min(self.backoff_s, self.deadline - now)
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        return pause_s

    def next_attempt(self, now: float) -> None:
        if now >= self.deadline:
            assert self.failure is not None
            raise _deadline_exception(
                self.request,
                self.deadline - self.start,
                self.idempotent or not self.maybe_sent,
                self.retries,
                self.reasons,
                self.failure,
            )
        self.retries += 1
        self.request.timeout_s = self.deadline - now


def _retry(
    backend: Backend, request: KVRequest, idempotent: bool, start: float, failure: Exception
) -> KVResponse | list[KVResponse]:
    retrying = Retrying(request, idempotent, start)
    while True:
        pause_s = retrying.pause(failure, monotonic())
        if pause_s:
            sleep(pause_s)
        retrying.next_attempt(monotonic())
        try:
            return backend.execute(request)
        except (BackendStatusError, ConnectionError, BackendTimeoutError) as again:
            failure = again


def _classify(failure: Exception, op: Op) -> tuple[str | None, bool]:
    """(retry reason or None if final, whether the attempt may have reached the node)."""
    if isinstance(failure, ConnectionRefusedError):
        return REASON_NODE_NOT_AVAILABLE, False
    if isinstance(failure, ConnectionError):
        return REASON_SOCKET_CLOSED, True
    status = failure.status  # type: ignore[attr-defined]
    if status == KVStatus.LOCKED and op is Op.UNLOCK:
        return None, True
    return _RETRY_REASONS.get(status), True


def _deadline_exception(
    request: KVRequest,
    timeout_s: float,
    unambiguous: bool,
    attempts: int,
    reasons: set[str],
    last: Exception,
) -> exc.CouchbaseException:
    timeout_cls: type[exc.CouchbaseException] = (
        exc.UnAmbiguousTimeoutException if unambiguous else exc.AmbiguousTimeoutException
    )
    error_code = timeout_cls._ERROR_CODE
    if REASON_LOCKED in reasons:
        cls: type[exc.CouchbaseException] = exc.DocumentLockedException
    elif REASON_TMPFAIL in reasons:
        cls = exc.TemporaryFailException
    else:
        cls = timeout_cls
    status = getattr(last, "status", None)
    context = kv_context(request, status=status, retry_attempts=attempts, retry_reasons=reasons)
    return cls(
        f"{request.op.value} did not complete within {timeout_s:.3f} s (retried: {', '.join(sorted(reasons))})",
        error_code=error_code,
        context=context,
        inner_cause=last,
    )

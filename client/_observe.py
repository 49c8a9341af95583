"""Observe-based durability: `ClientDurability(replicate_to=..., persist_to=...)`.

As the Couchbase SDK does it (reference §1.4): the mutation is made as a plain write;
then the SDK checks the bucket's replica count (a requirement the bucket cannot meet is
`DurabilityImpossibleException` -- raised after the write, as Couchbase does) and polls
every copy of the vbucket for its received and persisted seqnos until the write's seqno
is covered, or the 5 s poll deadline passes (`AmbiguousTimeoutException`: the write
happened, its durability is unknown).

Counting, per the Couchbase core: a replica counts as "replicated" once its current seqno
reaches the token's (the active does not count); a node counts as "persisted" once its
persisted seqno does (the active counts). `PersistTo.ONE` needs one node, `TWO` two, and
so on; `PersistToExtended.ACTIVE` needs the active's own persistence.

Deviation: Couchbase polls at a fixed 500 ms; durakv starts at 1 ms and backs off to
100 ms, since an embedded node or a loopback cluster answers in microseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ._backend import KVRequest, KVResponse, ObservedCopy
from .exceptions import (
    AmbiguousTimeoutException,
    DurabilityImpossibleException,
    FeatureUnavailableException,
    KeyValueErrorContext,
)

POLL_DEADLINE_S = 5.0
POLL_FIRST_S = 0.001
POLL_MAX_S = 0.1

PERSIST_ACTIVE = 1  # PersistToExtended.ACTIVE; ONE..FOUR are 2..5 in both PersistTo enums


def nodes_to_persist(persist_to: int) -> int:
    """How many nodes must have persisted the write (ACTIVE: the active alone)."""
    return 1 if persist_to == PERSIST_ACTIVE else max(0, persist_to - 1)


def replicas_needed(replicate_to: int, persist_to: int) -> int:
    """The replicas the bucket must have for the requirement to be possible at all."""
    return max(replicate_to, nodes_to_persist(persist_to) - 1)


def satisfied(copies: list[ObservedCopy], seqno: int, replicate_to: int, persist_to: int) -> bool:
    replicated = sum(1 for c in copies if not c.is_active and c.current_seqno >= seqno)
    if replicated < replicate_to:
        return False
    if persist_to == 0:
        return True
    if persist_to == PERSIST_ACTIVE:
        return any(c.is_active and c.persisted_seqno >= seqno for c in copies)
    return sum(1 for c in copies if c.persisted_seqno >= seqno) >= nodes_to_persist(persist_to)


class ObservePoll:
    """One ClientDurability wait's rules; the caller observes the copies and sleeps.

    Built after the write (raises DurabilityImpossibleException when the bucket has too
    few replicas); then `after(copies, now)` says how long to pause before observing
    again, or None once the copies satisfy the requirement, and raises
    AmbiguousTimeoutException at the poll deadline.
    """

    def __init__(self, request: KVRequest, response: KVResponse, num_replicas: int, now: float) -> None:
        self.replicate_to, self.persist_to = request.client_durability or (0, 0)
        self.seqno = response.seqno
        self.context = observe_context(request)
        if replicas_needed(self.replicate_to, self.persist_to) > num_replicas:
            raise DurabilityImpossibleException(
                f"replicate_to={self.replicate_to}, persist_to={self.persist_to} needs more replicas than bucket "
                f"{request.bucket!r} has (the write itself was made)",
                context=self.context,
            )
        self.deadline = now + POLL_DEADLINE_S
        self.backoff_s = POLL_FIRST_S

    def after(self, copies: list[ObservedCopy], now: float) -> float | None:
        if satisfied(copies, self.seqno, self.replicate_to, self.persist_to):
            return None
        if now >= self.deadline:
            raise AmbiguousTimeoutException(
                "the write was made but its observed durability did not arrive within the poll deadline",
                context=self.context,
            )
        pause_s = min(self.backoff_s, self.deadline - now)
        self.backoff_s = min(self.backoff_s * 2, POLL_MAX_S)
        return pause_s


def observe_context(request: KVRequest) -> KeyValueErrorContext:
    return KeyValueErrorContext(
        key=request.key.decode(errors="replace"),
        bucket_name=request.bucket,
        scope_name=request.scope,
        collection_name=request.collection,
    )


def observer(backend: Any, request: KVRequest) -> Any:
    """The backend's `observe`; FeatureUnavailableException if it cannot observe replicas."""
    observe = getattr(backend, "observe", None)
    if observe is None:
        raise FeatureUnavailableException("this backend cannot observe replicas", context=observe_context(request))
    return observe


def wait_for_client_durability(backend: Any, request: KVRequest, response: KVResponse) -> None:
    observe = observer(backend, request)
    poll = ObservePoll(request, response, backend.num_replicas(request.bucket), time.monotonic())
    while True:
        copies = observe(request.bucket, response.vbucket, response.vbucket_uuid)
        pause_s = poll.after(copies, time.monotonic())
        if pause_s is None:
            return
        time.sleep(pause_s)


async def wait_for_client_durability_async(backend: Any, request: KVRequest, response: KVResponse) -> None:
    """The same wait on an asyncio backend, whose `observe` and `num_replicas` are coroutines."""
    observe = observer(backend, request)
    poll = ObservePoll(request, response, await backend.num_replicas(request.bucket), time.monotonic())
    while True:
        copies = await observe(request.bucket, response.vbucket, response.vbucket_uuid)
        pause_s = poll.after(copies, time.monotonic())
        if pause_s is None:
            return
        await asyncio.sleep(pause_s)

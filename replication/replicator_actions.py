"""Carrying out a replica vbucket's consumer actions against the engine, in order.

Owns `ConsumerActions`, the part of a replication call (`replicator_link.Link`) that takes
each producer message to the vbucket's `stream_consumer.StreamConsumer` and carries out
what it answers: AdoptFailoverLog -> `set_failover_log`, Apply -> `apply_snapshot` (items
converted to the engine's `ReplicaItem` by `replica_item`), Rollback -> `rollback` then
`consumer.rolled_back`, StreamRefused and StreamEnded -> a re-request later, SeqnoAck and
BufferAck sent. An engine refusal drops the consumer (the next call rebuilds it from the
engine) and ends the call (`LinkError`).

Must never: decide what to apply, ack or roll back (the consumer core does), apply anything
to a vbucket that is not a replica here (checked under the bucket lock with the apply), or
hold the bucket lock across an await.

Threads: on the event loop thread. Rollbacks, and snapshots of more than
APPLY_INLINE_ITEMS_MAX items, run in a worker thread (under the bucket lock) while the
call's reader waits for them, so their order is kept and the loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from durakv.engine import records
from durakv.engine.errors import EngineError, Status
from durakv.engine.replica import ReplicaItem
from durakv.engine.snapshot_apply import encode_snapshot
from durakv.engine.vbucket import VBState
from durakv.proto import replication_pb2 as pb

from . import stream_consumer as sc
from . import wire_items as wi
from .items import (
    Abort,
    BufferAck,
    Commit,
    Deletion,
    Expiration,
    Item,
    Mutation,
    Prepare,
    ProducerMessage,
    SeqnoAck,
    StreamEndReason,
    StreamProtocolError,
    document_of,
)

if TYPE_CHECKING:
    from .replicator_consumers import BucketReplicas
    from .replicator_link import LinkSpec

log = logging.getLogger("durakv.node.replicator")

REREQUEST_SOON_S = 0.05  # a stream ended for a reason the producer recovers from at once
REREQUEST_LATER_S = 0.5  # the producer is not (yet) the active: wait for the configurations to agree
APPLY_INLINE_ITEMS_MAX = 512  # larger snapshots are applied in a worker thread (under the bucket lock)


# -- items to the engine --------------------------------------------------------------------------
def replica_item(item: Item) -> ReplicaItem:
    """The engine's form of one applied item (SeqnoAdvanced never reaches an Apply)."""
    match item:
        case Mutation():
            return ReplicaItem(records.Kind.MUTATION, item.collection_id, item.key, document_of(item), 0, 0, item.seqno)
        case Deletion():
            return ReplicaItem(records.Kind.DELETION, item.collection_id, item.key, document_of(item), 0, 0, item.seqno)
        case Expiration():
            doc = document_of(item)
            return ReplicaItem(records.Kind.EXPIRATION, item.collection_id, item.key, doc, 0, 0, item.seqno)
        case Prepare():
            level = int(item.level)
            return ReplicaItem(
                records.Kind.PREPARE, item.collection_id, item.key, document_of(item), level, 0, item.seqno
            )
        case Commit():
            kind = records.Kind.COMMIT
            return ReplicaItem(kind, item.collection_id, item.key, None, 0, item.prepared_seqno, item.commit_seqno)
        case Abort():
            kind = records.Kind.ABORT
            return ReplicaItem(kind, item.collection_id, item.key, None, 0, item.prepared_seqno, item.abort_seqno)
    raise TypeError(f"not an applicable item: {item!r}")


class LinkError(Exception):
    """The call cannot go on (refused Open, protocol error, nothing heard): reconnect."""


# -- producer messages to the engine -----------------------------------------------------------------
class ConsumerActions:
    """A call's producer messages, through each vbucket's consumer, carried out against the engine.

    A base of `replicator_link.Link`, which provides what is declared here: its spec, the
    bucket's consumers, and sending (`_send`), re-requesting (`_request`, `_request_later`)
    and counting the window (`_count`).
    """

    spec: LinkSpec
    replicas: BucketReplicas
    name: str
    _generation: int
    _send: Callable[..., None]  # (message, *, hold=True)
    _request: Callable[[int, int], None]
    _request_later: Callable[[int, float], None]
    _count: Callable[[ProducerMessage], None]

    def _on_message(self, message: pb.ProducerMessage) -> Awaitable[None] | None:
        """Carry out one producer message: at once, or (a rollback, a large apply) in what it returns to await."""
        kind = wi.which(message)
        if kind == "noop":
            self._send(wi.noop_replica(message.noop.sequence))
            return None
        value = wi.producer_from_proto(message)  # WireError: the call ends
        vbid = value.vbucket
        consumer = self.replicas.consumers.get(vbid)
        if consumer is None or self.replicas.owners.get(vbid) is not self:
            raise LinkError(f"a message for vbucket {vbid}, not streamed on this call")
        with self._engine_refusals(vbid):
            actions = consumer.on_message(value)
            done = self._carry_out_now(vbid, actions)
        if done < len(actions):
            return self._carry_out_later(vbid, consumer, actions[done:], value)
        self._count(value)
        return None

    async def _carry_out_later(
        self, vbid: int, consumer: sc.StreamConsumer, actions: Sequence[sc.Action], value: ProducerMessage
    ) -> None:
        with self._engine_refusals(vbid):
            await self._carry_out(vbid, consumer, actions)
        self._count(value)

    @contextlib.contextmanager
    def _engine_refusals(self, vbid: int):
        try:
            yield
        except EngineError as exc:
            if isinstance(exc, StreamProtocolError):
                raise
            # The consumer has moved on and the engine has not: rebuild it from the engine.
            self.replicas.consumers.pop(vbid, None)
            raise LinkError(f"vbucket {vbid}: the engine refused {type(exc).__name__}: {exc}") from exc

    def _carry_out_now(self, vbid: int, actions: Sequence[sc.Action]) -> int:
        """Carry out the actions that need no waiting, in order; the index of the first that does."""
        for index, action in enumerate(actions):
            match action:
                case sc.Apply() if len(action.items) <= APPLY_INLINE_ITEMS_MAX:
                    self._apply(vbid, action)
                case sc.Apply() | sc.Rollback():
                    return index
                case _:
                    self._carry_out_simple(vbid, action)
        return len(actions)

    async def _carry_out(self, vbid: int, consumer: sc.StreamConsumer, actions: Sequence[sc.Action]) -> None:
        bucket = self.spec.bucket
        for action in actions:
            match action:
                case sc.Apply():
                    if len(action.items) <= APPLY_INLINE_ITEMS_MAX:
                        self._apply(vbid, action)
                    else:  # a large backfill: the loop keeps answering Noops and serving KV meanwhile
                        await asyncio.get_running_loop().run_in_executor(None, self._apply, vbid, action)
                case sc.Rollback():
                    # In a worker thread: it waits for a checkpoint in flight (so it can be exact).
                    rolling = asyncio.get_running_loop().run_in_executor(None, bucket.rollback, vbid, action.seqno)
                    try:
                        result = await asyncio.shield(rolling)
                    except asyncio.CancelledError:
                        # The consumer stays ROLLING_BACK and is rebuilt from the engine by the next
                        # call: the engine must be done by then.
                        with contextlib.suppress(Exception):
                            await rolling
                        raise
                    level = logging.INFO if consumer.high_seqno else logging.DEBUG  # an empty copy undoes nothing
                    log.log(level, "replication %s: vb %d rolled back to %d", self.name, vbid, result.high_seqno)
                    more = consumer.rolled_back(
                        result.high_seqno, prepares=result.prepares, high_completed_seqno=result.high_completed_seqno
                    )
                    await self._carry_out(vbid, consumer, more)
                    self._request(vbid, self._generation)
                case _:
                    self._carry_out_simple(vbid, action)

    def _carry_out_simple(self, vbid: int, action: sc.Action) -> None:
        """An action carried out at once: adopt a failover log, schedule a re-request, send an ack."""
        match action:
            case sc.AdoptFailoverLog():
                bucket = self.spec.bucket
                with bucket.lock:
                    self._check_replica(vbid)
                    bucket.engine.set_failover_log(vbid, list(action.failover_log))
            case sc.StreamRefused():
                delay = REREQUEST_LATER_S if action.status is not Status.TMPFAIL else REREQUEST_SOON_S * 4
                self._request_later(vbid, delay)
            case sc.StreamEnded():
                if action.reason is StreamEndReason.STATE_CHANGED:
                    self._request_later(vbid, REREQUEST_LATER_S)
                elif action.reason not in (StreamEndReason.CLOSED, StreamEndReason.OK):
                    self._request_later(vbid, REREQUEST_SOON_S)
            case SeqnoAck() | BufferAck():
                self._send(wi.replica_to_proto(action))
            case _:
                raise AssertionError(f"not a simple action: {action!r}")

    def _apply(self, vbid: int, apply: sc.Apply) -> None:
        encoded = encode_snapshot(vbid, [replica_item(i) for i in apply.items])  # before the lock: no state
        bucket = self.spec.bucket
        with bucket.lock:
            self._check_replica(vbid)
            bucket.engine.apply_snapshot(
                vbid,
                apply.snapshot_start,
                apply.snapshot_end,
                apply.disk,
                encoded,
                apply.resolved_prepares,
                apply.high_completed_seqno,
            )

    def _check_replica(self, vbid: int) -> None:
        """Under the bucket lock: the vbucket is still a replica here (a configuration may have just changed)."""
        state = self.spec.bucket.engine.vbuckets[vbid].state
        if state is not VBState.REPLICA:
            self.replicas.consumers.pop(vbid, None)  # its view is no longer the engine's
            raise LinkError(f"vbucket {vbid} is {state.value} here now")

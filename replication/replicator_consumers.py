"""The consumers of one bucket's replica vbuckets, and the engine's persistence hook for them.

Owns `BucketReplicas`: per replica vbucket one `stream_consumer.StreamConsumer`, built from
the engine's own state (`engine.replica_state`) and kept across reconnects of its call
(rebuilt when there is none or it was left mid-rollback), and which call (`replicator_link.Link`)
each vbucket's stream runs on. The engine's `on_replica_persisted` hook is installed here:
persistence advances reach the consumers, and the SeqnoAcks they answer go out on the
vbucket's call.

Must never: decide what to ack (the consumer core does), report persistence past a consumer's
high seqno, or hold the bucket lock across an await.

Threads: consumers live on the event loop thread. The engine's `on_replica_persisted` hook
runs under the bucket lock on the WAL flusher thread; it only records the seqno and
schedules the loop (`BucketReplicas.on_persisted`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from durakv.engine.embedded import EmbeddedBucket

from . import stream_consumer as sc

if TYPE_CHECKING:
    from .replicator_link import Link


class BucketReplicas:
    """The consumers of one bucket's replica vbuckets, and its `on_replica_persisted` hook."""

    def __init__(self, bucket: EmbeddedBucket, loop: asyncio.AbstractEventLoop) -> None:
        self.bucket = bucket
        self.loop = loop
        self.consumers: dict[int, sc.StreamConsumer] = {}
        self.owners: dict[int, Link] = {}  # the link each vbucket's stream runs on
        self._persisted: dict[int, int] = {}  # vbid -> seqno, not yet handed to the consumers
        self._lock = threading.Lock()
        self._scheduled = False
        with bucket.lock:
            bucket.engine.on_replica_persisted = self.on_persisted

    def consumer(self, vbid: int) -> sc.StreamConsumer:
        """The vbucket's consumer, (re)built from the engine when there is none or it was mid-rollback."""
        consumer = self.consumers.get(vbid)
        if consumer is None or consumer.state is sc.ConsumerState.ROLLING_BACK:
            with self.bucket.lock:
                state = self.bucket.engine.replica_state(vbid)
            consumer = sc.StreamConsumer(vbid, state=_replica_state(state), buffer_bytes=0)
            self.consumers[vbid] = consumer
        return consumer

    def forget(self, keep: set[int]) -> None:
        for vbid in [v for v in self.consumers if v not in keep]:
            del self.consumers[vbid]
            self.owners.pop(vbid, None)

    def on_persisted(self, vbid: int, seqno: int) -> None:
        """The engine hook (bucket lock held, any thread): the WAL is fsynced to `seqno` of `vbid`."""
        with self._lock:
            if seqno > self._persisted.get(vbid, 0):
                self._persisted[vbid] = seqno
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: the node is stopping
            pass

    def _deliver(self) -> None:
        with self._lock:
            persisted, self._persisted = self._persisted, {}
            self._scheduled = False
        for vbid, seqno in persisted.items():
            consumer = self.consumers.get(vbid)
            if consumer is None or consumer.state is sc.ConsumerState.ROLLING_BACK:
                continue
            # Persistence reported for data a rollback has since removed says nothing of what
            # replaced it: never past the consumer's high seqno.
            actions = consumer.persisted(min(seqno, consumer.high_seqno))
            owner = self.owners.get(vbid)
            if owner is not None:
                owner.send_acks(actions)


def _replica_state(state) -> sc.ReplicaState:
    if isinstance(state, sc.ReplicaState):
        return state
    return sc.ReplicaState(
        failover_log=tuple((int(u), int(s)) for u, s in state.failover_log),
        snapshot_start=state.snapshot_start,
        high_seqno=state.high_seqno,
        high_prepared_seqno=state.high_prepared_seqno,
        high_completed_seqno=state.high_completed_seqno,
        prepares=tuple(state.prepares),
        persisted_seqno=state.persisted_seqno,
    )

"""Backfill for a replication call's producers: reading the store for what memory no longer holds.

Owns `SessionBackfill`, the part of a call's `replication_session.Session` that serves a
producer asking for backfill (`producer.backfill_from`): one read of the store
(`store.backfill_read`, a snapshot of the vbucket's documents and prepares) per request, in
a worker thread; a read that came back behind the producer's memory window is retried after
BACKFILL_RETRY_S; what was read is handed to the producer (`backfill_begin`,
`backfill_item`, `backfill_end`) as its `backfill_room_bytes` allows; the rest waits in the
stream (`Stream.backfill`) and is fed again after each sending round. A read that fails ends
the stream with BACKFILL_FAILED; one below the purge seqno makes the replica roll back (the
producer decides).

Must never: read the store on the event loop (backfill reads run in a worker thread; LMDB
read transactions need no bucket lock), or hold the bucket lock across a store read.

Threads: on the event loop thread, except the store reads themselves; a finished read only wakes
the call's writer (`poke`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from durakv.engine.embedded import EmbeddedBucket

from .items import (
    Item,
    StreamEndReason,
    document_item,
    prepare_item,
)
from .stream_producer import ProducerState

if TYPE_CHECKING:
    from .replication_session import Stream

log = logging.getLogger("durakv.node.replication")

BACKFILL_RETRY_S = 0.1  # a store read that came back behind the memory window is retried after this


class SessionBackfill:
    """A call's backfill reads and what they hand its producers.

    A base of `replication_session.Session`, which provides what is declared here.
    """

    bucket: EmbeddedBucket
    consumer: str
    loop: asyncio.AbstractEventLoop
    streams: dict[int, Stream]
    poke: Callable[..., None]  # (vbid=None, *, check_all=False)

    # -- backfill -------------------------------------------------------------------------------
    def backfill(self) -> float | None:
        """Take finished store reads, start the reads producers ask for, feed what was read.

        Returns the monotonic time a delayed read is due, if any."""
        due = None
        now = time.monotonic()
        for vbid, stream in self.streams.items():
            producer = stream.producer
            if stream.reading is None and not stream.backfilling and not producer.wants_backfill:
                continue  # streaming from memory: the common case, decided cheaply
            if stream.reading is not None and stream.reading.done():
                self._begin_backfill(vbid, stream)
            if producer.state is ProducerState.CLOSED:
                continue
            if stream.backfilling:
                self._feed_backfill(stream)
            from_seqno = producer.backfill_from
            if from_seqno is None or stream.reading is not None:
                continue
            if now < stream.retry_at:
                due = stream.retry_at if due is None else min(due, stream.retry_at)
                continue
            stream.reading = self.loop.run_in_executor(None, self.bucket.store.backfill_read, vbid, from_seqno)
            stream.reading.add_done_callback(lambda _f: self.poke())
        return due

    def _begin_backfill(self, vbid: int, stream: Stream) -> None:
        reading, stream.reading = stream.reading, None
        producer = stream.producer
        if producer.state is not ProducerState.BACKFILL_NEEDED:
            return  # closed meanwhile
        from_seqno = producer.backfill_from
        assert reading is not None and from_seqno is not None
        try:
            snapshot = reading.result()
        except Exception:
            log.exception("backfill of vb %d for %s failed", vbid, self.consumer)
            producer.close(StreamEndReason.BACKFILL_FAILED, "the store read failed")
            return
        high = snapshot.high_seqno
        if high < max(from_seqno, stream.memory_start - 1):
            # The store does not reach the memory window (a checkpoint is being applied): again.
            stream.retry_at = time.monotonic() + BACKFILL_RETRY_S
            return
        items: list[Item] = [
            document_item(cid, key, doc) for seqno, cid, key, doc in snapshot.documents if from_seqno <= seqno <= high
        ]
        items += [
            prepare_item(cid, key, doc, level)
            for seqno, cid, key, level, doc in snapshot.prepares
            if from_seqno <= seqno <= high
        ]
        items.sort(key=lambda i: i.seqno)
        begun = producer.backfill_begin(
            high,
            high_completed_seqno=snapshot.high_completed_seqno,
            high_prepared_seqno=snapshot.high_prepared_seqno,
            purge_seqno=snapshot.purge_seqno,
        )
        log.info(
            "backfill vb %d for %s: seqnos %d..%d, %d items%s",
            vbid,
            self.consumer,
            from_seqno,
            high,
            len(items),
            "" if begun else ", below the purge seqno: the replica rolls back",
        )
        if begun:
            stream.backfill = deque(items)
            stream.backfilling = True
            self._feed_backfill(stream)
        self.poke(vbid)  # the memory window may have moved during the read

    def _feed_backfill(self, stream: Stream) -> None:
        producer = stream.producer
        queue = stream.backfill
        while queue and producer.backfill_room_bytes > 0:
            producer.backfill_item(queue.popleft())
        if not queue:
            producer.backfill_end()
            stream.backfilling = False

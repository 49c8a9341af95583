"""One pipelined stream to one node: many operations in flight on one HTTP/2 stream.

kv.proto's Pipeline is the same operations as the unary calls on one long-lived
bidirectional stream, answered in any order and matched by `opaque`. It saves what a unary
call costs in gRPC Python (a new HTTP/2 stream, headers, metadata and authentication per
call): several times the throughput for small operations. PipelineBatched is the same with
several operations per stream message each way, which saves the per-message cost too (one
awaited write and one read-loop turn per message on each side). This module owns the
stream's bookkeeping and nothing else; the backend decides routing, retries belong to the
SDK.

The writer coalesces: operations are queued as they are submitted, and one writer task
sends whatever is queued when it gets a turn as one OpRequestBatch (at most
`OPS_PER_MESSAGE_MAX` operations, and more than one only while they stay under
`BYTES_PER_MESSAGE_MAX`). Woken by a submission, it lets the event loop run one more
iteration before it takes the queue; it never waits for a timer or for I/O. So everything
submitted in the same or the next event-loop iteration, and everything submitted while the
previous message was being written, travels in one message.
On a plain Pipeline stream (`batched=False`, for nodes older than PipelineBatched) each
operation is its own message, as before.

What each submitted operation ends with (the same contract as a unary attempt, see
durakv._remote):
- its answer (the inner response of its OpResponse);
- its timeout passes: `BackendTimeoutError` if it had been handed to gRPC to send, else
  `ConnectionRefusedError` (it never left, and it never will: the writer skips a request
  abandoned before its turn, so the node never runs something the client gave up on);
- the stream breaks: the gRPC failure mapped as for a unary call (so auth failures stay
  auth failures) for operations handed to gRPC, `ConnectionRefusedError` for the others;
  the stream is then dead and the backend opens a new one for the next operation;
- the node does not serve the stream's RPC (UNIMPLEMENTED, an older node):
  `PipelineUnsupported` for every operation, sent or not (the node ran none of them), and
  the backend moves that node from PipelineBatched to Pipeline, then to unary calls. To
  keep that status readable the writer sends the stream's first message alone and waits
  for the node's initial metadata before it sends more (`_served`).

"Handed to gRPC" is as precise as gRPC Python lets it be: `call.write` may still be
waiting for the connection when the stream fails, and such an operation counts as maybe
sent -- the safe side for a mutation.

Tasks: one writer (sends queued operations in order) and one reader (matches answers) per
stream; a failure cancels the writer, `close()` cancels both and the call.

Invariant: an operation is in `_pending` from submission until it is answered, failed or
abandoned, never longer; the stream answers each opaque at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from typing import Any

import grpc

from durakv.proto import kv_pb2

from .._backend import BackendStatusError
from .._backends import BackendTimeoutError
from .._errors import KVStatus
from .._remote import fresh, op_response, rpc_failure

OPS_PER_MESSAGE_MAX = 256
BYTES_PER_MESSAGE_MAX = 1024 * 1024  # a single larger operation still travels, alone


class PipelineUnsupported(Exception):
    """The node does not serve this stream's RPC (an older node)."""


class _Entry:
    __slots__ = ("field", "future", "message", "opaque", "taken")

    def __init__(self, future: asyncio.Future, opaque: int, field: str, message: Any) -> None:
        self.future = future
        self.opaque = opaque
        self.field = field  # the operation's field in OpRequest
        self.message = message
        self.taken = False  # handed to gRPC to send


class PipelineStream:
    """A KV.PipelineBatched (or, `batched=False`, KV.Pipeline) call and the operations in flight on it."""

    def __init__(self, stub: Any, address: str, metadata: tuple[tuple[str, str], ...], *, batched: bool = True) -> None:
        self.batched = batched
        self._address = address
        self._queue: deque[_Entry] = deque()  # submitted, not yet taken by the writer
        self._queued = asyncio.Event()  # set when the queue gains an entry
        self._pending: dict[int, _Entry] = {}
        self._opaques = itertools.count(1)
        self.broken: Exception | None = None
        # What the writer handed to gRPC: stream messages, and operations in them.
        self.messages_sent = 0
        self.ops_sent = 0
        self._call = stub.PipelineBatched(metadata=metadata) if batched else stub.Pipeline(metadata=metadata)
        self._writer = asyncio.ensure_future(self._write_batches() if batched else self._write_each())
        self._reader = asyncio.ensure_future(self._read())

    async def submit(self, field: str, message: Any, timeout_s: float) -> Any:
        """Send one operation (`field` of OpRequest) and wait for its answer, at most `timeout_s`."""
        if self.broken is not None:
            raise ConnectionRefusedError(f"the pipeline to {self._address} is closed")
        loop = asyncio.get_running_loop()
        opaque = next(self._opaques)
        entry = _Entry(loop.create_future(), opaque, field, message)
        self._pending[opaque] = entry
        self._queue.append(entry)
        self._queued.set()
        timer = loop.call_later(timeout_s, self._expire, entry, timeout_s)
        try:
            return await entry.future
        finally:
            timer.cancel()
            self._pending.pop(opaque, None)

    def _expire(self, entry: _Entry, timeout_s: float) -> None:
        if entry.future.done():
            return
        if entry.taken:
            failure: Exception = BackendTimeoutError(f"no answer from {self._address} within {timeout_s:.3f} s")
        else:
            failure = ConnectionRefusedError(f"not sent to {self._address} within {timeout_s:.3f} s")
        entry.future.set_exception(failure)

    async def _next_entries(self) -> None:
        """Wait until the queue holds something."""
        while not self._queue:
            self._queued.clear()
            await self._queued.wait()

    async def _write_batches(self) -> None:
        """Send whatever is queued as one OpRequestBatch per write, skipping abandoned operations."""
        queue = self._queue
        while True:
            await self._next_entries()
            # One more loop turn before taking the queue: the answers of one message resume
            # their callers over a turn or two, and what they submit next then leaves together.
            await asyncio.sleep(0)
            batch = kv_pb2.OpRequestBatch()
            ops = batch.ops
            size = 0
            while queue and len(ops) < OPS_PER_MESSAGE_MAX:
                entry = queue[0]
                if entry.future.done():
                    queue.popleft()  # abandoned before it was sent: never send it
                    continue
                size += entry.message.ByteSize()
                if ops and size > BYTES_PER_MESSAGE_MAX:
                    break  # the next message takes it
                queue.popleft()
                entry.taken = True
                ops.add(opaque=entry.opaque, **{entry.field: entry.message})
            if not ops:
                continue
            self.messages_sent += 1
            self.ops_sent += len(ops)
            try:
                await self._call.write(batch)
                if self.messages_sent == 1 and not await self._served():
                    return
            except Exception:
                return  # the call ended: the reader reports how, for every operation in flight

    async def _write_each(self) -> None:
        """Send queued operations in order, one message each, skipping those abandoned before their turn."""
        queue = self._queue
        while True:
            await self._next_entries()
            entry = queue.popleft()
            if entry.future.done():
                continue  # abandoned before it was sent: never send it
            entry.taken = True
            self.messages_sent += 1
            self.ops_sent += 1
            try:
                await self._call.write(kv_pb2.OpRequest(opaque=entry.opaque, **{entry.field: entry.message}))
                if self.messages_sent == 1 and not await self._served():
                    return
            except Exception:
                return  # the call ended: the reader reports how, for every operation in flight

    async def _served(self) -> bool:
        """After the first message: wait until the node shows it serves the call (False: the call ended).

        A message written after the call ended makes gRPC Python report the call as INTERNAL,
        hiding the node's own status, so until the node has sent its initial metadata the
        writer sends nothing more: an older node's UNIMPLEMENTED stays UNIMPLEMENTED. A node
        sends PipelineBatched's initial metadata as soon as it has authenticated the call;
        Pipeline's come with its first answer.
        """
        await self._call.initial_metadata()
        return not self._call.done()

    async def _read(self) -> None:
        failure: Exception
        pending = self._pending
        try:
            async for message in self._call:
                for answer in message.ops if self.batched else (message,):
                    entry = pending.get(answer.opaque)
                    if entry is not None and not entry.future.done():
                        entry.future.set_result(op_response(answer))
            failure = ConnectionError(f"{self._address} ended the pipeline")
        except grpc.RpcError as error:
            failure = rpc_failure(error, self._address)
            if isinstance(failure, BackendStatusError) and failure.status == KVStatus.NOT_SUPPORTED:
                failure = PipelineUnsupported(str(failure))
        except asyncio.CancelledError:
            failure = ConnectionRefusedError(f"the pipeline to {self._address} was closed")
        self._fail(failure)

    def _fail(self, failure: Exception) -> None:
        self.broken = failure
        self._writer.cancel()
        for entry in list(self._pending.values()):
            if entry.future.done():
                continue
            never_sent = not entry.taken and not isinstance(failure, PipelineUnsupported)
            entry.future.set_exception(ConnectionRefusedError(f"not sent: {failure}") if never_sent else fresh(failure))

    async def close(self) -> None:
        self._call.cancel()
        for task in (self._writer, self._reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""One `KV.Pipeline` stream to one node: many operations in flight on one HTTP/2 stream.

kv.proto's Pipeline is the same operations as the unary calls on one long-lived
bidirectional stream, answered in any order and matched by `opaque`. It saves what a unary
call costs in gRPC Python (a new HTTP/2 stream, headers, metadata and authentication per
call): several times the throughput for small operations. This module owns the stream's
bookkeeping and nothing else; the backend decides routing, retries belong to the SDK.

What each submitted operation ends with (the same contract as a unary attempt, see
durakv._remote):
- its answer (the inner response of its OpResponse);
- its timeout passes: `BackendTimeoutError` if it had been handed to gRPC to send, else
  `ConnectionRefusedError` (it never left, and it never will: the writer skips a request
  abandoned before its turn, so the node never runs something the client gave up on);
- the stream breaks: the gRPC failure mapped as for a unary call (so auth failures stay
  auth failures) for operations handed to gRPC, `ConnectionRefusedError` for the others;
  the stream is then dead and the backend opens a new one for the next operation;
- the node has no Pipeline (UNIMPLEMENTED, an older node): `PipelineUnsupported`, and the
  backend falls back to unary calls for that node.

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
from typing import Any

import grpc

from durakv.proto import kv_pb2

from .._backend import BackendStatusError
from .._backends import BackendTimeoutError
from .._errors import KVStatus
from .._remote import fresh, op_response, rpc_failure


class PipelineUnsupported(Exception):
    """The node does not serve KV.Pipeline: use unary calls."""


class _Entry:
    __slots__ = ("future", "request", "taken")

    def __init__(self, future: asyncio.Future, request: Any) -> None:
        self.future = future
        self.request = request
        self.taken = False  # handed to gRPC to send


class PipelineStream:
    """A KV.Pipeline call and the operations in flight on it."""

    def __init__(self, stub: Any, address: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self._address = address
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._pending: dict[int, _Entry] = {}
        self._opaques = itertools.count(1)
        self.broken: Exception | None = None
        self._call = stub.Pipeline(metadata=metadata)
        self._writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read())

    async def submit(self, field: str, message: Any, timeout_s: float) -> Any:
        """Send one operation (`field` of OpRequest) and wait for its answer, at most `timeout_s`."""
        if self.broken is not None:
            raise ConnectionRefusedError(f"the pipeline to {self._address} is closed")
        opaque = next(self._opaques)
        entry = _Entry(asyncio.get_running_loop().create_future(), kv_pb2.OpRequest(opaque=opaque, **{field: message}))
        self._pending[opaque] = entry
        self._queue.put_nowait(opaque)
        try:
            return await asyncio.wait_for(entry.future, timeout_s)
        except TimeoutError:
            if entry.taken:
                raise BackendTimeoutError(f"no answer from {self._address} within {timeout_s:.3f} s") from None
            raise ConnectionRefusedError(f"not sent to {self._address} within {timeout_s:.3f} s") from None
        finally:
            self._pending.pop(opaque, None)

    async def _write(self) -> None:
        """Send queued operations in order, skipping those abandoned before their turn."""
        while True:
            opaque = await self._queue.get()
            entry = self._pending.get(opaque)
            if entry is None or entry.future.done():
                continue  # abandoned before it was sent: never send it
            entry.taken = True
            try:
                await self._call.write(entry.request)
            except Exception:
                return  # the call ended: the reader reports how, for every operation in flight

    async def _read(self) -> None:
        failure: Exception
        try:
            async for answer in self._call:
                entry = self._pending.get(answer.opaque)
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

"""The asyncio SDK's pipelined streams against in-process stand-ins for nodes of three ages.

Each stand-in is a grpc.aio server on a loopback port serving part of kv.proto's KV
service: all three ways in (PipelineBatched, Pipeline, unary Upsert), or Pipeline and
Upsert (a node older than PipelineBatched), or Upsert only (older still). It answers every
upsert SUCCESS with the value's length as its CAS and records the messages it receives.
The SDK side is the backend's own attempt path (`AsyncRemoteBackend._send`, no cluster
configuration needed), so what is checked is what an application's operations do:

- operations submitted together leave in one OpRequestBatch; a message holds at most 256
  of them, and more than one only while they stay under 1 MiB;
- a node without PipelineBatched (UNIMPLEMENTED) gets the same operations on Pipeline, one
  message each, and a node without either gets unary calls; no operation is lost or sent
  twice on the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from durakv._backend import Op
from durakv.aio._backend import AsyncRemoteBackend
from durakv.engine.errors import Status
from durakv.proto import kv_pb2

SERVICE = "durakv.kv.v1.KV"
TIMEOUT_S = 10.0


class StandIn:
    """A loopback gRPC server serving `methods` of the KV service; `received` lists what came in."""

    def __init__(self, methods: tuple[str, ...]) -> None:
        self.methods = methods
        self.received: dict[str, list[list[int]]] = {name: [] for name in methods}  # per message: opaques
        self.message_sizes: list[int] = []
        self.server: grpc.aio.Server | None = None
        self.address = ""

    @staticmethod
    def answer(item: kv_pb2.OpRequest) -> kv_pb2.OpResponse:
        upsert = kv_pb2.MutationResponse(status=Status.SUCCESS, cas=len(item.upsert.value) + 1)
        return kv_pb2.OpResponse(opaque=item.opaque, upsert=upsert)

    async def pipeline_batched(self, requests, context):
        async for batch in requests:
            self.received["PipelineBatched"].append([item.opaque for item in batch.ops])
            self.message_sizes.append(batch.ByteSize())
            yield kv_pb2.OpResponseBatch(ops=[self.answer(item) for item in batch.ops])

    async def pipeline(self, requests, context):
        async for item in requests:
            self.received["Pipeline"].append([item.opaque])
            yield self.answer(item)

    async def upsert(self, request, context):
        self.received["Upsert"].append([0])
        return kv_pb2.MutationResponse(status=Status.SUCCESS, cas=len(request.value) + 1)

    async def __aenter__(self) -> StandIn:
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        streams: dict[str, tuple[Callable, type, type]] = {
            "PipelineBatched": (self.pipeline_batched, kv_pb2.OpRequestBatch, kv_pb2.OpResponseBatch),
            "Pipeline": (self.pipeline, kv_pb2.OpRequest, kv_pb2.OpResponse),
        }
        for name in self.methods:
            if name == "Upsert":
                handlers[name] = grpc.unary_unary_rpc_method_handler(
                    self.upsert,
                    request_deserializer=kv_pb2.UpsertRequest.FromString,
                    response_serializer=kv_pb2.MutationResponse.SerializeToString,
                )
            else:
                call, request_cls, response_cls = streams[name]
                handlers[name] = grpc.stream_stream_rpc_method_handler(
                    call,
                    request_deserializer=request_cls.FromString,
                    response_serializer=response_cls.SerializeToString,
                )
        self.server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        )
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        await self.server.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        assert self.server is not None
        await self.server.stop(None)


def upsert(i: int, size: int = 10) -> kv_pb2.UpsertRequest:
    return kv_pb2.UpsertRequest(header=kv_pb2.RequestHeader(bucket="default", key=b"k%d" % i), value=b"v" * size)


async def send_all(backend: AsyncRemoteBackend, address: str, messages: list[kv_pb2.UpsertRequest]) -> list[int]:
    """Every message submitted in the same event-loop iteration; the CAS of each answer."""
    answers = await asyncio.gather(*(backend._send(address, Op.UPSERT, m, TIMEOUT_S) for m in messages))
    return [a.cas for a in answers]


def run(scenario) -> None:
    async def main() -> None:
        backend = AsyncRemoteBackend("durakv://127.0.0.1:1", {})
        try:
            await scenario(backend)
        finally:
            await backend.close()

    asyncio.run(main())


def test_operations_submitted_together_share_a_message_within_the_caps():
    async def scenario(backend: AsyncRemoteBackend) -> None:
        async with StandIn(("PipelineBatched", "Pipeline", "Upsert")) as node:
            assert await send_all(backend, node.address, [upsert(i) for i in range(64)]) == [11] * 64
            assert [len(m) for m in node.received["PipelineBatched"]] == [64]
            # At most 256 operations in one message.
            assert await send_all(backend, node.address, [upsert(i) for i in range(300)]) == [11] * 300
            assert [len(m) for m in node.received["PipelineBatched"][1:]] == [256, 44]
            # At most 1 MiB, unless a single operation is larger: it travels alone.
            big = [upsert(i, 400_000) for i in range(5)] + [upsert(5, 1_500_000)]
            assert await send_all(backend, node.address, big) == [400_001] * 5 + [1_500_001]
            assert [len(m) for m in node.received["PipelineBatched"][3:]] == [2, 2, 1, 1]
            assert max(node.message_sizes[3:-1]) <= 1 << 20 < node.message_sizes[-1]
            opaques = [o for m in node.received["PipelineBatched"] for o in m]
            assert opaques == list(range(1, len(opaques) + 1))  # each sent once, in submission order
            stream = backend._node(node.address).pipeline
            assert (stream.batched, stream.messages_sent, stream.ops_sent) == (True, 7, 370)
            assert node.received["Pipeline"] == node.received["Upsert"] == []

    run(scenario)


@pytest.mark.parametrize("methods", [("Pipeline", "Upsert"), ("Upsert",)], ids=["pipeline-only", "unary-only"])
def test_an_older_node_gets_the_operations_the_way_it_serves(methods):
    async def scenario(backend: AsyncRemoteBackend) -> None:
        async with StandIn(methods) as node:
            assert await send_all(backend, node.address, [upsert(i) for i in range(16)]) == [11] * 16
            assert await send_all(backend, node.address, [upsert(i) for i in range(16)]) == [11] * 16
            served = methods[0]
            assert sum(len(m) for m in node.received[served]) == 32  # each operation once
            if served == "Pipeline":
                assert all(len(m) == 1 for m in node.received["Pipeline"])
            state = backend._node(node.address)
            assert (state.batched, state.use_pipeline) == (False, served == "Pipeline")

    run(scenario)

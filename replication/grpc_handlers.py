"""Registering a gRPC service so that a request that does not decode gets a typed answer.

Owns `add_service` and the `MALFORMED` sentinel. The generated registration
(`add_*Servicer_to_server`) ends a call whose request does not parse with gRPC UNKNOWN and
logs a traceback per request; every durakv server (node and manager) registers its
services here instead, so garbage on the wire is answered with status EINVAL in the
response (kv.proto, "Limits") and changes nothing.

Must never decide anything about a request that did decode (the servicer does).
"""

from __future__ import annotations

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from durakv.engine.errors import Status

MALFORMED = object()  # what a request that does not decode arrives as


def add_service(server: grpc.aio.Server, servicer, service: ServiceDescriptor) -> None:
    """Register `servicer`'s methods for `service`, answering requests that do not decode.

    The generated registration (`add_*Servicer_to_server`) ends such a call with an error and
    logs a traceback per request. Here a malformed request is answered with EINVAL in its
    response (kv.proto, "Limits"); a response without a status (BatchResponse) ends the call
    INVALID_ARGUMENT; a malformed Pipeline item reaches the servicer as `MALFORMED`.
    """
    handlers = {}
    for method in service.methods:
        parse = _tolerant(GetMessageClass(method.input_type))
        response_cls = GetMessageClass(method.output_type)
        call = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                call, request_deserializer=parse, response_serializer=response_cls.SerializeToString
            )
        else:
            assert not method.client_streaming and not method.server_streaming, method.full_name
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _guarded(call, response_cls),
                request_deserializer=parse,
                response_serializer=response_cls.SerializeToString,
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _tolerant(message_cls):
    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except DecodeError:
            return MALFORMED

    return parse


def _guarded(call, response_cls):
    has_status = "status" in response_cls.DESCRIPTOR.fields_by_name

    async def handler(request, context):
        if request is not MALFORMED:
            return await call(request, context)
        if not has_status:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request does not decode")
        return response_cls(status=Status.EINVAL, message="the request does not decode")

    return handler

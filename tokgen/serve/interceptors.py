"""Server interceptors' common piece, ``guarded``, and the malformed-request guard.

An interceptor that must refuse some calls (no API key, bytes that are not a request)
wraps the method's handler so that a check runs first and may abort the call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

Check = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]


def guarded(handler: grpc.RpcMethodHandler, check: Check, deserialize: Callable | None = None):
    """``handler`` with ``await check(request, context)`` first (the request is None for
    client-streaming methods); ``deserialize`` replaces the handler's own."""
    deserialize = deserialize or handler.request_deserializer
    serialize = handler.response_serializer
    if handler.unary_unary:
        unary_unary = handler.unary_unary

        async def checked_unary_unary(request, context):
            await check(request, context)
            return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(checked_unary_unary, deserialize, serialize)
    if handler.unary_stream:
        unary_stream = handler.unary_stream

        async def checked_unary_stream(request, context):
            await check(request, context)
            async for reply in unary_stream(request, context):
                yield reply

        return grpc.unary_stream_rpc_method_handler(checked_unary_stream, deserialize, serialize)
    if handler.stream_unary:
        stream_unary = handler.stream_unary

        async def checked_stream_unary(requests, context):
            await check(None, context)
            return await stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(checked_stream_unary, deserialize, serialize)
    stream_stream = handler.stream_stream

    async def checked_stream_stream(requests, context):
        await check(None, context)
        async for reply in stream_stream(requests, context):
            yield reply

    return grpc.stream_stream_rpc_method_handler(checked_stream_stream, deserialize, serialize)


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Bytes that do not parse as the method's request message get INVALID_ARGUMENT (grpc
    itself would answer UNKNOWN and log a traceback for every one)."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        parse = handler.request_deserializer
        malformed = object()

        def deserialize(data: bytes):
            try:
                return parse(data)
            except DecodeError:
                return malformed

        async def check(request, context: grpc.aio.ServicerContext) -> None:
            if request is malformed:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid message for {details.method}",
                )

        return guarded(handler, check, deserialize)

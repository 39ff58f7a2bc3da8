"""Server interceptors: call counting, the malformed-request guard, and their common piece.

An interceptor wraps a method's handler (``wrapped``) to run code around the whole call:
counting its final status (``CallMetricsInterceptor``), or a check first that may abort
it (``guarded``: no API key, bytes that are not a request)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from tokgen.monitoring import metrics

# Infrastructure calls: probes would drown the API's own counts.
UNCOUNTED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Check = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]
Around = Callable[[Any, grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]


def wrapped(handler: grpc.RpcMethodHandler, around: Around, deserialize: Callable | None = None):
    """``handler`` run inside ``async with around(request, context)`` (the request is None
    for client-streaming methods; a streaming reply is produced inside it, to its end);
    ``deserialize`` replaces the handler's own."""
    deserialize = deserialize or handler.request_deserializer
    serialize = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            around_call(handler.unary_unary, around, False), deserialize, serialize
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            around_call(handler.unary_stream, around, False), deserialize, serialize
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            around_call(handler.stream_unary, around, True), deserialize, serialize
        )
    return grpc.stream_stream_rpc_method_handler(
        around_call(handler.stream_stream, around, True), deserialize, serialize
    )


def around_call(method: Callable, around: Around, request_streaming: bool) -> Callable:
    """``method`` (a servicer method in either of grpc.aio's forms) inside ``around``, in
    the same form, since grpc dispatches on it: a coroutine (a reply returned, or sent
    through ``context.write`` as grpc's own health ``Watch`` does) is awaited; an async
    generator's replies are yielded on, and it is closed inside the call, so what it holds
    is released when the client leaves (not whenever it is garbage-collected), before
    ``around`` sees the call end."""

    def seen(request):  # what ``around`` is given: a request stream is not looked at
        return None if request_streaming else request

    if not (inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)):
        raise TypeError(f"{method!r} is not a grpc.aio servicer method (async def, or an async generator)")
    if inspect.iscoroutinefunction(method):

        async def around_coroutine(request, context):
            async with around(seen(request), context):
                return await method(request, context)

        return around_coroutine

    async def around_generator(request, context):
        async with around(seen(request), context), aclosing(method(request, context)) as replies:
            async for reply in replies:
                yield reply

    return around_generator


def guarded(handler: grpc.RpcMethodHandler, check: Check, deserialize: Callable | None = None):
    """``handler`` with ``await check(request, context)`` first: it may abort the call."""

    @asynccontextmanager
    async def checked(request, context):
        await check(request, context)
        yield

    return wrapped(handler, checked, deserialize)


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with, as the client sees it: what an abort set, else OK,
    UNKNOWN for an uncaught error (what grpc answers then), CANCELLED or DEADLINE_EXCEEDED
    when the client went away or ran out of time.

    A client that leaves while a stream's reply is being sent does not cancel the handler:
    grpc drops the reply generator, which Python closes later (``GeneratorExit``) with
    neither a code nor ``cancelled()`` set on the context. That is a cancellation too, not
    an uncaught error (it was counted UNKNOWN, about one call in 150 under load)."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code = context.code()
    if code is not None:
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class CallMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call but health checks and reflection by method and final status
    (``tokgen_requests_total``). Outermost, so it also counts what the other interceptors
    refuse."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(UNCOUNTED_PREFIXES):
            return handler
        method = details.method.rsplit("/", 1)[-1]

        @asynccontextmanager
        async def counted(request, context):
            error: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                metrics.count_call(method, final_code(context, error))

        return wrapped(handler, counted)


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

"""``wrapped``, the piece every server interceptor runs a call through, on a real grpc.aio
server over a socket: both forms of a streaming handler (async generator, coroutine that
writes through ``context.write``) pass through it, and a wrapped stream is closed inside
the call, before what wraps it (the access log, the call counter) sees the call end."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokgen.serve.admission import Admission
from tokgen.serve.interceptors import wrapped
from tokgen.serve.server import LIVE, build_server, mark_live


def test_health_watch_streams_status_changes_through_the_servers_interceptors(caplog):
    """grpc's health ``Watch`` is a coroutine that sends with ``context.write``: through
    the interceptors ``tokgen serve`` uses it must stream SERVING, then the change to
    NOT_SERVING, not fail with UNKNOWN ("'async for' requires an object with __aiter__")
    and a logged traceback."""

    async def scenario() -> list[int]:
        server, _, health, port = build_server("127.0.0.1:0", Admission(max_active=1, max_queued=0))
        await server.start()
        await mark_live(health)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=LIVE), timeout=20
                )
                statuses = [(await call.read()).status]
                await health.set(LIVE, health_pb2.HealthCheckResponse.NOT_SERVING)
                statuses.append((await call.read()).status)
                call.cancel()
                return statuses
        finally:
            await server.stop(1)

    with caplog.at_level(logging.INFO):
        statuses = asyncio.run(scenario())
    assert statuses == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


def test_a_wrapped_stream_is_closed_before_the_call_is_seen_to_end():
    """A client that leaves a stream while its reply is being sent (grpc then closes the
    wrapper with GeneratorExit rather than cancelling the handler): the handler's own
    clean-up (the admission slot and engine requests a ``Continue`` holds) runs before the
    wrapper's exit (the access-log line, the status count), not whenever the abandoned
    generator is finalized."""
    events: list[str] = []

    async def endless(request, context):
        try:
            while True:
                yield b"x" * 100_000  # more than a flow-control window: sends wait on the client
        finally:
            events.append("handler closed")

    @asynccontextmanager
    async def around(request, context):
        try:
            yield
        finally:
            events.append("call ended")

    async def scenario() -> None:
        server = grpc.aio.server()
        handler = wrapped(grpc.unary_stream_rpc_method_handler(endless), around)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"Endless": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_stream("/t.T/Endless")(b"", timeout=20)
                await call.read()
                call.cancel()
            for _ in range(200):
                if len(events) == 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            await server.stop(1)

    asyncio.run(scenario())
    assert events == ["handler closed", "call ended"]


def test_a_handler_that_is_not_async_is_refused_by_name():
    """grpc.aio dispatches on a servicer method's form; a plain function cannot keep it
    through the wrapper, so it is refused when wrapped, not on every call."""
    from tokgen.serve.interceptors import around_call

    def plain(request, context):
        return iter(())

    @asynccontextmanager
    async def around(request, context):
        yield

    with pytest.raises(TypeError, match=r"plain.*not a grpc\.aio servicer method"):
        around_call(plain, around, False)

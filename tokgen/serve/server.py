"""The ``grpc.aio`` server: TokgenService plus standard health and reflection.

Health: the service name ``live`` is SERVING as soon as the server listens; the overall
status ("") and ``tokgen.v1.TokgenService`` become SERVING only once the engines and
models are loaded (``mark_ready``), so a load balancer sends no traffic before that.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokgen.codec import load_codec
from tokgen.codec.base import Codec
from tokgen.engine.factory import Backend
from tokgen.prior.generate import load_priors
from tokgen.prior.sampler import LevelPrior
from tokgen.serve.auth import ApiKeyInterceptor
from tokgen.serve.service import TokgenServicer
from tokgen.v1 import tokgen_pb2, tokgen_pb2_grpc

SERVICE_NAME = tokgen_pb2.DESCRIPTOR.services_by_name["TokgenService"].full_name
LIVE = "live"
MAX_REQUEST_BYTES = 64 << 20  # a 60 s WAV prime at 48 kHz stereo 16-bit is ~11 MB


def build_server(
    address: str,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_active: int = 32,
    api_keys: list[bytes] | None = None,
) -> tuple[grpc.aio.Server, TokgenServicer, health.aio.HealthServicer, int]:
    """A server bound to ``address`` (not started), its servicers and the bound port.
    With ``api_keys``, every call but health checks must present one."""
    server = grpc.aio.server(
        interceptors=[ApiKeyInterceptor(api_keys)] if api_keys else None,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 16 << 20),
        ],
    )
    servicer = TokgenServicer(max_request_bytes, max_active)
    tokgen_pb2_grpc.add_TokgenServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((SERVICE_NAME, health_name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    return server, servicer, health_servicer, port


async def mark_live(health_servicer: health.aio.HealthServicer) -> None:
    """Listening, models not loaded yet."""
    await health_servicer.set(LIVE, health_pb2.HealthCheckResponse.SERVING)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


async def mark_ready(
    servicer: TokgenServicer,
    health_servicer: health.aio.HealthServicer,
    codec: Codec,
    priors: list[LevelPrior],
) -> None:
    """Serve TokgenService with the loaded models and report ready."""
    servicer.attach(codec, priors)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


async def serve(
    host: str,
    port: int,
    codec_dir: str | None,
    priors_dir: str | None,
    backend: Backend,
    grace_seconds: float,
    on_listening: Callable[[int], None],
    api_keys: list[bytes] | None = None,
) -> None:
    """Listen at once (health: live), load the models (ready), serve until SIGTERM or
    SIGINT, then stop accepting calls and give in-flight streams ``grace_seconds``."""
    server, servicer, health_servicer, bound = build_server(f"{host}:{port}", api_keys=api_keys)
    await server.start()
    await mark_live(health_servicer)
    on_listening(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    priors: list[LevelPrior] = []
    try:
        codec = await asyncio.to_thread(load_codec, codec_dir)
        loading = asyncio.ensure_future(asyncio.to_thread(load_priors, priors_dir, codec, backend))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            priors = loading.result()
            await mark_ready(servicer, health_servicer, codec, priors)
            await stop.wait()
    finally:
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(grace_seconds)
        await asyncio.gather(*(p.engine.close() for p in priors))

"""The ``grpc.aio`` server: TokgenService plus standard health and reflection.

Health: the service name ``live`` is SERVING as soon as the server listens; the overall
status ("") and ``tokgen.v1.TokgenService`` become SERVING only once the engines and
models are loaded (``mark_ready``), so a load balancer sends no traffic before that.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokgen.codec.base import Codec
from tokgen.prior.sampler import LevelPrior
from tokgen.serve.service import TokgenServicer
from tokgen.v1 import tokgen_pb2, tokgen_pb2_grpc

SERVICE_NAME = tokgen_pb2.DESCRIPTOR.services_by_name["TokgenService"].full_name
LIVE = "live"
MAX_REQUEST_BYTES = 64 << 20  # a 60 s WAV prime at 48 kHz stereo 16-bit is ~11 MB


def build_server(
    address: str, max_request_bytes: int = MAX_REQUEST_BYTES
) -> tuple[grpc.aio.Server, TokgenServicer, health.aio.HealthServicer, int]:
    """A server bound to ``address`` (not started), its servicers and the bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 16 << 20),
        ]
    )
    servicer = TokgenServicer(max_request_bytes)
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

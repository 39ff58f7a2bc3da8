"""gRPC health (``grpc.health.v1``) on a plaintext port of its own, for probes.

The API port may demand TLS and API keys, which Kubernetes' gRPC probes and a container
HEALTHCHECK cannot present; health says nothing secret, so with ``--health-port`` it is
also served alone, without either. Workers, which have no API port, serve it the same
way. Service names: ``live`` is SERVING while the process runs; the overall status ("")
only once it can do its work (models loaded).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tokgen.errors import TokgenError
from tokgen.settings import host_port

LIVE = "live"


def health_server(host: str, port: int, servicer: health.aio.HealthServicer) -> tuple[grpc.aio.Server, int]:
    """A server (not started) serving only ``servicer``, and its bound port."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = host_port(host, port)
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise TokgenError(
            f"cannot listen on {address} for health checks (port in use or address not local); "
            "choose another --health-port (TOKGEN_HEALTH_PORT)"
        )
    return server, bound


async def set_status(servicer: health.aio.HealthServicer, serving: bool, *names: str) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in names:
        await servicer.set(name, status)


def check(address: str, service: str = "", timeout_s: float = 5.0) -> str:
    """The status name (SERVING, NOT_SERVING, ...) of ``service`` at ``address``; raises
    ``TokgenError`` when nothing answers."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            raise TokgenError(
                f"health check of {address} failed: {exc.code().name}: {exc.details()}"
            ) from None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

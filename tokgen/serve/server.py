"""The ``grpc.aio`` server: TokgenService plus standard health and reflection; with
``--http-port``, the HTTP API and page (``serve/http.py``) in the same event loop, over the
same servicers.

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

from tokgen.assets import DEFAULT_CODEC_DIR, DEFAULT_PRIORS_DIR
from tokgen.errors import TokgenError
from tokgen.generation.generator import Generator, load_generator
from tokgen.jobs.gauges import sample_queue
from tokgen.jobs.queue import QueueConfig, open_queue
from tokgen.jobs.worker import Worker
from tokgen.monitoring import metrics
from tokgen.monitoring.health import LIVE, health_server, set_status
from tokgen.serve.access_log import AccessLogInterceptor, quiet_client_departures
from tokgen.serve.admission import Admission
from tokgen.serve.auth import ApiKeyInterceptor, load_api_keys
from tokgen.serve.http import HttpApi, HttpServer
from tokgen.serve.interceptors import CallMetricsInterceptor, MalformedRequestInterceptor
from tokgen.serve.jobs_service import JobServicer
from tokgen.serve.security import TlsFiles, check_exposure, tls_files
from tokgen.serve.service import TokgenServicer
from tokgen.settings import Settings, host_port, redact_url
from tokgen.v1 import jobs_pb2, jobs_pb2_grpc, tokgen_pb2, tokgen_pb2_grpc

SERVICE_NAME = tokgen_pb2.DESCRIPTOR.services_by_name["TokgenService"].full_name
JOB_SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
MAX_REPLY_BYTES = 64 << 20


def build_server(
    address: str,
    admission: Admission,
    max_request_bytes: int = 64 << 20,
    api_keys: list[bytes] | None = None,
    tls: TlsFiles | None = None,
    jobs: JobServicer | None = None,
    operator_keys: list[bytes] | None = None,
    max_concurrent_rpcs: int | None = None,
) -> tuple[grpc.aio.Server, TokgenServicer, health.aio.HealthServicer, int]:
    """A server bound to ``address`` (not started), its servicers and the bound port.
    With ``api_keys`` (or ``operator_keys``: keys that see every tenant's jobs), every
    call but health checks must present one; with ``tls``, the port speaks only TLS
    (mutual TLS if it names a client CA); with ``jobs``, it also serves ``JobService``.
    Beyond ``max_concurrent_rpcs`` calls in flight, grpc answers RESOURCE_EXHAUSTED before
    reading the request."""
    keyed = bool(api_keys or operator_keys)
    quiet_client_departures()
    server = grpc.aio.server(
        # The first interceptor wraps what the others return: it logs every call, the
        # second counts it; the API key is checked next, before the request is parsed (a
        # denied call's bytes are never decoded), then the malformed-request guard parses it.
        interceptors=[
            AccessLogInterceptor(),
            CallMetricsInterceptor(),
            *([ApiKeyInterceptor(api_keys or [], operator_keys)] if keyed else []),
            MalformedRequestInterceptor(),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            # GetJobResult of a 600 s job: a 19 MB WAV and its codes
            ("grpc.max_send_message_length", MAX_REPLY_BYTES),
        ],
    )
    servicer = TokgenServicer(max_request_bytes, admission)
    tokgen_pb2_grpc.add_TokgenServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    names = [SERVICE_NAME, health_name, reflection.SERVICE_NAME]
    if jobs is not None:
        jobs_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
        names.append(JOB_SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.server_credentials())
    if port == 0:
        raise TokgenError(f"cannot listen on {address} (address in use or not local)")
    return server, servicer, health_servicer, port


async def mark_live(health_servicer: health.aio.HealthServicer) -> None:
    """Listening, models not loaded yet."""
    await set_status(health_servicer, True, LIVE)
    await set_status(health_servicer, False, "", SERVICE_NAME)


async def mark_ready(
    servicer: TokgenServicer,
    health_servicer: health.aio.HealthServicer,
    generator: Generator,
) -> None:
    """Serve TokgenService with the loaded models and report ready."""
    servicer.attach(generator)
    await set_status(health_servicer, True, "", SERVICE_NAME)


async def serve(config: Settings, on_listening: Callable[[dict], None]) -> None:
    """Listen at once (health: live), load the models (ready), serve until SIGTERM or
    SIGINT, then stop accepting calls and give in-flight streams ``grace_seconds``.

    Batch jobs: a queue on ``redis_url``, or on an embedded redis-server this process
    owns, and (unless ``worker`` is off) a worker in this process, sharing the engines
    with the streams so that all of them batch together."""
    tls = tls_files(config.tls_cert, config.tls_key, config.tls_client_ca)
    api_keys = load_api_keys(config.api_keys_file)
    operator_keys = load_api_keys(config.operator_keys_file, env="TOKGEN_OPERATOR_API_KEYS")
    check_exposure(config.host, tls, bool(api_keys or operator_keys), config.insecure)
    queue_config = QueueConfig(
        lease_s=config.lease_seconds,
        retention_s=config.job_retention_seconds,
        result_ttl_s=config.result_ttl_seconds,
        max_per_owner=config.max_jobs_per_key,
    )
    codec_dir, priors_dir = config.codec or DEFAULT_CODEC_DIR, config.priors or DEFAULT_PRIORS_DIR
    await asyncio.to_thread(metrics.set_serving_model, codec_dir, priors_dir)  # before the first call
    async with open_queue(config.redis_url, config.cache_dir / "redis", queue_config) as (queue, redis_url):
        jobs = JobServicer(queue, max_preparing=config.max_preparing, max_watchers=config.max_watchers)
        server, servicer, health_servicer, bound = build_server(
            host_port(config.host, config.port),
            Admission(config.max_active, config.max_queued),
            config.max_request_bytes,
            api_keys or None,
            tls,
            jobs,
            operator_keys or None,
            config.max_concurrent_rpcs,
        )
        metrics_port = metrics.start_metrics_server(config.host, config.metrics_port)
        servers: list[grpc.aio.Server | HttpServer] = [server]
        where = {
            "listening": host_port(config.host, bound),
            "metrics": host_port(config.host, metrics_port),
            "redis": redact_url(redis_url),
        }
        if config.http_port is not None:  # the same servicers, keys and TLS over HTTP
            api = HttpApi(servicer, jobs, api_keys or None, operator_keys or None)
            http = HttpServer(
                api, config.host, config.http_port, tls, config.max_concurrent_rpcs, config.grace_seconds
            )
            servers.append(http)
            where["http"] = host_port(config.host, http.port)
        if config.health_port is not None:
            probe_server, probe_port = health_server(config.host, config.health_port, health_servicer)
            servers.append(probe_server)
            where["health"] = host_port(config.host, probe_port)
        for s in servers:
            await s.start()
        await mark_live(health_servicer)
        on_listening(where)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        generator: Generator | None = None
        working: asyncio.Task | None = None
        sampling = asyncio.create_task(sample_queue(queue, stop))
        try:
            loading = asyncio.ensure_future(load_generator(config, "server"))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if loading.done():
                generator = loading.result()
                jobs.attach(generator)
                if config.worker:
                    worker = Worker(queue, generator, concurrency=config.worker_concurrency)
                    working = asyncio.create_task(worker.run(stop, grace_s=config.grace_seconds))
                await mark_ready(servicer, health_servicer, generator)
                await stop.wait()
        finally:
            stop.set()  # also when loading failed: the sampler and the worker end
            await set_status(health_servicer, False, "", SERVICE_NAME)
            await asyncio.gather(
                *(s.stop(config.grace_seconds) for s in servers), sampling, *([working] if working else [])
            )
            if generator is not None:
                await generator.aclose()

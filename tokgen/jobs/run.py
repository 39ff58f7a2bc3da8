"""``tokgen worker``: connect to Redis (or start the embedded one), load the models and
run a ``Worker`` until SIGTERM or SIGINT, then hand unfinished jobs back."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from grpc_health.v1 import health

from tokgen.generation.generator import Generator, load_generator
from tokgen.jobs.gauges import sample_queue
from tokgen.jobs.queue import QueueConfig, open_queue
from tokgen.jobs.worker import Worker
from tokgen.monitoring import metrics
from tokgen.monitoring.health import LIVE, health_server, set_status
from tokgen.settings import Settings, host_port, redact_url


async def run_worker(config: Settings, on_ready: Callable[[dict], None]) -> None:
    """Health (with ``health_port``): ``live`` at once, overall SERVING once the models are
    loaded; ``/metrics`` from the start, so a scrape sees ``tokgen_redis_up`` while loading."""
    queue_config = QueueConfig(
        lease_s=config.lease_seconds,
        retention_s=config.job_retention_seconds,
        result_ttl_s=config.result_ttl_seconds,
    )
    async with open_queue(config.redis_url, config.cache_dir / "redis", queue_config) as (queue, url):
        generator: Generator | None = None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        probes = health.aio.HealthServicer()
        probe_server = None
        if config.health_port is not None:
            probe_server, probe_port = health_server(config.host, config.health_port, probes)
            await probe_server.start()
            await set_status(probes, True, LIVE)
            await set_status(probes, False, "")
        metrics_port = metrics.start_metrics_server(config.host, config.metrics_port)
        sampling = asyncio.create_task(sample_queue(queue, stop))
        try:
            generator = await load_generator(config, "worker")
            worker = Worker(queue, generator, concurrency=config.worker_concurrency)
            where = {
                "worker": worker.name,
                "redis": redact_url(url),
                "metrics": host_port(config.host, metrics_port),
            }
            if probe_server is not None:
                where["health"] = host_port(config.host, probe_port)
            await set_status(probes, True, "")
            on_ready(where)
            await worker.run(stop, grace_s=config.grace_seconds)
        finally:
            stop.set()
            await set_status(probes, False, "")
            await sampling
            if probe_server is not None:
                await probe_server.stop(0)
            if generator is not None:
                await generator.aclose()

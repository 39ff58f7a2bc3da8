"""``tokgen worker``: connect to Redis (or start the embedded one), load the models and
run a ``Worker`` until SIGTERM or SIGINT, then hand unfinished jobs back."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from tokgen.codec import load_codec
from tokgen.jobs.queue import JobQueue, QueueConfig, check_redis, connect
from tokgen.jobs.redis_server import EmbeddedRedis
from tokgen.jobs.worker import Worker
from tokgen.prior.generate import load_priors
from tokgen.serve.metrics import start_metrics_server
from tokgen.settings import Settings


async def run_worker(config: Settings, on_ready: Callable[[dict], None], grace_seconds: float = 10.0) -> None:
    embedded, url = None, config.redis_url
    if url is None:
        embedded, url = EmbeddedRedis.start_or_join(config.cache_dir / "redis")
    await check_redis(url)
    client = connect(url)
    priors = []
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        codec = await asyncio.to_thread(load_codec, config.codec)
        priors = await asyncio.to_thread(load_priors, config.priors, codec, config.engine_backend)
        queue = JobQueue(client, QueueConfig(lease_s=config.lease_seconds))
        worker = Worker(queue, codec, priors, concurrency=config.worker_concurrency)
        metrics_port = start_metrics_server(config.host, config.metrics_port)
        on_ready({"worker": worker.name, "redis": url, "metrics": f"{config.host}:{metrics_port}"})
        await worker.run(stop, grace_s=grace_seconds)
    finally:
        await asyncio.gather(*(p.engine.close() for p in priors))
        await client.aclose()
        if embedded is not None:
            embedded.stop()

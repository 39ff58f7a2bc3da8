"""The queue gauges (``tokgen_jobs_queued``, ``_running``, ``_delayed``, ``_jobs_dead_letter``)
and ``tokgen_redis_up``, sampled from Redis every few seconds.

Sampled, not computed at scrape time, because the Redis client is asynchronous and the
metrics thread is not; and with a short timeout of its own, because the queue's client
retries for ~30 s through an outage, and an outage is exactly when ``redis_up`` must drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from tokgen.jobs.queue import JobQueue
from tokgen.monitoring import metrics

log = logging.getLogger(__name__)


async def sample_queue(
    queue: JobQueue, stop: asyncio.Event, every_s: float = 2.0, timeout_s: float = 3.0
) -> None:
    """Until ``stop``: refresh the gauges every ``every_s``."""
    up = True
    while not stop.is_set():
        try:
            async with asyncio.timeout(timeout_s):
                depth = await queue.depth()  # creates the consumer groups if there are none
        except (RedisError, OSError, TimeoutError) as exc:
            if up:  # log the change, not every sample
                log.warning("redis unreachable: %s", exc)
            up = False
            metrics.REDIS_UP.set(0)
        else:
            up = True
            metrics.REDIS_UP.set(1)
            for priority, n in depth.queued.items():
                metrics.JOBS_QUEUED.labels(priority).set(n)
            for priority, n in depth.running.items():
                metrics.JOBS_RUNNING.labels(priority).set(n)
            metrics.JOBS_DELAYED.set(depth.delayed)
            metrics.DEAD_LETTERS.set(depth.dead)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)

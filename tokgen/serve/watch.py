"""WatchJob's poller: one per server, however many calls watch.

Every watched job is read once per interval (all of them in one Redis round trip), and each
change is handed to every call watching that job; a call waits on an event, it does not
poll. At most ``max_watchers`` calls watch at once (``WatchersFull`` beyond: the servicer
answers RESOURCE_EXHAUSTED), so neither Redis traffic nor waiting calls grow without bound.
The poller runs only while someone watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from redis.exceptions import RedisError

from tokgen.jobs.states import Job

log = logging.getLogger(__name__)

Read = Callable[[list[str]], Awaitable[list[Job | None]]]


class WatchersFull(Exception):
    def __init__(self, limit: int):
        super().__init__(f"{limit} calls already watch jobs on this server; retry later or poll GetJob")


class Watched:
    """One job's latest record, as the poller last read it (None: it no longer exists), and
    a version that grows with every change."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self.version = 0
        self.refs = 0  # calls watching it
        self._changed = asyncio.Event()

    def update(self, job: Job | None) -> None:
        if self.version and job == self.job:
            return
        self.job, self.version = job, self.version + 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()  # wakes every call waiting for this change

    async def after(self, seen: int) -> tuple[int, Job | None]:
        """The first record newer than version ``seen`` (waits for the poller's next change)."""
        while self.version <= seen:
            await self._changed.wait()
        return self.version, self.job


class Watchers:
    def __init__(self, read: Read, every_s: float = 0.5, max_watchers: int = 64):
        self.read = read
        self.every_s = every_s
        self.max_watchers = max_watchers
        self.count = 0  # calls watching now
        self.polls = 0  # reads made (one per interval while anyone watches)
        self._jobs: dict[str, Watched] = {}
        self._task: asyncio.Task | None = None

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Watched]:
        """Watch ``job_id`` for the body; ``WatchersFull`` at once when the server has
        ``max_watchers`` already."""
        if self.count >= self.max_watchers:
            raise WatchersFull(self.max_watchers)
        self.count += 1
        watched = self._jobs.setdefault(job_id, Watched())
        watched.refs += 1
        if self._task is None:
            self._task = asyncio.create_task(self._poll())
        try:
            yield watched
        finally:
            self.count -= 1
            watched.refs -= 1
            if not watched.refs:
                del self._jobs[job_id]

    async def _poll(self) -> None:
        try:
            while self._jobs:
                ids = list(self._jobs)
                try:
                    jobs = await self.read(ids)
                except (RedisError, OSError) as exc:  # watchers wait on; the next read may work
                    log.warning("watching %d jobs: %s", len(ids), exc)
                else:
                    self.polls += 1
                    for job_id, job in zip(ids, jobs, strict=True):
                        if (watched := self._jobs.get(job_id)) is not None:
                            watched.update(job)
                await asyncio.sleep(self.every_s)
        finally:
            self._task = None  # nobody watches (or the loop is closing): the next watch starts one

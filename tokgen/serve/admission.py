"""Bounded admission: a few continuations run, a few wait, the rest are refused at once.

Every running continuation shares the engines (that is what batches them), so each one
admitted slows the others; a server that admitted everything would miss every client's
time-to-first-audio. So at most ``max_active`` run; up to ``max_queued`` more wait for a
slot; beyond that a call gets ``Busy`` (RESOURCE_EXHAUSTED with a retry hint), never an
unbounded backlog.

Waiting calls are served in order of *due time*: arrival plus a priority delay. A high
priority call overtakes normal ones that arrived up to ``PRIORITY_DELAY_S`` earlier, but a
low one that has waited long enough goes first: no priority is starved forever.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from tokgen.generation.spec import Priority

PRIORITY_DELAY_S: dict[Priority, float] = {"high": -10.0, "normal": 0.0, "low": 10.0}


def due_time(priority: Priority, arrived: float) -> float:
    """When a waiting call is due: earlier due times get the next free slot."""
    return arrived + PRIORITY_DELAY_S[priority]


class Busy(Exception):
    def __init__(self, active: int, waiting: int):
        super().__init__(f"server busy ({active} continuations running, {waiting} waiting)")
        self.active, self.waiting = active, waiting


class Admission:
    def __init__(self, max_active: int, max_queued: int, clock: Callable[[], float] = time.monotonic):
        if max_active < 1 or max_queued < 0:
            raise ValueError("max_active must be >= 1 and max_queued >= 0")
        self.max_active, self.max_queued = max_active, max_queued
        self.active = 0  # calls holding a slot
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []  # a heap by due time
        self._order = itertools.count()  # ties: first come, first served
        self._clock = clock

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def slot(self, priority: Priority = "normal") -> AsyncIterator[None]:
        """Hold a slot for the body; raises ``Busy`` when no slot and no queue place is free."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: Priority) -> None:
        if self.active < self.max_active and not self._waiting:
            self.active += 1
            return
        if len(self._waiting) >= self.max_queued:
            raise Busy(self.active, len(self._waiting))
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (due_time(priority, self._clock()), next(self._order), granted)
        heapq.heappush(self._waiting, entry)
        try:
            await granted
        except asyncio.CancelledError:  # the caller left while waiting (cancel, deadline)
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            elif not granted.cancelled():
                self._release()  # the slot was handed over just as it left: pass it on
            raise

    def _release(self) -> None:
        """A slot freed: hand it to the most due waiting call, else give it back."""
        while self._waiting:
            granted = heapq.heappop(self._waiting)[2]
            if not granted.done():
                granted.set_result(None)  # the slot passes on: ``active`` is unchanged
                return
        self.active -= 1


class Concurrency:
    """How many of some work run right now, and the most that ever ran at once: counted
    where the work runs (in its worker thread, hence the lock), so it measures the bound
    that is meant to hold it, e.g. preparations inside admission slots."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1

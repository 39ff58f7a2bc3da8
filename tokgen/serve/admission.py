"""Bounded admission: a few continuations run, a few wait, the rest are refused at once.

Every running continuation shares the engines (that is what batches them), so each one
admitted slows the others; a server that admitted everything would miss every client's
time-to-first-audio. So at most ``max_active`` run; up to ``max_queued`` more wait for a
slot; beyond that a call gets ``Busy`` (RESOURCE_EXHAUSTED with a retry hint), never an
unbounded backlog.

Waiting calls are served in order of *due time*: arrival plus a priority delay. A high
priority call overtakes normal ones that arrived up to ``PRIORITY_DELAY_S`` earlier, but a
low one that has waited long enough goes first: no priority is starved forever.

A call of several samples costs the engines what as many calls do, so it holds that many
slots (at most ``max_active``: it can always run). The most due waiting call goes first
even when a lighter one behind it would fit: a heavy call is never starved by light ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from tokgen.names import Priority

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
        self.active = 0  # slots held
        # a heap by due time: (due, arrival order, granted, slots wanted)
        self._waiting: list[tuple[float, int, asyncio.Future[None], int]] = []
        self._order = itertools.count()  # ties: first come, first served
        self._clock = clock

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def slot(self, priority: Priority = "normal", weight: int = 1) -> AsyncIterator[None]:
        """Hold ``weight`` slots (a call's samples; at most ``max_active``) for the body;
        raises ``Busy`` when they are not free and no queue place is."""
        weight = min(max(1, weight), self.max_active)
        await self._acquire(priority, weight)
        try:
            yield
        finally:
            self._release(weight)

    async def _acquire(self, priority: Priority, weight: int) -> None:
        if self.active + weight <= self.max_active and not self._waiting:
            self.active += weight
            return
        if len(self._waiting) >= self.max_queued:
            raise Busy(self.active, len(self._waiting))
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (due_time(priority, self._clock()), next(self._order), granted, weight)
        heapq.heappush(self._waiting, entry)
        try:
            await granted
        except asyncio.CancelledError:  # the caller left while waiting (cancel, deadline)
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                self._grant()  # it may have held back lighter calls behind it
            elif not granted.cancelled():
                self._release(weight)  # the slots were handed over just as it left: pass them on
            raise

    def _release(self, weight: int) -> None:
        self.active -= weight
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to the most due waiting calls, in order, while the next fits."""
        while self._waiting:
            granted, weight = self._waiting[0][2:]
            if granted.done():  # left while waiting
                heapq.heappop(self._waiting)
                continue
            if self.active + weight > self.max_active:
                return
            heapq.heappop(self._waiting)
            self.active += weight
            granted.set_result(None)


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

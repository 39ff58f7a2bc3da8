"""Prepare requests (decode and encode a prime) in worker processes.

A stream's first audio waits for its prime to be decoded and encoded: about 0.1 s of CPU
for the example prime. In a server thread, at 8 streams, that took 0.7-0.8 s, and the
thread had used only 0.09 s of CPU in it (``runs``-style probe in docs/PERFORMANCE.md,
"Time to first audio at 8 streams"): between torch's operations it waited for the
interpreter lock, which the event loop (every engine's tokens) and the streams' decoders
hold most of the time. A worker process has an interpreter of its own. Workers start
with the server (spawned: torch and fork do not mix) and hold a copy of the codec and of
the priors' window geometry, nothing else.

A worker that dies (killed, out of memory) breaks the pool: the requests it was preparing
fail with a clear error, and the pool is started again for the next ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch

from tokgen.codec.base import Codec
from tokgen.errors import TokgenError
from tokgen.generation.generate import Job
from tokgen.generation.requests import prepare_spec
from tokgen.generation.sampler import LevelPrior
from tokgen.generation.spec import ContinueSpec

_worker: dict = {}  # in a worker process: its codec and priors


class PrepareWorkerLost(TokgenError):
    """A worker process ended while preparing a request (the request may be retried)."""


def _start_worker(codec: Codec, priors: list[LevelPrior]) -> None:
    torch.set_num_threads(1)
    _worker.update(codec=codec, priors=priors)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker waits on a queue whose pipe it holds both ends of: a server killed with
    SIGKILL would leave it waiting forever. Its parent changes when the server dies."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _started() -> int:
    return os.getpid()


def _prepare(spec: ContinueSpec, streaming: bool) -> Job:
    return prepare_spec(_worker["codec"], spec, _worker["priors"] if streaming else None)


class PreparePool:
    def __init__(self, codec: Codec, priors: list[LevelPrior], workers: int):
        # The engines stay in this process: a worker needs only each level's windows.
        geometry = [dataclasses.replace(p, engine=None) for p in priors]  # type: ignore[arg-type]
        self._args = (codec, geometry)
        self.workers = workers
        self._pool = self._start()

    def _start(self, warm: bool = True) -> ProcessPoolExecutor:
        """A pool, with every worker started if ``warm`` (a worker imports torch and
        unpickles the codec: seconds that the first requests would otherwise wait for;
        tasks sent before any returns each start a process of their own). A restart, on the
        event loop, does not wait: the next request starts a worker."""
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=self._args,
        )
        if warm:
            wait([pool.submit(_started) for _ in range(self.workers)])
        return pool

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:  # the first to notice starts a new pool
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start(warm=False)

    async def prepare(self, spec: ContinueSpec, streaming: bool) -> Job:
        """``prepare_spec`` of ``spec`` in a worker; its errors (``FieldError``) as they are.
        A pool found broken before this request reached it is started again first."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            future = loop.run_in_executor(pool, _prepare, spec, streaming)
        except BrokenProcessPool:  # a worker died while idle: this request was not in it
            self._restart(pool)
            pool = self._pool
            future = loop.run_in_executor(pool, _prepare, spec, streaming)
        try:
            return await future
        except BrokenProcessPool as exc:
            self._restart(pool)
            raise PrepareWorkerLost(
                "preparing the request failed: its worker process ended (out of memory or killed); "
                "retry the request"
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

"""Prepare requests (decode and encode a prime) in worker processes.

A stream's first audio waits for its prime to be decoded and encoded: about 0.1 s of CPU
for the example prime. In a server thread, at 8 streams, that took 0.7-0.8 s, and the
thread had used only 0.09 s of CPU in it (``runs``-style probe in docs/PERFORMANCE.md,
"Time to first audio at 8 streams"): between torch's operations it waited for the
interpreter lock, which the event loop (every engine's tokens) and the streams' decoders
hold most of the time. A worker process has an interpreter of its own. Workers start
with the server (spawned: torch and fork do not mix) and hold a copy of the codec and of
the priors' window geometry, nothing else.

A worker that dies (killed, out of memory) breaks the pool: every request the pool holds
at that moment fails with a clear error (``PrepareWorkerLost``: retry), and the pool is
started again for the next ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import pickle
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.synchronize import Barrier as BarrierType

import torch

from tokgen.codec.base import Codec
from tokgen.errors import TokgenError
from tokgen.generation.generate import Job
from tokgen.generation.requests import prepare_spec
from tokgen.generation.sampler import LevelPrior
from tokgen.generation.spec import ContinueSpec, FieldError

_worker: dict = {}  # in a worker process: its codec and priors
STARTUP_SECONDS = 120.0  # for every worker to import torch and load the codec


class PrepareWorkerLost(TokgenError):
    """A worker process ended while preparing a request (the request may be retried)."""


def _start_worker(state: str, server: int, started: BarrierType) -> None:
    """``state``: a file holding the pickled codec and priors (see ``PreparePool._start``)."""
    threading.Thread(target=_exit_with_server, args=(server,), daemon=True).start()
    torch.set_num_threads(1)
    with open(state, "rb") as f:
        codec, priors = pickle.load(f)
    _worker.update(codec=codec, priors=priors, started=started)


def _exit_with_server(server: int) -> None:
    """A worker waits on a queue whose pipe it holds both ends of: a server killed with
    SIGKILL would leave it waiting forever. It is re-parented when the server dies (also
    if that happened while it was still starting)."""
    while os.getppid() == server:
        time.sleep(1.0)
    os._exit(0)


def _started() -> None:
    """Returns once every worker is running one of these: all of them are up."""
    _worker["started"].wait(STARTUP_SECONDS)


def _prepare(spec: ContinueSpec, streaming: bool) -> Job:
    """In a worker. An exception must unpickle in the server, or the pool breaks: the
    user's errors (``FieldError``) do; anything else goes back as a plain RuntimeError."""
    try:
        return prepare_spec(_worker["codec"], spec, _worker["priors"] if streaming else None)
    except FieldError:
        raise
    except Exception as exc:
        raise RuntimeError(f"preparing the request failed: {type(exc).__name__}: {exc}") from None


class PreparePool:
    def __init__(self, codec: Codec, priors: list[LevelPrior], workers: int):
        # The engines stay in this process: a worker needs only each level's windows.
        geometry = [dataclasses.replace(p, engine=None) for p in priors]  # type: ignore[arg-type]
        self._args = (codec, geometry)
        self.workers = workers
        self._restarting = asyncio.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """A pool with every worker started (a worker imports torch and unpickles the
        codec: seconds that the first requests would otherwise wait for): one task per
        worker that waits at a barrier for the others, so each runs in a process of its
        own. Blocking; raises if a worker cannot start.

        The codec (24 MB pickled) reaches the workers through a file, not their arguments:
        spawning writes a process's arguments into a pipe that the new process reads, and
        with one that died before reading it all (seen once: a worker that failed at
        import) that write blocked the server's start-up for good."""
        context = multiprocessing.get_context("spawn")
        with tempfile.NamedTemporaryFile(prefix="tokgen-prepare-", suffix=".pickle") as state:
            pickle.dump(self._args, state)
            state.flush()
            pool = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(state.name, os.getpid(), context.Barrier(self.workers)),
            )
            try:
                for started in [pool.submit(_started) for _ in range(self.workers)]:
                    started.result(STARTUP_SECONDS)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return pool

    async def _restart(self, broken: ProcessPoolExecutor) -> None:
        """A new pool for a broken one, started in a thread (spawning blocks), once."""
        async with self._restarting:
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = await asyncio.to_thread(self._start)

    async def prepare(self, spec: ContinueSpec, streaming: bool) -> Job:
        """``prepare_spec`` of ``spec`` in a worker; its errors (``FieldError``) as they are.
        A pool found broken before this request reached it is started again first."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            future = loop.run_in_executor(pool, _prepare, spec, streaming)
        except BrokenProcessPool:  # a worker died while idle: this request was not in it
            await self._restart(pool)
            pool = self._pool
            future = loop.run_in_executor(pool, _prepare, spec, streaming)
        try:
            return await future
        except BrokenProcessPool as exc:
            await self._restart(pool)
            raise PrepareWorkerLost(
                "preparing the request failed: its worker process ended (out of memory or killed); "
                "retry the request"
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

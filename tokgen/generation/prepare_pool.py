"""Prepare requests (decode and encode a prime) in worker processes.

A stream's first audio waits for its prime to be decoded and encoded: about 0.1 s of CPU
for the example prime. In a server thread, at 8 streams, that took 0.7-0.8 s, and the
thread had used only 0.09 s of CPU in it (docs/PERFORMANCE.md, "Time to first audio at 8
streams"): between torch's operations it waited for the interpreter lock, which the event
loop (every engine's tokens) and the streams' decoders hold most of the time. A worker
process has an interpreter of its own. Workers start with the server (spawned: torch and
fork do not mix) and hold a copy of the codec and of the priors' window geometry, nothing
else.

The event loop talks to each worker over a socket of its own, with no thread in between.
``concurrent.futures.ProcessPoolExecutor`` hands a call to two threads of the server (its
manager and its queue's feeder) before a worker sees it, and each hand-off waits for the
interpreter lock: with three server threads busy in Python a round trip took 94-131 ms
(p50) through it and 37-47 ms through the sockets (``scripts/measure_prepare.py``).

A worker keeps the memory it frees (``_keep_freed_memory``): glibc gave each prime's
encoder activations (4.5 MB each) back to the kernel and took them again for the next,
17,000-21,000 page faults per prime, a third of the worker's CPU time.

A worker that dies (killed, out of memory) fails the request it holds, if any, with a
clear error (``PrepareWorkerLost``: retry), and is started again before it is given the
next one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import multiprocessing
import os
import pickle
import socket
import struct
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess

import torch

from tokgen.codec.base import Codec
from tokgen.errors import TokgenError
from tokgen.generation.generate import Job
from tokgen.generation.requests import prepare_spec
from tokgen.generation.sampler import LevelPrior
from tokgen.generation.spec import ContinueSpec, FieldError

STARTUP_SECONDS = 120.0  # for a worker to import torch and load the codec
_HEADER = struct.Struct("!Q")  # every message: its length, then its pickle
_READY = b"ready"


class PrepareWorkerLost(TokgenError):
    """A worker process ended while preparing a request (the request may be retried)."""


# In a worker process.


def _worker_main(state: str, sock: socket.socket, server: int) -> None:
    """Load the codec and priors from ``state`` (a file: see ``PreparePool._spawn``), say
    so, then prepare one request after another until the server closes the socket."""
    threading.Thread(target=_exit_with_server, args=(server,), daemon=True).start()
    torch.set_num_threads(1)
    _keep_freed_memory()
    with open(state, "rb") as f:
        codec, priors = pickle.load(f)
    sock.sendall(_frame(_READY))
    while (message := _recv_blocking(sock)) is not None:
        spec, streaming = pickle.loads(message)
        sock.sendall(_frame(pickle.dumps(_prepare(codec, priors, spec, streaming))))


def _keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse rather than unmap it: blocks up to
    32 MiB come from the heap, and the heap is never trimmed below 1 GiB. Bit for bit the
    same work: on the example prime 0.117 -> 0.079 s per prime on an idle core, the kernel's
    share 0.036 -> 0.000 s (``getrusage``). The worker's memory then stays at its largest
    prime's (a stream's prime is encoded only 4.35 s far: ``encode_prime_context``).
    Elsewhere than glibc, nothing to do."""
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


def _exit_with_server(server: int) -> None:
    """A worker killed with its server gets no end of file if another process holds the
    server's end of its socket: it is re-parented when the server dies (also if that
    happened while it was still starting)."""
    while os.getppid() == server:
        time.sleep(1.0)
    os._exit(0)


def _prepare(codec: Codec, priors: list[LevelPrior], spec: ContinueSpec, streaming: bool) -> tuple:
    """("ok", job) or ("error", exception). The exception must unpickle in the server: the
    user's errors (``FieldError``) do; anything else goes back as a plain RuntimeError."""
    try:
        return "ok", prepare_spec(codec, spec, priors if streaming else None)
    except FieldError as exc:
        return "error", exc
    except Exception as exc:
        return "error", RuntimeError(f"preparing the request failed: {type(exc).__name__}: {exc}")


def _recv_blocking(sock: socket.socket) -> bytes | None:
    """One message, or None at end of file."""
    header = _read_exactly(sock, _HEADER.size)
    return None if header is None else _read_exactly(sock, _HEADER.unpack(header)[0])


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


# In the server.


@dataclasses.dataclass
class _Worker:
    process: BaseProcess
    sock: socket.socket  # the server's end, non-blocking once started
    broken: bool = False  # its socket may hold half a message: start a new one

    def usable(self) -> bool:
        return not self.broken and self.process.is_alive()

    def stop(self) -> None:
        self.sock.close()
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)


class PreparePool:
    def __init__(self, codec: Codec, priors: list[LevelPrior], workers: int):
        """Blocking: returns once every worker is up (a worker imports torch and loads the
        codec: seconds that the first requests would otherwise wait for); raises if one
        cannot start. The codec (24 MB pickled) reaches the workers through a file, not
        their arguments: spawning writes a process's arguments into a pipe that the new
        process reads, and with one that died before reading it all (seen once: a worker
        that failed at import) that write blocked the server's start-up for good."""
        # The engines stay in this process: a worker needs only each level's windows.
        geometry = [dataclasses.replace(p, engine=None) for p in priors]  # type: ignore[arg-type]
        self.workers = workers
        with tempfile.NamedTemporaryFile(prefix="tokgen-prepare-", suffix=".pickle", delete=False) as f:
            pickle.dump((codec, geometry), f)
        self._state = f.name  # kept for restarts; removed by ``close``
        self._all: list[_Worker] = []  # every worker, busy or idle
        self._idle: list[_Worker] = []
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        try:
            spawned = [self._spawn() for _ in range(workers)]  # they start side by side
            for worker in spawned:
                self._ready(worker)
        except BaseException:
            self._idle = list(self._all)  # none is busy: ``close`` stops them all
            self.close()
            raise
        self._idle = list(self._all)

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        process = multiprocessing.get_context("spawn").Process(
            target=_worker_main, args=(self._state, theirs, os.getpid()), daemon=True, name="tokgen-prepare"
        )
        process.start()
        theirs.close()  # the worker's end is the worker's alone: its death is our end of file
        worker = _Worker(process, ours)
        self._all.append(worker)
        return worker

    @staticmethod
    def _ready(worker: _Worker) -> None:
        """Waits (blocking) for a spawned worker to say it is up."""
        worker.sock.settimeout(STARTUP_SECONDS)
        try:
            ready = _recv_blocking(worker.sock)
        except TimeoutError:
            ready = None
        if ready != _READY:
            worker.stop()
            raise TokgenError(
                f"a prepare worker did not start (exit code {worker.process.exitcode}); see the log above"
            )
        worker.sock.setblocking(False)

    def _replace(self, worker: _Worker) -> _Worker:
        """A new worker for one that died or broke (blocking: spawning takes seconds)."""
        worker.stop()
        if worker in self._all:  # not if an earlier replacement of it failed
            self._all.remove(worker)
        new = self._spawn()
        try:
            self._ready(new)
        except BaseException:
            self._all.remove(new)
            raise
        return new

    async def _acquire(self) -> _Worker:
        """An idle worker, started again first if it died or broke since its last request."""
        while not self._idle and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # woken, then cancelled: pass it on
                    self._wake()
                raise
        if self._closed:
            raise PrepareWorkerLost("the server is shutting down; retry the request")
        worker = self._idle.pop()
        if not worker.usable():
            try:
                worker = await asyncio.to_thread(self._replace, worker)
            except BaseException:
                self._release(worker)  # stopped: the next request starts it again
                raise
        return worker

    def _finished(self, worker: _Worker, exchange: asyncio.Future[tuple]) -> None:
        if exchange.cancelled():  # only when its event loop ends: the reply is left unread
            worker.broken = True
        else:
            exchange.exception()  # read here too: a cancelled caller no longer reads it
        self._release(worker)

    def _release(self, worker: _Worker) -> None:
        if self._closed:
            worker.stop()
            return
        self._idle.append(worker)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _exchange(self, worker: _Worker, message: bytes) -> tuple:
        """Send a request to ``worker`` and read its reply, from the event loop."""
        loop = asyncio.get_running_loop()

        async def read(n: int) -> bytes:
            chunks, left = [], n
            while left:
                chunk = await loop.sock_recv(worker.sock, min(left, 1 << 20))
                if not chunk:
                    raise EOFError("the worker closed its socket")
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)

        try:
            await loop.sock_sendall(worker.sock, _frame(message))
            reply = await read(_HEADER.unpack(await read(_HEADER.size))[0])
        except (OSError, EOFError) as exc:
            worker.broken = True
            raise PrepareWorkerLost(
                "preparing the request failed: its worker process ended (out of memory or killed); "
                "retry the request"
            ) from exc
        return pickle.loads(reply)

    async def prepare(self, spec: ContinueSpec, streaming: bool) -> Job:
        """``prepare_spec`` of ``spec`` in a worker; its errors (``FieldError``) as they are.
        A request cancelled meanwhile (its caller went away) still lets the worker finish,
        so the worker's socket is left between two messages."""
        message = pickle.dumps((spec, streaming))
        worker = await self._acquire()
        exchange = asyncio.ensure_future(self._exchange(worker, message))
        exchange.add_done_callback(functools.partial(self._finished, worker))
        status, result = await asyncio.shield(exchange)
        if status == "error":
            raise result
        return result

    def close(self) -> None:
        """Stop every worker (callable from any thread). A request being prepared fails
        (``PrepareWorkerLost``: its worker is killed, and its socket closed by the event
        loop that reads it); requests waiting for a worker fail too."""
        self._closed = True
        for worker in self._all:
            if worker in self._idle:
                worker.stop()
            else:
                worker.process.kill()
        self._idle = []
        for waiter in list(self._waiters):
            with contextlib.suppress(RuntimeError):  # its event loop is closed: nobody waits
                waiter.get_loop().call_soon_threadsafe(_wake_one, waiter)
        if os.path.exists(self._state):
            os.unlink(self._state)


def _wake_one(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

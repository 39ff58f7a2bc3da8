"""``tokgen bench queue``: jobs per second through the real queue with 1, then 2 workers.

A redis-server of its own, ``tokgen worker`` processes (started and ready before the clock
starts), and short jobs: each continues the shipped example prime by ``seconds``. The
clock runs from the first submission to the last job's success. Mean batch is the number
of jobs a worker was rendering at once, averaged over the run (polled every 50 ms): the
jobs that share one set of engines, and so batch.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tokgen.assets import EXAMPLE_PRIME
from tokgen.errors import TokgenError
from tokgen.jobs.queue import JobQueue, connect
from tokgen.jobs.redis_server import EmbeddedRedis
from tokgen.jobs.states import JobState
from tokgen.v1 import tokgen_pb2 as pb


def start_workers(n: int, url: str, backend: str, concurrency: int) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "tokgen", "worker", "--redis-url", url, "--metrics-port", "0"]
    cmd += ["--backend", backend, "--worker-concurrency", str(concurrency)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(n)
    ]
    for proc in procs:  # each prints one line once its engines are loaded
        assert proc.stdout is not None
        if not proc.stdout.readline():
            raise TokgenError("a `tokgen worker` exited before it was ready (run one alone to see why)")
    return procs


async def run_jobs(url: str, jobs: int, seconds: float, workers: int) -> dict:
    client = connect(url)
    queue = JobQueue(client)
    request = pb.ContinueRequest(prime_audio=EXAMPLE_PRIME.read_bytes(), seconds=seconds)
    started = time.perf_counter()
    ids = []
    for i in range(jobs):
        request.sampling.seed = i
        ids.append((await queue.submit(request.SerializeToString(), "normal"))[0])
    running_samples = []
    while True:
        states = [(await queue.get(j)).state for j in ids]  # type: ignore[union-attr]
        running_samples.append(sum(s == JobState.RUNNING for s in states))
        if all(s.final for s in states):
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await client.aclose()
    return {
        "jobs_per_s": round(jobs / elapsed, 3),
        "mean_batch": round(sum(running_samples) / len(running_samples) / workers, 2),
        "jobs": jobs,
        "succeeded": states.count(JobState.SUCCEEDED),
        "seconds": round(elapsed, 1),
    }


def bench_queue(backend: str, jobs: int, seconds: float, concurrency: int) -> dict:
    result: dict = {"backend": backend, "seconds_per_job": seconds, "worker_concurrency": concurrency}
    with tempfile.TemporaryDirectory(prefix="tokgen-bench-") as tmp:
        server = EmbeddedRedis.start(Path(tmp) / "redis")
        try:
            for n in (1, 2):
                procs = start_workers(n, server.url, backend, concurrency)
                try:
                    result[f"workers{n}"] = asyncio.run(run_jobs(server.url, jobs, seconds, n))
                finally:
                    for proc in procs:
                        proc.send_signal(signal.SIGTERM)
                    for proc in procs:
                        proc.wait(timeout=120)
                        if proc.stdout is not None:
                            proc.stdout.close()
        finally:
            server.stop()
    return result

"""Workers render queued jobs through real engines and a real Redis, survive a SIGKILL by
resuming from saved codes, and hand jobs back on shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf

from tokgen.codec import load_codec
from tokgen.codec.codes import load_codes
from tokgen.jobs.queue import JobQueue, QueueConfig
from tokgen.jobs.states import JobState
from tokgen.jobs.worker import Worker
from tokgen.prior.sampler import LevelPrior
from tokgen.v1 import tokgen_pb2 as pb


def wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV")
    return buf.getvalue()


async def wait_for(queue: JobQueue, job_ids: list[str], states: set[JobState], timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        jobs = [await queue.get(j) for j in job_ids]
        if all(j is not None and j.state in states for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"jobs still {[j.state if j else None for j in jobs]}"
        await asyncio.sleep(0.1)


def test_a_worker_renders_every_job_once(loop_thread, engine, tiny_model_dir, redis_server, tone):
    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32, segment_frames=40)]
    requests = [
        pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.1, sampling=pb.SamplingParams(seed=i))
        for i in range(3)
    ]
    requests.append(pb.ContinueRequest(prime_audio=wav(tone[:800]), seconds=0.05))
    requests.append(pb.ContinueRequest(prime_audio=b"not audio", seconds=0.05))  # fails, not retried

    async def scenario():
        client = aioredis.Redis.from_url(redis_server.url)
        queue = JobQueue(client, QueueConfig(prefix=f"w-{engine.backend}", lease_s=3.0))
        ids = [(await queue.submit(r.SerializeToString(), "normal"))[0] for r in requests]
        stop = asyncio.Event()
        worker = Worker(queue, codec, priors, concurrency=4, save_every_s=0.01)
        running = asyncio.create_task(worker.run(stop, poll_s=0.05))
        jobs = await wait_for(queue, ids, {JobState.SUCCEEDED, JobState.FAILED})
        stop.set()
        await running
        results = [await queue.result(j) for j in ids]
        await client.aclose()
        return jobs, results

    jobs, results = loop_thread.run(scenario())
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 4 + [JobState.FAILED]
    assert "prime_audio" in jobs[-1].error and jobs[-1].attempts == 1
    for job, result, seconds in zip(jobs[:4], results, [0.1, 0.1, 0.1, 0.05], strict=False):
        audio, codes = result
        assert sf.info(io.BytesIO(audio)).frames == round(seconds * 16000)
        top = load_codes(codes).codes[0]
        assert top.size > 0 and job.attempts == 1 and job.progress == 1.0


@pytest.fixture
def worker_cmd(tiny_model_dir, prior_set, redis_server):
    def cmd(*extra: str) -> list[str]:
        base = [sys.executable, "-m", "tokgen", "worker", "--redis-url", redis_server.url, "--backend", "hf"]
        return [*base, "--codec", str(tiny_model_dir), "--priors", str(prior_set), *extra]

    return cmd


def test_a_killed_workers_job_is_resumed_by_another(worker_cmd, redis_server, tmp_path):
    """SIGKILL a worker mid-job: another takes the job over after the lease and resumes from
    the codes the first one saved (attempt 2, fewer tokens than a fresh render)."""
    lease = 2.0
    request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=3.0, sampling=pb.SamplingParams(seed=1))

    async def submit_and_watch():
        client = aioredis.Redis.from_url(redis_server.url)
        queue = JobQueue(client, QueueConfig(lease_s=lease))
        job_id, _ = await queue.submit(request.SerializeToString(), "normal")
        return client, queue, job_id

    async def main():
        client, queue, job_id = await submit_and_watch()
        first = subprocess.Popen(
            worker_cmd("--lease-seconds", str(lease)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 120
            while (job := await queue.get(job_id)).progress < 0.2:
                assert time.monotonic() < deadline and first.poll() is None, "no progress"
                await asyncio.sleep(0.1)
            assert await queue.load_partial(job_id) is not None
            first.send_signal(signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
            second = subprocess.Popen(
                worker_cmd("--lease-seconds", str(lease)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp_path,
            )
            try:
                (job,) = await wait_for(queue, [job_id], {JobState.SUCCEEDED}, timeout=180)
                finished_in = time.monotonic() - killed_at
                summary = await queue.result_summary(job_id)
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(timeout=60) == 0
        finally:
            first.kill()
            await client.aclose()
        return job, summary, finished_in

    job, summary, finished_in = asyncio.run(main())
    fresh_tokens = [3000, 6000]  # 3 s at hops 16 and 8 (16 kHz), from nothing
    assert job.attempts == 2 and summary["attempt"] == 2
    assert any(f > 0 for f in summary["resumed_frames"])
    assert sum(summary["tokens"]) < sum(fresh_tokens)
    print(json.dumps({"resumed": summary, "finished_after_kill_s": round(finished_in, 1)}))


def test_jobs_survive_a_redis_restart(loop_thread, engine, tiny_model_dir, tmp_path):
    """Restart Redis (append-only file on) while jobs are queued and running: the worker
    reconnects with backoff and every accepted job still succeeds."""
    from tokgen.jobs.queue import connect
    from tokgen.jobs.redis_server import EmbeddedRedis

    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32)]
    server = EmbeddedRedis.start(tmp_path / "redis")

    async def scenario():
        client = connect(server.url)
        queue = JobQueue(client, QueueConfig(prefix="restart", lease_s=3.0))
        request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.5)
        ids = [(await queue.submit(request.SerializeToString(), "normal"))[0] for _ in range(4)]
        stop = asyncio.Event()
        running = asyncio.create_task(Worker(queue, codec, priors, concurrency=2).run(stop, poll_s=0.05))
        await wait_for(queue, ids[:1], {JobState.RUNNING, JobState.SUCCEEDED})
        await asyncio.to_thread(server.stop)  # SIGTERM: Redis writes its append-only file
        await asyncio.sleep(1.0)
        restarted = await asyncio.to_thread(EmbeddedRedis.start, tmp_path / "redis")
        try:
            jobs = await wait_for(queue, ids, {JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD})
        finally:
            stop.set()
            await running
            await client.aclose()
        return jobs, restarted

    jobs, restarted = loop_thread.run(scenario())
    restarted.stop()
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 4

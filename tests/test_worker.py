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
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import LevelPrior
from tokgen.jobs.queue import JobQueue, QueueConfig
from tokgen.jobs.states import JobState
from tokgen.jobs.worker import Worker
from tokgen.v1 import tokgen_pb2 as pb


def wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV")
    return buf.getvalue()


def queued(codec, request: pb.ContinueRequest) -> bytes:
    """What the server queues for ``request``: the prepared job (no engines needed)."""
    g = Generator(codec, [])
    return g.queued(g.spec_from_pb(request)).dumps()


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

    async def scenario():
        client = aioredis.Redis.from_url(redis_server.url)
        queue = JobQueue(client, QueueConfig(prefix=f"w-{engine.backend}", lease_s=3.0))
        ids = [(await queue.submit(queued(codec, r), "normal"))[0] for r in requests]
        ids.append((await queue.submit(b"not a job", "normal"))[0])  # fails, not retried
        stop = asyncio.Event()
        worker = Worker(queue, Generator(codec, priors), concurrency=4, save_every_s=0.01)
        running = asyncio.create_task(worker.run(stop, poll_s=0.05))
        jobs = await wait_for(queue, ids, {JobState.SUCCEEDED, JobState.FAILED})
        stop.set()
        await running
        results = [await queue.result(j) for j in ids]
        await client.aclose()
        return jobs, results

    jobs, results = loop_thread.run(scenario())
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 4 + [JobState.FAILED]
    assert "not a tokgen job" in jobs[-1].error and jobs[-1].attempts == 1
    for job, result, seconds in zip(jobs[:4], results, [0.1, 0.1, 0.1, 0.05], strict=False):
        audio, codes = result
        assert sf.info(io.BytesIO(audio)).frames == round(seconds * 16000)
        saved = load_codes(codes)
        assert saved.codes[0].size > 0 and job.attempts == 1 and job.progress == 1.0
        primed = seconds == 0.05  # the last request has a prime: its timbre reference is kept
        assert (saved.reference is not None and saved.reference.size == 800) == primed


@pytest.fixture
def worker_cmd(tiny_model_dir, prior_set, redis_server):
    def cmd(*extra: str) -> list[str]:
        base = [sys.executable, "-m", "tokgen", "worker", "--redis-url", redis_server.url, "--backend", "hf"]
        base += ["--metrics-port", "0"]
        return [*base, "--codec", str(tiny_model_dir), "--priors", str(prior_set), *extra]

    return cmd


def test_twenty_jobs_two_workers_one_killed(worker_cmd, redis_server, tmp_path, tiny_model_dir):
    """SIGKILL a worker while it holds running jobs: every job still succeeds with exactly
    one result; the other worker takes the killed one's jobs over after the lease and
    resumes them from their saved codes (attempt 2, fewer tokens than a fresh render)."""
    lease = 2.0
    seconds = 2.0  # long enough that an attempt saves progress (every 1 s) before it ends
    fresh_tokens = round(seconds * 1000) + round(seconds * 2000)  # at hops 16 and 8 (16 kHz), from nothing

    def start_worker() -> tuple[subprocess.Popen, str]:
        cmd = worker_cmd("--lease-seconds", str(lease), "--worker-concurrency", "4")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path, text=True
        )
        return proc, json.loads(proc.stdout.readline())["worker"]

    async def main():
        client = aioredis.Redis.from_url(redis_server.url)
        queue = JobQueue(client, QueueConfig(lease_s=lease))
        requests = [
            pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=seconds, sampling=pb.SamplingParams(seed=i))
            for i in range(20)
        ]
        codec = load_codec(tiny_model_dir)
        # Both workers up first: neither renders the whole queue while the other loads.
        (first, first_name), (second, _) = start_worker(), start_worker()
        try:
            ids = [(await queue.submit(queued(codec, r), "normal"))[0] for r in requests]
            deadline = time.monotonic() + 120
            while True:  # until the first worker holds running jobs that saved progress
                jobs = [await queue.get(j) for j in ids]
                held = [j for j in jobs if j.worker == first_name and j.progress > 0.2]
                if held:
                    break
                assert time.monotonic() < deadline, "the first worker never got going"
                await asyncio.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
            lost = [j.id for j in jobs if j.worker == first_name and j.state == JobState.RUNNING]
            finished = {}
            while len(finished) < len(ids):
                for job_id in ids:
                    job = await queue.get(job_id)
                    if job.state.final and job_id not in finished:
                        finished[job_id] = (job, time.monotonic() - killed_at)
                assert time.monotonic() - killed_at < 180, "jobs did not finish"
                await asyncio.sleep(0.05)
            results = {j: await queue.result(j) for j in ids}
            summaries = {j: await queue.result_summary(j) for j in lost}
            dead = await queue.dead_letters()
        finally:
            first.kill()
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
            await client.aclose()
        return finished, lost, results, summaries, dead

    finished, lost, results, summaries, dead = asyncio.run(main())
    assert all(job.state == JobState.SUCCEEDED for job, _ in finished.values()) and not dead
    assert all(results[j] is not None for j in results)  # one result per job, stored once
    assert lost, "the killed worker held no running job"
    for job_id in lost:
        job, after = finished[job_id]
        assert job.attempts == 2 and summaries[job_id]["attempt"] == 2
        assert after < lease + 20  # measured: see the printout (the target is lease + 5 s)
    resumed = [s for s in summaries.values() if any(f > 0 for f in s["resumed_frames"])]
    assert resumed and all(sum(s["tokens"]) < fresh_tokens for s in resumed)
    print(json.dumps({"lost": len(lost), "finished_after_kill_s": [round(finished[j][1], 1) for j in lost]}))


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
        ids = [(await queue.submit(queued(codec, request), "normal"))[0] for _ in range(4)]
        stop = asyncio.Event()
        running = asyncio.create_task(
            Worker(queue, Generator(codec, priors), concurrency=2).run(stop, poll_s=0.05)
        )
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


def test_cancelling_a_running_job_aborts_its_engine_requests(
    loop_thread, engine, tiny_model_dir, redis_server
):
    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32)]

    async def scenario():
        client = aioredis.Redis.from_url(redis_server.url)
        queue = JobQueue(client, QueueConfig(prefix=f"cancel-{engine.backend}", lease_s=1.5))
        request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=60.0)
        job_id, _ = await queue.submit(queued(codec, request), "normal")
        stop = asyncio.Event()
        running = asyncio.create_task(Worker(queue, Generator(codec, priors)).run(stop, poll_s=0.05))
        await wait_for(queue, [job_id], {JobState.RUNNING})
        assert engine.unfinished_requests() > 0
        await queue.cancel(job_id)
        (job,) = await wait_for(queue, [job_id], {JobState.CANCELLED}, timeout=30)
        deadline = time.monotonic() + 10
        while engine.unfinished_requests():
            assert time.monotonic() < deadline, "the cancelled job's engine requests kept running"
            await asyncio.sleep(0.05)
        stop.set()
        await running
        await client.aclose()
        return job

    assert loop_thread.run(scenario()).state == JobState.CANCELLED


def test_shutdown_hands_running_jobs_back(loop_thread, engine, tiny_model_dir, redis_server):
    """Past the grace period, a stopping worker releases its running jobs: queued again at
    once, with their saved codes, for another worker."""
    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32)]

    async def scenario():
        client = aioredis.Redis.from_url(redis_server.url)
        queue = JobQueue(client, QueueConfig(prefix=f"release-{engine.backend}", lease_s=5.0))
        request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=60.0)
        job_id, _ = await queue.submit(queued(codec, request), "normal")
        stop = asyncio.Event()
        worker = Worker(queue, Generator(codec, priors), save_every_s=0.05)
        running = asyncio.create_task(worker.run(stop, poll_s=0.05, grace_s=0.2))
        deadline = time.monotonic() + 60
        while await queue.load_partial(job_id) is None:
            assert time.monotonic() < deadline, "no codes saved"
            await asyncio.sleep(0.05)
        stop.set()
        await running
        job = await queue.get(job_id)
        claims = await queue.claim("another", 1)  # at once: no lease to wait for
        await client.aclose()
        return job, claims

    job, claims = loop_thread.run(scenario())
    assert job.state == JobState.QUEUED and job.attempts == 1 and "released" in job.error
    assert [c.job.id for c in claims] == [job.id] and claims[0].job.attempts == 2
    assert priors[0].engine.unfinished_requests() == 0


def test_a_password_protected_redis_url(tmp_path):
    from tokgen.errors import TokgenError
    from tokgen.jobs.queue import check_redis, connect
    from tokgen.jobs.redis_server import redis_binary

    sock = tmp_path / "r.sock"
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--requirepass",
            "s3cret-pass",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )

    async def scenario():
        while not sock.exists():
            await asyncio.sleep(0.05)
        queue = JobQueue(connect(f"unix://{sock}?password=s3cret-pass"), QueueConfig(prefix="auth"))
        job_id, _ = await queue.submit(b"r", "normal")
        assert (await queue.get(job_id)).state == JobState.QUEUED
        await queue.r.aclose()
        with pytest.raises(TokgenError, match="cannot use Redis") as err:
            await check_redis(f"unix://{sock}?password=wrong")
        assert "wrong" not in str(err.value)

    try:
        asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait()

"""Load scenarios: each takes a started ``Cluster`` and options, returns a JSON-able
summary, and raises ``AssertionError`` when the service did not do what it must."""

from __future__ import annotations

import asyncio
import random
import sys
import time

import grpc

from loadtests import calls
from loadtests.cluster import Cluster
from loadtests.stats import Call, slo_break, summarize
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import tokgen_pb2 as pb

SLO_TTFA_P99_S = 2.0  # docs/PERFORMANCE.md, issue "gRPC service"


async def closed_loop(address: str, clients: int, requests: int, seconds: float) -> dict:
    """``clients`` clients, each streaming ``requests`` continuations back to back."""
    async with grpc.aio.insecure_channel(address) as channel:

        async def client(c: int) -> list[Call]:
            return [
                await calls.stream(channel, calls.request(seconds, c * 1000 + i)) for i in range(requests)
            ]

        started = time.perf_counter()
        runs = await asyncio.gather(*(client(c) for c in range(clients)))
    return summarize([c for run in runs for c in run], time.perf_counter() - started)


async def flood_jobs(address: str, jobs: int, seconds: float, timeout_s: float) -> tuple[list[str], dict]:
    """Submit ``jobs`` short jobs at once, wait until all are final; (accepted ids, summary)."""
    async with grpc.aio.insecure_channel(address) as channel:
        started = time.perf_counter()
        submitted = await asyncio.gather(
            *(calls.submit(channel, calls.request(seconds, i, primed=False)) for i in range(jobs))
        )
        ids = [job_id for job_id, _ in submitted if job_id is not None]
        states = await calls.wait_final(channel, ids, timeout_s)
        wall = time.perf_counter() - started
    summary = summarize([c for _, c in submitted], wall)
    summary["jobs"] = calls.state_names(states)
    summary["jobs_per_s"] = round(len(ids) / wall, 3)
    return ids, summary


def assert_all_succeeded(ids: list[str], summary: dict) -> None:
    assert summary["jobs"].get("succeeded", 0) == len(ids), (
        f"accepted {len(ids)} jobs, ended {summary['jobs']}"
    )


async def quiescent(cluster: Cluster, timeout_s: float = 30) -> dict[str, float]:
    """Wait until the server holds no streams, no engine requests, and the queue no jobs
    (its gauges are sampled every 2 s); its metrics then."""
    assert cluster.server is not None
    deadline = time.monotonic() + timeout_s
    busy_prefixes = (
        "tokgen_requests_active",
        "tokgen_engine_requests_",
        "tokgen_jobs_queued",
        "tokgen_jobs_running",
    )
    while True:
        m = await asyncio.to_thread(cluster.scrape, cluster.server)
        busy = {k: v for k, v in m.items() if k.startswith(busy_prefixes) and v}
        if not busy:
            return m
        assert time.monotonic() < deadline, f"still busy {timeout_s:g} s after the load: {busy}"
        await asyncio.sleep(0.5)


async def smoke(cluster: Cluster) -> dict:
    """Everything once, small: streams, jobs, a cancelled job, client cancels and
    disconnects, bad requests; then nothing is left running and the service still serves."""
    await cluster.start_server()
    address = cluster.address
    streams = await closed_loop(address, clients=3, requests=2, seconds=1.0)
    assert streams["ok"] == 6, streams
    async with grpc.aio.insecure_channel(address) as channel:
        jobs = [calls.submit(channel, calls.request(0.5, i, primed=i % 2 == 0)) for i in range(8)]
        submitted = await asyncio.gather(*jobs)
        ids = [job_id for job_id, _ in submitted if job_id is not None]
        assert len(ids) == 8, submitted
        doomed, _ = await calls.submit(channel, calls.request(30.0, 99))
        assert doomed is not None
        cancelled = await calls.cancel_job(channel, doomed)
        interrupted = await asyncio.gather(
            calls.stream(channel, calls.request(5.0, 7), stop_after=2),
            calls.disconnect(address, calls.request(5.0, 8), after_s=1.0),
        )
        bad = await asyncio.gather(
            calls.stream(channel, calls.request(-1.0, 1)),
            calls.stream(channel, pb.ContinueRequest(prime_audio=b"RIFF-not-audio", seconds=1)),
            calls.submit(channel, calls.request(1e9, 1)),
        )
        states = await calls.wait_final(channel, [*ids, doomed], timeout_s=120)
    bad_codes = [bad[0].code, bad[1].code, bad[2][1].code]
    assert bad_codes == ["INVALID_ARGUMENT"] * 3, bad_codes
    assert calls.state_names({i: states[i] for i in ids}) == {"succeeded": 8}, calls.state_names(states)
    assert cancelled.code == "OK" and states[doomed] == jpb.JOB_STATE_CANCELLED
    metrics = await quiescent(cluster)
    assert cluster.serving(), "the server stopped serving"
    after = await closed_loop(address, clients=1, requests=1, seconds=0.5)
    assert after["ok"] == 1, after
    return {
        "streams": streams,
        "jobs": calls.state_names(states),
        "interrupted": [c.kind for c in interrupted],
        "bad_request_codes": bad_codes,
        "server_metrics": {
            k: metrics[k]
            for k in sorted(metrics)
            if k.startswith(("tokgen_requests_total", "tokgen_jobs_queued"))
        },
    }


async def ramp(
    cluster: Cluster, levels: list[int], requests: int, seconds: float, slo_s: float = SLO_TTFA_P99_S
) -> dict:
    """Concurrent streams at rising concurrency until the time-to-first-audio p99 breaks
    the SLO (the level after the break is still measured, to show the trend)."""
    await cluster.start_server(
        "--max-active", str(max(levels)), "--max-queued", str(max(levels)), "--no-worker"
    )
    await closed_loop(cluster.address, 1, 1, 1.0)  # warm-up: first calls into each engine
    results: list[tuple[int, dict]] = []
    for n in levels:
        summary = await closed_loop(cluster.address, n, requests, seconds)
        results.append((n, summary))
        progress = f"ramp: {n} streams: ttfa {summary['ttfa_s']} rtf {summary['rtf']}"
        print(progress, file=sys.stderr, flush=True)
        broke = slo_break(results, slo_s)
        if broke is not None and n > broke:
            break
    return {"slo_ttfa_p99_s": slo_s, "breaks_at": slo_break(results, slo_s), "levels": dict(results)}


async def flood(cluster: Cluster, jobs: int, seconds: float, workers: int) -> dict:
    """Hundreds of short jobs at once through ``workers`` worker processes."""
    await cluster.start_server("--no-worker")
    await asyncio.gather(*(cluster.start_worker() for _ in range(workers)))
    ids, summary = await flood_jobs(cluster.address, jobs, seconds, timeout_s=1800)
    assert_all_succeeded(ids, summary)
    return summary


async def mixed(cluster: Cluster, duration_s: float, seed: int = 0) -> dict:
    """Streams, jobs, job cancellations, client cancels and disconnects, all at once, for
    ``duration_s``; every accepted job must end, every stream OK or cancelled by its client."""
    rng = random.Random(seed)
    await cluster.start_server()
    address = cluster.address
    results: list[Call] = []
    ids: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stop_at = time.monotonic() + duration_s

        async def actor(k: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                roll = rng.random()
                req = calls.request(rng.choice([0.5, 1.0, 2.0]), k * 1000 + i, primed=rng.random() < 0.7)
                if roll < 0.4:
                    results.append(await calls.stream(channel, req))
                elif roll < 0.55:
                    results.append(await calls.stream(channel, req, stop_after=1))
                elif roll < 0.65:
                    results.append(await calls.disconnect(address, req, after_s=rng.uniform(0.1, 1.0)))
                else:
                    job_id, call = await calls.submit(channel, req)
                    results.append(call)
                    if job_id is not None:
                        ids.append(job_id)
                        if rng.random() < 0.2:
                            results.append(await calls.cancel_job(channel, job_id))

        started = time.perf_counter()
        await asyncio.gather(*(actor(k) for k in range(6)))
        states = await calls.wait_final(channel, ids, timeout_s=600)
        wall = time.perf_counter() - started
    summary = summarize(results, wall)
    summary["jobs"] = calls.state_names(states)
    unexpected = {c.code for c in results} - {"OK", "CANCELLED", "RESOURCE_EXHAUSTED"}
    assert not unexpected, summary
    lost = len(ids) - sum(n for s, n in summary["jobs"].items() if s in ("succeeded", "cancelled"))
    assert lost == 0, f"{lost} accepted jobs did not end succeeded or cancelled: {summary['jobs']}"
    await quiescent(cluster)
    assert cluster.serving()
    return summary

"""Fault scenarios: the service under a fault, then the proof that nothing accepted was
lost and that it recovered (with the recovery times)."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import grpc

from loadtests import calls
from loadtests.cluster import Cluster
from loadtests.scenarios import closed_loop, quiescent
from loadtests.stats import Call, percentile, spread, summarize
from tokgen.jobs.queue import JobQueue, connect
from tokgen.jobs.states import JobState


class JobFeeder:
    """Keeps ``backlog`` short jobs queued until stopped; remembers every accepted id."""

    def __init__(self, address: str, backlog: int, seconds: float):
        self.address, self.backlog, self.seconds = address, backlog, seconds
        self.ids: list[str] = []
        self.submits: list[Call] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            done: set[str] = set()
            while not self.stop.is_set():
                pending = [i for i in self.ids if i not in done]
                try:
                    states = await calls.job_states(channel, pending) if pending else {}
                    done |= {i for i, s in states.items() if s in calls.FINAL}
                except grpc.aio.AioRpcError:
                    pass  # Redis away: the next round asks again
                for _ in range(self.backlog - (len(self.ids) - len(done))):
                    job_id, call = await calls.submit(
                        channel, calls.request(self.seconds, len(self.submits), primed=False)
                    )
                    self.submits.append(call)
                    if job_id is not None:
                        self.ids.append(job_id)
                await asyncio.sleep(0.5)

    async def finish(self, timeout_s: float = 900) -> dict:
        """Stop feeding, wait for every accepted job; raise if any is lost."""
        self.stop.set()
        if self.task is not None:
            await self.task
        async with grpc.aio.insecure_channel(self.address) as channel:
            states = await calls.wait_final(channel, self.ids, timeout_s)
        jobs = calls.state_names(states)
        ended = sum(jobs.get(s, 0) for s in ("succeeded", "dead", "failed", "cancelled"))
        lost = len(self.ids) - ended
        assert lost == 0, f"{lost} of {len(self.ids)} accepted jobs never ended: {jobs}"
        submits = {
            "codes": summarize(self.submits, 1)["codes"],
            "s": spread([c.wall_s for c in self.submits]),
        }
        return {"accepted": len(self.ids), "lost": lost, "jobs": jobs, "submits": submits}


async def held_by(queue: JobQueue, ids: list[str], worker: str) -> list[str]:
    jobs = [await queue.get(i) for i in ids]
    return [j.id for j in jobs if j is not None and j.state == JobState.RUNNING and j.worker == worker]


async def reclaimed_after(queue: JobQueue, ids: list[str], worker: str, timeout_s: float) -> float | None:
    """Seconds until none of ``ids`` is still held by the (dead) ``worker``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not await held_by(queue, ids, worker):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def worker_kills(cluster: Cluster, kills: int, every_s: float, workers: int, seconds: float) -> dict:
    """SIGKILL a random worker every ``every_s`` during a job flood, start a replacement
    each time; every accepted job must end, and the killed workers' jobs are taken over
    once their lease expires (``lease_s``) and resumed from their saved codes."""
    await cluster.start_server("--no-worker")
    await asyncio.gather(*(cluster.start_worker() for _ in range(workers)))
    feeder = JobFeeder(cluster.address, backlog=4 * workers * cluster.worker_concurrency, seconds=seconds)
    feeder.start()
    queue = JobQueue(connect(cluster.redis_url))
    reclaims: list[asyncio.Task] = []
    starts: list[asyncio.Task] = []
    rng = random.Random(0)
    try:
        for _ in range(kills):
            await asyncio.sleep(every_s)
            alive = [w for w in cluster.workers if w.proc.returncode is None]
            victim = rng.choice(alive)
            held = await held_by(queue, feeder.ids, victim.info["worker"])
            victim.proc.send_signal(signal.SIGKILL)
            await victim.proc.wait()
            if held:
                reclaims.append(asyncio.create_task(reclaimed_after(queue, held, victim.info["worker"], 120)))
            starts.append(asyncio.create_task(cluster.start_worker()))
        await asyncio.gather(*starts)
        result = await feeder.finish()
    finally:
        feeder.stop.set()
        await queue.r.aclose()
    times = [t for t in await asyncio.gather(*reclaims) if t is not None]
    assert len(times) == len(reclaims), "some killed workers' jobs were never taken over"
    resumed = result["jobs"]
    return {
        "kills": kills,
        "lease_s": cluster.lease_s,
        "kills_holding_jobs": len(reclaims),
        "takeover_s": spread(times),
        "replacement_start_s": spread([w.started_s for w in cluster.workers[workers:]]),
        **result,
        "jobs": resumed,
    }


async def redis_restarts(
    cluster: Cluster, restarts: int, every_s: float, down_s: float, workers: int
) -> dict:
    """Stop Redis (SIGTERM: it flushes its append-only file) for ``down_s`` every
    ``every_s`` during a job flood; every accepted job must end. Recovery: from Redis
    back to the first job finishing after it."""
    await cluster.start_server("--no-worker")
    await asyncio.gather(*(cluster.start_worker() for _ in range(workers)))
    feeder = JobFeeder(cluster.address, backlog=2 * workers * cluster.worker_concurrency, seconds=0.5)
    feeder.start()
    recoveries = []
    try:
        async with grpc.aio.insecure_channel(cluster.address) as channel:
            for _ in range(restarts):
                await asyncio.sleep(every_s)
                cluster.stop_redis()
                await asyncio.sleep(down_s)
                cluster.start_redis()
                back = time.monotonic()
                before = await finished(channel, feeder.ids)
                while await finished(channel, feeder.ids) <= before:
                    assert time.monotonic() - back < 120, "no job finished within 120 s of Redis returning"
                    await asyncio.sleep(0.2)
                recoveries.append(time.monotonic() - back)
        result = await feeder.finish()
    finally:
        feeder.stop.set()
    assert cluster.serving()
    return {"restarts": restarts, "down_s": down_s, "recovery_s": spread(recoveries), **result}


async def finished(channel: grpc.aio.Channel, ids: list[str]) -> int:
    while True:
        try:
            states = await calls.job_states(channel, list(ids))
            return sum(s in calls.FINAL for s in states.values())
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)


async def sigterm(cluster: Cluster, streams: int, seconds: float) -> dict:
    """SIGTERM the server while streams are in flight: they finish (within the grace
    period), new calls are refused, it exits 0; a new server is ready after ``ready_s``."""
    await cluster.start_server()
    address = cluster.address
    async with grpc.aio.insecure_channel(address) as channel:
        inflight = [
            asyncio.create_task(calls.stream(channel, calls.request(seconds, i))) for i in range(streams)
        ]
        await asyncio.sleep(1.0)
        assert cluster.server is not None
        cluster.server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        refused = await calls.stream(channel, calls.request(1.0, 99), timeout=10)
        results = await asyncio.gather(*inflight)
    code = await cluster.server.proc.wait()
    assert code == 0, f"the server exited with {code}"
    assert [r.code for r in results] == ["OK"] * streams, [r.code for r in results]
    assert refused.code in ("UNAVAILABLE", "CANCELLED"), refused
    restarted = await cluster.start_server()
    after = await closed_loop(cluster.address, 1, 1, 1.0)
    assert after["ok"] == 1
    return {
        "streams_in_flight": summarize(results, max(r.wall_s for r in results)),
        "new_call_during_drain": refused.code,
        "exit_code": code,
        "restart_ready_s": round(restarted.started_s, 2),
    }


async def disconnect_storm(cluster: Cluster, clients: int, seed: int = 0) -> dict:
    """Many clients that cancel or drop their connection at random points: the server
    frees every slot and engine request (measured), and a stream after it is as fast."""
    rng = random.Random(seed)
    await cluster.start_server("--max-active", "8", "--max-queued", str(clients))
    before = await closed_loop(cluster.address, 1, 2, 1.0)
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        storm = [
            calls.stream(channel, calls.request(5.0, i), stop_after=rng.randint(1, 6))
            if i % 2
            else calls.disconnect(cluster.address, calls.request(5.0, i), after_s=rng.uniform(0.05, 2.0))
            for i in range(clients)
        ]
        started = time.monotonic()
        results = await asyncio.gather(*storm)
    ended = time.monotonic()
    await quiescent(cluster, timeout_s=60)
    freed_s = time.monotonic() - ended
    after = await closed_loop(cluster.address, 1, 2, 1.0)
    assert after["ok"] == 2 and cluster.serving()
    return {
        "clients": clients,
        "storm_s": round(ended - started, 2),
        "kinds": {k: sum(r.kind == k for r in results) for k in ("cancel", "disconnect", "stream")},
        "freed_s_after_storm": round(freed_s, 2),
        "ttfa_before_s": before["ttfa_s"],
        "ttfa_after_s": after["ttfa_s"],
    }


async def overload(cluster: Cluster, clients: int, active: int, queued: int) -> dict:
    """More streams at once than admission holds: the excess is refused at once with
    RESOURCE_EXHAUSTED (and a retry delay), the admitted ones complete, nothing else fails."""
    await cluster.start_server("--max-active", str(active), "--max-queued", str(queued), "--no-worker")
    await closed_loop(cluster.address, 1, 1, 0.5)
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(calls.stream(channel, calls.request(2.0, i)) for i in range(clients))
        )
        wall = time.perf_counter() - started
    summary = summarize(results, wall)
    assert set(summary["codes"]) <= {"OK", "RESOURCE_EXHAUSTED"}, summary["codes"]
    assert summary["ok"] >= active and summary["codes"].get("RESOURCE_EXHAUSTED", 0) >= 1, summary["codes"]
    refused = [r.wall_s for r in results if r.code == "RESOURCE_EXHAUSTED"]
    await quiescent(cluster)
    after = await closed_loop(cluster.address, 1, 1, 0.5)
    assert after["ok"] == 1 and cluster.serving()
    return {**summary, "refusal_s_p50": round(percentile(refused, 50) or 0, 4)}

"""The Redis Streams job queue against a real redis-server (the embedded one)."""

from __future__ import annotations

import asyncio

import pytest

from tests.redis_cluster import ALSO_ON_CLUSTER
from tokgen.jobs.queue import JobQueue, claimed_entries
from tokgen.jobs.states import InvalidTransition, JobState, RetryPolicy


def test_xautoclaim_replies_of_redis_6_and_7():
    entry = (b"1-0", {b"job": b"a"})
    assert claimed_entries([b"0-0", [entry]]) == (b"0-0", [entry])  # 6.2
    assert claimed_entries([b"0-0", [entry, (b"2-0", None)], [b"3-0"]]) == (b"0-0", [entry])  # 7.x
    with pytest.raises(Exception, match="unexpected"):
        claimed_entries([b"0-0"])


@ALSO_ON_CLUSTER
def test_submit_is_idempotent_and_claim_serves_priorities_in_order(run):
    async def scenario(q: JobQueue):
        low, created = await q.submit(b"req-low", "low")
        normal, _ = await q.submit(b"req-normal", "normal", idempotency_key="k1")
        again, created_again = await q.submit(b"other", "normal", idempotency_key="k1")
        high, _ = await q.submit(b"req-high", "high")
        assert created and again == normal and not created_again
        q.turn = 0  # a high-first turn
        first = await q.claim("w1", 1)
        rest = await q.claim("w1", 5)
        assert [c.job.id for c in first] == [high] and {c.job.id for c in rest} == {low, normal}
        return first[0].request, await q.unfinished()

    request, unfinished = run(scenario)
    assert request == b"req-high" and unfinished == 3


@ALSO_ON_CLUSTER
def test_success_stores_one_result_and_only_the_attempts_worker_may_store_it(run):
    async def scenario(q: JobQueue):
        job_id, _ = await q.submit(b"r", "normal")
        (claim,) = await q.claim("w1", 1)
        assert claim.job.state == JobState.RUNNING and claim.job.attempts == 1
        with pytest.raises(InvalidTransition):
            await q.succeed(claim, "w2", b"audio", b"codes")
        assert await q.result(job_id) is None
        job = await q.succeed(claim, "w1", b"audio", b"codes")
        with pytest.raises(InvalidTransition):
            await q.succeed(claim, "w1", b"again", b"again")  # a second result is refused
        return job, await q.result(job_id), await q.unfinished()

    job, result, unfinished = run(scenario)
    assert job.state == JobState.SUCCEEDED and result == (b"audio", b"codes") and unfinished == 0


@ALSO_ON_CLUSTER
def test_a_lost_workers_job_is_taken_over_after_the_lease(run):
    async def scenario(q: JobQueue):
        await q.submit(b"r", "normal")
        (claim,) = await q.claim("w1", 1)
        assert await q.claim("w2", 1) == []  # held by w1, lease not expired
        await asyncio.sleep(0.6)
        assert await q.heartbeat(claim, "w1") is not None  # renewed: still w1's
        await asyncio.sleep(0.6)
        assert await q.claim("w2", 1) == []  # 1.2 s since the claim, 0.6 s since the renewal
        await asyncio.sleep(0.6)
        (taken,) = await q.claim("w2", 1)  # w1 stopped renewing (dead)
        assert await q.heartbeat(claim, "w1") is None  # w1, if it comes back, must stop
        done = await q.succeed(taken, "w2", b"a", b"c")
        return taken.job, done

    taken, done = run(scenario, lease_s=1.0)
    assert taken.attempts == 2 and taken.worker == "w2" and done.state == JobState.SUCCEEDED


@ALSO_ON_CLUSTER
def test_failures_retry_with_backoff_then_go_to_the_dead_letter_stream(run):
    async def scenario(q: JobQueue):
        await q.submit(b"r", "normal")
        states = []
        for _ in range(3):
            for _ in range(100):
                claims = await q.claim("w1", 1)
                if claims:
                    break
                await asyncio.sleep(0.05)
            (claim,) = claims
            states.append((await q.fail(claim, "w1", f"boom {claim.job.attempts}", retryable=True)).state)
        return states, await q.dead_letters(), await q.unfinished()

    policy = RetryPolicy(max_attempts=3, backoff_s=0.1, max_backoff_s=0.2)
    states, dead, unfinished = run(scenario, policy=policy)
    assert states == [JobState.QUEUED, JobState.QUEUED, JobState.DEAD]
    assert len(dead) == 1 and dead[0][1] == "boom 3" and unfinished == 0


@ALSO_ON_CLUSTER
def test_cancel_queued_and_running(run):
    async def scenario(q: JobQueue):
        queued, _ = await q.submit(b"r1", "normal")
        assert (await q.cancel(queued)).state == JobState.CANCELLED
        running, _ = await q.submit(b"r2", "normal")
        claims = await q.claim("w1", 5)
        assert [c.job.id for c in claims] == [running]  # the cancelled one never starts
        await q.cancel(running)
        seen = await q.heartbeat(claims[0], "w1")
        assert seen is not None and seen.cancel_requested  # the worker learns it here
        return await q.cancelled(claims[0], "w1"), await q.unfinished()

    job, unfinished = run(scenario)
    assert job.state == JobState.CANCELLED and unfinished == 0


def test_results_expire_after_their_ttl(run):
    async def scenario(q: JobQueue):
        job_id, _ = await q.submit(b"r", "normal")
        (claim,) = await q.claim("w1", 1)
        await q.succeed(claim, "w1", b"a", b"c")
        assert await q.result(job_id) is not None
        await asyncio.sleep(2.2)
        return await q.result(job_id), (await q.get(job_id)).state

    result, state = run(scenario, result_ttl_s=1.0)
    assert result is None and state == JobState.SUCCEEDED


@ALSO_ON_CLUSTER
def test_claim_recreates_consumer_groups_that_redis_lost(run):
    """A Redis without persistence that restarts loses the streams and their groups: claim
    and depth create them again instead of failing with NOGROUP, and new jobs flow."""

    async def scenario(q: JobQueue):
        await q.ensure_groups()
        await q.r.delete(*(q.stream(p) for p in ("high", "normal", "low")))
        depth = await q.depth()  # the gauges' read recreates them too
        assert sum(depth.queued.values()) == sum(depth.running.values()) == 0
        await q.r.delete(*(q.stream(p) for p in ("high", "normal", "low")))
        assert await q.claim("w1", 4) == []
        job_id, _ = await q.submit(b"r", "normal")
        return job_id, [c.job.id for c in await q.claim("w1", 4)]

    job_id, claimed = run(scenario)
    assert claimed == [job_id]

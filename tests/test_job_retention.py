"""Redis stays bounded (issue 17, point 5), against each real redis-server: a finished job
drops its prime at once and expires with its result, partial codes and idempotency key
after the retention; the indexes are trimmed; a state-filtered listing reads only its own
state's jobs; jobs stored before all this are indexed and retained on upgrade."""

from __future__ import annotations

import asyncio
import json

from tokgen.jobs.queue import JobQueue
from tokgen.jobs.states import JobState, RetryPolicy


async def keys(q: JobQueue) -> dict[str, int]:
    """Every key of the queue and its TTL (-1: none)."""
    return {k.decode(): await q.r.ttl(k) async for k in q.r.scan_iter(f"{q.config.namespace}:*")}


async def index_sizes(q: JobQueue) -> dict[str, int]:
    """The members of every sorted set of the queue (the indexes)."""
    return {
        name: await q.r.zcard(name) for name, _ in (await keys(q)).items() if await q.r.type(name) == b"zset"
    }


def test_finished_jobs_drop_their_prime_and_expire_with_their_keys(run):
    """Succeeded (with a result, partial codes saved on the way and an idempotency key),
    failed, dead and cancelled: each loses its prepared request when it finishes, and its
    record, result and idempotency key expire after the retention; then the indexes no
    longer hold it, and nothing of the queue is left but what never finishes."""

    async def scenario(q: JobQueue):
        ok, _ = await q.submit(b"prime-codes", "normal", "nightly", owner="alice", digest="d")
        failed, _ = await q.submit(b"prime-codes", "high", owner="alice")
        dead, _ = await q.submit(b"prime-codes", "high", owner="bob")
        cancelled, _ = await q.submit(b"prime-codes", "low", owner="bob")
        claims = {c.job.id: c for c in await q.claim("w1", 3)}
        assert set(claims) == {ok, failed, dead}
        await q.save_partial(claims[ok], b"partial codes")
        await q.succeed(claims[ok], "w1", b"audio", b"codes")
        await q.fail(claims[failed], "w1", "corrupt", retryable=False)
        assert (await q.fail(claims[dead], "w1", "boom", retryable=True)).state == JobState.DEAD
        await q.cancel(cancelled)
        stored, ns = await keys(q), q.config.namespace
        for job_id in (ok, failed, dead, cancelled):
            assert await q.r.hget(f"{ns}:job:{job_id}", "request") is None  # the prime left
            assert 0 < stored[f"{ns}:job:{job_id}"] <= 3
        assert 0 < stored[f"{ns}:result:{ok}"] <= 3  # result_ttl_s is longer: the retention wins
        assert 0 < stored[f"{ns}:idem:alice:nightly"] <= 3
        assert f"{ns}:partial:{ok}" not in stored
        listed = await q.list_jobs(None, None, 10)
        assert {j.id for j in listed[0]} == {ok, failed, dead, cancelled}
        assert [j.id for j in (await q.list_jobs(JobState.FAILED, None, 10, "alice"))[0]] == [failed]
        await asyncio.sleep(3.5)
        assert await q.get(ok) is None and await q.result(ok) is None
        assert await q.idempotent_job("alice", "nightly", "d") is None
        assert (await q.list_jobs(None, None, 10))[0] == []  # trims the indexes as it lists
        return await index_sizes(q), await keys(q)

    policy = RetryPolicy(max_attempts=1)
    indexes, left = run(scenario, retention_s=3.0, result_ttl_s=100.0, policy=policy)
    assert sum(indexes.values()) == 0, indexes
    # What remains is the queue's own (streams, dead letters): no key of any job.
    assert not [k for k in left if ":job:" in k or ":result:" in k or ":idem:" in k], left


def test_a_result_expires_before_the_record_when_its_ttl_is_shorter(run):
    async def scenario(q: JobQueue):
        job_id, _ = await q.submit(b"r", "normal")
        (claim,) = await q.claim("w1", 1)
        await q.succeed(claim, "w1", b"a", b"c")
        return await keys(q), job_id

    stored, job_id = run(scenario, retention_s=1000.0, result_ttl_s=10.0)
    prefix = next(iter(stored)).split(":")[0]
    assert 0 < stored[f"{prefix}:result:{job_id}"] <= 10 < stored[f"{prefix}:job:{job_id}"] <= 1000


def test_a_state_filtered_listing_reads_only_that_states_jobs(run, each_redis_server):
    """300 finished jobs and 3 queued ones: listing the queued reads 3 records, not the
    history (the old listing read every job's record to filter them: 303 HGETs)."""

    async def scenario(q: JobQueue):
        queued = []
        for i in range(303):
            job_id, _ = await q.submit(b"r", "normal", owner="alice")
            if i % 101 == 100:
                queued.append(job_id)
            else:
                await q.cancel(job_id)
        await q.r.config_resetstat()
        page, token = await q.list_jobs(JobState.QUEUED, None, 2, "alice")
        rest, end = await q.list_jobs(JobState.QUEUED, token, 2, "alice")
        stats = await q.r.info("commandstats")
        return queued, page, token, rest, end, stats.get("cmdstat_hget", {}).get("calls", 0)

    queued, page, token, rest, end, hgets = run(scenario)
    assert [j.id for j in page + rest] == queued[::-1] and token.job_id == queued[1] and end is None
    assert hgets == 3, f"{hgets} records read to list 3 queued jobs"


def test_jobs_stored_before_the_upgrade_are_indexed_and_retained(run):
    """Records as the previous version wrote them (no owner, the global index only, the
    prime kept forever): the upgrade indexes them by owner and state, and retires the
    finished ones (prime dropped, expiry set); it runs once."""

    async def scenario(q: JobQueue):
        p = q.config.namespace

        def old_record(job_id: str, state: str) -> str:
            return json.dumps(
                {
                    "id": job_id,
                    "priority": "normal",
                    "state": state,
                    "attempts": 0,
                    "failures": 0,
                    "attempt_saved": False,
                    "created_at": 1000.0 + len(job_id),
                    "updated_at": 1000.0,
                    "not_before": 0.0,
                    "worker": None,
                    "cancel_requested": state == "cancelled",
                    "progress": 0.0,
                    "level_progress": [],
                    "error": None,
                    "history": [],
                }
            )

        for job_id, state in (("a", "queued"), ("bb", "cancelled"), ("ccc", "succeeded")):
            await q.r.hset(
                f"{p}:job:{job_id}", mapping={"record": old_record(job_id, state), "request": b"x"}
            )
            await q.r.zadd(f"{p}:jobs", {job_id: 1000.0 + len(job_id)})
        assert await q.upgrade_indexes() == 3
        assert await q.upgrade_indexes() == 0  # once
        listed = {s: [j.id for j in (await q.list_jobs(s, None, 10, "anonymous"))[0]] for s in JobState}
        stored = await keys(q)
        return listed, stored, [await q.r.hget(f"{p}:job:{j}", "request") for j in ("a", "bb", "ccc")]

    listed, stored, requests = run(scenario, retention_s=100.0)
    assert listed[JobState.QUEUED] == ["a"] and listed[JobState.CANCELLED] == ["bb"]
    assert listed[JobState.SUCCEEDED] == ["ccc"] and not listed[JobState.RUNNING]
    assert requests == [b"x", None, None]  # the queued one keeps its prime until it finishes
    prefix = next(iter(stored)).split(":")[0]
    assert stored[f"{prefix}:job:a"] == -1 and 0 < stored[f"{prefix}:job:bb"] <= 100

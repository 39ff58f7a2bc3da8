"""The queue's keys share one hash slot (issue 19), so it runs unchanged on Redis Cluster
(here a real local cluster of three masters, ``tests/redis_cluster.py``) and on managed
Redis: every key starts with the hash tag ``{prefix}``, a cluster URL gets a cluster
client, and a queue written with the keys of before (no braces) is kept on upgrade."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from tests.redis_cluster import ALSO_ON_CLUSTER, free_port
from tokgen.errors import TokgenError
from tokgen.jobs.queue import JobQueue, QueueConfig, check_redis, cluster_node_url, open_queue
from tokgen.jobs.states import JobState, RetryPolicy

# Every kind of key the queue makes (queue.py's docstring lists them).
KINDS = {"job", "jobs", "owner", "state", "expiring", "owner-salt", "stream", "delayed", "dead", "idem"}
KINDS |= {"result", "partial", "index-version"}


async def names(q: JobQueue) -> set[bytes]:
    return {k async for k in q.r.scan_iter(f"{q.config.namespace}:*")}


@ALSO_ON_CLUSTER
def test_every_key_of_a_jobs_life_is_in_the_queues_one_slot(run):
    """A job submitted with an idempotency key, saving partial codes, succeeding; one
    failing into its backoff, then dead-lettered: every key any of it touched hashes to
    the slot of the prefix."""

    async def scenario(q: JobQueue):
        await q.upgrade_indexes()
        await q.owner_salt()
        ok, _ = await q.submit(b"r", "high", "nightly", owner="alice", digest="d")
        dead, _ = await q.submit(b"r", "low", owner="bob")
        claims = {c.job.id: c for c in await q.claim("w1", 2)}
        await q.save_partial(claims[ok], b"codes so far")
        await q.fail(claims[dead], "w1", "boom", retryable=True)
        seen = await names(q)  # partial codes, a retry in its backoff
        await q.succeed(claims[ok], "w1", b"audio", b"codes")
        await asyncio.sleep(0.05)
        (again,) = await q.claim("w1", 1)
        assert (await q.fail(again, "w1", "boom", retryable=True)).state == JobState.DEAD
        return seen | await names(q)

    seen = run(scenario, policy=RetryPolicy(max_attempts=2, backoff_s=0.01))
    assert {name.split(b":")[1].decode() for name in seen} == KINDS
    assert len({key_slot(name) for name in seen}) == 1


def test_a_prefix_that_would_break_the_hash_tag_is_refused():
    assert QueueConfig(prefix="tokgen-staging").namespace == "{tokgen-staging}"
    for prefix in ("", "a}b", "{a}", "a:b"):
        with pytest.raises(ValueError, match="queue prefix"):
            QueueConfig(prefix=prefix)


def test_cluster_urls_name_a_node_and_others_one_server():
    assert cluster_node_url("redis+cluster://h:7000") == "redis://h:7000"
    assert cluster_node_url("rediss+cluster://:pw@h:7000/0") == "rediss://:pw@h:7000/0"  # TLS
    assert cluster_node_url("redis://h:6379") is None and cluster_node_url("unix:///r.sock") is None


def test_servers_and_workers_open_the_queue_on_a_cluster(redis_cluster, tmp_path):
    """``open_queue`` (``tokgen serve`` and ``tokgen worker``) on a cluster URL: a cluster
    client, the upgrade steps, and jobs flow."""

    async def scenario():
        async with open_queue(redis_cluster.url, tmp_path, QueueConfig(prefix="opened")) as (queue, url):
            assert isinstance(queue.r, RedisCluster) and url == redis_cluster.url
            job_id, _ = await queue.submit(b"r", "normal")
            (claim,) = await queue.claim("w1", 1)
            assert claim.job.id == job_id
            return (await queue.succeed(claim, "w1", b"a", b"c")).state

    state = asyncio.run(scenario())
    assert state == JobState.SUCCEEDED and not (tmp_path / "redis.sock").exists()  # no embedded Redis


def test_a_wrong_cluster_url_is_refused_with_what_to_do(redis_cluster):
    node = f"redis://127.0.0.1:{redis_cluster.ports[1]}"
    with pytest.raises(TokgenError, match=r"is a cluster node: use redis\+cluster://"):
        asyncio.run(check_redis(node))  # its keys would answer MOVED
    with pytest.raises(TokgenError, match="cannot use Redis"):
        asyncio.run(check_redis(f"redis+cluster://127.0.0.1:{free_port()}"))  # nothing there


def test_a_queue_with_the_keys_of_before_is_renamed_and_keeps_its_jobs(redis_server):
    """Keys as tokgen wrote them before issue 19 (``P:...``): a queued job, one running on
    a worker that died, an idempotency key with its TTL. After the rename the queued one
    is claimed, the running one taken over, the key still finds its job."""

    async def scenario():
        async with aioredis.Redis.from_url(redis_server.url) as client:
            queue = JobQueue(client, QueueConfig(prefix="before", lease_s=0.1))
            running, _ = await queue.submit(b"r", "normal", idempotency_key="k", digest="d")
            queued, _ = await queue.submit(b"r", "normal")
            await queue.claim("lost", 1)  # the older one
            await queue.r.expire(queue._idem("anonymous", "k"), 100)
            async for key in queue.r.scan_iter("{before}:*"):  # back to the layout of before
                await queue.r.rename(key, key.replace(b"{before}", b"before"))
            assert await queue.get(queued) is None
            renamed = await queue.adopt_unbraced_keys()
            assert await queue.adopt_unbraced_keys() == 0  # all of them at once
            assert not [k async for k in queue.r.scan_iter("before:*")]
            await asyncio.sleep(0.15)  # the dead worker's lease
            claimed = {c.job.id: c.taken_over for c in await queue.claim("w1", 2)}
            ttl = await queue.r.ttl(queue._idem("anonymous", "k"))
            return renamed, claimed, ttl, await queue.idempotent_job("anonymous", "k", "d"), queued, running

    renamed, claimed, ttl, found, queued, running = asyncio.run(scenario())
    assert renamed > 10 and claimed == {queued: False, running: True}
    assert 90 < ttl <= 100 and found == running

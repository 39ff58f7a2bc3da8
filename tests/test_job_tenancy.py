"""Jobs belong to the API key that submitted them (issue 17, point 4), against a real Redis
and, for the service, a real gRPC server over a socket with two tenants' keys and an
operator's: another tenant's job is NOT_FOUND exactly as a missing one is, listings are
per owner, idempotency keys are per owner and bound to their request."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
import redis.asyncio as aioredis

from tests.redis_cluster import ALSO_ON_CLUSTER
from tokgen.codec import load_codec
from tokgen.generation.generator import Generator
from tokgen.jobs.queue import IdempotencyConflict, JobQueue, QueueConfig, QueueFull
from tokgen.jobs.states import ANONYMOUS
from tokgen.serve.admission import Admission
from tokgen.serve.auth import key_id
from tokgen.serve.jobs_service import JobServicer
from tokgen.serve.server import build_server
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb

# ---- the queue ------------------------------------------------------------------------------


@ALSO_ON_CLUSTER
def test_idempotency_keys_are_per_owner_and_bound_to_their_request(run):
    async def scenario(q: JobQueue):
        a, created = await q.submit(b"r1", "normal", "k", owner="alice", digest="d1")
        again, created_again = await q.submit(b"r1", "normal", "k", owner="alice", digest="d1")
        assert created and (again, created_again) == (a, False)
        assert await q.idempotent_job("alice", "k", "d1") == a
        with pytest.raises(IdempotencyConflict, match="different request") as err:
            await q.submit(b"r2", "normal", "k", owner="alice", digest="d2")
        assert err.value.job_id == a
        with pytest.raises(IdempotencyConflict):
            await q.idempotent_job("alice", "k", "d2")
        b, created_b = await q.submit(b"r2", "normal", "k", owner="bob", digest="d2")  # bob's own "k"
        assert created_b and b != a
        anon, _ = await q.submit(b"r3", "normal")
        owners = {job_id: (await q.get(job_id)).owner for job_id in (a, b, anon)}
        assert owners == {a: "alice", b: "bob", anon: ANONYMOUS}
        listed = {
            who: [j.id for j in (await q.list_jobs(None, None, 50, who))[0]]
            for who in ("alice", "bob", "carol")
        }
        assert listed == {"alice": [a], "bob": [b], "carol": []}
        assert {j.id for j in (await q.list_jobs(None, None, 50, None))[0]} == {a, b, anon}  # everyone's

    run(scenario)


@ALSO_ON_CLUSTER
def test_one_idempotency_key_submitted_at_once_makes_one_job(run):
    async def scenario(q: JobQueue):
        replies = await asyncio.gather(
            *(q.submit(b"r", "normal", "same", owner="alice", digest="d") for _ in range(8))
        )
        assert len({job_id for job_id, _ in replies}) == 1
        assert sum(created for _, created in replies) == 1
        return await q.unfinished()

    assert run(scenario) == 1


def test_one_owner_cannot_fill_the_queue(run):
    """At ``max_per_owner`` unfinished jobs an owner is refused, others are not, and a
    finished (here: cancelled) job frees its place."""

    async def scenario(q: JobQueue):
        mine = [(await q.submit(b"r", "normal", owner="alice"))[0] for _ in range(2)]
        with pytest.raises(QueueFull, match="limit per key"):
            await q.submit(b"r", "normal", owner="alice")
        await q.submit(b"r", "normal", owner="bob")
        assert (await q.unfinished_of("alice"), await q.unfinished_of("bob")) == (2, 1)
        await q.cancel(mine[0])
        await q.submit(b"r", "normal", owner="alice")
        assert await q.unfinished_of("alice") == 2

    run(scenario, max_per_owner=2)


# ---- the service ----------------------------------------------------------------------------

ALICE, BOB, OPERATOR = (f"{name}-key-0123456789abcdef" for name in ("alice", "bob", "operator"))


@pytest.fixture
def tenants(loop_thread, tiny_model_dir, redis_server):
    """A server with JobService, two tenants' keys and an operator key; a stub and the
    queue it uses."""
    codec = load_codec(tiny_model_dir)

    async def start():
        queue = JobQueue(aioredis.Redis.from_url(redis_server.url), QueueConfig(prefix="tenants"))
        ns = queue.config.namespace
        await queue.r.delete(*[k async for k in queue.r.scan_iter(f"{ns}:*")] or [f"{ns}:none"])
        jobs = JobServicer(queue)
        server, _, _, port = build_server(
            "127.0.0.1:0",
            Admission(2, 0),
            api_keys=[ALICE.encode(), BOB.encode()],
            jobs=jobs,
            operator_keys=[OPERATOR.encode()],
        )
        await server.start()
        jobs.attach(Generator(codec, []))
        return server, queue, port

    server, queue, port = loop_thread.run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield jpb_grpc.JobServiceStub(channel), queue
    channel.close()
    loop_thread.run(server.stop(None))


def as_(key: str) -> tuple:
    return (("x-api-key", key),)


def refusal(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        reply = call(*args, **kwargs)
        if not hasattr(reply, "job"):  # a stream
            list(reply)
    return err.value.code(), err.value.details()


def submit(seconds: float = 1.0, key: str = "") -> jpb.SubmitJobRequest:
    request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=seconds)
    return jpb.SubmitJobRequest(request=request, idempotency_key=key)


def test_another_keys_job_is_not_found_like_a_missing_one(tenants, loop_thread):
    stub, queue = tenants
    mine = stub.SubmitJob(submit(), metadata=as_(ALICE)).job.job_id
    missing = "f" * 32
    for method, message in (
        (stub.GetJob, jpb.GetJobRequest),
        (stub.WatchJob, jpb.WatchJobRequest),
        (stub.CancelJob, jpb.CancelJobRequest),
        (stub.GetJobResult, jpb.GetJobResultRequest),
        (stub.StreamJobResult, jpb.StreamJobResultRequest),
    ):
        theirs = refusal(method, message(job_id=mine), metadata=as_(BOB), timeout=30)
        nothing = refusal(method, message(job_id=missing), metadata=as_(BOB), timeout=30)
        assert theirs[0] == nothing[0] == grpc.StatusCode.NOT_FOUND
        assert theirs[1].replace(mine, missing) == nothing[1]  # the same words: existence not confirmed
    job = stub.GetJob(jpb.GetJobRequest(job_id=mine), metadata=as_(ALICE)).job
    assert job.state == jpb.JOB_STATE_QUEUED and not job.cancel_requested  # Bob's cancel did nothing
    # The record names the key's id, never the key: nothing in Redis holds a key's bytes.
    record = loop_thread.run(queue.get(mine))
    assert record.owner == key_id(loop_thread.run(queue.owner_salt()), ALICE.encode())

    async def everything() -> bytes:
        seen = b""
        async for name in queue.r.scan_iter(f"{queue.config.namespace}:*"):
            kind = (await queue.r.type(name)).decode()
            if kind == "hash":
                seen += b"".join(k + v for k, v in (await queue.r.hgetall(name)).items())
            elif kind == "string":
                seen += await queue.r.get(name)
            elif kind == "zset":
                seen += b"".join(await queue.r.zrange(name, 0, -1))
            elif kind == "stream":
                seen += b"".join(b"".join(f.values()) for _, f in await queue.r.xrange(name))
            seen += name
        return seen

    stored = loop_thread.run(everything())
    assert mine.encode() in stored and not any(k.encode() in stored for k in (ALICE, BOB, OPERATOR))


def test_listings_are_per_owner_and_operators_see_all(tenants):
    stub, _ = tenants
    alices = {stub.SubmitJob(submit(0.5 + i), metadata=as_(ALICE)).job.job_id for i in range(3)}
    bobs = {stub.SubmitJob(submit(0.5), metadata=as_(BOB)).job.job_id}
    stub.CancelJob(jpb.CancelJobRequest(job_id=min(alices)), metadata=as_(ALICE))

    def listed(key: str, state: int = jpb.JOB_STATE_UNSPECIFIED, size: int = 2) -> set[str]:
        ids: set[str] = set()
        token = ""
        while True:
            page = stub.ListJobs(
                jpb.ListJobsRequest(state=state, page_size=size, page_token=token), metadata=as_(key)
            )
            ids |= {j.job_id for j in page.jobs}
            if not page.next_page_token:
                return ids
            token = page.next_page_token

    assert listed(ALICE) == alices and listed(BOB) == bobs
    assert listed(ALICE, jpb.JOB_STATE_CANCELLED) == {min(alices)}
    assert listed(BOB, jpb.JOB_STATE_CANCELLED) == set()
    assert listed(OPERATOR) == alices | bobs
    assert listed(OPERATOR, jpb.JOB_STATE_QUEUED) == (alices - {min(alices)}) | bobs
    # An operator reads and cancels any job; its own submissions are its own.
    bob_job = next(iter(bobs))
    assert stub.GetJob(jpb.GetJobRequest(job_id=bob_job), metadata=as_(OPERATOR)).job.job_id == bob_job
    own = stub.SubmitJob(submit(), metadata=as_(OPERATOR)).job.job_id
    assert own not in listed(ALICE) | listed(BOB)
    code, _ = refusal(stub.GetJob, jpb.GetJobRequest(job_id=own), metadata=as_(ALICE))
    assert code == grpc.StatusCode.NOT_FOUND


def test_idempotency_keys_are_per_key_and_bound_to_their_request(tenants):
    stub, _ = tenants
    first = stub.SubmitJob(submit(1.0, "nightly"), metadata=as_(ALICE))
    again = stub.SubmitJob(submit(1.0, "nightly"), metadata=as_(ALICE))
    assert first.created and not again.created and again.job.job_id == first.job.job_id
    # Bob's "nightly" is his own: a new job, not Alice's (the issue: B was handed A's job).
    bobs = stub.SubmitJob(submit(1.0, "nightly"), metadata=as_(BOB))
    assert bobs.created and bobs.job.job_id != first.job.job_id
    # The same key with a different request is an error, not the old job.
    code, message = refusal(stub.SubmitJob, submit(2.0, "nightly"), metadata=as_(ALICE))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "different request" in message and first.job.job_id in message
    other = jpb.SubmitJobRequest(
        request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=1.0, sampling=pb.SamplingParams(seed=7)),
        idempotency_key="nightly",
    )
    assert refusal(stub.SubmitJob, other, metadata=as_(ALICE))[0] == grpc.StatusCode.ALREADY_EXISTS
    # The priority only orders the queue: a retry at another one is the same request.
    retry = jpb.SubmitJobRequest(
        request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=1.0, priority=pb.PRIORITY_HIGH),
        idempotency_key="nightly",
    )
    reply = stub.SubmitJob(retry, metadata=as_(ALICE))
    assert not reply.created and reply.job.job_id == first.job.job_id


def test_a_key_at_its_job_limit_is_refused_before_its_request_is_prepared(tenants):
    stub, queue = tenants
    queue.config = replace(queue.config, max_per_owner=1)
    stub.SubmitJob(submit(), metadata=as_(ALICE))
    code, details = refusal(stub.SubmitJob, submit(), metadata=as_(ALICE))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit per key" in details
    # An undecodable prime is not even read: the refusal comes before preparation.
    garbage = jpb.SubmitJobRequest(
        request=pb.ContinueRequest(mode=pb.MODE_PRIMED, seconds=1.0, prime_audio=b"x" * 64)
    )
    assert refusal(stub.SubmitJob, garbage, metadata=as_(ALICE))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal(stub.SubmitJob, garbage, metadata=as_(BOB))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.SubmitJob(submit(), metadata=as_(BOB)).created  # the other tenant is not affected


def test_a_job_keeps_the_seed_it_renders_with(tenants):
    """Given or drawn, the seed is on the job from submission on (GetJob, listings), and an
    idempotent resubmission of an unseeded request returns the first job's seed."""
    stub, _ = tenants
    seeded = submit()
    seeded.request.sampling.seed = 7
    job = stub.SubmitJob(seeded, metadata=as_(ALICE)).job
    assert (
        job.seed == 7 and stub.GetJob(jpb.GetJobRequest(job_id=job.job_id), metadata=as_(ALICE)).job.seed == 7
    )
    a, b = (stub.SubmitJob(submit(), metadata=as_(ALICE)).job for _ in range(2))
    assert a.HasField("seed") and b.HasField("seed") and a.seed != b.seed
    first = stub.SubmitJob(submit(key="again"), metadata=as_(ALICE)).job
    again = stub.SubmitJob(submit(key="again"), metadata=as_(ALICE))
    assert not again.created and again.job.seed == first.seed

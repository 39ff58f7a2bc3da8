"""``JobService`` over ``jobs.queue``: the same checks as ``Continue`` before a job is
accepted; the prime or codes are decoded and encoded here, once, and the queue stores the
prepared job (``generation.queued``), which workers run without parsing it again.

Jobs belong to the API key that submitted them (``serve.auth``: its id, never the key):
another key's job is NOT_FOUND, with the message a missing job gets; ListJobs lists the
caller's own; idempotency keys are the caller's own too, and one used again for another
request is ALREADY_EXISTS. Operator keys see every job. Without keys, one anonymous owner."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import grpc

from tokgen.generation.generator import Generator
from tokgen.generation.queued import QueuedJob
from tokgen.generation.spec import ContinueSpec, FieldError
from tokgen.jobs.queue import IdempotencyConflict, JobQueue, QueueFull
from tokgen.jobs.states import ANONYMOUS, Job, JobState
from tokgen.monitoring import metrics
from tokgen.serve.admission import Concurrency
from tokgen.serve.auth import caller, key_id
from tokgen.serve.service import abort_invalid
from tokgen.serve.watch import Watchers, WatchersFull
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb

MAX_OFFSET = 2**40  # far beyond any listing, far below Redis' int64 ranges

STATES = {
    JobState.QUEUED: jpb.JOB_STATE_QUEUED,
    JobState.RUNNING: jpb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jpb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jpb.JOB_STATE_FAILED,
    JobState.CANCELLED: jpb.JOB_STATE_CANCELLED,
    JobState.DEAD: jpb.JOB_STATE_DEAD,
}
PRIORITY_ENUMS = {"high": pb.PRIORITY_HIGH, "normal": pb.PRIORITY_NORMAL, "low": pb.PRIORITY_LOW}
MAX_PAGE = 1000
MAX_IDEMPOTENCY_KEY = 200
# Submissions decoding and encoding a prime at once (Settings.max_preparing): each holds a
# decoded prime (up to 60 s) and the codec's activations encoding all of it (measured with
# the shipped codec: ~9 MiB per second of prime, 520 MiB for 60 s), so many callers at once
# must not multiply that memory.
MAX_PREPARING = 2
MAX_WATCHERS = 64  # WatchJob calls at once (Settings.max_watchers)


def job_message(job: Job) -> jpb.Job:
    return jpb.Job(
        job_id=job.id,
        state=STATES[job.state],
        priority=PRIORITY_ENUMS[job.priority],
        attempts=job.attempts,
        progress=job.progress,
        level_progress=job.level_progress,
        error=job.error or "",
        created_at=job.created_at,
        updated_at=job.updated_at,
        cancel_requested=job.cancel_requested,
        seed=job.seed,
    )


@dataclass(frozen=True)
class Tenant:
    """The owner a call acts as: its key's id, and whether it may see every owner's jobs."""

    owner: str = ANONYMOUS
    operator: bool = False

    def sees(self, job: Job) -> bool:
        return self.operator or job.owner == self.owner


def request_digest(request: pb.ContinueRequest) -> str:
    """What makes two submissions the same request: everything that decides the render
    (deterministic bytes: the client's field order does not matter). Not the priority,
    which only orders the queue: a retry at another priority gets the job as queued."""
    rendered = pb.ContinueRequest()
    rendered.CopyFrom(request)
    rendered.ClearField("priority")
    return hashlib.sha256(rendered.SerializeToString(deterministic=True)).hexdigest()


class JobServicer(jpb_grpc.JobServiceServicer):
    """Registered when the server starts; takes jobs once ``attach`` gives it the token
    layout to validate them against (until then, like ``Continue``: UNAVAILABLE)."""

    def __init__(
        self,
        queue: JobQueue,
        watch_every_s: float = 0.5,
        max_preparing: int = MAX_PREPARING,
        max_watchers: int = MAX_WATCHERS,
    ):
        self.queue = queue
        self.generator: Generator | None = None
        self.watchers = Watchers(queue.get_many, watch_every_s, max_watchers)
        self.preparing = asyncio.Semaphore(max_preparing)
        self.preparations = Concurrency()  # counted in the threads: at most max_preparing
        metrics.PREPARING.labels("job").set_function(lambda: self.preparations.now)
        self._owners: dict[bytes, str] = {}  # API key -> its id (as many as keys configured)

    def attach(self, generator: Generator) -> None:
        """The loaded models: SubmitJob prepares a request's job with them (validated,
        prime or codes decoded and encoded) before queueing it."""
        self.generator = generator

    async def _tenant(self) -> Tenant:
        """Who the current call acts for (read before its first await: per call)."""
        who = caller()
        if who.key is None:
            return Tenant(ANONYMOUS, who.operator)
        owner = self._owners.get(who.key)
        if owner is None:
            owner = self._owners[who.key] = key_id(await self.queue.owner_salt(), who.key)
        return Tenant(owner, who.operator)

    async def _job(self, job_id: str, context: grpc.aio.ServicerContext, tenant: Tenant) -> Job:
        """The job, if ``tenant`` may see it; else NOT_FOUND, as if there were none (another
        owner's job ids are not even confirmed to exist)."""
        if not job_id:
            await abort_invalid(context, "job_id", "is required")
        job = await self.queue.get(job_id) if len(job_id) <= 64 else None
        if job is None or not tenant.sees(job):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id[:64]!r}")
        assert job is not None
        return job

    async def SubmitJob(self, request, context):
        tenant = await self._tenant()
        g = self.generator
        if g is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry shortly")
        assert g is not None
        try:
            spec = g.spec_from_pb(request.request)
        except FieldError as exc:
            await abort_invalid(context, f"request.{exc.field}", exc.message)
        if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            await abort_invalid(context, "idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY} characters")
        key, digest = request.idempotency_key or None, request_digest(request.request)
        try:
            if key is not None:  # a retry: its job, without preparing the request again
                existing = await self.queue.idempotent_job(tenant.owner, key, digest)
                if existing is not None:
                    job = await self._job(existing, context, tenant)
                    return jpb.SubmitJobResponse(job=job_message(job), created=False)
            await self.queue.check_room(tenant.owner)  # before the work of preparing
            try:  # a bad file is refused here, not accepted and then FAILED by a worker
                async with self.preparing:
                    queued = await asyncio.to_thread(self._prepare, g, spec)
            except FieldError as exc:
                await abort_invalid(context, f"request.{exc.field}", exc.message)
            job_id, created = await self.queue.submit(
                queued.dumps(), spec.priority, key, owner=tenant.owner, digest=digest, seed=spec.settings.seed
            )
        except IdempotencyConflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except QueueFull as exc:  # the queue's or the key's unfinished jobs are at their limit
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if created:
            metrics.JOBS_SUBMITTED.labels(spec.priority).inc()
        job = await self._job(job_id, context, tenant)
        return jpb.SubmitJobResponse(job=job_message(job), created=created)

    def _prepare(self, g: Generator, spec: ContinueSpec) -> QueuedJob:
        with self.preparations.running():
            return g.queued(spec)

    async def GetJob(self, request, context):
        tenant = await self._tenant()
        return jpb.GetJobResponse(job=job_message(await self._job(request.job_id, context, tenant)))

    async def WatchJob(self, request, context):
        """The job now, then each change the server's one poller sees (``serve.watch``),
        until it is final. Beyond ``max_watchers`` calls at once: RESOURCE_EXHAUSTED."""
        last = await self._job(request.job_id, context, await self._tenant())
        if last.state.final:
            yield jpb.WatchJobResponse(job=job_message(last))
            return
        try:
            async with self.watchers.watch(last.id) as watched:
                yield jpb.WatchJobResponse(job=job_message(last))
                seen = 0
                while not last.state.final:
                    seen, job = await watched.after(seen)
                    if job is None:  # deleted, or expired (finished long ago)
                        await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {last.id!r}")
                    assert job is not None
                    if job != last:
                        yield jpb.WatchJobResponse(job=job_message(job))
                        last = job
        except WatchersFull as full:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(full))

    async def CancelJob(self, request, context):
        await self._job(request.job_id, context, await self._tenant())
        return jpb.CancelJobResponse(job=job_message(await self.queue.cancel(request.job_id)))

    async def ListJobs(self, request, context):
        tenant = await self._tenant()
        size = request.page_size or 50
        if size > MAX_PAGE:
            await abort_invalid(context, "page_size", f"at most {MAX_PAGE}, got {size}")
        state = next((s for s, e in STATES.items() if e == request.state), None)
        if request.state and state is None:
            await abort_invalid(context, "state", f"unknown state {request.state}")
        token = request.page_token or "0"
        # Tokens are offsets this server wrote: ASCII digits, within what Redis ranges take.
        if not (token.isascii() and token.isdigit() and len(token) <= 13 and int(token) < MAX_OFFSET):
            await abort_invalid(context, "page_token", "not a token from ListJobs")
        offset = int(token)
        owner = None if tenant.operator else tenant.owner
        jobs, next_offset = await self.queue.list_jobs(state, offset, size, owner)
        token = str(next_offset) if next_offset is not None else ""
        return jpb.ListJobsResponse(jobs=[job_message(j) for j in jobs], next_page_token=token)

    async def GetJobResult(self, request, context):
        job = await self._job(request.job_id, context, await self._tenant())
        if job.state != JobState.SUCCEEDED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {job.id} is {job.state.value}")
        result = await self.queue.result(job.id)
        if result is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"the result of job {job.id} has expired")
        assert result is not None
        return jpb.GetJobResultResponse(job=job_message(job), audio=result[0], codes=result[1])

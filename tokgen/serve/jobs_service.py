"""``JobService`` over ``jobs.queue``: the same checks as ``Continue`` before a job is
accepted; the prime or codes are decoded and encoded here, once, and the queue stores the
prepared job (``generation.queued``), which workers run without parsing it again.

The API has the shapes of Google's API design guide: a job is the resource
``jobs/{id}`` (lookups take its name or its id), with ``Timestamp`` times and a
``google.rpc.Status`` once it ended without a result; ListJobs' page token is a cursor
(``queue.Cursor``), so jobs submitted between pages neither repeat nor shift rows; a
result over the 4 MiB a gRPC client receives by default is fetched in chunks
(StreamJobResult).

Jobs belong to the API key that submitted them (``serve.auth``: its id, never the key):
another key's job is NOT_FOUND, with the message a missing job gets; ListJobs lists the
caller's own; idempotency keys are the caller's own too, and one used again for another
request is ALREADY_EXISTS. Operator keys see every job. Without keys, one anonymous owner."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, status_pb2

from tokgen.generation.generator import Generator
from tokgen.generation.queued import QueuedJob
from tokgen.generation.spec import ContinueSpec, FieldError
from tokgen.jobs.queue import Cursor, IdempotencyConflict, JobQueue, QueueFull
from tokgen.jobs.states import ANONYMOUS, Job, JobState
from tokgen.monitoring import metrics
from tokgen.names import PRIORITIES
from tokgen.serve.admission import Concurrency
from tokgen.serve.auth import caller, key_id
from tokgen.serve.service import abort_invalid
from tokgen.serve.watch import Watchers, WatchersFull
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb

STATES = {
    JobState.QUEUED: jpb.JOB_STATE_QUEUED,
    JobState.RUNNING: jpb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jpb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jpb.JOB_STATE_FAILED,
    JobState.CANCELLED: jpb.JOB_STATE_CANCELLED,
    JobState.DEAD: jpb.JOB_STATE_DEAD,
}
MAX_PAGE = 1000
MAX_PAGE_TOKEN = 400  # characters: a token this server writes is about 120
JOB_NAME = "jobs/"  # a job's resource name: "jobs/{id}"
# Google's codes for how a job ended without a result (Job.status).
ENDED = {
    JobState.FAILED: code_pb2.INVALID_ARGUMENT,  # the request cannot be rendered
    JobState.DEAD: code_pb2.INTERNAL,  # every attempt failed
    JobState.CANCELLED: code_pb2.CANCELLED,
}
# The most a gRPC client receives in one message by default (Go, Java, grpcurl, Python):
# GetJobResult answers up to this; StreamJobResult sends any result in CHUNK_BYTES pieces.
UNARY_RESULT_BYTES = 4 << 20
CHUNK_BYTES = 1 << 20
MAX_IDEMPOTENCY_KEY = 200
# Submissions decoding and encoding a prime at once (Settings.max_preparing): each holds a
# decoded prime (up to 60 s) and the codec's activations encoding all of it (measured with
# the shipped codec: ~9 MiB per second of prime, 520 MiB for 60 s), so many callers at once
# must not multiply that memory.
MAX_PREPARING = 2
MAX_WATCHERS = 64  # WatchJob calls at once (Settings.max_watchers)


def timestamp(seconds: float) -> Timestamp:
    """A record's time (float seconds, microseconds exact) as a ``Timestamp``."""
    whole, micros = divmod(round(seconds * 1e6), 10**6)
    return Timestamp(seconds=whole, nanos=micros * 1000)


def ended_status(job: Job) -> status_pb2.Status | None:
    """Why ``job`` ended without a result; None while it may still get one, or has."""
    code = ENDED.get(job.state)
    if code is None:
        return None
    message = "cancelled" if job.state == JobState.CANCELLED else job.error or job.state.value
    return status_pb2.Status(code=code, message=message)


def job_message(job: Job) -> jpb.Job:
    return jpb.Job(
        job_id=job.id,
        name=JOB_NAME + job.id,
        state=STATES[job.state],
        priority=PRIORITIES[job.priority],
        attempts=job.attempts,
        progress=job.progress,
        level_progress=job.level_progress,
        error=job.error or "",
        created_at=job.created_at,
        updated_at=job.updated_at,
        cancel_requested=job.cancel_requested,
        seed=job.seed,
        create_time=timestamp(job.created_at),
        update_time=timestamp(job.updated_at),
        status=ended_status(job),
    )


def page_token(cursor: Cursor, state: JobState | None) -> str:
    """ListJobs' next page token: the cursor and the state filter it belongs to (JSON in
    URL-safe base64: opaque to clients, and no secret: it names the caller's own job)."""
    raw = json.dumps([cursor.created_at, cursor.job_id, state.value if state else ""])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def read_page_token(token: str, state: JobState | None) -> Cursor | None:
    """The cursor of a token ``page_token`` made for a listing of ``state``; None for
    anything else (another state's token, an old offset token, garbage)."""
    if len(token) > MAX_PAGE_TOKEN:
        return None
    try:
        created_at, job_id, filtered = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, TypeError):  # not ASCII, base64, JSON, or three values
        return None
    valid = (
        isinstance(created_at, float)
        and math.isfinite(created_at)
        and isinstance(job_id, str)
        and len(job_id) <= 64
        and filtered == (state.value if state else "")
    )
    return Cursor(created_at, job_id) if valid else None


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

    async def _named(self, request, context: grpc.aio.ServicerContext) -> Job:
        """The job a lookup names, by ``job_id`` or ``name`` ("jobs/{id}"), if the caller
        may see it (``_job``)."""
        tenant = await self._tenant()
        job_id = request.job_id
        if request.name:
            if job_id:
                await abort_invalid(context, "name", "give job_id or name, not both")
            job_id = request.name.removeprefix(JOB_NAME)
            if not request.name.startswith(JOB_NAME) or not job_id or "/" in job_id:
                await abort_invalid(context, "name", 'must be "jobs/{job_id}"')
        return await self._job(job_id, context, tenant)

    async def GetJob(self, request, context):
        return jpb.GetJobResponse(job=job_message(await self._named(request, context)))

    async def WatchJob(self, request, context):
        """The job now, then each change the server's one poller sees (``serve.watch``),
        until it is final. Beyond ``max_watchers`` calls at once: RESOURCE_EXHAUSTED."""
        last = await self._named(request, context)
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
        job = await self._named(request, context)
        return jpb.CancelJobResponse(job=job_message(await self.queue.cancel(job.id)))

    async def ListJobs(self, request, context):
        tenant = await self._tenant()
        size = request.page_size or 50
        if size > MAX_PAGE:
            await abort_invalid(context, "page_size", f"at most {MAX_PAGE}, got {size}")
        state = next((s for s, e in STATES.items() if e == request.state), None)
        if request.state and state is None:
            await abort_invalid(context, "state", f"unknown state {request.state}")
        after = read_page_token(request.page_token, state) if request.page_token else None
        if request.page_token and after is None:
            await abort_invalid(context, "page_token", "not a token from ListJobs for this state")
        owner = None if tenant.operator else tenant.owner
        jobs, cursor = await self.queue.list_jobs(state, after, size, owner)
        token = page_token(cursor, state) if cursor is not None else ""
        return jpb.ListJobsResponse(jobs=[job_message(j) for j in jobs], next_page_token=token)

    async def result(self, request, context) -> tuple[Job, bytes, bytes]:
        """The job a lookup names and its result, (job, audio, codes): GetJobResult's,
        StreamJobResult's and the HTTP API's. FAILED_PRECONDITION until the job has
        succeeded, NOT_FOUND once its result expired."""
        job = await self._named(request, context)
        if job.state != JobState.SUCCEEDED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {job.id} is {job.state.value}")
        result = await self.queue.result(job.id)
        if result is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"the result of job {job.id} has expired")
        assert result is not None
        return job, result[0], result[1]

    async def GetJobResult(self, request, context):
        job, audio, codes = await self.result(request, context)
        reply = jpb.GetJobResultResponse(job=job_message(job), audio=audio, codes=codes)
        if reply.ByteSize() > UNARY_RESULT_BYTES:  # a client would refuse it, saying less
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the result of job {job.id} is {reply.ByteSize() / 2**20:.1f} MiB, more than the "
                f"{UNARY_RESULT_BYTES >> 20} MiB a gRPC client receives in one message by default: "
                "fetch it with StreamJobResult",
            )
        return reply

    async def StreamJobResult(self, request, context):
        """The result in chunks of at most ``CHUNK_BYTES``, after a header with the job
        and both parts' sizes: the audio's chunks, then the codes'."""
        job, audio, codes = await self.result(request, context)
        header = jpb.JobResultHeader(job=job_message(job), audio_size=len(audio), codes_size=len(codes))
        yield jpb.StreamJobResultResponse(header=header)
        for part, data in (("audio", audio), ("codes", codes)):
            for offset in range(0, len(data), CHUNK_BYTES):
                chunk = jpb.JobResultChunk(offset=offset, **{part: data[offset : offset + CHUNK_BYTES]})
                yield jpb.StreamJobResultResponse(chunk=chunk)

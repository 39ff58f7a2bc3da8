"""The client side: real asyncio gRPC calls, each measured as a ``stats.Call``."""

from __future__ import annotations

import asyncio
import time

import grpc

from loadtests.stats import Call
from tokgen.assets import EXAMPLE_PRIME
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

PRIME = EXAMPLE_PRIME.read_bytes()
FINAL = {jpb.JOB_STATE_SUCCEEDED, jpb.JOB_STATE_FAILED, jpb.JOB_STATE_CANCELLED, jpb.JOB_STATE_DEAD}


def request(seconds: float, seed: int, primed: bool = True) -> pb.ContinueRequest:
    """A continuation of the shipped example prime (or, unprimed, from nothing)."""
    req = pb.ContinueRequest(seconds=seconds, sampling=pb.SamplingParams(seed=seed))
    if primed:
        req.prime_audio = PRIME
    else:
        req.mode = pb.MODE_ANCESTRAL
    return req


async def stream(
    channel: grpc.aio.Channel, req: pb.ContinueRequest, timeout: float = 600, stop_after: int | None = None
) -> Call:
    """A Continue call read to its end, or cancelled by the client after ``stop_after`` chunks."""
    started = time.perf_counter()
    ttfa, audio, chunks = None, 0.0, 0
    call = pb_grpc.TokgenServiceStub(channel).Continue(req, timeout=timeout)
    try:
        async for reply in call:
            if reply.WhichOneof("event") == "chunk":
                ttfa = ttfa if ttfa is not None else time.perf_counter() - started
                audio += len(reply.chunk.pcm) / 2 / reply.chunk.format.sample_rate
                chunks += 1
                if stop_after is not None and chunks >= stop_after:
                    call.cancel()
                    return Call("cancel", "CANCELLED", time.perf_counter() - started, ttfa, audio)
        code = "OK"
    except grpc.aio.AioRpcError as err:
        code = err.code().name
    return Call("stream", code, time.perf_counter() - started, ttfa, audio)


async def disconnect(address: str, req: pb.ContinueRequest, after_s: float) -> Call:
    """A client that goes away mid-stream: its own connection closed without a cancel."""
    started = time.perf_counter()
    channel = grpc.aio.insecure_channel(address)
    task = asyncio.create_task(stream(channel, req))
    await asyncio.sleep(after_s)
    await channel.close(grace=None)
    await asyncio.gather(task, return_exceptions=True)
    return Call("disconnect", "CANCELLED", time.perf_counter() - started)


async def submit(channel: grpc.aio.Channel, req: pb.ContinueRequest) -> tuple[str | None, Call]:
    """SubmitJob; the job id when accepted (an accepted job must never be lost)."""
    started = time.perf_counter()
    try:
        reply = await jpb_grpc.JobServiceStub(channel).SubmitJob(
            jpb.SubmitJobRequest(request=req), timeout=60
        )
    except grpc.aio.AioRpcError as err:
        return None, Call("submit", err.code().name, time.perf_counter() - started)
    return reply.job.job_id, Call("submit", "OK", time.perf_counter() - started)


async def cancel_job(channel: grpc.aio.Channel, job_id: str) -> Call:
    started = time.perf_counter()
    try:
        await jpb_grpc.JobServiceStub(channel).CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=30)
        code = "OK"
    except grpc.aio.AioRpcError as err:
        code = err.code().name
    return Call("cancel_job", code, time.perf_counter() - started)


async def job_states(channel: grpc.aio.Channel, ids: list[str]) -> dict[str, int]:
    ids = list(ids)  # the caller's list may grow meanwhile
    stub = jpb_grpc.JobServiceStub(channel)
    replies = await asyncio.gather(*(stub.GetJob(jpb.GetJobRequest(job_id=i), timeout=30) for i in ids))
    return {i: r.job.state for i, r in zip(ids, replies, strict=True)}


async def wait_final(channel: grpc.aio.Channel, ids: list[str], timeout_s: float) -> dict[str, int]:
    """Poll until every job is final (or the time is up: then what they are)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            states = await job_states(channel, ids)
        except grpc.aio.AioRpcError:  # e.g. Redis restarting: ask again
            states = {}
        if states and all(s in FINAL for s in states.values()):
            return states
        if time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.5)


def state_names(states: dict[str, int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in states.values():
        name = jpb.JobState.Name(s).removeprefix("JOB_STATE_").lower()
        counts[name] = counts.get(name, 0) + 1
    return counts

"""``TokgenService`` over a ``Generator``: validation, then a streamed continuation.

Thin by design (TGI's split): the generator turns the request into a spec and a job, and
the servicer relays the generator's audio pieces as PCM chunks (several samples: their
chunks interleave, each labelled with its ``sample_index``). Closing the call (client
cancel, disconnect, deadline) closes the stream, which cancels and aborts every engine
request of the continuation at once. A request holds one admission slot per sample.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import NamedTuple

import grpc
import numpy as np
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tokgen.generation.generate import MAX_PRIME_SECONDS, MAX_SECONDS, Job, context_kept, level_tokens
from tokgen.generation.generator import Generator
from tokgen.generation.prepare_pool import PrepareWorkerLost
from tokgen.generation.sampler import completion_times
from tokgen.generation.spec import (
    MAX_NUM_SAMPLES,
    MAX_OUTPUT_RATE,
    MIN_OUTPUT_RATE,
    ContinueSpec,
    FieldError,
)
from tokgen.logs import REQUEST_ID
from tokgen.monitoring import metrics
from tokgen.serve.access_log import REQUEST_ID_KEY
from tokgen.serve.admission import Admission, Busy, Concurrency
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

RETRY_AFTER_S = 2


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class _StatusFields(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple


class DetailedStatus(_StatusFields, grpc.Status):
    """A ``grpc.Status`` with the trailers given (grpc only defines the interface)."""


async def abort_invalid(context: grpc.aio.ServicerContext, field: str, message: str) -> None:
    detail = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=message)]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=f"{field}: {message}")
    status.details.add().Pack(detail)
    await abort_with_details(context, status)


async def abort_with_details(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    """End the call with ``status`` and its details, keeping the request id among the
    trailers: ``abort_with_status`` replaces the trailers the access log set, and a call
    refused at once may reach the client without its initial metadata (under load), so
    the id would otherwise be lost now and then."""
    grpc_status = rpc_status.to_status(status)
    rid = REQUEST_ID.get()
    trailers = (*grpc_status.trailing_metadata, *(((REQUEST_ID_KEY, rid),) if rid else ()))
    await context.abort_with_status(DetailedStatus(grpc_status.code, grpc_status.details, trailers))


async def abort_busy(context: grpc.aio.ServicerContext, busy: Busy) -> None:
    """RESOURCE_EXHAUSTED with a RetryInfo hint: the server never queues without bound."""
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromSeconds(RETRY_AFTER_S)
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message=f"{busy}; retry in {RETRY_AFTER_S} s"
    )
    status.details.add().Pack(retry)
    await abort_with_details(context, status)


class TokgenServicer(pb_grpc.TokgenServiceServicer):
    """Registered when the server starts; serves once ``attach`` gives it loaded models
    (until then calls get UNAVAILABLE, and health says NOT_SERVING)."""

    def __init__(self, max_request_bytes: int, admission: Admission):
        self.max_request_bytes = max_request_bytes
        self.admission = admission
        self.generator: Generator | None = None
        self.preparations = Concurrency()  # inside admission slots: at most max_active

        metrics.ACTIVE.set_function(lambda: admission.active)
        metrics.WAITING.set_function(lambda: admission.waiting)
        metrics.PREPARING.labels("stream").set_function(lambda: self.preparations.now)

    def attach(self, generator: Generator) -> None:
        self.generator = generator

    async def _check_ready(self, context: grpc.aio.ServicerContext) -> Generator:
        if self.generator is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry shortly")
        assert self.generator is not None
        return self.generator

    async def GetModelInfo(self, request, context):
        g = await self._check_ready(context)
        return pb.GetModelInfoResponse(
            codec=g.codec.name,
            sample_rate=g.codec.sample_rate,
            levels=[
                pb.LevelInfo(level=i, hop=lv.hop, codebook_size=lv.codebook_size, context_tokens=p.n_ctx)
                for i, (lv, p) in enumerate(zip(g.codec.levels, g.priors, strict=True))
            ],
            engine_backend=g.backend,
            max_prime_seconds=MAX_PRIME_SECONDS,
            max_seconds=MAX_SECONDS,
            max_request_bytes=self.max_request_bytes,
            max_num_samples=MAX_NUM_SAMPLES,
            min_output_sample_rate=MIN_OUTPUT_RATE,
            max_output_sample_rate=MAX_OUTPUT_RATE,
        )

    async def Continue(self, request, context):
        # Each stream below is closed here, in order, when this one is: a client that leaves
        # mid-send does not cancel the call, grpc drops this generator (see final_code), and
        # the admission slot and engine requests must go with it, not whenever GC gets there.
        started = time.perf_counter()
        async with aclosing(self._continue(request, context, started)) as replies:
            async for reply in replies:
                yield reply
        metrics.REQUEST_DURATION.labels(metrics.serving_model()).observe(time.perf_counter() - started)

    async def _continue(self, request, context, started: float):
        g = await self._check_ready(context)
        try:
            spec = g.spec_from_pb(request)
        except FieldError as exc:
            await abort_invalid(context, exc.field, exc.message)
        try:
            async with self.admission.slot(spec.priority, spec.num_samples):
                try:
                    with metrics.PREPARE.labels(metrics.serving_model()).time(), self.preparations.running():
                        job = await g.aprepare(spec, streaming=True)
                except FieldError as exc:
                    await abort_invalid(context, exc.field, exc.message)
                except PrepareWorkerLost as exc:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
                async with aclosing(self._stream(g, job, spec, started)) as replies:
                    async for reply in replies:
                        yield reply
        except Busy as busy:
            await abort_busy(context, busy)

    async def _stream(self, g: Generator, job: Job, spec: ContinueSpec, started: float):
        """The samples' audio as PCM chunks, then the summary. Closing this (the call
        ended early) closes the generator's streams, which aborts the engine requests."""
        codec = g.codec
        rate = spec.output.rate(codec.sample_rate)
        fmt = pb.AudioFormat(sample_rate=rate, channels=1, encoding="s16le")
        sent, first, last = [0] * spec.num_samples, None, 0.0
        done_at, watch = completion_times(len(codec.levels), started)
        async with aclosing(g.stream_samples(job, spec, on_change=watch)) as samples:
            async for index, piece in samples:
                now = time.perf_counter()
                if first is None:
                    first = now - started
                    metrics.TIME_TO_FIRST_AUDIO.labels(metrics.serving_model()).observe(first)
                else:
                    metrics.CHUNK_GAP.labels(metrics.serving_model()).observe(now - last)
                last = now
                chunk = pb.AudioChunk(
                    format=fmt, pcm=pcm16(piece), offset_seconds=sent[index] / rate, sample_index=index
                )
                yield pb.ContinueResponse(chunk=chunk)
                sent[index] += piece.size
                metrics.AUDIO_SECONDS.labels("stream").inc(piece.size / rate)
        metrics.REALTIME_FACTOR.labels("stream").observe(sum(sent) / rate / (time.perf_counter() - started))
        yield pb.ContinueResponse(
            summary=pb.Summary(
                levels=[
                    pb.LevelStats(level=i, tokens=n * spec.num_samples, seconds=done_at[i])
                    for i, n in enumerate(level_tokens(codec, job))
                ],
                audio_seconds=sent[0] / rate,
                time_to_first_audio_seconds=first or 0.0,
                total_seconds=time.perf_counter() - started,
                prime_seconds_in_context=context_kept(codec, g.priors, job),
                seed=spec.settings.seed,
                seeds=[s.seed for s in spec.sample_settings()],
            )
        )

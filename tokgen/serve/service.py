"""``TokgenService`` over ``tokgen.prior``: validation, then a streamed continuation.

Thin by design (TGI's split): it checks the request, decodes the prime or codes, and
relays ``stream_continuation``'s audio pieces as PCM chunks. Closing the call (client
cancel, disconnect, deadline) closes the stream, which cancels and aborts every engine
request of the continuation at once.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tokgen.audio import load_audio
from tokgen.codec.base import Codec
from tokgen.codec.codes import load_codes
from tokgen.errors import TokgenError
from tokgen.prior.generate import MAX_PRIME_SECONDS, MAX_SECONDS, context_kept, level_tokens, prepare
from tokgen.prior.layout import TokenLayout
from tokgen.prior.sampler import LevelPrior
from tokgen.prior.stream import stream_continuation
from tokgen.serve.validation import FieldError, check_continue
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


async def abort_invalid(context: grpc.aio.ServicerContext, field: str, message: str) -> None:
    detail = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=message)]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=f"{field}: {message}")
    status.details.add().Pack(detail)
    await context.abort_with_status(rpc_status.to_status(status))


async def abort_busy(context: grpc.aio.ServicerContext, active: int) -> None:
    """RESOURCE_EXHAUSTED with a RetryInfo hint: the server never queues without bound."""
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromSeconds(2)
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED,
        message=f"server busy ({active} continuations running); retry in 2 s",
    )
    status.details.add().Pack(retry)
    await context.abort_with_status(rpc_status.to_status(status))


class TokgenServicer(pb_grpc.TokgenServiceServicer):
    """Registered when the server starts; serves once ``attach`` gives it loaded models
    (until then calls get UNAVAILABLE, and health says NOT_SERVING)."""

    def __init__(self, max_request_bytes: int, max_active: int = 32):
        self.max_request_bytes = max_request_bytes
        self.max_active = max_active  # continuations in flight; more get RESOURCE_EXHAUSTED
        self.active = 0
        self.codec: Codec | None = None
        self.priors: list[LevelPrior] = []

    def attach(self, codec: Codec, priors: list[LevelPrior]) -> None:
        self.codec, self.priors = codec, priors
        self.layout = TokenLayout.for_levels(codec.levels)

    async def _check_ready(self, context: grpc.aio.ServicerContext) -> Codec:
        if self.codec is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry shortly")
        assert self.codec is not None
        return self.codec

    async def GetModelInfo(self, request, context):
        await self._check_ready(context)
        assert self.codec is not None
        return pb.GetModelInfoResponse(
            codec=self.codec.name,
            sample_rate=self.codec.sample_rate,
            levels=[
                pb.LevelInfo(level=i, hop=lv.hop, codebook_size=lv.codebook_size, context_tokens=p.n_ctx)
                for i, (lv, p) in enumerate(zip(self.codec.levels, self.priors, strict=True))
            ],
            engine_backend=self.priors[0].engine.backend,
            max_prime_seconds=MAX_PRIME_SECONDS,
            max_seconds=MAX_SECONDS,
            max_request_bytes=self.max_request_bytes,
        )

    async def Continue(self, request, context):
        await self._check_ready(context)
        if self.active >= self.max_active:
            await abort_busy(context, self.active)
        self.active += 1
        try:
            async for reply in self._continue(request, context):
                yield reply
        finally:
            self.active -= 1

    async def _continue(self, request, context):
        started = time.perf_counter()
        assert self.codec is not None
        try:
            spec = check_continue(request, self.layout.vocab_size, max(self.layout.codebook_sizes))
            job = await asyncio.to_thread(self._prepare, spec)
        except FieldError as exc:
            await abort_invalid(context, exc.field, exc.message)
            return
        sr = self.codec.sample_rate
        fmt = pb.AudioFormat(sample_rate=sr, channels=1, encoding="s16le")
        sent, first = 0, None
        async for piece in stream_continuation(self.codec, self.priors, job, spec.settings):
            first = first if first is not None else time.perf_counter() - started
            yield pb.ContinueResponse(
                chunk=pb.AudioChunk(format=fmt, pcm=pcm16(piece), offset_seconds=sent / sr)
            )
            sent += piece.size
        yield pb.ContinueResponse(
            summary=pb.Summary(
                levels=[
                    pb.LevelStats(level=i, tokens=n) for i, n in enumerate(level_tokens(self.codec, job))
                ],
                audio_seconds=sent / sr,
                time_to_first_audio_seconds=first or 0.0,
                total_seconds=time.perf_counter() - started,
                prime_seconds_in_context=context_kept(self.codec, self.priors, job),
            )
        )

    def _prepare(self, spec):
        """Decode and encode the input (CPU work, in a thread); errors name the field."""
        prime = codes = None
        try:
            if spec.prime_audio is not None:
                prime = load_audio(spec.prime_audio, self.codec.sample_rate, max_seconds=MAX_PRIME_SECONDS)
            if spec.codes is not None:
                saved = load_codes(spec.codes)
                saved.check_matches(self.codec)
                codes = saved.codes
        except TokgenError as exc:
            raise FieldError("prime_audio" if spec.prime_audio is not None else "codes", str(exc)) from exc
        try:
            return prepare(self.codec, spec.mode, spec.seconds, prime, codes)
        except TokgenError as exc:
            field = "prime_audio" if spec.mode == "primed" else "codes" if codes is not None else "seconds"
            raise FieldError(field, str(exc)) from exc

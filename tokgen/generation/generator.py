"""``Generator``: the one owner of a loaded model (codec, priors, token layout, engines).

Everything that makes music goes through it: the CLI, the gRPC service, the job workers
and the evaluation (audiocraft's ``BaseGenModel`` and vLLM's ``AsyncLLM`` are the shapes).
Requests come in as specs validated once at the edge (``spec_from_pb``, or a
``ContinueSpec`` built by the CLI), are prepared into a ``Job`` (prime decoded and
encoded: CPU work, run it in a thread), and go out as a stream of audio pieces
(``stream``) or a whole ``Continuation`` (``render``). Inner layers trust the job.

    async with await Generator.aload() as g:
        job = g.prepare(spec)
        result = await g.render(job, spec.settings)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from tokgen.assets import DEFAULT_CODEC_DIR, DEFAULT_PRIORS_DIR
from tokgen.codec import load_codec
from tokgen.codec.base import Codec
from tokgen.engine.factory import Backend, resolve_backend
from tokgen.generation.generate import Continuation, Job, Mode, load_priors, prepare, sample_job
from tokgen.generation.queued import QueuedJob
from tokgen.generation.requests import prepare_spec
from tokgen.generation.sampler import LevelPrior, OnChange, SamplingSettings
from tokgen.generation.spec import ContinueSpec, check_continue
from tokgen.generation.stream import stream_continuation
from tokgen.monitoring import metrics
from tokgen.prior.layout import TokenLayout
from tokgen.settings import Settings
from tokgen.v1 import tokgen_pb2 as pb


class Generator:
    def __init__(self, codec: Codec, priors: list[LevelPrior]):
        self.codec = codec
        self.priors = priors
        self.layout = TokenLayout.for_levels(codec.levels)

    # -- loading and closing -------------------------------------------------------------
    @classmethod
    def load(
        cls,
        codec: Codec | str | Path | None = None,
        priors: str | Path | None = None,
        backend: Backend = "auto",
        hop_fraction: float = 0.5,
        segment_seconds: Sequence[float] | float | None = None,
        **engine_options: object,
    ) -> Generator:
        """The codec (default: shipped) and one engine per level's prior (default:
        shipped priors). Blocking: engines start side by side, a vLLM one in ~20 s. A
        loaded ``Codec`` may be passed (callers that check a request before engines start)."""
        loaded = codec if isinstance(codec, Codec) else load_codec(codec)
        levels = load_priors(priors, loaded, backend, hop_fraction, segment_seconds, **engine_options)  # type: ignore[arg-type]
        return cls(loaded, levels)

    @classmethod
    async def aload(cls, *args: object, **kwargs: object) -> Generator:
        """``load`` in a thread, so an event loop keeps serving (health checks) meanwhile."""
        return await asyncio.to_thread(cls.load, *args, **kwargs)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await asyncio.gather(*(p.engine.close() for p in self.priors))

    async def __aenter__(self) -> Generator:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the edge: requests in -------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.priors[0].engine.backend

    def check_settings(self, settings: SamplingSettings) -> None:
        """Sampling settings against this model's vocabulary, before any work starts."""
        settings.check(self.layout.vocab_size)

    def spec_from_pb(self, request: pb.ContinueRequest) -> ContinueSpec:
        """A wire request, validated field by field (``FieldError`` names the field)."""
        return check_continue(request, self.layout.vocab_size, max(self.layout.codebook_sizes))

    def prepare(self, spec: ContinueSpec, streaming: bool = False) -> Job:
        """Decode and encode the spec's prime or codes (CPU work: call it in a thread).
        ``streaming`` encodes only as much of a prime as the priors see, which is all a
        stream needs; a batch job returns every level's codes, so it encodes all of it."""
        return prepare_spec(self.codec, spec, self.priors if streaming else None)

    def job(
        self,
        mode: Mode,
        seconds: float,
        prime: np.ndarray | None = None,
        codes: list[np.ndarray] | None = None,
    ) -> Job:
        """A job from decoded audio or codes (Python callers; see ``generate.prepare``)."""
        return prepare(self.codec, mode, seconds, prime, codes)

    def queued(self, spec: ContinueSpec) -> QueuedJob:
        """What the job queue stores for ``spec``: the prepared job, ready for a worker."""
        return QueuedJob(self.prepare(spec), spec.settings, spec.samples(self.codec.sample_rate))

    # -- generation out --------------------------------------------------------------------
    async def sample(
        self,
        job: Job,
        settings: SamplingSettings,
        request_id: str | None = None,
        on_change: OnChange | None = None,
    ) -> list[np.ndarray]:
        """Every level's codes of ``job``, prime included."""
        return await sample_job(self.codec, self.priors, job, settings, request_id, on_change)

    def stream(
        self,
        job: Job,
        settings: SamplingSettings,
        request_id: str | None = None,
        on_change: OnChange | None = None,
    ) -> AsyncIterator[np.ndarray]:
        """The new audio of ``job`` in pieces, as it is generated (see ``stream_continuation``);
        closing the iterator aborts the generation."""
        return stream_continuation(self.codec, self.priors, job, settings, request_id, on_change=on_change)

    async def decode(self, codes: list[np.ndarray], reference: np.ndarray | None = None) -> np.ndarray:
        """Audio of every level's codes (the bottom level's, unless the codec's levels are
        residuals), in the timbre of ``reference`` where the codec keeps one; in a thread
        (the loop keeps serving)."""
        return await asyncio.to_thread(self.codec.decode_levels, codes, reference)

    async def render(
        self,
        job: Job,
        settings: SamplingSettings,
        request_id: str | None = None,
        on_change: OnChange | None = None,
    ) -> Continuation:
        """Sample every level of ``job`` and decode it."""
        codes = await self.sample(job, settings, request_id, on_change)
        audio = await self.decode(codes, job.reference)
        return Continuation(codes, audio, job.start_top * self.codec.levels[0].hop)


async def load_generator(config: Settings, role: str) -> Generator:
    """The configured models for a long-running process (server or worker), loaded in a
    thread so the event loop keeps serving health checks. The build info is set first: a
    process that is still loading (or failing to) already says what it is."""
    backend = resolve_backend(config.engine_backend)
    codec_dir, priors_dir = config.codec or DEFAULT_CODEC_DIR, config.priors or DEFAULT_PRIORS_DIR
    await asyncio.to_thread(metrics.set_build_info, role, backend, codec_dir, priors_dir)
    options = {"kv_cache_bytes": config.engine_kv_cache_bytes} if backend == "vllm" else {}
    return await Generator.aload(config.codec, config.priors, backend, **options)

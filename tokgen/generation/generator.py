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

From plain Python (MusicGen's shape; the generator then runs its engines on an event loop
of its own, in a thread):

    g = Generator.load()
    [wav] = g.generate_continuation(prime, prime_sample_rate, seconds=10, progress=True)
    g.close()

A spec's ``num_samples`` are sampled side by side from one prepared job (the prime is
decoded and encoded once), each sample its own sequences in the engines, so they batch.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from tokgen.assets import DEFAULT_CODEC_DIR, DEFAULT_PRIORS_DIR
from tokgen.audio import check_mono, resample
from tokgen.codec import load_codec
from tokgen.codec.base import Codec
from tokgen.engine.factory import Backend, resolve_backend
from tokgen.errors import TokgenError
from tokgen.generation.generate import (
    Continuation,
    Job,
    Mode,
    codec_for_priors,
    load_priors,
    prepare,
    sample_job,
)
from tokgen.generation.instrument import DEFAULT_INSTRUMENT_GUIDANCE
from tokgen.generation.key import DEFAULT_KEY_GUIDANCE
from tokgen.generation.output import finish_audio
from tokgen.generation.prepare_pool import PreparePool
from tokgen.generation.queued import QueuedJob
from tokgen.generation.requests import prepare_spec
from tokgen.generation.sampler import CodeBoard, LevelPrior, OnChange, SamplingSettings, level_frames
from tokgen.generation.spec import ContinueSpec, FieldError, check_continue, check_output
from tokgen.generation.stream import stream_continuation, stream_samples
from tokgen.monitoring import metrics
from tokgen.prior.layout import TokenLayout
from tokgen.settings import Settings
from tokgen.v1 import tokgen_pb2 as pb

T = TypeVar("T")


class Generator:
    def __init__(self, codec: Codec, priors: list[LevelPrior]):
        self.codec = codec
        self.priors = priors
        self.layout = TokenLayout.for_levels(codec.levels)
        self._prepare_pool: PreparePool | None = None  # worker processes for ``aprepare``
        self._loop: asyncio.AbstractEventLoop | None = None  # for the synchronous API
        self._thread: threading.Thread | None = None

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
        loaded ``Codec`` may be passed (callers that check a request before engines start).
        A prior set with fewer levels than the codec uses its top levels (``TopLevels``)."""
        loaded = codec_for_priors(codec if isinstance(codec, Codec) else load_codec(codec), priors)
        levels = load_priors(priors, loaded, backend, hop_fraction, segment_seconds, **engine_options)  # type: ignore[arg-type]
        return cls(loaded, levels)

    @classmethod
    async def aload(cls, *args: object, **kwargs: object) -> Generator:
        """``load`` in a thread, so an event loop keeps serving (health checks) meanwhile."""
        return await asyncio.to_thread(cls.load, *args, **kwargs)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        engines = {id(p.engine): p.engine for p in self.priors}  # levels may share one
        try:
            await asyncio.gather(*(e.close() for e in engines.values()))
        finally:
            if self._prepare_pool is not None:
                await asyncio.to_thread(self._prepare_pool.close)
                self._prepare_pool = None

    @property
    def prepare_workers(self) -> int:
        """Processes that prepare requests for ``aprepare`` (0: a thread does)."""
        return 0 if self._prepare_pool is None else self._prepare_pool.workers

    def start_prepare_workers(self, workers: int) -> None:
        """Prepare requests (``aprepare``) in ``workers`` processes of their own from now
        on (``prepare_pool``: a server's threads wait for its interpreter lock)."""
        if workers > 0 and self._prepare_pool is None:
            self._prepare_pool = PreparePool(self.codec, self.priors, workers)

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

    async def aprepare(self, spec: ContinueSpec, streaming: bool = False) -> Job:
        """``prepare`` in a prepare worker (``start_prepare_workers``) or else a thread;
        ``PrepareWorkerLost`` if the worker died meanwhile."""
        if self._prepare_pool is not None:
            return await self._prepare_pool.prepare(spec, streaming)
        return await asyncio.to_thread(self.prepare, spec, streaming)

    def job(
        self,
        mode: Mode,
        seconds: float,
        prime: np.ndarray | None = None,
        codes: list[np.ndarray] | None = None,
        reference: np.ndarray | None = None,
    ) -> Job:
        """A job from decoded audio or codes (Python callers; see ``generate.prepare``);
        ``reference``: audio whose timbre a codec with a timbre encoder keeps (default:
        the prime's)."""
        return prepare(self.codec, mode, seconds, prime, codes, reference)

    def queued(self, spec: ContinueSpec) -> QueuedJob:
        """What the job queue stores for ``spec``: the prepared job, ready for a worker. A
        job renders one sample (its result is one file): several are several jobs."""
        if spec.num_samples != 1:
            raise FieldError(
                "num_samples",
                f"a job renders one sample, got {spec.num_samples}; submit one job per sample "
                "with seeds S, S+1, ... (or stream them with Continue)",
            )
        return QueuedJob(self.prepare(spec), spec.settings, spec.samples(self.codec.sample_rate), spec.output)

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

    def stream_samples(
        self, job: Job, spec: ContinueSpec, on_change: OnChange | None = None
    ) -> AsyncGenerator[tuple[int, np.ndarray], None]:
        """The new audio of each of ``spec``'s samples of ``job``, as (sample index, piece)
        while they are generated side by side, cut to the seconds asked for and made the
        spec's output (rate, loudness); see ``stream_samples``. Closing it aborts them."""
        return stream_samples(
            self.codec,
            self.priors,
            job,
            spec.sample_settings(),
            spec.output,
            spec.samples(self.codec.sample_rate),
            on_change,
        )

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

    async def render_samples(
        self, jobs: Sequence[Job], settings: Sequence[SamplingSettings], on_change: OnChange | None = None
    ) -> list[Continuation]:
        """``render`` of each (job, settings) pair, all at once: each its own sequences in
        the engines, which batch them (several samples of one job share the job)."""
        renders = (self.render(j, s, on_change=on_change) for j, s in zip(jobs, settings, strict=True))
        return list(await asyncio.gather(*renders))

    # -- the synchronous Python API ------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the generator's own loop (engines bind to the loop of their
        first request, so every synchronous call must use the same one)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, daemon=True, name="tokgen-generator"
            )
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate_continuation(
        self,
        prime: Any,
        prime_sample_rate: int,
        seconds: float = 10.0,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        key_guidance: float = DEFAULT_KEY_GUIDANCE,
        instrument_guidance: float = DEFAULT_INSTRUMENT_GUIDANCE,
        num_samples: int = 1,
        sample_rate: int | None = None,
        loudness_lufs: float | None = None,
        progress: bool = False,
    ) -> list[Any]:
        """Continue each prime by ``seconds``: one prime (1-D array or tensor of float
        samples, or (channels, samples), mixed to mono) or a list of them, ``num_samples``
        (1 to 8) continuations of each, all sampled together so the engines batch them.
        Returns one array per continuation, prime by prime (prime i's sample j at
        ``i * num_samples + j``), numpy or torch like the input, at ``sample_rate``
        (8000 to 48000 Hz; default: the codec's, ``self.codec.sample_rate``; resampled with
        soxr), each normalised to ``loudness_lufs`` (ITU-R BS.1770, -70 to -5) if given,
        never clipping (``tokgen.loudness``). Without ``seed`` a fresh random one is drawn;
        continuation k uses ``seed + k`` (``last_seeds`` says which, for reproducing).
        ``key_guidance`` (0-20, 0: off) keeps sampling to the prime's pitch classes
        (``tokgen.generation.key``), ``instrument_guidance`` (0-20, 0: off) to its
        instrument (``tokgen.generation.instrument``)."""
        try:
            output = check_output(num_samples, sample_rate, loudness_lufs)
        except FieldError as exc:
            raise TokgenError(str(exc)) from None
        primes = prime if isinstance(prime, list | tuple) else [prime]
        as_torch = type(primes[0]).__module__.startswith("torch")
        base = secrets.randbits(62) if seed is None else seed
        self.last_seeds = [base + k for k in range(len(primes) * num_samples)]
        sr = self.codec.sample_rate
        prepared = [self.job("primed", seconds, to_mono(p, prime_sample_rate, sr)) for p in primes]
        jobs = [prepared[k // num_samples] for k in range(len(self.last_seeds))]
        settings = [
            SamplingSettings(temperature, top_k, top_p, s, key_guidance, instrument_guidance)
            for s in self.last_seeds
        ]
        for s in settings:
            self.check_settings(s)
        bar = None
        if progress:
            from tqdm import tqdm

            bottom = len(self.codec.levels) - 1
            totals = [level_frames(j.top_frames, [lv.hop for lv in self.codec.levels])[bottom] for j in jobs]
            bar = tqdm(
                total=sum(totals) - sum(j.known[bottom].size for j in jobs), unit="code", desc="bottom level"
            )

        def watch(board: CodeBoard, level: int) -> None:
            if bar is not None and level == len(board.codes) - 1:
                bar.update(1)

        try:
            results = self._run(self.render_samples(jobs, settings, watch))
        finally:
            if bar is not None:
                bar.close()
        wavs = [finish_audio(r.new_audio(round(seconds * sr)), sr, output) for r in results]
        if as_torch:
            import torch

            return [torch.from_numpy(w) for w in wavs]
        return wavs

    def close(self) -> None:
        """Stop the engines (and the loop of the synchronous API)."""
        if self._loop is None:
            asyncio.run(self.aclose())
            return
        self._run(self.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join()
        self._loop = None


def to_mono(audio: Any, sample_rate: int, to_rate: int) -> np.ndarray:
    """A prime given as numpy or torch, mono (samples,) or (channels, samples), as float32
    mono at ``to_rate``."""
    arr = audio.detach().cpu().numpy() if hasattr(audio, "detach") else np.asarray(audio)
    if arr.ndim == 2:
        arr = arr.mean(axis=0)
    return resample(check_mono(arr.astype(np.float32, copy=False)), sample_rate, to_rate)


async def load_generator(config: Settings, role: str) -> Generator:
    """The configured models for a long-running process (server or worker), loaded in a
    thread so the event loop keeps serving health checks. The build info is set first: a
    process that is still loading (or failing to) already says what it is."""
    backend = resolve_backend(config.engine_backend)
    codec_dir, priors_dir = config.codec or DEFAULT_CODEC_DIR, config.priors or DEFAULT_PRIORS_DIR
    await asyncio.to_thread(metrics.set_build_info, role, backend, codec_dir, priors_dir)
    options = {"kv_cache_bytes": config.engine_kv_cache_bytes} if backend == "vllm" else {}
    generator = await Generator.aload(config.codec, config.priors, backend, **options)
    if role == "server":  # streams: a new request's prime before the engines' bulk work
        if backend == "vllm":
            from tokgen.engine.vllm import renice_engine_processes

            renice_engine_processes(config.engine_nice)
        await asyncio.to_thread(generator.start_prepare_workers, config.prepare_workers)
    return generator

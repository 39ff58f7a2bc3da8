"""``tokgen bench generate``: real-time factor of whole continuations (every level).

A request continues the shipped example prime by ``seconds`` of audio: all levels are
sampled (pipelined, see ``sampler``) and the bottom level is decoded to audio. The real-time
factor is seconds of audio produced per wall-clock second, for 1 request alone and for N
concurrent ones (aggregate), measured one after the other in one process after a warm-up.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.engine.factory import Backend
from tokgen.generation.generate import (
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_PRIORS_DIR,
    Job,
    codec_for_priors,
    level_tokens,
    prepare,
    segment_frames,
)
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import SamplingSettings, completion_times


async def timed_render(g: Generator, job: Job, seed: int, request_id: str) -> tuple[float, list[float]]:
    """Wall-clock seconds of one render, and when (since its start) each level was complete."""
    start = time.perf_counter()
    done_at, watch = completion_times(len(g.priors), start)
    await g.render(job, SamplingSettings(seed=seed), request_id, watch)
    return time.perf_counter() - start, done_at


def bench_generate(
    codec_dir: Path | None,
    prior_dir: Path | None,
    backend: Backend,
    seconds: float,
    concurrency: tuple[int, ...],
    segment_seconds: list[float] | float | None,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
) -> dict:
    codec = codec_for_priors(load_codec(codec_dir), prior_dir)  # the levels the priors generate
    prime = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    job = prepare(codec, "primed", seconds, prime)
    audio_seconds = (job.top_frames - job.start_top) * codec.levels[0].hop / codec.sample_rate
    g = Generator.load(
        codec, prior_dir, backend, segment_seconds=segment_seconds, overlap_seconds=overlap_seconds
    )

    async def run() -> dict:
        async with g:
            await g.render(g.job("primed", 1.0, prime), SamplingSettings(), "warmup")
            result: dict = {}
            for n in concurrency:
                start = time.perf_counter()
                runs = await asyncio.gather(*(timed_render(g, job, i, f"b{n}-{i}") for i in range(n)))
                result[f"rtf_{n}"] = round(n * audio_seconds / (time.perf_counter() - start), 3)
                if n == concurrency[0]:  # the lone request: when each level was complete
                    tokens = level_tokens(codec, job)
                    result["levels"] = [
                        {"level": lv, "seconds": round(t, 2), "tokens": tokens[lv]}
                        for lv, t in enumerate(runs[0][1])
                    ]
            return result

    timings = asyncio.run(run())
    return {
        "model": str(prior_dir) if prior_dir else f"default priors ({DEFAULT_PRIORS_DIR.name})",
        "backend": g.backend,
        "seconds_per_request": round(audio_seconds, 3),
        "segment_seconds": [  # per upsampler, as used (null: one segment)
            f * lv.hop / codec.sample_rate if f else None
            for f, lv in zip(segment_frames(codec, segment_seconds)[1:], codec.levels[1:], strict=True)
        ],
        "overlap_seconds": overlap_seconds,
        **timings,
    }

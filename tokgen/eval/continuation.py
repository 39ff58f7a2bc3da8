"""``tokgen eval continuation``: continuations of held-out primes against the real ones.

For N test-split pieces (never seen in training), the prime is P seconds from each piece
and the real continuation the S seconds that follow. Every system makes S seconds from
the same primes; each is compared with the set of real continuations by FAD in both
embeddings and KID (aisfx). The real continuations split in two halves give the noise
floor (real_vs_real: the same distribution, different pieces).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokgen.audio import load_audio
from tokgen.codec.base import Codec
from tokgen.errors import TokgenError
from tokgen.eval import baselines
from tokgen.eval.distances import fad, kid
from tokgen.eval.embeddings import Embedding
from tokgen.prior.generate import continue_audio
from tokgen.prior.sampler import LevelPrior, SamplingSettings


@dataclass(frozen=True)
class Piece:
    name: str
    prime: np.ndarray
    real: np.ndarray  # what followed the prime


def pieces(files: list[Path], n: int, prime_seconds: float, seconds: float, sample_rate: int) -> list[Piece]:
    """The first ``n`` files long enough for a prime and a continuation, cut 1 s in (past
    any silent lead-in)."""
    out = []
    start, p, s = sample_rate, round(prime_seconds * sample_rate), round(seconds * sample_rate)
    for path in files:
        audio = load_audio(path, sample_rate)
        if audio.size >= start + p + s:
            out.append(Piece(path.stem, audio[start : start + p], audio[start + p : start + p + s]))
        if len(out) == n:
            return out
    raise TokgenError(
        f"only {len(out)} held-out pieces are {prime_seconds + seconds + 1:g} s long; wanted {n}"
    )


async def model_continuations(
    codec: Codec, priors: list[LevelPrior], items: list[Piece], seconds: float, seed: int
) -> list[np.ndarray]:
    """All at once, so the engines batch them."""

    async def one(i: int, piece: Piece) -> np.ndarray:
        settings = SamplingSettings(seed=seed + i)
        result = await continue_audio(codec, priors, seconds, settings, "primed", piece.prime)
        return result.audio[result.prime_samples : result.prime_samples + piece.real.size]

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(items))))


def systems(
    codec: Codec, items: list[Piece], model: list[np.ndarray], seed: int
) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    bottom = codec.levels[-1]
    encoded = [codec.encode(p.real)[-1] for p in items]
    probs = baselines.code_histogram(encoded, bottom.codebook_size)
    return {
        "model": model,
        "noise": [baselines.noise(p.real, rng) for p in items],
        "repeat_prime": [baselines.repeat_prime(p.prime, p.real.size) for p in items],
        "unigram_codes": [baselines.unigram_codes(codec, probs, p.real.size, rng) for p in items],
        "codec_reconstruction": [baselines.reconstruction(codec, p.real) for p in items],
    }


def metrics(mine: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float | None]:
    if min(len(x) for x in (*mine.values(), *reference.values())) < 2:
        raise TokgenError("too little audio to compare: use more pieces (--n) or longer continuations")
    return {
        "fad": round(fad(mine["aisfx"], reference["aisfx"]), 4),
        "fad_classic": round(fad(mine["classic"], reference["classic"]), 4),
        "kid": round(kid(mine["aisfx"], reference["aisfx"], subsets=50, subset_size=200)[0], 5),
        # need the timbre classifier (issue 8, not built yet)
        "is": None,
        "timbre_consistency": None,
    }


def score(
    outputs: dict[str, list[np.ndarray]],
    real: list[np.ndarray],
    embeddings: dict[str, Embedding],
    sample_rate: int,
) -> dict[str, dict[str, float | None]]:
    """Each system's clips against all real continuations; and the first half of the real
    continuations against the second (real_vs_real). Embeddings: ``aisfx`` and ``classic``."""

    def frames(clips: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        return {name: [e.frames(c, sample_rate) for c in clips] for name, e in embeddings.items()}

    def pooled(per_clip: dict[str, list[np.ndarray]], part: slice = slice(None)) -> dict[str, np.ndarray]:
        return {name: np.concatenate(clips[part]) for name, clips in per_clip.items()}

    real_frames = frames(real)
    half = len(real) // 2
    results = {
        "real_vs_real": metrics(pooled(real_frames, slice(0, half)), pooled(real_frames, slice(half, None)))
    }
    for system, clips in tqdm(outputs.items(), desc="scoring", file=sys.stderr, dynamic_ncols=True):
        results[system] = metrics(pooled(frames(clips)), pooled(real_frames))
    return results


def evaluate_continuations(
    codec: Codec,
    priors: list[LevelPrior],
    files: list[Path],
    n: int,
    prime_seconds: float,
    seconds: float,
    embeddings: dict[str, Embedding],
    seed: int = 0,
) -> dict:
    """The whole evaluation; closes the priors' engines when the model is done."""
    items = pieces(files, n, prime_seconds, seconds, codec.sample_rate)

    async def generate() -> list[np.ndarray]:
        try:
            return await model_continuations(codec, priors, items, seconds, seed)
        finally:
            await asyncio.gather(*(p.engine.close() for p in priors))

    model = asyncio.run(generate())
    outputs = systems(codec, items, model, seed)
    return {
        "n": len(items),
        "prime_seconds": prime_seconds,
        "seconds": seconds,
        "embedding": {name: e.dim for name, e in embeddings.items()},
        "systems": score(outputs, [p.real for p in items], embeddings, codec.sample_rate),
    }

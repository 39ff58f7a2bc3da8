"""``tokgen eval continuation``: continuations of held-out primes against the real ones.

For N test-split pieces (never seen in training), the prime is P seconds from each piece
and the real continuation the S seconds that follow. Every system makes S seconds from
the same primes; each is compared with the set of real continuations by FAD in both
embeddings, and by KID in the timbre classifier's features (and in aiSFX's). The
classifier also gives each system's Inception Score and its timbre consistency: the
fraction of continuations classified in the same GM family as their prime. The real
continuations split in two halves give the noise floor (real_vs_real: the same
distribution, different pieces); its IS and consistency are those of all real
continuations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokgen.audio import load_audio
from tokgen.codec.base import Codec
from tokgen.data.render import load_manifest
from tokgen.errors import TokgenError
from tokgen.eval import baselines
from tokgen.eval.classifier import TimbreClassifier
from tokgen.eval.distances import fad, inception_score, kid
from tokgen.eval.embeddings import Embedding
from tokgen.prior.generate import continue_audio
from tokgen.prior.sampler import LevelPrior, SamplingSettings


@dataclass(frozen=True)
class Piece:
    name: str
    family: str  # GM program family of the melody (the corpus' label)
    prime: np.ndarray
    real: np.ndarray  # what followed the prime


def pieces(
    data_dir: Path, split: str, n: int, prime_seconds: float, seconds: float, sample_rate: int
) -> list[Piece]:
    """The first ``n`` renders of ``split`` long enough for a prime and a continuation, cut
    1 s in (past any silent lead-in)."""
    out = []
    start, p, s = sample_rate, round(prime_seconds * sample_rate), round(seconds * sample_rate)
    items = [i for i in load_manifest(data_dir)["items"] if i["split"] == split]
    if not items:
        raise TokgenError(f"split {split!r} of {data_dir} is empty")
    for item in items:
        path = Path(data_dir) / item["path"]
        audio = load_audio(path, sample_rate)
        if audio.size >= start + p + s:
            prime, real = audio[start : start + p], audio[start + p : start + p + s]
            out.append(Piece(path.stem, item["program_family"], prime, real))
        if len(out) == n:
            return out
    raise TokgenError(
        f"only {len(out)} held-out pieces are {prime_seconds + seconds + 1:g} s long; wanted {n}"
    )


async def model_continuations(
    codec: Codec,
    priors: list[LevelPrior],
    items: list[Piece],
    seconds: float,
    sampling: SamplingSettings,
    real_levels: int = 0,
) -> list[np.ndarray]:
    """All at once, so the engines batch them; piece ``i`` is sampled with seed ``seed + i``.

    ``real_levels`` > 0 is an ablation: the top ``real_levels`` levels are the real
    continuation's codes and only the levels below are sampled (from the prime's codes as
    context), which shows where a hierarchy loses what the codec keeps."""

    async def one(i: int, piece: Piece) -> np.ndarray:
        settings = dataclasses.replace(sampling, seed=sampling.seed + i)
        if real_levels == 0:
            result = await continue_audio(codec, priors, seconds, settings, "primed", piece.prime)
            start = result.prime_samples
        else:
            codes = codec.encode(np.concatenate([piece.prime, piece.real]))
            known = [
                c if lv < real_levels else c[: piece.prime.size // codec.levels[lv].hop]
                for lv, c in enumerate(codes)
            ]
            one_frame = codec.levels[0].hop / codec.sample_rate  # continue needs some new audio
            result = await continue_audio(codec, priors, one_frame, settings, "continue", codes=known)
            start = piece.prime.size
        return result.audio[start : start + piece.real.size]

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
        "codec_reconstruction": [
            baselines.reconstruction(codec, p.real, codes) for p, codes in zip(items, encoded, strict=True)
        ],
    }


def metrics(
    mine: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    families: np.ndarray,
    prime_families: np.ndarray,
) -> dict[str, float]:
    """One system's numbers: ``mine`` and ``reference`` are pooled frames per embedding,
    ``families`` the classifier's family per clip, ``prime_families`` per prime."""
    if min(len(x) for x in (*mine.values(), *reference.values())) < 2:
        raise TokgenError("too little audio to compare: use more pieces (--n) or longer continuations")
    return {
        "fad": round(fad(mine["aisfx"], reference["aisfx"]), 4),
        "fad_classic": round(fad(mine["classic"], reference["classic"]), 4),
        "kid": round(kid(mine["timbre"], reference["timbre"], subsets=50, subset_size=200)[0], 5),
        "kid_aisfx": round(kid(mine["aisfx"], reference["aisfx"], subsets=50, subset_size=200)[0], 5),
        "is": round(inception_score(families)[0], 4),
        "timbre_consistency": round(float(np.mean(families.argmax(1) == prime_families.argmax(1))), 4),
    }


def score(
    outputs: dict[str, list[np.ndarray]],
    items: list[Piece],
    embeddings: dict[str, Embedding],
    classifier: TimbreClassifier,
    sample_rate: int,
) -> tuple[dict[str, dict[str, float]], float]:
    """Each system's clips against all real continuations, and the first half of the real
    continuations against the second (real_vs_real). Embeddings: ``aisfx`` and ``classic``,
    plus the classifier's features (``timbre``). Also returns the classifier's accuracy on
    the real continuations (against the corpus labels), which bounds what its numbers mean."""
    views: dict[str, Embedding] = {**embeddings, "timbre": classifier}

    def frames(clips: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        return {name: [e.frames(c, sample_rate) for c in clips] for name, e in views.items()}

    def pooled(per_clip: dict[str, list[np.ndarray]], part: slice = slice(None)) -> dict[str, np.ndarray]:
        return {name: np.concatenate(clips[part]) for name, clips in per_clip.items()}

    def families(clips: list[np.ndarray]) -> np.ndarray:
        return np.stack([classifier.probabilities(c, sample_rate) for c in clips])

    real = [p.real for p in items]
    real_frames, real_families = frames(real), families(real)
    prime_families = families([p.prime for p in items])
    half = len(real) // 2
    first, second = pooled(real_frames, slice(0, half)), pooled(real_frames, slice(half, None))
    results = {"real_vs_real": metrics(first, second, real_families, prime_families)}
    for system, clips in tqdm(outputs.items(), desc="scoring", file=sys.stderr, dynamic_ncols=True):
        results[system] = metrics(pooled(frames(clips)), pooled(real_frames), families(clips), prime_families)
    labels = np.array(
        [
            classifier.cfg.families.index(p.family) if p.family in classifier.cfg.families else -1
            for p in items
        ]
    )
    return results, float(np.mean(real_families.argmax(1) == labels))


def evaluate_continuations(
    codec: Codec,
    priors: list[LevelPrior],
    data_dir: Path,
    split: str,
    n: int,
    prime_seconds: float,
    seconds: float,
    embeddings: dict[str, Embedding],
    classifier: TimbreClassifier,
    sampling: SamplingSettings,
    ablations: bool = False,
) -> dict:
    """The whole evaluation; closes the priors' engines when the model is done. ``sampling``
    is the model's; its seed also seeds the baselines. ``ablations`` adds the systems
    ``model_real_levels_K``: the top K levels real, the rest sampled (K = 1 .. levels - 1)."""
    items = pieces(data_dir, split, n, prime_seconds, seconds, codec.sample_rate)
    real_levels = range(1, len(codec.levels)) if ablations else range(0)

    async def generate() -> list[list[np.ndarray]]:
        try:
            return [
                await model_continuations(codec, priors, items, seconds, sampling, k)
                for k in (0, *real_levels)
            ]
        finally:
            await asyncio.gather(*(p.engine.close() for p in priors))

    model, *ablated = asyncio.run(generate())
    outputs = systems(codec, items, model, sampling.seed)
    outputs |= {f"model_real_levels_{k}": clips for k, clips in zip(real_levels, ablated, strict=True)}
    results, accuracy = score(outputs, items, embeddings, classifier, codec.sample_rate)
    return {
        "n": len(items),
        "prime_seconds": prime_seconds,
        "seconds": seconds,
        "sampling": dataclasses.asdict(sampling),
        "embedding": {name: e.dim for name, e in embeddings.items()} | {"timbre": classifier.dim},
        "classifier": {"families": classifier.cfg.families, "accuracy_on_real": round(accuracy, 4)},
        "systems": results,
    }

"""Trivial systems a continuation model must beat, each given what the model was given (the
prime) or, for the bounds, what it was not (the real continuation)."""

from __future__ import annotations

import numpy as np

from tokgen.codec.base import Codec


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def noise(real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise as long and as loud (RMS) as the real continuation."""
    return (rng.standard_normal(real.size) * rms(real)).astype(np.float32)


def repeat_prime(prime: np.ndarray, samples: int) -> np.ndarray:
    """The prime played again (and again) for the continuation's length."""
    if prime.size == 0:
        return np.zeros(samples, np.float32)
    return np.resize(prime, samples).astype(np.float32)


def code_histogram(codes: list[np.ndarray], codebook_size: int) -> np.ndarray:
    """Unigram probabilities of one level's codes over a set of encodings."""
    counts = np.bincount(np.concatenate(codes).ravel(), minlength=codebook_size).astype(np.float64)
    return counts / counts.sum()


def unigram_codes(
    codec: Codec, probs: list[np.ndarray], samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Codes drawn independently from their unigram distributions (``probs``, one per level
    decoded: the bottom level's, or every level's for a codec whose levels are residuals),
    decoded: the codec's sound with none of a prior's sequence modelling."""
    top = -(-samples // codec.levels[0].hop)
    first = len(codec.levels) - len(probs)
    codes = [
        rng.choice(p.size, size=top * codec.levels[0].hop // codec.levels[lv].hop, p=p)
        for lv, p in enumerate(probs, start=first)
    ]
    if first:
        return codec.decode(codes[-1], len(codec.levels) - 1)[:samples].astype(np.float32)
    return codec.decode_levels(codes)[:samples].astype(np.float32)


def reconstruction(
    codec: Codec, real: np.ndarray, codes: list[np.ndarray] | None = None, reference: np.ndarray | None = None
) -> np.ndarray:
    """The real continuation through the codec, decoded as generated audio is (from the
    bottom level, or all levels for a codec whose levels are residuals, in the timbre of
    ``reference``, the prime): the best a prior over these codes could do. ``codes``:
    its codes of every level, if already encoded."""
    codes = codec.encode(real) if codes is None else codes
    return codec.decode_levels(codes, reference)[: real.size].astype(np.float32)

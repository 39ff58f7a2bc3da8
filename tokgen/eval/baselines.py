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


def unigram_codes(codec: Codec, probs: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Bottom-level codes drawn independently from their unigram distribution, decoded:
    the codec's sound with none of a prior's sequence modelling."""
    level = len(codec.levels) - 1
    frames = -(-samples // codec.levels[level].hop)
    codes = rng.choice(probs.size, size=frames, p=probs)
    return codec.decode(codes, level)[:samples].astype(np.float32)


def reconstruction(codec: Codec, real: np.ndarray, bottom_codes: np.ndarray | None = None) -> np.ndarray:
    """The real continuation through the codec's bottom level: the best a prior over these
    codes could do. ``bottom_codes``: its bottom-level codes, if already encoded."""
    level = len(codec.levels) - 1
    codes = codec.encode(real)[level] if bottom_codes is None else bottom_codes
    return codec.decode(codes, level)[: real.size].astype(np.float32)

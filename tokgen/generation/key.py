"""Key guidance: sampling steered towards the prime's pitch classes.

A continuation should stay in its prime's key. The priors mostly do, but a sampled code
now and then leaves the key and the windows after it continue from there. Where a codec
says what pitch classes each code of a level stands for (``Codec.pitch_classes``: for the
msvq codec's top level by construction, its codes being k-means centroids of semitone
energies; for the middle level as measured on a corpus, ``tokgen codec pitch-classes``),
every code's logit gets ``strength`` times the correlation of its pitch classes with the
prime's profile at that level (the mean over the prime's codes): in-key codes a little
more likely, out-of-key ones a little less, the prior still deciding among them. Nothing
else is needed at run time: the bias is one vector per request and level, added by the
engine (vLLM's ``logit_bias``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from tokgen.errors import TokgenError

MAX_KEY_GUIDANCE = 20.0
# The default strength, chosen on the continuation evaluation (docs/MODELS.md).
DEFAULT_KEY_GUIDANCE = 1.0


def check_strength(what: str, strength: float, maximum: float) -> None:
    """A guidance strength: a real number in [0, maximum]."""
    numeric = isinstance(strength, numbers.Real) and not isinstance(strength, bool)
    if not (numeric and math.isfinite(strength) and 0.0 <= strength <= maximum):
        raise TokgenError(f"{what} must be in [0, {maximum:g}], got {strength}")


def check_key_guidance(strength: float) -> None:
    check_strength("key guidance", strength, MAX_KEY_GUIDANCE)


def profile_correlations(pitch_classes: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``pitch_classes`` (K, 12) with ``profile`` (12,);
    0 for a flat row or a flat profile."""
    rows = pitch_classes - pitch_classes.mean(1, keepdims=True)
    centred = profile - profile.mean()
    norms = np.sqrt((rows**2).sum(1) * (centred @ centred))
    out = np.zeros(rows.shape[0])
    ok = norms > 1e-12
    out[ok] = (rows[ok] @ centred) / norms[ok]
    return out


def key_bias(pitch_classes: np.ndarray | None, prime_codes: np.ndarray, strength: float) -> np.ndarray | None:
    """Logit bias per code of a level (see the module docstring), or None when there is
    nothing to steer by: no strength, codes without pitch classes, or no prime codes."""
    if strength == 0.0 or pitch_classes is None or prime_codes.size == 0:
        return None
    profile = pitch_classes[prime_codes.ravel()].mean(0)
    return strength * profile_correlations(pitch_classes, profile)


def add_biases(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The sum of two optional logit biases over the same codes (None: no bias)."""
    if a is None or b is None:
        return a if b is None else b
    return a + b

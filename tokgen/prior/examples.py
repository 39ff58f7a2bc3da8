"""Training examples for the priors, in the token layout of ``layout.py``.

- top prior: ``BOS`` + ``n_ctx`` consecutive top-level tokens, all predicted;
- upsampler for level l: ``BOS`` + the level l-1 tokens covering the window + ``SEP`` +
  ``n_ctx`` level-l tokens; only the level-l tokens are predicted (the prefix is given).
Window starts are multiples of the level ratio, matching how sampling windows are planned,
so the prefix always covers exactly the window's time span.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokgen.prior.layout import BOS, TokenLayout

IGNORE = -100  # label value transformers' loss skips


@dataclass(frozen=True)
class Example:
    tokens: np.ndarray  # (S,) int64
    labels: np.ndarray  # (S,) int64: the token where it is predicted, else IGNORE


def level_example(
    layout: TokenLayout,
    level: int,
    codes: list[np.ndarray],
    start: int,
    length: int,
    ratio: int,
    reference: np.ndarray | None = None,
) -> Example:
    """The example whose own-level window is ``codes[level][start : start + length]``;
    an upsampler's may start with ``reference`` codes of its own level (see ``layout``)."""
    own = codes[level][start : start + length]
    own_tokens = layout.to_tokens(own, level)
    if level == 0:
        tokens = np.concatenate([[BOS], own_tokens])
        labels = np.concatenate([[IGNORE], own_tokens])
    else:
        upper = codes[level - 1][start // ratio : -(-(start + own.size) // ratio)]
        prefix = np.asarray(layout.upsampler_prefix(level, upper, reference), dtype=np.int64)
        tokens = np.concatenate([prefix, own_tokens])
        labels = np.concatenate([np.full(prefix.size, IGNORE), own_tokens])
    return Example(tokens.astype(np.int64), labels.astype(np.int64))


def window_starts(n_frames: int, length: int, ratio: int) -> list[int]:
    """Non-overlapping windows that tile a file (the last may be shorter): the fixed,
    deterministic set used for validation."""
    step = max(ratio, length - length % ratio)
    return list(range(0, n_frames, step))


def random_start(rng: np.random.Generator, n_frames: int, length: int, ratio: int) -> int:
    """A random window start that is a multiple of ``ratio`` (0 if the file is short)."""
    last = max(0, n_frames - length)
    return int(rng.integers(0, last // ratio + 1)) * ratio


def random_reference(rng: np.random.Generator, codes: np.ndarray, length: int) -> np.ndarray:
    """``length`` consecutive codes from a random place of the same file: in training, what
    the prime's codes are in generation (the same piece and instrument, other notes)."""
    start = int(rng.integers(0, max(0, codes.size - length) + 1))
    return codes[start : start + length]

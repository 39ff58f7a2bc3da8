"""Hierarchical, windowed sampling through an engine (Jukebox's sampling, one engine per
level's prior).

Every mode is "extend the known codes of each level to a target length": *primed* knows
the prime's codes at every level, *ancestral* knows nothing, *continue* knows the codes of
a saved ``.npz``, *upsample* knows the whole top level. Levels are sampled top first; an
upsampler's windows are conditioned on the codes of the level above, which are complete
by then (issue "gRPC service" pipelines the levels for streaming).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tokgen.engine.base import Engine, SamplingParams
from tokgen.errors import TokgenError
from tokgen.prior.layout import TokenLayout
from tokgen.prior.windows import plan_windows, upper_span


@dataclass(frozen=True)
class LevelPrior:
    """One level's prior as served by an engine."""

    engine: Engine
    n_ctx: int  # own-level tokens per window
    hop_fraction: float = 0.5  # share of a window that is new tokens (the rest is context)


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def check(self, vocab_size: int) -> None:
        """Validate before any work starts (the engine checks every window again)."""
        SamplingParams(1, self.temperature, self.top_k, self.top_p, self.seed).check(vocab_size)


@dataclass
class Progress:
    """Frames known per level; updated after every window."""

    done: list[int]
    total: list[int]


def window_seed(seed: int, level: int, window: int) -> int:
    """A distinct, reproducible seed per (request seed, level, window)."""
    digest = hashlib.sha256(f"{seed}/{level}/{window}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


async def sample_level(
    prior: LevelPrior,
    layout: TokenLayout,
    level: int,
    known: np.ndarray,
    total_frames: int,
    upper: np.ndarray | None,
    ratio: int,
    settings: SamplingSettings,
    request_id: str,
    on_window: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """Extend ``known`` codes of ``level`` to ``total_frames`` window by window."""
    codes = [int(c) for c in known]
    plan = plan_windows(len(codes), total_frames, prior.n_ctx, prior.hop_fraction)
    for i, w in enumerate(plan.windows):
        context = np.asarray(codes[w.start : w.start + w.context], dtype=np.int64)
        if level == 0:
            prompt = layout.top_prompt(context)
        else:
            assert upper is not None
            lo, hi = upper_span(w, ratio, upper.size)
            prompt = layout.upsampler_prompt(level, upper[lo:hi], context)
        params = SamplingParams(
            max_tokens=w.new,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            seed=window_seed(settings.seed, level, i),
            allowed=layout.level_range(level),
        )
        new: list[int] = []
        async for chunk in prior.engine.generate(f"{request_id}/L{level}/w{i}", prompt, params):
            new += chunk
        codes += layout.to_codes(new, level).tolist()
        if on_window is not None:
            on_window(np.asarray(codes, dtype=np.int64))
    return np.asarray(codes, dtype=np.int64)


def level_frames(top_frames: int, hops: list[int]) -> list[int]:
    """Frames of every level for ``top_frames`` top frames (hops divide each other)."""
    return [top_frames * hops[0] // h for h in hops]


async def sample_hierarchy(
    priors: list[LevelPrior],
    layout: TokenLayout,
    hops: list[int],
    known: list[np.ndarray],
    top_frames: int,
    settings: SamplingSettings,
    request_id: str,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Codes of every level, ``top_frames`` top frames long, extending ``known``."""
    if len(priors) != len(hops) or len(known) != len(hops):
        raise TokgenError(f"need one prior and one known-codes array per level ({len(hops)})")
    totals = level_frames(top_frames, hops)
    for lv, (k, t) in enumerate(zip(known, totals, strict=True)):
        if k.size > t:
            raise TokgenError(f"level {lv} already has {k.size} frames, more than the {t} asked for")
    out: list[np.ndarray] = []
    for lv, prior in enumerate(priors):
        upper = out[lv - 1] if lv else None
        ratio = hops[lv - 1] // hops[lv] if lv else 1

        def report(codes: np.ndarray, lv: int = lv) -> None:
            if progress is not None:
                progress.done[lv] = codes.size

        out.append(
            await sample_level(
                prior, layout, lv, known[lv], totals[lv], upper, ratio, settings, request_id, report
            )
        )
    return out

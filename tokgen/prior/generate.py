"""Continuations end to end: prime -> codes -> priors (through the engines) -> audio.

A prior set is a directory with one prior per level (``level0/``, ``level1/``, ...), each
as written by ``tokgen prior train`` (``model/``). The prime is trimmed to whole top-level
frames (at most one top hop, 32 ms with the default codec, is dropped from its end) so that
every level's codes line up; the continuation starts right after the trimmed prime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tokgen.codec.base import Codec
from tokgen.engine.factory import Backend, create_engine
from tokgen.errors import TokgenError
from tokgen.prior.corpus import encode_file
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import read_prior_meta
from tokgen.prior.sampler import LevelPrior, Progress, SamplingSettings, sample_hierarchy

Mode = Literal["primed", "ancestral", "continue", "upsample"]
MAX_SECONDS = 600.0
# Where the shipped default priors live (level0/, level1/, ...), beside the default codec.
DEFAULT_PRIORS_DIR = Path(__file__).parent.parent / "assets" / "models" / "priors"


@dataclass
class Continuation:
    codes: list[np.ndarray]  # every level, prime included
    audio: np.ndarray  # decoded from the bottom level, prime included
    prime_samples: int  # where the continuation starts in ``audio``


def load_priors(
    prior_dir: str | Path | None,
    codec: Codec,
    backend: Backend = "auto",
    hop_fraction: float = 0.5,
    **engine_options: object,
) -> list[LevelPrior]:
    prior_dir = Path(prior_dir) if prior_dir is not None else DEFAULT_PRIORS_DIR
    if not prior_dir.is_dir():
        raise TokgenError(
            f"no prior set at {prior_dir}: train one with `tokgen prior train` or pass --priors"
        )
    priors = []
    for level in range(len(codec.levels)):
        d = Path(prior_dir) / f"level{level}"
        meta = read_prior_meta(d)
        if meta.get("level") != level or meta.get("codebook_sizes") != [
            lv.codebook_size for lv in codec.levels
        ]:
            raise TokgenError(f"prior {d} was not trained for level {level} of codec {codec.name!r}")
        priors.append(
            LevelPrior(create_engine(d, backend, **engine_options), int(meta["n_ctx"]), hop_fraction)
        )
    return priors


def known_codes(
    codec: Codec, mode: Mode, prime: np.ndarray | None, codes: list[np.ndarray] | None
) -> list[np.ndarray]:
    """What each mode already knows, per level."""
    empty = [np.zeros(0, dtype=np.int64) for _ in codec.levels]
    if mode == "ancestral":
        return empty
    if mode == "primed":
        if prime is None:
            raise TokgenError("mode 'primed' needs prime audio")
        known = encode_file(codec, prime)
        if known is None:
            raise TokgenError(
                f"the prime is shorter than one top-level frame ({codec.levels[0].hop} samples)"
            )
        return known
    if codes is None:
        raise TokgenError(f"mode {mode!r} needs saved codes")
    if mode == "upsample":
        return [codes[0], *empty[1:]]
    if mode == "continue":
        return codes
    raise TokgenError(f"unknown mode {mode!r}; use primed, ancestral, continue or upsample")


async def continue_audio(
    codec: Codec,
    priors: list[LevelPrior],
    seconds: float,
    settings: SamplingSettings,
    mode: Mode = "primed",
    prime: np.ndarray | None = None,
    codes: list[np.ndarray] | None = None,
    request_id: str = "gen",
    progress: Progress | None = None,
) -> Continuation:
    """Generate ``seconds`` of continuation (``upsample``: the lower levels of the given top
    codes, whose length decides the output's)."""
    if not 0 < seconds <= MAX_SECONDS:
        raise TokgenError(f"seconds must be in (0, {MAX_SECONDS:g}], got {seconds}")
    known = known_codes(codec, mode, prime, codes)
    hops = [lv.hop for lv in codec.levels]
    if mode == "upsample":
        start_top, top_frames = 0, known[0].size
    else:
        start_top = known[0].size
        top_frames = start_top + math.ceil(seconds * codec.sample_rate / hops[0])
    layout = TokenLayout.for_levels(codec.levels)
    out = await sample_hierarchy(priors, layout, hops, known, top_frames, settings, request_id, progress)
    audio = codec.decode(out[-1], len(out) - 1)
    return Continuation(out, audio, start_top * hops[0])

"""``tokgen prior eval``: validation bits per token of each level's prior, next to the
unigram entropy of the same validation tokens (the best any model that ignores context can
do on them): a prior below it has learned more than which codes are common."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tokgen.codec.base import Codec
from tokgen.prior.corpus import cached_split
from tokgen.prior.examples import IGNORE, Example
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import read_prior_meta
from tokgen.prior.train import bits_per_token, level_ratio, validation_examples


def unigram_bits(examples: list[Example], layout: TokenLayout, level: int) -> float:
    """Entropy in bits of the code frequencies of the examples' predicted tokens."""
    targets = np.concatenate([layout.to_codes(e.labels[e.labels != IGNORE], level) for e in examples])
    freqs = np.bincount(targets, minlength=layout.codebook_sizes[level]) / targets.size
    freqs = freqs[freqs > 0]
    return float(-(freqs * np.log2(freqs)).sum())


def evaluate_prior(codec: Codec, data_dir: Path, prior_dir: Path, max_windows: int = 256) -> dict:
    from transformers import AutoModelForCausalLM

    meta = read_prior_meta(prior_dir)
    level, n_ctx = int(meta["level"]), int(meta["n_ctx"])
    layout = TokenLayout.for_levels(codec.levels)
    examples = validation_examples(
        cached_split(codec, data_dir, "valid"),
        layout,
        level,
        n_ctx,
        level_ratio(codec, level),
        max_windows,
    )
    model = AutoModelForCausalLM.from_pretrained(str(prior_dir), local_files_only=True, dtype=torch.float32)
    return {
        "level": level,
        "bits_per_token": round(bits_per_token(model, examples, 8), 4),
        "unigram_bits_per_token": round(unigram_bits(examples, layout, level), 4),
        "uniform_bits_per_token": round(math.log2(layout.codebook_sizes[level]), 4),
        "context_tokens": n_ctx,
        "windows": len(examples),
    }

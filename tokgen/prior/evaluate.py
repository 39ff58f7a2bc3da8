"""``tokgen prior eval``: validation bits per token of each level's prior, next to the
unigram baseline (code frequencies of the train split, scored on the same valid tokens):
a prior below its baseline has learned more than which codes are common."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tokgen.codec.base import Codec
from tokgen.prior.corpus import CodeCorpus, cached_split
from tokgen.prior.examples import IGNORE, Example
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import read_prior_meta
from tokgen.prior.train import bits_per_token, level_ratio, validation_examples


def unigram_bits(train: CodeCorpus, examples: list[Example], layout: TokenLayout, level: int) -> float:
    """Cross-entropy in bits of add-one-smoothed train code frequencies on the examples'
    predicted tokens."""
    size = layout.codebook_sizes[level]
    counts = np.bincount(np.concatenate([f[level] for f in train.files]), minlength=size) + 1.0
    log_probs = np.log2(counts / counts.sum())
    targets = np.concatenate([layout.to_codes(e.labels[e.labels != IGNORE], level) for e in examples])
    return float(-log_probs[targets].mean())


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
        "unigram_bits_per_token": round(
            unigram_bits(cached_split(codec, data_dir, "train"), examples, layout, level), 4
        ),
        "uniform_bits_per_token": round(math.log2(layout.codebook_sizes[level]), 4),
        "context_tokens": n_ctx,
        "windows": len(examples),
    }

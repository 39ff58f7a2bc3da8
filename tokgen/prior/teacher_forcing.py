"""Teacher-forced samples of an upsampler: real codes with each replaced by what the prior
draws at its position given the real codes before it.

This is the "ground-truth-aligned" input of Tacotron 2's vocoder fine-tune, for codes:
generated codes are not the real ones, and a decoder trained only on real codes has never
seen the mistakes a prior makes. Drawing every position from the prior with the real
history (one forward pass, no generation loop) gives codes with the prior's per-step
mistakes but still aligned with the real audio, so a decoder can be trained to turn them
into it. It also separates two sources of a continuation's distance from real audio: the
mistakes of single steps (these samples) and the drift of free-running generation (what
the samples of a whole continuation add on top).

The logits are the prior's own: the key and instrument guidances that generation adds are
not applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokgen.errors import TokgenError
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import read_prior_meta


@dataclass(frozen=True)
class Upsampler:
    """An upsampler loaded for teacher-forced sampling (float32, in this process)."""

    model: torch.nn.Module
    layout: TokenLayout
    level: int
    n_ctx: int
    ratio: int
    reference_tokens: int


def load_upsampler(prior_dir: Path) -> Upsampler:
    """The upsampler in ``prior_dir`` (a prior set's ``levelN/``, N >= 1)."""
    from transformers import AutoModelForCausalLM

    meta = read_prior_meta(prior_dir)
    level = int(meta["level"])
    if level < 1:
        raise TokgenError(f"{prior_dir} is the top prior; teacher forcing needs an upsampler (level >= 1)")
    model = AutoModelForCausalLM.from_pretrained(str(prior_dir), local_files_only=True, dtype=torch.float32)
    model.eval()
    layout = TokenLayout(tuple(int(s) for s in meta["codebook_sizes"]))
    reference = int(meta.get("config", {}).get("reference_tokens", 0))
    return Upsampler(model, layout, level, int(meta["n_ctx"]), int(meta["ratio"]), reference)


@torch.no_grad()
def teacher_forced_samples(
    model: torch.nn.Module,
    layout: TokenLayout,
    level: int,
    upper: torch.Tensor,
    own: torch.Tensor,
    reference: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """For a batch of upsampler windows (``upper``: (B, U) codes of the level above covering
    the window, ``own``: (B, N) the window's real codes of ``level``, ``reference``: (B, R)
    or None, the reference prompt), a sample at every position of ``own`` given the real
    codes before it: (B, N) codes of ``level``."""
    refs = [None] * len(own) if reference is None else reference.numpy()
    rows = [
        layout.upsampler_prefix(level, up, ref) + layout.to_tokens(codes, level).tolist()
        for up, codes, ref in zip(upper.numpy(), own.numpy(), refs, strict=True)
    ]
    tokens = torch.tensor(rows, dtype=torch.long)
    prefix = tokens.shape[1] - own.shape[1]
    logits = model(input_ids=tokens).logits[:, prefix - 1 : -1]
    return draw_level(logits, layout.level_range(level), temperature, generator)


def draw_level(
    logits: torch.Tensor,
    level_range: tuple[int, int],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A draw at every position of ``logits`` (B, S, vocabulary) among one level's tokens
    (``level_range``, as ``TokenLayout.level_range`` gives it): (B, S) codes of that level."""
    start, stop = level_range
    probs = torch.softmax(logits[..., start:stop].float() / temperature, dim=-1)
    b, s, n = probs.shape
    return torch.multinomial(probs.reshape(b * s, n), 1, generator=generator).reshape(b, s)


def teacher_forced_sequence(
    model: torch.nn.Module,
    layout: TokenLayout,
    level: int,
    upper: np.ndarray,
    own: np.ndarray,
    start: int,
    n_ctx: int,
    ratio: int,
    reference: np.ndarray | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """``own`` (one file's codes of ``level``) with frames from ``start`` on replaced by
    teacher-forced samples; ``upper`` is the level above. Windows of ``n_ctx`` frames start
    on whole upper frames and overlap by half, so every sampled frame has at least half a
    window of real history (or all there is)."""
    out = own.copy()
    half = max(ratio, (n_ctx // 2) // ratio * ratio)
    pos = start
    while pos < own.size:
        first = max(0, pos - half) // ratio * ratio
        last = min(own.size, first + n_ctx)
        window = torch.from_numpy(own[first:last].astype(np.int64))[None]
        above = torch.from_numpy(upper[first // ratio : -(-last // ratio)].astype(np.int64))[None]
        ref = None if reference is None else torch.from_numpy(reference.astype(np.int64))[None]
        drawn = teacher_forced_samples(model, layout, level, above, window, ref, temperature, generator)
        out[pos:last] = drawn[0, pos - first :].numpy()
        pos = last
    return out


@dataclass(frozen=True)
class UpsamplerDraws:
    """Teacher-forced codes for a codec's decoder fine-tune
    (``tokgen.codec.train_msvq.CodeSampler``): a batch of crops' codes with the upsampler's
    level replaced by its draws, the reference prompt taken from the end of each crop's
    reference codes (in generation: the prime's last codes).

    ``passes`` > 1 draws again given the previous pass's draws (parallel scheduled sampling,
    Duckworth et al. 2019): every code of the last pass follows codes the prior drew, not
    real ones, which is closer to what a free-running upsampler hands the decoder, while the
    codes stay aligned with the real audio the decoder is trained to give."""

    upsampler: Upsampler
    temperature: float = 1.0
    passes: int = 1

    def __call__(
        self, codes: list[torch.Tensor], reference: list[torch.Tensor], seed: int
    ) -> list[torch.Tensor]:
        up, level = self.upsampler, self.upsampler.level
        if codes[level].shape[1] > up.n_ctx:
            frames = codes[level].shape[1]
            raise TokgenError(f"crops of {frames} level-{level} codes exceed the prior's window ({up.n_ctx})")
        ref = reference[level][:, -up.reference_tokens :] if up.reference_tokens else None
        generator = torch.Generator().manual_seed(seed)
        drawn = codes[level]
        for _ in range(self.passes):
            drawn = teacher_forced_samples(
                up.model, up.layout, level, codes[level - 1], drawn, ref, self.temperature, generator
            )
        return [*codes[:level], drawn, *codes[level + 1 :]]

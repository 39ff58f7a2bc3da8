"""The token layout shared by every prior: one vocabulary, one range of ids per level.

    id 0            PAD  (never generated; pads batches)
    id 1            BOS  (starts every sequence)
    id 2            SEP  (ends an upsampler's conditioning prefix)
    ids 3 ...       codes of level 0 (top), then level 1, ... : level l's code c is
                    ``offsets[l] + c``

Every prior uses the whole vocabulary, so one layout serves all levels and an engine can
restrict sampling to a level with a single id range (``level_range``).

Sequences:
- top prior:  ``BOS, top codes ...``
- upsampler for level l (l >= 1): ``BOS, level l-1 codes of the window's time span, SEP,
  level l codes ...`` (the conditioning prefix is the upper level's codes aligned with the
  window, as in Jukebox's upsamplers, given as prefix tokens instead of a conditioner net).
  An upsampler trained with a reference (``PriorConfig.reference_tokens``) also gets
  ``BOS, level l codes of the prime, SEP`` in front of that (VALL-E's prompt: the texture
  and instrument to keep, the same in every window of a request, so vLLM's prefix cache
  computes it once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tokgen.codec.base import LevelSpec
from tokgen.errors import TokgenError

PAD, BOS, SEP = 0, 1, 2
N_SPECIAL = 3


@dataclass(frozen=True)
class TokenLayout:
    codebook_sizes: tuple[int, ...]  # per level, top first

    @classmethod
    def for_levels(cls, levels: Sequence[LevelSpec]) -> TokenLayout:
        if any(lv.n_codebooks != 1 for lv in levels):
            raise TokgenError("the token layout supports one codebook per level (a VQ-VAE)")
        return cls(tuple(lv.codebook_size for lv in levels))

    @property
    def offsets(self) -> tuple[int, ...]:
        starts, pos = [], N_SPECIAL
        for size in self.codebook_sizes:
            starts.append(pos)
            pos += size
        return tuple(starts)

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + sum(self.codebook_sizes)

    def level_range(self, level: int) -> tuple[int, int]:
        """[start, stop) of the token ids of ``level``'s codes."""
        self._check_level(level)
        start = self.offsets[level]
        return start, start + self.codebook_sizes[level]

    def to_tokens(self, codes: np.ndarray, level: int) -> np.ndarray:
        start, stop = self.level_range(level)
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 1 or (codes.size and (codes.min() < 0 or codes.max() >= stop - start)):
            raise TokgenError(f"level {level} codes must be a 1-D array of values in [0, {stop - start})")
        return codes + start

    def to_codes(self, tokens: Sequence[int] | np.ndarray, level: int) -> np.ndarray:
        start, stop = self.level_range(level)
        arr = np.asarray(tokens, dtype=np.int64)
        if arr.size and (arr.min() < start or arr.max() >= stop):
            raise TokgenError(f"tokens outside level {level}'s range [{start}, {stop})")
        return arr - start

    def top_prompt(self, context: np.ndarray) -> list[int]:
        """Prompt of the top prior: BOS and the level-0 context codes."""
        return [BOS, *self.to_tokens(context, 0).tolist()]

    def upsampler_prompt(
        self, level: int, upper: np.ndarray, context: np.ndarray, reference: np.ndarray | None = None
    ) -> list[int]:
        """Prompt of level ``level``'s upsampler: BOS, [the reference codes of its own
        level, SEP,] the aligned codes of the level above, SEP, then its own context codes."""
        if level < 1:
            raise TokgenError("upsamplers exist for levels 1 and below; level 0 uses top_prompt")
        return self.upsampler_prefix(level, upper, reference) + self.to_tokens(context, level).tolist()

    def upsampler_prefix(
        self, level: int, upper: np.ndarray, reference: np.ndarray | None = None
    ) -> list[int]:
        """The conditioning part of an upsampler's sequence (given, never predicted)."""
        ref = (
            [*self.to_tokens(reference, level).tolist(), SEP]
            if reference is not None and reference.size
            else []
        )
        return [BOS, *ref, *self.to_tokens(upper, level - 1).tolist(), SEP]

    def _check_level(self, level: int) -> None:
        if not 0 <= level < len(self.codebook_sizes):
            raise TokgenError(f"level {level} does not exist (levels 0..{len(self.codebook_sizes) - 1})")

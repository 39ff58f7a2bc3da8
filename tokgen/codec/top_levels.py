"""A residual codec seen through its top levels only: generate fewer tokens per second.

In a codec whose levels are residuals of one another (``uses_all_levels``: the ``msvq``
codec), the top levels decode on their own, a mode its training includes (quantiser
dropout keeps the top one or two levels only for part of every batch). A prior set that
stops above the bottom level then needs no bottom prior at all: 156 instead of 656 codes
per second of audio with the msvq hops, so about 4x fewer tokens to sample, and no
bottom-level segments to seam. What it costs in sound is the evaluation's to say
(docs/MODELS.md). ``Generator.load`` wraps the codec in this view when the prior set has
fewer levels than the codec.
"""

from __future__ import annotations

import numpy as np

from tokgen.codec.base import Codec, IncrementalDecoder
from tokgen.codec.instruments import InstrumentTable
from tokgen.errors import TokgenError


class TopLevels(Codec):
    """Levels ``0..n-1`` of ``inner``: the same codes and decoder, fewer levels."""

    def __init__(self, inner: Codec, n: int):
        if not inner.uses_all_levels:
            raise TokgenError(
                f"codec {inner.name!r} decodes each level alone, not its top levels together; "
                f"its prior set needs all {len(inner.levels)} levels"
            )
        if not 1 <= n <= len(inner.levels):
            raise TokgenError(f"codec {inner.name!r} has levels 0..{len(inner.levels) - 1}; cannot keep {n}")
        self.inner = inner
        self.name = inner.name  # its codes are the inner codec's; a codes file's hops tell the views apart
        self.sample_rate = inner.sample_rate
        self.levels = inner.levels[:n]
        self.uses_all_levels = True

    def encode(self, audio: np.ndarray) -> list[np.ndarray]:
        return (
            [self.inner.encode_level(audio, 0)]
            if len(self.levels) == 1
            else self.inner.encode(audio)[: len(self.levels)]
        )

    def encode_level(self, audio: np.ndarray, level: int) -> np.ndarray:
        self.check_level(level)
        return self.inner.encode_level(audio, level)

    def decode(self, codes: np.ndarray, level: int) -> np.ndarray:
        self.check_level(level)
        return self.inner.decode(codes, level)

    def decode_levels(self, codes: list[np.ndarray], reference: np.ndarray | None = None) -> np.ndarray:
        if len(codes) > len(self.levels):
            raise TokgenError(
                f"got codes of {len(codes)} levels; this view of {self.name!r} has {len(self.levels)}"
            )
        return self.inner.decode_levels(codes, reference)

    def decode_margin(self, level: int) -> int:
        self.check_level(level)
        return self.inner.decode_margin(level)

    def decode_lookahead(self, level: int) -> int:
        self.check_level(level)
        return self.inner.decode_lookahead(level)

    def incremental_decoder(
        self, level: int, first: int, reference: np.ndarray | None = None
    ) -> IncrementalDecoder | None:
        self.check_level(level)
        return self.inner.incremental_decoder(level, first, reference)

    def pitch_classes(self, level: int) -> np.ndarray | None:
        self.check_level(level)
        return self.inner.pitch_classes(level)

    def instruments(self) -> InstrumentTable | None:
        return self.inner.instruments()

    def check_level(self, level: int) -> None:
        if not 0 <= level < len(self.levels):
            last = len(self.levels) - 1
            raise TokgenError(
                f"level {level} does not exist; this view of {self.name!r} has levels 0..{last}"
            )

"""Decode codes to audio while they are still being generated, with no seams.

Codes arrive as a growing prefix. Audio for frame ``t`` depends on codes up to
``decode_margin`` frames after it, so each step decodes the frames that are final (all
known codes but the last ``margin``) from a window that adds ``margin`` frames of context
on both sides, and crops: the pieces join into what one decode of all the codes gives
(exactly for the VQ-VAE, whose receptive field is finite), so chunk joins add no clicks.
"""

from __future__ import annotations

import numpy as np

from tokgen.codec.base import Codec


class StreamDecoder:
    def __init__(self, codec: Codec, level: int, min_frames: int = 1):
        self.codec = codec
        self.level = level
        self.hop = codec.levels[level].hop
        self.margin = codec.decode_margin(level)
        self.min_frames = min_frames  # decode at least this many new frames per step
        self.emitted = 0  # frames whose audio has been returned

    def push(self, known: np.ndarray, final: bool = False) -> np.ndarray:
        """Audio for the frames that became final now that ``known`` (every code known so
        far, from the start) is known; with ``final``, for all remaining frames."""
        stop = known.shape[-1] if final else known.shape[-1] - self.margin
        if stop - self.emitted < (1 if final else self.min_frames):
            return np.zeros(0, dtype=np.float32)
        lo = max(0, self.emitted - self.margin)
        hi = min(known.shape[-1], stop + self.margin)
        audio = self.codec.decode(known[..., lo:hi], self.level)
        out = audio[(self.emitted - lo) * self.hop : (stop - lo) * self.hop]
        self.emitted = stop
        return out

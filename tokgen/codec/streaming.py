"""Decode codes to audio while they are still being generated, with no seams.

Codes arrive as a growing prefix. Audio for frame ``t`` depends on codes up to
``decode_lookahead`` frames after it, so each step decodes the frames that are final (all
known codes but the last ``lookahead``) from a window that adds ``decode_margin`` frames of
context before them and ``lookahead`` after, and crops: the pieces join into what one
decode of all the codes gives (exactly: both codecs' decoders have a finite receptive
field), so chunk joins add no clicks.

A codec whose levels are residuals (``uses_all_levels``) decodes a crop from every level
above it too: ``push`` then gets the known prefix of each level (``upper``), cropped to
the same time span.

Decoding crops costs the margin and lookahead again for every piece (6.5x one whole
decode for 0.25 s pieces with the msvq codec). A codec that has an incremental decoder
(``Codec.incremental_decoder``: the msvq codec's keeps each layer's last frames and
computes every frame once) is used that way instead, with the same pieces.
"""

from __future__ import annotations

import numpy as np

from tokgen.codec.base import Codec, IncrementalDecoder


class StreamDecoder:
    def __init__(
        self,
        codec: Codec,
        level: int,
        min_frames: int = 1,
        reference: np.ndarray | None = None,
        incremental: bool = True,
    ):
        self.codec = codec
        self.incremental = incremental  # use the codec's incremental decoder, if it has one
        self._decoder: IncrementalDecoder | None = None  # made at the first piece, from ``emitted``
        self.reference = reference  # timbre reference audio (codecs that use one)
        self.level = level
        self.hop = codec.levels[level].hop
        self.margin = codec.decode_margin(level)  # context before a piece
        self.lookahead = codec.decode_lookahead(level)  # after it
        self.min_frames = min_frames  # decode at least this many new frames per step
        self.emitted = 0  # frames whose audio has been returned

    def ready(self, known_frames: int, final: bool = False) -> bool:
        """Whether ``push`` would return audio once ``known_frames`` frames are known: a
        cheap test, so that a caller hands the decode to a thread only when it has work."""
        stop = known_frames if final else known_frames - self.lookahead
        return stop - self.emitted >= (1 if final else self.min_frames)

    def push(
        self, known: np.ndarray, final: bool = False, upper: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Audio for the frames that became final now that ``known`` (every code known so
        far, from the start) is known; with ``final``, for all remaining frames. ``upper``:
        the known codes of the levels above (top first), for codecs that use all levels."""
        if not self.ready(known.shape[-1], final):
            return np.zeros(0, dtype=np.float32)
        stop = known.shape[-1] if final else known.shape[-1] - self.lookahead
        if self.incremental and self._decoder is None:
            self._decoder = self.codec.incremental_decoder(self.level, self.emitted, self.reference)
            self.incremental = self._decoder is not None
        if self._decoder is not None:
            out = self._decoder.decode([*(upper or []), known], stop, final)
            self.emitted = stop
            return out
        lo = max(0, self.emitted - self.margin)
        hi = min(known.shape[-1], stop + self.lookahead)
        if self.codec.uses_all_levels:
            lo -= lo % (self.codec.levels[0].hop // self.hop)  # whole top frames
            crops = [
                c[lo * self.hop // lv.hop : -(-hi * self.hop // lv.hop)]
                for c, lv in zip(upper or [], self.codec.levels, strict=False)
            ]
            audio = self.codec.decode_levels([*crops, known[..., lo:hi]], self.reference)
        else:
            audio = self.codec.decode(known[..., lo:hi], self.level)
        out = audio[(self.emitted - lo) * self.hop : (stop - lo) * self.hop]
        self.emitted = stop
        return out

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

An early first piece (``first_lookahead`` < ``lookahead``): what a listener waits for
first is the first piece, and its exact decode waits for the whole lookahead after it
(29 middle frames for the shipped msvq decoder: most of every level's lead window). The
first piece may instead be decoded from the codes up to ``first_lookahead`` frames after
it, the decoder's zero padding standing in for the rest: never more, so the same codes
give the same audio whatever arrived by then. Its audio past its end is kept and faded
into the (exact) second piece over ``FADE_FRAMES``, so the joint has no step; from the
end of that fade on, the pieces are exactly the whole decode again.
"""

from __future__ import annotations

import numpy as np

from tokgen.codec.base import Codec, IncrementalDecoder

FADE_FRAMES = 2  # an early first piece fades into the exact audio over this many frames


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
        self.first_lookahead = self.lookahead  # what the first piece's decode reads after it
        self._started = False  # a piece is out
        self._fade: np.ndarray | None = None  # an early first piece's audio past its end

    def ready(self, known_frames: int, final: bool = False) -> bool:
        """Whether ``push`` would return audio once ``known_frames`` frames are known: a
        cheap test, so that a caller hands the decode to a thread only when it has work."""
        return self._stop(known_frames, final) - self.emitted >= (1 if final else self.min_frames)

    def _early(self, final: bool) -> bool:
        """Whether the next piece is an early first piece (see the module docstring)."""
        return not (self._started or final) and self.first_lookahead < self.lookahead

    def _stop(self, known_frames: int, final: bool) -> int:
        if final:
            return known_frames
        if not self._early(final):
            return known_frames - self.lookahead
        return min(known_frames - self.first_lookahead, self.emitted + self.min_frames)

    def push(
        self, known: np.ndarray, final: bool = False, upper: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Audio for the frames that became final now that ``known`` (every code known so
        far, from the start) is known; with ``final``, for all remaining frames. ``upper``:
        the known codes of the levels above (top first), for codecs that use all levels."""
        if not self.ready(known.shape[-1], final):
            return np.zeros(0, dtype=np.float32)
        stop = self._stop(known.shape[-1], final)
        early = self._early(final)
        self._started = True
        if early:  # from the codes up to first_lookahead after it, whatever else is known
            audio, lo = self._crop(known[..., : stop + self.first_lookahead], upper)
            cut = (stop - lo) * self.hop
            self._fade = audio[cut : cut + FADE_FRAMES * self.hop]
            out = audio[(self.emitted - lo) * self.hop : cut]
        else:
            out = self._exact(known, stop, final, upper)
            if self._fade is not None:
                out = fade_into(self._fade, out)
                self._fade = None
        self.emitted = stop
        return out

    def _exact(self, known: np.ndarray, stop: int, final: bool, upper: list[np.ndarray] | None) -> np.ndarray:
        if self.incremental and self._decoder is None:
            self._decoder = self.codec.incremental_decoder(self.level, self.emitted, self.reference)
            self.incremental = self._decoder is not None
        if self._decoder is not None:
            return self._decoder.decode([*(upper or []), known], stop, final)
        audio, lo = self._crop(known[..., : stop + self.lookahead], upper)
        return audio[(self.emitted - lo) * self.hop : (stop - lo) * self.hop]

    def _crop(self, known: np.ndarray, upper: list[np.ndarray] | None) -> tuple[np.ndarray, int]:
        """The audio of frames ``lo ..`` the end of ``known``, decoded from a crop with the
        decoder's margin before ``emitted``; and ``lo``."""
        lo = max(0, self.emitted - self.margin)
        hi = known.shape[-1]
        if self.codec.uses_all_levels:
            lo -= lo % (self.codec.levels[0].hop // self.hop)  # whole top frames
            crops = [
                c[lo * self.hop // lv.hop : -(-hi * self.hop // lv.hop)]
                for c, lv in zip(upper or [], self.codec.levels, strict=False)
            ]
            audio = self.codec.decode_levels([*crops, known[..., lo:hi]], self.reference)
        else:
            audio = self.codec.decode(known[..., lo:hi], self.level)
        return audio, lo


def fade_into(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``after`` with its start faded in from ``before`` (the same stretch of audio decoded
    another way), linearly over their common length."""
    n = min(before.size, after.size)
    weight = (np.arange(n, dtype=np.float32) + 0.5) / n
    out = after.copy()
    out[:n] = before[:n] * (1 - weight) + after[:n] * weight
    return out

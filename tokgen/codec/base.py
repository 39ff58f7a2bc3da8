"""The Codec interface: audio <-> discrete codes at several time resolutions.

Levels are ordered top (coarsest, largest hop) to bottom (finest). Each level can be
decoded on its own, which is what lets a hierarchical prior stop at any level, and what
makes per-level reconstruction metrics meaningful.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tokgen.codec.instruments import InstrumentTable


@dataclass(frozen=True)
class LevelSpec:
    """One level of a codec."""

    hop: int  # audio samples per code frame
    codebook_size: int  # number of distinct codes
    n_codebooks: int = 1  # codes per frame (RVQ adapters); VQ-VAE levels have one

    def frames(self, num_samples: int) -> int:
        """Code frames that cover ``num_samples`` samples (the last frame may be partial)."""
        return math.ceil(num_samples / self.hop)

    def bitrate(self, sample_rate: int) -> float:
        """Bits per second of this level's codes."""
        return sample_rate / self.hop * self.n_codebooks * math.log2(self.codebook_size)


class IncrementalDecoder(Protocol):
    def decode(self, codes: list[np.ndarray], stop: int, final: bool = False) -> np.ndarray:
        """Audio from where the last call stopped (at first, the decoder's first frame)
        to frame ``stop`` of the finest level in ``codes`` (the known prefixes of the levels
        it decodes, top first, reaching the codec's ``decode_lookahead`` past ``stop``);
        with ``final``, the codes are complete and the rest of the audio is returned."""
        ...


class Codec(ABC):
    """Turns mono float audio into codes per level and back."""

    name: str
    sample_rate: int
    levels: tuple[LevelSpec, ...]

    @abstractmethod
    def encode(self, audio: np.ndarray) -> list[np.ndarray]:
        """Codes of every level, top first. Level ``l`` has shape ``(frames_l,)``, or
        ``(n_codebooks, frames_l)`` when the level has several codebooks."""

    def encode_level(self, audio: np.ndarray, level: int) -> np.ndarray:
        """Codes of one level, as ``encode(audio)[level]``. Codecs whose levels have their
        own encoders override this to run only that one."""
        return self.encode(audio)[level]

    @abstractmethod
    def decode(self, codes: np.ndarray, level: int) -> np.ndarray:
        """Audio (float32, ``frames * hop`` samples) from the codes of one level."""

    # True where levels are residuals of one another (``msvq``): audio then always comes
    # from levels 0..l together (``decode_levels``), never from one lower level alone.
    uses_all_levels: bool = False

    def decode_levels(self, codes: list[np.ndarray], reference: np.ndarray | None = None) -> np.ndarray:
        """Audio from the codes of levels 0..len(codes)-1 over one time span, the finest
        level deciding the length; ``reference`` is audio whose timbre a codec with a
        timbre encoder keeps (the prime). Codecs whose levels stand alone decode the
        finest level given."""
        level = len(codes) - 1
        return self.decode(codes[level], level)

    @abstractmethod
    def decode_margin(self, level: int) -> int:
        """Frames of codes on each side of a crop that make decoding the crop give what a
        whole decode gives there (the decoder's receptive field); streaming relies on it."""

    def decode_lookahead(self, level: int) -> int:
        """Frames after a frame that its audio depends on: how long a streaming decoder
        waits before a frame is final (at most ``decode_margin``, which also covers the
        context before a crop)."""
        return self.decode_margin(level)

    def incremental_decoder(
        self, level: int, first: int, reference: np.ndarray | None = None
    ) -> IncrementalDecoder | None:
        """A decoder of ``level`` (with the levels above, for codecs that use all levels)
        that computes each frame once as codes arrive, from frame ``first`` on; None where
        the codec has none (``StreamDecoder`` then decodes each piece from a crop)."""
        return None

    def check_level(self, level: int) -> None:
        from tokgen.errors import TokgenError

        if not 0 <= level < len(self.levels):
            raise TokgenError(
                f"level {level} does not exist; this codec has levels 0..{len(self.levels) - 1}"
            )

    def pitch_classes(self, level: int) -> np.ndarray | None:
        """(codebook size, 12): how much of each pitch class (C, C#, ..., B; each row sums
        to 1) a code of ``level`` stands for, where the level's codes are notes by
        construction (a semantic level); None where codes have no fixed pitch content."""
        return None

    def instruments(self) -> InstrumentTable | None:
        """What instrument family each code stands for, per level, where it was counted on
        a labelled corpus (``tokgen codec instruments``); None otherwise."""
        return None

    def check_codes(self, codes: np.ndarray, level: int) -> np.ndarray:
        """Validate codes for ``level`` so that bad input fails with a clear message."""
        from tokgen.errors import TokgenError

        self.check_level(level)
        spec = self.levels[level]
        arr = np.asarray(codes)
        want_ndim = 1 if spec.n_codebooks == 1 else 2
        if arr.ndim != want_ndim or (want_ndim == 2 and arr.shape[0] != spec.n_codebooks):
            shape = "(frames,)" if want_ndim == 1 else f"({spec.n_codebooks}, frames)"
            raise TokgenError(f"level {level} codes must have shape {shape}, got {arr.shape}")
        if arr.shape[-1] == 0:
            raise TokgenError(f"level {level} codes are empty")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TokgenError(f"codes must be integers, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= spec.codebook_size:
            raise TokgenError(
                f"level {level} codes must lie in [0, {spec.codebook_size - 1}], "
                f"got [{arr.min()}, {arr.max()}]"
            )
        return arr.astype(np.int64)

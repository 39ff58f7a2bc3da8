"""The audio a caller gets: a sample's new audio at the codec's rate, resampled to the rate
asked for (soxr, as it streams) and, if asked, normalised to a loudness (``tokgen.loudness``).

One path for every entry point: ``OutputStream`` takes a sample's pieces as they are
generated and gives back the output's; ``finish_audio`` is the same for a whole array. The
output always holds ``output_samples`` of the input: the resampler's start-up and tail are
trimmed or padded to the exact count, so a stream is as long as its header says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from tokgen.loudness import normalize_loudness


@dataclass(frozen=True)
class Output:
    """What is done to each sample's audio (validated at the edge, ``spec.check_output``)."""

    sample_rate: int | None = None  # None: the codec's
    loudness_lufs: float | None = None  # None: as generated

    def rate(self, codec_rate: int) -> int:
        return self.sample_rate or codec_rate


def output_samples(samples: int, from_rate: int, to_rate: int) -> int:
    """Samples at ``to_rate`` of ``samples`` at ``from_rate``: what an output holds."""
    return samples if from_rate == to_rate else round(samples * to_rate / from_rate)


class OutputStream:
    """One sample's audio pieces in (at ``codec_rate``), the output's pieces out. With a
    loudness target nothing comes out until ``finish``: integrated loudness needs all of
    the sample. ``samples``: how many input samples the sample will have, if known (the
    output is capped at their count once resampled)."""

    def __init__(self, output: Output, codec_rate: int, samples: int | None = None):
        self.output, self.codec_rate = output, codec_rate
        self.rate = output.rate(codec_rate)
        self._resampler = (
            soxr.ResampleStream(codec_rate, self.rate, 1, "float32", "HQ")
            if self.rate != codec_rate
            else None
        )
        self._cap = None if samples is None else output_samples(samples, codec_rate, self.rate)
        self._taken = 0  # input samples pushed
        self._emitted = 0  # output samples given back (or held, with a loudness target)
        self._held: list[np.ndarray] = []
        self._flushed = self._resampler is None

    def push(self, piece: np.ndarray, last: bool = False) -> np.ndarray:
        """The output for ``piece`` (possibly empty: the resampler lags a little, and a
        loudness target holds everything back until ``finish``)."""
        self._taken += piece.size
        self._flushed = self._flushed or last
        out = piece if self._resampler is None else self._resampler.resample_chunk(piece, last=last)
        if self._cap is not None:
            out = out[: max(0, self._cap - self._emitted)]
        self._emitted += out.size
        if self.output.loudness_lufs is None:
            return out
        self._held.append(out)
        return np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        """The rest of the output: the resampler's tail, padded or cut to the exact count,
        and with a loudness target the whole sample, normalised."""
        tail = np.zeros(0, np.float32) if self._flushed else self.push(np.zeros(0, np.float32), last=True)
        want = self._cap if self._cap is not None else output_samples(self._taken, self.codec_rate, self.rate)
        pad = np.zeros(max(0, want - self._emitted), np.float32)
        self._emitted += pad.size
        if self.output.loudness_lufs is None:
            return np.concatenate([tail, pad])
        whole = np.concatenate([*self._held, pad]) if self._held else pad
        self._held = []
        return normalize_loudness(whole, self.rate, self.output.loudness_lufs) if whole.size else whole


def finish_audio(audio: np.ndarray, codec_rate: int, output: Output) -> np.ndarray:
    """``audio`` (a whole sample at ``codec_rate``) as the output asks for it."""
    stream = OutputStream(output, codec_rate, audio.size)
    return np.concatenate([stream.push(audio, last=True), stream.finish()])

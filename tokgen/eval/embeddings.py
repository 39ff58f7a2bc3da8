"""Audio embeddings for distribution metrics: a frame of audio in, a vector out.

Two views, behind one interface (``Embedding``) so that others can be plugged in:

- ``AisfxEmbedding``: the pretrained CNN shipped inside the ``aisfx`` PyPI wheel (weights
  in the package: nothing is downloaded; CC-BY-4.0, trained on sound-effect libraries),
  512-d per ~2.3 s block of its 96-band log-mel input at 44.1 kHz. No standard VGGish /
  PANNs / CLAP embedding loads offline here (see shared notes); this one does, and FAD
  with it separates timbre changes.
- ``ClassicEmbedding``: no learned weights: per 1 s window, the mean and standard
  deviation of 64 log-mel bands and a 12-bin chroma profile (152-d).

Both resample to their own rate (soxr) and embed overlapping windows (hop half a window).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import soxr
import torch

from tokgen.codec.spectral import mel_filterbank


class Embedding(ABC):
    name: str
    sample_rate: int
    dim: int

    @abstractmethod
    def frames(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(n, dim) embeddings of ``audio`` (mono float), one per window."""

    def _resampled(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if sample_rate != self.sample_rate:
            audio = soxr.resample(audio, sample_rate, self.sample_rate).astype(np.float32)
        return audio


def _power_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> torch.Tensor:
    x = torch.from_numpy(audio)
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    return spec.abs() ** 2  # (bins, frames)


def _windows(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size, features) overlapping windows (hop size // 2) of (time, features)."""
    if frames.shape[0] < size:
        frames = torch.nn.functional.pad(frames, (0, 0, 0, size - frames.shape[0]))
    return frames.unfold(0, size, max(1, size // 2)).transpose(1, 2)


class ClassicEmbedding(Embedding):
    name = "classic"
    sample_rate = 16000
    dim = 64 * 2 + 12 * 2
    n_fft, hop, window_frames = 1024, 256, 62  # 62 hops of 16 ms: ~1 s

    def __init__(self) -> None:
        bins = self.n_fft // 2 + 1
        freqs = np.linspace(0, self.sample_rate / 2, bins)
        chroma = np.zeros((12, bins), np.float32)
        audible = (freqs >= 27.5) & (freqs <= 5000)  # A0 .. ~D#8: where pitch classes mean something
        pitch_class = np.round(12 * np.log2(np.maximum(freqs, 1e-6) / 440.0)).astype(int) % 12
        chroma[pitch_class[audible], np.nonzero(audible)[0]] = 1.0
        self.chroma = torch.from_numpy(chroma)

    def frames(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        power = _power_spectrogram(self._resampled(audio, sample_rate), self.n_fft, self.hop)
        log_mel = torch.log(torch.clamp(mel_filterbank(self.n_fft, 64, self.sample_rate) @ power, min=1e-8))
        chroma = self.chroma @ power
        chroma = chroma / torch.clamp(chroma.sum(0, keepdim=True), min=1e-8)  # a profile per frame
        features = torch.cat([log_mel, chroma]).T  # (time, 76)
        win = _windows(features, self.window_frames)  # (n, time, 76)
        out = torch.cat([win.mean(1), win.std(1)], dim=1)  # (n, 152)
        return out.numpy().astype(np.float64)


def _numpy_scalar_globals() -> list:
    """The globals a pickled numpy scalar needs (its constructor, written under numpy 1's
    name, and the numeric dtypes), for ``torch.load(weights_only=True)``."""
    try:
        from numpy._core.multiarray import scalar  # type: ignore[attr-defined,unused-ignore]  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar  # type: ignore[attr-defined,no-redef,unused-ignore]
    dtypes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}
    return [(scalar, "numpy.core.multiarray.scalar"), np.dtype, *sorted(dtypes, key=lambda t: t.__name__)]


class AisfxEmbedding(Embedding):
    """The aiSFX CrossNet's embedding network, with its published input front end:
    peak-normalised audio at 44.1 kHz, 96-band HTK mel (filters of unit area) of a
    2048-point STFT every 1024 samples, log10(10^4 mel + 1) scaled by 1/9.4578, blocks of
    100 frames; its output is the max over time of the mean over frequency (512-d)."""

    name = "aisfx"
    sample_rate = 44100
    dim = 512
    n_fft, hop, n_mels, block = 2048, 1024, 96, 100

    def __init__(self) -> None:
        from aisfx.inference import get_path_modelWeights
        from aisfx.models.cnn2d import EmbeddingNet

        # weights_only: the pickle may name tensors, containers and (its class table) numpy
        # scalars and dtypes, nothing that runs code
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            weights, _ = torch.load(get_path_modelWeights(), map_location="cpu", weights_only=True)
        prefix = "embedding_net."
        self.net = EmbeddingNet("max", 3, 1, 64)
        self.net.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
        self.net.eval()
        fb = mel_filterbank(self.n_fft, self.n_mels, self.sample_rate)
        self.fb = fb / torch.clamp(fb.sum(1, keepdim=True), min=1e-12)

    @torch.inference_mode()
    def frames(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = self._resampled(audio, sample_rate)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        audio = audio / peak if peak > 0 else audio
        mel = self.fb @ _power_spectrogram(audio, self.n_fft, self.hop)
        spec = (torch.log10(mel * 10000.0 + 1.0) / 9.457798957824707).T  # (time, 96)
        blocks = _windows(spec, self.block)  # (n, 100, 96)
        return self.net(blocks.float()).numpy().astype(np.float64)


EMBEDDINGS: dict[str, type[Embedding]] = {"aisfx": AisfxEmbedding, "classic": ClassicEmbedding}


def load_embedding(name: str) -> Embedding:
    if name not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {name!r}; use one of {', '.join(EMBEDDINGS)}")
    return EMBEDDINGS[name]()

"""Spectral representations shared by the training loss and the evaluation metrics:
STFT magnitudes and log-mel spectrograms (a small mel filterbank, so no torchaudio or
librosa is needed)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

# (n_fft, n_mels) of the multi-scale mel distance: used as a training loss and as a metric.
MEL_SCALES = ((512, 64), (1024, 80), (2048, 128))
LOG_FLOOR = 1e-5


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int | None = None) -> torch.Tensor:
    """|STFT| of (B, T) or (T,) audio with a Hann window; (..., n_fft // 2 + 1, frames)."""
    hop = hop or n_fft // 4
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True, center=True)
    return spec.abs()


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def filter_cache(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``lru_cache`` for filter banks, built outside inference mode: one cached tensor
    serves encoding (inference mode) and training (autograd refuses an inference tensor),
    whichever asks first."""
    cached = functools.lru_cache(maxsize=16)(fn)

    @functools.wraps(fn)
    def build(*args: int) -> torch.Tensor:
        with torch.inference_mode(False):
            return cached(*args)

    return build


@filter_cache
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-style mel filters, (n_mels, n_fft // 2 + 1)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _mel_to_hz(
        torch.linspace(
            0.0, float(_hz_to_mel(torch.tensor(sample_rate / 2.0))), n_mels + 2, dtype=torch.float64
        )
    )
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def log_mel_from_magnitude(mag: torch.Tensor, sample_rate: int, n_mels: int) -> torch.Tensor:
    n_fft = 2 * (mag.shape[-2] - 1)
    fb = mel_filterbank(n_fft, n_mels, sample_rate).to(mag.device, mag.dtype)
    return torch.log(torch.clamp(fb @ mag, min=LOG_FLOOR))


def mel_l1(mx: torch.Tensor, my: torch.Tensor, sample_rate: int, n_mels: int) -> torch.Tensor:
    """Mean |log-mel(x) - log-mel(y)| per example, from STFT magnitudes (..., bins, frames)."""
    diff = log_mel_from_magnitude(mx, sample_rate, n_mels) - log_mel_from_magnitude(my, sample_rate, n_mels)
    return diff.abs().mean(dim=(-2, -1))


@filter_cache
def semitone_filterbank(
    n_fft: int, sample_rate: int, low_midi: int = 24, n_semitones: int = 84
) -> torch.Tensor:
    """Triangular filters one semitone wide, centred on MIDI notes ``low_midi`` upward,
    (n_semitones, n_fft // 2 + 1). Each filter spans its neighbours' centres; filters
    narrower than one FFT bin fall back to the nearest bin, so none is empty."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    midi = torch.arange(low_midi - 1, low_midi + n_semitones + 1, dtype=torch.float64)
    edges = 440.0 * 2 ** ((midi - 69) / 12)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    nearest = (freqs[None] - center).abs().argmin(dim=1)
    empty = fb.sum(dim=1) == 0
    fb[empty, nearest[empty]] = 1.0
    return fb.float()


def log_semitones(mag: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Log energy per semitone (84 bands from C1) from STFT magnitudes (..., bins, frames):
    the pitch content that chroma and key are computed from."""
    n_fft = 2 * (mag.shape[-2] - 1)
    fb = semitone_filterbank(n_fft, sample_rate).to(mag.device, mag.dtype)
    return torch.log(torch.clamp(fb @ mag, min=LOG_FLOOR))

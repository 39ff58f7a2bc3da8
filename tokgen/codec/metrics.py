"""Reconstruction and codebook metrics reported by ``tokgen codec eval``.

- spectral convergence (dB): 20*log10(|| |S| - |S_hat| ||_F / || |S| ||_F), STFT n_fft 1024,
  as Jukebox reports it (lower is better; -6 dB means half the magnitude error);
- SI-SDR (dB): scale-invariant signal-to-distortion ratio (higher is better; phase-sensitive,
  so a codec trained mostly on magnitudes scores low here even when it sounds right);
- multi-scale mel distance: mean L1 between log-mel spectrograms at several FFT sizes;
- perplexity and dead-code fraction of the codes used on the evaluation set.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tokgen.codec.spectral import MEL_SCALES, mel_l1, stft_magnitude

SC_FFT = 1024


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(x.size, y.size)
    return torch.from_numpy(np.asarray(x[:n], np.float32)), torch.from_numpy(np.asarray(y[:n], np.float32))


def spectral_convergence_db(ref: np.ndarray, est: np.ndarray) -> float:
    x, y = _pair(ref, est)
    mx, my = stft_magnitude(x, SC_FFT), stft_magnitude(y, SC_FFT)
    ratio = torch.linalg.vector_norm(mx - my) / torch.linalg.vector_norm(mx).clamp_min(1e-12)
    return float(20 * torch.log10(ratio.clamp_min(1e-12)))


def si_sdr_db(ref: np.ndarray, est: np.ndarray) -> float:
    x, y = _pair(ref, est)
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    target = (y @ x) / (x @ x).clamp_min(1e-12) * x
    noise = y - target
    return float(10 * torch.log10((target @ target).clamp_min(1e-12) / (noise @ noise).clamp_min(1e-12)))


def mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    x, y = _pair(ref, est)
    return float(
        np.mean([mel_l1(stft_magnitude(x, n), stft_magnitude(y, n), sample_rate, m) for n, m in MEL_SCALES])
    )


def codebook_usage(codes: np.ndarray, codebook_size: int) -> tuple[float, float]:
    """(perplexity, dead-code fraction) of a set of codes; perplexity equals the codebook
    size when every code is used equally often."""
    counts = np.bincount(np.asarray(codes).ravel(), minlength=codebook_size).astype(np.float64)
    probs = counts / max(counts.sum(), 1.0)
    nz = probs[probs > 0]
    perplexity = math.exp(-float(np.sum(nz * np.log(nz))))
    return perplexity, float(np.mean(counts == 0))

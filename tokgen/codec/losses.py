"""Training losses of the VQ-VAE.

The multi-scale spectral loss (several STFT sizes; spectral convergence + log-magnitude
L1, as in Parallel WaveGAN) carries most of the signal: it is what Jukebox adds to the
waveform L2 to make reconstructions sound right, and its spectral-convergence term is the
metric we report. A small waveform L2 term keeps phase roughly aligned.
"""

from __future__ import annotations

import torch

from tokgen.codec.spectral import stft_magnitude

FFT_SIZES = (2048, 1024, 512, 256, 128)


def multiscale_spectral_loss(
    x: torch.Tensor, y: torch.Tensor, fft_sizes: tuple[int, ...] = FFT_SIZES
) -> torch.Tensor:
    """Mean over STFT sizes of SC(x, y) + L1(log|X|, log|Y|); x, y are (B, T)."""
    total = x.new_zeros(())
    for n_fft in fft_sizes:
        mx, my = stft_magnitude(x, n_fft), stft_magnitude(y, n_fft)
        sc = torch.linalg.vector_norm(mx - my, dim=(-2, -1)) / (
            torch.linalg.vector_norm(mx, dim=(-2, -1)) + 1e-7
        )
        log_l1 = (torch.log(mx + 1e-5) - torch.log(my + 1e-5)).abs().mean(dim=(-2, -1))
        total = total + (sc + log_l1).mean()
    return total / len(fft_sizes)


def waveform_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Waveform MSE normalised by the signal power of each example."""
    return (((x - y) ** 2).mean(-1) / (x.pow(2).mean(-1) + 1e-6)).mean()

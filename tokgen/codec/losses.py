"""Training losses of the VQ-VAE.

Reconstruction is judged in the frequency domain at several STFT sizes: spectral
convergence (the metric Jukebox reports), log-magnitude L1, and log-mel L1 (the mel
distance we report, the main loss of DAC and audiocraft). The log terms matter for quiet
and high-frequency bins, where a decoder otherwise leaves artefacts that linear
magnitudes hardly see. A small waveform term keeps phase roughly aligned (Jukebox's L2).
"""

from __future__ import annotations

import torch

from tokgen.codec.spectral import LOG_FLOOR, MEL_SCALES, log_semitones, mel_l1, stft_magnitude

FFT_SIZES = (2048, 1024, 512, 256, 128)


def spectral_losses(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """Batch means of SC, log-magnitude L1 (over ``FFT_SIZES``) and log-mel L1 (over
    ``MEL_SCALES``) between x and y, both (B, T)."""
    mels = dict(MEL_SCALES)
    sc, log_mag, mel = [], [], []
    for n_fft in FFT_SIZES:
        mx, my = stft_magnitude(x, n_fft), stft_magnitude(y, n_fft)
        norm = torch.linalg.vector_norm(mx, dim=(-2, -1)) + 1e-7
        sc.append((torch.linalg.vector_norm(mx - my, dim=(-2, -1)) / norm).mean())
        log_mag.append((torch.log(mx + LOG_FLOOR) - torch.log(my + LOG_FLOOR)).abs().mean())
        if n_fft in mels:
            mel.append(mel_l1(mx, my, sample_rate, mels[n_fft]).mean())
    return {
        "sc": torch.stack(sc).mean(),
        "log_mag": torch.stack(log_mag).mean(),
        "mel": torch.stack(mel).mean(),
    }


def waveform_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Waveform MSE normalised by the signal power of each example."""
    return (((x - y) ** 2).mean(-1) / (x.pow(2).mean(-1) + 1e-6)).mean()


# DAC's multi-scale mel loss: windows from 2 ms to 128 ms at 16 kHz, so attacks (short
# windows) and pitch (long windows) are both judged.
DAC_MEL_SCALES = ((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320))


def multiscale_losses(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """Losses of the multi-scale codec between x and y (B, T): log-mel L1 over
    ``DAC_MEL_SCALES``, spectral convergence and log-magnitude L1 at three sizes, and the
    L1 of the log energy per semitone (pitch) at 2048 points."""
    mel, sc, log_mag = [], [], []
    mags = {}
    for n_fft, n_mels in DAC_MEL_SCALES:
        mx, my = stft_magnitude(x, n_fft), stft_magnitude(y, n_fft)
        mags[n_fft] = (mx, my)
        mel.append(mel_l1(mx, my, sample_rate, n_mels).mean())
        if n_fft in (2048, 512, 128):
            norm = torch.linalg.vector_norm(mx, dim=(-2, -1)) + 1e-7
            sc.append((torch.linalg.vector_norm(mx - my, dim=(-2, -1)) / norm).mean())
            log_mag.append((torch.log(mx + LOG_FLOOR) - torch.log(my + LOG_FLOOR)).abs().mean())
    mx, my = mags[2048]
    pitch = (log_semitones(mx, sample_rate) - log_semitones(my, sample_rate)).abs().mean()
    return {
        "mel": torch.stack(mel).mean(),
        "sc": torch.stack(sc).mean(),
        "log_mag": torch.stack(log_mag).mean(),
        "pitch": pitch,
    }

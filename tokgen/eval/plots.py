"""Spectrograms of a prime and its continuations, one row per system, for a person to look
at (``tokgen eval continuation --plots DIR``): the prime on the left, a vertical line where
the continuation starts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from tokgen.codec.spectral import stft_magnitude

N_FFT, HOP = 1024, 256
COLOURS = 128  # a palette PNG: a third of the size of a full-colour one, no visible loss


def spectrogram_db(audio: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """(bins, frames) STFT magnitude in dB relative to full scale, floored at -100 dB."""
    mag = stft_magnitude(torch.from_numpy(np.asarray(audio, np.float32)), n_fft, hop).numpy()
    return 20 * np.log10(np.maximum(mag / (n_fft / 4), 1e-5))


def plot_continuation(
    path: Path,
    prime: np.ndarray,
    rows: list[tuple[str, np.ndarray]],
    sample_rate: int,
    title: str = "",
) -> Path:
    """Write a PNG with one spectrogram per (label, continuation) of ``rows``, each shown
    after ``prime``; the same colour scale in every row (128 colours). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    boundary = prime.size / sample_rate
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(10, 1.9 * len(rows) + 0.6), sharex=True, squeeze=False, layout="constrained"
    )
    image = None
    for ax, (label, clip) in zip(axes[:, 0], rows, strict=True):
        audio = np.concatenate([prime, clip]).astype(np.float32)
        spec = spectrogram_db(audio)
        extent = (0.0, audio.size / sample_rate, 0.0, sample_rate / 2000)
        image = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, vmin=-100, vmax=0, cmap="magma")
        ax.axvline(boundary, color="cyan", linewidth=1.5)
        ax.set_ylabel("kHz")
        ax.set_title(f"{label}: prime | continuation", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    if title:
        fig.suptitle(title, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.6)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    from PIL import Image  # matplotlib's own dependency

    Image.open(buffer).convert("RGB").quantize(colors=COLOURS).save(path, optimize=True)
    return path

"""Two failure signs of a generated code sequence, as pure functions.

- Seams: the upsamplers split what they generate into segments sampled side by side; a
  segment that starts without context of its own level can click or change timbre
  abruptly at its first frame. ``seam_flux_ratio`` compares the log-mel spectral flux
  (the mean absolute frame-to-frame change, 16 ms frames) within one frame of the seams
  with the flux everywhere else: about 1 where seams do not show, *if the seams are not on
  the music's beat*. They often are: segments are whole seconds (or half seconds) from the
  continuation's start, and the corpus's tunes mostly play at 120 bpm from a cut on a
  beat, so the real continuations have 1.6-1.9x the flux at such positions (onsets) and
  about 1.0 at positions off that grid (every 0.3 or 0.7 s; measured on the evaluation's
  128 held-out clips). ``seam_flux_excess`` divides the ratio by the real continuations'
  ratio at the same positions: the seams' share beyond the music's meter.
- Loops: a prior stuck in a loop uses few distinct codes. ``distinct_code_ratio`` is the
  number of distinct codes in each generated clip over that of the real continuation of
  the same prime, averaged over clips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tokgen.codec.spectral import log_mel_from_magnitude, stft_magnitude

FLUX_N_FFT = 1024
FLUX_HOP = 256  # 16 ms at 16 kHz
FLUX_MELS = 80


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(80 bands, frames) log-mel of ``audio`` (1024-point STFT, hop 256)."""
    mag = stft_magnitude(torch.from_numpy(np.asarray(audio, np.float32)), FLUX_N_FFT, FLUX_HOP)
    return log_mel_from_magnitude(mag, sample_rate, FLUX_MELS).numpy()


def spectral_flux(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per frame step: the mean over bands of |log-mel change| (frames - 1 values)."""
    return np.abs(np.diff(log_mel(audio, sample_rate), axis=1)).mean(axis=0)


def seam_mask(frames: int, seams: Sequence[int], hop: int = FLUX_HOP) -> np.ndarray:
    """Flux steps within one frame of a seam (sample position) among ``frames`` steps."""
    near = np.zeros(frames, dtype=bool)
    for s in seams:
        f = int(s) // hop
        near[max(0, f - 1) : max(0, f + 2)] = True
    return near


def seam_positions(samples: int, segment_samples: int | None, offset: int = 0) -> list[int]:
    """Where segments start inside a clip of ``samples`` samples whose first segment starts
    ``offset`` samples before the clip: every ``segment_samples`` after that start."""
    if not segment_samples:
        return []
    first = -offset + segment_samples
    return [s for s in range(first, samples, segment_samples) if s > 0]


def seam_flux_ratio(
    clips: Sequence[np.ndarray], sample_rate: int, seams: Sequence[Sequence[int]]
) -> float | None:
    """Mean flux near the seams / mean flux elsewhere, pooled over ``clips``; ``seams``
    holds the seam positions (samples) of each clip. None when no clip has a seam (one
    segment) or nothing lies elsewhere."""
    if len(seams) != len(clips):
        raise ValueError(f"need the seams of every clip, got {len(seams)} lists for {len(clips)} clips")
    near_sum = far_sum = 0.0
    near_n = far_n = 0
    for clip, positions in zip(clips, seams, strict=True):
        flux = spectral_flux(clip, sample_rate)
        near = seam_mask(flux.size, positions)
        near_sum, near_n = near_sum + float(flux[near].sum()), near_n + int(near.sum())
        far_sum, far_n = far_sum + float(flux[~near].sum()), far_n + int((~near).sum())
    if near_n == 0 or far_n == 0 or far_sum == 0:
        return None
    return (near_sum / near_n) / (far_sum / far_n)


def distinct_codes(codes: np.ndarray) -> int:
    """Distinct codes of one level (a frame of several codebooks counts as one tuple)."""
    arr = np.asarray(codes)
    return int(len(np.unique(arr.T, axis=0)) if arr.ndim == 2 else len(np.unique(arr)))


def distinct_code_ratio(generated: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> float:
    """Mean over clips of distinct generated codes / distinct real codes (same prime)."""
    if len(generated) != len(real) or not real:
        raise ValueError(f"need one real clip per generated one, got {len(generated)} and {len(real)}")
    return float(
        np.mean([distinct_codes(g) / max(1, distinct_codes(r)) for g, r in zip(generated, real, strict=True)])
    )


def seam_flux_excess(ratio: float | None, control: float | None) -> float | None:
    """A clip set's ``seam_flux_ratio`` over ``control``, that of the real continuations of
    the same primes at the same seams: about 1 where the seams add nothing to what the
    music does at those positions. None when either ratio is undefined."""
    return None if ratio is None or not control else ratio / control

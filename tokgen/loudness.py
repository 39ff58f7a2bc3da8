"""Integrated loudness (ITU-R BS.1770-4, LUFS) and loudness normalisation that never clips.

Measured as the standard says: K-weighting (a high-shelf pre-filter, then the RLB
high-pass) with the standard's own coefficients at 48 kHz (other rates are resampled to it
first, with soxr), the mean square over 400 ms blocks overlapping by 75%, an absolute gate
at -70 LUFS, then a relative gate 10 LU below the loudness of the blocks that passed it.

pyloudnorm does the same, but needs scipy (about 100 MB installed) for two biquad filters.
Here the two filters run as one FIR of their impulse response, by FFT: exact to float64
precision, since the slowest pole (the RLB's, radius 0.995) decays below 1e-17 within the
8192 taps kept.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from tokgen.audio import resample

log = logging.getLogger(__name__)

RATE = 48000  # the rate of the standard's coefficients
# BS.1770-4, tables 1 and 2: (b0, b1, b2), (a0, a1, a2) of each stage at 48 kHz.
PRE_FILTER = (
    (1.53512485958697, -2.69169618940638, 1.19839281085285),
    (1.0, -1.69065929318241, 0.73248077421585),
)
RLB_FILTER = ((1.0, -2.0, 1.0), (1.0, -1.99004745483398, 0.99007225036621))
TAPS = 8192
BLOCK_SECONDS = 0.4
BLOCK_STEP_SECONDS = 0.1  # 75% overlap
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
# Normalised audio keeps its sample peak at or below this: 1 dB of room for the peaks
# between samples that resampling or a lossy encoding brings out.
PEAK_CEILING_DBFS = -1.0


def _biquad(x: np.ndarray, b: tuple[float, ...], a: tuple[float, ...]) -> np.ndarray:
    """Direct form I, sample by sample (only ever run over the TAPS of an impulse)."""
    y = np.zeros_like(x)
    x1 = x2 = y1 = y2 = 0.0
    for n, v in enumerate(x):
        y[n] = b[0] * v + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
        x1, x2, y1, y2 = v, x1, y[n], y1
    return y


@functools.cache
def k_weighting() -> np.ndarray:
    """The impulse response of the K-weighting filter at 48 kHz (both stages)."""
    impulse = np.zeros(TAPS)
    impulse[0] = 1.0
    return _biquad(_biquad(impulse, *PRE_FILTER), *RLB_FILTER)


def _fir(x: np.ndarray, h: np.ndarray, n_fft: int = 1 << 17) -> np.ndarray:
    """``x`` filtered by ``h`` (overlap-add FFT convolution), as long as ``x``."""
    step = n_fft - h.size + 1
    spectrum = np.fft.rfft(h, n_fft)
    y = np.zeros(x.size + h.size - 1)
    for start in range(0, x.size, step):
        part = x[start : start + step]
        n = part.size + h.size - 1
        y[start : start + n] += np.fft.irfft(np.fft.rfft(part, n_fft) * spectrum, n_fft)[:n]
    return y[: x.size]


def _lufs(mean_square: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(mean_square)


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of mono ``audio`` in LUFS; -inf where every block is below the
    absolute gate (silence). Audio shorter than one 400 ms block is measured as one block."""
    x = resample(audio, sample_rate, RATE).astype(np.float64)
    weighted = _fir(x, k_weighting())
    size, step = round(BLOCK_SECONDS * RATE), round(BLOCK_STEP_SECONDS * RATE)
    if weighted.size < size:
        return float(_lufs(np.mean(weighted**2))) if weighted.size else float("-inf")
    energy = np.concatenate([[0.0], np.cumsum(weighted**2)])
    starts = np.arange(0, weighted.size - size + 1, step)
    blocks = (energy[starts + size] - energy[starts]) / size
    loud = blocks[_lufs(blocks) > ABSOLUTE_GATE_LUFS]
    if not loud.size:
        return float("-inf")
    relative = _lufs(np.mean(loud)) + RELATIVE_GATE_LU
    gated = loud[_lufs(loud) > relative]
    return float(_lufs(np.mean(gated)))


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float) -> np.ndarray:
    """``audio`` scaled to ``target_lufs`` integrated loudness, never clipping: where that
    gain would take the sample peak above ``PEAK_CEILING_DBFS``, the gain is reduced to
    meet the ceiling instead (no limiter: the dynamics stay as sampled, the result is then
    quieter than the target, and a log line says so). Silence is returned as it is."""
    measured = integrated_loudness(audio, sample_rate)
    if not np.isfinite(measured):
        return audio
    gain = 10 ** ((target_lufs - measured) / 20)
    peak = float(np.max(np.abs(audio)))
    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    if peak * gain > ceiling:
        gain = ceiling / peak
        log.info(
            "loudness target %.1f LUFS would clip: reached %.1f LUFS with the peak at %.1f dBFS",
            target_lufs,
            measured + 20 * np.log10(gain),
            PEAK_CEILING_DBFS,
        )
    return (audio * gain).astype(np.float32)

"""Does a clip keep its prime's key? Pitch-class (chroma) profiles and their correlation.

A clip's profile is the STFT magnitude (4096 points, Hann, hop 1024) of every bin between
50 Hz and 4 kHz, summed over time and folded into the 12 pitch classes (C = 0) that the
bin's centre frequency rounds to, normalised to sum 1. At 16 kHz a bin is 3.9 Hz wide:
finer than a semitone from about 65 Hz up, so the bass notes count too. Two clips in
the same key share their most used pitch classes, so their profiles correlate (Pearson)
positively; a transposition by a tritone or a random pitch content does not.
"""

from __future__ import annotations

import numpy as np

N_FFT = 4096
HOP = 1024
FMIN, FMAX = 50.0, 4000.0
C0_HZ = 440.0 * 2 ** (-57 / 12)  # C0: 57 semitones below A4


def _fold(sample_rate: int, n_fft: int, fmin: float, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """(bins kept, their pitch class) of an ``n_fft``-point STFT."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    keep = np.nonzero((freqs >= fmin) & (freqs <= min(fmax, sample_rate / 2)))[0]
    classes = np.round(12 * np.log2(freqs[keep] / C0_HZ)).astype(np.int64) % 12
    return keep, classes


def pitch_class_profile(
    audio: np.ndarray,
    sample_rate: int,
    n_fft: int = N_FFT,
    hop: int = HOP,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """12 weights (C, C#, ..., B) summing to 1; all zeros for silence."""
    x = np.asarray(audio, np.float64).ravel()
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    starts = np.arange(0, x.size - n_fft + 1, hop)
    frames = x[starts[:, None] + np.arange(n_fft)[None, :]] * np.hanning(n_fft)[None, :]
    magnitude = np.abs(np.fft.rfft(frames, axis=1)).sum(0)
    keep, classes = _fold(sample_rate, n_fft, fmin, fmax)
    profile = np.bincount(classes, weights=magnitude[keep], minlength=12)
    total = profile.sum()
    return profile / total if total > 0 else profile


def profile_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two profiles; 0 when either is flat (silence, white noise
    folds to nearly flat but not exactly), where a correlation is undefined."""
    a, b = np.asarray(a, np.float64) - np.mean(a), np.asarray(b, np.float64) - np.mean(b)
    norm = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / norm) if norm > 1e-20 else 0.0


def key_consistency(clips: list[np.ndarray], primes: list[np.ndarray], sample_rate: int) -> float:
    """Mean correlation of each clip's pitch-class profile with its prime's."""
    if len(clips) != len(primes) or not clips:
        raise ValueError(f"need one prime per clip, got {len(clips)} clips and {len(primes)} primes")
    return float(
        np.mean(
            [
                profile_correlation(pitch_class_profile(c, sample_rate), pitch_class_profile(p, sample_rate))
                for c, p in zip(clips, primes, strict=True)
            ]
        )
    )


def clipwise_correlation(
    reference: np.ndarray, other: np.ndarray, sample_rate: int, clip_seconds: float = 5.0
) -> float:
    """Mean profile correlation of ``other`` with ``reference`` (e.g. a reconstruction with
    its input) over aligned clips of ``clip_seconds``: the clips a continuation's key is
    judged on, rather than a whole piece whose profile is the piece's key alone. A tail
    shorter than half a clip is left out unless it is all there is."""
    size = max(1, round(clip_seconds * sample_rate))
    length = min(reference.size, other.size)
    starts = [s for s in range(0, length, size) if length - s >= size // 2] or [0]
    return float(
        np.mean(
            [
                profile_correlation(
                    pitch_class_profile(reference[s : s + size], sample_rate),
                    pitch_class_profile(other[s : s + size], sample_rate),
                )
                for s in starts
            ]
        )
    )


def frame_pitch_classes(
    audio: np.ndarray, sample_rate: int, hop: int, n_fft: int = 2048, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """(frames, 12): the pitch-class profile of every ``hop`` samples (frame k centred on
    sample k x hop, as a codec's frames are), each row summing to 1 (all zeros where silent)."""
    x = np.asarray(audio, np.float64).ravel()
    frames = x.size // hop
    padded = np.pad(x, (n_fft // 2, n_fft // 2 + n_fft))
    keep, classes = _fold(sample_rate, n_fft, fmin, fmax)
    fold = np.zeros((keep.size, 12))
    fold[np.arange(keep.size), classes] = 1.0
    window = np.hanning(n_fft)
    out = np.zeros((frames, 12))
    for start in range(0, frames, 512):  # bounded memory for long files
        idx = np.arange(start, min(frames, start + 512)) * hop
        spectra = np.abs(np.fft.rfft(padded[idx[:, None] + np.arange(n_fft)] * window, axis=1))
        out[start : start + idx.size] = spectra[:, keep] @ fold
    totals = out.sum(1, keepdims=True)
    return np.divide(out, totals, out=np.zeros_like(out), where=totals > 0)


class CodePitchTable:
    """Accumulates, per code of one level, the pitch-class profiles of the audio frames
    where that code occurs; ``table()`` is their mean (``Codec.pitch_classes`` of a level
    whose codes are not notes by construction). Codes never seen get a flat row, which
    correlates with nothing."""

    def __init__(self, codebook_size: int):
        self.sums = np.zeros((codebook_size, 12))
        self.counts = np.zeros(codebook_size)

    def add(self, codes: np.ndarray, profiles: np.ndarray) -> None:
        n = min(codes.size, len(profiles))
        sounding = profiles[:n].sum(1) > 0
        np.add.at(self.sums, codes[:n][sounding], profiles[:n][sounding])
        np.add.at(self.counts, codes[:n][sounding], 1)

    def table(self) -> np.ndarray:
        seen = self.counts > 0
        out = np.full_like(self.sums, 1.0 / 12)
        out[seen] = self.sums[seen] / self.counts[seen, None]
        return out

"""Audio I/O at the edges: read any WAV/FLAC/OGG file as mono float32 at a target rate.

soundfile (libsndfile) reads and writes, soxr resamples. Everything inside tokgen works on
1-D float32 numpy arrays at the codec's sample rate; this module is the only place that
knows about files, channels and formats.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tokgen.errors import AudioError

SUPPORTED_FORMATS = ("WAV", "FLAC", "OGG")
_EXTENSIONS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
# Samples with a peak below this (about -90 dBFS) are treated as digital silence.
SILENCE_PEAK = 3e-5


def _open(source: str | Path | bytes) -> sf.SoundFile:
    if not isinstance(source, bytes):
        if not Path(source).exists():
            raise AudioError(f"audio file not found: {source}")
        if Path(source).is_dir():
            raise AudioError(f"expected an audio file, got a directory: {source}")
    try:
        return sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        name = "audio bytes" if isinstance(source, bytes) else str(source)
        raise AudioError(
            f"cannot read {name}: not a valid {'/'.join(SUPPORTED_FORMATS)} file ({exc})"
        ) from exc


def load_audio(
    source: str | Path | bytes,
    sample_rate: int,
    *,
    max_seconds: float | None = None,
    allow_silent: bool = False,
) -> np.ndarray:
    """Read ``source`` (a path or encoded bytes), mix to mono and resample to ``sample_rate``.

    Raises ``AudioError`` for a missing, corrupt, unsupported, empty, over-long or
    (unless ``allow_silent``) silent file, so callers never see a libsndfile traceback.
    """
    with _open(source) as f:
        if f.format not in SUPPORTED_FORMATS:
            raise AudioError(
                f"unsupported audio format {f.format}; use one of {', '.join(SUPPORTED_FORMATS)}"
            )
        if max_seconds is not None and f.frames > max_seconds * f.samplerate:
            raise AudioError(f"audio is {f.frames / f.samplerate:.1f} s long; the limit is {max_seconds:g} s")
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"audio data is truncated or corrupt: {exc}") from exc
        rate = f.samplerate
    if data.shape[0] == 0:
        raise AudioError("audio is empty (0 samples)")
    mono = data.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise AudioError("audio contains NaN or infinite samples")
    if not allow_silent and float(np.max(np.abs(mono))) < SILENCE_PEAK:
        raise AudioError("audio is silent (peak below -90 dBFS); nothing to encode")
    return resample(mono, rate, sample_rate)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample 1-D float audio with soxr (high quality); a no-op when the rates match."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return audio
    return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def check_mono(audio: np.ndarray) -> np.ndarray:
    """Validate an in-memory signal: 1-D, finite, non-empty float audio."""
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise AudioError(f"expected mono audio of shape (samples,), got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError("audio is empty (0 samples)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"expected float audio in [-1, 1], got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise AudioError("audio contains NaN or infinite samples")
    return arr.astype(np.float32, copy=False)


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono audio; the format follows the extension (.wav, .flac or .ogg)."""
    path = Path(path)
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"cannot write {path.name}: use a .wav, .flac or .ogg extension")
    audio = check_mono(audio)
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype)

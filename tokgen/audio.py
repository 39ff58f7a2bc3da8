"""Audio I/O at the edges: read any WAV/FLAC/OGG file as mono float32 at a target rate.

soundfile (libsndfile) reads and writes, soxr resamples. Everything inside tokgen works on
1-D float32 numpy arrays at the codec's sample rate; this module is the only place that
knows about files, channels and formats.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tokgen.errors import AudioError

SUPPORTED_FORMATS = ("WAV", "FLAC", "OGG", "MP3")  # OGG holds Vorbis or Opus
# libsndfile's names for what it reads as those: WAVEX is WAVE_FORMAT_EXTENSIBLE, which
# common tools write for 24-bit and multichannel WAV.
_READABLE = {"WAV", "WAVEX", "FLAC", "OGG", "MP3"}
# What a file's extension writes: (libsndfile format, subtype). Opus takes 8, 12, 16, 24
# or 48 kHz, which covers tokgen's codecs (16 kHz).
OUTPUT_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
# Samples with a peak below this (about -90 dBFS) are treated as digital silence.
SILENCE_PEAK = 3e-5
# Bounds checked from the header, before anything is decoded (issue 17: an 82 KiB FLAC of
# 15 s at 655,350 Hz x 8 channels decodes to 300 MiB). The decode itself is a block at a
# time, mixed to mono and resampled as it goes, so what a file holds in memory is its
# output at the target rate (4 bytes a sample) plus one block, whatever its rate and
# channels.
MAX_SAMPLE_RATE = 384_000  # the highest rate of common recording hardware (DXD is 352.8 kHz)
MAX_CHANNELS = 8  # 7.1 surround
MAX_DECODED_BYTES = 256 << 20  # frames x channels x 4 bytes (float32): 60 s of 384 kHz stereo
_BLOCK_FRAMES = 1 << 15  # frames decoded at a time: at most 1 MiB at 8 channels


def _reason(exc: Exception) -> str:
    """libsndfile's own words, without soundfile's "Error opening <_io.BytesIO object at
    0x...>: " (an object's repr says nothing to a caller and leaks an address)."""
    text = getattr(exc, "error_string", None)
    return text if isinstance(text, str) and text else str(exc).split(": ", 1)[-1]


def _open(source: str | Path | bytes) -> sf.SoundFile:
    if not isinstance(source, bytes):
        if not Path(source).exists():
            raise AudioError(f"audio file not found: {source}")
        if Path(source).is_dir():
            raise AudioError(f"expected an audio file, got a directory: {source}")
    try:
        return sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        name = "the uploaded audio" if isinstance(source, bytes) else str(source)
        raise AudioError(
            f"cannot read {name}: not a valid {'/'.join(SUPPORTED_FORMATS)} file ({_reason(exc)})"
        ) from exc


def _check_header(f: sf.SoundFile, max_seconds: float | None, max_decoded_bytes: int | None) -> int:
    """Refuse what would be too big to decode, from the header alone; the number of frames
    to decode."""
    if f.format not in _READABLE:
        raise AudioError(f"unsupported audio format {f.format}; use one of {', '.join(SUPPORTED_FORMATS)}")
    rate, channels, frames = f.samplerate, f.channels, f.frames
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"audio sample rate {rate} Hz is not supported; at most {MAX_SAMPLE_RATE} Hz")
    if not 0 < channels <= MAX_CHANNELS:
        raise AudioError(f"audio with {channels} channels is not supported; at most {MAX_CHANNELS}")
    if max_seconds is not None and frames > max_seconds * rate:
        raise AudioError(f"audio is {frames / rate:.1f} s long; the limit is {max_seconds:g} s")
    decoded = frames * channels * 4
    if max_decoded_bytes is not None and decoded > max_decoded_bytes:
        raise AudioError(
            f"audio decodes to {decoded / 2**20:.0f} MiB ({frames / rate:.1f} s at {rate} Hz, "
            f"{channels} channels); the limit is {max_decoded_bytes / 2**20:g} MiB"
        )
    return frames


def load_audio(
    source: str | Path | bytes,
    sample_rate: int,
    *,
    max_seconds: float | None = None,
    allow_silent: bool = False,
    max_decoded_bytes: int | None = MAX_DECODED_BYTES,
    tail_seconds: float | None = None,
) -> np.ndarray:
    """Read ``source`` (a path or encoded bytes), mix to mono and resample to ``sample_rate``.

    The header is checked before anything is decoded: a supported format, a rate of at most
    ``MAX_SAMPLE_RATE``, at most ``MAX_CHANNELS`` channels, at most ``max_seconds`` and at
    most ``max_decoded_bytes`` once decoded (frames x channels x 4). Then only the frames
    the header declares are decoded, a block at a time (a header that understates its
    length cannot make us read more).

    ``tail_seconds``: decode only (about) the last that many seconds, where the file can
    seek; the result still spans the whole file, zeros before the tail. A streamed
    continuation reads only the end of its prime (what the priors see): a long prime then
    costs what a short one does. The tail starts on an input frame that maps to a whole
    output sample, so its samples are the whole decode's, up to the resampler's start-up
    (callers ask for a margin more than they use).

    Raises ``AudioError`` for a missing, corrupt, unsupported, empty, over-long, oversized or
    (unless ``allow_silent``) silent file, so callers never see a libsndfile traceback.
    """
    with _open(source) as f:
        frames = _check_header(f, max_seconds, max_decoded_bytes)
        rate = f.samplerate
        stream = None if rate == sample_rate else soxr.ResampleStream(rate, sample_rate, 1, "float32", "HQ")
        parts: list[np.ndarray] = []
        peak, read = 0.0, 0
        skip = _tail_start(frames, rate, sample_rate, tail_seconds) if f.seekable() else 0
        if skip:
            try:
                f.seek(skip)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"audio data is truncated or corrupt: {_reason(exc)}") from exc
            read = skip
            parts.append(np.zeros(skip * sample_rate // rate, np.float32))
        while True:
            want = min(_BLOCK_FRAMES, frames - read)
            try:
                block = f.read(want, dtype="float32", always_2d=True) if want > 0 else None
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"audio data is truncated or corrupt: {_reason(exc)}") from exc
            n = 0 if block is None else block.shape[0]
            read += n
            last = n < want or read >= frames
            mono = block.mean(axis=1) if block is not None else np.zeros(0, np.float32)
            if not np.all(np.isfinite(mono)):
                raise AudioError("audio contains NaN or infinite samples")
            peak = max(peak, float(np.max(np.abs(mono)))) if n else peak
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if out.size:
                parts.append(out)
            if last:
                break
    if read == skip:
        raise AudioError("audio is empty (0 samples)")
    if not allow_silent and peak < SILENCE_PEAK:
        if skip:
            raise AudioError(
                f"the end of the audio (its last {(read - skip) / rate:.1f} s, all that the model hears "
                "of a prime) is silent (peak below -90 dBFS)"
            )
        raise AudioError("audio is silent (peak below -90 dBFS); nothing to encode")
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


def _tail_start(frames: int, rate: int, sample_rate: int, tail_seconds: float | None) -> int:
    """The input frame a tail decode starts at: 0 (everything), or a frame at least
    ``tail_seconds`` before the end that falls on a whole output sample."""
    if tail_seconds is None:
        return 0
    step = rate // math.gcd(rate, sample_rate)  # input frames per whole number of output samples
    start = frames - math.ceil(tail_seconds * rate)
    return max(0, start // step * step)


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


def output_format(path: str | Path) -> tuple[str, str]:
    """(format, subtype) that ``path``'s extension writes; check it before any work."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise AudioError(f"cannot write {Path(path).name}: use one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def encode_audio(audio: np.ndarray, sample_rate: int, suffix: str) -> bytes:
    """Mono audio as the bytes of a file with extension ``suffix`` (".wav", ".mp3", ...)."""
    fmt, subtype = output_format(f"x{suffix}")
    buf = io.BytesIO()
    sf.write(buf, np.clip(check_mono(audio), -1.0, 1.0), sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono audio; the format follows the extension (.wav, .flac, .ogg (Vorbis),
    .opus or .mp3)."""
    path = Path(path)
    data = encode_audio(audio, sample_rate, path.suffix.lower())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)


def numbered_paths(path: str | Path, count: int) -> list[Path]:
    """Where ``count`` outputs meant for ``path`` go: ``path`` itself for one, else
    ``stem_0.ext``, ``stem_1.ext``, ... beside it (sample i in file i)."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]

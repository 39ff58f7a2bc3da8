import io

import numpy as np
import pytest
import soundfile as sf

from tokgen.audio import load_audio, resample, save_audio
from tokgen.errors import AudioError


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".opus", ".mp3"])
def test_save_and_load_each_format(tmp_path, tone, ext):
    path = tmp_path / f"x{ext}"
    save_audio(path, tone, 16000)
    back = load_audio(path, 16000)
    assert back.dtype == np.float32 and back.ndim == 1
    # Vorbis may pad a few samples; MP3 and Opus add their encoder delay and frame padding.
    assert abs(back.size - tone.size) <= (16 if ext == ".ogg" else 2000)
    n = min(back.size, tone.size)
    if ext in (".wav", ".flac"):  # lossless formats: only 16-bit quantisation error
        assert np.max(np.abs(back[:n] - tone[:n])) < 1e-3
    else:  # lossy: the same tone, as loud (the spectrum's peak at 440 Hz)
        spectrum = np.abs(np.fft.rfft(back[2000:18000]))
        assert abs(np.argmax(spectrum) - 440) < 5  # 16,000 samples at 16 kHz: 1 Hz per bin
        assert 0.5 < np.sqrt(np.mean(back[2000:18000] ** 2)) / np.sqrt(np.mean(tone**2)) < 1.5


def test_stereo_is_mixed_to_mono_and_resampled(tmp_path, tone):
    stereo = np.stack([tone, -0.5 * tone], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000)
    out = load_audio(tmp_path / "s.wav", 8000)
    assert out.ndim == 1 and abs(out.size - tone.size // 2) <= 1
    expected = resample(0.25 * tone, 16000, 8000)
    assert np.allclose(out, expected, atol=2e-3)


def test_bytes_input(tone):
    buf = io.BytesIO()
    sf.write(buf, tone, 16000, format="FLAC")
    assert load_audio(buf.getvalue(), 16000).size == tone.size


def test_corrupt_and_truncated_files(tmp_path, tone):
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(tmp_path / "garbage.wav", 16000)
    buf = io.BytesIO()
    sf.write(buf, tone, 16000, format="FLAC")
    (tmp_path / "cut.flac").write_bytes(buf.getvalue()[:200])
    with pytest.raises(AudioError):
        load_audio(tmp_path / "cut.flac", 16000)


def test_unsupported_format_is_named(tmp_path, tone):
    sf.write(tmp_path / "x.aiff", tone, 16000, format="AIFF")
    with pytest.raises(AudioError, match="unsupported audio format AIFF"):
        load_audio(tmp_path / "x.aiff", 16000)


def test_empty_silent_missing_and_directory(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav", 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(AudioError, match="silent"):
        load_audio(tmp_path / "silent.wav", 16000)
    assert load_audio(tmp_path / "silent.wav", 16000, allow_silent=True).size == 1600
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav", 16000)
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path, 16000)


def test_too_long_is_refused_before_reading(tmp_path, tone):
    save_audio(tmp_path / "x.wav", tone, 16000)
    with pytest.raises(AudioError, match="limit is 1 s"):
        load_audio(tmp_path / "x.wav", 16000, max_seconds=1)


def test_save_rejects_bad_shapes_and_extensions(tmp_path, tone):
    with pytest.raises(AudioError, match="shape"):
        save_audio(tmp_path / "x.wav", np.stack([tone, tone]), 16000)
    with pytest.raises(AudioError, match=r"use one of \.wav"):
        save_audio(tmp_path / "x.mp4", tone, 16000)
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "x.wav", np.full(10, np.nan, np.float32), 16000)


@pytest.mark.parametrize("rate", [16000, 44100, 22050])
def test_a_tail_decode_gives_the_whole_decodes_end(rate):
    """``tail_seconds`` decodes only the end of a file: the result is as long as the whole
    decode, zeros before the tail, and the tail's samples are the whole decode's (beyond
    the resampler's start-up)."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(rate * 12) * 0.1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="FLAC")
    whole = load_audio(buf.getvalue(), 16000)
    tail = load_audio(buf.getvalue(), 16000, tail_seconds=3.0)
    assert tail.size == whole.size
    assert not tail[: whole.size - 16000 * 4].any()  # 12 s file, at most 3 s (+ a step) decoded
    np.testing.assert_allclose(tail[-16000 * 2 :], whole[-16000 * 2 :], atol=1e-5)
    assert np.array_equal(load_audio(buf.getvalue(), 16000, tail_seconds=60.0), whole)


def test_a_tail_decode_never_reads_the_head():
    """NaNs in the first half: the whole decode refuses the file, a tail decode of the
    second half does not even see them. The silence check then judges the tail."""
    audio = np.full(16000 * 4, 0.1, np.float32)
    audio[:16000] = np.nan
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(buf.getvalue(), 16000)
    assert load_audio(buf.getvalue(), 16000, tail_seconds=2.0)[-1] == pytest.approx(0.1)
    audio[:] = 0.1
    audio[-16000 * 2 :] = 0.0
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="end of the audio"):
        load_audio(buf.getvalue(), 16000, tail_seconds=1.0)

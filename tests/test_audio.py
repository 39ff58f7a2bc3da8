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

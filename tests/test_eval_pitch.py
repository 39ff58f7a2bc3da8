"""Pitch-class profiles and key consistency on synthetic tones."""

from __future__ import annotations

import numpy as np
import pytest

from tokgen.codec.pitch import clipwise_correlation, key_consistency, pitch_class_profile, profile_correlation

SR = 16000


def midi_hz(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def chord(notes: list[int], seconds: float = 2.0, harmonics: int = 4) -> np.ndarray:
    """Notes with decaying harmonics, as an instrument plays them."""
    t = np.arange(int(seconds * SR)) / SR
    out = sum(0.5**h * np.sin(2 * np.pi * midi_hz(n) * (h + 1) * t) for n in notes for h in range(harmonics))
    return (0.1 * out).astype(np.float32)


C_MAJOR = [60, 64, 67]  # C4 E4 G4


def test_a_c_major_triad_peaks_at_c_e_and_g():
    profile = pitch_class_profile(chord(C_MAJOR), SR)
    assert profile.shape == (12,) and profile.sum() == pytest.approx(1.0)
    assert set(np.argsort(profile)[-3:]) == {0, 4, 7}
    assert int(np.argmax(pitch_class_profile(chord([69]), SR))) == 9  # A4 alone


def test_profiles_correlate_in_the_same_key_and_not_a_tritone_away():
    triad = pitch_class_profile(chord(C_MAJOR), SR)
    same_key_other_octave = pitch_class_profile(chord([n - 12 for n in C_MAJOR]), SR)
    scale_in_c = pitch_class_profile(
        np.concatenate([chord([n], 0.4) for n in (60, 62, 64, 65, 67, 69, 71, 72)]), SR
    )
    tritone_away = pitch_class_profile(chord([n + 6 for n in C_MAJOR]), SR)  # F# major
    whole_tone_up = pitch_class_profile(chord([n + 2 for n in C_MAJOR]), SR)  # D major
    assert profile_correlation(triad, same_key_other_octave) > 0.9
    assert profile_correlation(triad, scale_in_c) > 0.4
    assert profile_correlation(triad, tritone_away) < 0
    assert profile_correlation(triad, tritone_away) < profile_correlation(triad, whole_tone_up)
    assert profile_correlation(triad, triad) == pytest.approx(1.0)


def test_silence_and_out_of_band_sound_have_no_profile_and_no_correlation():
    silence = pitch_class_profile(np.zeros(SR, np.float32), SR)
    assert not silence.any()
    assert profile_correlation(silence, pitch_class_profile(chord(C_MAJOR), SR)) == 0.0
    # A loud 26 Hz hum (below the 50 Hz floor) does not drown a quiet A4.
    hum_and_a = pitch_class_profile(5 * chord([20], harmonics=1) + chord([69], harmonics=1), SR)
    assert int(np.argmax(hum_and_a)) == 9 and hum_and_a[9] > 0.5


def test_key_consistency_is_the_mean_over_clips():
    c, fsharp = chord(C_MAJOR, 1.0), chord([n + 6 for n in C_MAJOR], 1.0)
    assert key_consistency([c, c], [c, c], SR) == pytest.approx(1.0)
    mixed = key_consistency([c, fsharp], [c, c], SR)
    assert mixed == pytest.approx(
        (1 + profile_correlation(pitch_class_profile(fsharp, SR), pitch_class_profile(c, SR))) / 2
    )
    with pytest.raises(ValueError):
        key_consistency([c], [c, c], SR)


def test_clipwise_correlation_judges_each_clip_on_its_own():
    c, fsharp = chord(C_MAJOR, 5.0), chord([n + 6 for n in C_MAJOR], 5.0)
    assert clipwise_correlation(c, c, SR) == pytest.approx(1.0)
    # the second clip's notes are a tritone off: half the clips agree
    off = profile_correlation(pitch_class_profile(c, SR), pitch_class_profile(fsharp, SR))
    got = clipwise_correlation(np.concatenate([c, c]), np.concatenate([c, fsharp]), SR)
    assert got == pytest.approx((1 + off) / 2)
    assert clipwise_correlation(c[:SR], c[:SR], SR) == pytest.approx(1.0)  # shorter than a clip

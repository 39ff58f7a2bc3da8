"""Key guidance (``tokgen.generation.key``): the shipped codec's top codes know their pitch
classes, and the bias favours the prime's."""

import numpy as np
import pytest

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.pitch import CodePitchTable, frame_pitch_classes, pitch_class_profile
from tokgen.errors import TokgenError
from tokgen.generation.key import check_key_guidance, key_bias, profile_correlations
from tokgen.generation.sampler import SamplingSettings

C_MAJOR = (0, 4, 7)


def test_profile_correlations_are_pearson_and_zero_when_flat():
    rows = np.array([[1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0], [1] * 12, [0, 1] * 6], dtype=float)
    profile = rows[0] / rows[0].sum()
    got = profile_correlations(rows, profile)
    assert got[0] == pytest.approx(1.0) and got[1] == 0.0
    assert got[2] == pytest.approx(np.corrcoef(rows[2], profile)[0, 1])
    assert profile_correlations(rows, np.ones(12)).tolist() == [0.0, 0.0, 0.0]


def test_no_bias_without_strength_pitch_classes_or_prime():
    table = np.eye(12)
    assert key_bias(table, np.array([0, 4]), 0.0) is None
    assert key_bias(None, np.array([0, 4]), 2.0) is None
    assert key_bias(table, np.array([], dtype=np.int64), 2.0) is None
    bias = key_bias(table, np.array([0, 4, 7]), 2.0)
    assert bias is not None and bias.shape == (12,) and set(np.argsort(bias)[-3:]) == set(C_MAJOR)


def test_the_shipped_top_codes_know_their_pitch_classes():
    """The example prime's top codes stand for the pitch classes its audio has (what the
    evaluation's key consistency measures); the bias favours them, and the same profile a
    tritone away (another key) disfavours them. The middle level's measured table does too."""
    codec = load_codec(None)
    table = codec.pitch_classes(0)
    assert table is not None and table.shape == (codec.levels[0].codebook_size, 12)
    assert np.allclose(table.sum(1), 1.0)
    middle = codec.pitch_classes(1)  # measured on corpus20's train split (docs/MODELS.md)
    assert middle is not None and middle.shape == table.shape and np.allclose(middle.sum(1), 1.0)
    prime = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    codes = codec.encode_level(prime, 0)
    profile = table[codes].mean(0)
    assert np.corrcoef(profile, pitch_class_profile(prime, codec.sample_rate))[0, 1] > 0.7
    bias = key_bias(table, codes, 3.0)
    assert bias is not None and bias[codes].mean() > 0.6 > 0.1 > bias.mean()
    shifted = [profile_correlations(table, np.roll(profile, k))[codes].mean() for k in range(12)]
    assert int(np.argmax(shifted)) == 0 and shifted[6] < 0.0
    middle_codes = codec.encode(prime)[1]
    middle_profile = middle[middle_codes].mean(0)
    assert np.corrcoef(middle_profile, pitch_class_profile(prime, codec.sample_rate))[0, 1] > 0.7


def test_guidance_strength_is_checked():
    check_key_guidance(0.0)
    check_key_guidance(20.0)
    check_key_guidance(np.float32(1.5))
    for bad in (-0.1, 20.5, float("nan"), float("inf"), "1", None, True):
        with pytest.raises(TokgenError, match="key guidance"):
            check_key_guidance(bad)
        with pytest.raises(TokgenError, match="key guidance"):
            SamplingSettings(key_guidance=bad).check(3075)


def test_frame_profiles_name_a_tones_pitch_class_and_leave_silence_empty():
    sr, hop = 16000, 128
    t = np.arange(sr) / sr
    a4 = np.concatenate([np.sin(2 * np.pi * 440.0 * t), np.zeros(sr)]).astype(np.float32)
    frames = frame_pitch_classes(a4, sr, hop)
    assert frames.shape == (a4.size // hop, 12)
    sounding, silent = frames[20:100], frames[-60:]
    assert (sounding.argmax(1) == 9).all() and np.allclose(sounding.sum(1), 1.0)  # A
    assert (silent == 0).all()


def test_a_code_table_is_the_mean_profile_where_each_code_occurs():
    table = CodePitchTable(4)
    profiles = np.eye(12)[[0, 4, 7, 7]]
    table.add(np.array([1, 1, 2, 2, 3]), np.vstack([profiles, np.zeros((1, 12))]))  # last: silent
    got = table.table()
    assert np.allclose(got[1], (np.eye(12)[0] + np.eye(12)[4]) / 2)
    assert np.allclose(got[2], np.eye(12)[7])
    assert np.allclose(got[0], 1 / 12) and np.allclose(got[3], 1 / 12)  # never seen (sounding): flat


def test_measured_tables_are_stored_beside_the_codec_and_checked(tmp_path):
    import shutil

    from tokgen.assets import DEFAULT_CODEC_DIR
    from tokgen.codec.checkpoint import PITCH_CLASSES, write_pitch_classes
    from tokgen.codec.top_levels import TopLevels
    from tokgen.errors import CheckpointError

    model = tmp_path / "codec"
    shutil.copytree(DEFAULT_CODEC_DIR, model)
    (model / PITCH_CLASSES).unlink(missing_ok=True)
    assert load_codec(model).pitch_classes(1) is None
    table = np.random.default_rng(0).random((1024, 12))
    write_pitch_classes(model, {1: table})
    codec = load_codec(model)
    got = codec.pitch_classes(1)
    assert got is not None and np.allclose(got, table / table.sum(1, keepdims=True), atol=1e-6)
    assert np.allclose(TopLevels(codec, 2).pitch_classes(1), got)
    for bad in ({1: table[:10]}, {1: -table}, {0: table}, {1: np.zeros((1024, 12))}):
        write_pitch_classes(model, bad)
        with pytest.raises(CheckpointError, match=PITCH_CLASSES):
            load_codec(model)
    (model / PITCH_CLASSES).write_bytes(b"not an npz")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_codec(model)

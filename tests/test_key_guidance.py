"""Key guidance (``tokgen.generation.key``): the shipped codec's top codes know their pitch
classes, and the bias favours the prime's."""

import numpy as np
import pytest

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.pitch import pitch_class_profile
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
    tritone away (another key) disfavours them."""
    codec = load_codec(None)
    table = codec.pitch_classes(0)
    assert table is not None and table.shape == (codec.levels[0].codebook_size, 12)
    assert np.allclose(table.sum(1), 1.0)
    assert codec.pitch_classes(1) is None
    prime = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    codes = codec.encode_level(prime, 0)
    profile = table[codes].mean(0)
    assert np.corrcoef(profile, pitch_class_profile(prime, codec.sample_rate))[0, 1] > 0.7
    bias = key_bias(table, codes, 3.0)
    assert bias is not None and bias[codes].mean() > 0.6 > 0.1 > bias.mean()
    shifted = [profile_correlations(table, np.roll(profile, k))[codes].mean() for k in range(12)]
    assert int(np.argmax(shifted)) == 0 and shifted[6] < 0.0


def test_guidance_strength_is_checked():
    check_key_guidance(0.0)
    check_key_guidance(20.0)
    for bad in (-0.1, 20.5, float("nan"), float("inf")):
        with pytest.raises(TokgenError, match="key guidance"):
            check_key_guidance(bad)
        with pytest.raises(TokgenError, match="key guidance"):
            SamplingSettings(key_guidance=bad).check(3075)

import numpy as np
import pytest

from tokgen.codec.base import LevelSpec
from tokgen.errors import TokgenError
from tokgen.prior.layout import BOS, N_SPECIAL, SEP, TokenLayout

LAYOUT = TokenLayout.for_levels([LevelSpec(512, 16), LevelSpec(128, 8), LevelSpec(32, 4)])


def test_offsets_ranges_and_vocab():
    assert LAYOUT.offsets == (N_SPECIAL, N_SPECIAL + 16, N_SPECIAL + 24)
    assert LAYOUT.vocab_size == N_SPECIAL + 28
    ranges = [LAYOUT.level_range(lv) for lv in range(3)]
    assert ranges == [(3, 19), (19, 27), (27, 31)]
    assert ranges[-1][1] == LAYOUT.vocab_size  # ranges tile the code ids, no gaps


def test_roundtrip_and_validation():
    codes = np.array([0, 3, 7])
    tokens = LAYOUT.to_tokens(codes, 1)
    assert tokens.tolist() == [19, 22, 26]
    assert LAYOUT.to_codes(tokens, 1).tolist() == codes.tolist()
    with pytest.raises(TokgenError, match=r"\[0, 8\)"):
        LAYOUT.to_tokens(np.array([8]), 1)
    with pytest.raises(TokgenError, match="outside level 2"):
        LAYOUT.to_codes([19], 2)
    with pytest.raises(TokgenError, match="does not exist"):
        LAYOUT.level_range(3)


def test_prompts():
    assert LAYOUT.top_prompt(np.array([1, 2])) == [BOS, 4, 5]
    prompt = LAYOUT.upsampler_prompt(2, upper=np.array([0, 1]), context=np.array([3]))
    assert prompt == [BOS, 19, 20, SEP, 30]
    with pytest.raises(TokgenError, match="upsamplers"):
        LAYOUT.upsampler_prompt(0, np.array([0]), np.array([0]))


def test_multi_codebook_levels_are_refused():
    with pytest.raises(TokgenError, match="one codebook"):
        TokenLayout.for_levels([LevelSpec(320, 1024, n_codebooks=2)])


def test_an_upsampler_prompt_may_start_with_reference_codes_of_its_own_level():
    prompt = LAYOUT.upsampler_prompt(
        2, upper=np.array([0, 1]), context=np.array([3]), reference=np.array([1, 2])
    )
    assert prompt == [BOS, 28, 29, SEP, 19, 20, SEP, 30]
    assert LAYOUT.upsampler_prompt(2, np.array([0]), np.array([3]), reference=np.zeros(0, int)) == [
        BOS,
        19,
        SEP,
        30,
    ]

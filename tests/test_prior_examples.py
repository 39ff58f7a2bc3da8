import numpy as np
import pytest

from tokgen.codec.base import LevelSpec
from tokgen.prior.corpus import CodeCorpus, encode_file
from tokgen.prior.examples import IGNORE, level_example, random_start, window_starts
from tokgen.prior.layout import BOS, SEP, TokenLayout

LAYOUT = TokenLayout.for_levels([LevelSpec(16, 8), LevelSpec(4, 8)])
# Level 1 has 4 frames per level-0 frame; level-0 code k sits above level-1 codes 4k..4k+3.
CODES = [np.arange(10) % 8, np.repeat(np.arange(10) % 8, 4)]


def test_top_example_predicts_every_code():
    ex = level_example(LAYOUT, 0, CODES, start=2, length=3, ratio=4)
    assert ex.tokens.tolist() == [BOS, *LAYOUT.to_tokens(np.array([2, 3, 4]), 0)]
    assert ex.labels.tolist() == [IGNORE, *ex.tokens[1:].tolist()]


def test_upsampler_prefix_covers_exactly_the_window():
    ex = level_example(LAYOUT, 1, CODES, start=8, length=8, ratio=4)
    own = CODES[1][8:16]
    upper = LAYOUT.to_codes(ex.tokens[1:3], 0)
    assert ex.tokens[0] == BOS and ex.tokens[3] == SEP
    assert upper.tolist() == [2, 3] and own.tolist() == [2, 2, 2, 2, 3, 3, 3, 3]
    assert (ex.labels[:4] == IGNORE).all() and ex.labels[4:].tolist() == LAYOUT.to_tokens(own, 1).tolist()


def test_short_last_window_rounds_the_prefix_up():
    ex = level_example(LAYOUT, 1, CODES, start=36, length=8, ratio=4)  # only 4 frames left
    assert LAYOUT.to_codes(ex.tokens[1:2], 0).tolist() == [9 % 8] and ex.tokens[2] == SEP


@pytest.mark.parametrize(("n", "length", "ratio"), [(40, 8, 4), (41, 10, 4), (3, 8, 4), (0, 8, 4)])
def test_window_starts_tile_and_align(n, length, ratio):
    starts = window_starts(n, length, ratio)
    assert all(s % ratio == 0 for s in starts)
    step = max(ratio, length - length % ratio)
    covered = [f for s in starts for f in range(s, min(s + step, n))]
    assert covered == list(range(n))


def test_random_start_is_aligned_and_in_bounds():
    rng = np.random.default_rng(0)
    starts = {random_start(rng, 100, 16, 4) for _ in range(500)}
    assert all(s % 4 == 0 and 0 <= s <= 84 for s in starts) and len(starts) > 15
    assert random_start(rng, 5, 16, 4) == 0


def test_corpus_trims_to_top_frames_and_roundtrips(tmp_path, tiny_model_dir, tone):
    from tokgen.codec import load_codec

    codec = load_codec(tiny_model_dir)  # hops 16 and 8
    codes = encode_file(codec, tone[:1000])  # 1000 samples -> 992 usable = 62 top frames
    assert codes is not None and [c.size for c in codes] == [62, 124]
    assert encode_file(codec, tone[:10]) is None
    corpus = CodeCorpus([codes, [c[:10] for c in codes]])
    corpus.save(tmp_path / "c.npz")
    back = CodeCorpus.load(tmp_path / "c.npz")
    assert [[c.tolist() for c in f] for f in back.files] == [[c.tolist() for c in f] for f in corpus.files]


def test_a_reference_is_given_never_predicted():
    reference = np.array([7, 6, 5])
    ex = level_example(LAYOUT, 1, CODES, start=8, length=8, ratio=4, reference=reference)
    assert LAYOUT.to_codes(ex.tokens[1:4], 1).tolist() == [7, 6, 5] and ex.tokens[4] == SEP
    assert LAYOUT.to_codes(ex.tokens[5:7], 0).tolist() == [2, 3] and ex.tokens[7] == SEP
    assert (ex.labels[:8] == IGNORE).all() and (ex.labels[8:] != IGNORE).all()

"""Hierarchical windowed sampling on real engines serving tiny random priors."""

import numpy as np
import pytest

from tokgen.codec.base import LevelSpec
from tokgen.engine.hf import HFEngine
from tokgen.errors import TokgenError
from tokgen.generation.sampler import LevelPrior, SamplingSettings, sample_hierarchy, window_seed
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import build_prior, preset_config, save_prior

HOPS = [16, 8]
LAYOUT = TokenLayout.for_levels([LevelSpec(16, 32), LevelSpec(8, 32)])


@pytest.fixture(scope="module")
def priors(tmp_path_factory, loop_thread):
    import torch

    out = []
    for level, ratio in ((0, 1), (1, 2)):
        torch.manual_seed(level)
        d = tmp_path_factory.mktemp(f"prior{level}")
        save_prior(build_prior(preset_config("tiny", level), LAYOUT, level, ratio), d, {"level": level})
        # n_ctx 16 tokens per window, half of it new: 80 bottom frames take 9 windows.
        out.append(LevelPrior(HFEngine(d), n_ctx=16, hop_fraction=0.5))
    yield out
    for prior in out:
        loop_thread.run(prior.engine.close())


def run(loop_thread, priors, known, top_frames, seed=0, on_change=None):
    coro = sample_hierarchy(
        priors, LAYOUT, HOPS, known, top_frames, SamplingSettings(seed=seed), f"r{seed}", 16000, on_change
    )
    return loop_thread.run(coro)


def test_primed_extends_every_level_and_keeps_the_prime(loop_thread, priors):
    known = [np.array([1, 2, 3, 4, 5]), np.arange(10) % 32]
    seen = []  # (level, frames known at the top, frames known at the bottom) per write
    codes = run(loop_thread, priors, known, 40, on_change=lambda b, lv: seen.append((lv, *b.known_frames)))
    assert [c.size for c in codes] == [40, 80] and seen[-1][1:] == (40, 80)
    assert codes[0][:5].tolist() == [1, 2, 3, 4, 5] and codes[1][:10].tolist() == known[1].tolist()
    assert all(c.min() >= 0 and c.max() < 32 for c in codes)
    # Pipelined: the upsampler wrote codes while the top level was still being sampled.
    assert any(lv == 1 and top < 40 for lv, top, _ in seen)


def test_segments_sample_side_by_side_and_reproducibly(loop_thread, priors):
    segmented = [priors[0], LevelPrior(priors[1].engine, n_ctx=16, segment_frames=20)]
    known = [np.arange(40) % 32, np.array([3, 3])]  # the top is known: upsample
    seen = []
    a = run(loop_thread, segmented, known, 40, seed=1, on_change=lambda b, lv: seen.append(b.codes[1].copy()))
    b = run(loop_thread, segmented, known, 40, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # The four segments ([2, 22), [22, 42), ...) grew side by side.
    assert any((c[2:22] < 0).any() and (c[22:42] >= 0).any() and (c[62:] >= 0).any() for c in seen)
    plain = run(loop_thread, priors, known, 40, seed=1)
    assert np.array_equal(plain[1][:16], a[1][:16]) and not np.array_equal(plain[1], a[1])


def test_overlapped_segments_warm_up_privately_and_publish_each_frame_once(loop_thread, priors):
    """With an overlap, a later segment starts early and drops its warm-up: every frame is
    still written once (the board counts writes), segments still grow side by side, and
    what a later segment publishes changes (it is no longer sampled cold)."""
    known = [np.arange(40) % 32, np.array([3, 3])]
    cold = [priors[0], LevelPrior(priors[1].engine, n_ctx=16, segment_frames=20)]
    warm = [priors[0], LevelPrior(priors[1].engine, n_ctx=16, segment_frames=20, overlap_frames=6)]
    writes = []
    a = run(loop_thread, warm, known, 40, seed=1, on_change=lambda b, lv: writes.append(b.known_frames[1]))
    assert writes[-1] == 80 and max(writes) == 80  # no frame published twice
    assert np.array_equal(a[1], run(loop_thread, warm, known, 40, seed=1)[1])  # reproducible
    c = run(loop_thread, cold, known, 40, seed=1)
    assert np.array_equal(a[1][:22], c[1][:22])  # the first segment has no warm-up
    assert not np.array_equal(a[1][22:42], c[1][22:42])


def test_same_seed_same_codes(loop_thread, priors):
    known = [np.array([7]), np.array([7, 7])]
    a, b = run(loop_thread, priors, known, 12, seed=3), run(loop_thread, priors, known, 12, seed=3)
    c = run(loop_thread, priors, known, 12, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_ancestral_and_upsample(loop_thread, priors):
    empty = np.zeros(0, dtype=np.int64)
    codes = run(loop_thread, priors, [empty, empty], 20)
    assert [c.size for c in codes] == [20, 40]
    top = np.arange(20) % 32
    up = run(loop_thread, priors, [top, empty], 20)
    assert np.array_equal(up[0], top) and up[1].size == 40  # the top level is only read


def test_bad_requests(loop_thread, priors):
    with pytest.raises(TokgenError, match="more than the 4 asked for"):
        run(loop_thread, priors, [np.arange(5), np.arange(10)], 4)
    with pytest.raises(TokgenError, match="one prior"):
        run(loop_thread, priors[:1], [np.arange(5), np.arange(10)], 8)
    # A window the engine refuses fails the whole request with that error (no task group).
    too_wide = [priors[0], LevelPrior(priors[1].engine, n_ctx=64)]
    with pytest.raises(TokgenError, match="exceeds the model's context"):
        run(loop_thread, too_wide, [np.arange(5), np.arange(10)], 40)


def test_a_level_bias_reaches_every_window_of_its_level_only(loop_thread, priors):
    """``biases``: -100 on all top codes but 4 and 9 leaves the top level only those two,
    in every window; the upsampler, without a bias, still uses many codes."""
    keep = np.full(32, -100.0)
    keep[[4, 9]] = 0.0
    known = [np.array([4, 9, 4]), np.array([1, 2, 3, 4, 5, 6])]
    coro = sample_hierarchy(
        priors, LAYOUT, HOPS, known, 40, SamplingSettings(seed=3), "bias", 16000, None, [keep, None]
    )
    codes = loop_thread.run(coro)
    assert set(codes[0].tolist()) == {4, 9}
    assert len(set(codes[1][6:].tolist())) > 4


def test_window_seeds_differ_and_repeat():
    seeds = {window_seed(1, lv, s, w) for lv in range(3) for s in range(4) for w in range(50)}
    assert len(seeds) == 600 and window_seed(1, 2, 0, 3) == window_seed(1, 2, 0, 3)
    assert all(0 <= s < 2**63 for s in seeds)


def test_an_upsampler_trained_with_a_reference_samples_with_the_primes_codes(loop_thread, tmp_path):
    """A prior whose windows start with the prime's own-level codes: its positions cover the
    longer prompt (a prompt beyond them would fail in the engine), and sampling runs."""
    import torch

    from tokgen.prior.model import PriorConfig

    torch.manual_seed(2)
    cfg = PriorConfig(n_ctx=16, hidden_size=64, num_layers=1, num_heads=2, reference_tokens=6)
    model = build_prior(cfg, LAYOUT, 1, 2)
    assert model.config.max_position_embeddings == 1 + 6 + 1 + 8 + 1 + 16
    save_prior(model, tmp_path, {"level": 1})
    tiny_top = build_prior(preset_config("tiny", 0), LAYOUT, 0, 1)
    save_prior(tiny_top, tmp_path / "top", {"level": 0})
    priors = [
        LevelPrior(HFEngine(tmp_path / "top"), n_ctx=16),
        LevelPrior(HFEngine(tmp_path), n_ctx=16, reference_tokens=6),
    ]
    try:
        known = [np.arange(5) % 32, np.arange(10) % 32]
        codes = run(loop_thread, priors, known, 20)
        assert [c.size for c in codes] == [20, 40] and codes[1][:10].tolist() == known[1].tolist()
    finally:
        for p in priors:
            loop_thread.run(p.engine.close())

"""The Python API, MusicGen's shape: ``from tokgen import Generator``, load, continue a
list of primes synchronously (numpy or torch in and out), reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def generator(tiny_model_dir, prior_set):
    from tokgen import Generator

    g = Generator.load(tiny_model_dir, prior_set, "hf")
    yield g
    g.close()


def test_a_list_of_primes_is_continued_and_reproducible(generator, tone):
    primes = [tone[:800], tone[800:2400]]
    a = generator.generate_continuation(primes, 16000, seconds=0.05, seed=7)
    assert [w.shape for w in a] == [(800,), (800,)] and generator.last_seeds == [7, 8]
    b = generator.generate_continuation(primes, 16000, seconds=0.05, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = generator.generate_continuation(primes, 16000, seconds=0.05)  # a fresh seed
    assert generator.last_seeds[0] not in (7, 8)
    again = generator.generate_continuation(primes, 16000, seconds=0.05, seed=generator.last_seeds[0])
    assert all(np.array_equal(x, y) for x, y in zip(c, again, strict=True))


def test_torch_stereo_and_other_rates_in(generator, tone):
    stereo = torch.from_numpy(np.stack([tone[:2205], tone[:2205]]))  # 50 ms at 44.1 kHz
    [out] = generator.generate_continuation(stereo, 44100, seconds=0.05, seed=1, progress=True)
    assert isinstance(out, torch.Tensor) and out.shape == (800,) and torch.isfinite(out).all()


def test_bad_primes_fail_clearly(generator):
    from tokgen.errors import TokgenError

    with pytest.raises(TokgenError, match="NaN"):
        generator.generate_continuation(np.full(800, np.nan, np.float32), 16000, seconds=0.05)


def test_several_samples_per_prime_at_another_rate_and_loudness(generator, tone):
    from tokgen.loudness import integrated_loudness

    primes = [tone[:800], tone[800:2400]]
    out = generator.generate_continuation(
        primes, 16000, seconds=0.05, seed=7, num_samples=2, sample_rate=22050, loudness_lufs=-20
    )
    assert [w.shape for w in out] == [(1102,)] * 4 and generator.last_seeds == [7, 8, 9, 10]
    assert all(integrated_loudness(w, 22050) == pytest.approx(-20, abs=0.05) for w in out)
    # continuation k is what its seed alone gives: prime 1's second sample is seed 10
    [alone] = generator.generate_continuation(
        primes[1], 16000, seconds=0.05, seed=10, sample_rate=22050, loudness_lufs=-20
    )
    assert np.array_equal(alone, out[3]) and not np.array_equal(out[2], out[3])
    again = generator.generate_continuation(
        primes, 16000, seconds=0.05, seed=7, num_samples=2, sample_rate=22050, loudness_lufs=-20
    )
    assert all(np.array_equal(x, y) for x, y in zip(out, again, strict=True))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"sample_rate": 96000}, "sample_rate"),
        ({"loudness_lufs": 3}, "loudness_lufs"),
    ],
)
def test_out_of_bounds_options_fail_before_any_work(generator, tone, options, field):
    from tokgen.errors import TokgenError

    with pytest.raises(TokgenError, match=field):
        generator.generate_continuation(tone[:800], 16000, seconds=0.05, **options)


def test_levels_that_share_weights_share_one_engine(generator, tiny_model_dir, prior_set, tone, tmp_path):
    """A prior set whose level directories link to one model (a prior trained for several
    levels) starts one engine for them, so their windows share its batches; it generates
    and closes as a set of one engine per level does."""
    import shutil

    from tokgen import Generator
    from tokgen.errors import TokgenError

    shared = tmp_path / "shared"
    shutil.copytree(prior_set, shared)
    for name in ("config.json", "model.safetensors"):
        (shared / "level0" / name).unlink()
        (shared / "level0" / name).symlink_to(shared / "level1" / name)
    g = Generator.load(tiny_model_dir, shared, "hf")
    try:
        assert g.priors[0].engine is g.priors[1].engine and g.priors[0].engine.metrics_label == "0+1"
        a = g.generate_continuation([tone[:1600]], 16000, seconds=0.1, seed=3)
        b = g.generate_continuation([tone[:1600]], 16000, seconds=0.1, seed=3)
        assert a[0].shape == (1600,) and np.array_equal(a[0], b[0])
    finally:
        g.close()
    assert generator.priors[0].engine is not generator.priors[1].engine  # the usual set: one each
    # the other way round the top prior's model has too few positions for the upsampler's windows
    short = tmp_path / "short"
    shutil.copytree(prior_set, short)
    for name in ("config.json", "model.safetensors"):
        (short / "level1" / name).unlink()
        (short / "level1" / name).symlink_to(short / "level0" / name)
    with pytest.raises(TokgenError, match=r"level1: its windows need \d+ positions; its model has 17"):
        Generator.load(tiny_model_dir, short, "hf")

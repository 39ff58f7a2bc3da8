"""Whole continuations on both engine backends: the tiny codec, with the session's tiny
Llama standing in for the prior of both levels (its vocabulary is the tiny codec's layout)."""

from __future__ import annotations

import numpy as np
import pytest

from tokgen.codec import load_codec
from tokgen.codec.codes import load_codes, save_codes
from tokgen.errors import TokgenError
from tokgen.prior.generate import continue_audio, prepare, render
from tokgen.prior.sampler import LevelPrior, SamplingSettings


@pytest.fixture(scope="module")
def codec(tiny_model_dir):
    return load_codec(tiny_model_dir)


def priors_on(engine, segment_frames=None):
    # 32 tokens per window (the Llama holds 256 positions); segments split the upsampler.
    return [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32, segment_frames=segment_frames)]


def test_primed_continuation_is_reproducible(loop_thread, engine, codec, tone):
    priors = priors_on(engine, segment_frames=40)
    prime = tone[:800]  # 50 top frames of 16 samples; 100 bottom frames of 8
    run = lambda seed: loop_thread.run(  # noqa: E731
        continue_audio(codec, priors, 0.05, SamplingSettings(seed=seed, top_k=20), "primed", prime)
    )
    a, b, c = run(1), run(1), run(2)
    assert [x.size for x in a.codes] == [100, 200] and a.prime_samples == 800
    assert a.audio.size == 1600
    assert all(np.array_equal(x, y) for x, y in zip(a.codes, b.codes, strict=True))
    assert np.array_equal(a.audio, b.audio)
    assert not np.array_equal(a.codes[1][100:], c.codes[1][100:])
    known = prepare(codec, "primed", 0.05, prime).known
    assert np.array_equal(a.codes[0][:50], known[0]) and np.array_equal(a.codes[1][:100], known[1])


def test_resume_from_saved_codes(loop_thread, engine, codec, tone, tmp_path):
    """A render cut short is resumed from its saved codes: what was saved is kept, the
    missing part of the bottom level is sampled, and the top level grows by --seconds."""
    priors, settings = priors_on(engine), SamplingSettings(seed=3)
    full = loop_thread.run(continue_audio(codec, priors, 0.05, settings, "primed", tone[:800]))
    cut = [full.codes[0], full.codes[1][:130]]  # bottom level stopped 70 frames short
    save_codes(tmp_path / "cut.npz", cut, codec, 1600)
    saved = load_codes(tmp_path / "cut.npz")
    saved.check_matches(codec)
    job = prepare(codec, "continue", 0.02, codes=saved.codes)
    resumed = loop_thread.run(render(codec, priors, job, settings))
    assert [x.size for x in resumed.codes] == [120, 240]
    assert np.array_equal(resumed.codes[0][:100], full.codes[0])
    assert np.array_equal(resumed.codes[1][:130], cut[1])
    assert (resumed.codes[1] >= 0).all()


def test_upsample_keeps_the_top_level(loop_thread, engine, codec):
    top = np.arange(60) % 32
    job = prepare(codec, "upsample", 1.0, codes=[top, np.zeros(0, dtype=np.int64)])
    out = loop_thread.run(render(codec, priors_on(engine, segment_frames=50), job, SamplingSettings(seed=4)))
    assert np.array_equal(out.codes[0], top) and out.codes[1].size == 120 and out.audio.size == 960


def test_inconsistent_codes_are_refused(codec):
    with pytest.raises(TokgenError, match="longer than the top level"):
        prepare(codec, "continue", 1.0, codes=[np.arange(4), np.arange(20)])
    with pytest.raises(TokgenError, match="all 2 levels"):
        prepare(codec, "continue", 1.0, codes=[np.arange(4)])

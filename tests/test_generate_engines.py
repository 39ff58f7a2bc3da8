"""Whole continuations on both engine backends: the tiny codec, with the session's tiny
Llama standing in for the prior of both levels (its vocabulary is the tiny codec's layout)."""

from __future__ import annotations

import numpy as np
import pytest

from tokgen.codec import load_codec
from tokgen.codec.codes import load_codes, save_codes
from tokgen.errors import TokgenError
from tokgen.generation.generate import prepare
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import LevelPrior, SamplingSettings


@pytest.fixture(scope="module")
def codec(tiny_model_dir):
    return load_codec(tiny_model_dir)


def priors_on(engine, segment_frames=None):
    # 32 tokens per window (the Llama holds 256 positions); segments split the upsampler.
    return [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32, segment_frames=segment_frames)]


def render(codec, priors, job, settings):
    return Generator(codec, priors).render(job, settings)


def continue_audio(codec, priors, seconds, settings, mode, prime):
    return render(codec, priors, prepare(codec, mode, seconds, prime), settings)


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


def test_streamed_pieces_join_into_the_rendered_audio(loop_thread, engine, codec, tone):
    from tokgen.generation.stream import stream_continuation

    priors = priors_on(engine, segment_frames=40)
    job = prepare(codec, "primed", 0.1, tone[:800])
    settings = SamplingSettings(seed=5)

    async def collect():
        return [
            piece
            async for piece in stream_continuation(
                codec, priors, job, settings, min_seconds=0.01, first_seconds=0.01
            )
        ]

    pieces = loop_thread.run(collect())
    whole = loop_thread.run(render(codec, priors, job, settings))
    assert len(pieces) > 1  # audio came out while the rest was still being sampled
    joined = np.concatenate(pieces)
    assert joined.size == whole.audio.size - whole.prime_samples == 1600
    assert np.abs(joined - whole.audio[whole.prime_samples :]).max() < 1e-5


def test_stream_pieces_grow_only_as_far_as_the_stream_is_ahead():
    """After the first, each piece waits for twice the frames of the one before (each is
    decoded with the decoder's margin around it, so many small pieces cost many decodes),
    but for at most half of what a listener has not yet played (so it is out before that
    listener runs dry), never fewer than the smallest or more than the largest."""
    from tokgen.generation.stream import next_piece_frames

    far_ahead = 10_000
    sizes = [6]
    for _ in range(6):
        sizes.append(next_piece_frames(sizes[-1], far_ahead, smallest=31, largest=125))
    assert sizes == [6, 31, 62, 124, 125, 125, 125]
    assert next_piece_frames(124, ahead=100, smallest=31, largest=125) == 50
    assert next_piece_frames(124, ahead=40, smallest=31, largest=125) == 31  # a little ahead: small
    assert next_piece_frames(124, ahead=-50, smallest=31, largest=125) == 31  # behind: small


def test_closing_a_stream_early_leaves_the_engine_serving(loop_thread, engine, codec, tone):
    from tokgen.generation.stream import stream_continuation

    job = prepare(codec, "primed", 0.5, tone[:800])

    async def first_piece():
        stream = stream_continuation(
            codec, priors_on(engine), job, SamplingSettings(seed=6), min_seconds=0.01
        )
        piece = await anext(stream)
        await stream.aclose()
        return piece

    assert loop_thread.run(first_piece()).size > 0
    # The engine is free again: a new request completes normally.
    out = loop_thread.run(
        render(codec, priors_on(engine), prepare(codec, "primed", 0.02, tone[:800]), SamplingSettings())
    )
    assert out.audio.size > 0


def test_a_stream_decodes_only_the_end_of_its_prime_and_gets_the_same_codes(engine, codec):
    """Streaming prepares a prime from its last seconds only (``prime_tail_seconds``): the
    codes the priors read, and the timbre reference, are those of the whole prime."""
    import io

    import soundfile as sf

    from tokgen.audio import load_audio
    from tokgen.generation.generate import encode_prime_context, prime_tail_seconds
    from tokgen.generation.requests import prepare_spec
    from tokgen.generation.spec import ContinueSpec

    priors = priors_on(engine, segment_frames=40)
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    sf.write(buf, (rng.standard_normal(44100 * 8) * 0.1).astype(np.float32), 44100, format="FLAC")
    assert prime_tail_seconds(codec, priors) < 3.0  # so most of the 8 s are never decoded
    spec = ContinueSpec("primed", 0.1, SamplingSettings(seed=1), buf.getvalue(), None)
    job = prepare_spec(codec, spec, priors)
    whole = load_audio(buf.getvalue(), codec.sample_rate)
    expected = encode_prime_context(codec, priors, whole)
    assert [k.size for k in job.known] == [e.size for e in expected]
    assert all(np.array_equal(k, e) for k, e in zip(job.known, expected, strict=True))
    np.testing.assert_allclose(job.reference, whole[-job.reference.size :], atol=1e-5)

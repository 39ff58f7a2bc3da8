"""Instrument guidance (``tokgen.generation.instrument``) and the counts it reads
(``tokgen.codec.instruments``): codes say which instrument they come from, the prime's
codes name its instrument, and the bias favours codes of that instrument."""

import shutil

import numpy as np
import pytest

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import DEFAULT_CODEC_DIR, load_codec
from tokgen.codec.checkpoint import INSTRUMENTS, write_instruments
from tokgen.codec.instruments import InstrumentTable, family_counts
from tokgen.errors import CheckpointError, TokgenError
from tokgen.generation.instrument import check_instrument_guidance, instrument_biases, prime_families
from tokgen.generation.key import add_biases
from tokgen.generation.sampler import SamplingSettings


def toy_table() -> InstrumentTable:
    """Four codes, two families: code 0 only in family A's files, code 1 only in B's,
    code 2 in both equally, code 3 never seen."""
    codes = [np.array([0, 0, 2]), np.array([1, 1, 2]), np.array([0, 2])]
    counts = family_counts(codes, [0, 1, 0], codebook_size=4, families=2)
    return InstrumentTable(("a", "b"), {0: counts, 1: counts.copy()})


def test_family_counts_count_each_code_per_family():
    table = toy_table()
    assert table.counts[0].tolist() == [[3, 0], [0, 2], [2, 1], [0, 0]]
    with pytest.raises(ValueError, match="one label per file"):
        family_counts([np.array([0])], [0, 1], 4, 2)


def test_posteriors_say_nothing_for_unseen_or_shared_codes():
    table = toy_table()
    prior = table.prior(0)
    assert prior == pytest.approx([5 / 8, 3 / 8])
    post = table.posterior(0)
    assert np.allclose(post.sum(1), 1.0)
    assert post[3] == pytest.approx(prior)  # never seen: the prior, log ratio 0
    assert table.log_ratio(0)[3] == pytest.approx([0.0, 0.0])
    assert post[0, 0] > prior[0] and post[1, 1] > prior[1]  # each family's own code says so
    assert table.profile(0, np.array([0, 0])).argmax() == 0
    assert table.profile(0, np.array([1, 1, 2])).argmax() == 1


def test_the_bias_favours_the_prime_family_codes_on_guided_levels_only():
    table = toy_table()
    known = [np.array([1, 1, 1]), np.array([2])]  # the prime's top codes: family b
    assert instrument_biases(table, known, 0.0, (1,)) == [None, None]
    assert instrument_biases(None, known, 1.0, (1,)) == [None, None]
    assert instrument_biases(table, [np.zeros(0, np.int64), np.array([2])], 1.0, (1,)) == [None, None]
    top, middle = instrument_biases(table, known, 2.0, (1,))
    assert top is None and middle is not None
    assert middle[1] > 0 > middle[0] and middle[3] == pytest.approx(0.0)
    assert np.allclose(instrument_biases(table, known, 1.0, (1,))[1] * 2, middle)
    assert prime_families(table, known).argmax() == 1


def test_biases_add():
    a, b = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    assert add_biases(None, None) is None
    assert add_biases(a, None) is a and add_biases(None, b) is b
    assert add_biases(a, b).tolist() == [1.5, 1.0]


def test_guidance_strength_is_checked():
    check_instrument_guidance(0.0)
    check_instrument_guidance(20.0)
    for bad in (-0.1, 20.5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(TokgenError, match="instrument guidance"):
            check_instrument_guidance(bad)  # type: ignore[arg-type]
        with pytest.raises(TokgenError, match="instrument guidance"):
            SamplingSettings(instrument_guidance=bad).check(3075)  # type: ignore[arg-type]


def test_the_shipped_codes_name_the_example_prime_instrument():
    """The example prime is a piano (GM program 1, tokgen/assets/examples/README.md): its top
    codes say so, and the middle level's bias favours the codes it uses itself."""
    codec = load_codec(None)
    table = codec.instruments()
    assert table is not None and "piano" in table.families
    codes = codec.encode(load_audio(EXAMPLE_PRIME, codec.sample_rate))
    families = prime_families(table, codes)
    assert families is not None and table.families[int(families.argmax())] == "piano"
    assert families.max() > 0.5
    biases = instrument_biases(table, codes, 1.0, (1,))
    assert biases[0] is None and biases[1] is not None
    assert biases[1][codes[1]].mean() > 0.0 > biases[1].mean()


def test_counts_are_stored_beside_the_weights_and_checked_on_load(tmp_path):
    model = tmp_path / "codec"
    shutil.copytree(DEFAULT_CODEC_DIR, model)
    (model / INSTRUMENTS).unlink(missing_ok=True)
    assert load_codec(model).instruments() is None
    counts = np.random.default_rng(0).integers(0, 50, (1024, 3)).astype(float)
    write_instruments(model, InstrumentTable(("x", "y", "z"), {0: counts, 1: counts}))
    got = load_codec(model).instruments()
    assert got is not None and got.families == ("x", "y", "z") and np.array_equal(got.counts[1], counts)
    for families, levels in (
        (("x", "y", "z"), {1: counts[:10]}),
        (("x", "y", "z"), {1: -counts}),
        (("x", "y", "z"), {3: counts}),
        (("x", "y", "z"), {1: np.zeros_like(counts)}),
        (("x", "x", "z"), {1: counts}),
        (("x",), {1: counts[:, :1]}),
        (("x", "y", "z"), {}),
    ):
        write_instruments(model, InstrumentTable(families, levels))
        with pytest.raises(CheckpointError, match=INSTRUMENTS):
            load_codec(model)
    np.savez(model / INSTRUMENTS, level1=counts)  # no family names
    with pytest.raises(CheckpointError, match="families"):
        load_codec(model)
    (model / INSTRUMENTS).write_bytes(b"not an npz")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_codec(model)


def test_guidance_reads_what_the_windows_see_so_streams_and_batch_jobs_agree():
    """A stream encodes only the end of a prime (earlier frames are filler code 0); the
    guidance biases come from the codes the first windows see, so they are the same as
    from the whole prime's codes, and differ from a profile over the whole (filled) array."""
    from tokgen.codec.top_levels import TopLevels
    from tokgen.generation.generate import encode_prime_context, guidance_biases
    from tokgen.generation.sampler import LevelPrior

    codec = TopLevels(load_codec(None), 2)  # what the shipped two-level prior set generates with
    priors = [LevelPrior(None, n_ctx=256), LevelPrior(None, n_ctx=512)]  # type: ignore[arg-type]
    span = 128 * 512  # samples the longest first window keeps (the top's: n_ctx - hop frames)
    prime = load_audio(EXAMPLE_PRIME, codec.sample_rate)  # 12 s: longer than any window sees
    whole = codec.encode(prime)
    stream = encode_prime_context(codec, priors, prime)
    assert (stream[1][:100] == 0).all() and not (whole[1][:100] == 0).all()  # filler
    assert all(
        np.array_equal(a[-(span // lv.hop) :], b[-(span // lv.hop) :])
        for a, b, lv in zip(whole, stream, codec.levels, strict=True)
    )
    settings = SamplingSettings(key_guidance=1.0, instrument_guidance=1.0)
    got_whole = guidance_biases(codec, whole, span, settings)
    got_stream = guidance_biases(codec, stream, span, settings)
    assert got_whole[0] is not None and got_whole[1] is not None
    for a, b in zip(got_whole, got_stream, strict=True):
        assert np.allclose(a, b)
    filled = guidance_biases(codec, stream, prime.size, settings)
    assert not np.allclose(filled[1], got_stream[1])  # what reading the filler would have done
    off = guidance_biases(codec, whole, span, SamplingSettings(key_guidance=0.0, instrument_guidance=0.0))
    assert off == [None, None]

"""The multi-scale residual VQ codec: its levels are residuals of one another, it trains
resumably through the shared Solver, exports, loads, and decodes in streaming pieces that
join into one decode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.msvq import MSVQCodec, MSVQConfig, MultiScaleVQ
from tokgen.codec.presets import MSVQ_PRESETS
from tokgen.codec.streaming import StreamDecoder
from tokgen.codec.top_levels import TopLevels
from tokgen.codec.train_msvq import MSVQTrainConfig, keep_levels_for, train_msvq
from tokgen.errors import TokgenError

TINY = MSVQ_PRESETS["msvq-tiny"]
SMALL = {
    "segment_samples": 2048,
    "reference_samples": 2048,
    "batch_size": 2,
    "log_every": 2,
    "checkpoint_every": 2,
    "valid_crops": 2,
    "ae_warmup_steps": 1,
    "warmup_steps": 1,
}


def assert_decoder_only_changed(run_dir: Path, seed_dir: Path) -> None:
    """A decoder fine-tune's latest weights (``run_dir``) against its seed (a model
    directory): the same codes for the same audio, another decoder."""
    from tokgen.codec.train_msvq import export_last

    export_last(run_dir, run_dir / "exported")
    before, after = load_codec(seed_dir), load_codec(run_dir / "exported")
    audio = (np.random.default_rng(2).standard_normal(4000) * 0.1).astype(np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(before.encode(audio), after.encode(audio), strict=True))
    assert not torch.equal(
        before.model.state_dict()["decoder.head.weight"], after.model.state_dict()["decoder.head.weight"]
    )


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("msvq")
    train_msvq(TINY, MSVQTrainConfig(steps=6, **SMALL), corpus, run, resume=False)
    return run


def test_config_is_checked():
    assert MSVQConfig().hops == [512, 128, 32]  # the default codec's layout: priors keep theirs
    with pytest.raises(ValidationError, match="decrease to 1"):
        MSVQConfig(level_strides=[4, 16, 1])
    with pytest.raises(ValidationError, match="decoder_hop"):
        MSVQConfig(decoder_hop=48)


def test_dropout_does_not_change_the_codes():
    """Dropped levels leave the decoder's sum, never the residual: lower codes are the same."""
    torch.manual_seed(0)
    model = MultiScaleVQ(TINY).train()
    z = torch.randn(4, TINY.latent_dim, 32)
    features = torch.randn(4, 84, 8)
    model.quantizers[0].set_codebook(torch.randn(32, 84))  # the semantic top level's k-means
    model.quantize(z, features=features)  # seeds the other codebooks
    model.eval()
    all_codes = model.quantize(z, features=features).codes
    dropped_codes = model.quantize(z, keep_levels=torch.tensor([1, 1, 2, 2]), features=features).codes
    assert all(torch.equal(a, b) for a, b in zip(all_codes, dropped_codes, strict=True))
    keep = keep_levels_for(np.random.default_rng(0), 1000, 3, 0.5)
    assert set(keep.tolist()) == {1, 2, 3} and 0.4 < (keep < 3).float().mean() < 0.6


def test_training_resumes_exactly(corpus, trained, tmp_path):
    with pytest.raises(TokgenError, match="--resume"):
        train_msvq(TINY, MSVQTrainConfig(steps=6, **SMALL), corpus, trained, resume=False)
    train_msvq(TINY, MSVQTrainConfig(steps=3, **SMALL), corpus, tmp_path / "a", resume=False)
    resumed = train_msvq(TINY, MSVQTrainConfig(steps=6, **SMALL), corpus, tmp_path / "a", resume=True)
    straight = json.loads((trained / "train_log.jsonl").read_text().splitlines()[-1])
    assert resumed["step"] == 6
    assert resumed["valid_loss"] == pytest.approx(straight["valid_loss"], rel=1e-4)
    assert (trained / "best" / "config.json").is_file()


def test_exported_codec_codes_and_decodes(trained):
    codec = load_codec(trained / "best")
    assert isinstance(codec, MSVQCodec) and codec.uses_all_levels
    audio = (np.random.default_rng(0).standard_normal(3000) * 0.1).astype(np.float32)
    codes = codec.encode(audio)
    assert [c.shape for c in codes] == [(94,), (376,)]  # hops 32 and 8: whole top frames
    whole = codec.decode_levels(codes, reference=audio)
    assert whole.size == 376 * 8 and np.isfinite(whole).all()
    assert codec.decode_levels(codes[:1]).size == 94 * 32
    with pytest.raises(TokgenError, match="together with the levels above"):
        codec.decode(codes[1], 1)
    codec.chunk_seconds = 0.05  # chunked encoding gives the same codes
    assert all(np.array_equal(a, b) for a, b in zip(codec.encode(audio), codes, strict=True))


def test_streamed_pieces_join_into_one_decode(trained):
    codec = load_codec(trained / "best")
    rng = np.random.default_rng(1)
    top, bottom = rng.integers(0, 32, 60), rng.integers(0, 32, 240)
    reference = (rng.standard_normal(4000) * 0.1).astype(np.float32)
    whole = codec.decode_levels([top, bottom], reference)
    stream = StreamDecoder(codec, 1, reference=reference)
    pieces = []
    for n in range(20, 241, 20):  # the top level runs ahead of the bottom, as in sampling
        pieces.append(stream.push(bottom[:n], final=n == 240, upper=[top[: -(-n // 4)]]))
    joined = np.concatenate(pieces)
    assert joined.size == whole.size and np.abs(joined - whole).max() < 1e-4


def test_the_shipped_decoder_reads_no_further_ahead_than_its_lookahead():
    """Streaming waits ``decode_lookahead`` frames after a piece (29 middle frames, less
    than the 34 of ``decode_margin``): a crop that ends there decodes the piece as the
    whole decode does, at float precision, wherever the piece is."""
    codec = TopLevels(load_codec(), 2)
    audio = load_audio(EXAMPLE_PRIME, codec.sample_rate)[: 4 * codec.sample_rate]
    codes, reference = codec.encode(audio), audio[-codec.sample_rate :]
    whole = codec.decode_levels(codes, reference)
    hop, per_top = codec.levels[1].hop, codec.levels[0].hop // codec.levels[1].hop
    ahead, margin = codec.decode_lookahead(1), codec.decode_margin(1)
    assert ahead == 29 < margin == 34
    for stop in range(60, codes[1].size - ahead, 41):
        lo = stop - 8 - margin
        lo -= lo % per_top
        hi = stop + ahead
        crop = codec.decode_levels([codes[0][lo // per_top : -(-hi // per_top)], codes[1][lo:hi]], reference)
        piece = crop[(stop - 8 - lo) * hop : (stop - lo) * hop]
        assert np.abs(piece - whole[(stop - 8) * hop : stop * hop]).max() < 1e-6, stop


def test_freezing_the_codes_trains_only_the_decoder(corpus, trained, tmp_path):
    """The second stage: a run started from a model with frozen codes changes the decoder,
    never the codes (priors trained on them stay valid), and its models keep the tables
    measured on those codes (key and instrument guidance); a run that retrains the codes
    does not carry them."""
    from tokgen.codec.checkpoint import write_pitch_classes
    from tokgen.codec.train_msvq import export_last

    seed_dir = tmp_path / "seed"
    shutil.copytree(trained / "best", seed_dir)
    table = np.random.default_rng(0).random((TINY.codebook_size, 12)) + 0.01
    write_pitch_classes(seed_dir, {1: table})
    cfg = MSVQTrainConfig(steps=3, freeze_codes=True, **SMALL)
    train_msvq(TINY, cfg, corpus, tmp_path / "stage2", resume=False, init_from=seed_dir)
    export_last(tmp_path / "stage2", tmp_path / "last")
    before, after = load_codec(seed_dir), load_codec(tmp_path / "stage2" / "best")
    for model_dir in (tmp_path / "stage2" / "best", tmp_path / "last"):
        kept = load_codec(model_dir).pitch_classes(1)
        assert kept is not None and np.allclose(kept, before.pitch_classes(1))
    retrained = MSVQTrainConfig(steps=2, **SMALL)
    train_msvq(TINY, retrained, corpus, tmp_path / "new", resume=False, init_from=seed_dir)
    export_last(tmp_path / "new", tmp_path / "new_last")
    assert load_codec(tmp_path / "new_last").pitch_classes(1) is None
    audio = (np.random.default_rng(2).standard_normal(4000) * 0.1).astype(np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(before.encode(audio), after.encode(audio), strict=True))

    def changed(name: str) -> bool:
        return not torch.equal(before.model.state_dict()[name], after.model.state_dict()[name])

    assert changed("decoder.head.weight") and not changed("encoder.net.0.weight")


def test_a_decoder_is_fine_tuned_to_read_fewer_frames_ahead(corpus, trained, tmp_path):
    """``decoder_lookahead`` changes no weight's shape: a run from a centred decoder's
    weights trains one that reads fewer frames ahead (a shorter stream lookahead), with
    the same codes, and resumes as such."""
    cfg = MSVQTrainConfig(steps=2, freeze_codes=True, **SMALL)
    run = tmp_path / "ahead1"
    train_msvq(TINY, cfg, corpus, run, resume=False, init_from=trained / "best", decoder_lookahead=1)
    before, after = load_codec(trained / "best"), load_codec(run / "best")
    assert after.model.cfg.decoder_lookahead == 1
    assert after.decode_lookahead(0) < before.decode_lookahead(0)
    audio = (np.random.default_rng(3).standard_normal(4000) * 0.1).astype(np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(before.encode(audio), after.encode(audio), strict=True))
    train_msvq(TINY, MSVQTrainConfig(steps=3, freeze_codes=True, **SMALL), corpus, run, resume=True)
    assert load_codec(run / "best").model.cfg.decoder_lookahead == 1


def test_a_frozen_codes_run_has_no_autoencoder_warm_up(corpus, trained, tmp_path):
    """The warm-up trains on unquantised latents, for an encoder still learning; a stage-two
    decoder must see quantised ones from its first step (perplexities are logged then)."""
    small = {**SMALL, "ae_warmup_steps": 10, "log_every": 1}
    cfg = MSVQTrainConfig(steps=2, freeze_codes=True, **small)
    train_msvq(TINY, cfg, corpus, tmp_path / "stage2", resume=False, init_from=trained / "best")
    first = json.loads((tmp_path / "stage2" / "train_log.jsonl").read_text().splitlines()[0])
    assert "perplexity0" in first
    # ... and is validated on them: a warm-up-style (unquantised) validation would differ
    cfg_warm = MSVQTrainConfig(steps=2, **small)
    train_msvq(TINY, cfg_warm, corpus, tmp_path / "warm", resume=False, init_from=trained / "best")
    frozen_valid = json.loads((tmp_path / "stage2" / "train_log.jsonl").read_text().splitlines()[1])
    warm_valid = json.loads((tmp_path / "warm" / "train_log.jsonl").read_text().splitlines()[1])
    assert frozen_valid["valid_loss"] != pytest.approx(warm_valid["valid_loss"], rel=1e-3)
    assert (tmp_path / "stage2" / "best" / "config.json").is_file()  # counted for best from the start


def test_kmeans_finds_separated_clusters():
    from tokgen.codec.train_msvq import kmeans

    rng = np.random.default_rng(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres[torch.from_numpy(rng.integers(0, 3, 600))] + 0.1 * torch.randn(600, 2)
    found = kmeans(x, 3, 10, rng)
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.2


def test_the_semantic_top_codes_follow_the_notes(trained):
    """Two tones a fifth apart get different top codes; the same tone gets the same ones."""
    codec = load_codec(trained / "best")
    t = np.arange(4000) / 16000
    c4, g4 = (0.3 * np.sin(2 * np.pi * f * t).astype(np.float32) for f in (261.6, 392.0))
    a, b, a2 = (codec.encode(x)[0][10:-10] for x in (c4, g4, c4.copy()))
    assert np.array_equal(a, a2) and not np.array_equal(a, b)
    assert np.array_equal(codec.encode_level(c4, 0), codec.encode(c4)[0])  # the fast path agrees


def test_each_level_alone_gets_the_codes_of_the_whole_encoding(trained):
    """``encode_level`` quantises no level below the one asked for: the codes are the same."""
    codec = load_codec(trained / "best")
    audio = load_audio(EXAMPLE_PRIME, codec.sample_rate)[: 2 * codec.sample_rate]
    whole = codec.encode(audio)
    for level in range(len(codec.levels)):
        assert np.array_equal(codec.encode_level(audio, level), whole[level])


def test_export_writes_the_latest_weights_and_the_warm_up_never_counts_as_best(trained, tmp_path):
    from tokgen.codec.train_msvq import export_last

    export_last(trained, tmp_path / "last")
    assert json.loads((tmp_path / "last" / "config.json").read_text())["training_steps"] == 6
    assert isinstance(load_codec(tmp_path / "last"), MSVQCodec)
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    best = json.loads((trained / "best" / "config.json").read_text())
    assert best["training_steps"] > SMALL["ae_warmup_steps"]
    assert best["valid_loss"] == min(r["valid_loss"] for r in log if "valid_loss" in r and r["step"] > 1)


def test_a_prior_set_without_the_bottom_level_generates_from_the_top_levels(trained, tmp_path, loop_thread):
    """Fewer priors than codec levels: the generator encodes and decodes the codec's top
    levels only (``TopLevels``), sampling no bottom codes at all."""
    from tokgen.codec.top_levels import TopLevels
    from tokgen.generation.generate import codec_for_priors
    from tokgen.generation.generator import Generator
    from tokgen.generation.sampler import SamplingSettings
    from tokgen.prior.layout import TokenLayout
    from tokgen.prior.model import build_prior, preset_config, save_prior

    codec = load_codec(trained / "best")
    layout = TokenLayout.for_levels(codec.levels)  # trained on the whole codec's ids
    n_ctx = preset_config("tiny", 0).n_ctx
    meta = {"level": 0, "n_ctx": n_ctx, "codec": codec.name, "codebook_sizes": list(layout.codebook_sizes)}
    torch.manual_seed(0)
    save_prior(build_prior(preset_config("tiny", 0), layout, 0, 1), tmp_path / "priors" / "level0", meta)
    view = codec_for_priors(codec, tmp_path / "priors")
    assert isinstance(view, TopLevels) and view.levels == codec.levels[:1] and view.name == codec.name
    prime = (np.random.default_rng(2).standard_normal(1600) * 0.1).astype(np.float32)
    assert np.array_equal(view.encode(prime)[0], codec.encode(prime)[0])
    g = Generator.load(codec, tmp_path / "priors", "hf")
    assert g.codec.levels == codec.levels[:1]
    out = loop_thread.run(g.render(g.job("primed", 0.2, prime), SamplingSettings(seed=1)))
    loop_thread.run(g.aclose())
    assert len(out.codes) == 1 and out.audio.size == out.codes[0].size * 32 and np.isfinite(out.audio).all()
    with pytest.raises(TokgenError, match=r"this view of .* has 1"):
        view.decode_levels([out.codes[0], out.codes[0]])


def test_a_codec_whose_levels_stand_alone_has_no_top_levels_view(tiny_model_dir):
    from tokgen.codec.top_levels import TopLevels

    with pytest.raises(TokgenError, match="each level alone"):
        TopLevels(load_codec(tiny_model_dir), 1)


def test_filter_banks_first_built_in_inference_mode_still_train():
    """The cached semitone and mel filters serve encoding (inference mode) and training
    losses alike: whichever builds them first, autograd can use them (an encode before a
    training run in one process used to break the training)."""
    from tokgen.codec import spectral

    with torch.inference_mode():  # n_fft 254: a size no other test asks for, so built here
        spectral.semitone_filterbank(254, 16000)
        spectral.mel_filterbank(254, 40, 16000)
    mag = torch.rand(1, 128, 5, requires_grad=True)
    (
        spectral.log_semitones(mag, 16000).sum() + spectral.log_mel_from_magnitude(mag, 16000, 40).sum()
    ).backward()
    assert mag.grad is not None and torch.isfinite(mag.grad).all()


def test_a_codes_file_carries_the_timbre_it_decodes_in(trained, tmp_path):
    """`tokgen encode` stores a reference clip (the loudest 2 s) in the codes file and
    `tokgen decode` decodes in its timbre: what decode_levels gives with that clip, not the
    neutral timbre a file without one gets. (The tiny run's FiLM layers barely left their
    zero start, so they get random weights and full residual scale: the timbre must matter.)"""
    import subprocess
    import sys

    from tokgen.audio import load_audio, save_audio
    from tokgen.codec.checkpoint import load_msvq, save_vqvae
    from tokgen.codec.codes import load_codes, reference_clip

    model = load_msvq(trained / "best")
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if ".film." in name:
            p.data.normal_(0, 0.3)
        elif name.endswith(".gamma"):  # the blocks' residual scale (starts at 0.01)
            p.data.fill_(1.0)
    save_vqvae(model, tmp_path / "codec", extra={"kind": "msvq"})
    codec = load_codec(tmp_path / "codec")
    n = 3 * codec.sample_rate
    audio = (np.random.default_rng(1).standard_normal(n) * np.linspace(0.01, 0.3, n)).astype(np.float32)
    save_audio(tmp_path / "in.wav", audio, codec.sample_rate)
    audio = load_audio(tmp_path / "in.wav", codec.sample_rate)  # as the CLI reads it (16-bit)
    for cmd in (
        ["encode", str(tmp_path / "in.wav"), str(tmp_path / "c.npz")],
        ["decode", str(tmp_path / "c.npz"), str(tmp_path / "out.wav")],
    ):
        argv = [sys.executable, "-m", "tokgen", *cmd, "--model", str(tmp_path / "codec")]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    saved = load_codes(tmp_path / "c.npz")
    clip = reference_clip(audio, codec.sample_rate)
    assert saved.reference is not None and np.allclose(saved.reference, clip, atol=1 / 32767)
    decoded = load_audio(tmp_path / "out.wav", codec.sample_rate)
    expected = codec.decode_levels(saved.codes, saved.reference)[: saved.num_samples]
    neutral = codec.decode_levels(saved.codes)[: saved.num_samples]
    error, off = np.abs(decoded - expected).mean(), np.abs(decoded - neutral).mean()
    assert error < 1e-4 and off > 10 * error, (error, off)


def test_the_reference_clip_is_the_loudest_window():
    from tokgen.codec.codes import reference_clip

    audio = np.zeros(10_000, np.float32)
    audio[6_000:7_000] = 0.5
    clip = reference_clip(audio, 1_000, seconds=2.0)
    assert clip.size == 2_000 and clip.max() == 0.5 and np.count_nonzero(clip) == 1_000
    assert reference_clip(audio[:1_500], 1_000).size == 1_500  # shorter than a window: all of it


def test_a_swap_is_one_render_against_the_same_samples_of_another():
    from tokgen.codec.train_msvq import SwapSampler

    ramp = np.linspace(0.1, 1.0, 6000, dtype=np.float32)
    audio = [ramp, 2 * ramp[:5000], np.ones(100, np.float32), -ramp]  # 0, 1, 3: one piece
    sampler = SwapSampler(audio, [[0, 1, 3], [2, 0]], 1024, np.random.default_rng(0))
    assert sampler.groups == [[0, 1, 3]]  # a group with a render shorter than a segment is dropped
    x, target, ref = sampler.swaps(16, 2048)
    assert x.shape == target.shape == (16, 1, 1024) and ref.shape == (16, 2048)
    for xi, ti in zip(x[:, 0], target[:, 0], strict=True):  # same samples of another render
        ratio = (ti / xi).unique()
        assert ratio.numel() == 1 and ratio.item() in (2.0, 0.5, -1.0, -0.5, -2.0)
    with pytest.raises(TokgenError, match="--paired"):
        SwapSampler(audio, [], 1024, np.random.default_rng(0))


@pytest.fixture(scope="module")
def paired_corpus(tmp_path_factory):
    from tokgen.data.render import RenderOptions, render_dataset

    out = tmp_path_factory.mktemp("paired")
    render_dataset(out, RenderOptions(hours=0.02, seed=2, renders_per_piece=2, paired=True, workers=1))
    return out


def test_swap_training_decodes_in_the_other_renders_timbre(paired_corpus, corpus, trained, tmp_path):
    small = {**SMALL, "log_every": 1}
    cfg = MSVQTrainConfig(steps=2, freeze_codes=True, swap_fraction=1.0, **small)
    train_msvq(TINY, cfg, paired_corpus, tmp_path / "swap", resume=False, init_from=trained / "best")
    logged = [json.loads(line) for line in (tmp_path / "swap" / "train_log.jsonl").read_text().splitlines()]
    assert [r["swap"] for r in logged if "swap" in r] == [1.0, 1.0]
    with pytest.raises(TokgenError, match="--paired"):  # renders that are not aligned pairs
        train_msvq(TINY, cfg, corpus, tmp_path / "unpaired", resume=False, init_from=trained / "best")


def test_pitch_classes_are_measured_on_a_corpus_and_loaded_with_the_codec(trained, corpus, tmp_path, capsys):
    """`tokgen codec pitch-classes`: a table per level below the top, written beside the
    weights and loaded with them; a codec whose levels stand alone is refused."""
    import shutil

    from tokgen.cli import main

    model = tmp_path / "codec"
    shutil.copytree(trained / "best", model)
    assert main(["codec", "pitch-classes", "--data", str(corpus), "--model", str(model), "--files", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 3 and report["codes_seen"]["level1"] > 0
    table = load_codec(model).pitch_classes(1)
    assert table is not None and table.shape == (32, 12) and np.allclose(table.sum(1), 1.0)
    assert load_codec(model).pitch_classes(0) is not None  # the semantic top: from its centroids


def test_instruments_are_counted_on_a_corpus_and_loaded_with_the_codec(trained, corpus, tmp_path, capsys):
    """`tokgen codec instruments`: family counts per level from the corpus's labelled train
    files, written beside the weights and loaded with them; other codecs are refused."""
    import shutil

    from tokgen.cli import main
    from tokgen.data.render import split_families

    model = tmp_path / "codec"
    shutil.copytree(trained / "best", model)
    assert main(["codec", "instruments", "--data", str(corpus), "--model", str(model)]) == 0
    report = json.loads(capsys.readouterr().out)
    names = split_families(corpus, "train")
    assert report["files"] == len(names) and report["families"] == sorted(set(names))
    codec = load_codec(model)
    table = codec.instruments()
    assert table is not None and table.families == tuple(sorted(set(names)))
    assert sorted(table.counts) == list(range(len(codec.levels))) and all(
        c.shape == (32, len(table.families)) for c in table.counts.values()
    )
    assert all(c.sum() > 0 for c in table.counts.values())


def test_pitch_classes_need_an_msvq_codec(tiny_model_dir, corpus, capsys):
    from tokgen.cli import main

    assert main(["codec", "pitch-classes", "--data", str(corpus), "--model", str(tiny_model_dir)]) == 2
    assert "msvq codec" in capsys.readouterr().err
    assert main(["codec", "instruments", "--data", str(corpus), "--model", str(tiny_model_dir)]) == 2
    assert "msvq codec" in capsys.readouterr().err

"""`tokgen generate` end to end: tiny codec, tiny random priors, the in-process engine."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from tokgen.audio import save_audio
from tokgen.cli import main
from tokgen.codec import load_codec
from tokgen.codec.codes import load_codes, save_codes


def generate(tmp_path, tiny_model_dir, prior_set, *args):
    cmd = [
        sys.executable,
        "-m",
        "tokgen",
        "generate",
        "--codec",
        str(tiny_model_dir),
        "--priors",
        str(prior_set),
        "--backend",
        "hf",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.fixture
def generate_here(tmp_path, tiny_model_dir, prior_set, capsys, monkeypatch):
    """`tokgen generate` in this process: the same `main` as the command, without the seconds a fresh
    interpreter spends importing torch. Each test still runs the real command once (`generate`)."""
    monkeypatch.chdir(tmp_path)
    base = ["generate", "--codec", str(tiny_model_dir), "--priors", str(prior_set), "--backend", "hf"]

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        code = main([*base, *args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def test_primed_generation_is_reproducible_and_resumable(
    tmp_path, tiny_model_dir, prior_set, tone, generate_here
):
    save_audio(tmp_path / "prime.wav", tone[:1600], 16000)  # 0.1 s = 100 top frames of 16 samples
    args = ["--prime", "prime.wav", "--seconds", "0.1", "--seed", "5"]
    r1 = generate(tmp_path, tiny_model_dir, prior_set, *args, "--out", "a.wav", "--save-codes", "a.npz")
    assert r1.returncode == 0, r1.stderr
    info = json.loads(r1.stdout)
    assert info["prime_seconds"] == 0.1 and [lv["frames"] for lv in info["levels"]] == [200, 400]
    assert sf.info(tmp_path / "a.wav").frames == 1600  # 100 new top frames x 16 samples
    saved = load_codes(tmp_path / "a.npz")  # with the prime as its timbre reference
    assert saved.reference is not None and np.allclose(
        saved.reference, tone[:1600], atol=1e-4
    )  # 16-bit twice
    r2 = generate_here(*args, "--out", "b.wav")  # in this process: the same bytes as a fresh one
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    # Not a whole number of top frames (16 samples): the file still holds what was asked for.
    odd = generate_here(*args[:2], "--seconds", "0.1003", "--out", "o.wav")
    assert odd.returncode == 0, odd.stderr
    assert sf.info(tmp_path / "o.wav").frames == 1605

    r3 = generate_here(
        "--mode", "continue", "--codes", "a.npz", "--seconds", "0.05", "--out", "c.wav", "--include-prime"
    )
    assert r3.returncode == 0, r3.stderr
    assert [lv["frames"] for lv in json.loads(r3.stdout)["levels"]] == [250, 500]
    assert sf.info(tmp_path / "c.wav").frames == 250 * 16


def test_several_samples_at_another_rate_and_loudness(
    tmp_path, tiny_model_dir, prior_set, tone, generate_here
):
    from tokgen.loudness import integrated_loudness

    save_audio(tmp_path / "prime.wav", tone[:800], 16000)
    args = ["--prime", "prime.wav", "--seconds", "0.1", "--sample-rate", "22050", "--loudness-lufs", "-20"]
    r = generate(tmp_path, tiny_model_dir, prior_set, *args, "--seed=5", "--num-samples=2", "--out=x.wav")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["outputs"] == ["x_0.wav", "x_1.wav"] and info["seeds"] == [5, 6]
    assert info["sample_rate"] == 22050
    samples = [sf.read(tmp_path / f"x_{i}.wav", dtype="float32") for i in range(2)]
    assert all(rate == 22050 and audio.size == 2205 for audio, rate in samples)
    assert all(integrated_loudness(a, 22050) == pytest.approx(-20, abs=0.1) for a, _ in samples)  # 16-bit
    assert not np.array_equal(samples[0][0], samples[1][0])
    alone = generate_here(*args, "--seed", "6", "--out", "y.wav")
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["outputs"] == ["y.wav"]  # one sample: OUT itself
    assert (tmp_path / "y.wav").read_bytes() == (tmp_path / "x_1.wav").read_bytes()  # sample 1 is seed 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seconds", "0.1"], "--prime is required"),
        (["--prime", "nope.wav", "--seconds", "0.1"], "not found"),
        (["--mode", "continue", "--seconds", "0.1"], "--codes is required"),
        (["--mode", "ancestral", "--seconds", "0"], "seconds must be in"),
        (["--mode", "ancestral", "--seconds", "1e9"], "seconds must be in"),
        (["--mode", "ancestral", "--seconds", "1", "--temperature", "-1"], "temperature"),
        (["--mode", "ancestral", "--seconds", "1", "--temperature", "0"], "temperature must be > 0"),
        (["--mode", "ancestral", "--seconds", "1", "--top-k", "-1"], "top_k"),
        (["--mode", "ancestral", "--seconds", "-2"], "seconds must be in"),
        (["--mode", "ancestral", "--seconds", "1", "--segment-seconds", "-1"], "segment"),
        (["--mode", "ancestral", "--seconds", "1", "--top-p", "2"], "top_p"),
        (["--mode", "ancestral", "--seconds", "1", "--hop-fraction", "0"], "hop_fraction"),
        (["--mode", "ancestral", "--seconds", "1", "--num-samples", "9"], "--num-samples must be in [1, 8]"),
        (["--mode", "ancestral", "--seconds", "1", "--sample-rate", "4000"], "--sample-rate must be in"),
        (["--mode", "ancestral", "--seconds", "1", "--loudness-lufs", "1"], "--loudness-lufs must be in"),
    ],
)
def test_bad_generate_requests(tmp_path, tiny_model_dir, prior_set, args, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--codec", str(tiny_model_dir), "--priors", str(prior_set), "--backend", "hf", *args]
    assert main([*argv, "--out", "x.wav"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_missing_prior_set(tmp_path, tiny_model_dir):
    r = generate(
        tmp_path, tiny_model_dir, tmp_path / "none", "--mode", "ancestral", "--seconds", "1", "--out", "x.wav"
    )
    assert r.returncode == 2 and "no prior set" in r.stderr


def test_bad_primes_and_codes(tmp_path, tiny_model_dir, prior_set, tone, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_audio("silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    save_audio("short.wav", tone[:10], 16000)  # under one top-level hop (16 samples)
    sf.write("long.wav", np.tile(tone, 61)[: 61 * 16000], 16000)
    save_codes("other.npz", [np.zeros(4, dtype=np.int64)] * 3, load_codec(), 4 * 512)
    cases = [
        (["--prime", "silent.wav"], "silent"),
        (["--prime", "short.wav"], "shorter than one top-level frame"),
        (["--prime", "long.wav"], "the limit is 60 s"),
        (["--mode", "continue", "--codes", "other.npz"], "does not match codec"),
    ]
    base = ["generate", "--codec", str(tiny_model_dir), "--priors", str(prior_set), "--backend", "hf"]
    for args, message in cases:
        assert main([*base, *args, "--seconds", "1", "--out", "x.wav"]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "x.wav").exists()


def test_other_sample_rates_are_resampled(tmp_path, tiny_model_dir, prior_set, tone):
    import soxr

    save_audio(tmp_path / "prime8k.wav", soxr.resample(tone[:1600], 16000, 8000), 8000)
    r = generate(
        tmp_path, tiny_model_dir, prior_set, "--prime", "prime8k.wav", "--seconds", "0.05", "--out", "o.wav"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prime_seconds"] == 0.1


def test_bench_generate_prints_the_documented_figures(tmp_path, tiny_model_dir, prior_set):
    cmd = [sys.executable, "-m", "tokgen", "bench", "generate", "--json", "--codec", str(tiny_model_dir)]
    args = ["--priors", str(prior_set), "--backend", "hf", "--seconds", "0.05", "--concurrency", "3"]
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["backend"] == "hf" and out["rtf_1"] > 0 and out["rtf_3"] > 0
    assert [lv["level"] for lv in out["levels"]] == [0, 1]
    assert all(lv["seconds"] > 0 and lv["tokens"] > 0 for lv in out["levels"])


def test_segment_lengths_per_level():
    from tokgen.errors import TokgenError
    from tokgen.generation.generate import segment_frames

    codec = load_codec()  # hops 512 / 128 / 32 at 16 kHz: 125 middle and 500 bottom frames/s
    # whole top frames (32 ms): 2 s middle and 0.5 s bottom by default
    assert segment_frames(codec, None) == [None, 62 * 4, 16 * 16]
    assert segment_frames(codec, 1.0) == [None, 31 * 4, 31 * 16]
    assert segment_frames(codec, [0, 0.25]) == [None, None, 8 * 16]
    assert segment_frames(codec, 0) == [None, None, None]
    with pytest.raises(TokgenError, match="one per upsampler"):
        segment_frames(codec, [1.0, 1.0, 1.0])
    with pytest.raises(TokgenError, match="segment seconds"):
        segment_frames(codec, [1.0, -1.0])


def test_lead_windows_make_the_first_piece_final(tiny_model_dir):
    """Every level's lead window spans the same whole top frames, and the bottom level's
    covers the first piece plus the decoder's lookahead, so the first audio needs no second
    window (a lead inside the lookahead waited for every level's full second window)."""
    from tokgen.codec.top_levels import TopLevels
    from tokgen.generation.generate import lead_top_frames

    shipped = load_codec()
    for codec in (load_codec(tiny_model_dir), shipped, TopLevels(shipped, 2)):
        bottom = len(codec.levels) - 1
        hop, margin = codec.levels[bottom].hop, codec.decode_lookahead(bottom)
        for seconds in (0.001, 0.032, 0.1):
            lead = lead_top_frames(codec, seconds) * (codec.levels[0].hop // hop)
            first = lead - margin  # frames StreamDecoder makes final from the lead alone
            assert first * hop >= seconds * codec.sample_rate
            assert (first - codec.levels[0].hop // hop) * hop < seconds * codec.sample_rate  # no more


def test_an_early_first_piece_shortens_the_lead_windows(tiny_model_dir):
    """The first piece decoded from the codes ``first_lookahead_frames`` after it: the
    shipped set's lead is 5 top frames instead of 9 (20 middle frames: a 6-frame first
    piece and 14 after it); never more than the decoder's whole lookahead."""
    from tokgen.codec.top_levels import TopLevels
    from tokgen.generation.generate import (
        DEFAULT_FIRST_LOOKAHEAD_SECONDS,
        DEFAULT_FIRST_PIECE_SECONDS,
        first_lookahead_frames,
        lead_top_frames,
    )

    shipped = TopLevels(load_codec(), 2)
    ahead = first_lookahead_frames(shipped, DEFAULT_FIRST_LOOKAHEAD_SECONDS)
    assert ahead == 14 and first_lookahead_frames(shipped, None) == shipped.decode_lookahead(1) == 29
    assert lead_top_frames(shipped, DEFAULT_FIRST_PIECE_SECONDS, ahead) == 5
    assert lead_top_frames(shipped, DEFAULT_FIRST_PIECE_SECONDS) == 9
    tiny = load_codec(tiny_model_dir)  # a decoder that reads less than that: all of it
    assert first_lookahead_frames(tiny, DEFAULT_FIRST_LOOKAHEAD_SECONDS) == tiny.decode_lookahead(1)


def test_a_prime_is_encoded_as_far_as_the_priors_see_it(tiny_model_dir, tone):
    from tokgen.generation.generate import context_kept, encode_prime_context, prepare
    from tokgen.generation.sampler import LevelPrior

    codec = load_codec(tiny_model_dir)  # hops 16 and 8 at 16 kHz
    priors = [LevelPrior(None, n_ctx=64), LevelPrior(None, n_ctx=128)]  # type: ignore[arg-type]
    prime = tone[:16000] * np.linspace(0.2, 1.0, 16000, dtype=np.float32)  # no two frames alike
    full = prepare(codec, "primed", 1.0, prime)
    cut = prepare(
        codec, "continue", 1.0, codes=encode_prime_context(codec, priors, prime, margin_seconds=0.05)
    )
    assert [k.size for k in full.known] == [k.size for k in cut.known] and full.top_frames == cut.top_frames
    assert context_kept(codec, priors, full) == context_kept(codec, priors, cut)
    seen = [32, 64]  # the first window's context (n_ctx - hop) ...
    seen[0] = max(seen[0], 64 * 8 // 16)  # ... and the top under the bottom's context
    for level, (whole, part) in enumerate(zip(full.known, cut.known, strict=True)):
        assert np.array_equal(whole[-seen[level] :], part[-seen[level] :])
        assert not np.array_equal(whole, part)  # the start was not encoded (filler)


def test_saved_levels_resume_from_whole_top_frames():
    from tokgen.generation.generate import whole_top_frames

    hops = [16, 8, 2]  # 1, 2 and 8 frames per top frame
    known = [np.arange(5), np.arange(9), np.arange(37)]
    assert [k.size for k in whole_top_frames(known, hops)] == [5, 8, 32]


def test_the_output_format_follows_the_extension_and_a_bad_one_fails_first(tmp_path, tiny_model_dir, tone):
    import time

    import soundfile as sf

    sf.write(tmp_path / "p.wav", tone[:4000], 16000)
    started = time.monotonic()
    # No prior set exists: the extension must be refused before anything is loaded.
    r = generate(
        tmp_path, tiny_model_dir, tmp_path / "none", "--prime", "p.wav", "--seconds", "1", "--out", "x.mp4"
    )
    assert r.returncode == 2 and "x.mp4" in r.stderr and "use one of" in r.stderr
    assert time.monotonic() - started < 30 and not (tmp_path / "x.mp4").exists()


def test_an_mp3_continuation_decodes(tmp_path, tiny_model_dir, prior_set, tone):
    import soundfile as sf

    sf.write(tmp_path / "p.wav", tone[:4000], 16000)
    r = generate(
        tmp_path, tiny_model_dir, prior_set, "--prime", "p.wav", "--seconds", "0.5", "--out", "x.mp3"
    )
    assert r.returncode == 0, r.stderr
    info = sf.info(tmp_path / "x.mp3")
    assert info.format == "MP3" and info.samplerate == 16000 and info.frames >= 8000


def test_without_a_seed_runs_differ_and_the_reported_seed_reproduces(
    tmp_path, tiny_model_dir, prior_set, tone, generate_here
):
    sf.write(tmp_path / "p.wav", tone[:4000], 16000)
    args = ["--prime", "p.wav", "--seconds", "0.2"]

    def seed_of(r) -> dict:
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.splitlines()[-1])

    a = seed_of(generate(tmp_path, tiny_model_dir, prior_set, *args, "--out", "a.wav"))
    b = seed_of(generate_here(*args, "--out", "b.wav"))
    assert a["seed"] != b["seed"]
    audio = {name: sf.read(tmp_path / name)[0] for name in ("a.wav", "b.wav")}
    assert not np.array_equal(audio["a.wav"], audio["b.wav"])
    again = seed_of(generate_here(*args, "--out", "c.wav", "--seed", str(a["seed"])))
    assert again["seed"] == a["seed"] and np.array_equal(sf.read(tmp_path / "c.wav")[0], audio["a.wav"])

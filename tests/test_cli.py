"""The command line as a user runs it: real processes, JSON on stdout, errors on stderr."""

import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from tokgen.audio import save_audio


def tokgen(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokgen", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_encode_decode_roundtrip(tmp_path, tiny_model_dir, tone):
    save_audio(tmp_path / "in.flac", tone[:20001], 16000)
    enc = tokgen("encode", str(tmp_path / "in.flac"), str(tmp_path / "c.npz"), "--model", str(tiny_model_dir))
    assert enc.returncode == 0, enc.stderr
    info = json.loads(enc.stdout)
    assert [lv["frames"] for lv in info["levels"]] == [1251, 2501]
    for level in ("0", "1"):
        dec = tokgen(
            "decode",
            str(tmp_path / "c.npz"),
            str(tmp_path / f"out{level}.wav"),
            "--level",
            level,
            "--model",
            str(tiny_model_dir),
        )
        assert dec.returncode == 0, dec.stderr
        assert sf.info(tmp_path / f"out{level}.wav").frames == 20001  # trimmed to the input length


def test_errors_are_one_line_with_status_2(tmp_path, tiny_model_dir):
    (tmp_path / "bad.wav").write_bytes(b"\x00" * 100)
    r = tokgen("encode", str(tmp_path / "bad.wav"), str(tmp_path / "c.npz"), "--model", str(tiny_model_dir))
    assert (
        r.returncode == 2
        and r.stderr.startswith("tokgen: error: cannot read")
        and "Traceback" not in r.stderr
    )
    (tmp_path / "c.npz").write_bytes(b"PK garbage")
    r = tokgen("decode", str(tmp_path / "c.npz"), str(tmp_path / "o.wav"), "--model", str(tiny_model_dir))
    assert r.returncode == 2 and "not a valid tokgen codes file" in r.stderr
    r = tokgen(
        "encode", str(tmp_path / "bad.wav"), str(tmp_path / "c.npz"), "--model", str(tmp_path / "none")
    )
    assert r.returncode == 2 and "not found" in r.stderr


def test_training_options_out_of_range_are_usage_errors(tmp_path, capsys):
    """A training config refusing a value (pydantic) is one line naming it, status 2, before
    any data is read."""
    from tokgen.cli import main

    run = ["--data", str(tmp_path / "none"), "--run", str(tmp_path / "r")]
    for args, field in (
        (["prior", "train", "--level", "1", *run, "--lr", "-1"], "lr"),
        (["prior", "train", "--level", "1", *run, "--scheduled-sampling", "1.5"], "scheduled_sampling"),
        (["codec", "train", *run, "--steps", "0"], "steps"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tokgen: error: invalid ") and f"{field}: " in err and "\n" not in err


def test_decode_with_wrong_codec_or_level(tmp_path, tiny_model_dir, tone):
    save_audio(tmp_path / "in.wav", tone, 16000)
    tokgen("encode", str(tmp_path / "in.wav"), str(tmp_path / "c.npz"), "--model", str(tiny_model_dir))
    r = tokgen(
        "decode",
        str(tmp_path / "c.npz"),
        str(tmp_path / "o.wav"),
        "--level",
        "9",
        "--model",
        str(tiny_model_dir),
    )
    assert r.returncode == 2 and "--level must be in 0..1" in r.stderr
    r = tokgen("decode", str(tmp_path / "c.npz"), str(tmp_path / "o.wav"))  # the shipped codec: other hops
    assert r.returncode == 2 and "does not match codec" in r.stderr


def test_codec_eval_json_schema(corpus, tiny_model_dir):
    r = tokgen(
        "codec", "eval", "--json", "--model", str(tiny_model_dir), "--data", str(corpus), "--max-seconds", "5"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sample_rate"] == 16000 and [lv["level"] for lv in out["levels"]] == [0, 1]
    keys = {
        "level",
        "hop",
        "codebook_size",
        "bitrate_bps",
        "spectral_convergence_db",
        "si_sdr_db",
        "mel_distance",
        "key_consistency",
        "perplexity",
        "dead_code_fraction",
    }
    for lv in out["levels"]:
        assert keys <= set(lv) and all(np.isfinite(lv[k]) for k in keys)
        assert 0.0 <= lv["dead_code_fraction"] <= 1.0 and -1.0 <= lv["key_consistency"] <= 1.0
        low, high = lv["mel_distance_p10_p90"]
        assert (
            low <= high
            and lv["spectral_convergence_db_p10_p90"][0] <= lv["spectral_convergence_db_p10_p90"][1]
        )


def test_data_render_cli(tmp_path):
    r = tokgen("data", "render", str(tmp_path / "d"), "--hours", "0.02", "--seed", "1")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert set(summary["splits"]) == {"train", "valid", "test"} and summary["hours"] > 0.01
    for bad, message in (
        (["--hours", "-1"], "--hours"),
        (["--renders-per-piece", "0"], "--renders-per-piece"),
        (["--sample-rate", "100"], "--sample-rate"),
    ):
        r = tokgen("data", "render", str(tmp_path / "e"), *bad)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr

"""Codec training: resumable, deterministic, exported models load and code audio."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tokgen.codec import load_codec
from tokgen.codec.presets import PRESETS
from tokgen.codec.train import TrainConfig, export, train
from tokgen.errors import TokgenError
from tokgen.generation.generate import DEFAULT_PRIORS_DIR

SMALL = {"segment_samples": 2048, "batch_size": 2, "log_every": 5, "checkpoint_every": 5, "valid_crops": 2}


def test_resume_continues_where_it_stopped(corpus, tmp_path):
    first = train(PRESETS["tiny"], TrainConfig(steps=5, **SMALL), corpus, tmp_path / "a")
    assert {lv: r["step"] for lv, r in first.items()} == {0: 5, 1: 5}
    with pytest.raises(TokgenError, match="--resume"):
        train(PRESETS["tiny"], TrainConfig(steps=5, **SMALL), corpus, tmp_path / "a")
    resumed = train(None, TrainConfig(steps=10, **SMALL), corpus, tmp_path / "a", resume=True)
    assert {lv: r["step"] for lv, r in resumed.items()} == {0: 10, 1: 10}
    # Five steps then five more on resume equal ten steps at once (same seed, RNG restored).
    straight = train(PRESETS["tiny"], TrainConfig(steps=10, **SMALL), corpus, tmp_path / "b")
    for lv in (0, 1):
        assert resumed[lv]["valid_loss"] == pytest.approx(straight[lv]["valid_loss"], rel=1e-4)
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert {r["step"] for r in log} == {5, 10} and all("valid_loss" in r for r in log)


def test_levels_can_train_in_separate_runs_and_export(corpus, tmp_path):
    train(PRESETS["tiny"], TrainConfig(steps=3, **SMALL), corpus, tmp_path / "run", levels=[1])
    with pytest.raises(TokgenError, match=r"level 0 .* has not been trained"):
        export(tmp_path / "run", tmp_path / "model")
    train(None, TrainConfig(steps=3, **SMALL), corpus, tmp_path / "run", levels=[0], resume=True)
    export(tmp_path / "run", tmp_path / "model")
    codec = load_codec(tmp_path / "model")
    codes = codec.encode(np.random.default_rng(0).standard_normal(5000).astype(np.float32) * 0.1)
    assert [c.shape for c in codes] == [(313,), (625,)]


def test_bad_levels_are_refused(corpus, tmp_path):
    with pytest.raises(TokgenError, match="--levels"):
        train(PRESETS["tiny"], TrainConfig(steps=1, **SMALL), corpus, tmp_path, levels=[7])


def test_sigterm_checkpoints_before_exit(corpus, tmp_path):
    """A training process stopped with SIGTERM saves its state, and --resume continues it."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tokgen", "codec", "train", "--data", str(corpus), "--run", str(run)]
    cmd += ["--preset", "tiny", "--steps", "100000", "--checkpoint-every", "100000", "--batch-size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)  # wait until it has trained (logged at least one step per level)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    steps = [torch.load(run / f"level{lv}.pt", weights_only=False)["step"] for lv in (0, 1)]
    assert min(steps) >= 50  # state saved at exit, not only at checkpoint_every


def test_lr_schedule_warmup_constant_decay():
    from tokgen.training import scheduled_lr

    assert scheduled_lr(1.0, 0, warmup_steps=10) == pytest.approx(0.1)
    assert scheduled_lr(1.0, 50, warmup_steps=10) == 1.0
    # Before the decay starts the schedule is the constant one: a run can be resumed into a decay.
    assert scheduled_lr(1.0, 59, 10, decay_from=60, total_steps=160) == scheduled_lr(1.0, 59, 10)
    assert scheduled_lr(1.0, 110, 10, decay_from=60, total_steps=160) == pytest.approx(0.55)
    assert scheduled_lr(1.0, 160, 10, decay_from=60, total_steps=160) == pytest.approx(0.1)


def test_freeze_codes_trains_a_wider_decoder_for_the_same_codes(corpus, tiny_model_dir, tmp_path, capsys):
    """``--init-from --freeze-codes --decoder-channels``: a new decoder on the old encoder and
    codebook, so every code (and every prior trained on the codes) stays valid."""
    from tokgen.cli import main

    run, out = tmp_path / "run", tmp_path / "model"
    args = ["codec", "train", "--data", str(corpus), "--run", str(run), "--levels", "1", "--steps", "4"]
    args += ["--init-from", str(tiny_model_dir), "--freeze-codes", "--decoder-channels", "8,16,32"]
    assert main([*args, "--batch-size", "2"]) == 0
    assert main(["codec", "export", str(run), str(out)]) == 0
    capsys.readouterr()
    old, new = load_codec(tiny_model_dir), load_codec(out)
    audio = np.random.default_rng(1).standard_normal(6000).astype(np.float32) * 0.1
    for lv in (0, 1):
        np.testing.assert_array_equal(old.encode_level(audio, lv), new.encode_level(audio, lv))
    old_state, new_state = old.model.state_dict(), new.model.state_dict()
    assert all(
        torch.equal(v, new_state[k]) for k, v in old_state.items() if not k.startswith("levels.1.decoder")
    )
    assert new.model.cfg.levels[1].decoder_channels == [8, 16, 32]
    assert new_state["levels.1.decoder.net.0.weight"].shape[0] == 32  # wider than the old 16
    codes = new.encode_level(audio, 1)
    assert new.decode(codes, 1).shape == old.decode(codes, 1).shape
    config = json.loads((out / "config.json").read_text())
    assert (
        config["training_steps"][1]
        == json.loads((tiny_model_dir / "config.json").read_text())["training_steps"][1] + 4
    )


def test_decoder_options_need_a_model_to_start_from(corpus, tmp_path, capsys):
    from tokgen.cli import main

    args = ["codec", "train", "--data", str(corpus), "--run", str(tmp_path / "r"), "--freeze-codes"]
    assert main(args) == 2
    assert "--init-from" in capsys.readouterr().err
    bad = ["codec", "train", "--data", str(corpus), "--run", str(tmp_path / "r2"), "--levels", "1"]
    bad += ["--init-from", str(tmp_path), "--freeze-codes"]  # not a codec directory
    assert main(bad) == 2


def test_msvq_options_are_checked_before_training(corpus, tmp_path, capsys):
    from tokgen.cli import main

    base = ["codec", "train", "--data", str(corpus), "--run", str(tmp_path / "r")]
    assert main([*base, "--preset", "msvq-tiny", "--freeze-codes"]) == 2  # from nothing
    assert "--init-from" in capsys.readouterr().err
    assert main([*base, "--preset", "tiny", "--swap-fraction", "0.5"]) == 2  # a VQ-VAE
    assert "msvq" in capsys.readouterr().err
    assert main([*base, "--preset", "msvq-tiny", "--swap-fraction", "0.5", "--steps", "1"]) == 2
    assert "--paired" in capsys.readouterr().err  # this corpus has no aligned renders
    assert main([*base, "--preset", "tiny", "--teacher-forced-fraction", "0.5"]) == 2  # a VQ-VAE
    assert "msvq" in capsys.readouterr().err
    assert main([*base, "--preset", "msvq-tiny", "--teacher-forced-fraction", "0.5"]) == 2  # no prior
    assert "--teacher-forced-prior" in capsys.readouterr().err
    top = ["--teacher-forced-prior", str(DEFAULT_PRIORS_DIR / "level0"), "--teacher-forced-fraction", "0.5"]
    assert main([*base, "--preset", "msvq-tiny", *top]) == 2  # the top prior is no upsampler
    assert "upsampler" in capsys.readouterr().err
    middle = ["--teacher-forced-prior", str(DEFAULT_PRIORS_DIR / "level1"), "--teacher-forced-fraction", ".5"]
    assert main([*base, "--preset", "msvq-tiny", *middle, "--teacher-forced-passes", "0"]) == 2
    assert "--teacher-forced-passes" in capsys.readouterr().err

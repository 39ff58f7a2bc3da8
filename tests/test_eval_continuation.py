"""``tokgen eval continuation`` end to end on the tiny test models (hf engine)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tokgen.cli import main

SYSTEMS = {"model", "real_vs_real", "noise", "repeat_prime", "unigram_codes", "codec_reconstruction"}
METRICS = {"fad", "fad_classic", "kid", "kid_aisfx", "is", "timbre_consistency"}


def test_eval_continuation_json_scores_every_system(corpus, tiny_model_dir, prior_set, tmp_path, capsys):
    classifier = tmp_path / "classifier"
    train = ["eval", "train-classifier", "--data", str(corpus), "--out", str(classifier), "--steps", "10"]
    assert main([*train, "--batch-size", "4"]) == 0
    # the tiny corpus has one test piece: its train split stands in (the command's default is test)
    args = ["eval", "continuation", "--json", "--data", str(corpus), "--split", "train", "--n", "4"]
    args += ["--prime-seconds", "1", "--seconds", "3", "--backend", "hf", "--classifier", str(classifier)]
    args += ["--codec", str(tiny_model_dir), "--priors", str(prior_set), "--ablations"]
    capsys.readouterr()
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 4 and set(result["systems"]) == SYSTEMS | {"model_real_levels_1"}  # 2-level codec
    families = result["classifier"]["families"]
    assert 0 <= result["classifier"]["accuracy_on_real"] <= 1
    for system in result["systems"].values():
        assert set(system) == METRICS and all(math.isfinite(v) for v in system.values())
        assert 1 - 1e-9 <= system["is"] <= len(families) and 0 <= system["timbre_consistency"] <= 1
    s = result["systems"]
    # White noise is the farthest from music in the classic (mel and chroma) view.
    assert s["noise"]["fad_classic"] > max(s["real_vs_real"]["fad_classic"], s["repeat_prime"]["fad_classic"])


def test_metrics_count_a_continuation_consistent_when_its_family_matches_its_prime():
    from tokgen.eval.continuation import metrics

    rng = np.random.default_rng(0)
    frames = {name: rng.standard_normal((40, 3)) for name in ("aisfx", "classic", "timbre")}
    primes = np.eye(4)[[0, 1, 2, 3]]  # one certain family per prime
    clips = np.eye(4)[[0, 1, 2, 0]] * 0.7 + 0.075  # three agree with their prime, one does not
    m = metrics(frames, frames, clips, primes)
    assert m["timbre_consistency"] == 0.75
    assert m["fad"] == pytest.approx(0, abs=1e-6) and m["fad_classic"] == pytest.approx(0, abs=1e-6)
    assert 1 < m["is"] < 4

"""``tokgen eval continuation`` end to end on the tiny test models (hf engine)."""

from __future__ import annotations

import json
import math

from tokgen.cli import main

SYSTEMS = {"model", "real_vs_real", "noise", "repeat_prime", "unigram_codes", "codec_reconstruction"}


def test_eval_continuation_json_scores_every_system(corpus, tiny_model_dir, prior_set, capsys):
    # the tiny corpus has one test piece: its train split stands in (the command's default is test)
    args = ["eval", "continuation", "--json", "--data", str(corpus), "--split", "train", "--n", "4"]
    args += ["--prime-seconds", "1", "--seconds", "3", "--backend", "hf"]
    args += ["--codec", str(tiny_model_dir), "--priors", str(prior_set)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 4 and set(result["systems"]) == SYSTEMS
    for system in result["systems"].values():
        assert all(math.isfinite(system[m]) for m in ("fad", "fad_classic", "kid"))
        assert system["is"] is None and system["timbre_consistency"] is None  # no classifier yet
    s = result["systems"]
    # White noise is the farthest from music in the classic (mel and chroma) view.
    assert s["noise"]["fad_classic"] > max(s["real_vs_real"]["fad_classic"], s["repeat_prime"]["fad_classic"])

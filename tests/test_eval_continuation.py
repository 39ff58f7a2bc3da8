"""``tokgen eval continuation`` end to end on the tiny test models (hf engine)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tokgen.cli import main

SYSTEMS = {"model", "real_vs_real", "noise", "repeat_prime", "unigram_codes", "codec_reconstruction"}
METRICS = {
    "n",
    "fad",
    "fad_ci95",
    "fad_classic",
    "fad_classic_ci95",
    "kid",
    "kid_aisfx",
    "is",
    "timbre_consistency",
    "timbre_probability",
    "key_consistency",
}
SEAMS = {"model", "model_real_levels_1", "real_vs_real", "codec_reconstruction"}  # seam_flux_ratio
SAMPLED = {"model", "model_real_levels_1"}  # distinct_code_ratio


def test_eval_continuation_json_scores_every_system(corpus, tiny_model_dir, prior_set, tmp_path, capsys):
    classifier = tmp_path / "classifier"
    train = ["eval", "train-classifier", "--data", str(corpus), "--out", str(classifier), "--steps", "10"]
    assert main([*train, "--batch-size", "4"]) == 0
    # the tiny corpus has one test piece: its train split stands in (the command's default is test);
    # n = 2 continued pieces and 2 others for real_vs_real
    args = ["eval", "continuation", "--json", "--data", str(corpus), "--split", "train", "--n", "2"]
    args += ["--prime-seconds", "1", "--seconds", "3", "--backend", "hf", "--classifier", str(classifier)]
    args += ["--codec", str(tiny_model_dir), "--priors", str(prior_set), "--ablations"]
    args += ["--bootstrap", "20", "--plots", str(tmp_path / "plots")]
    capsys.readouterr()
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and set(result["systems"]) == SYSTEMS | {"model_real_levels_1"}  # 2-level codec
    families = result["classifier"]["families"]
    assert 0 <= result["classifier"]["accuracy_on_real"] <= 1
    for name, system in result["systems"].items():
        want = METRICS | ({"seam_flux_ratio", "seam_flux_excess"} if name in SEAMS else set())
        want |= {"distinct_code_ratio"} if name in SAMPLED else set()
        assert set(system) == want, name
        assert system["n"] == 2  # every system, real_vs_real included, at the same n
        numbers = [
            v
            for k, v in system.items()
            if k not in ("fad_ci95", "fad_classic_ci95", "seam_flux_ratio", "seam_flux_excess")
        ]
        assert all(math.isfinite(v) for v in numbers)
        assert 1 - 1e-9 <= system["is"] <= len(families) and 0 <= system["timbre_consistency"] <= 1
        assert -1 <= system["key_consistency"] <= 1
        lo, hi = system["fad_ci95"]
        assert 0 <= lo <= hi
    s = result["systems"]
    assert s["model"]["distinct_code_ratio"] > 0
    # White noise is the farthest from music in the classic (mel and chroma) view.
    assert s["noise"]["fad_classic"] > max(s["real_vs_real"]["fad_classic"], s["repeat_prime"]["fad_classic"])
    # The repeated prime is in its own key.
    assert s["repeat_prime"]["key_consistency"] > s["noise"]["key_consistency"]
    plots = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in plots] == ["clip00.png", "clip01.png"] and all(
        p.stat().st_size > 1000 for p in plots
    )


def test_eval_continuation_needs_n_other_pieces_for_real_vs_real(corpus):
    from tokgen.errors import TokgenError
    from tokgen.eval.continuation import held_out

    items, others = held_out(corpus, "train", 2, 1.0, 3.0, 16000)
    assert len(items) == len(others) == 2
    assert not {p.piece_id for p in items} & {p.piece_id for p in others}  # other pieces
    with pytest.raises(TokgenError, match="real_vs_real"):
        held_out(corpus, "train", 1000, 1.0, 3.0, 16000)


def test_metrics_count_a_continuation_consistent_when_its_family_and_key_match_its_prime():
    from tokgen.eval.continuation import metrics

    rng = np.random.default_rng(0)
    frames = {
        name: [rng.standard_normal((10, 3)) for _ in range(4)] for name in ("aisfx", "classic", "timbre")
    }
    primes = np.eye(4)[[0, 1, 2, 3]]  # one certain family per prime
    clips = np.eye(4)[[0, 1, 2, 0]] * 0.7 + 0.075  # three agree with their prime, one does not
    prime_profiles = rng.random((4, 12))
    profiles = prime_profiles.copy()
    profiles[3] = prime_profiles[3].max() - prime_profiles[3]  # the last clip's profile is inverted
    m = metrics(frames, frames, clips, primes, profiles, prime_profiles)
    assert m["n"] == 4 and m["timbre_consistency"] == 0.75
    # the prime's family gets 0.775 in the three that agree, 0.075 in the other
    assert m["timbre_probability"] == pytest.approx((3 * 0.775 + 0.075) / 4, abs=1e-4)
    assert m["key_consistency"] == pytest.approx((1 + 1 + 1 - 1) / 4, abs=1e-4)
    assert m["fad"] == pytest.approx(0, abs=1e-6) and m["fad_classic"] == pytest.approx(0, abs=1e-6)
    assert 1 < m["is"] < 4

"""The timbre swap test's pairing and verdicts (the codec and classifier are real)."""

import numpy as np

from tokgen.codec import load_codec
from tokgen.eval.classifier import load_classifier
from tokgen.eval.continuation import Piece
from tokgen.eval.timbre_swap import swap_partners, timbre_swap


def test_each_piece_is_paired_with_the_next_of_another_family():
    assert swap_partners(["organ", "organ", "piano", "organ"]) == [2, 2, 3, 2]
    assert swap_partners(["organ", "organ"]) == [-1, -1]  # no other family: no pair
    assert swap_partners([]) == []


def test_verdicts_on_real_decodes(tiny_model_dir):
    """With a codec that has no timbre encoder the reference changes nothing: the swap is
    heard exactly as the own-reference decode, and the gain is 0."""
    codec, classifier = load_codec(tiny_model_dir), load_classifier()
    rng = np.random.default_rng(0)
    families = classifier.cfg.families[:3]

    def clip(seconds: float, f0: float) -> np.ndarray:
        t = np.arange(int(seconds * codec.sample_rate)) / codec.sample_rate
        return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    pieces = [
        Piece(f"p{i}", f, clip(1.0, 220 * (i + 1)), clip(2.0, 220 * (i + 1))) for i, f in enumerate(families)
    ]
    pieces.append(Piece("unknown", "not-a-family", clip(1.0, 300), clip(2.0, 300)))  # skipped
    result = timbre_swap(codec, classifier, pieces)
    assert result["n"] == 3
    assert result["reference_family_gain"] == 0.0
    probs = result["reference_family_probability"]
    assert probs["own_reference"] == probs["swapped_reference"]
    assert result["swap_named_as_codes"] == result["own_reference_accuracy"]
    assert result["chance"] == round(1 / len(classifier.cfg.families), 3)


def test_the_command_refuses_bad_options_before_any_work():
    import subprocess
    import sys

    for args in (["--n", "0"], ["--seconds", "-1"], ["--levels", "7"]):
        done = subprocess.run(
            [sys.executable, "-m", "tokgen", "eval", "timbre-swap", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and "tokgen: error:" in done.stderr, (args, done.stderr)

"""The timbre classifier: it learns families from labelled renders, loads offline, and its
outputs are what IS, KID and timbre consistency need."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tokgen.cli import main
from tokgen.eval.classifier import DEFAULT_DIR, load_classifier

SR = 16000


def notes(wave: str, rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """Random notes of 0.25..0.5 s, as sines or as (band-limited) sawtooths."""
    out = []
    while sum(map(len, out)) < seconds * SR:
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        t = np.arange(int(rng.uniform(0.25, 0.5) * SR)) / SR
        harmonics = range(1, int(4000 / f0)) if wave == "saw" else [1]
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in harmonics)
        out.append(0.2 * tone * np.exp(-3 * t))
    return np.concatenate(out)[: int(seconds * SR)].astype(np.float32)


@pytest.fixture(scope="module")
def two_timbres(tmp_path_factory) -> Path:
    """A corpus in ``tokgen data render``'s layout whose families are sine vs sawtooth notes."""
    root = tmp_path_factory.mktemp("timbres")
    rng = np.random.default_rng(0)
    items = []
    for split, count in (("train", 6), ("valid", 3), ("test", 2)):
        for family, wave in (("pipe", "sine"), ("synth_lead", "saw")):
            for k in range(count):
                path = f"audio/{split}/{wave}{k}.flac"
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / path, notes(wave, rng), SR)
                items.append({"path": path, "split": split, "program_family": family, "sample_rate": SR})
    (root / "manifest.json").write_text(json.dumps({"version": 1, "sample_rate": SR, "items": items}))
    return root


def test_train_classifier_learns_the_families(two_timbres, tmp_path, capsys, monkeypatch):
    out = tmp_path / "clf"
    args = ["eval", "train-classifier", "--data", str(two_timbres), "--out", str(out)]
    assert main([*args, "--steps", "120", "--batch-size", "16"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["families"] == ["pipe", "synth_lead"]
    assert summary["valid_accuracy"] >= 0.9, summary

    def refuse(*a, **k):
        raise OSError("network access while loading the classifier")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    clf = load_classifier(out)
    rng = np.random.default_rng(7)  # notes never seen in training
    sine, saw = notes("sine", rng, 5.0), notes("saw", rng, 5.0)
    assert clf.probabilities(sine, SR).argmax() == 0 and clf.probabilities(saw, SR).argmax() == 1
    p = clf.probabilities(sine, SR)
    assert (
        p.shape == (2,) and p.sum() == pytest.approx(1.0) and np.array_equal(p, clf.probabilities(sine, SR))
    )
    features = clf.frames(sine, SR)
    assert features.shape == (4, clf.dim) and np.isfinite(features).all()  # 2 s windows, hop 1 s
    # Loudness says nothing: a quieter copy is the same clip to the classifier.
    np.testing.assert_allclose(clf.probabilities(0.1 * saw, SR), clf.probabilities(saw, SR), atol=1e-4)


def test_shipped_classifier_loads_and_names_a_family():
    clf = load_classifier()
    families = json.loads((DEFAULT_DIR / "config.json").read_text())["families"]
    assert clf.cfg.families == families and len(families) >= 8
    p = clf.probabilities(notes("saw", np.random.default_rng(0), 3.0), SR)
    assert p.shape == (len(families),) and p.sum() == pytest.approx(1.0)


def test_missing_classifier_is_a_clear_error(tmp_path):
    from tokgen.errors import CheckpointError

    with pytest.raises(CheckpointError, match="timbre classifier"):
        load_classifier(tmp_path)


def test_training_is_reproducible(two_timbres, tmp_path, capsys):
    for name in ("a", "b"):
        args = ["eval", "train-classifier", "--data", str(two_timbres), "--out", str(tmp_path / name)]
        assert main([*args, "--steps", "8", "--batch-size", "4"]) == 0
    capsys.readouterr()
    a, b = ((tmp_path / n / "model.safetensors").read_bytes() for n in ("a", "b"))
    assert a == b

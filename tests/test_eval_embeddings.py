"""The embeddings load with no network and see what they should."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from tokgen.eval.embeddings import EMBEDDINGS, ClassicEmbedding, load_embedding


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access during an embedding load")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def tone(freq: float, seconds: float = 4.0, sr: int = 16000, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(EMBEDDINGS))
def test_embeddings_load_offline_and_tell_a_tone_from_noise(no_network, name):
    embedding = load_embedding(name)
    a = embedding.frames(tone(440), 16000)
    again = embedding.frames(tone(440, phase=1.0), 16000)
    noise = embedding.frames(np.random.default_rng(0).normal(0, 0.1, 64000).astype(np.float32), 16000)
    assert a.ndim == 2 and a.shape[1] == embedding.dim and len(a) >= 2 and np.isfinite(a).all()
    assert np.array_equal(a, embedding.frames(tone(440), 16000))  # deterministic
    same, different = np.linalg.norm(a.mean(0) - again.mean(0)), np.linalg.norm(a.mean(0) - noise.mean(0))
    assert different > 10 * same, (same, different)


def test_classic_chroma_finds_the_pitch_class():
    embedding = ClassicEmbedding()
    for freq, pitch_class in ((440.0, 0), (523.25, 3), (392.0, 10)):  # A, C, G
        frames = embedding.frames(tone(freq), 16000)
        chroma_mean = frames[:, 64:76].mean(0)
        assert int(np.argmax(chroma_mean)) == pitch_class, (freq, chroma_mean.round(2))


def test_unknown_embedding_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown embedding"):
        load_embedding("vggish")

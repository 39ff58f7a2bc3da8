"""How far small, known changes of the real continuations move FAD (both embeddings), next
to the codec's reconstruction: what a codec must get right before a continuation model
can beat the repeated prime (docs/MODELS.md, "Why the model does not win yet").

    python scripts/measure_fad_sensitivity.py [--codec DIR] [--n 32]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import soxr
import torch

from tokgen.codec import load_codec
from tokgen.eval import baselines
from tokgen.eval.continuation import pieces
from tokgen.eval.distances import fad
from tokgen.eval.embeddings import load_embedding
from tokgen.settings import get_settings

torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("--codec", default=None)
parser.add_argument("--n", type=int, default=32)
args = parser.parse_args()

codec = load_codec(args.codec)
sr = codec.sample_rate
data = get_settings().cache_dir / f"heldout-test-{sr}"  # what `tokgen eval continuation` renders
items = pieces(Path(data), "test", args.n, 4.0, 5.0, sr)
embeddings = {name: load_embedding(name) for name in ("aisfx", "classic")}
rng = np.random.default_rng(0)


def embed(clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([e.frames(c, sr) for c in clips]) for name, e in embeddings.items()}


def lowpass(x: np.ndarray, hz: int) -> np.ndarray:
    return soxr.resample(soxr.resample(x, sr, 2 * hz), 2 * hz, sr)[: x.size].astype(np.float32)


def with_noise(x: np.ndarray, snr_db: float) -> np.ndarray:
    noise = rng.standard_normal(x.size) * baselines.rms(x) * 10 ** (-snr_db / 20)
    return (x + noise).astype(np.float32)


real = [p.real for p in items]
variants = {
    "repeat_prime": [baselines.repeat_prime(p.prime, p.real.size) for p in items],
    "codec_reconstruction": [baselines.reconstruction(codec, x) for x in real],
    "real, half as loud": [0.5 * x for x in real],
    "real + white noise at 40 dB SNR": [with_noise(x, 40) for x in real],
    "real + white noise at 30 dB SNR": [with_noise(x, 30) for x in real],
    "real, low-passed at 6 kHz": [lowpass(x, 6000) for x in real],
    "real, low-passed at 4 kHz": [lowpass(x, 4000) for x in real],
}
reference = embed(real)
for name, clips in variants.items():
    mine = embed(clips)
    print(json.dumps({"variant": name} | {e: round(fad(mine[e], reference[e]), 1) for e in mine}))

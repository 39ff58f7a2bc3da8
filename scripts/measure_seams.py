"""Do segment seams show in the audio? Spectral flux at seams vs elsewhere.

Continues the shipped prime by 10 s, with segments (the defaults) and without (0), for a
few seeds, and compares the log-mel spectral flux (frame-to-frame change, 16 ms frames)
in the frames around each bottom-level seam with all other frames. A seam that clicks or
changes timbre abruptly raises the ratio above what the unsegmented render shows at the
same positions. Usage: python scripts/measure_seams.py [--seeds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np
import torch

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.spectral import log_mel_from_magnitude, stft_magnitude
from tokgen.generation.generate import prepare, segment_frames
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import SamplingSettings

HOP = 256  # 16 ms


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    mag = stft_magnitude(torch.from_numpy(audio), 1024, HOP)  # (bins, frames)
    return log_mel_from_magnitude(mag, sample_rate, 80).numpy()


def seam_ratio(audio: np.ndarray, sample_rate: int, seams: list[int]) -> float:
    """Mean spectral flux within one frame of the seams / mean flux elsewhere."""
    m = log_mel(audio, sample_rate)
    flux = np.abs(np.diff(m, axis=1)).mean(axis=0)
    near = np.zeros(flux.size, dtype=bool)
    for s in seams:
        f = s // HOP
        near[max(0, f - 1) : f + 2] = True
    near = near[: flux.size]
    return float(flux[near].mean() / flux[~near].mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    codec = load_codec()
    prime = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    job = prepare(codec, "primed", 10.0, prime)
    bottom_hop = codec.levels[-1].hop
    seg = segment_frames(codec, None)[-1]
    assert seg is not None
    start = job.known[-1].size
    total = job.top_frames * codec.levels[0].hop // bottom_hop
    seams = [(b - start) * bottom_hop for b in range(start + seg, total, seg)]  # in new audio
    result = {}
    for name, seconds in (("segmented", None), ("unsegmented", 0)):
        generator = Generator.load(codec, segment_seconds=seconds)

        async def run(g: Generator = generator) -> list[float]:
            async with g:
                ratios = []
                for seed in range(args.seeds):
                    out = await g.render(job, SamplingSettings(seed=seed))
                    ratios.append(seam_ratio(out.new_audio(), codec.sample_rate, seams))
                return ratios

        ratios = asyncio.run(run())
        result[name] = {"mean": round(float(np.mean(ratios)), 3), "per_seed": [round(r, 3) for r in ratios]}
    result["seams"] = len(seams)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

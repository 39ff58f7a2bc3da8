"""Do segment seams show in the audio? Spectral flux at seams vs elsewhere.

Continues the shipped prime by 10 s with segments (the defaults), with segments that do
not warm up (overlap 0) and without segments (0), for a few seeds, and compares the
log-mel spectral flux (frame-to-frame change, 16 ms frames)
in the frames around each bottom-level seam with all other frames
(``tokgen.eval.structure.seam_flux_ratio``, which ``tokgen eval continuation`` reports
for its continuations). A seam that clicks or changes timbre abruptly raises the ratio
above what the unsegmented render shows at the same positions.
Usage: python scripts/measure_seams.py [--seeds 4] [--codec DIR --priors DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.eval.structure import seam_flux_ratio
from tokgen.generation.generate import DEFAULT_OVERLAP_SECONDS, prepare, segment_frames
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import SamplingSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--codec", default=None, help="codec model directory (default: shipped)")
    parser.add_argument("--priors", default=None, help="prior set directory (default: shipped)")
    args = parser.parse_args()
    codec = load_codec(args.codec)
    prime = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    job = prepare(codec, "primed", 10.0, prime)
    bottom_hop = codec.levels[-1].hop
    seg = segment_frames(codec, None)[-1]
    assert seg is not None
    start = job.known[-1].size
    total = job.top_frames * codec.levels[0].hop // bottom_hop
    seams = [(b - start) * bottom_hop for b in range(start + seg, total, seg)]  # in new audio
    result = {}
    configs = (
        ("segmented", None, DEFAULT_OVERLAP_SECONDS),
        ("segmented_cold", None, 0.0),
        ("unsegmented", 0, 0.0),
    )
    for name, seconds, overlap in configs:
        generator = Generator.load(codec, args.priors, segment_seconds=seconds, overlap_seconds=overlap)

        async def run(g: Generator = generator) -> list[float]:
            async with g:
                ratios = []
                for seed in range(args.seeds):
                    out = await g.render(job, SamplingSettings(seed=seed))  # the prime is the reference
                    ratios.append(
                        seam_flux_ratio([out.new_audio()], codec.sample_rate, [seams]) or float("nan")
                    )
                return ratios

        ratios = asyncio.run(run())
        result[name] = {"mean": round(float(np.mean(ratios)), 3), "per_seed": [round(r, 3) for r in ratios]}
    result["seams"] = len(seams)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

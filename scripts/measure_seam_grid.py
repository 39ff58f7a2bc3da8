"""How much spectral flux the *real* continuations of the evaluation have at seam-like
positions, on and off the beat grid of the corpus (most tunes at 120 bpm, cut on a
beat): what ``seam_flux_ratio`` gives for audio without any seams. The reason
``tokgen eval continuation`` reports ``seam_flux_excess`` beside the ratio.

    python scripts/measure_seam_grid.py [--n 128]
"""

from __future__ import annotations

import argparse
import json

from tokgen.cli.common import held_out_corpus
from tokgen.eval.continuation import HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS, held_out
from tokgen.eval.structure import seam_flux_ratio, seam_positions

# (label, seconds between positions, offset of the first grid in seconds)
GRIDS = [
    ("every 0.5 s", 0.5, 0.0),
    ("every 0.5 s, +0.25 s", 0.5, 0.25),
    ("every 1 s", 1.0, 0.0),
    ("every 1 s, +0.25 s", 1.0, 0.25),
    ("every 2 s", 2.0, 0.0),
    ("every 2 s, +0.25 s", 2.0, 0.25),
    ("every 2 s, +0.125 s", 2.0, 0.125),
    ("every 0.7 s", 0.7, 0.0),
    ("every 0.3 s", 0.3, 0.0),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128)
    args = ap.parse_args()
    sr = 16000
    data = held_out_corpus(sr, HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS)
    _, others = held_out(data, "test", args.n, 4.0, 5.0, sr)  # real_vs_real's clips
    clips = [p.real for p in others]
    out = {}
    for label, every, shift in GRIDS:
        positions = seam_positions(clips[0].size, round(every * sr), -round(shift * sr))
        out[label] = round(seam_flux_ratio(clips, sr, [positions] * len(clips)) or float("nan"), 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

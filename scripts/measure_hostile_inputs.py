"""Peak memory of refusing hostile uploads (issue 17): a codes file whose 0-d ``model`` entry
is declared as a 100-million-character string, and a FLAC of 15 s at 655,350 Hz x 8 channels.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_hostile_inputs.py [--dir DIR]

Builds both files into DIR (streamed, so building them stays small), then reads each in a
fresh process the way the server does (its bytes, with the server's bounds) and prints, per
case, one JSON line: its size, what ``load_codes``/``load_audio`` said, and how far the
process's peak RSS rose during the call (``resource.getrusage``: ``ru_maxrss``)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CHARS = 100_000_000  # the declared length of the model name
FLAC_RATE, FLAC_CHANNELS, FLAC_SECONDS = 655_350, 8, 15


def build_codes_bomb(path: Path) -> None:
    """A valid-looking codes file (tiny codes, scalars) whose ``model`` is a 0-d '<U100000000'
    array: 400 MB of zeros, deflated to ~390 KB, written a block at a time."""
    header = {"descr": f"<U{CHARS}", "fortran_order": False, "shape": ()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        small = {
            "codes_0": np.zeros(4, np.int16),
            "sample_rate": np.asarray(16000, np.int64),
            "hops": np.asarray([64], np.int64),
            "num_samples": np.asarray(256, np.int64),
        }
        for key, value in small.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value)
        with zf.open("model.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            block = bytes(1 << 22)
            left = CHARS * 4
            while left:
                f.write(block[: min(left, len(block))])
                left -= min(left, len(block))


def build_flac_bomb(path: Path, rate: int = FLAC_RATE) -> None:
    """A constant signal (FLAC's constant subframes: a few bytes a block), non-silent."""
    import soundfile as sf

    block = np.full((1 << 16, FLAC_CHANNELS), 0.25, np.float32)
    with sf.SoundFile(str(path), "w", rate, FLAC_CHANNELS, subtype="PCM_16", format="FLAC") as f:
        left = rate * FLAC_SECONDS
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


CHILD = r"""
import json, resource, sys
kind, path = sys.argv[1], sys.argv[2]
from tokgen.errors import TokgenError
if kind == "codes":
    import math
    from tokgen.codec.codes import load_codes
    # the server's bound for a continue: (60 s prime + 600 s) at the finest hop
    call = lambda data: load_codes(data, max_frames=math.ceil(660 * 16000 / 64))
else:
    from tokgen.audio import load_audio
    call = lambda data: load_audio(data, 16000, max_seconds=60.0)
data = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    call(data)
    said = "accepted"
except TokgenError as exc:
    said = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"case": kind, "bytes": len(data), "peak_rss_growth_mib": round((after - before) / 1024, 1),
                  "peak_rss_mib": round(after / 1024, 1), "said": said[:200]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "tokgen-hostile")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    cases = [
        ("codes", args.dir / "model-bomb.npz", build_codes_bomb),
        ("audio", args.dir / "flac-bomb.flac", build_flac_bomb),
        # the most a file within the rate and channel bounds can be: 184 MB decoded, accepted
        ("audio", args.dir / "flac-384k.flac", lambda p: build_flac_bomb(p, 384_000)),
    ]
    root = Path(__file__).resolve().parent.parent
    for kind, path, build in cases:
        if not path.exists():
            build(path)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(path)], cwd=root, capture_output=True, text=True
        )
        line = out.stdout.strip() or json.dumps({"case": kind, "error": out.stderr[-2000:]})
        print(line.replace('{"case": ', f'{{"file": "{path.name}", "case": ', 1))


if __name__ == "__main__":
    main()

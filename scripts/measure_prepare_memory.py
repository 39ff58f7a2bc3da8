"""Memory of preparing a batch job: peak RSS growth of encoding a whole prime.

A queued job encodes all of its prime (its result returns every level's codes, prime
included), two at a time (``--max-preparing``). Each prime length is measured in a fresh
process (peak RSS only grows), with noise as the prime (the codec's cost does not depend
on what it hears). docs/RELIABILITY.md quotes the output.
Usage: python scripts/measure_prepare_memory.py [--codec DIR] [--seconds 10 30 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import resource, sys, time
import numpy as np
from tokgen.codec import load_codec
from tokgen.generation.generate import prepare
codec = load_codec(sys.argv[1] or None)
seconds = float(sys.argv[2])
prime = (np.random.default_rng(0).standard_normal(int(seconds * codec.sample_rate)) * 0.1).astype(np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
prepare(codec, "primed", 5.0, prime)
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(codec.name, round(grew, 1), round(time.perf_counter() - t, 2))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--codec", default="", help="codec model directory (default: shipped)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    args = parser.parse_args()
    rows = []
    for seconds in args.seconds:
        command = [sys.executable, "-c", CHILD, args.codec, str(seconds)]
        name, grew, took = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
        rows.append({"codec": name, "prime_s": seconds, "peak_mib": float(grew), "took_s": float(took)})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

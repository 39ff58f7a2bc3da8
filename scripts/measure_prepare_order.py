"""When do N streams that arrive together have their primes prepared? Side by side (each
prepare in its own thread, as the service's thread pool runs them: what tokgen does)
against one or two at a time, first come first served. Prints the median and the last
completion time of each arrangement.

Measured 2026-12-01 (8 streams, 5 s primes, shipped codec, 2-vCPU AMD EPYC with AVX-512
BF16 and no AMX, beside two training runs): side by side median 0.48 s / last 0.52 s;
one at a time 0.46 / 0.80; two at a time 0.47 / 0.76. Serialising does not bring the
median stream's start forward (one encode alone uses the two cores poorly), and it delays
the last; so prepares stay side by side.

    python scripts/measure_prepare_order.py --streams 8 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile as sf

from tokgen.generation.generator import Generator
from tokgen.generation.sampler import SamplingSettings
from tokgen.generation.spec import ContinueSpec


def completion_times(
    g: Generator, spec: ContinueSpec, n: int, gate: contextlib.AbstractContextManager
) -> list[float]:
    start = time.perf_counter()

    def one(_: int) -> float:
        with gate:
            g.prepare(spec, True)
        return time.perf_counter() - start

    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(one, range(n)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prime-seconds", type=float, default=5.0)
    args = ap.parse_args()
    g = Generator.load(backend="hf")  # the engines are not used: only the codec and windows
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    prime = (rng.standard_normal(int(args.prime_seconds * 44100)) * 0.1).astype(np.float32)
    sf.write(buf, prime, 44100, format="FLAC")
    spec = ContinueSpec("primed", 10.0, SamplingSettings(seed=0), buf.getvalue(), None)
    g.prepare(spec, True)  # warm-up
    gates: dict[str, contextlib.AbstractContextManager] = {
        "side_by_side": contextlib.nullcontext(),
        "one_at_a_time": threading.Lock(),
        "two_at_a_time": threading.BoundedSemaphore(2),
    }
    runs: dict[str, list[list[float]]] = {name: [] for name in gates}
    for _ in range(args.rounds):
        for name, gate in gates.items():
            runs[name].append([round(t, 3) for t in completion_times(g, spec, args.streams, gate)])
    summary = {
        name: {
            "median_s": round(float(np.median([np.median(r) for r in rs])), 3),
            "last_s": round(float(np.median([r[-1] for r in rs])), 3),
            "runs": rs,
        }
        for name, rs in runs.items()
    }
    print(json.dumps({"streams": args.streams, "prime_seconds": args.prime_seconds, **summary}))
    g.close()


if __name__ == "__main__":
    main()

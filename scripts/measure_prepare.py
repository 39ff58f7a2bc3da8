"""What preparing a stream's prime costs (``generation.prepare_pool``), two ways:

1. CPU per prime: the example prime prepared for streaming ``--primes`` times in a fresh
   process with glibc's defaults and in one that keeps freed memory (what a prepare worker
   does: ``prepare_pool._keep_freed_memory``), alternating ``--rounds`` times: wall, user
   and system seconds and minor page faults per prime (``getrusage``), one thread.
2. Round trip through a ``PreparePool`` of 2 workers while 0, 1 and 3 threads of this
   process spin in Python, holding the interpreter lock as a busy server's threads do:
   a request that fails at once in the worker (no prime, no codes), so what is timed is
   getting it there and the answer back.

    python scripts/measure_prepare.py [--primes 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import threading
import time


def cpu_per_prime(primes: int, keep: bool) -> dict[str, float]:
    """In this process (a child of ``main``): the example prime prepared ``primes`` times."""
    import torch

    from tokgen.assets import EXAMPLE_PRIME
    from tokgen.generation.generator import Generator
    from tokgen.generation.prepare_pool import _keep_freed_memory
    from tokgen.v1 import tokgen_pb2 as pb

    torch.set_num_threads(1)
    if keep:
        _keep_freed_memory()
    g = Generator.load(backend="hf")
    spec = g.spec_from_pb(pb.ContinueRequest(prime_audio=EXAMPLE_PRIME.read_bytes(), seconds=10.0))
    g.prepare(spec, streaming=True)  # warm-up
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(primes):
        g.prepare(spec, streaming=True)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    return {
        "wall_s": wall / primes,
        "user_s": (after.ru_utime - before.ru_utime) / primes,
        "system_s": (after.ru_stime - before.ru_stime) / primes,
        "page_faults": (after.ru_minflt - before.ru_minflt) / primes,
    }


def spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i


async def round_trips(pool, spec, busy: int, requests: int) -> list[float]:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    spinners = [threading.Thread(target=spin, args=(stop,)) for _ in range(busy)]
    for t in spinners:
        t.start()
    times = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            with contextlib.suppress(Exception):  # refused in the worker: that is the point
                await pool.prepare(spec, True)
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        for t in spinners:
            t.join()
    return times


def measure_round_trips(rounds: int) -> None:
    from tokgen.generation.prepare_pool import PreparePool
    from tokgen.generation.sampler import SamplingSettings
    from tokgen.generation.spec import ContinueSpec

    settings = SamplingSettings()
    spec = ContinueSpec(mode="continue", seconds=1.0, settings=settings, prime_audio=None, codes=None)
    pool = PreparePool(object(), [], 2)  # type: ignore[arg-type]  # the requests never reach a codec
    try:
        for busy in (0, 1, 3):
            times = sorted(t for _ in range(rounds) for t in asyncio.run(round_trips(pool, spec, busy, 30)))
            print(
                f"round trip, {busy} busy threads: p50 {statistics.median(times) * 1000:.1f} ms, "
                f"max {times[-1] * 1000:.1f} ms ({len(times)} requests)",
                flush=True,
            )
    finally:
        pool.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--primes", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(cpu_per_prime(args.primes, args.child == "keep")))
        return
    for _ in range(args.rounds):
        for mode in ("default", "keep"):
            cmd = [sys.executable, __file__, "--child", mode, "--primes", str(args.primes)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"{'glibc defaults' if mode == 'default' else 'freed memory kept'}: per prime "
                f"{r['wall_s']:.4f} s wall, user {r['user_s']:.4f} s, system {r['system_s']:.4f} s, "
                f"{r['page_faults']:.0f} page faults",
                flush=True,
            )
    measure_round_trips(args.rounds)


if __name__ == "__main__":
    main()

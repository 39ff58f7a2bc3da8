"""Time to first audio and playback stalls of N concurrent in-process streams (no gRPC),
per first-piece setting: where a stream's first audio goes without the server around it.

Each stream continues the shipped example prime by 10 s; per setting a warm-up stream,
then two rounds of N at once. Printed per setting: median prepare (decode + encode the
prime), TTFA p50 and max, the first piece's seconds, the stall (``stalled_seconds`` of
``tokgen bench serve``) p50 and max, and when the streams were done.

Measured 2026-12-02 (shipped msvq models, vLLM, one core, a training run on the other; 2-vCPU
AMD EPYC with AVX-512 BF16 and no AMX): 8 streams, TTFA p50 1.79 / 1.93 s with the old
0.128 s leads (commit 6f30dde, its ``lead_seconds``), 1.03 / 1.07 s with the lead sized from
the decoder's margin (``--first-piece 0.032``); 1 stream 0.81 -> 0.45 s.
``--growth 1000000`` turns the doubling of windows after the lead off.

    python scripts/measure_ttfa.py --streams 8 --first-piece 0.032
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from tokgen.assets import EXAMPLE_PRIME
from tokgen.bench.serve import stalled_seconds
from tokgen.generation import windows
from tokgen.generation.generator import Generator
from tokgen.v1 import tokgen_pb2 as pb


async def one_stream(g: Generator, prime: bytes, seed: int) -> tuple[float, float, float, float, float]:
    req = pb.ContinueRequest(prime_audio=prime, seconds=10.0, sampling=pb.SamplingParams(seed=seed))
    started = time.perf_counter()
    spec = g.spec_from_pb(req)
    job = await asyncio.to_thread(g.prepare, spec, True)
    prepared = time.perf_counter() - started
    arrivals = []
    async for _index, piece in g.stream_samples(job, spec):
        arrivals.append((time.perf_counter() - started, piece.size / g.codec.sample_rate))
    return prepared, arrivals[0][0], arrivals[0][1], stalled_seconds(arrivals), arrivals[-1][0]


async def measure(first_piece: float, growth: int, streams: int, rounds: int) -> None:
    windows.LEAD_GROWTH = growth
    prime = EXAMPLE_PRIME.read_bytes()
    g = await Generator.aload(first_piece_seconds=first_piece)
    try:
        await one_stream(g, prime, 99)  # warm-up
        rows = []
        for r in range(rounds):
            rows += await asyncio.gather(*(one_stream(g, prime, 100 * r + i) for i in range(streams)))
    finally:
        await g.aclose()

    def med(k: int) -> float:
        return statistics.median(row[k] for row in rows)

    print(
        f"first piece {first_piece:g} s, growth {growth}, {streams} streams: prepare {med(0):.3f} s, "
        f"TTFA p50 {med(1):.3f} max {max(r[1] for r in rows):.3f} s, first piece {med(2):.3f} s, "
        f"stall p50 {med(3):.3f} max {max(r[3] for r in rows):.3f} s, done {med(4):.2f} s",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--first-piece", type=float, nargs="+", default=[0.032])
    p.add_argument("--growth", type=int, default=windows.LEAD_GROWTH)
    args = p.parse_args()
    for first in args.first_piece:
        asyncio.run(measure(first, args.growth, args.streams, args.rounds))


if __name__ == "__main__":
    main()

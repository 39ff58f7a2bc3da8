"""Where a stream's first audio goes under load: N in-process streams in a closed loop
(each of N workers runs ``--requests`` continuations of the example prime back to back,
as ``tokgen bench serve`` does, without gRPC), and per request the time from its start to:
the prime prepared (``prep``; ``prep_cpu``: the CPU time the preparing thread or worker
used in it), the first new top code (``top_1``), the top level's lead window done
(``top_lead``), the first new middle code (``mid_1``), the middle lead done (``mid_lead``)
and the first audio piece out (``first``). Medians and maxima of all requests, then of
those after the first round (which start one at a time, not all together).

    python scripts/measure_ttfa_timeline.py --streams 8 [--prepare-workers 2] [--engine-nice 5]

``--prepare-workers 0`` prepares in threads of this process (as the server did before
``generation.prepare_pool``); ``--engine-nice 0`` leaves the vLLM engines' priority alone
(``tokgen serve`` sets it to ``TOKGEN_ENGINE_NICE``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from tokgen.assets import EXAMPLE_PRIME
from tokgen.engine.vllm import renice_engine_processes
from tokgen.generation.generator import Generator
from tokgen.v1 import tokgen_pb2 as pb

MARKS = ("prep", "prep_cpu", "top_1", "top_lead", "mid_1", "mid_lead", "first")


async def one_request(g: Generator, prime: bytes, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    spec = g.spec_from_pb(
        pb.ContinueRequest(prime_audio=prime, seconds=10.0, sampling=pb.SamplingParams(seed=seed))
    )

    def timed_prepare():  # the thread's own CPU time, where no worker process prepares
        cpu = time.thread_time()
        return g.prepare(spec, True), time.thread_time() - cpu

    if g.prepare_workers:
        job, cpu = await g.aprepare(spec, streaming=True), float("nan")
    else:
        job, cpu = await asyncio.to_thread(timed_prepare)
    marks = {"prep": time.perf_counter() - started, "prep_cpu": cpu}
    per_top = g.codec.levels[0].hop // g.codec.levels[1].hop
    start = [job.start_top, job.start_top * per_top]
    leads = [p.lead_frames or 1 for p in g.priors]
    names = [("top_1", "top_lead"), ("mid_1", "mid_lead")]

    def watch(board, level: int) -> None:
        if level > 1:
            return
        known = board.prefix_frames(level) - start[level]
        for name, frames in zip(names[level], (1, leads[level]), strict=True):
            if name not in marks and known >= frames:
                marks[name] = time.perf_counter() - started

    async for _index, _piece in g.stream_samples(job, spec, watch):
        marks.setdefault("first", time.perf_counter() - started)
    return marks


def report(title: str, rows: list[dict[str, float]]) -> None:
    parts = []
    for name in MARKS:
        values = sorted(r[name] for r in rows if name in r and r[name] == r[name])
        if values:
            parts.append(f"{name} {statistics.median(values):.3f}/{values[-1]:.3f}")
    print(f"{title} (n={len(rows)}, p50/max s): " + "  ".join(parts), flush=True)


async def measure(streams: int, requests: int, workers: int, engine_nice: int) -> None:
    prime = EXAMPLE_PRIME.read_bytes()
    g = await Generator.aload()
    renice_engine_processes(engine_nice)
    await asyncio.to_thread(g.start_prepare_workers, workers)
    try:
        await one_request(g, prime, 99)  # warm-up
        rows: list[tuple[int, dict[str, float]]] = []

        async def client(i: int) -> None:
            for r in range(requests):
                rows.append((r, await one_request(g, prime, 100 * r + i)))

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(streams)))
        wall = time.perf_counter() - began
    finally:
        await g.aclose()
    print(f"{streams} streams, prepare workers {workers}, engine nice {engine_nice}:")
    report("  all", [m for _, m in rows])
    report("  after the first round", [m for r, m in rows if r > 0])
    print(f"  aggregate real-time factor {len(rows) * 10.0 / wall:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--requests", type=int, default=3)
    p.add_argument("--prepare-workers", type=int, default=2)
    p.add_argument("--engine-nice", type=int, default=5)
    args = p.parse_args()
    asyncio.run(measure(args.streams, args.requests, args.prepare_workers, args.engine_nice))


if __name__ == "__main__":
    main()

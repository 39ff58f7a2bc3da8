"""What do tokgen's engine metrics cost? vLLM tokens/s with tokgen's per-step stat logger
(what ships) vs vLLM's own default loggers (what ran before: its logging and Prometheus
loggers), in one process, measurements alternating.

Which engine is created first can matter (a trial run showed a 5-13% gap that flipped
sign when the order was swapped), so run both orders: ``--first ours`` and ``--first vllm``.
Usage: python scripts/measure_metrics_overhead.py --first ours|vllm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

import tokgen.engine.vllm as vllm_engine
from tokgen.bench.engine import default_size_prior, throughput

PROMPT, NEW, BATCHES, ROUNDS = 256, 512, (16, 1), 3


def build(model: Path, loggers: str) -> vllm_engine.VLLMEngine:
    if loggers == "ours":
        return vllm_engine.VLLMEngine(model)
    original = vllm_engine.AsyncLLM.from_engine_args

    def vllm_defaults(args, stat_loggers=None, **kwargs):
        args.disable_log_stats = False
        return original(args, **kwargs)

    vllm_engine.AsyncLLM.from_engine_args = vllm_defaults  # type: ignore[method-assign]
    try:
        return vllm_engine.VLLMEngine(model)
    finally:
        vllm_engine.AsyncLLM.from_engine_args = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", choices=["ours", "vllm"], default="ours")
    args = parser.parse_args()
    order = [args.first, "vllm" if args.first == "ours" else "ours"]
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        model = default_size_prior(Path(tmp) / "prior", PROMPT + NEW)
        engines = {name: build(model, name) for name in order}
        tokens_per_s: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCHES} for n in order}
        for r in range(ROUNDS):
            for name in order if r % 2 == 0 else order[::-1]:
                for b in BATCHES:
                    rate = loop.run_until_complete(
                        throughput(engines[name], b, PROMPT, NEW, engines[name].vocab_size)
                    )
                    tokens_per_s[name][b].append(rate)
        for engine in engines.values():
            loop.run_until_complete(engine.close())
    median = {n: {b: round(statistics.median(v), 1) for b, v in d.items()} for n, d in tokens_per_s.items()}
    ratio = {b: round(median["ours"][b] / median["vllm"][b], 3) for b in BATCHES}
    print(json.dumps({"created_first": args.first, "tokens_per_s": median, "ours_over_vllm": ratio}))


if __name__ == "__main__":
    main()

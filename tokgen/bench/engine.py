"""``tokgen bench engine``: vLLM vs the in-process engine on the same prior, side by side.

Throughput is new tokens per wall-clock second for ``batch`` concurrent requests of
``prompt_tokens`` + ``new_tokens`` (sampling at temperature 1, seeds fixed). Both backends
run in one process, one after the other, each after a warm-up request, so their ratio is
meaningful even on a noisy machine (absolute numbers are not).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from tokgen.engine.base import Engine, SamplingParams
from tokgen.engine.factory import create_engine
from tokgen.prior.model import default_size_prior


async def throughput(engine: Engine, batch: int, prompt_tokens: int, new_tokens: int, vocab: int) -> float:
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, vocab, prompt_tokens).tolist() for _ in range(batch)]

    async def one(i: int, tag: str) -> int:
        n = 0
        params = SamplingParams(max_tokens=new_tokens, temperature=1.0, seed=i)
        async for chunk in engine.generate(f"{tag}-{i}", prompts[i], params):
            n += len(chunk)
        return n

    await one(0, f"warmup-{batch}")
    start = time.perf_counter()
    total = sum(await asyncio.gather(*(one(i, f"bench-{batch}") for i in range(batch))))
    return total / (time.perf_counter() - start)


def bench_engines(
    prior_dir: Path | None,
    prompt_tokens: int,
    new_tokens: int,
    batches: tuple[int, ...],
    dtype: str = "float32",
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = prior_dir or default_size_prior(Path(tmp) / "prior", prompt_tokens + new_tokens)
        result: dict = {
            "model": "random prior, default upsampler size" if prior_dir is None else str(prior_dir),
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "dtype": dtype,
        }
        rates: dict[str, dict[int, float]] = {}
        for backend in ("hf", "vllm"):
            engine = create_engine(model_dir, backend, dtype=dtype)

            async def run(engine: Engine = engine) -> dict[int, float]:
                try:
                    return {
                        b: await throughput(engine, b, prompt_tokens, new_tokens, engine.vocab_size)
                        for b in batches
                    }
                finally:
                    await engine.close()

            rates[backend] = asyncio.run(run())
        for b in batches:
            vllm, hf = rates["vllm"][b], rates["hf"][b]
            result[f"batch{b}"] = {
                "vllm_tokens_per_s": round(vllm, 1),
                "hf_tokens_per_s": round(hf, 1),
                "ratio": round(vllm / hf, 2),
            }
        return result

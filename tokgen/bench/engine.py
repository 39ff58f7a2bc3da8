"""``tokgen bench engine``: the engines against what the arithmetic allows, side by side.

Four ways to decode the same model, in one process, interleaved (``rounds`` times each way
and batch, each round in another order; the figures are the rounds' medians):

- ``reference``: a bare decode loop in plain torch (``ReferenceLoop``, gpt-fast's
  ``generate.py`` in shape): static KV cache tensors, attention over the real context only,
  Gumbel-max sampling on tensors. No scheduling, no streaming: the yardstick.
- ``transformers_generate``: ``model.generate(do_sample=True)``, what a user would run
  without tokgen.
- ``hf``: tokgen's in-process engine; ``vllm``: tokgen's vLLM engine.

Each runs ``batch`` requests of ``prompt_tokens`` + ``new_tokens`` at once (temperature 1,
seeds fixed) after a warm-up; the engines stay up between their turns. Per way and batch:
new tokens per wall-clock second, ``ms_per_step`` (wall time / new tokens per request: each
step gives every request one token; prefill included) and ``gflops`` (the model's FLOPs for
all prompt and new tokens over the wall time; ``flops`` says how they are counted). Ratios
inside one run are meaningful on a noisy machine; absolute numbers are not
(``vllm_vs_reference_rounds`` shows how far one round's ratio strays). The CPU is named in
the output.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokgen.bench.reference import ReferenceLoop, flops_per_token
from tokgen.engine.base import Engine, SamplingParams
from tokgen.engine.factory import cpu_flags, create_engine, resolve_dtype
from tokgen.prior.model import default_size_prior

WAYS = ("reference", "transformers_generate", "hf", "vllm")


def cpu_info() -> dict:
    """``lscpu``'s model name and whether the CPU has bf16 instructions (the flags that
    ``engine.factory`` picks the engines' dtype by)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = cpu_flags()
    return {
        "model": fields.get("Model name", "unknown").strip(),
        "cpus": os.cpu_count(),
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
    }


def work_flops(config: Any, batch: int, prompt_tokens: int, new_tokens: int) -> float:
    """FLOPs of one run: each prompt token attends to half the prompt on average, each new
    token to the prompt and half the new tokens."""
    per_request = prompt_tokens * flops_per_token(config, prompt_tokens / 2) + new_tokens * flops_per_token(
        config, prompt_tokens + new_tokens / 2
    )
    return batch * per_request


def prompts_for(batch: int, prompt_tokens: int, vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(3, vocab, prompt_tokens).tolist() for _ in range(batch)]


async def engine_seconds(engine: Engine, batch: int, prompt_tokens: int, new_tokens: int) -> float:
    prompts = prompts_for(batch, prompt_tokens, engine.vocab_size)

    async def one(i: int, tag: str) -> int:
        n = 0
        params = SamplingParams(max_tokens=new_tokens, temperature=1.0, seed=i)
        async for chunk in engine.generate(f"{tag}-{i}", prompts[i], params):
            n += len(chunk)
        return n

    await one(0, f"warmup-{batch}")
    start = time.perf_counter()
    total = sum(await asyncio.gather(*(one(i, f"bench-{batch}") for i in range(batch))))
    seconds = time.perf_counter() - start
    assert total == batch * new_tokens, (total, batch, new_tokens)
    return seconds


def reference_seconds(model: Any, batch: int, prompt_tokens: int, new_tokens: int) -> float:
    vocab = model.config.vocab_size
    prompts = torch.tensor(prompts_for(batch, prompt_tokens, vocab))
    loop = ReferenceLoop(model, batch, prompt_tokens + new_tokens)
    loop.generate(prompts, min(new_tokens, 8))  # warm-up
    start = time.perf_counter()
    loop.generate(prompts, new_tokens)
    return time.perf_counter() - start


@torch.inference_mode()
def generate_seconds(model: Any, batch: int, prompt_tokens: int, new_tokens: int) -> float:
    vocab = model.config.vocab_size
    prompts = torch.tensor(prompts_for(batch, prompt_tokens, vocab))
    options = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "pad_token_id": 0}

    def run(n: int) -> None:
        torch.manual_seed(0)
        out = model.generate(
            prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n, min_new_tokens=n, **options
        )
        assert out.shape == (batch, prompt_tokens + n)

    run(min(new_tokens, 8))  # warm-up
    start = time.perf_counter()
    run(new_tokens)
    return time.perf_counter() - start


def bench_engines(
    prior_dir: Path | None,
    prompt_tokens: int,
    new_tokens: int,
    batches: tuple[int, ...],
    dtype: str = "float32",
    vllm_dtype: str = "auto",
    rounds: int = 3,
) -> dict:
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = prior_dir or default_size_prior(Path(tmp) / "prior", prompt_tokens + new_tokens)
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), local_files_only=True, dtype=getattr(torch, dtype)
        ).eval()
        config = model.config
        params = sum(p.numel() for p in model.parameters())
        result: dict = {
            "model": "random prior, default upsampler size" if prior_dir is None else str(prior_dir),
            "cpu": cpu_info(),
            "torch_threads": torch.get_num_threads(),
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "dtype": dtype,  # the reference, transformers generate and hf
            "vllm_dtype": resolve_dtype(vllm_dtype, "vllm"),
            "rounds": rounds,
            "flops": {
                "parameters": params,
                "per_token": "2 x (linear weights + output head) + 4 x layers x hidden x context",
                "per_new_token_at_mean_context": round(
                    flops_per_token(config, prompt_tokens + new_tokens / 2)
                ),
                "gflops_counts": "prompt and new tokens",
            },
        }
        # Every request of a batch in one engine batch (vLLM's limit is 64 sequences).
        engines = {
            "hf": create_engine(model_dir, "hf", dtype=dtype, max_batch=max(batches)),
            "vllm": create_engine(model_dir, "vllm", dtype=result["vllm_dtype"]),
        }
        loop = asyncio.new_event_loop()  # the engines' loop, in a thread of its own
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        def on_engine(engine: Engine) -> Callable[[int], float]:
            def run(b: int) -> float:
                job = engine_seconds(engine, b, prompt_tokens, new_tokens)
                return asyncio.run_coroutine_threadsafe(job, loop).result()

            return run

        measure: dict[str, Callable[[int], float]] = {
            "reference": lambda b: reference_seconds(model, b, prompt_tokens, new_tokens),
            "transformers_generate": lambda b: generate_seconds(model, b, prompt_tokens, new_tokens),
            "hf": on_engine(engines["hf"]),
            "vllm": on_engine(engines["vllm"]),
        }
        try:
            seconds = interleaved_seconds(measure, batches, rounds)
        finally:
            for engine in engines.values():
                asyncio.run_coroutine_threadsafe(engine.close(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
        for b in batches:
            result[f"batch{b}"] = batch_figures(
                seconds, b, work_flops(config, b, prompt_tokens, new_tokens), new_tokens
            )
        return result


def interleaved_seconds(
    measure: dict[str, Callable[[int], float]], batches: tuple[int, ...], rounds: int
) -> dict[str, dict[int, list[float]]]:
    """Seconds per way and batch, one list entry per round. A round runs every way once
    per batch, starting one way later each round: on a machine whose load drifts over
    minutes, the ways share the drift instead of each getting a stretch of its own."""
    ways = list(measure)
    seconds: dict[str, dict[int, list[float]]] = {way: {b: [] for b in batches} for way in ways}
    for r in range(rounds):
        for b in batches:
            for way in ways[r % len(ways) :] + ways[: r % len(ways)]:
                seconds[way][b].append(measure[way](b))
    return seconds


def batch_figures(
    seconds: dict[str, dict[int, list[float]]], batch: int, flops: float, new_tokens: int
) -> dict:
    """One batch's figures from the rounds' median seconds per way, and the vLLM /
    reference ratio of each round (how much of the spread is the machine's)."""
    figures: dict = {}
    rate: dict[str, float] = {}
    for way in WAYS:
        s = statistics.median(seconds[way][batch])
        rate[way] = batch * new_tokens / s
        figures[f"{way}_tokens_per_s"] = round(rate[way], 1)
        figures[f"{way}_ms_per_step"] = round(1000 * s / new_tokens, 3)
        figures[f"{way}_gflops"] = round(flops / s / 1e9, 3)
    figures["ratio"] = round(rate["vllm"] / rate["hf"], 2)  # vLLM / hf
    figures["vllm_vs_reference"] = round(rate["vllm"] / rate["reference"], 2)
    figures["hf_vs_reference"] = round(rate["hf"] / rate["reference"], 2)
    figures["vllm_vs_transformers_generate"] = round(rate["vllm"] / rate["transformers_generate"], 2)
    figures["vllm_vs_reference_rounds"] = [
        round(ref / vllm, 2)
        for ref, vllm in zip(seconds["reference"][batch], seconds["vllm"][batch], strict=True)
    ]
    return figures

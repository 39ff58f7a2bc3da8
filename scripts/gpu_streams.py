"""Real-time streams per GPU, and the memory bandwidth the decode loop achieves (issue 18).

For the GPU machine (torch + transformers only: run it with the project on PYTHONPATH, no
install). Each level's prior of the shipped set (and, as a what-if, a bottom upsampler
with about 10x the middle upsampler's parameters, random weights: speed does not depend
on them) is decoded by ``tokgen.bench.reference.ReferenceLoop`` (static KV cache, the
yardstick loop of ``tokgen bench engine``) at several batch sizes, its window full (a
prompt of the window less the new tokens). Per model and batch: decode steps alone (the
prefill is taken out: two runs of different lengths, differenced), as new tokens per
second and ms per step, and the bytes a step must read (weights once plus
every row's K/V over its context) over the step time, against the GPU's peak bandwidth.

Streams: a stream needs ``rate_l`` tokens per second of level ``l`` (the codec's frame
rate there: 31.25, 125 and 500 Hz for the msvq hops 512/128/32 at 16 kHz). S streams fit
on one GPU running every level's model in turn when the time shares add up to at most 1:
``sum_l S * rate_l / tokens_per_s_l(batch S) <= 1``. The largest measured S that fits is
reported, for the shipped set (top + middle) and with the 10x bottom upsampler added.

    PYTHONPATH=. python scripts/gpu_streams.py --device cuda --out streams.json
    python scripts/gpu_streams.py --device cpu --batches 1,4 --new-tokens 16   # a dry run
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tokgen.bench.reference import ReferenceLoop

ASSETS = Path(__file__).resolve().parent.parent / "tokgen" / "assets" / "models"


def level_rates(codec_dir: Path) -> list[float]:
    """Frames per second of each level of an msvq codec (from its config.json)."""
    cfg = json.loads((codec_dir / "config.json").read_text())
    encoder_hop = math.prod(cfg["encoder_strides"])
    return [cfg["sample_rate"] / (encoder_hop * s) for s in cfg["level_strides"]]


def context_of(prior_dir: Path) -> int:
    """Positions of an upsampler's full window (its config's max_position_embeddings)."""
    return int(json.loads((prior_dir / "config.json").read_text())["max_position_embeddings"])


def ten_x_bottom(middle: LlamaForCausalLM) -> LlamaForCausalLM:
    """A bottom upsampler of about 10x the middle one's parameters (random weights)."""
    cfg = middle.config
    big = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=384,
        intermediate_size=4 * 384,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=6,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(big)


def step_bytes(model: LlamaForCausalLM, batch: int, context: float) -> float:
    """What one decode step reads: every weight once, and each row's K and V over its context."""
    cfg = model.config
    element = next(model.parameters()).element_size()
    weights = sum(p.numel() for p in model.parameters()) * element
    kv = 2 * cfg.num_hidden_layers * batch * context * cfg.hidden_size * element
    return weights + kv


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model: LlamaForCausalLM, batch: int, context: int, new_tokens: int, device: str) -> dict:
    """Decode ``new_tokens`` per row after a prompt that fills the window but the new tokens."""
    prompt = max(1, context - new_tokens)
    vocab = model.config.vocab_size
    prompts = torch.randint(3, vocab, (batch, prompt), generator=torch.Generator().manual_seed(0))
    loop = ReferenceLoop(model, batch, prompt + new_tokens)
    with torch.inference_mode():
        logits = loop.forward(prompts.to(device), 0)
    loop.decode(logits, prompt, 8)  # warm-up (kernels, allocator)
    # The decode steps alone, timed directly: a difference of two whole runs (each with its
    # own prefill) came out negative on a loaded CPU.
    sync(device)
    start = time.perf_counter()
    loop.decode(logits, prompt, new_tokens)
    sync(device)
    step = (time.perf_counter() - start) / new_tokens
    return {
        "batch": batch,
        "tokens_per_s": round(batch / step, 1),
        "ms_per_step": round(1000 * step, 3),
        "achieved_gb_per_s": round(step_bytes(model, batch, prompt + new_tokens / 2) / step / 1e9, 2),
    }


def streams_that_fit(levels: list[dict], rates: list[float]) -> dict:
    """The largest measured batch S whose per-level time shares sum to at most 1."""
    best: dict = {"streams": 0, "time_share": None}
    for i, row in enumerate(levels[0]["runs"]):
        s = row["batch"]
        share = sum(s * rate / lv["runs"][i]["tokens_per_s"] for lv, rate in zip(levels, rates, strict=True))
        if share <= 1.0 and s > best["streams"]:
            best = {"streams": s, "time_share": round(share, 3)}
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on a CPU")
    ap.add_argument("--priors", type=Path, default=ASSETS / "priors")
    ap.add_argument("--codec", type=Path, default=ASSETS / "codec")
    ap.add_argument("--batches", default="1,8,32,64,128,256,512")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--peak-gb-per-s", type=float, default=4800.0, help="the GPU's (H200: 4.8 TB/s)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.new_tokens < 24:
        ap.error("--new-tokens must be at least 24 (steps are timed as a difference with an 8-step run)")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    batches = [int(b) for b in args.batches.split(",")]
    rates = level_rates(args.codec)
    dirs = sorted(args.priors.glob("level*"), key=lambda d: int(d.name[5:]))
    models = {d.name: (LlamaForCausalLM.from_pretrained(d, dtype=dtype), context_of(d)) for d in dirs}
    middle, middle_ctx = models[dirs[-1].name]
    models["bottom_10x"] = (ten_x_bottom(middle).to(dtype), middle_ctx)
    results = []
    for name, (model, context) in models.items():
        model = model.to(args.device).eval()
        params = sum(p.numel() for p in model.parameters())
        runs = [measure(model, b, context, args.new_tokens, args.device) for b in batches]
        for r in runs:
            r["bandwidth_share"] = round(r["achieved_gb_per_s"] / args.peak_gb_per_s, 4)
        results.append({"model": name, "parameters": params, "context": context, "runs": runs})
        print(json.dumps(results[-1]), flush=True)
        model.cpu()
    shipped = results[: len(dirs)]
    summary = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "dtype": str(dtype),
        "level_rates_hz": rates,
        "peak_gb_per_s": args.peak_gb_per_s,
        "shipped_streams": streams_that_fit(shipped, rates[: len(shipped)]),
        "with_10x_bottom_streams": streams_that_fit([*shipped, results[-1]], rates[: len(shipped) + 1]),
        "models": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "models"}))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

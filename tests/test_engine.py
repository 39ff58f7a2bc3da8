"""Both engine backends for real: the in-process transformers engine and vLLM (one engine
per test session, enforce_eager), on a tiny random Llama."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokgen.engine.base import Engine, SamplingParams
from tokgen.engine.factory import resolve_backend
from tokgen.engine.sampling import filter_logits
from tokgen.errors import TokgenError

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


async def collect(engine: Engine, rid: str, prompt: list[int], params: SamplingParams) -> list[int]:
    out: list[int] = []
    async for chunk in engine.generate(rid, prompt, params):
        out += chunk
    return out


def reference_greedy(model_dir, prompt: list[int], n: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return ids[0, len(prompt) :].tolist()


def test_greedy_matches_transformers_generate(engine, tiny_prior, loop_thread):
    prompt = [1, 5, 9, 33, 20]
    got = loop_thread.run(collect(engine, f"{engine.backend}-greedy", prompt, GREEDY))
    assert got == reference_greedy(tiny_prior, prompt, 12)


def test_concurrent_requests_batch_without_changing_results(engine, loop_thread):
    prompts = [[1, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 40, 41, 42]]

    async def run_all():
        return await asyncio.gather(
            *(collect(engine, f"{engine.backend}-batch-{i}", p, GREEDY) for i, p in enumerate(prompts))
        )

    batched = loop_thread.run(run_all())
    alone = [
        loop_thread.run(collect(engine, f"{engine.backend}-alone-{i}", p, GREEDY))
        for i, p in enumerate(prompts)
    ]
    assert batched == alone and all(len(t) == 12 for t in batched)


def test_seed_range_and_counts(engine, loop_thread):
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=123, allowed=(10, 20))

    async def run_all():
        return await asyncio.gather(
            collect(engine, f"{engine.backend}-s1", [1, 2], params),
            collect(engine, f"{engine.backend}-s2", [1, 2], params),
            collect(
                engine, f"{engine.backend}-s3", [1, 2], SamplingParams(40, 1.0, seed=7, allowed=(10, 20))
            ),
        )

    a, b, c = loop_thread.run(run_all())
    assert a == b and a != c
    assert all(10 <= t < 20 for t in a + c) and len(a) == len(c) == 40
    assert len(set(a)) > 3  # temperature 1 really samples


def test_a_logit_bias_steers_both_engines_alike(engine, loop_thread):
    """``SamplingParams.bias``: +100 on one allowed id makes it the only one sampled (vLLM's
    ``logit_bias`` and the in-process filter alike); -100 on all but two leaves those two."""
    one = tuple(100.0 if i == 3 else 0.0 for i in range(10))
    two = tuple(0.0 if i in (2, 7) else -100.0 for i in range(10))
    a, b = (
        loop_thread.run(
            collect(
                engine,
                f"{engine.backend}-b{i}",
                [1, 2],
                SamplingParams(30, 1.0, seed=5, allowed=(10, 20), bias=bias),
            )
        )
        for i, bias in enumerate((one, two))
    )
    assert a == [13] * 30
    assert set(b) == {12, 17}


def test_abort_ends_the_stream(engine, loop_thread):
    async def run():
        rid = f"{engine.backend}-abort"
        got = []
        async for chunk in engine.generate(
            rid, [1, 2, 3], SamplingParams(max_tokens=200, temperature=1.0, seed=1)
        ):
            got += chunk
            if len(got) >= 3:
                await engine.abort(rid)
        return got

    got = loop_thread.run(run())
    assert 3 <= len(got) < 200
    # The engine still serves after an abort.
    assert len(loop_thread.run(collect(engine, f"{engine.backend}-after", [1], GREEDY))) == 12


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ([], GREEDY, "at least one token"),
        ([1, 99], GREEDY, "prompt token ids"),
        ([1] * 250, GREEDY, "exceeds the model's context"),
        ([1], SamplingParams(max_tokens=5, temperature=-1.0), "temperature"),
        ([1], SamplingParams(max_tokens=5, top_p=0.0), "top_p"),
        ([1], SamplingParams(max_tokens=5, allowed=(60, 70)), "allowed token range"),
        ([1], SamplingParams(max_tokens=0), "max_tokens"),
        ([1], SamplingParams(max_tokens=5, bias=(1.0,)), "same length"),
        ([1], SamplingParams(max_tokens=5, allowed=(3, 5), bias=(1.0,)), "same length"),
        ([1], SamplingParams(max_tokens=5, allowed=(3, 5), bias=(1.0, float("nan"))), "finite"),
        ([1], SamplingParams(max_tokens=5, allowed=(3, 5), bias=(1.0, 101.0)), "finite"),
    ],
)
def test_bad_requests_are_refused(engine, loop_thread, prompt, params, message):
    with pytest.raises(TokgenError, match=message):
        loop_thread.run(collect(engine, f"{engine.backend}-bad", prompt, params))


def test_filter_logits():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert torch.isinf(filter_logits(logits, SamplingParams(1, allowed=(1, 3)))[[0, 3, 4]]).all()
    kept = ~torch.isinf(filter_logits(logits, SamplingParams(1, top_k=2)))
    assert kept.tolist() == [False, False, False, True, True]
    # top_p 0.6: the largest token alone has ~64% of the mass, so only it survives.
    kept = ~torch.isinf(filter_logits(logits, SamplingParams(1, top_p=0.6)))
    assert kept.tolist() == [False, False, False, False, True]
    assert torch.allclose(filter_logits(logits, SamplingParams(1, temperature=2.0)), logits / 2)
    # A bias is added to the allowed ids before the temperature.
    biased = filter_logits(logits, SamplingParams(1, temperature=2.0, allowed=(1, 3), bias=(2.0, -1.0)))
    assert biased[1:3].tolist() == [1.5, 0.5]


def test_backend_resolution(monkeypatch):
    assert resolve_backend("auto") == "vllm"  # installed by scripts/install.sh
    assert resolve_backend("hf") == "hf"
    monkeypatch.setenv("TOKGEN_ENGINE_BACKEND", "hf")
    assert resolve_backend("auto") == "hf" and resolve_backend("vllm") == "vllm"
    monkeypatch.setenv("TOKGEN_ENGINE_BACKEND", "tgi")
    with pytest.raises(TokgenError, match="TOKGEN_ENGINE_BACKEND"):
        resolve_backend("auto")
    monkeypatch.delenv("TOKGEN_ENGINE_BACKEND")
    with pytest.raises(TokgenError, match="unknown engine backend"):
        resolve_backend("tgi")  # type: ignore[arg-type]


def test_bench_engine_cli(tiny_prior):
    """`tokgen bench engine --json` runs the four ways at batch 1, 16 and 64, interleaved
    `--rounds` times, and prints the documented figures, with the CPU named."""
    import json
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "tokgen",
        "bench",
        "engine",
        "--json",
        "--prior",
        str(tiny_prior),
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "8",
        "--rounds",
        "2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["rounds"] == 2
    assert out["cpu"]["model"] and {"avx512_bf16", "amx_bf16"} <= set(out["cpu"])
    bf16 = out["cpu"]["avx512_bf16"] or out["cpu"]["amx_bf16"]  # vLLM runs in generation's dtype
    assert (out["dtype"], out["vllm_dtype"]) == ("float32", "bfloat16" if bf16 else "float32")
    assert out["flops"]["per_new_token_at_mean_context"] > 2 * out["flops"]["parameters"] * 0.5
    for batch in ("batch1", "batch16", "batch64"):
        figures = out[batch]
        for way in ("reference", "transformers_generate", "hf", "vllm"):
            rate = figures[f"{way}_tokens_per_s"]
            assert rate > 0 and figures[f"{way}_gflops"] > 0
            steps_per_s = rate / int(batch.removeprefix("batch"))
            assert figures[f"{way}_ms_per_step"] == pytest.approx(1000 / steps_per_s, rel=0.02, abs=0.002)
        assert figures["ratio"] == pytest.approx(
            figures["vllm_tokens_per_s"] / figures["hf_tokens_per_s"], rel=0.02, abs=0.006
        )  # the ratio is rounded to 2 decimals: up to 0.005 off, whatever its size
        assert figures["vllm_vs_reference"] == pytest.approx(
            figures["vllm_tokens_per_s"] / figures["reference_tokens_per_s"], rel=0.02, abs=0.006
        )
        # The figures are the rounds' medians: of two rounds, the ratio lies between theirs.
        low, high = sorted(figures["vllm_vs_reference_rounds"])
        assert low - 0.006 <= figures["vllm_vs_reference"] <= high + 0.006


def test_engines_take_their_dtype_from_the_setting_unless_given(monkeypatch, tiny_prior):
    from tokgen.engine.factory import create_engine

    def weights_dtype(engine) -> torch.dtype:
        return engine._model.embed.dtype

    monkeypatch.setenv("TOKGEN_ENGINE_DTYPE", "bfloat16")
    assert weights_dtype(create_engine(tiny_prior, "hf")) == torch.bfloat16
    assert weights_dtype(create_engine(tiny_prior, "hf", dtype="float32")) == torch.float32
    monkeypatch.delenv("TOKGEN_ENGINE_DTYPE")
    assert weights_dtype(create_engine(tiny_prior, "hf")) == torch.float32
    monkeypatch.setenv("TOKGEN_ENGINE_DTYPE", "float16")
    with pytest.raises(TokgenError, match="TOKGEN_ENGINE_DTYPE"):
        create_engine(tiny_prior, "hf")


def test_the_auto_dtype_is_bf16_for_vllm_on_a_cpu_with_bf16_arithmetic(monkeypatch):
    """``TOKGEN_ENGINE_DTYPE=auto`` (the default): vLLM's CPU kernels are faster in bf16
    where the CPU has it; plain torch (hf) is not, and no CPU flag makes it so."""
    from tokgen.engine import factory

    for has, vllm in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(factory, "cpu_has_bf16", lambda has=has: has)
        assert factory.resolve_dtype("auto", "vllm") == vllm
        assert factory.resolve_dtype("auto", "hf") == "float32"
        assert factory.resolve_dtype("float32", "vllm") == "float32"
        assert factory.engine_options("hf")["dtype"] == "float32"
        assert factory.engine_options("hf", dtype="bfloat16")["dtype"] == "bfloat16"
    flags = Path("/proc/cpuinfo").read_text()
    monkeypatch.undo()
    assert factory.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_renicing_lowers_the_vllm_engine_processes_not_this_one(engine):
    """A server lowers its engines' CPU priority (``TOKGEN_ENGINE_NICE``), so that a new
    request's prime, prepared outside them, does not wait behind their bulk work."""
    import multiprocessing
    import os
    from pathlib import Path

    if engine.backend != "vllm":
        pytest.skip("the hf engine runs in this process: nothing to renice")
    from tokgen.engine.vllm import renice_engine_processes

    cores = [c for c in multiprocessing.active_children() if c.name == "EngineCore"]
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert cores
    renice_engine_processes(own + 3)
    threads = [int(t.name) for c in cores for t in Path(f"/proc/{c.pid}/task").iterdir()]
    assert len(threads) > len(cores)  # each engine has threads besides its main one
    assert all(os.getpriority(os.PRIO_PROCESS, tid) == own + 3 for tid in threads)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own


def test_bench_rounds_interleave_the_ways_each_in_another_order():
    from tokgen.bench.engine import interleaved_seconds

    calls: list[tuple[str, int]] = []

    def way(name: str):
        def measure(batch: int) -> float:
            calls.append((name, batch))
            return float(len(calls))

        return measure

    seconds = interleaved_seconds({w: way(w) for w in "abc"}, (1, 16), rounds=2)
    assert [w for w, _ in calls] == list("abcabc" + "bcabca")
    assert [b for _, b in calls] == [1, 1, 1, 16, 16, 16] * 2
    assert seconds["a"] == {1: [1.0, 9.0], 16: [4.0, 12.0]}

"""The in-process engine's parts: the static-cache Llama forward against transformers,
batched sampling against the one-row filter, and continuous batching that leaves every
request's tokens as they are alone."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokgen.engine.base import SamplingParams
from tokgen.engine.hf import HFEngine
from tokgen.engine.sampling import GREEDY_BELOW, filter_batch, filter_logits, sample_batch
from tokgen.engine.static_llama import StaticLlama
from tokgen.errors import CheckpointError


@pytest.fixture(scope="module")
def model(tiny_prior):
    return AutoModelForCausalLM.from_pretrained(tiny_prior, dtype=torch.float32).eval()


@torch.inference_mode()
def test_static_forward_matches_transformers(model):
    """Prefill of prompts of different lengths, then decode steps with rows at different
    positions (masked attention), a row moved: the logits of the full sequences."""
    seqs = [[1, 5, 9, 33, 20, 7], [1, 40, 41, 42], [1, 2, 3, 4, 5, 6, 7]]
    prompt_lens = [4, 2, 5]
    static = StaticLlama(model, max_rows=4, first_rows=1)
    static.reserve(3)
    got = [static.prefill(0, [s[:n] for s, n in zip(seqs, prompt_lens, strict=True)])]
    # Row 1 moves to row 3 and back (as when rows are compacted).
    static.reserve(4)
    static.move_row(1, 3, 2)
    static.k[:, 1], static.v[:, 1] = 0.0, 0.0
    static.move_row(3, 1, 2)
    for step in range(2):
        pos = torch.tensor([n + step for n in prompt_lens])
        tokens = torch.tensor([s[n + step] for s, n in zip(seqs, prompt_lens, strict=True)])
        got.append(static.decode(tokens, pos, int(pos.max()) + 1))
    for row, seq in enumerate(seqs):
        full = model(torch.tensor([seq])).logits[0]
        for step in range(3):
            want = full[prompt_lens[row] - 1 + step]
            assert torch.allclose(got[step][row], want, atol=1e-4), (row, step)


def test_filter_batch_equals_filter_logits():
    torch.manual_seed(0)
    logits = torch.randn(7, 50)
    params = [
        SamplingParams(1),
        SamplingParams(1, temperature=0.5, allowed=(10, 30)),
        SamplingParams(1, top_k=5),
        SamplingParams(1, top_p=0.3, temperature=2.0),
        SamplingParams(1, temperature=0.0, top_k=3, allowed=(0, 20)),
        SamplingParams(1, top_k=7, top_p=0.8, allowed=(5, 45)),
        SamplingParams(1, top_k=4, allowed=(20, 25), bias=(0.0, 3.0, -2.0, 1.0, 0.5)),
    ]
    before = logits.clone()
    batch = filter_batch(logits, params)
    assert torch.equal(logits, before)
    for row, p in zip(range(len(params)), params, strict=True):
        want = filter_logits(logits[row], p)
        if p.temperature < GREEDY_BELOW:  # unscaled either way
            want = filter_logits(
                logits[row], SamplingParams(1, top_k=p.top_k, allowed=p.allowed, bias=p.bias)
            )
        assert torch.allclose(batch[row], want), row


def test_sample_batch_is_per_row_and_seeded():
    torch.manual_seed(0)
    logits = torch.randn(3, 40)
    params = [SamplingParams(1), SamplingParams(1, temperature=0.0), SamplingParams(1, allowed=(5, 8))]

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    a = sample_batch(logits, params, gens(1, 2, 3))
    assert a[1] == int(logits[1].argmax()) and 5 <= a[2] < 8
    # A row's token depends on its own generator only, not on the other rows.
    assert sample_batch(logits[:1], params[:1], gens(1)) == a[:1]
    # Gumbel-max samples the softmax distribution.
    draws = torch.tensor([sample_batch(logits[:1], params[:1], gens(s))[0] for s in range(3000)])
    freq = torch.bincount(draws, minlength=40).float() / 3000
    assert (freq - torch.softmax(logits[0], -1)).abs().max() < 0.04


def test_requests_joining_and_leaving_keep_their_tokens(tiny_prior, loop_thread):
    """Five requests of different lengths and prompt sizes on three rows: the last two
    join the batch mid-run as rows free up (rows compacted); each one's tokens equal its
    tokens alone, greedy or seeded."""
    engine = HFEngine(tiny_prior, max_batch=3)
    moves, batches = [], []
    move_row, observe = engine._model.move_row, engine.observe_step
    engine._model.move_row = lambda *a: (moves.append(a), move_row(*a))  # type: ignore[method-assign]
    engine.observe_step = lambda stats: (batches.append(stats.batch_size), observe(stats))  # type: ignore[method-assign]
    requests = [
        ([1, 5, 9], SamplingParams(max_tokens=30, temperature=1.0, seed=1)),
        ([1, 2, 3, 4, 5, 6, 7], SamplingParams(max_tokens=5, temperature=1.0, seed=2, top_k=10)),
        ([1, 40], SamplingParams(max_tokens=12, temperature=0.0)),
        ([1, 8, 8, 8], SamplingParams(max_tokens=20, temperature=0.7, seed=4, allowed=(10, 40))),
        ([1], SamplingParams(max_tokens=9, temperature=1.0, seed=5, top_p=0.9)),
    ]

    async def one(i, tag="alone"):
        out = []
        async for chunk in engine.generate(f"r{i}-{tag}", *requests[i]):
            out += chunk
        return out

    async def together():
        return await asyncio.gather(*(one(i, "together") for i in range(len(requests))))

    try:
        alone = [loop_thread.run(one(i)) for i in range(len(requests))]
        moves.clear()
        assert loop_thread.run(together()) == alone
        assert moves and max(batches) == 3  # rows were compacted; the batch was full
        assert [len(t) for t in alone] == [30, 5, 12, 20, 9]
        assert engine.unfinished_requests() == 0 and not engine._running
    finally:
        loop_thread.run(engine.close())


def test_other_architectures_are_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="Llama checkpoints only"):
        HFEngine(tmp_path)

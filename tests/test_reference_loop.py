"""The benchmark's bare reference loop decodes the same model as transformers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokgen.bench.reference import ReferenceLoop, flops_per_token


@pytest.fixture(scope="module")
def model(tiny_prior):
    return AutoModelForCausalLM.from_pretrained(tiny_prior, dtype=torch.float32).eval()


def test_greedy_tokens_equal_transformers_generate(model):
    prompts = torch.tensor([[1, 5, 9, 33, 20], [1, 40, 41, 42, 7]])
    expected = model.generate(prompts, max_new_tokens=16, do_sample=False, pad_token_id=0)[:, 5:]
    got = ReferenceLoop(model, 2, 5 + 16).generate(prompts, 16, temperature=0.0)
    assert got.tolist() == expected.tolist()


def test_sampling_is_seeded(model):
    prompts = torch.tensor([[1, 5, 9], [1, 2, 3]])
    loop = ReferenceLoop(model, 2, 3 + 40)
    a, b, c = (loop.generate(prompts, 40, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a[0].tolist())) > 3  # temperature 1 really samples


def test_flops_per_token_counts_weights_and_attention(model):
    cfg = model.config
    linear = (
        sum(p.numel() for n, p in model.named_parameters() if "proj" in n) + cfg.vocab_size * cfg.hidden_size
    )
    assert flops_per_token(cfg, 0) == 2 * linear
    assert (
        flops_per_token(cfg, 10) - flops_per_token(cfg, 0) == 4 * cfg.num_hidden_layers * cfg.hidden_size * 10
    )

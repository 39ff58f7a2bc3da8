"""Next-token sampling for the in-process engine: temperature, top-k, top-p, a token-id
range, and a generator per request so that a seed fixes the request's tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tokgen.engine.base import SamplingParams

# Below this temperature, sampling is greedy, as in vLLM (its _SAMPLING_EPS): dividing the
# logits by a subnormal temperature overflows them to inf, and softmax to NaN.
GREEDY_BELOW = 1e-5


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Logits (V,) with everything that may not be sampled set to -inf, scaled by 1/T."""
    out = logits.float().clone()
    if params.allowed is not None:
        start, stop = params.allowed
        out[:start] = -torch.inf
        out[stop:] = -torch.inf
    if params.temperature >= GREEDY_BELOW:
        out = out / params.temperature
    if params.top_k:
        kth = torch.topk(out, params.top_k).values[-1]
        out[out < kth] = -torch.inf
    if params.top_p < 1.0:
        order = torch.argsort(out, descending=True)
        probs = torch.softmax(out[order], dim=0)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = torch.cumsum(probs, dim=0) - probs >= params.top_p
        out[order[drop]] = -torch.inf
    return out


def sample_next(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> list[int]:
    """One token per row of ``logits`` (B, V)."""
    tokens = []
    for row, p, gen in zip(logits, params, generators, strict=True):
        filtered = filter_logits(row, p)
        if p.temperature < GREEDY_BELOW:
            tokens.append(int(torch.argmax(filtered)))
        else:
            probs = torch.softmax(filtered, dim=0)
            tokens.append(int(torch.multinomial(probs, 1, generator=gen)))
    return tokens

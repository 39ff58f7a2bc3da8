"""Next-token sampling for the in-process engine: a logit bias, temperature, top-k, top-p,
a token-id range, and a generator per request so that a seed fixes the request's tokens.
``filter_logits`` is the one-row definition; ``filter_batch`` and ``sample_batch`` do the
same for a whole batch on tensors (Gumbel-max instead of ``torch.multinomial``, which on
CPU cost about 1 ms per step at batch 16, a seventh of the step)."""

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
        if params.bias is not None:
            out[start:stop] += torch.tensor(params.bias)
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


def filter_batch(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """``filter_logits`` for a batch (B, V) in a few tensor operations: each row's token
    range, temperature (greedy rows are left unscaled), top-k and top-p."""
    out = logits.to(torch.float32, copy=True)  # the caller's logits stay as they were
    v = out.shape[1]
    if any(p.allowed is not None for p in params):
        ranges = torch.tensor([p.allowed if p.allowed is not None else (0, v) for p in params])
        ids = torch.arange(v)
        out = out.masked_fill((ids < ranges[:, :1]) | (ids >= ranges[:, 1:]), -torch.inf)
    for i, p in enumerate(params):
        if p.bias is not None and p.allowed is not None:
            out[i, p.allowed[0] : p.allowed[1]] += torch.tensor(p.bias)
    temps = [p.temperature if p.temperature >= GREEDY_BELOW else 1.0 for p in params]
    if any(t != 1.0 for t in temps):
        out = out / torch.tensor(temps)[:, None]
    if any(p.top_k for p in params):
        ks = torch.tensor([p.top_k or v for p in params])
        kth = torch.topk(out, int(ks.max()), dim=-1).values.gather(1, (ks - 1)[:, None])
        out = out.masked_fill(out < kth, -torch.inf)
    nucleus = [i for i, p in enumerate(params) if p.top_p < 1.0]
    if nucleus:
        sub = out[nucleus]
        ordered, order = torch.sort(sub, dim=-1, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = (
            torch.cumsum(probs, dim=-1) - probs >= torch.tensor([params[i].top_p for i in nucleus])[:, None]
        )
        out[nucleus] = sub.scatter(1, order, ordered.masked_fill(drop, -torch.inf))
    return out


def sample_batch(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> list[int]:
    """One token per row of ``logits`` (B, V), without ``torch.multinomial``: Gumbel-max
    (argmax of the filtered logits plus -log(-log U)), U drawn from each row's own
    generator, so a request's tokens depend on its seed only, not on its batch."""
    filtered = filter_batch(logits, params)
    sampled = [i for i, p in enumerate(params) if p.temperature >= GREEDY_BELOW]
    if sampled:
        u = torch.stack([torch.rand(filtered.shape[1], generator=generators[i]) for i in sampled])
        filtered[sampled] += -u.log_().neg_().log_()
    return filtered.argmax(-1).tolist()

"""What every tokgen training loop shares: atomic, resumable checkpoints and the LR schedule.

A checkpoint holds everything needed to continue bit for bit: weights, optimiser, step,
and the RNG states (torch's global one and the loop's numpy generator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokgen.errors import CheckpointError


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    rng: np.random.Generator,
    **extra: Any,
) -> None:
    state = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "np_rng": rng.bit_generator.state,
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a kill mid-save never corrupts the previous checkpoint


def load_checkpoint(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator
) -> dict[str, Any]:
    """Restore model, optimiser and RNGs in place; returns the whole state (step, extras)."""
    from tokgen.codec.checkpoint import load_state_checked

    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from exc
    load_state_checked(model, state["model"], path)
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = state["np_rng"]
    return state


def scheduled_lr(
    base_lr: float,
    step: int,
    warmup_steps: int,
    decay_from: int | None = None,
    total_steps: int | None = None,
    final_fraction: float = 0.1,
) -> float:
    """Linear warmup over ``warmup_steps``, constant, then (if ``decay_from`` is set) linear
    decay to ``final_fraction * base_lr`` at ``total_steps``. The schedule before
    ``decay_from`` does not depend on it, so a constant-LR run can be resumed into a decay."""
    lr = base_lr * min(1.0, (step + 1) / max(1, warmup_steps))
    if decay_from is not None and total_steps is not None and step >= decay_from:
        progress = min(1.0, (step - decay_from) / max(1, total_steps - decay_from))
        lr *= 1.0 - (1.0 - final_fraction) * progress
    return lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr

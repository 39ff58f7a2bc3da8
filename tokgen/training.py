"""What every tokgen training loop shares: atomic, resumable checkpoints and the LR schedule.

A checkpoint holds everything needed to continue bit for bit: weights, optimiser, step,
and the RNG states (torch's global one and the loop's numpy generator).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, Field
from tqdm import tqdm

from tokgen.errors import CheckpointError


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``load_state_dict`` with an error that names the missing, unexpected or misshapen keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        details = "; ".join(
            f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch (file vs config)", misshapen),
            )
            if items
        )
        raise CheckpointError(f"checkpoint {source} does not match its config: {details}")
    module.load_state_dict(state)


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
    try:
        state = torch.load(path, weights_only=True)
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


class LoopConfig(BaseModel):
    """What every training loop is told: how long, how fast, how often to save."""

    steps: int = Field(default=20000, ge=1)
    max_minutes: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    warmup_steps: int = Field(default=200, ge=0)
    lr_decay_from: int | None = Field(default=None, ge=0, description="step where linear LR decay starts")
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = Field(default=50, ge=1)
    checkpoint_every: int = Field(default=500, ge=1)


def world() -> tuple[int, int]:
    """(rank, number of processes): ``torchrun`` sets RANK and WORLD_SIZE; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _average(tensors: list[torch.Tensor], size: int) -> None:
    for t in tensors:
        dist.all_reduce(t)
        t.div_(size)


class Solver(ABC):
    """The training loop every tokgen model shares (audiocraft's ``StandardSolver`` is the
    model): a subclass supplies ``train_step`` and ``validate``; the solver owns the LR
    schedule, backward / clip / step, the deadline (``max_minutes``), the progress bar, the
    jsonl log, resumable checkpoints (``state.pt``, also written when SIGTERM arrives as
    ``KeyboardInterrupt``) and keeping the best weights by validation loss
    (``save_best``).

    Under ``torchrun`` (several processes, one machine or many) it is data parallel: every
    process draws its own batches (its RNG seeded with its rank), gradients and float
    buffers (EMA codebooks) are averaged after each step, and rank 0 alone validates,
    logs and writes checkpoints. ``--batch-size`` is per process: N processes at batch B
    train like one at N x B."""

    name = "model"
    valid_key = "valid_loss"  # how the validation number is called in the log and result

    def __init__(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        cfg: LoopConfig,
        run_dir: Path,
        rng: np.random.Generator | None = None,
    ):
        self.model, self.opt, self.cfg, self.run_dir = model, opt, cfg, Path(run_dir)
        self.rng = rng if rng is not None else np.random.default_rng(cfg.seed)
        self.step = 0
        self.elapsed_s = 0.0
        self.best = math.inf
        self.log_fields: dict[str, Any] = {}  # in every log record (e.g. a codec level's level)
        self.rank, self.world_size = world()
        if self.world_size > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            for p in model.state_dict().values():  # every process starts from rank 0's model
                dist.broadcast(p, 0)
            self._reseed()

    def _reseed(self) -> None:
        """Each process its own batches: its RNGs (shared with the samplers, so changed in
        place) depend on its rank and the step it starts from."""
        seeds = (self.cfg.seed, self.rank, self.step)
        self.rng.bit_generator.state = np.random.default_rng(seeds).bit_generator.state
        torch.manual_seed(hash(seeds) % 2**31)

    @abstractmethod
    def train_step(self) -> tuple[torch.Tensor, dict[str, float]]:
        """One batch: the loss to minimise and the numbers to log."""

    @abstractmethod
    def validate(self) -> float:
        """A validation loss (lower is better) on fixed held-out data."""

    def save_best(self, valid_loss: float) -> None:  # noqa: B027 (optional hook)
        """Called when ``valid_loss`` beats every earlier validation; a subclass exports."""

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.pt"

    def save(self) -> None:
        if self.rank:
            return
        save_checkpoint(
            self.state_path,
            self.model,
            self.opt,
            self.step,
            self.rng,
            elapsed_s=self.elapsed_s,
            best=self.best,
            **self.extra_state(),
        )

    def extra_state(self) -> dict[str, Any]:
        """More to checkpoint than the model and its optimiser (e.g. a discriminator and
        its optimiser); ``load_extra_state`` gets it back."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore what ``extra_state`` saved, from the whole checkpoint ``state``."""

    def restore(self) -> dict[str, Any]:
        """Load ``state.pt`` into the solver; returns the whole state (extras included)."""
        state = load_checkpoint(self.state_path, self.model, self.opt, self.rng)
        self.step, self.elapsed_s = state["step"], state.get("elapsed_s", 0.0)
        self.best = state.get("best", math.inf)
        self.load_extra_state(state)
        if self.world_size > 1:
            self._reseed()
        return state

    def comparable(self) -> bool:
        """Whether this step's validation counts for ``best`` (not, e.g., during a warm-up
        that validates another model than the one trained afterwards)."""
        return True

    def _checkpoint(self, record: dict[str, Any]) -> None:
        if self.rank:
            return
        valid = self.validate()
        record[self.valid_key] = valid
        if valid < self.best and self.comparable():
            self.best = valid
            self.save_best(valid)
        self.save()

    def train_once(self, log: IO[str]) -> None:
        """One optimiser step; logs and checkpoints on schedule."""
        cfg = self.cfg
        t0 = time.monotonic()
        set_lr(self.opt, scheduled_lr(cfg.lr, self.step, cfg.warmup_steps, cfg.lr_decay_from, cfg.steps))
        loss, stats = self.train_step()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.world_size > 1:
            _average([p.grad for p in self.model.parameters() if p.grad is not None], self.world_size)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        if self.world_size > 1:  # EMA codebooks, batch-norm statistics
            _average([b for b in self.model.buffers() if b.is_floating_point()], self.world_size)
        self.step += 1
        self.elapsed_s += time.monotonic() - t0
        if self.step % cfg.log_every == 0:
            record: dict[str, Any] = {
                **self.log_fields,
                "step": self.step,
                "elapsed_s": round(self.elapsed_s, 1),
                **stats,
            }
            if self.step % cfg.checkpoint_every == 0:
                self._checkpoint(record)
            log.write(json.dumps(record) + "\n")
            log.flush()

    def finish(self) -> dict[str, float]:
        """Validate the weights the run ends with; they count for ``best`` too."""
        if self.rank:
            return {"step": self.step, self.valid_key: math.nan, "best": math.nan}
        valid = self.validate()
        if valid < self.best and self.comparable():  # a run stopped between checkpoints
            self.best = valid
            self.save_best(valid)
            self.save()
        return {"step": self.step, self.valid_key: valid, "best": self.best}

    def run(self) -> dict[str, float]:
        """Train until ``steps`` or the deadline; resumes from ``state.pt`` if present."""
        return run_together([self], self.name)[0]


def run_together(solvers: Sequence[Solver], desc: str) -> list[dict[str, float]]:
    """Train several solvers of one run directory in turn, step by step, under one
    deadline and one progress bar (a codec's independent levels in one process). Each
    resumes from its own state if present; all are saved when the loop ends, SIGTERM
    (``KeyboardInterrupt``) included."""
    for s in solvers:
        s.run_dir.mkdir(parents=True, exist_ok=True)
        if s.state_path.exists():
            s.restore()
        s.model.train()
    minutes = [s.cfg.max_minutes for s in solvers if s.cfg.max_minutes]
    deadline = time.monotonic() + min(minutes) * 60 if minutes else math.inf
    total = max(s.cfg.steps for s in solvers)
    rank, size = world()
    bar = tqdm(
        total=total,
        initial=min(s.step for s in solvers),
        desc=desc,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=rank > 0,
    )
    log = (solvers[0].run_dir / "train_log.jsonl").open("a") if rank == 0 else open(os.devnull, "w")  # noqa: SIM115

    def going() -> bool:
        go = any(s.step < s.cfg.steps for s in solvers) and time.monotonic() < deadline
        if size > 1:  # all processes stop at the same step
            flag = torch.tensor(int(go))
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            go = bool(flag)
        return go

    try:
        while going():
            for s in solvers:
                if s.step < s.cfg.steps:
                    s.train_once(log)
            bar.update(1)
    finally:
        bar.close()
        log.close()
        for s in solvers:
            s.save()
    return [s.finish() for s in solvers]

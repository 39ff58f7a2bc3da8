"""``tokgen prior train --level N``: train one level's prior on the cached corpus codes.

Examples are random windows (see ``examples.py``) drawn with probability proportional to
file length; validation is the mean bits per predicted token over a fixed tiling of the
valid split. A run directory holds ``state.pt`` (resumable training state), ``model/``
(the latest weights as a prior directory), ``best/`` (the weights with the lowest
validation bits/token so far) and ``train_log.jsonl``.

Scheduled sampling (``scheduled_sampling`` > 0; parallel scheduled sampling, Duckworth et
al. 2019): a prior trained only on real histories has never continued from its own
mistakes, and in generation every history after the first step is its own. So a share of
the input tokens of the level it predicts is replaced by what the prior itself draws at
that position (one extra forward pass without gradients), while the targets stay the real
codes: the prior learns to come back to the music from histories with its own errors in
them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from tokgen.codec.base import Codec
from tokgen.errors import TokgenError
from tokgen.prior.corpus import CodeCorpus, cached_splits
from tokgen.prior.examples import (
    IGNORE,
    Example,
    level_example,
    random_reference,
    random_start,
    window_starts,
)
from tokgen.prior.layout import PAD, TokenLayout
from tokgen.prior.model import (
    PRIOR_META,
    PriorConfig,
    build_prior,
    grow_state,
    grown_layer_sources,
    read_prior_meta,
    save_prior,
)
from tokgen.prior.teacher_forcing import draw_level
from tokgen.training import LoopConfig, Solver


def cpu_has_bf16() -> bool:
    """Whether bf16 pays on this CPU: AMX (Linux flag ``amx_bf16``). With AVX-512 BF16 alone
    (an AMD EPYC here) plain torch ran bf16 about 2x slower than fp32 (docs/PERFORMANCE.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


class PriorTrainConfig(LoopConfig):
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=3e-4, gt=0)
    valid_windows: int = Field(default=64, ge=1)
    scheduled_sampling: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of the predicted level's input tokens replaced by the prior's own "
        "draws (targets stay real)",
    )
    dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="dropout on the token embeddings and on every attention and MLP output "
        "before it joins the residual stream, in training only",
    )
    bf16: bool = Field(
        default_factory=lambda: cpu_has_bf16(),
        description="bf16 autocast for the training forward: 1.7x faster on an AMX CPU, 2-2.8x "
        "slower on CPUs without AMX (shared/NOTES.md), so on by default only with AMX",
    )


def level_ratio(codec: Codec, level: int) -> int:
    return 1 if level == 0 else codec.levels[level - 1].hop // codec.levels[level].hop


def collate(examples: list[Example]) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(e.tokens.size for e in examples)
    ids = torch.full((len(examples), width), PAD)
    labels = torch.full((len(examples), width), IGNORE)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = e.tokens.size
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.from_numpy(e.tokens), torch.from_numpy(e.labels), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def validation_examples(
    corpus: CodeCorpus,
    layout: TokenLayout,
    level: int,
    n_ctx: int,
    ratio: int,
    limit: int,
    reference_tokens: int = 0,
) -> list[Example]:
    """A fixed tiling of the valid split; an upsampler's reference is its file's last codes."""
    examples = [
        level_example(
            layout, level, f, s, n_ctx, ratio, f[level][-reference_tokens:] if reference_tokens else None
        )
        for f in corpus.files
        for s in window_starts(f[level].size, n_ctx, ratio)
    ]
    return examples[:limit]


def add_residual_dropout(model: torch.nn.Module, p: float) -> list[torch.utils.hooks.RemovableHandle]:
    """GPT-2's dropout for a Llama, which has none but on attention weights: the token
    embeddings and each block's attention and MLP outputs are dropped with probability ``p``
    while the model trains. Forward hooks, so the saved weights and the engines that load
    them are untouched. The top prior memorises its corpus within a few hundred steps
    (training windows 1.2 bits per code, validation 1.8), which is what this is for."""

    def drop(module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(output, p, module.training)

    inner: Any = model.model  # a LlamaModel
    targets: list[torch.nn.Module] = [inner.embed_tokens]
    for layer in inner.layers:
        targets += [layer.self_attn.o_proj, layer.mlp]
    return [m.register_forward_hook(drop) for m in targets]


@torch.no_grad()
def mix_own_draws(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    level_range: tuple[int, int],
    fraction: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``batch``'s input ids with each predicted token (a label that is not ``IGNORE``)
    replaced, with probability ``fraction``, by the model's draw for that position given
    the real tokens before it; the labels are left as they are."""
    ids, labels = batch["input_ids"], batch["labels"]
    was_training = model.training
    model.eval()
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
    model.train(was_training)
    drawn = draw_level(logits, level_range, generator=generator) + level_range[0]
    b, s = drawn.shape
    chosen = torch.rand(b, s, generator=generator) < fraction
    replace = (labels[:, 1:] != IGNORE) & chosen
    mixed = ids.clone()
    mixed[:, 1:] = torch.where(replace, drawn, ids[:, 1:])
    return mixed


@torch.no_grad()
def bits_per_token(model: torch.nn.Module, examples: list[Example], batch_size: int) -> float:
    was_training = model.training
    model.eval()
    nats, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="sum"
        )
        nats += float(loss)
        count += int((targets != IGNORE).sum())
    model.train(was_training)
    return nats / max(count, 1) / math.log(2)


def init_config(prior_dir: Path, codec: Codec, level: int) -> PriorConfig:
    """The architecture of the prior a run starts from; refuses one of another level or codec."""
    meta = read_prior_meta(prior_dir)
    if meta["level"] != level:
        raise TokgenError(f"--init-from {prior_dir} is a level {meta['level']} prior, not level {level}")
    if list(meta["codebook_sizes"]) != [lv.codebook_size for lv in codec.levels]:
        raise TokgenError(f"--init-from {prior_dir} was trained on another codec ({meta['codec']})")
    return PriorConfig(**meta["config"])


def load_prior_weights(model: torch.nn.Module, prior_dir: Path, seed_layers: int | None = None) -> None:
    """Load a prior directory's weights into ``model``; with ``seed_layers`` (the directory's
    depth, when ``model`` is deeper) through ``grow_state``."""
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(Path(prior_dir) / "model.safetensors")).items()}
    layers = int(model.config.num_hidden_layers)  # type: ignore[union-attr,arg-type]
    if seed_layers is not None and seed_layers != layers:
        state = grow_state(state, model.state_dict(), seed_layers, layers)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]  # tied to the embeddings
    if missing or result.unexpected_keys:
        raise TokgenError(
            f"--init-from {prior_dir}: weights do not fit (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )


def best_bits(run_dir: Path) -> float:
    """Validation bits/token of the run's best checkpoint so far (``best/``), inf if none."""
    path = run_dir / "best" / PRIOR_META
    return float(json.loads(path.read_text())["valid_bits_per_token"]) if path.is_file() else math.inf


class PriorSolver(Solver):
    """One level's prior on the training loop every tokgen model shares (``Solver``); a
    run keeps ``model/`` (the latest weights) beside ``state.pt`` and ``best/``."""

    valid_key = "valid_bits_per_token"

    def __init__(
        self,
        codec: Codec,
        data_dirs: Sequence[Path],
        run_dir: Path,
        level: int,
        prior_cfg: PriorConfig,
        cfg: PriorTrainConfig,
        init_from: Path | None = None,
        seed_layers: int | None = None,
    ):
        self.layout = TokenLayout.for_levels(codec.levels)
        self.level, self.prior_cfg, self.tcfg = level, prior_cfg, cfg
        self.ratio = level_ratio(codec, level)
        self.train_codes = cached_splits(codec, data_dirs, "train")
        self.valid = validation_examples(
            cached_splits(codec, data_dirs, "valid"),
            self.layout,
            level,
            prior_cfg.n_ctx,
            self.ratio,
            cfg.valid_windows,
            prior_cfg.reference_tokens if level else 0,
        )
        torch.manual_seed(cfg.seed + level)
        model = build_prior(prior_cfg, self.layout, level, self.ratio)
        if init_from is not None:
            load_prior_weights(model, init_from, seed_layers)
        if cfg.dropout:
            add_residual_dropout(model, cfg.dropout)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
        super().__init__(model, opt, cfg, run_dir, np.random.default_rng(cfg.seed + level))
        self.name = f"prior level {level}"
        self.lengths = np.array([f[level].size for f in self.train_codes.files], dtype=np.float64)
        self.weights = self.lengths / self.lengths.sum()
        self.meta = {
            "level": level,
            "n_ctx": prior_cfg.n_ctx,
            "ratio": self.ratio,
            "codec": codec.name,
            "codebook_sizes": list(self.layout.codebook_sizes),
            "config": prior_cfg.model_dump(),
        }

    def train_step(self) -> tuple[torch.Tensor, dict[str, float]]:
        files = self.rng.choice(len(self.train_codes.files), size=self.tcfg.batch_size, p=self.weights)
        batch = collate([self._example(self.train_codes.files[i], int(self.lengths[i])) for i in files])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.tcfg.bf16):
            if self.tcfg.scheduled_sampling > 0:
                generator = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
                own = self.layout.level_range(self.level)
                batch["input_ids"] = mix_own_draws(
                    self.model, batch, own, self.tcfg.scheduled_sampling, generator
                )
            loss = self.model(**batch).loss
        return loss, {"train_bits_per_token": loss.item() / math.log(2)}

    def _example(self, codes: list[np.ndarray], length: int) -> Example:
        n_ctx, cfg = self.prior_cfg.n_ctx, self.prior_cfg
        start = random_start(self.rng, length, n_ctx, self.ratio)
        reference = None
        if self.level and cfg.reference_tokens and self.rng.random() >= cfg.reference_dropout:
            reference = random_reference(self.rng, codes[self.level], cfg.reference_tokens)
        return level_example(self.layout, self.level, codes, start, n_ctx, self.ratio, reference)

    def validate(self) -> float:
        return bits_per_token(self.model, self.valid, self.tcfg.batch_size)

    def restore(self) -> dict[str, Any]:
        state = super().restore()
        self.best = min(self.best, best_bits(self.run_dir))  # runs saved before the Solver
        return state

    def save(self) -> None:
        super().save()
        save_prior(self.model, self.run_dir / "model", self.meta | {"steps": self.step})

    def save_best(self, valid_loss: float) -> None:
        """Small corpora overfit, so the latest weights are not always the ones to export."""
        save_prior(
            self.model, self.run_dir / "best", self.meta | {"steps": self.step, self.valid_key: valid_loss}
        )


def train_prior(
    codec: Codec,
    data_dirs: Sequence[Path],
    run_dir: Path,
    level: int,
    prior_cfg: PriorConfig,
    cfg: PriorTrainConfig,
    resume: bool = False,
    init_from: Path | None = None,
    grow_layers: int | None = None,
    reference_tokens: int | None = None,
) -> dict[str, float]:
    """Train (or, with ``resume``, continue) one level's prior on the codes of one or more
    corpora (``data_dirs``: several train as one, so a prior that has seen one corpus can go on
    with all of them instead of forgetting the old on the new). ``init_from`` (a prior
    directory, e.g. another run's ``best/``) starts a new run from those weights with a fresh
    optimiser and step 0: how a prior moves to a larger corpus without starting over.
    ``grow_layers`` makes that run deeper than its seed (``grow_state``): it starts from the
    seed's exact function and adds capacity, instead of training a larger prior from scratch.
    ``reference_tokens`` sets how many of its own level's codes an upsampler sees as the
    reference prompt (the seed's or the preset's otherwise): the positions are rotary, so a
    seed's weights fit any length and fine-tuning adapts them to it."""
    if not 0 <= level < len(codec.levels):
        raise TokgenError(f"--level must be in 0..{len(codec.levels) - 1}, got {level}")
    if reference_tokens is not None and (level == 0 or reference_tokens < 0):
        raise TokgenError("--reference-tokens is for an upsampler (--level >= 1) and must be >= 0")
    run_dir = Path(run_dir)
    if (run_dir / "state.pt").exists() and not resume:
        raise TokgenError(f"{run_dir} already holds a run; pass --resume to continue it")
    seed_layers = None
    if grow_layers is not None and init_from is None:
        raise TokgenError("--grow-layers needs --init-from: the prior to grow")
    if init_from is not None:
        prior_cfg = init_config(init_from, codec, level)
        seed_layers = prior_cfg.num_layers
        if grow_layers is not None:
            grown_layer_sources(seed_layers, grow_layers)  # refuses to shrink, before any work
            prior_cfg = prior_cfg.model_copy(update={"num_layers": grow_layers})
        if resume:  # the run's own state wins over the seed weights
            init_from = None
    if reference_tokens is not None:
        prior_cfg = prior_cfg.model_copy(update={"reference_tokens": reference_tokens})
    if resume and (run_dir / "model" / PRIOR_META).is_file():
        # A resumed run keeps the architecture it was started with, whatever the flags say.
        prior_cfg = PriorConfig(**read_prior_meta(run_dir / "model")["config"])
    result = PriorSolver(codec, data_dirs, run_dir, level, prior_cfg, cfg, init_from, seed_layers).run()
    return {"step": result["step"], "valid_bits_per_token": result["valid_bits_per_token"]}

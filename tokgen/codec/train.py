"""``tokgen codec train``: train the multi-level VQ-VAE on the rendered corpus.

A run directory holds ``config.json`` (the architecture) and one ``level{N}.pt`` per level
with the full training state (weights, optimiser, step, RNG), saved every
``checkpoint_every`` steps and at the end, so ``--resume`` continues exactly where a run
stopped. Levels are independent, so ``--levels`` lets several processes train disjoint
levels of one run at the same time; ``tokgen codec export`` assembles the levels into a
shippable model directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from tokgen.codec.checkpoint import (
    load_state_checked,
    load_vqvae,
    parse_vqvae_config,
    read_config,
    save_vqvae,
)
from tokgen.codec.losses import spectral_losses, waveform_loss
from tokgen.codec.vqvae import LevelOutput, MultiLevelVQVAE, VQVAEConfig, VQVAELevel
from tokgen.data.render import load_split
from tokgen.errors import TokgenError
from tokgen.training import LoopConfig, Solver, run_together, save_checkpoint


class TrainConfig(LoopConfig):
    segment_samples: int = Field(default=8192, ge=512)
    commit_weight: float = 0.02
    waveform_weight: float = 0.1
    mel_weight: float = 1.0
    valid_crops: int = Field(default=32, ge=1)
    freeze_codes: bool = Field(
        default=False,
        description="train only the decoders: encoder and codebook stay as they are, so the "
        "codes (and priors trained on them) stay valid",
    )


class CropSampler:
    """Random fixed-length crops of the training audio, skipping near-silent ones."""

    def __init__(self, audio: list[np.ndarray], segment: int, rng: np.random.Generator):
        self.audio = [a for a in audio if a.size >= segment]
        if not self.audio:
            raise TokgenError(f"no training file is longer than one segment ({segment} samples)")
        lengths = np.array([a.size - segment + 1 for a in self.audio], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.segment = segment
        self.rng = rng

    def crop(self) -> np.ndarray:
        for _ in range(10):
            a = self.audio[self.rng.choice(len(self.audio), p=self.weights)]
            start = int(self.rng.integers(0, a.size - self.segment + 1))
            seg = a[start : start + self.segment]
            if np.sqrt(np.mean(seg**2)) > 1e-3:
                break
        return seg

    def batch(self, n: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.crop() for _ in range(n)]))[:, None, :]


def frozen_codes_forward(net: VQVAELevel, x: torch.Tensor) -> LevelOutput:
    """Encode and quantise without gradients or codebook updates; decode with gradients."""
    with torch.no_grad():
        quantizer_training = net.quantizer.training
        net.quantizer.eval()  # no EMA update, no dead-code restart
        vq = net.quantizer(net.encoder(x))
        net.quantizer.train(quantizer_training)
    return LevelOutput(net.decoder(vq.quantized), vq)


def level_loss(
    net: VQVAELevel, x: torch.Tensor, cfg: TrainConfig, sample_rate: int
) -> tuple[torch.Tensor, dict[str, float]]:
    out = frozen_codes_forward(net, x) if cfg.freeze_codes else net(x)
    spec = spectral_losses(x[:, 0], out.audio[:, 0], sample_rate)
    wav = waveform_loss(x[:, 0], out.audio[:, 0])
    loss = (
        spec["sc"]
        + spec["log_mag"]
        + cfg.mel_weight * spec["mel"]
        + cfg.waveform_weight * wav
        + cfg.commit_weight * out.vq.commit_loss
    )
    stats = {
        "loss": loss.item(),
        **{k: v.item() for k, v in spec.items()},
        "waveform": wav.item(),
        "commit": out.vq.commit_loss.item(),
        "perplexity": out.vq.perplexity.item(),
        "restarted": float(out.vq.restarted),
    }
    return loss, stats


class LevelSolver(Solver):
    """One level of a run on the shared training loop (``Solver``). Levels share nothing,
    so each has its own state file (``level{N}.pt``); ``run_together`` interleaves the
    levels one process trains."""

    def __init__(
        self,
        model_cfg: VQVAEConfig,
        cfg: TrainConfig,
        level: int,
        run_dir: Path,
        train_audio: list[np.ndarray] | None = None,
        valid_crops: torch.Tensor | None = None,
    ):
        torch.manual_seed(cfg.seed + level)
        net = VQVAELevel(model_cfg.levels[level])
        params = net.decoder.parameters() if cfg.freeze_codes else net.parameters()
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        super().__init__(net, opt, cfg, run_dir, np.random.default_rng(cfg.seed + level))
        self.net, self.level, self.tcfg = net, level, cfg
        self.sample_rate = model_cfg.sample_rate
        self.log_fields = {"level": level}
        self.steps_before = 0  # steps of the model the run was initialised from (--init-from)
        self.train_audio, self.valid_crops = train_audio, valid_crops
        self.sampler: CropSampler | None = None

    @property
    def state_path(self) -> Path:
        return self.run_dir / f"level{self.level}.pt"

    def save(self) -> None:
        save_checkpoint(
            self.state_path,
            self.net,
            self.opt,
            self.step,
            self.rng,
            elapsed_s=self.elapsed_s,
            steps_before=self.steps_before,
            best=self.best,
        )

    def restore(self) -> dict[str, Any]:
        state = super().restore()
        self.steps_before = state.get("steps_before", 0)
        return state

    def train_step(self) -> tuple[torch.Tensor, dict[str, float]]:
        if self.sampler is None:  # made after a resume restored the RNG it draws from
            assert self.train_audio is not None
            self.sampler = CropSampler(self.train_audio, self.tcfg.segment_samples, self.rng)
        return level_loss(self.net, self.sampler.batch(self.tcfg.batch_size), self.tcfg, self.sample_rate)

    def validate(self) -> float:
        assert self.valid_crops is not None
        return validate(self.net, self.valid_crops, self.tcfg, self.sample_rate)


@torch.no_grad()
def validate(net: VQVAELevel, crops: torch.Tensor, cfg: TrainConfig, sample_rate: int) -> float:
    """Mean training loss on fixed validation crops."""
    net.eval()
    losses = [
        level_loss(net, crops[i : i + cfg.batch_size], cfg, sample_rate)[1]["loss"]
        for i in range(0, len(crops), cfg.batch_size)
    ]
    net.train()
    return float(np.mean(losses))


def _decoder(key: str) -> bool:
    return key.startswith("decoder.")


def seed_from_model(model_dir: Path, model_cfg: VQVAEConfig, cfg: TrainConfig, run_dir: Path) -> None:
    """Start every level of a new run from a trained model's weights. A decoder of another
    width (``decoder_channels`` in ``model_cfg``) starts fresh; the encoder and codebook
    must match, so with ``freeze_codes`` the run trains new decoders for the model's own
    codes."""
    base = load_vqvae(model_dir)
    if len(base.levels) != len(model_cfg.levels):
        raise TokgenError(f"{model_dir} has {len(base.levels)} levels, the run {len(model_cfg.levels)}")
    steps = read_config(model_dir).get("training_steps")
    for lv, base_net in enumerate(base.levels):
        st = LevelSolver(model_cfg, cfg, lv, run_dir)
        own, theirs = st.net.state_dict(), base_net.state_dict()
        if any(k not in theirs or theirs[k].shape != v.shape for k, v in own.items() if not _decoder(k)):
            raise TokgenError(
                f"level {lv}: the encoder or codebook of {model_dir} does not fit the run's config"
            )
        same_decoder = all(k in theirs and theirs[k].shape == v.shape for k, v in own.items() if _decoder(k))
        st.net.load_state_dict(
            {k: theirs[k] if same_decoder or not _decoder(k) else v for k, v in own.items()}
        )
        st.steps_before = int(steps[lv]) if steps and lv < len(steps) else 0
        st.save()


def train(
    model_cfg: VQVAEConfig | None,
    cfg: TrainConfig,
    data_dir: Path,
    run_dir: Path,
    levels: list[int] | None = None,
    resume: bool = False,
    init_from: Path | None = None,
) -> dict[int, dict[str, float]]:
    """Train the given levels (default: all) of the run in ``run_dir``; returns the last
    validation loss and step per level. ``init_from`` (a codec model directory) starts a
    new run from that model's weights (see ``seed_from_model``)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if config_path.exists():
        if not resume:
            raise TokgenError(f"{run_dir} already holds a run; pass --resume to continue it")
        model_cfg = parse_vqvae_config(json.loads(config_path.read_text()), config_path)
    elif model_cfg is None:
        raise TokgenError(f"{run_dir} holds no run to resume")
    assert model_cfg is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    if not config_path.exists():
        config_path.write_text(json.dumps(model_cfg.model_dump(), indent=2))
    levels = list(range(len(model_cfg.levels))) if levels is None else levels
    if any(not 0 <= lv < len(model_cfg.levels) for lv in levels):
        raise TokgenError(f"--levels must be in 0..{len(model_cfg.levels) - 1}, got {levels}")

    torch.manual_seed(cfg.seed)
    sr = model_cfg.sample_rate
    train_audio = load_split(data_dir, "train", sr)
    valid_sampler = CropSampler(
        load_split(data_dir, "valid", sr),
        cfg.segment_samples,
        np.random.default_rng(cfg.seed + 1000),
    )
    valid_crops = valid_sampler.batch(cfg.valid_crops)
    if init_from is not None and not any(run_dir.glob("level*.pt")):
        seed_from_model(init_from, model_cfg, cfg, run_dir)
    solvers = [LevelSolver(model_cfg, cfg, lv, run_dir, train_audio, valid_crops) for lv in levels]
    results = run_together(solvers, f"codec levels {levels}")
    return {
        s.level: {"step": r["step"], "valid_loss": r["valid_loss"]}
        for s, r in zip(solvers, results, strict=True)
    }


def export(run_dir: Path, out_dir: Path) -> MultiLevelVQVAE:
    """Assemble the trained levels of a run into a model directory (safetensors + config)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise TokgenError(f"{run_dir} is not a codec training run (no config.json)")
    model_cfg = parse_vqvae_config(json.loads(config_path.read_text()), config_path)
    model = MultiLevelVQVAE(model_cfg)
    steps = []
    for lv, net in enumerate(model.levels):
        path = run_dir / f"level{lv}.pt"
        if not path.is_file():
            raise TokgenError(f"level {lv} of {run_dir} has not been trained ({path.name} missing)")
        state = torch.load(path, weights_only=True)
        load_state_checked(net, state["model"], path)
        steps.append(state.get("steps_before", 0) + state["step"])
    save_vqvae(model, out_dir, extra={"training_steps": steps})
    return model

"""The timbre classifier: tokgen's "Inception network" for IS, KID and timbre consistency.

A small CNN over log-mel windows of 2 s, trained on the real renders to name the GM
program family of the melody instrument (the corpus' labels; the accompaniment is another
instrument, so the net must pick out the lead voice). Its softmax gives the Inception
Score and the timbre consistency of continuations; its pooled features (before the last
layer) are the embedding for KID, as Inception's pool features are for images.

Input windows are normalised to a fixed RMS, so loudness says nothing; training degrades
the windows (random EQ, low-pass, white noise: ``degrade``) so that the family, not the
exact spectrum of a soundfont sample, decides.

``tokgen eval train-classifier`` trains it; the shipped one lives in
``tokgen/assets/models/classifier/`` (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn

from tokgen.assets import DEFAULT_CLASSIFIER_DIR
from tokgen.codec.spectral import log_mel_from_magnitude, stft_magnitude
from tokgen.data.render import load_manifest
from tokgen.errors import CheckpointError, TokgenError
from tokgen.eval.embeddings import Embedding
from tokgen.training import LoopConfig, Solver

DEFAULT_DIR = DEFAULT_CLASSIFIER_DIR


class ClassifierConfig(BaseModel):
    families: list[str] = Field(min_length=2)
    sample_rate: int = 16000
    window_seconds: float = 2.0
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 64
    channels: list[int] = [16, 32, 64, 128]

    @property
    def window(self) -> int:
        return round(self.window_seconds * self.sample_rate)


class TrainClassifierConfig(LoopConfig):
    steps: int = Field(default=1500, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=2e-3, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    # Validated (and the best step kept) this often; the LR decays from the warm-up's end.
    checkpoint_every: int = Field(default=250, ge=1)
    log_every: int = Field(default=250, ge=1)
    grad_clip: float = 1e9  # no clipping: what the shipped classifier was trained with


def normalised_log_mel(audio: torch.Tensor, cfg: ClassifierConfig) -> torch.Tensor:
    """(B, T) windows -> (B, 1, n_mels, frames), each window scaled to RMS 0.1 first."""
    rms = audio.pow(2).mean(-1, keepdim=True).sqrt()
    audio = audio * (0.1 / torch.clamp(rms, min=1e-4))
    mel = log_mel_from_magnitude(stft_magnitude(audio, cfg.n_fft, cfg.hop), cfg.sample_rate, cfg.n_mels)
    return mel[:, None]


class TimbreNet(nn.Module):
    """Conv blocks (3x3, batch norm, ReLU, 2x2 max-pool) -> mean and max over time and
    frequency -> ``features`` -> linear -> family logits."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip([1, *cfg.channels[:-1]], cfg.channels, strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.convs = nn.Sequential(*layers)
        self.features_dim = 2 * cfg.channels[-1]
        self.head = nn.Linear(self.features_dim, len(cfg.families))

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.convs(mel).flatten(2)
        return torch.cat([h.mean(-1), h.amax(-1)], dim=1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(mel))


class TimbreClassifier(Embedding):
    """A trained ``TimbreNet``: ``frames`` gives its features per 2 s window (hop 1 s) for
    KID; ``probabilities`` the family distribution of a whole clip (mean over windows)."""

    name = "timbre"

    def __init__(self, cfg: ClassifierConfig, net: TimbreNet):
        self.cfg, self.net = cfg, net.eval()
        self.sample_rate = cfg.sample_rate
        self.dim = net.features_dim

    def _windows(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        x = torch.from_numpy(self._resampled(audio, sample_rate))
        size = self.cfg.window
        if x.numel() < size:
            x = torch.nn.functional.pad(x, (0, size - x.numel()))
        return x.unfold(0, size, size // 2)  # (n, size)

    @torch.inference_mode()
    def frames(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        mel = normalised_log_mel(self._windows(audio, sample_rate), self.cfg)
        return self.net.features(mel).numpy().astype(np.float64)

    @torch.inference_mode()
    def probabilities(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        mel = normalised_log_mel(self._windows(audio, sample_rate), self.cfg)
        return torch.softmax(self.net(mel), dim=-1).mean(0).numpy().astype(np.float64)


def save_classifier(net: TimbreNet, cfg: ClassifierConfig, out_dir: Path, extra: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(cfg.model_dump() | extra, indent=2))


def load_classifier(model_dir: Path | None = None) -> TimbreClassifier:
    model_dir = Path(model_dir) if model_dir else DEFAULT_DIR
    try:
        cfg = ClassifierConfig.model_validate_json((model_dir / "config.json").read_text())
        net = TimbreNet(cfg)
        net.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the timbre classifier from {model_dir}: {exc}") from exc
    return TimbreClassifier(cfg, net)


class LabelledCrops:
    """Random windows of a split's renders with their family index, skipping near-silence."""

    def __init__(self, data_dir: Path, split: str, cfg: ClassifierConfig, rng: np.random.Generator):
        from tokgen.audio import load_audio

        items = [i for i in load_manifest(data_dir)["items"] if i["split"] == split]
        items = [i for i in items if i["program_family"] in cfg.families]
        self.audio = [load_audio(Path(data_dir) / i["path"], cfg.sample_rate) for i in items]
        keep = [k for k, a in enumerate(self.audio) if a.size > cfg.window]
        if not keep:
            raise TokgenError(f"no {split} render of {data_dir} is longer than {cfg.window_seconds} s")
        self.audio = [self.audio[k] for k in keep]
        self.labels = [cfg.families.index(items[k]["program_family"]) for k in keep]
        lengths = np.array([a.size for a in self.audio], np.float64)
        self.weights = lengths / lengths.sum()
        self.window, self.rng = cfg.window, rng

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        crops: list[np.ndarray] = []
        labels: list[int] = []
        while len(crops) < n:
            k = int(self.rng.choice(len(self.audio), p=self.weights))
            start = int(self.rng.integers(0, self.audio[k].size - self.window))
            crop = self.audio[k][start : start + self.window]
            if np.sqrt(np.mean(crop**2)) > 1e-3:
                crops.append(crop)
                labels.append(self.labels[k])
        return torch.from_numpy(np.stack(crops)), torch.tensor(labels)


def degrade(x: torch.Tensor, sample_rate: int, rng: np.random.Generator) -> torch.Tensor:
    """Generic degradations, each on a random half of the batch: a random smooth EQ
    (+-9 dB, sometimes a low-pass from 2 to 7 kHz), then white noise at 10..50 dB SNR. They
    teach the classifier the family, not the exact spectrum of one soundfont's samples,
    so it still names the family of audio that went through a codec (none of them is
    tokgen's codec: the judge is not fitted to the model it judges)."""
    b, n = x.shape
    spec = torch.fft.rfft(x)
    bins = spec.shape[-1]
    # A smooth EQ curve: gains drawn at 8 points, interpolated over the bins.
    knots = torch.from_numpy(rng.uniform(-9, 9, size=(b, 1, 8))).float()
    curve_db = torch.nn.functional.interpolate(knots, size=bins, mode="linear", align_corners=True)[:, 0]
    freqs = torch.linspace(0, 0.5, bins)[None]
    cutoff = torch.from_numpy(rng.uniform(2000, 7000, size=(b, 1)) / sample_rate).float()
    lowpass = torch.from_numpy(rng.random((b, 1)) < 0.3) & (freqs > cutoff)
    gain = torch.where(torch.from_numpy(rng.random((b, 1)) < 0.5), 10 ** (curve_db / 20), torch.ones(1))
    x = torch.fft.irfft(spec * torch.where(lowpass, torch.zeros(1), gain), n=n)
    snr_db = torch.from_numpy(rng.uniform(10, 50, size=(b, 1))).float()
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    noise = torch.from_numpy(rng.standard_normal(x.shape)).float() * rms * 10 ** (-snr_db / 20)
    return torch.where(torch.from_numpy(rng.random((b, 1)) < 0.5), x + noise, x)


@torch.no_grad()
def validate(net: TimbreNet, crops: torch.Tensor, labels: torch.Tensor, cfg: ClassifierConfig) -> dict:
    """Cross-entropy and accuracy on fixed validation windows."""
    net.eval()
    logits = torch.cat([net(normalised_log_mel(c, cfg)) for c in crops.split(64)])
    net.train()
    return {
        "valid_loss": round(float(nn.functional.cross_entropy(logits, labels)), 4),
        "valid_accuracy": round(float((logits.argmax(-1) == labels).float().mean()), 4),
    }


class ClassifierSolver(Solver):
    name = "timbre classifier"

    def __init__(self, data_dir: Path, out_dir: Path, cfg: TrainClassifierConfig):
        families = sorted(
            {i["program_family"] for i in load_manifest(data_dir)["items"] if i["split"] == "train"}
        )
        self.model_cfg = ClassifierConfig(families=families)
        rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.train_crops = LabelledCrops(data_dir, "train", self.model_cfg, rng)
        valid = LabelledCrops(data_dir, "valid", self.model_cfg, np.random.default_rng(cfg.seed + 1))
        self.valid_x, self.valid_y = valid.batch(256)
        net = TimbreNet(self.model_cfg)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.01)
        cfg = cfg.model_copy(update={"lr_decay_from": cfg.warmup_steps})
        super().__init__(net, opt, cfg, out_dir, rng)
        self.net, self.tcfg = net, cfg
        self.scores: dict = {}
        self.best_scores: dict = {}

    def train_step(self) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = self.train_crops.batch(self.tcfg.batch_size)
        features = normalised_log_mel(degrade(x, self.model_cfg.sample_rate, self.rng), self.model_cfg)
        loss = nn.functional.cross_entropy(self.net(features), y)
        return loss, {"loss": loss.item()}

    def validate(self) -> float:
        self.scores = validate(self.net, self.valid_x, self.valid_y, self.model_cfg)
        return self.scores["valid_loss"]

    def save_best(self, valid_loss: float) -> None:
        self.best_scores = self.scores | {"step": self.step}
        training = self.tcfg.model_dump() | self.best_scores
        save_classifier(self.net, self.model_cfg, self.run_dir, {"training": training})


def train_classifier(data_dir: Path, out_dir: Path, cfg: TrainClassifierConfig, resume: bool = False) -> dict:
    """Train on the train split, keep the step with the lowest loss on fixed validation
    windows (accuracy saturates), save it to ``out_dir``; returns the training summary."""
    if (Path(out_dir) / "state.pt").exists() and not resume:
        raise TokgenError(f"{out_dir} already holds a run; pass --resume to continue it")
    started = time.monotonic()
    solver = ClassifierSolver(data_dir, out_dir, cfg)
    solver.run()
    minutes = round((time.monotonic() - started) / 60, 1)
    return solver.best_scores | {"minutes": minutes, "families": solver.model_cfg.families}

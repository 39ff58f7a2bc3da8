"""``tokgen codec train --preset msvq``: train the multi-scale residual VQ codec.

One model, one process (the encoder and decoder are shared by all levels). Each training
example is a crop and a *reference*, another crop of the same recording, from which the
timbre encoder makes the vector that conditions the decoder. Three things push the coarse
levels to carry the music:

- quantiser dropout: ``dropout_fraction`` of the examples are decoded from their top one
  or two levels only (equally often), so those partial sums must already sound right;
- a pitch loss: L1 between the log energies per semitone of input and output;
- short and long windows in the multi-scale mel loss (DAC), for attacks and for pitch.

A short autoencoder warm-up (``ae_warmup_steps``, no quantiser) comes first.

Timbre swaps (``swap_fraction``, on a corpus rendered with ``--paired``): a batch encodes
a crop of one render and decodes it with the timbre of another render of the same piece
(another instrument), against that render's crop at the same samples (the same notes).
The decoder then has to take the instrument from the reference, not from the codes: what
lets a continuation keep the prime's instrument when the sampled codes drift from it.

Adversarial fine-tuning (``adversarial_weight`` > 0, with frozen codes): a
multi-resolution STFT discriminator (``tokgen.codec.discriminator``) trained beside the
decoder, its hinge and feature-matching losses added to the reconstruction losses after
``discriminator_warmup_steps`` (the discriminator learns alone first, so the decoder is
not pushed by a random critic). ``partial_levels`` makes the dropped-level examples
decode from exactly that many top levels: the generator decodes top + middle only.

Teacher-forced codes (``teacher_forced_fraction`` > 0, with frozen codes and a
``CodeSampler``): that share of batches decodes, instead of a crop's own codes, codes an
upsampler drew at every position given the real codes before it, against the real crop
(Tacotron 2's ground-truth-aligned vocoder fine-tune). Generated codes carry a prior's
mistakes; a decoder that only ever saw real codes has not learnt what to make of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from tokgen.codec.checkpoint import copy_code_tables, load_msvq, load_weights, save_vqvae
from tokgen.codec.discriminator import (
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from tokgen.codec.losses import multiscale_losses, waveform_loss
from tokgen.codec.msvq import MSVQConfig, MultiScaleVQ, semitone_features
from tokgen.codec.train import CropSampler
from tokgen.data.render import aligned_groups, load_split
from tokgen.errors import TokgenError
from tokgen.training import LoopConfig, Solver, scheduled_lr, set_lr


class MSVQTrainConfig(LoopConfig):
    segment_samples: int = Field(default=8192, ge=2048)  # the 2048-point loss STFT needs it
    reference_samples: int = Field(default=16000, ge=1024)
    ae_warmup_steps: int = Field(default=300, ge=0)
    dropout_fraction: float = Field(default=0.5, ge=0, le=1)
    no_reference_fraction: float = Field(default=0.1, ge=0, le=1)
    commit_weight: float = 0.02
    waveform_weight: float = 0.1
    pitch_weight: float = 1.0
    pitch_code_weight: float = 1.0  # the top codes predicting the semitone energies
    valid_crops: int = Field(default=32, ge=1)
    swap_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="batches decoded in another aligned render's timbre, against that render",
    )
    freeze_codes: bool = Field(
        default=False,
        description="train only the decoder and the timbre encoder: the codes, and priors "
        "trained on them, stay valid (the second stage, after the codes are fixed)",
    )
    partial_levels: int | None = Field(
        default=None,
        ge=1,
        description="examples with dropped levels decode from exactly this many top levels "
        "(default: 1 to all but one, equally often)",
    )
    adversarial_weight: float = Field(
        default=0.0,
        ge=0,
        description="weight of the discriminator's hinge loss for the decoder (0: no discriminator)",
    )
    feature_matching_weight: float = Field(default=2.0, ge=0, description="relative to adversarial_weight")
    discriminator_warmup_steps: int = Field(
        default=200, ge=0, description="steps of this run the discriminator trains alone"
    )
    teacher_forced_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="batches decoded (top partial_levels levels) from codes an upsampler drew "
        "given the real ones before them, against the real crop",
    )


# What draws teacher-forced codes (``tokgen.prior.teacher_forcing.UpsamplerDraws``): given
# the codes of a batch of crops and of their references (per level, top first, (B, F_l)
# each) and a seed, the crops' codes with one level replaced by a prior's draws. The codec
# layer only calls it: priors sit above codecs.
CodeSampler = Callable[[list[torch.Tensor], list[torch.Tensor], int], list[torch.Tensor]]


def sounding_start(
    rng: np.random.Generator, audio: np.ndarray, segment: int, length: int | None = None
) -> int:
    """Start of a ``segment``-sample crop of ``audio``'s first ``length`` samples (default:
    all) that is not near-silent; after 10 quiet draws, the last one."""
    length = audio.size if length is None else length
    for _ in range(10):
        start = int(rng.integers(0, length - segment + 1))
        if np.sqrt(np.mean(audio[start : start + segment] ** 2)) > 1e-3:
            break
    return start


def reference_crop(rng: np.random.Generator, audio: np.ndarray, reference: int) -> np.ndarray:
    """A random ``reference``-sample crop of ``audio`` (all of it, zero-padded, if shorter)."""
    if audio.size <= reference:
        return np.pad(audio, (0, reference - audio.size))
    r0 = int(rng.integers(0, audio.size - reference + 1))
    return audio[r0 : r0 + reference]


class PairSampler(CropSampler):
    """Crops with a reference: another crop of the same recording."""

    def pair(self, reference: int) -> tuple[np.ndarray, np.ndarray]:
        idx = int(self.rng.choice(len(self.audio), p=self.weights))
        a = self.audio[idx]
        start = sounding_start(self.rng, a, self.segment)
        return a[start : start + self.segment], reference_crop(self.rng, a, reference)

    def pairs(self, n: int, reference: int) -> tuple[torch.Tensor, torch.Tensor]:
        crops, refs = zip(*(self.pair(reference) for _ in range(n)), strict=True)
        return torch.from_numpy(np.stack(crops))[:, None, :], torch.from_numpy(np.stack(refs))


class SwapSampler:
    """Crops of one render, the same samples of another render of the piece (the target)
    and a reference crop of that other render, from groups of aligned renders."""

    def __init__(
        self, audio: list[np.ndarray], groups: list[list[int]], segment: int, rng: np.random.Generator
    ):
        self.audio, self.segment, self.rng = audio, segment, rng
        self.groups = [g for g in groups if min(audio[i].size for i in g) >= segment]
        if not self.groups:
            raise TokgenError(
                "timbre swaps need aligned renders of a piece (`tokgen data render --paired`) "
                f"longer than one segment ({segment} samples)"
            )

    def swap(self, reference: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        group = self.groups[int(self.rng.integers(len(self.groups)))]
        i, j = (int(k) for k in self.rng.choice(group, size=2, replace=False))
        a, b = self.audio[i], self.audio[j]
        start = sounding_start(self.rng, b, self.segment, min(a.size, b.size))
        crop = slice(start, start + self.segment)
        return a[crop], b[crop], reference_crop(self.rng, b, reference)

    def swaps(self, n: int, reference: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, target, ref = zip(*(self.swap(reference) for _ in range(n)), strict=True)
        return (
            torch.from_numpy(np.stack(x))[:, None, :],
            torch.from_numpy(np.stack(target))[:, None, :],
            torch.from_numpy(np.stack(ref)),
        )


def keep_levels_for(
    rng: np.random.Generator,
    batch: int,
    n_levels: int,
    dropout_fraction: float,
    partial_levels: int | None = None,
) -> torch.Tensor:
    """Levels kept per example: all of them, or (with ``dropout_fraction``) the top
    ``partial_levels``, or if that is None the top 1 to ``n_levels - 1`` equally often."""
    keep = np.full(batch, n_levels)
    drop = rng.random(batch) < dropout_fraction
    if partial_levels is not None:
        keep[drop] = min(partial_levels, n_levels)
    elif n_levels > 1:
        keep[drop] = rng.integers(1, n_levels, size=int(drop.sum()))
    return torch.from_numpy(keep)


def msvq_loss(
    model: MultiScaleVQ,
    x: torch.Tensor,
    ref: torch.Tensor | None,
    keep: torch.Tensor | None,
    cfg: MSVQTrainConfig,
    quantize: bool = True,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Losses of decoding ``x`` (in ``ref``'s timbre) against ``target`` (default ``x``),
    and the decoded audio."""
    out = model(x, ref, keep, quantize=quantize)
    loss, stats = audio_loss(x if target is None else target, out.audio, model.cfg.sample_rate, cfg)
    loss = loss + cfg.commit_weight * out.commit_loss + cfg.pitch_code_weight * out.pitch_loss
    stats["loss"] = loss.item()
    stats["commit"] = float(out.commit_loss.detach())
    stats["pitch_code"] = float(out.pitch_loss.detach())
    for lv, p in enumerate(out.perplexity):
        stats[f"perplexity{lv}"] = p
    return loss, stats, out.audio


def audio_loss(
    y: torch.Tensor, audio: torch.Tensor, sample_rate: int, cfg: MSVQTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The reconstruction terms: multi-scale spectral, pitch and waveform losses of ``audio``
    against ``y`` (both (B, 1, T))."""
    parts = multiscale_losses(y[:, 0], audio[:, 0], sample_rate)
    wav = waveform_loss(y[:, 0], audio[:, 0])
    loss = parts["mel"] + parts["sc"] + parts["log_mag"] + cfg.pitch_weight * parts["pitch"]
    loss = loss + cfg.waveform_weight * wav
    return loss, {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}, "waveform": wav.item()}


@torch.no_grad()
def frozen_codes(model: MultiScaleVQ, audio: torch.Tensor) -> list[torch.Tensor]:
    """The codes of every level of a batch of crops (B, 1, T), as the frozen codec gives them:
    like ``MSVQCodec.encode``, a crop is zero-padded to whole top-level frames (reference
    crops need not be)."""
    top = model.cfg.hops[0]
    audio = F.pad(audio, (0, -audio.shape[-1] % top))
    return model.quantize(model.encoder(audio), None, model.features(audio)).codes


def teacher_forced_loss(
    model: MultiScaleVQ,
    x: torch.Tensor,
    ref: torch.Tensor,
    sampler: CodeSampler,
    seed: int,
    levels: int,
    cfg: MSVQTrainConfig,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Losses of decoding the top ``levels`` levels of ``sampler``'s draws for crops ``x``
    (B, 1, T) (in the timbre of ``ref``, (B, T_ref)) against ``x``, and the decoded audio."""
    real = frozen_codes(model, x)
    drawn = sampler(real, frozen_codes(model, ref[:, None]), seed)[:levels]
    audio = model.decode_codes(drawn, model.timbre_vector(ref, x.shape[0]))
    loss, stats = audio_loss(x, audio, model.cfg.sample_rate, cfg)
    # the share of the decoded codes that are not the real ones
    changed = torch.cat([(a != b).flatten() for a, b in zip(drawn, real[:levels], strict=True)])
    stats["drawn_changed"] = float(changed.float().mean())
    return loss, stats, audio


def kmeans(x: torch.Tensor, k: int, iters: int, rng: np.random.Generator, chunk: int = 16384) -> torch.Tensor:
    """Lloyd's k-means of the rows of ``x`` (N, D): ``k`` centroids, started from random
    rows; a centroid left without rows is re-seeded with a random row."""
    centroids = x[torch.from_numpy(rng.choice(x.shape[0], size=k, replace=x.shape[0] < k))].clone()
    for _ in range(iters):
        assign = torch.cat(
            [torch.cdist(x[i : i + chunk], centroids).argmin(dim=1) for i in range(0, x.shape[0], chunk)]
        )
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            centroids[empty] = x[torch.from_numpy(rng.choice(x.shape[0], size=int(empty.sum())))]
    return centroids


def fit_semantic_codebook(
    model: MultiScaleVQ,
    audio: list[np.ndarray],
    rng: np.random.Generator,
    frames: int = 100_000,
    iters: int = 15,
) -> None:
    """Set the semantic top level's codebook to k-means centroids of the training audio's
    semitone energies (at most ``frames`` frames drawn from all files)."""
    hop = model.cfg.hops[0]
    feats = [
        semitone_features(torch.from_numpy(a)[None, None], model.cfg.sample_rate, hop)[0].T
        for a in audio
        if a.size >= hop
    ]
    x = torch.cat(feats)
    x = x[torch.from_numpy(rng.choice(x.shape[0], size=min(frames, x.shape[0]), replace=False))]
    model.quantizers[0].set_codebook(kmeans(x, model.cfg.codebook_size, iters, rng))  # type: ignore[operator]


class MSVQSolver(Solver):
    name = "codec msvq"

    def __init__(
        self,
        model_cfg: MSVQConfig,
        cfg: MSVQTrainConfig,
        data_dir: Path,
        run_dir: Path,
        init_from: Path | None = None,
        code_sampler: CodeSampler | None = None,
    ):
        torch.manual_seed(cfg.seed)
        model = MultiScaleVQ(model_cfg)
        if init_from is not None:
            load_weights(model, init_from)
        elif model_cfg.pitch_features and not (Path(run_dir) / "state.pt").exists():
            audio = load_split(data_dir, "train", model_cfg.sample_rate)
            fit_semantic_codebook(model, audio, np.random.default_rng(cfg.seed + 2000))
        if cfg.adversarial_weight > 0 and not cfg.freeze_codes:
            raise TokgenError("adversarial training is a fine-tune of the decoder: it needs frozen codes")
        if cfg.teacher_forced_fraction > 0 and not (cfg.freeze_codes and code_sampler is not None):
            raise TokgenError(
                "teacher-forced codes are for a decoder fine-tune: they need frozen codes and a prior"
            )
        self.code_sampler = code_sampler
        params = list(model.parameters())
        if cfg.freeze_codes:
            trained = {id(p) for m in (model.decoder, model.timbre) if m is not None for p in m.parameters()}
            for p in params:
                p.requires_grad_(id(p) in trained)
            params = [p for p in params if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
        self.discriminator: MultiResolutionDiscriminator | None = None
        if cfg.adversarial_weight > 0:
            self.discriminator = MultiResolutionDiscriminator()
            self.d_opt = torch.optim.AdamW(
                self.discriminator.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.0
            )
        super().__init__(model, opt, cfg, run_dir)
        self.model_cfg, self.tcfg = model_cfg, cfg
        self.adversarial_from = 0  # the step the discriminator started at (a plain run's step when resumed)
        sr = model_cfg.sample_rate
        train_audio = load_split(data_dir, "train", sr)
        self.sampler = PairSampler(train_audio, cfg.segment_samples, self.rng)
        valid = PairSampler(
            load_split(data_dir, "valid", sr), cfg.segment_samples, np.random.default_rng(cfg.seed + 1000)
        )
        self.valid_x, self.valid_ref = valid.pairs(cfg.valid_crops, cfg.reference_samples)
        self.swapper: SwapSampler | None = None
        if cfg.swap_fraction > 0:
            self.swapper = SwapSampler(
                train_audio, aligned_groups(data_dir, "train"), cfg.segment_samples, self.rng
            )

    def train_step(self) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.tcfg
        target = None
        if self.swapper is not None and self.rng.random() < cfg.swap_fraction:
            x, target, ref = self.swapper.swaps(cfg.batch_size, cfg.reference_samples)
        else:
            x, ref = self.sampler.pairs(cfg.batch_size, cfg.reference_samples)
        n_levels = len(self.model_cfg.level_strides)
        if cfg.freeze_codes:  # no EMA updates or restarts: the codebooks stay as they are
            for q in self.model.quantizers:  # type: ignore[union-attr]
                q.eval()
        assert isinstance(self.model, MultiScaleVQ)
        drawn = self.code_sampler
        if target is None and drawn is not None and self.rng.random() < cfg.teacher_forced_fraction:
            seed = int(self.rng.integers(2**31))
            levels = cfg.partial_levels or n_levels
            loss, stats, audio = teacher_forced_loss(self.model, x, ref, drawn, seed, levels, cfg)
        else:
            dropout = cfg.dropout_fraction
            keep = keep_levels_for(self.rng, cfg.batch_size, n_levels, dropout, cfg.partial_levels)
            use_ref = target is not None or self.rng.random() >= cfg.no_reference_fraction
            loss, stats, audio = msvq_loss(
                self.model, x, ref if use_ref else None, keep, cfg, self.quantizing(), target
            )
        stats["swap"] = float(target is not None)
        stats["teacher_forced"] = float("drawn_changed" in stats)
        if self.discriminator is not None:
            real = x if target is None else target
            stats["disc"] = self.discriminator_step(real, audio.detach())
            if self.step >= self.adversarial_from + cfg.discriminator_warmup_steps:
                adversarial, matching = self.adversarial_losses(real, audio)
                loss = loss + cfg.adversarial_weight * (adversarial + cfg.feature_matching_weight * matching)
                stats["adversarial"], stats["feature_matching"] = adversarial.item(), matching.item()
        return loss, stats

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One update of the discriminator on a real and a decoded batch; its loss."""
        assert self.discriminator is not None
        cfg = self.tcfg
        set_lr(self.d_opt, scheduled_lr(cfg.lr, self.step, cfg.warmup_steps, cfg.lr_decay_from, cfg.steps))
        loss = discriminator_loss(self.discriminator(real), self.discriminator(fake))
        self.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), cfg.grad_clip)
        self.d_opt.step()
        return loss.item()

    def adversarial_losses(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's hinge and feature-matching losses; gradients reach the decoder only."""
        assert self.discriminator is not None
        self.discriminator.requires_grad_(False)
        try:
            with torch.no_grad():
                judged_real = self.discriminator(real)
            judged_fake = self.discriminator(fake)
            return generator_loss(judged_fake), feature_matching_loss(judged_real, judged_fake)
        finally:
            self.discriminator.requires_grad_(True)

    def extra_state(self) -> dict[str, Any]:
        if self.discriminator is None:
            return {}
        return {
            "discriminator": self.discriminator.state_dict(),
            "d_opt": self.d_opt.state_dict(),
            "adversarial_from": self.adversarial_from,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.adversarial_from = 0
        if self.discriminator is None:
            return
        if "discriminator" in state:  # an adversarial run resumed
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_opt.load_state_dict(state["d_opt"])
            self.adversarial_from = int(state.get("adversarial_from", 0))
        else:  # a run without one goes on with a new discriminator: it warms up first
            self.adversarial_from = state["step"]

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss of full decoding and of decoding the top level (``partial_levels``
        levels, if set) only, with references."""
        assert isinstance(self.model, MultiScaleVQ)
        self.model.eval()
        n, bs = len(self.valid_x), self.tcfg.batch_size
        losses = []
        for keep_n in (len(self.model_cfg.level_strides), self.tcfg.partial_levels or 1):
            for i in range(0, n, bs):
                x, ref = self.valid_x[i : i + bs], self.valid_ref[i : i + bs]
                keep = torch.full((x.shape[0],), keep_n)
                quantize = self.quantizing()
                losses.append(msvq_loss(self.model, x, ref, keep, self.tcfg, quantize)[1]["loss"])
        self.model.train()
        return float(np.mean(losses))

    def quantizing(self) -> bool:
        """Whether the latents are quantised now: after the autoencoder warm-up, which is
        for an encoder still learning; with frozen codes always (the decoder must only
        ever see, and be validated on, the quantised latents it will decode)."""
        return self.tcfg.freeze_codes or self.step >= self.tcfg.ae_warmup_steps

    def comparable(self) -> bool:
        """The autoencoder warm-up validates without quantisers: not the codec."""
        return self.tcfg.freeze_codes or self.step > self.tcfg.ae_warmup_steps

    def save_best(self, valid_loss: float) -> None:
        assert isinstance(self.model, MultiScaleVQ)
        extra = {"training_steps": self.step, "valid_loss": valid_loss}
        save_vqvae(self.model, self.run_dir / "best", extra=extra)
        copy_code_tables(self.run_dir, self.run_dir / "best")


def train_msvq(
    model_cfg: MSVQConfig,
    cfg: MSVQTrainConfig,
    data_dir: Path,
    run_dir: Path,
    resume: bool,
    init_from: Path | None = None,
    code_sampler: CodeSampler | None = None,
    decoder_lookahead: int | None = None,
) -> dict[str, float]:
    """Train (or with ``resume`` continue) the run in ``run_dir``; its ``config.json`` is
    the architecture, ``state.pt`` the training state and ``best/`` the exported model
    with the lowest validation loss. ``init_from`` (a model directory, e.g. another run's
    ``best/``) starts a new run from its weights and architecture. ``code_sampler`` draws
    the teacher-forced codes (``teacher_forced_fraction``). ``decoder_lookahead`` sets a
    new run's ``MSVQConfig.decoder_lookahead`` (the weights' shapes do not depend on it, so
    a decoder can be fine-tuned from one centred to one that reads fewer frames ahead)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if config_path.exists():
        if not resume:
            raise TokgenError(f"{run_dir} already holds a run; pass --resume to continue it")
        model_cfg = MSVQConfig.model_validate_json(config_path.read_text())
    else:
        if init_from is not None:
            model_cfg = load_msvq(init_from).cfg
        if decoder_lookahead is not None:
            changed = {**model_cfg.model_dump(), "decoder_lookahead": decoder_lookahead}
            model_cfg = MSVQConfig.model_validate(changed)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(model_cfg.model_dump_json(indent=2))
    start = init_from if not (run_dir / "state.pt").exists() else None
    if start is not None and cfg.freeze_codes:  # the codes stay: so do the tables about them
        copy_code_tables(start, run_dir)
    return MSVQSolver(model_cfg, cfg, data_dir, run_dir, start, code_sampler).run()


def export_last(run_dir: Path, out_dir: Path) -> None:
    """The weights a run has now (``state.pt``), as a model directory (``best/`` holds the
    ones with the lowest validation loss)."""
    run_dir = Path(run_dir)
    model = MultiScaleVQ(MSVQConfig.model_validate_json((run_dir / "config.json").read_text()))
    state = torch.load(run_dir / "state.pt", weights_only=True)
    model.load_state_dict(state["model"])
    save_vqvae(model, out_dir, extra={"training_steps": state["step"]})
    copy_code_tables(run_dir, out_dir)

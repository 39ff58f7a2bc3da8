"""Multi-scale residual VQ codec: coarse levels that must carry the music.

The Jukebox-style VQ-VAE (``vqvae.py``) gives every level its own encoder and decoder;
its coarse levels learned almost nothing (about -0.3 dB spectral convergence) and their
codes do not determine the notes. This codec follows SNAC instead:

- **One encoder** turns audio into latents at the finest code rate (hop 32 by default).
- **Residual quantisation across scales**: the top level quantises the latents average-
  pooled to its own rate, the next level quantises what is left (the residual) at its
  rate, and so on down to the bottom level. The top codes therefore hold what is most
  worth holding at their scale (pitch, loudness, rhythm); lower levels add detail.
- **One decoder** over the sum of every level's quantised latents. Decoding "from level
  l" means summing levels 0..l only. Quantiser dropout in training (a random half of the
  examples keep only their top one or two levels) makes those partial sums decode to the
  right notes and instrument, which is what a hierarchy of priors needs.
- **A Fourier-head decoder** (Vocos): ConvNeXt blocks at a frame rate of ``decoder_hop``
  predict STFT magnitude and phase, and an inverse STFT makes the waveform. Capacity sits
  at the frame rate, where compute is cheap, instead of at the audio rate.
- **A global timbre vector** from a small encoder over a reference clip (another crop of
  the same recording in training, the prime in generation) conditions every decoder block
  (adaptive layer norm, FiLM). Codes sampled by a prior lose some of the instrument; the
  vector gives it back. Without a reference the vector is zero, which training also sees.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import nn

from tokgen.audio import check_mono
from tokgen.codec.base import Codec, IncrementalDecoder, LevelSpec
from tokgen.codec.chunking import run_in_chunks
from tokgen.codec.fourier_stream import FourierStream, whole_top_frames
from tokgen.codec.instruments import InstrumentTable
from tokgen.codec.modules import Encoder
from tokgen.codec.quantizer import EMAVectorQuantizer
from tokgen.codec.spectral import log_mel_from_magnitude, log_semitones, stft_magnitude
from tokgen.errors import TokgenError


class MSVQConfig(BaseModel):
    """Architecture of a multi-scale residual VQ codec; levels are ordered top first."""

    kind: Literal["msvq"] = "msvq"
    sample_rate: int = Field(default=16000, ge=4000, le=96000)
    encoder_strides: list[int] = Field(default=[2, 4, 4], min_length=1)
    encoder_channels: list[int] = Field(default=[16, 32, 64, 192])
    latent_dim: int = Field(default=192, ge=1)
    # Pooling of the encoder's frames per level, top first; the last level must be 1.
    level_strides: list[int] = Field(default=[16, 4, 1], min_length=1)
    codebook_size: int = Field(default=1024, ge=2, le=65536)
    code_dim: int = Field(default=32, ge=1)
    decoder_hop: int = Field(default=128, ge=8)  # frame rate of the Fourier head
    decoder_dim: int = Field(default=256, ge=8)
    decoder_intermediate: int = Field(default=768, ge=8)
    decoder_layers: int = Field(default=8, ge=1)
    # Frames after its own that each width-7 convolution of the decoder (the embedding and
    # every block) reads; the rest of its 6 neighbours are before. 3 centres them (Vocos).
    # A stream has to wait for a frame's lookahead before its audio is final
    # (``decode_lookahead``: this x (decoder_layers + 1) + 2 frames: 29 at 3, 11 at 1), so
    # fewer taps after let the first audio out sooner, for less context on the future.
    decoder_lookahead: int = Field(default=3, ge=0, le=3)
    timbre_dim: int = Field(default=128, ge=0)  # 0: no timbre conditioning
    # A semantic top level (AudioLM, MusicLM): its codes are the nearest of k-means centroids
    # of the log energies per semitone at the top level's rate (fitted on the training audio
    # before training, then fixed), so they must hold the notes. Learned top codes did not:
    # the encoder's receptive field (~15 ms) cannot know a low note's pitch, and codes
    # learned from its pooled latents, or from the semitone energies through a learned
    # projection, kept a chroma correlation of 0.0-0.2 with the input (k-means keeps ~0.8).
    pitch_features: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> MSVQConfig:
        if len(self.encoder_channels) != len(self.encoder_strides) + 1:
            raise ValueError("encoder_channels needs one entry more than encoder_strides")
        strides = self.level_strides
        if strides[-1] != 1 or any(a <= b or a % b for a, b in itertools.pairwise(strides)):
            raise ValueError(f"level_strides must decrease to 1, each a multiple of the next: {strides}")
        if self.decoder_hop % self.encoder_hop:
            raise ValueError("decoder_hop must be a multiple of the encoder's hop")
        if self.decoder_hop > self.hops[0]:
            raise ValueError("decoder_hop must not exceed the top level's hop")
        return self

    @property
    def encoder_hop(self) -> int:
        return math.prod(self.encoder_strides)

    @property
    def hops(self) -> list[int]:
        return [self.encoder_hop * s for s in self.level_strides]


WIDTH = 7  # the decoder's convolutions: each frame and 6 neighbours


def conv_padding(lookahead: int) -> tuple[int, int]:
    """Zero frames before and after a sequence for a width-7 convolution that reads
    ``lookahead`` frames after each output frame: the output keeps the input's length."""
    return WIDTH - 1 - lookahead, lookahead


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> adaptive layer norm (timbre FiLM) -> pointwise MLP, residual."""

    def __init__(self, dim: int, intermediate: int, timbre_dim: int, lookahead: int = 3):
        super().__init__()
        self.padding = conv_padding(lookahead)
        self.dwconv = nn.Conv1d(dim, dim, WIDTH, groups=dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=timbre_dim == 0)
        self.film = nn.Linear(timbre_dim, 2 * dim) if timbre_dim else None
        if self.film is not None:  # starts as a plain layer norm: scale 1, shift 0
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.pw1 = nn.Linear(dim, intermediate)
        self.pw2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: torch.Tensor, timbre: torch.Tensor | None, valid: bool = False) -> torch.Tensor:
        """``valid``: no zero padding at the edges; the output is the frames whose whole
        context is in ``x``, 6 fewer (streaming decodes a growing sequence this way)."""
        if valid:
            before, after = self.padding
            h, x = self.dwconv(x), x[..., before : x.shape[-1] - after]
        else:
            h = self.dwconv(F.pad(x, self.padding))
        y = self.norm(h.transpose(1, 2))  # (B, F, dim)
        if self.film is not None and timbre is not None:
            scale, shift = self.film(timbre)[:, None, :].chunk(2, dim=-1)
            y = y * (1 + scale) + shift
        y = self.gamma * self.pw2(F.gelu(self.pw1(y)))
        return x + y.transpose(1, 2)


class FourierDecoder(nn.Module):
    """Latents at the encoder rate (B, latent, T) -> audio (B, 1, T * encoder_hop)."""

    def __init__(self, cfg: MSVQConfig):
        super().__init__()
        self.fold = cfg.decoder_hop // cfg.encoder_hop
        self.hop = cfg.decoder_hop
        self.n_fft = 4 * cfg.decoder_hop
        self.padding = conv_padding(cfg.decoder_lookahead)
        self.embed = nn.Conv1d(cfg.latent_dim * self.fold, cfg.decoder_dim, WIDTH)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.decoder_dim, cfg.decoder_intermediate, cfg.timbre_dim, cfg.decoder_lookahead)
            for _ in range(cfg.decoder_layers)
        )
        self.norm = nn.LayerNorm(cfg.decoder_dim)
        self.head = nn.Linear(cfg.decoder_dim, self.n_fft + 2)  # magnitude and phase per bin
        self.window: torch.Tensor
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        # Decoder frames before and after a frame that influence its audio: the embedding's
        # and every block's taps on that side, plus the inverse STFT's overlap (2 frames).
        convs = 1 + cfg.decoder_layers
        self.history_frames = self.padding[0] * convs + 2
        self.lookahead_frames = self.padding[1] * convs + 2

    def fold_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents at the encoder rate (B, latent, T) -> decoder frames (B, latent x fold, F)."""
        b, d, t = z.shape
        frames = t // self.fold
        x = z[:, :, : frames * self.fold].reshape(b, d, frames, self.fold).permute(0, 1, 3, 2)
        return x.reshape(b, d * self.fold, frames)

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's frames (B, dim, F) -> complex STFT frames (B, n_fft / 2 + 1, F)."""
        h = self.head(self.norm(x.transpose(1, 2))).transpose(1, 2)  # (B, n_fft + 2, F)
        log_mag, phase = h.chunk(2, dim=1)
        return torch.polar(torch.exp(log_mag.clamp(max=6.0)), phase)

    def forward(self, z: torch.Tensor, timbre: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(F.pad(self.fold_latents(z), self.padding))
        for block in self.blocks:
            x = block(x, timbre)
        spec = self.spectrum(x)
        frames = spec.shape[-1]
        audio = torch.istft(
            spec, self.n_fft, self.hop, window=self.window, center=True, length=frames * self.hop
        )
        return audio[:, None, :]


class TimbreEncoder(nn.Module):
    """A reference clip (B, T) -> one global timbre vector (B, timbre_dim).

    Log-mel frames, scaled to a fixed level first so loudness does not count, then two
    convolutions and mean + standard deviation pooling over time."""

    N_FFT, N_MELS = 1024, 64

    def __init__(self, sample_rate: int, timbre_dim: int, hidden: int = 128):
        super().__init__()
        self.sample_rate = sample_rate
        self.net = nn.Sequential(
            nn.Conv1d(self.N_MELS, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 3, padding=1),
            nn.GELU(),
        )
        self.out = nn.Linear(2 * hidden, timbre_dim)

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        ref = reference / (reference.pow(2).mean(-1, keepdim=True).sqrt() + 1e-4) * 0.1
        mel = log_mel_from_magnitude(stft_magnitude(ref, self.N_FFT), self.sample_rate, self.N_MELS)
        h = self.net(mel)
        return self.out(torch.cat([h.mean(-1), h.std(-1)], dim=-1))


@dataclass
class MSVQOutput:
    audio: torch.Tensor  # (B, 1, T)
    codes: list[torch.Tensor]  # per level, top first: (B, frames_l)
    commit_loss: torch.Tensor
    perplexity: list[float]
    pitch_loss: torch.Tensor  # L1 of the semitone energies predicted from the top codes


@dataclass
class Quantized:
    latent: torch.Tensor  # (B, D, T): the sum of the kept levels' quantised latents
    codes: list[torch.Tensor]
    commit_loss: torch.Tensor
    perplexity: list[float]
    top: torch.Tensor  # (B, D, T_top): the top level's quantised latent at its own rate


N_SEMITONES = 84


def semitone_features(audio: torch.Tensor, sample_rate: int, hop: int) -> torch.Tensor:
    """Log energy per semitone (84 bands from C1) of (B, 1, T) audio at one frame per
    ``hop`` samples (2048-point STFT, zero-padded at the edges so any length works),
    scaled to about [-2, 2]: (B, 84, T // hop)."""
    x = audio[:, 0]
    window = torch.hann_window(2048, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, 2048, hop, window=window, center=True, pad_mode="constant", return_complex=True)
    return ((log_semitones(spec.abs(), sample_rate) + 4.0) / 4.0)[..., : x.shape[-1] // hop]


class MultiScaleVQ(nn.Module):
    def __init__(self, cfg: MSVQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder_strides, cfg.encoder_channels, cfg.latent_dim)
        semantic = cfg.pitch_features
        dims = [N_SEMITONES if semantic and lv == 0 else cfg.code_dim for lv in range(len(cfg.level_strides))]
        self.in_proj = nn.ModuleList(
            nn.Identity() if semantic and lv == 0 else nn.Conv1d(cfg.latent_dim, d, 1)
            for lv, d in enumerate(dims)
        )
        self.out_proj = nn.ModuleList(nn.Conv1d(d, cfg.latent_dim, 1) for d in dims)
        self.quantizers = nn.ModuleList(
            EMAVectorQuantizer(cfg.codebook_size, d, frozen=semantic and lv == 0) for lv, d in enumerate(dims)
        )
        self.decoder = FourierDecoder(cfg)
        self.timbre = TimbreEncoder(cfg.sample_rate, cfg.timbre_dim) if cfg.timbre_dim else None
        self.pitch_head = nn.Conv1d(cfg.latent_dim, N_SEMITONES, 1) if cfg.pitch_features else None

    def features(self, audio: torch.Tensor) -> torch.Tensor | None:
        """What the top quantiser gets besides the encoder's latents (None: nothing)."""
        if not self.cfg.pitch_features:
            return None
        return semitone_features(audio, self.cfg.sample_rate, self.cfg.hops[0])

    def timbre_vector(self, reference: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.timbre is None:
            return None
        if reference is None:
            return torch.zeros(batch, self.cfg.timbre_dim)
        return self.timbre(reference)

    def level_latent(self, level: int, codes: torch.Tensor, frames: int) -> torch.Tensor:
        """Quantised latents of one level's codes (B, F_l), upsampled to ``frames``."""
        quantizer: EMAVectorQuantizer = self.quantizers[level]  # type: ignore[assignment]
        q = self.out_proj[level](quantizer.lookup(codes))
        return q.repeat_interleave(self.cfg.level_strides[level], dim=-1)[..., :frames]

    def quantize(
        self,
        z: torch.Tensor,
        keep_levels: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        levels: int | None = None,
    ) -> Quantized:
        """Residual quantisation of encoder latents (B, D, T); a semantic top level
        quantises ``features`` (see ``features``) instead. ``keep_levels`` (B,) says how many
        levels (from the top) each example keeps in the sum (quantiser dropout); all codes
        are computed either way. ``levels``: quantise only that many levels from the top
        (None: all); a level's codes never depend on the levels below it."""
        residual, total = z, torch.zeros_like(z)
        codes, commits, perplexities = [], [], []
        t = z.shape[-1]
        top = z
        for lv, stride in enumerate(self.cfg.level_strides[:levels]):
            pooled = F.avg_pool1d(residual, stride) if stride > 1 else residual
            if lv == 0 and self.cfg.pitch_features:
                if features is None:
                    raise ValueError("a semantic top level quantises features: pass them")
                pooled = features[..., : pooled.shape[-1]]
            vq = self.quantizers[lv](self.in_proj[lv](pooled))
            q = self.out_proj[lv](vq.quantized)
            if lv == 0:
                top = q
            q = q.repeat_interleave(stride, dim=-1)[..., :t]
            # The residual never sees the dropout: every level's codes are the same whether
            # or not the levels above it are kept in the decoder's sum.
            residual = residual - q
            if keep_levels is not None:
                q = q * (keep_levels > lv).to(q.dtype)[:, None, None]
            total = total + q
            codes.append(vq.codes)
            commits.append(vq.commit_loss)
            perplexities.append(float(vq.perplexity))
        return Quantized(total, codes, torch.stack(commits).sum(), perplexities, top)

    def forward(
        self,
        audio: torch.Tensor,
        reference: torch.Tensor | None = None,
        keep_levels: torch.Tensor | None = None,
        quantize: bool = True,
    ) -> MSVQOutput:
        z = self.encoder(audio)
        timbre = self.timbre_vector(reference, audio.shape[0])
        if not quantize:  # autoencoder warm-up: no bottleneck yet
            return MSVQOutput(self.decoder(z, timbre), [], torch.zeros(()), [], torch.zeros(()))
        features = self.features(audio)
        out = self.quantize(z, keep_levels, features)
        pitch = torch.zeros(())
        if features is not None and self.pitch_head is not None:
            predicted = self.pitch_head(out.top)
            pitch = (predicted - features[..., : predicted.shape[-1]]).abs().mean()
        return MSVQOutput(self.decoder(out.latent, timbre), out.codes, out.commit_loss, out.perplexity, pitch)

    def decode_codes(self, codes: list[torch.Tensor], timbre: torch.Tensor | None) -> torch.Tensor:
        """Audio (B, 1, T) from the codes of levels 0..len(codes)-1 (B, F_l) each; the
        bottom level's frame count is taken from the finest level given."""
        finest = len(codes) - 1
        frames = codes[finest].shape[-1] * self.cfg.level_strides[finest]
        z = sum(self.level_latent(lv, c, frames) for lv, c in enumerate(codes))
        assert isinstance(z, torch.Tensor)
        return self.decoder(z, timbre)


# Seconds of reference audio the timbre vector is computed from: what training used.
REFERENCE_SECONDS = 1.0


@dataclass
class MSVQCodec(Codec):
    """A trained ``MultiScaleVQ`` behind the ``Codec`` interface. Its levels are residuals
    of one another, so audio is always decoded from levels 0..l together
    (``decode_levels``); ``decode(codes, 0)`` is the top level alone. Encoding runs the
    encoder in chunks (bounded memory), then quantises all the latents at once."""

    model: MultiScaleVQ
    name: str = "msvq"
    chunk_seconds: float = 20.0
    # Per level below the top: each code's pitch classes measured on a corpus
    # (``codec.pitch.CodePitchTable``, ``tokgen codec pitch-classes``), if the model has them.
    code_pitch: dict[int, np.ndarray] = field(default_factory=dict)
    # Each code's instrument-family counts (``tokgen codec instruments``), if the model has them.
    code_instruments: InstrumentTable | None = None
    levels: tuple[LevelSpec, ...] = field(init=False)
    sample_rate: int = field(init=False)
    uses_all_levels = True

    def __post_init__(self) -> None:
        self.model.eval()
        cfg = self.model.cfg
        self.sample_rate = cfg.sample_rate
        self.levels = tuple(LevelSpec(h, cfg.codebook_size) for h in cfg.hops)

    @torch.inference_mode()
    def encode(self, audio: np.ndarray) -> list[np.ndarray]:
        return self._encode(audio, None)

    def _encode(self, audio: np.ndarray, levels: int | None) -> list[np.ndarray]:
        """Codes of the top ``levels`` levels (None: all)."""
        x = check_mono(audio)
        top = self.levels[0].hop
        frames_top = math.ceil(x.size / top)
        padded = torch.zeros(1, 1, frames_top * top)
        padded[0, 0, : x.size] = torch.from_numpy(x)
        enc = self.model.encoder
        hop = self.model.cfg.encoder_hop
        frames = frames_top * top // hop
        chunk = max(1, int(self.chunk_seconds * self.sample_rate) // hop)
        margin = math.ceil(enc.receptive_field / hop) + 1
        z = run_in_chunks(enc, padded, frames, chunk, margin, hop, 1)
        codes = self.model.quantize(z, features=self.model.features(padded), levels=levels).codes
        return [c[0].numpy().astype(np.int64) for c in codes]

    @torch.inference_mode()
    def encode_level(self, audio: np.ndarray, level: int) -> np.ndarray:
        """A semantic top level needs no encoder: its codes are the nearest centroids of
        the semitone energies. Other levels depend on the levels above, not below: the
        levels below are not quantised (a stream's prime at the middle level: 9% less CPU)."""
        if level != 0 or not self.model.cfg.pitch_features:
            return self._encode(audio, level + 1)[level]
        x = check_mono(audio)
        top = self.levels[0].hop
        padded = torch.zeros(1, 1, math.ceil(x.size / top) * top)
        padded[0, 0, : x.size] = torch.from_numpy(x)
        features = self.model.features(padded)
        assert features is not None
        quantizer: EMAVectorQuantizer = self.model.quantizers[0]  # type: ignore[assignment]
        return quantizer.nearest(features[0].T).numpy().astype(np.int64)

    def decode_margin(self, level: int) -> int:
        """Frames of ``level`` before a crop: the decoder's receptive field before a frame
        plus one top frame (crops are widened to whole top frames)."""
        cfg = self.model.cfg
        decoder_frames = self.model.decoder.history_frames + 1
        samples = decoder_frames * cfg.decoder_hop + cfg.hops[0]
        return math.ceil(samples / cfg.hops[level])

    def decode_lookahead(self, level: int) -> int:
        """The decoder's receptive field after a frame, in frames of ``level``: a piece's
        last sample is in the inverse STFT windows of its decoder frame and the two after
        it, each of which reads ``decoder_lookahead`` x (blocks + 1) decoder frames further
        (the embedding and depthwise convolutions). Crops are widened to whole top frames
        on the left only, so unlike ``decode_margin`` this needs no extra top frame (measured exact:
        scripts/measure_decode_margin.py). A level finer than the decoder's frames (the
        bottom, 4 frames to one) waits for the rest of the last frame's decoder frame too:
        a decoder frame is computed once all its codes are in. A coarser level's frame ends
        on a decoder frame's end, so the receptive field alone counts."""
        cfg = self.model.cfg
        hop, field = cfg.hops[level], self.model.decoder.lookahead_frames
        if hop >= cfg.decoder_hop:
            return math.ceil(field * cfg.decoder_hop / hop)
        return (field + 1) * cfg.decoder_hop // hop - 1

    def incremental_decoder(
        self, level: int, first: int, reference: np.ndarray | None = None
    ) -> IncrementalDecoder | None:
        self.check_level(level)
        return FourierStream(self.model, level + 1, first, self.timbre(reference))

    def instruments(self) -> InstrumentTable | None:
        return self.code_instruments

    def pitch_classes(self, level: int) -> np.ndarray | None:
        """The semantic top level's centroids are log energies per semitone from C1
        (``semitone_features``' scale): undone to energies and folded into pitch classes.
        Other levels: the table measured on a corpus, where the model directory has one."""
        self.check_level(level)
        if level != 0 or not self.model.cfg.pitch_features:
            return self.code_pitch.get(level)
        quantizer: EMAVectorQuantizer = self.model.quantizers[0]  # type: ignore[assignment]
        centroids = quantizer.codebook.detach().double().numpy()  # (K, 84)
        energy = np.exp(4.0 * centroids - 4.0)
        classes = energy.reshape(energy.shape[0], N_SEMITONES // 12, 12).sum(1)
        return classes / classes.sum(1, keepdims=True)

    def timbre(self, reference: np.ndarray | None) -> torch.Tensor | None:
        """The timbre vector of the last ``REFERENCE_SECONDS`` of ``reference`` audio."""
        if reference is None or self.model.timbre is None:
            return self.model.timbre_vector(None, 1)
        ref = check_mono(reference)[-int(REFERENCE_SECONDS * self.sample_rate) :]
        with torch.inference_mode():
            return self.model.timbre(torch.from_numpy(ref.copy())[None])

    def decode(self, codes: np.ndarray, level: int) -> np.ndarray:
        if level != 0:
            raise TokgenError(
                f"codec {self.name!r} decodes level {level} together with the levels above it; "
                "decode the codes file from its top level down (all levels are in it)"
            )
        return self.decode_levels([codes])

    @torch.inference_mode()
    def decode_levels(self, codes: list[np.ndarray], reference: np.ndarray | None = None) -> np.ndarray:
        cfg = self.model.cfg
        finest = len(codes) - 1
        checked = [self.check_codes(c, lv) for lv, c in enumerate(codes)]
        # Whole top frames of every level (the last code repeated), cut back afterwards.
        samples = checked[finest].size * cfg.hops[finest]
        strides = cfg.level_strides[: finest + 1]
        padded = [torch.from_numpy(c)[None] for c in whole_top_frames(checked, strides)]
        audio = self.model.decode_codes(padded, self.timbre(reference))[0, 0]
        return audio[:samples].numpy().astype(np.float32)

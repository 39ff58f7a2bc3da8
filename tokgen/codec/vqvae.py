"""Jukebox-style multi-level VQ-VAE.

Each level is an independent encoder -> EMA vector quantiser -> decoder that sees the raw
audio and reconstructs it on its own, with a larger hop (more downsampling) the higher
the level: the top level keeps only coarse structure, the bottom level the detail. Levels
share nothing, so the training loss is a plain sum over levels and each level can be
trained in its own process (``tokgen codec train --levels``), which is how two CPU cores
are both put to work.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator, model_validator
from torch import nn

from tokgen.audio import check_mono
from tokgen.codec.base import Codec, LevelSpec
from tokgen.codec.chunking import run_in_chunks
from tokgen.codec.modules import Decoder, Encoder
from tokgen.codec.quantizer import EMAVectorQuantizer, QuantizerOutput


class LevelConfig(BaseModel):
    strides: list[int] = Field(min_length=1)
    channels: list[int]
    codebook_size: int = Field(ge=2, le=65536)
    code_dim: int = Field(ge=1)
    # The decoder may be wider than the encoder: a decoder can be retrained on the frozen
    # encoder and codebook (``tokgen codec train --freeze-codes``) without changing the codes.
    decoder_channels: list[int] | None = None

    @field_validator("strides")
    @classmethod
    def _even_strides(cls, v: list[int]) -> list[int]:
        if any(s < 2 or s % 2 for s in v):
            raise ValueError("strides must be even and >= 2")
        return v

    @model_validator(mode="after")
    def _channels_per_stage(self) -> LevelConfig:
        for name, channels in (("channels", self.channels), ("decoder_channels", self.decoder_channels)):
            if channels is not None and len(channels) != len(self.strides) + 1:
                raise ValueError(f"{name} needs one entry more than strides")
        return self

    @property
    def hop(self) -> int:
        return math.prod(self.strides)


class VQVAEConfig(BaseModel):
    """Architecture of a multi-level VQ-VAE; ``levels`` is ordered top (coarsest) first."""

    kind: str = "vqvae"
    sample_rate: int = Field(default=16000, ge=4000, le=96000)
    levels: list[LevelConfig] = Field(min_length=1)

    @field_validator("levels")
    @classmethod
    def _coarse_to_fine(cls, v: list[LevelConfig]) -> list[LevelConfig]:
        hops = [lv.hop for lv in v]
        if any(a <= b for a, b in itertools.pairwise(hops)):
            raise ValueError(f"levels must go from coarse to fine (decreasing hops), got hops {hops}")
        if any(a % b for a, b in itertools.pairwise(hops)):
            raise ValueError(f"each hop must be a multiple of the next level's hop, got {hops}")
        return v


@dataclass
class LevelOutput:
    audio: torch.Tensor  # (B, 1, T)
    vq: QuantizerOutput


class VQVAELevel(nn.Module):
    def __init__(self, cfg: LevelConfig):
        super().__init__()
        self.hop = cfg.hop
        self.encoder = Encoder(cfg.strides, cfg.channels, cfg.code_dim)
        self.quantizer = EMAVectorQuantizer(cfg.codebook_size, cfg.code_dim)
        self.decoder = Decoder(cfg.strides, cfg.decoder_channels or cfg.channels, cfg.code_dim)

    def forward(self, audio: torch.Tensor) -> LevelOutput:
        vq = self.quantizer(self.encoder(audio))
        return LevelOutput(self.decoder(vq.quantized), vq)


class MultiLevelVQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.levels = nn.ModuleList(VQVAELevel(lv) for lv in cfg.levels)


@dataclass
class VQVAECodec(Codec):
    """A trained ``MultiLevelVQVAE`` behind the ``Codec`` interface, with chunked inference:
    audio of any length is processed ``chunk_seconds`` at a time (plus overlap), so memory
    stays bounded."""

    model: MultiLevelVQVAE
    name: str = "vqvae"
    chunk_seconds: float = 10.0
    levels: tuple[LevelSpec, ...] = field(init=False)
    sample_rate: int = field(init=False)

    def __post_init__(self) -> None:
        self.model.eval()
        self.sample_rate = self.model.cfg.sample_rate
        self.levels = tuple(LevelSpec(lv.hop, lv.codebook_size) for lv in self.model.cfg.levels)

    def _chunk_frames(self, level: int) -> int:
        return max(1, int(self.chunk_seconds * self.sample_rate) // self.levels[level].hop)

    def encode(self, audio: np.ndarray) -> list[np.ndarray]:
        return [self.encode_level(audio, lv) for lv in range(len(self.levels))]

    @torch.inference_mode()
    def encode_level(self, audio: np.ndarray, level: int) -> np.ndarray:
        x = check_mono(audio)
        net: VQVAELevel = self.model.levels[level]  # type: ignore[assignment]
        frames = self.levels[level].frames(x.size)
        padded = torch.zeros(1, 1, frames * net.hop)
        padded[0, 0, : x.size] = torch.from_numpy(x)
        margin = math.ceil(net.encoder.receptive_field / net.hop) + 1
        z = run_in_chunks(net.encoder, padded, frames, self._chunk_frames(level), margin, net.hop, 1)
        return net.quantizer.nearest(z[0].T).numpy().astype(np.int64)  # z: (1, D, T) -> T codes

    def decode_margin(self, level: int) -> int:
        net: VQVAELevel = self.model.levels[level]  # type: ignore[assignment]
        return net.decoder.receptive_field_frames + 1

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, level: int) -> np.ndarray:
        arr = torch.from_numpy(self.check_codes(codes, level))
        net: VQVAELevel = self.model.levels[level]  # type: ignore[assignment]
        margin = self.decode_margin(level)

        def decode_window(codes: torch.Tensor) -> torch.Tensor:
            return net.decoder(net.quantizer.lookup(codes[None]))[0, 0]

        audio = run_in_chunks(decode_window, arr, arr.numel(), self._chunk_frames(level), margin, 1, net.hop)
        return audio.numpy().astype(np.float32)

"""Convolutional encoder and decoder of one VQ-VAE level (SEANet-style, no LSTM).

Each downsampling stage is two dilated residual units followed by a strided convolution
that multiplies the channels; the decoder mirrors it with transposed convolutions.
Padding is chosen so that ``T`` samples (a multiple of the hop) give exactly
``T / hop`` frames and back, which keeps the frame grid of every level aligned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

DILATIONS = (1, 3)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ELU(),
            nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation),
            nn.ELU(),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _stage_receptive_field(stride: int) -> int:
    """Input samples (at the stage's input rate) seen by one output of a downsampling stage."""
    return 1 + sum(2 * d for d in DILATIONS) + (2 * stride - 1)


class Encoder(nn.Module):
    """Audio (B, 1, T) -> latents (B, code_dim, T / hop)."""

    def __init__(self, strides: Sequence[int], channels: Sequence[int], code_dim: int):
        super().__init__()
        if len(channels) != len(strides) + 1:
            raise ValueError("channels needs one entry more than strides")
        layers: list[nn.Module] = [nn.Conv1d(1, channels[0], 7, padding=3)]
        for stride, c_in, c_out in zip(strides, channels[:-1], channels[1:], strict=True):
            layers += [ResidualUnit(c_in, d) for d in DILATIONS]
            layers += [nn.ELU(), nn.Conv1d(c_in, c_out, 2 * stride, stride=stride, padding=stride // 2)]
        layers += [nn.ELU(), nn.Conv1d(channels[-1], code_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)
        # Receptive field in samples, used to size the overlap of chunked encoding.
        rf, jump = 7, 1
        for stride in strides:
            rf += (_stage_receptive_field(stride) - 1) * jump
            jump *= stride
        self.receptive_field = rf + 2 * jump

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Latents (B, code_dim, F) -> audio (B, 1, F * hop)."""

    def __init__(self, strides: Sequence[int], channels: Sequence[int], code_dim: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(code_dim, channels[-1], 7, padding=3)]
        for stride, c_in, c_out in zip(
            reversed(strides), reversed(channels[1:]), reversed(channels[:-1]), strict=True
        ):
            layers += [
                nn.ELU(),
                nn.ConvTranspose1d(c_in, c_out, 2 * stride, stride=stride, padding=stride // 2),
            ]
            layers += [ResidualUnit(c_out, d) for d in DILATIONS]
        layers += [nn.ELU(), nn.Conv1d(channels[0], 1, 7, padding=3)]
        self.net = nn.Sequential(*layers)
        # Receptive field in input frames (each stage's convolutions shrink in frame units).
        rf, scale = 7.0, 1
        for stride in reversed(strides):
            scale *= stride
            rf += 2 + sum(2 * d for d in DILATIONS) / scale
        self.receptive_field_frames = math.ceil(rf + 6 / scale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

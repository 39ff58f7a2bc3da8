"""A multi-resolution STFT discriminator and its losses, for adversarial decoder training.

Mel and magnitude losses alone leave a decoder's output over-smooth: averaged noise
floors, blurred partials. A discriminator that looks at the complex spectrogram (real and
imaginary parts, so phase too) at a few window sizes is what SoundStream, EnCodec and
Vocos add for that. Here it is used to fine-tune the decoder on frozen codes, so the
codes, and every prior trained on them, stay valid.

Losses are the hinge form (EnCodec, SoundStream) and feature matching on the
discriminator's hidden layers, each layer's L1 divided by the mean magnitude of its real
features so that no layer dominates by scale.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

# Window sizes at 16 kHz: 16, 32 and 64 ms (short enough for attacks, long enough for
# partials); hops are a quarter window.
DEFAULT_FFT_SIZES = (256, 512, 1024)


class STFTDiscriminator(nn.Module):
    """One resolution: the complex STFT as two channels over (time, frequency), 2-D
    convolutions that halve the frequency axis and dilate along time, one logit map."""

    def __init__(self, n_fft: int, channels: int = 16):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.window: torch.Tensor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [nn.Conv2d(2, channels, (3, 9), padding=(1, 4))]
        for dilation in (1, 2, 4):
            conv = nn.Conv2d(channels, channels, (3, 9), (1, 2), (dilation, 4), dilation=(dilation, 1))
            convs.append(conv)
        convs.append(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``audio`` (B, T) -> (logits (B, 1, frames, bins'), hidden feature maps)."""
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, frames, bins)
        features = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), 0.2)
            features.append(x)
        return self.out(x), features


class MultiResolutionDiscriminator(nn.Module):
    def __init__(self, fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES, channels: int = 16):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in fft_sizes)

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """``audio`` (B, T) or (B, 1, T): one (logits, features) per resolution."""
        audio = audio.reshape(audio.shape[0], -1)
        return [d(audio) for d in self.discriminators]


Judged = list[tuple[torch.Tensor, list[torch.Tensor]]]


def discriminator_loss(real: Judged, fake: Judged) -> torch.Tensor:
    """Hinge loss, mean over resolutions: real logits pushed above 1, fake below -1."""
    terms = [
        torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).mean()


def generator_loss(fake: Judged) -> torch.Tensor:
    """Hinge loss for the generator, mean over resolutions."""
    return torch.stack([torch.relu(1 - f).mean() for f, _ in fake]).mean()


def feature_matching_loss(real: Judged, fake: Judged) -> torch.Tensor:
    """Mean over resolutions and layers of L1(real - fake) / mean |real| (real detached)."""
    terms = [
        (r.detach() - f).abs().mean() / (r.detach().abs().mean() + 1e-5)
        for (_, real_feats), (_, fake_feats) in zip(real, fake, strict=True)
        for r, f in zip(real_feats, fake_feats, strict=True)
    ]
    return torch.stack(terms).mean()

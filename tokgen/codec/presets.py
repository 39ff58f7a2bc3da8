"""Named VQ-VAE architectures.

``default`` is the shipped codec, sized for CPU training (16 kHz mono; hops 512/128/32,
i.e. 31.25/125/500 codes per second, 1024 codes per level). ``tiny`` exists for tests.
"""

from __future__ import annotations

from tokgen.codec.msvq import MSVQConfig
from tokgen.codec.vqvae import LevelConfig, VQVAEConfig

PRESETS: dict[str, VQVAEConfig] = {
    "default": VQVAEConfig(
        sample_rate=16000,
        levels=[
            LevelConfig(
                strides=[4, 4, 4, 8], channels=[16, 32, 64, 128, 256], codebook_size=1024, code_dim=64
            ),
            LevelConfig(strides=[4, 4, 8], channels=[16, 32, 64, 128], codebook_size=1024, code_dim=64),
            LevelConfig(strides=[2, 4, 4], channels=[16, 32, 64, 128], codebook_size=1024, code_dim=64),
        ],
    ),
    "tiny": VQVAEConfig(
        sample_rate=16000,
        levels=[
            LevelConfig(strides=[4, 4], channels=[4, 8, 16], codebook_size=32, code_dim=8),
            LevelConfig(strides=[2, 4], channels=[4, 8, 16], codebook_size=32, code_dim=8),
        ],
    ),
}

# Multi-scale residual VQ codecs (``msvq.py``): same hops and codebooks as ``default``, so
# the token layout of the priors is unchanged.
MSVQ_PRESETS: dict[str, MSVQConfig] = {
    "msvq": MSVQConfig(),
    "msvq-tiny": MSVQConfig(
        encoder_strides=[2, 4],
        encoder_channels=[4, 8, 16],
        latent_dim=16,
        level_strides=[4, 1],
        codebook_size=32,
        code_dim=8,
        decoder_hop=32,
        decoder_dim=16,
        decoder_intermediate=32,
        decoder_layers=2,
        timbre_dim=8,
    ),
}

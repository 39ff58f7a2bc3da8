"""Named VQ-VAE architectures.

``default`` is the shipped codec, sized for CPU training (16 kHz mono; hops 512/128/32,
i.e. 31.25/125/500 codes per second, 1024 codes per level). ``tiny`` exists for tests.
"""

from __future__ import annotations

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

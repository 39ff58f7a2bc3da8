"""Tokenizers: audio <-> discrete codes at several time resolutions.

``load_codec()`` returns the shipped default VQ-VAE; ``load_codec(path)`` loads a user's
model directory, a tokgen VQ-VAE (``config.json`` with ``"kind": "vqvae"``) or a Hugging
Face-format EnCodec checkpoint (``"model_type": "encodec"``).
"""

from __future__ import annotations

from pathlib import Path

from tokgen.assets import DEFAULT_CODEC_DIR
from tokgen.codec.base import Codec, LevelSpec
from tokgen.errors import CheckpointError

__all__ = ["DEFAULT_CODEC_DIR", "Codec", "LevelSpec", "load_codec"]


def load_codec(path: str | Path | None = None) -> Codec:
    from tokgen.codec.checkpoint import load_vqvae, read_config
    from tokgen.codec.encodec import load_encodec
    from tokgen.codec.vqvae import VQVAECodec

    model_dir = Path(path) if path is not None else DEFAULT_CODEC_DIR
    if path is None and not (model_dir / "config.json").is_file():
        raise CheckpointError(f"the shipped default codec is missing from the package ({model_dir})")
    if not model_dir.is_dir():
        raise CheckpointError(f"codec model directory not found: {model_dir}")
    config = read_config(model_dir)
    if config.get("model_type") == "encodec":
        return load_encodec(model_dir)
    if config.get("kind") == "msvq":
        from tokgen.codec.checkpoint import load_msvq, read_instruments, read_pitch_classes
        from tokgen.codec.msvq import MSVQCodec

        model = load_msvq(model_dir)
        levels, codebook_size = len(model.cfg.level_strides), model.cfg.codebook_size
        return MSVQCodec(
            model,
            name="tokgen-msvq-default" if path is None else f"msvq:{model_dir.name}",
            code_pitch=read_pitch_classes(model_dir, levels, codebook_size),
            code_instruments=read_instruments(model_dir, levels, codebook_size),
        )
    if config.get("kind") == "vqvae":
        name = "tokgen-vqvae-default" if path is None else f"vqvae:{model_dir.name}"
        return VQVAECodec(load_vqvae(model_dir), name=name)
    raise CheckpointError(
        f'{model_dir / "config.json"} describes neither a tokgen VQ-VAE ("kind": "vqvae") '
        'nor an EnCodec model ("model_type": "encodec")'
    )

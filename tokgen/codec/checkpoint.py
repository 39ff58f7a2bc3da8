"""Codec model directories: ``config.json`` + ``model.safetensors``.

Loading validates the config (pydantic) and the tensors against it, and turns every
mismatch into a ``CheckpointError`` that says which file and which tensor is wrong.
Nothing here touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokgen.codec.msvq import MSVQConfig, MultiScaleVQ
from tokgen.codec.vqvae import MultiLevelVQVAE, VQVAEConfig
from tokgen.errors import CheckpointError
from tokgen.training import load_state_checked

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def read_config(model_dir: Path) -> dict:
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{model_dir} is not a codec model directory: {CONFIG} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def parse_vqvae_config(raw: dict, source: Path) -> VQVAEConfig:
    try:
        return VQVAEConfig.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(f"invalid codec config {source}: {exc}") from exc


def save_vqvae(model: torch.nn.Module, model_dir: Path, extra: dict | None = None) -> None:
    """Any tokgen codec model with a pydantic ``cfg`` (VQ-VAE or multi-scale VQ)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    config = model.cfg.model_dump() | (extra or {})  # type: ignore[union-attr,operator]
    (model_dir / CONFIG).write_text(json.dumps(config, indent=2))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(model_dir / WEIGHTS))


def load_weights(model: torch.nn.Module, model_dir: Path) -> torch.nn.Module:
    """``model`` with the weights of ``model_dir`` (checked against it), in eval mode."""
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}") from exc
    load_state_checked(model, state, weights)
    return model.eval()


def load_vqvae(model_dir: Path) -> MultiLevelVQVAE:
    cfg = parse_vqvae_config(read_config(model_dir), Path(model_dir) / CONFIG)
    model = MultiLevelVQVAE(cfg)
    load_weights(model, model_dir)
    return model


def load_msvq(model_dir: Path) -> MultiScaleVQ:
    """A multi-scale residual VQ codec model directory (``"kind": "msvq"``)."""
    raw = read_config(model_dir)
    try:
        cfg = MSVQConfig.model_validate({k: v for k, v in raw.items() if k in MSVQConfig.model_fields})
    except ValidationError as exc:
        raise CheckpointError(f"invalid codec config {Path(model_dir) / CONFIG}: {exc}") from exc
    model = MultiScaleVQ(cfg)
    load_weights(model, model_dir)
    return model

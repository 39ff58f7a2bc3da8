"""Codec model directories: ``config.json`` + ``model.safetensors``.

Loading validates the config (pydantic) and the tensors against it, and turns every
mismatch into a ``CheckpointError`` that says which file and which tensor is wrong.
Nothing here touches the network.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokgen.codec.instruments import InstrumentTable
from tokgen.codec.msvq import MSVQConfig, MultiScaleVQ
from tokgen.codec.vqvae import MultiLevelVQVAE, VQVAEConfig
from tokgen.errors import CheckpointError
from tokgen.training import load_state_checked

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PITCH_CLASSES = "pitch_classes.npz"  # optional: measured pitch classes per code, "level<N>" arrays
INSTRUMENTS = "instruments.npz"  # optional: instrument-family counts per code (codec.instruments)


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


def copy_code_tables(src: Path, dst: Path) -> None:
    """Copy the per-code tables (pitch classes, instruments) of ``src`` into ``dst``.

    They describe codes, not decoder weights, so they stay true for a model whose codes a
    training run kept frozen: such a run carries them from the model it started from to
    every model it exports, and nobody has to copy them by hand."""
    for name in (PITCH_CLASSES, INSTRUMENTS):
        if (Path(src) / name).is_file():
            Path(dst).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(src) / name, Path(dst) / name)


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


def _read_tables(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` beside a codec's weights (no pickles), or a CheckpointError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _table_level(path: Path, key: str, levels: int, lowest: int) -> int:
    """The level a ``level<N>`` array is for, checked to be in ``lowest..levels - 1``."""
    level = int(key[5:]) if key.startswith("level") and key[5:].isdigit() else -1
    if not lowest <= level < levels:
        raise CheckpointError(f"{path}: {key!r} is not a level array (level{lowest}..level{levels - 1})")
    return level


def _checked_table(path: Path, key: str, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``raw`` as float64, checked to be numeric, of ``shape``, finite and non-negative."""
    table = raw.astype(np.float64) if raw.dtype.kind in "fiu" else np.full((0,), np.nan)
    if table.shape != shape or not np.isfinite(table).all() or (table < 0).any():
        raise CheckpointError(f"{path}: {key} must be {shape}, finite and >= 0")
    return table


def read_pitch_classes(model_dir: Path, levels: int, codebook_size: int) -> dict[int, np.ndarray]:
    """The measured pitch-class tables of a codec directory (``PITCH_CLASSES``), checked:
    per level below the top, (codebook size, 12), finite, non-negative, rows normalised."""
    path = Path(model_dir) / PITCH_CLASSES
    if not path.is_file():
        return {}
    tables: dict[int, np.ndarray] = {}
    for key, raw in _read_tables(path).items():
        level = _table_level(path, key, levels, lowest=1)
        table = _checked_table(path, key, raw, (codebook_size, 12))
        sums = table.sum(1, keepdims=True)
        if (sums <= 0).any():
            raise CheckpointError(f"{path}: {key} has a row without any pitch class")
        tables[level] = table / sums
    return tables


def read_instruments(model_dir: Path, levels: int, codebook_size: int) -> InstrumentTable | None:
    """The instrument-family counts of a codec directory (``INSTRUMENTS``: ``families``, the
    names, and ``level<N>`` arrays of (codebook size, families) counts), checked: finite,
    non-negative, at least one count per level, names unique."""
    path = Path(model_dir) / INSTRUMENTS
    if not path.is_file():
        return None
    arrays = _read_tables(path)
    names = arrays.pop("families", None)
    if names is None or names.dtype.kind != "U" or names.ndim != 1 or names.size < 2:
        raise CheckpointError(f"{path}: 'families' must name at least two families")
    families = tuple(str(n) for n in names)
    if len(set(families)) != len(families):
        raise CheckpointError(f"{path}: family names repeat: {families}")
    counts: dict[int, np.ndarray] = {}
    for key, raw in arrays.items():
        level = _table_level(path, key, levels, lowest=0)
        table = _checked_table(path, key, raw, (codebook_size, len(families)))
        if table.sum() <= 0:
            raise CheckpointError(f"{path}: {key} counts no code")
        counts[level] = table
    if not counts:
        raise CheckpointError(f"{path} has no level array")
    return InstrumentTable(families, counts)


def write_instruments(model_dir: Path, table: InstrumentTable) -> Path:
    path = Path(model_dir) / INSTRUMENTS
    arrays = {f"level{lv}": c.astype(np.float32) for lv, c in table.counts.items()}  # exact below 2**24
    np.savez_compressed(path, families=np.array(table.families), **arrays)  # type: ignore[arg-type]
    return path


def write_pitch_classes(model_dir: Path, tables: dict[int, np.ndarray]) -> Path:
    path = Path(model_dir) / PITCH_CLASSES
    np.savez(path, **{f"level{lv}": t.astype(np.float32) for lv, t in tables.items()})  # type: ignore[arg-type]
    return path

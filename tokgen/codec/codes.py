"""Codes files (``.npz``): the codes of every level plus what is needed to decode them.

Keys: ``codes_<level>`` (int arrays, level 0 = top), ``sample_rate``, ``hops``,
``num_samples`` (the original length, so a decode is trimmed back to it) and ``model``.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokgen.codec.base import Codec
from tokgen.errors import TokgenError


@dataclass
class CodesFile:
    codes: list[np.ndarray]
    sample_rate: int
    hops: list[int]
    num_samples: int
    model: str

    def check_matches(self, codec: Codec) -> None:
        """Codes only make sense to the codec that made them: fail clearly otherwise."""
        hops = [lv.hop for lv in codec.levels]
        if self.model != codec.name or self.sample_rate != codec.sample_rate or self.hops != hops:
            raise TokgenError(
                f"these codes were made by {self.model!r} ({self.sample_rate} Hz, hops {self.hops}), "
                f"which does not match codec {codec.name!r} ({codec.sample_rate} Hz, hops {hops}); "
                "pass --model (or --codec) pointing at the codec that encoded them"
            )
        for level, (c, spec) in enumerate(zip(self.codes, codec.levels, strict=False)):
            if c.size and (c.min() < 0 or c.max() >= spec.codebook_size):
                raise TokgenError(f"level {level} holds codes outside [0, {spec.codebook_size})")


def dump_codes(codes: list[np.ndarray], codec: Codec, num_samples: int) -> bytes:
    """A codes file's bytes (.npz): every level, the codec's name, rate and hops."""
    dtype = np.int16 if max(lv.codebook_size for lv in codec.levels) <= 32767 else np.int32
    arrays: dict[str, np.ndarray] = {f"codes_{i}": c.astype(dtype) for i, c in enumerate(codes)}
    arrays["sample_rate"] = np.asarray(codec.sample_rate, dtype=np.int64)
    arrays["hops"] = np.asarray([lv.hop for lv in codec.levels], dtype=np.int64)
    arrays["num_samples"] = np.asarray(num_samples, dtype=np.int64)
    arrays["model"] = np.asarray(codec.name)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def save_codes(path: str | Path, codes: list[np.ndarray], codec: Codec, num_samples: int) -> None:
    path = Path(path)
    if path.suffix != ".npz":
        raise TokgenError(f"codes are saved as .npz; got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    tmp.write_bytes(dump_codes(codes, codec, num_samples))
    tmp.replace(path)  # a reader never sees half a file, even if we are killed while writing


def _shape(archive: np.lib.npyio.NpzFile, key: str) -> tuple[int, ...]:
    """An array's shape from its header, without decompressing it (a few KB of zeros
    can claim gigabytes)."""
    with archive.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = read(f)
    return tuple(shape)


def load_codes(source: str | Path | bytes, max_frames: int | None = None) -> CodesFile:
    """Read a codes file from a path or from its bytes (e.g. sent over the network). Every
    array's shape is checked before it is read: one 1-D integer array per level of at
    most ``max_frames`` codes, scalars where scalars belong."""
    if isinstance(source, bytes):
        path: Path | str = "the codes"
        file: Path | io.BytesIO = io.BytesIO(source)
    else:
        path = file = Path(source)
        if not path.is_file():
            raise TokgenError(f"codes file not found: {path}")
    try:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise TokgenError(f"{path} is a single array, not a codes file (.npz)")
        with archive as data:
            n = len([k for k in data.files if k.startswith("codes_")])
            if n == 0:
                raise TokgenError(f"{path} holds no codes_<level> arrays; was it written by `tokgen encode`?")
            for i in range(n):
                shape = _shape(data, f"codes_{i}")
                if len(shape) != 1:
                    raise TokgenError(f"{path}: codes_{i} must be 1-D, not of shape {shape}")
                if max_frames is not None and shape[0] > max_frames:
                    raise TokgenError(f"{path}: codes_{i} holds {shape[0]} codes, more than {max_frames}")
            expected = {"sample_rate": (), "num_samples": (), "model": (), "hops": (n,)}
            for key, want in expected.items():
                if _shape(data, key) != want:
                    raise TokgenError(f"{path}: {key} must have shape {want}, not {_shape(data, key)}")
            codes = [data[f"codes_{i}"] for i in range(n)]
            if not all(np.issubdtype(c.dtype, np.integer) for c in codes):
                raise TokgenError(f"{path}: codes must be integers")
            return CodesFile(
                codes=[c.astype(np.int64) for c in codes],
                sample_rate=int(data["sample_rate"]),
                hops=[int(h) for h in data["hops"]],
                num_samples=int(data["num_samples"]),
                model=str(data["model"]),
            )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise TokgenError(f"{path} is not a valid tokgen codes file: {exc}") from exc

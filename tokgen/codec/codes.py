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


def load_codes(source: str | Path | bytes) -> CodesFile:
    """Read a codes file from a path or from its bytes (e.g. sent over the network)."""
    if isinstance(source, bytes):
        path: Path | str = "the codes"
        file: Path | io.BytesIO = io.BytesIO(source)
    else:
        path = file = Path(source)
        if not path.is_file():
            raise TokgenError(f"codes file not found: {path}")
    try:
        with np.load(file, allow_pickle=False) as data:
            n = len([k for k in data.files if k.startswith("codes_")])
            if n == 0:
                raise TokgenError(f"{path} holds no codes_<level> arrays; was it written by `tokgen encode`?")
            return CodesFile(
                codes=[data[f"codes_{i}"].astype(np.int64) for i in range(n)],
                sample_rate=int(data["sample_rate"]),
                hops=[int(h) for h in data["hops"]],
                num_samples=int(data["num_samples"]),
                model=str(data["model"]),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise TokgenError(f"{path} is not a valid tokgen codes file: {exc}") from exc

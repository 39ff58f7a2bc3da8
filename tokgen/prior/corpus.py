"""The corpus as codes: every rendered file encoded once per level and cached.

Each file is trimmed to a whole number of top-level frames before encoding, so level l has
exactly ``ratio`` times as many frames as level l-1 (ratio = hop_{l-1} / hop_l) and an
upsampler's conditioning lines up with its own codes frame for frame.
A split is stored as one ``.npz``: ``L<level>`` holds the concatenated codes of all files
and ``L<level>_offsets`` where each file starts (one more entry than files).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokgen.audio import load_audio
from tokgen.codec.base import Codec
from tokgen.data.render import split_files
from tokgen.errors import TokgenError


@dataclass
class CodeCorpus:
    """Codes of one split: ``files[i][level]`` is file i's codes at that level."""

    files: list[list[np.ndarray]]

    def save(self, path: Path) -> None:
        n_levels = len(self.files[0])
        arrays: dict[str, np.ndarray] = {}
        for lv in range(n_levels):
            parts = [f[lv] for f in self.files]
            arrays[f"L{lv}"] = np.concatenate(parts).astype(np.int16)
            arrays[f"L{lv}_offsets"] = np.cumsum([0] + [p.size for p in parts]).astype(np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> CodeCorpus:
        if not path.is_file():
            raise TokgenError(f"no cached codes at {path}")
        with np.load(path) as data:
            n_levels = len([k for k in data.files if not k.endswith("_offsets")])
            levels = [(data[f"L{lv}"].astype(np.int64), data[f"L{lv}_offsets"]) for lv in range(n_levels)]
        n_files = len(levels[0][1]) - 1
        return cls([[codes[off[i] : off[i + 1]] for codes, off in levels] for i in range(n_files)])


def encode_file(codec: Codec, audio: np.ndarray) -> list[np.ndarray] | None:
    """Codes of ``audio`` trimmed to whole top-level frames; None if shorter than one."""
    top_hop = codec.levels[0].hop
    usable = audio.size - audio.size % top_hop
    if usable == 0:
        return None
    return codec.encode(audio[:usable])


def encode_split(codec: Codec, data_dir: Path, split: str) -> CodeCorpus:
    files = []
    for path in tqdm(split_files(data_dir, split), desc=f"encode {split}", unit="file", file=sys.stderr):
        codes = encode_file(codec, load_audio(path, codec.sample_rate, allow_silent=True))
        if codes is not None:
            files.append(codes)
    if not files:
        raise TokgenError(f"split {split!r} of {data_dir} has no file longer than one top-level frame")
    return CodeCorpus(files)


def codes_cache_dir(codec: Codec, data_dir: Path) -> Path:
    """Where a corpus's codes under ``codec`` are cached: ``DATA_DIR/codes/<codec name>/``."""
    return Path(data_dir) / "codes" / codec.name.replace(":", "_")


def cached_splits(codec: Codec, data_dirs: Sequence[Path], split: str) -> CodeCorpus:
    """One split of several corpora as one: their files one after the other. Each corpus's
    pieces are split by the hash of their ids, so a held-out piece stays held out in the union
    (corpora rendered from one MIDI collection share pieces, and their splits agree)."""
    return CodeCorpus([f for d in data_dirs for f in cached_split(codec, d, split).files])


def cached_split(codec: Codec, data_dir: Path, split: str) -> CodeCorpus:
    """The split's codes, encoded on first use and cached under ``codes_cache_dir``."""
    path = codes_cache_dir(codec, data_dir) / f"codes-{split}.npz"
    if path.is_file():
        return CodeCorpus.load(path)
    corpus = encode_split(codec, data_dir, split)
    corpus.save(path)
    return corpus

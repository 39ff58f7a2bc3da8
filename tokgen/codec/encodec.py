"""EnCodec behind the ``Codec`` interface, for users with a pretrained EnCodec checkpoint.

Route: transformers' ``EncodecModel`` loading a Hugging Face-format checkpoint directory
(``config.json`` + weights), with ``local_files_only`` so it never touches the network.
The ``encodec`` package is not used: it imports torchaudio, whose only build installable
on our CPU machines is CUDA-linked and fails to import, and its loader accepts only the
official file names with matching checksums. An original ``encodec_24khz-*.th`` file can
be converted once with transformers' ``convert_encodec_checkpoint_to_pytorch`` script.

Levels are cumulative prefixes of the residual codebooks, one level per target bandwidth
of the checkpoint (e.g. 1.5/3/6/12/24 kbps -> 2/4/8/16/32 codebooks at 75 Hz for the
24 kHz model): level ``l`` holds codebooks ``[0, n_l)``, so each level decodes on its own
and finer levels add detail, like the VQ-VAE's levels. All levels share one hop.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokgen.audio import check_mono
from tokgen.codec.base import Codec, LevelSpec
from tokgen.codec.chunking import run_in_chunks
from tokgen.errors import CheckpointError

# Context on each side of a chunk, in frames: covers the convolutions and most of what
# the LSTM remembers, so chunked encoding matches whole-file encoding closely.
_MARGIN_SECONDS = 1.0


@dataclass
class EncodecCodec(Codec):
    model: Any  # transformers.EncodecModel (imported lazily: transformers is slow to import)
    name: str = "encodec"
    chunk_seconds: float = 20.0
    levels: tuple[LevelSpec, ...] = field(init=False)
    sample_rate: int = field(init=False)
    _n_codebooks: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.model.config
        if cfg.audio_channels != 1:
            raise CheckpointError("only mono EnCodec checkpoints are supported (audio_channels=1)")
        if cfg.normalize:
            raise CheckpointError(
                "EnCodec checkpoints with normalize=True (the 48 kHz model) need per-chunk scales "
                "that discrete codes alone cannot carry; use a normalize=False model (24 kHz)"
            )
        self.model.eval()
        self.sample_rate = int(cfg.sampling_rate)
        self._hop = int(math.prod(cfg.upsampling_ratios))
        counts = sorted(
            {int(self.model.quantizer.get_num_quantizers_for_bandwidth(bw)) for bw in cfg.target_bandwidths}
        )
        self._n_codebooks = tuple(counts)
        self._bandwidth = max(cfg.target_bandwidths)
        self.levels = tuple(LevelSpec(self._hop, int(cfg.codebook_size), n) for n in counts)

    @torch.inference_mode()
    def encode(self, audio: np.ndarray) -> list[np.ndarray]:
        x = check_mono(audio)
        frames = self.levels[0].frames(x.size)
        padded = torch.zeros(1, 1, frames * self._hop)
        padded[0, 0, : x.size] = torch.from_numpy(x)

        def encode_window(seg: torch.Tensor) -> torch.Tensor:
            return self.model.encode(seg, bandwidth=self._bandwidth).audio_codes[0, 0]  # (n_q, F)

        codes = run_in_chunks(encode_window, padded, frames, *self._chunking(), self._hop, 1)
        full = codes.numpy().astype(np.int64)
        # Interface rule: a level with a single codebook has 1-D codes.
        return [full[:n] if n > 1 else full[0] for n in self._n_codebooks]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, level: int) -> np.ndarray:
        arr = torch.from_numpy(self.check_codes(codes, level)).reshape(self.levels[level].n_codebooks, -1)

        def decode_window(window: torch.Tensor) -> torch.Tensor:
            return self.model.decode(window[None, None], [None]).audio_values[0, 0]

        audio = run_in_chunks(decode_window, arr, arr.shape[1], *self._chunking(), 1, self._hop)
        return audio.numpy().astype(np.float32)

    def decode_margin(self, level: int) -> int:
        """EnCodec's LSTM sees the whole signal, so a margin only makes crops agree with a
        whole decode approximately (closely enough that chunk joins are inaudible)."""
        return math.ceil(_MARGIN_SECONDS * self.sample_rate / self._hop)

    def _chunking(self) -> tuple[int, int]:
        """(chunk, margin) in frames."""
        return max(1, int(self.chunk_seconds * self.sample_rate) // self._hop), self.decode_margin(0)


def load_encodec(model_dir: Path) -> EncodecCodec:
    """Load an HF-format EnCodec directory; offline only, with errors that name the problem."""
    from transformers import EncodecModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(
            f"EnCodec checkpoint directory not found: {model_dir} (tokgen never downloads weights; "
            "pass the path of a local Hugging Face-format EnCodec checkpoint)"
        )
    try:
        model = EncodecModel.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load EnCodec checkpoint {model_dir}: {exc}") from exc
    return EncodecCodec(model, name=f"encodec:{model_dir.name}")

"""Chunked inference with overlap: bounded memory on long audio, same result as one pass.

A signal of ``total_frames`` code frames is cut into chunks of ``chunk_frames``; each chunk
is computed from a window that adds ``margin_frames`` of context on both sides and then
cropped back to the chunk. When the margin covers the network's receptive field, the
crops join into exactly what a whole-signal pass gives (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ChunkPlan:
    """Frames [start, stop) of one chunk, computed from frames [ctx_start, ctx_stop)."""

    start: int
    stop: int
    ctx_start: int
    ctx_stop: int


def chunk_plan(total_frames: int, chunk_frames: int, margin_frames: int) -> list[ChunkPlan]:
    plans = []
    for start in range(0, total_frames, chunk_frames):
        stop = min(start + chunk_frames, total_frames)
        ctx = (max(0, start - margin_frames), min(total_frames, stop + margin_frames))
        plans.append(ChunkPlan(start, stop, *ctx))
    return plans


def run_in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    total_frames: int,
    chunk_frames: int,
    margin_frames: int,
    in_per_frame: int,
    out_per_frame: int,
) -> torch.Tensor:
    """Apply ``fn`` along the last axis of ``x`` chunk by chunk. ``x`` has ``in_per_frame``
    items per frame (the hop for audio, 1 for codes) and ``fn``'s output ``out_per_frame``."""
    parts = []
    for c in chunk_plan(total_frames, chunk_frames, margin_frames):
        y = fn(x[..., c.ctx_start * in_per_frame : c.ctx_stop * in_per_frame])
        offset = c.start - c.ctx_start
        parts.append(y[..., offset * out_per_frame : (offset + c.stop - c.start) * out_per_frame])
    return torch.cat(parts, dim=-1)

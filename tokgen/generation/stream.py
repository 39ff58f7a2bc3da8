"""Stream a continuation as audio while it is generated.

The sampler runs levels as a pipeline (``sampler``); this watches the bottom level's codes
and decodes every newly final stretch of them (``codec.streaming.StreamDecoder``), so the
first audio is out after one window per level and the pieces join into exactly what one
decode of the finished codes gives: no clicks at piece boundaries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from tokgen.codec.base import Codec
from tokgen.codec.streaming import StreamDecoder
from tokgen.generation.generate import Job, sample_job
from tokgen.generation.sampler import CodeBoard, LevelPrior, OnChange, SamplingSettings


async def stream_continuation(
    codec: Codec,
    priors: list[LevelPrior],
    job: Job,
    settings: SamplingSettings,
    request_id: str | None = None,
    min_seconds: float = 0.25,
    first_seconds: float | None = None,
    on_change: OnChange | None = None,
) -> AsyncIterator[np.ndarray]:
    """Yield the new audio of ``job`` (after the prime) in pieces of at least
    ``min_seconds`` (but the last, and the first: by default as much as the bottom level's
    lead window makes final, so the first audio needs nothing beyond the levels' lead
    windows; one frame more would wait for a full window of every level). Closing the
    iterator early aborts the generation.
    ``on_change`` also watches the codes (see ``CodeBoard``)."""
    bottom = len(codec.levels) - 1
    hops = [lv.hop for lv in codec.levels]

    def frames(seconds: float) -> int:
        return max(1, round(seconds * codec.sample_rate / hops[-1]))

    decoder = StreamDecoder(codec, bottom, reference=job.reference)
    lead = priors[bottom].lead_frames
    if first_seconds is not None:
        decoder.min_frames = frames(first_seconds)
    elif lead is not None:
        decoder.min_frames = max(1, lead - decoder.margin)
    else:
        decoder.min_frames = frames(min_seconds)
    decoder.emitted = job.start_top * hops[0] // hops[-1]  # the prime is not streamed
    boards: list[CodeBoard] = []
    changed = asyncio.Event()

    def watch(board: CodeBoard, level: int) -> None:
        if not boards:
            boards.append(board)
        if level == bottom:
            changed.set()
        if on_change is not None:
            on_change(board, level)

    sampling = asyncio.create_task(sample_job(codec, priors, job, settings, request_id, watch))
    try:
        while True:
            finished = sampling.done()
            levels: list[np.ndarray] | None = None
            if finished:
                levels = sampling.result()  # raises the sampler's error, if any
            elif boards:
                board = boards[0]
                levels = [board.codes[lv][: board.prefix_frames(lv)].copy() for lv in range(bottom + 1)]
            if levels is not None and levels[bottom].size:
                upper = levels[:bottom] if codec.uses_all_levels else None
                piece = await asyncio.to_thread(decoder.push, levels[bottom], finished, upper)
                if piece.size:
                    decoder.min_frames = frames(min_seconds)
                    yield piece
            if finished:
                return
            changed.clear()
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({sampling, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
    finally:
        if not sampling.done():
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling

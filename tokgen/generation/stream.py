"""Stream a continuation as audio while it is generated.

The sampler runs levels as a pipeline (``sampler``); this watches the bottom level's codes
and decodes every newly final stretch of them (``codec.streaming.StreamDecoder``), so the
first audio is out after one window per level and the pieces join into exactly what one
decode of the finished codes gives: no clicks at piece boundaries (but for the first
piece, which the lead windows' codes alone make and which fades into the exact audio:
``StreamDecoder.first_lookahead``, the bottom prior's ``lead_lookahead``). ``stream_samples`` runs
several such streams of one job side by side (each sample its own sequences in the
engines, which batch them) and relays their pieces as the caller's output.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import numpy as np

from tokgen.codec.base import Codec
from tokgen.codec.streaming import StreamDecoder
from tokgen.generation.generate import Job, sample_job
from tokgen.generation.output import Output, OutputStream
from tokgen.generation.sampler import CodeBoard, LevelPrior, OnChange, SamplingSettings

MAX_PIECE_SECONDS = 1.0  # a sample held back for its loudness goes out in pieces of this


def next_piece_frames(last: int, ahead: int, smallest: int, largest: int) -> int:
    """Frames the next piece waits for after a piece of ``last`` frames, when the audio
    sent so far is ``ahead`` frames ahead of a listener who started playing at the first
    piece: twice ``last``, but at most half of ``ahead`` (the piece is then out before
    that listener runs dry, at any speed of at least real time), within [``smallest``,
    ``largest``]. ``ahead`` counts audio as it is made; a client that reads slower is
    further behind than that, and ``largest`` bounds what it costs such a client.

    Why grow at all: every piece is decoded with the decoder's margin and lookahead around
    it (63 middle frames, 0.5 s, with the shipped codec), so a stream cut in 0.25 s pieces
    spends about 6.5x the decoder time of one whole decode, and pieces that double up to
    1 s about 2x (docs/PERFORMANCE.md, "Streaming decode"): CPU the engines need."""
    return max(smallest, min(largest, 2 * last, ahead // 2))


async def stream_continuation(
    codec: Codec,
    priors: list[LevelPrior],
    job: Job,
    settings: SamplingSettings,
    request_id: str | None = None,
    min_seconds: float = 0.25,
    first_seconds: float | None = None,
    on_change: OnChange | None = None,
    max_seconds: float = MAX_PIECE_SECONDS,
) -> AsyncGenerator[np.ndarray, None]:
    """Yield the new audio of ``job`` (after the prime) in pieces: the first as much as the
    bottom level's lead window makes final (``first_seconds``, if given), so the first
    audio needs nothing beyond the levels' lead windows (one frame more would wait for a
    full window of every level); then pieces of ``min_seconds`` that grow towards
    ``max_seconds`` while the stream runs ahead of real time (``next_piece_frames``), and
    the rest at the end. Closing the iterator early aborts the generation.
    ``on_change`` also watches the codes (see ``CodeBoard``)."""
    bottom = len(codec.levels) - 1
    hops = [lv.hop for lv in codec.levels]

    def frames(seconds: float) -> int:
        return max(1, round(seconds * codec.sample_rate / hops[-1]))

    decoder = StreamDecoder(codec, bottom, reference=job.reference)
    lead, lead_lookahead = priors[bottom].lead_frames, priors[bottom].lead_lookahead
    if lead_lookahead is not None:  # at most the decoder's lookahead (first_lookahead_frames)
        decoder.first_lookahead = lead_lookahead
    if first_seconds is not None:
        decoder.min_frames = frames(first_seconds)
    elif lead is not None:
        decoder.min_frames = max(1, lead - decoder.first_lookahead)
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
    loop = asyncio.get_running_loop()
    smallest, largest = frames(min_seconds), frames(max_seconds)
    started: float | None = None  # when the first piece went out
    sent = 0  # samples of audio out so far
    try:
        while True:
            finished = sampling.done()
            levels: list[np.ndarray] | None = None
            if finished:
                levels = sampling.result()  # raises the sampler's error, if any
            elif boards and decoder.ready(boards[0].prefix_frames(bottom)):
                board = boards[0]
                levels = [board.codes[lv][: board.prefix_frames(lv)].copy() for lv in range(bottom + 1)]
            if levels is not None and levels[bottom].size:
                upper = levels[:bottom] if codec.uses_all_levels else None
                piece = await asyncio.to_thread(decoder.push, levels[bottom], finished, upper)
                if piece.size:
                    now = loop.time()
                    started = now if started is None else started
                    sent += piece.size
                    ahead = frames(sent / codec.sample_rate - (now - started))
                    last = piece.size // hops[-1]
                    decoder.min_frames = next_piece_frames(last, ahead, smallest, largest)
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


async def stream_samples(
    codec: Codec,
    priors: list[LevelPrior],
    job: Job,
    settings: list[SamplingSettings],
    output: Output,
    samples: int | None,
    on_change: OnChange | None = None,
) -> AsyncGenerator[tuple[int, np.ndarray], None]:
    """One sample of ``job`` per settings, all at once, as (sample index, piece): each
    sample's pieces in order, the samples' interleaved as they are made. Each sample is cut
    to ``samples`` (at the codec's rate; None: all of it) and made the ``output`` (rate,
    loudness: ``OutputStream``). Closing this closes every sample's stream, which aborts
    its engine requests; the first failure of one ends them all."""
    queue: asyncio.Queue[tuple[int, np.ndarray | None] | Exception] = asyncio.Queue(2 * len(settings))

    async def one(index: int, sample_settings: SamplingSettings) -> None:
        out = OutputStream(output, codec.sample_rate, samples)
        taken = 0
        stream = stream_continuation(codec, priors, job, sample_settings, on_change=on_change)
        try:
            async for whole in stream:
                piece = whole if samples is None else whole[: samples - taken]
                taken += piece.size
                await queue.put((index, out.push(piece)))
                if samples is not None and taken >= samples:
                    break
            await queue.put((index, out.finish()))
        except Exception as exc:
            await queue.put(exc)
            return
        finally:
            await stream.aclose()
        await queue.put((index, None))

    tasks = [asyncio.create_task(one(i, s)) for i, s in enumerate(settings)]
    step = max(1, round(MAX_PIECE_SECONDS * output.rate(codec.sample_rate)))
    try:
        finished = 0
        while finished < len(tasks):
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            index, piece = item
            if piece is None:
                finished += 1
                continue
            for start in range(0, piece.size, step):
                yield index, piece[start : start + step]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

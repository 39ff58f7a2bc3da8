"""Hierarchical, windowed sampling through the engines (Jukebox's sampling, pipelined).

Every mode is "extend the known codes of each level to a target length": *primed* knows
the prime's codes at every level, *ancestral* knows nothing, *continue* knows the codes of
a saved ``.npz``, *upsample* knows the whole top level.

Jukebox samples the whole top level, then each upsampler in turn. Here every window of
every level is a task that starts as soon as what it reads is known: its own level's
context (the previous window of its segment) and, for an upsampler, the codes of the level
above under its time span. So the levels run as a pipeline (the first bottom window starts
after one top and one middle window), and the segments of a level (``plan_segments``) run
side by side. All those windows are in flight in the engines at once, which is what lets
the engines batch them. The codes do not depend on the order windows finish in: every
window reads only frames that are final and has its own seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tokgen.engine.base import Engine, SamplingParams
from tokgen.errors import TokgenError
from tokgen.generation.instrument import DEFAULT_INSTRUMENT_GUIDANCE, check_instrument_guidance
from tokgen.generation.key import DEFAULT_KEY_GUIDANCE, check_key_guidance
from tokgen.generation.windows import WindowPlan, plan_segments, upper_span
from tokgen.prior.layout import TokenLayout


@dataclass(frozen=True)
class LevelPrior:
    """One level's prior as served by an engine, and how it is windowed."""

    engine: Engine
    n_ctx: int  # own-level tokens per window
    hop_fraction: float = 0.5  # share of a window that is new tokens (the rest is context)
    segment_frames: int | None = None  # new frames per parallel segment (None: one segment)
    lead_frames: int | None = None  # new frames of the very first window (None: a full one)
    reference_tokens: int = 0  # own-level prime codes in front of every upsampler window
    overlap_frames: int = 0  # warm-up frames a later segment samples before its start
    # Frames after the first audio piece that the lead window covers, when this level is
    # the one decoded: the first piece is decoded from them alone (None: the decoder's whole
    # lookahead; ``codec.streaming.StreamDecoder.first_lookahead``).
    lead_lookahead: int | None = None


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    key_guidance: float = DEFAULT_KEY_GUIDANCE  # see generation.key; 0: off
    instrument_guidance: float = DEFAULT_INSTRUMENT_GUIDANCE  # see generation.instrument; 0: off

    def check(self, vocab_size: int) -> None:
        """Validate before any work starts (the engine checks every window again). Unlike
        the engine, music sampling takes no greedy decoding: it loops on one code."""
        if not self.temperature > 0:
            raise TokgenError(f"temperature must be > 0, got {self.temperature}")
        SamplingParams(1, self.temperature, self.top_k, self.top_p, self.seed).check(vocab_size)
        check_key_guidance(self.key_guidance)
        check_instrument_guidance(self.instrument_guidance)


def window_seed(seed: int, level: int, segment: int, window: int) -> int:
    """A distinct, reproducible seed per (request seed, level, segment, window)."""
    digest = hashlib.sha256(f"{seed}/{level}/{segment}/{window}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def level_frames(top_frames: int, hops: list[int]) -> list[int]:
    """Frames of every level for ``top_frames`` top frames (hops divide each other)."""
    return [top_frames * hops[0] // h for h in hops]


OnChange = Callable[["CodeBoard", int], None]


def completion_times(levels: int, started: float) -> tuple[list[float], OnChange]:
    """A watcher for ``CodeBoard`` and what it fills in: for each level, seconds from
    ``started`` (``time.perf_counter``) until all its codes were known (0: from the start)."""
    done_at = [0.0] * levels

    def watch(board: CodeBoard, level: int) -> None:
        if board.known_frames[level] == board.codes[level].size:
            done_at[level] = time.perf_counter() - started

    return done_at, watch


class CodeBoard:
    """The codes of every level as they become known (-1: not yet). Windows wait here for
    the frames they read; ``on_change(board, level)`` runs after every write (progress
    bars, streaming)."""

    def __init__(self, known: list[np.ndarray], totals: list[int], on_change: OnChange | None = None):
        self.codes = [np.full(t, -1, dtype=np.int64) for t in totals]
        for level, k in enumerate(known):
            self.codes[level][: k.size] = k
        self.known_frames = [k.size for k in known]  # frames known per level
        self.initial_frames = list(self.known_frames)  # the prime's (what the request brought)
        # Per level, the waits for frames of it: (start, stop, future). A write resolves
        # only the waits it completes: a long request has hundreds of segment tasks, and
        # waking all of them on every code (one shared condition) cost ~5 ms per write.
        self._waits: list[list[tuple[int, int, asyncio.Future[None]]]] = [[] for _ in totals]
        self._on_change = on_change

    def prefix_frames(self, level: int) -> int:
        """Frames known without a gap from the start (what can be decoded and streamed)."""
        missing = np.flatnonzero(self.codes[level] < 0)
        return int(missing[0]) if missing.size else self.codes[level].size

    def _known(self, level: int, start: int, stop: int) -> bool:
        return bool((self.codes[level][start:stop] >= 0).all())

    async def wait_known(self, level: int, start: int, stop: int) -> None:
        if self._known(level, start, stop):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waits[level].append((start, stop, future))
        await future

    async def write(self, level: int, start: int, codes: np.ndarray) -> None:
        self.codes[level][start : start + codes.size] = codes
        self.known_frames[level] += codes.size  # windows never rewrite known frames
        if self._on_change is not None:
            self._on_change(self, level)
        stop, pending = start + codes.size, []
        for wait in self._waits[level]:
            lo, hi, future = wait
            if future.done():  # its window was cancelled
                continue
            if lo < stop and hi > start and self._known(level, lo, hi):
                future.set_result(None)
            else:
                pending.append(wait)
        self._waits[level] = pending


@dataclass(frozen=True)
class Clock:
    """Engine priorities: earliest deadline first over all requests. A window's deadline
    is when a listener who started at the request's start needs its first new frame; the
    first window of a request (short, see ``lead_frames``) leads to its first audio and
    goes before everything else."""

    started: float  # the request's start, monotonic seconds
    start_sample: int  # where the continuation starts
    sample_rate: int

    def priority(self, frame: int, hop: int, lead: bool) -> int:
        due = self.started + (frame * hop - self.start_sample) / self.sample_rate
        return int((due - (LEAD_ADVANCE_S if lead else 0.0)) * 1000)  # ms; lower runs first


LEAD_ADVANCE_S = 3600.0


async def sample_segment(
    prior: LevelPrior,
    layout: TokenLayout,
    level: int,
    segment: int,
    plan: WindowPlan,
    board: CodeBoard,
    hops: list[int],
    settings: SamplingSettings,
    request_id: str,
    clock: Clock,
    bias: tuple[float, ...] | None = None,
) -> None:
    """Sample one segment of ``level`` window by window, writing codes to ``board``.
    When the engine is full, its windows start in the order ``clock`` gives them.
    ``bias``: added to the level's code logits (``SamplingParams.bias``)."""
    ratio = hops[level - 1] // hops[level] if level else 1
    reference = None
    if level and prior.reference_tokens:  # the prime's codes of this level, the same in every window
        reference = board.codes[level][: board.initial_frames[level]][-prior.reference_tokens :]
    # The segment's own codes (its warm-up included, which the board never sees), from
    # the known frames it starts after; windows read their context here.
    own = np.full(plan.total_frames - plan.start, -1, dtype=np.int64)
    own[: plan.prime_frames - plan.start] = board.codes[level][plan.start : plan.prime_frames]
    for i, w in enumerate(plan.windows):
        context = own[w.start - plan.start : w.start - plan.start + w.context]
        if level == 0:
            prompt = layout.top_prompt(context)
        else:
            lo, hi = upper_span(w, ratio, board.codes[level - 1].size)
            await board.wait_known(level - 1, lo, hi)
            prompt = layout.upsampler_prompt(level, board.codes[level - 1][lo:hi], context, reference)
        pos = w.start + w.context
        lead = (segment, i) == (0, 0)
        params = SamplingParams(
            max_tokens=w.new,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            seed=window_seed(settings.seed, level, segment, i),
            allowed=layout.level_range(level),
            priority=clock.priority(pos, hops[level], lead),
            bias=bias,
        )
        rid = f"{request_id}/L{level}/s{segment}/w{i}"
        async for chunk in prior.engine.generate(rid, prompt, params):
            codes = layout.to_codes(chunk, level)
            own[pos - plan.start : pos - plan.start + codes.size] = codes
            skip = min(max(plan.keep_from - pos, 0), codes.size)  # warm-up frames stay private
            if skip < codes.size:
                await board.write(level, pos + skip, codes[skip:])
            pos += codes.size


async def sample_hierarchy(
    priors: list[LevelPrior],
    layout: TokenLayout,
    hops: list[int],
    known: list[np.ndarray],
    top_frames: int,
    settings: SamplingSettings,
    request_id: str,
    sample_rate: int,
    on_change: OnChange | None = None,
    biases: list[np.ndarray | None] | None = None,
) -> list[np.ndarray]:
    """Codes of every level, ``top_frames`` top frames long, extending ``known``;
    ``on_change`` watches them while they are sampled (see ``CodeBoard``). ``sample_rate``
    (of the codec) only orders windows across requests (see ``sample_segment``).
    ``biases``: per level, a logit bias over its codes, or None."""
    totals = level_frames(top_frames, hops)
    if len(priors) != len(hops) or len(known) != len(hops):
        raise TokgenError(f"need one prior and one known-codes array per level ({len(hops)})")
    for level, (k, t) in enumerate(zip(known, totals, strict=True)):
        if k.size > t:
            raise TokgenError(f"level {level} already has {k.size} frames, more than the {t} asked for")
    level_bias = [
        tuple(float(b) for b in bias) if bias is not None else None for bias in (biases or [None] * len(hops))
    ]
    board = CodeBoard(known, totals, on_change)
    clock = Clock(time.monotonic(), known[0].size * hops[0], sample_rate)
    try:
        async with asyncio.TaskGroup() as tasks:  # one failure cancels (and aborts) the rest
            for level, prior in enumerate(priors):
                plans = plan_segments(
                    known[level].size,
                    totals[level],
                    prior.n_ctx,
                    prior.hop_fraction,
                    prior.segment_frames,
                    prior.lead_frames,
                    prior.overlap_frames if prior.segment_frames else 0,
                )
                for s, plan in enumerate(plans):
                    tasks.create_task(
                        sample_segment(
                            prior,
                            layout,
                            level,
                            s,
                            plan,
                            board,
                            hops,
                            settings,
                            request_id,
                            clock,
                            level_bias[level],
                        )
                    )
    except ExceptionGroup as group:
        raise first_error(group) from None
    return board.codes


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The failure that made a task group cancel its other tasks."""
    first = group.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first

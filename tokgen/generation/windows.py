"""Window plans for windowed sampling (Jukebox's ``hop_fraction``), as pure functions.

A prior sees at most ``n_ctx`` tokens of its own level. To produce a longer sequence, it is
sampled window by window: each window's first ``context`` frames are already known (the
prime's codes, or what earlier windows generated) and the rest are generated. After the
first window, every window keeps the last ``n_ctx - hop`` known frames as context and
generates ``hop = hop_fraction * n_ctx`` new ones.

What of the prime is kept: the first window keeps as much of the prime as fits while still
generating at least ``hop`` frames, i.e. the prime's last ``min(prime, n_ctx - hop)``
frames. A longer prime's beginning is out of context; ``WindowPlan.prime_frames_dropped``
says how much, so callers can report it instead of dropping it silently.

Segments (``plan_segments``): the frames to generate may be split into segments that are
sampled at the same time. The first segment continues the prime as above; a later one
cannot see what its predecessor generates (that is what lets them run side by side), so
it starts without context of its own level (an upsampler still sees the level above,
which is what keeps it in time and in tune) and is windowed the same way inside itself.
Its first frames, sampled cold, are the least like the music around them, and at a seam
they would follow the predecessor's last frames directly (audible as a flux peak every
segment). With ``overlap`` frames a later segment starts that many frames early and
throws them away (``WindowPlan.warmup``): at the seam it is already in its stride.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tokgen.errors import TokgenError

LEAD_GROWTH = 2  # after a lead window, each window may double until windows are full


@dataclass(frozen=True)
class Window:
    start: int  # frame index of the window's first token
    context: int  # known frames at the start of the window
    new: int  # frames generated in this window

    @property
    def end(self) -> int:
        return self.start + self.context + self.new


@dataclass(frozen=True)
class WindowPlan:
    windows: tuple[Window, ...]
    prime_frames: int  # frames known before the plan starts generating
    total_frames: int  # the plan generates frames [prime_frames, total_frames)
    start: int = 0  # the plan never reads a frame before this one (its segment's start)
    warmup: int = 0  # frames [start, start + warmup) are generated, then discarded (overlap)

    @property
    def keep_from(self) -> int:
        """The first frame this plan publishes (an earlier segment owns those before it)."""
        return self.start + self.warmup

    @property
    def prime_frames_dropped(self) -> int:
        """Known frames before the first window: they cannot influence the continuation."""
        return self.windows[0].start - self.start if self.windows else 0


def window_hop(n_ctx: int, hop_fraction: float) -> int:
    if n_ctx < 2:
        raise TokgenError(f"a prior's context must hold at least 2 tokens, got {n_ctx}")
    if not 0.0 < hop_fraction <= 1.0:
        raise TokgenError(f"hop_fraction must be in (0, 1], got {hop_fraction}")
    return max(1, min(n_ctx, math.floor(hop_fraction * n_ctx)))


def plan_windows(
    prime_frames: int,
    total_frames: int,
    n_ctx: int,
    hop_fraction: float,
    start: int = 0,
    lead: int | None = None,
) -> WindowPlan:
    """Windows that generate frames ``[prime_frames, total_frames)`` with a context of at
    most ``n_ctx`` frames each, none of it before frame ``start``. New frames of
    consecutive windows tile the range exactly.

    ``lead`` caps the first window's new frames: a short first window finishes (and lets
    the level below start) sooner, which is what bounds the time to first audio when the
    levels run as a pipeline. Each later window may generate ``LEAD_GROWTH`` times as
    many as the one before until windows are full, so the level below never waits long
    for the codes over its next window (with one lead and then a full window, the audio
    after the first piece waited for a whole upper window). Every window keeps its full
    context: no seam."""
    hop = window_hop(n_ctx, hop_fraction)
    if lead is not None and lead < 1:
        raise TokgenError(f"lead must be >= 1 frame or None, got {lead}")
    if not 0 <= start <= prime_frames <= total_frames:
        raise TokgenError(
            f"need 0 <= start ({start}) <= prime ({prime_frames}) <= total ({total_frames}) frames"
        )
    keep = n_ctx - hop
    windows: list[Window] = []
    pos = prime_frames
    while pos < total_frames:
        context = min(pos - start, keep)
        new = min(n_ctx - context, total_frames - pos)
        if lead is not None:
            new = min(new, lead * LEAD_GROWTH ** len(windows))
        windows.append(Window(pos - context, context, new))
        pos += new
    return WindowPlan(tuple(windows), prime_frames, total_frames, start)


def plan_segments(
    prime_frames: int,
    total_frames: int,
    n_ctx: int,
    hop_fraction: float,
    segment_frames: int | None,
    lead: int | None = None,
    overlap: int = 0,
) -> tuple[WindowPlan, ...]:
    """Split the frames to generate into segments of at most ``segment_frames`` new frames
    (None: a single segment), each with its own window plan; see the module docstring.
    ``lead`` shortens the first window of the first segment (what is heard first);
    every later segment starts ``overlap`` frames early (its warm-up, discarded)."""
    if segment_frames is not None and segment_frames < 1:
        raise TokgenError(f"segment_frames must be >= 1 or None, got {segment_frames}")
    if overlap < 0 or (segment_frames is not None and overlap >= segment_frames):
        raise TokgenError(f"overlap must be in [0, segment_frames), got {overlap}")
    step = segment_frames or max(total_frames - prime_frames, 1)
    first = plan_windows(prime_frames, min(prime_frames + step, total_frames), n_ctx, hop_fraction, lead=lead)
    rest = (
        replace(
            plan_windows(b - overlap, min(b + step, total_frames), n_ctx, hop_fraction, start=b - overlap),
            warmup=overlap,
        )
        for b in range(prime_frames + step, total_frames, step)
    )
    return (first, *rest)


def upper_span(window: Window, ratio: int, upper_frames: int) -> tuple[int, int]:
    """Frames [start, stop) of the level above that cover ``window`` of a level whose hop is
    ``ratio`` times smaller: the conditioning prefix of an upsampler window."""
    if ratio < 1:
        raise TokgenError(f"hop ratio between levels must be >= 1, got {ratio}")
    return window.start // ratio, min(upper_frames, math.ceil(window.end / ratio))

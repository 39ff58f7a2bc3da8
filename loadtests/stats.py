"""What a scenario measured, as plain data and pure functions (unit-tested)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    """One gRPC call as a client saw it."""

    kind: str  # "stream", "submit", ...
    code: str  # grpc.StatusCode name
    wall_s: float  # call start to end
    ttfa_s: float | None = None  # streams: to the first audio chunk
    audio_s: float = 0.0  # seconds of audio received


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return round(x, 3) if x is not None else None

    return {
        "p50": r(percentile(values, 50)),
        "p90": r(percentile(values, 90)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values)) if values else None,
    }


def summarize(calls: Sequence[Call], wall_s: float) -> dict:
    """Throughput, latency percentiles, errors by code and the audio real-time factor."""
    ok = [c for c in calls if c.code == "OK"]
    return {
        "calls": len(calls),
        "ok": len(ok),
        "codes": dict(sorted(Counter(c.code for c in calls).items())),
        "calls_per_s": round(len(calls) / wall_s, 3) if wall_s > 0 else None,
        "ttfa_s": spread([c.ttfa_s for c in ok if c.ttfa_s is not None]),
        "call_s": spread([c.wall_s for c in ok]),
        "audio_s": round(sum(c.audio_s for c in calls), 3),
        # all audio received over the wall time: above 1, faster than it plays
        "rtf": round(sum(c.audio_s for c in calls) / wall_s, 3) if wall_s > 0 else None,
        "wall_s": round(wall_s, 2),
    }


def slo_break(levels: Sequence[tuple[int, dict]], slo_p99_s: float) -> int | None:
    """The first concurrency whose time-to-first-audio p99 exceeds the SLO (or that had
    errors), from (concurrency, summary) pairs in increasing order; None: never broke."""
    for concurrency, summary in levels:
        p99 = summary["ttfa_s"]["p99"]
        if p99 is None or p99 > slo_p99_s or summary["ok"] < summary["calls"]:
            return concurrency
    return None

"""loadtests/: its summary arithmetic, and the smoke scenario as CI runs it (a real
``tokgen serve`` with vLLM, real clients, its own Redis)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtests.stats import Call, percentile, slo_break, summarize

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("q", [0, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    values = [0.3, 1.7, 0.2, 5.0, 0.9, 2.2, 0.4]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], q) is None


def test_summary_counts_codes_and_takes_latency_from_successes_only():
    calls = [
        Call("stream", "OK", 2.0, ttfa_s=0.5, audio_s=1.0),
        Call("stream", "OK", 3.0, ttfa_s=1.5, audio_s=1.0),
        Call("stream", "RESOURCE_EXHAUSTED", 0.01),
        Call("cancel", "CANCELLED", 1.0, ttfa_s=9.0, audio_s=0.5),
    ]
    s = summarize(calls, wall_s=5.0)
    assert s["codes"] == {"CANCELLED": 1, "OK": 2, "RESOURCE_EXHAUSTED": 1}
    assert s["ttfa_s"]["p50"] == 1.0 and s["ttfa_s"]["max"] == 1.5  # the cancelled 9 s is not a success
    assert s["rtf"] == 0.5 and s["calls_per_s"] == 0.8 and s["audio_s"] == 2.5


def test_slo_break_is_the_first_level_over_the_slo_or_with_errors():
    def level(p99, ok=3, calls=3):
        return {"ttfa_s": {"p99": p99}, "ok": ok, "calls": calls}

    assert slo_break([(1, level(0.5)), (2, level(1.9)), (4, level(2.5)), (8, level(1.0))], 2.0) == 4
    assert slo_break([(1, level(0.5)), (2, level(0.7, ok=2))], 2.0) == 2
    assert slo_break([(1, level(0.5))], 2.0) is None


def test_smoke_scenario_passes(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "loadtests", "--scenario", "smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["streams"]["codes"] == {"OK": 6} and summary["jobs"] == {"succeeded": 8, "cancelled": 1}
    assert summary["bad_request_codes"] == ["INVALID_ARGUMENT"] * 3

"""scripts/gpu_streams.py, the GPU machine's script, kept runnable: its streams arithmetic,
and a dry run on the CPU with the shipped priors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_streams.py"


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_streams", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_streams_fit_while_the_levels_time_shares_add_up_to_one():
    fit = load_script().streams_that_fit

    def runs(*tps: float) -> dict:
        return {"runs": [{"batch": b, "tokens_per_s": t} for b, t in zip((1, 8, 64), tps, strict=True)]}

    # 8 streams: 8 x 30 / 600 + 8 x 120 / 1200 = 0.4 + 0.8 > 1; 1 stream: 0.05 + 0.1.
    assert fit([runs(600, 600, 6000), runs(1200, 1200, 8000)], [30.0, 120.0]) == {
        "streams": 1,
        "time_share": 0.15,
    }
    assert fit([runs(10, 10, 10)], [30.0]) == {"streams": 0, "time_share": None}


def test_a_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "streams.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--device",
        "cpu",
        "--batches",
        "1,2",
        "--new-tokens",
        "24",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=SCRIPT.parent.parent)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["level_rates_hz"] == [31.25, 125.0, 500.0]
    assert [m["model"] for m in summary["models"]] == ["level0", "level1", "bottom_10x"]
    ratio = summary["models"][2]["parameters"] / summary["models"][1]["parameters"]
    assert 9 < ratio < 12
    for m in summary["models"]:
        assert [r["batch"] for r in m["runs"]] == [1, 2] and all(r["tokens_per_s"] > 0 for r in m["runs"])
    assert summary["shipped_streams"]["streams"] in (0, 1, 2)

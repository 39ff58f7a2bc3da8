"""Time to first audio and real-time factor against concurrency (a ramp's result), PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt


def plot_ramp(result: dict, out: Path) -> None:
    levels = sorted(int(n) for n in result["levels"])
    rows = [result["levels"][n] if n in result["levels"] else result["levels"][str(n)] for n in levels]
    fig, (ttfa, rtf) = plt.subplots(1, 2, figsize=(10, 4))
    for q in ("p50", "p99"):
        ttfa.plot(levels, [r["ttfa_s"][q] for r in rows], marker="o", label=f"TTFA {q}")
    ttfa.axhline(result["slo_ttfa_p99_s"], color="red", linestyle="--", label="SLO p99")
    ttfa.set_xlabel("concurrent streams")
    ttfa.set_ylabel("seconds")
    ttfa.set_title("time to first audio")
    ttfa.legend()
    rtf.plot(levels, [r["rtf"] for r in rows], marker="o", label="all streams")
    rtf.plot(levels, levels, color="gray", linestyle=":", label="needed (real time each)")
    rtf.set_xlabel("concurrent streams")
    rtf.set_ylabel("audio seconds per second")
    rtf.set_title("real-time factor")
    rtf.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)

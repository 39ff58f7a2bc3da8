"""``python -m loadtests --scenario NAME``: run one scenario on its own processes, print
its JSON summary, exit 1 if an assertion failed. See loadtests/README.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from loadtests import faults, scenarios
from loadtests.cluster import Cluster

SCENARIOS = {
    "smoke": lambda c, a: scenarios.smoke(c),
    "ramp": lambda c, a: scenarios.ramp(c, a.levels, a.requests, a.seconds),
    "flood": lambda c, a: scenarios.flood(c, a.jobs, a.seconds, a.workers),
    "mixed": lambda c, a: scenarios.mixed(c, a.duration),
    "worker-kills": lambda c, a: faults.worker_kills(c, a.kills, a.every, a.workers, a.seconds),
    "redis-restarts": lambda c, a: faults.redis_restarts(c, a.restarts, a.every, a.down, a.workers),
    "sigterm": lambda c, a: faults.sigterm(c, a.streams, a.seconds),
    "disconnect-storm": lambda c, a: faults.disconnect_storm(c, a.clients),
    "overload": lambda c, a: faults.overload(c, a.clients, a.active, a.queued),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"], help="engine (default: vllm)")
    p.add_argument("--lease-seconds", type=float, default=5.0, help="job lease (recovery after a kill)")
    p.add_argument("--worker-concurrency", type=int, default=4)
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 6, 8, 12])
    p.add_argument("--requests", type=int, default=3, help="ramp: requests per client")
    p.add_argument("--seconds", type=float, default=None, help="audio per request or job")
    p.add_argument("--jobs", type=int, default=200, help="flood: jobs")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--duration", type=float, default=60.0, help="mixed: seconds of load")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--every", type=float, default=None, help="seconds between faults")
    p.add_argument("--down", type=float, default=3.0, help="redis-restarts: seconds Redis stays down")
    p.add_argument("--streams", type=int, default=4, help="sigterm: streams in flight")
    p.add_argument("--clients", type=int, default=None, help="disconnect-storm, overload: clients")
    p.add_argument("--active", type=int, default=2, help="overload: --max-active")
    p.add_argument("--queued", type=int, default=2, help="overload: --max-queued")
    p.add_argument("--plot", type=Path, help="ramp: write TTFA and RTF vs concurrency (PNG)")
    p.add_argument("--out", type=Path, help="also write the JSON summary here")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, Redis data)")
    args = p.parse_args(argv)
    defaults: dict[str, dict[str, float]] = {  # per scenario: what makes it meaningful and bounded
        "seconds": {"ramp": 5.0, "flood": 0.5, "worker-kills": 1.0, "sigterm": 3.0},
        "every": {"worker-kills": 5.0, "redis-restarts": 10.0},
        "clients": {"disconnect-storm": 40, "overload": 12},
    }
    for name, per_scenario in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, per_scenario.get(args.scenario, 1.0))
    return args


async def run(args: argparse.Namespace, workdir: Path) -> dict:
    cluster = Cluster(workdir, args.backend, args.lease_seconds, args.worker_concurrency)
    cluster.start_redis()
    try:
        return await SCENARIOS[args.scenario](cluster, args)
    finally:
        await cluster.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scratch = Path(tempfile.mkdtemp(prefix=f"tokgen-load-{args.scenario}-", dir="/tmp"))
    started = time.monotonic()
    status, summary = 0, {}
    try:
        summary = asyncio.run(run(args, scratch))
    except AssertionError as exc:
        status, summary = 1, {"failed": str(exc) or traceback.format_exc(limit=3)}
        args.keep = True
    summary = {"scenario": args.scenario, "backend": args.backend, **summary}
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.plot and "levels" in summary:
        from loadtests.plot import plot_ramp

        plot_ramp(summary, args.plot)
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.keep:
        print(f"scratch directory (logs): {scratch}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

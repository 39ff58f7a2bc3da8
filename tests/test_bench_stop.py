"""A benchmark stopped with SIGTERM stops what it started: `tokgen bench serve` runs a
`tokgen serve` (and its engines); killing the bench must not leave them running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == pid:
            found.append(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def test_a_stopped_bench_serve_stops_its_server(tmp_path, tiny_model_dir, prior_set):
    cmd = [sys.executable, "-m", "tokgen", "bench", "serve", "--backend", "hf", "--seconds", "0.1"]
    cmd += [
        "--server-arg=--codec",
        f"--server-arg={tiny_model_dir}",
        "--server-arg=--priors",
        f"--server-arg={prior_set}",
    ]
    env = {**os.environ, "TOKGEN_CACHE_DIR": str(tmp_path / "cache")}
    bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (server := children(bench.pid)):
        assert time.monotonic() < deadline and bench.poll() is None, "the bench started no server"
        time.sleep(0.1)
    time.sleep(1.0)  # the server is starting (loading models)
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=90) != 0
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in server):
        assert time.monotonic() < deadline, f"server {server} still running after the bench stopped"
        time.sleep(0.2)

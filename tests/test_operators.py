"""What operators rely on: a version, and a taken port as one line naming the setting."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tokgen import __version__
from tokgen.errors import TokgenError
from tokgen.monitoring.metrics import start_metrics_server


def test_version():
    r = subprocess.run(
        [sys.executable, "-m", "tokgen", "--version"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip() == f"tokgen {__version__}"


def test_a_taken_metrics_port_names_the_flag():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TokgenError, match="--metrics-port"):
            start_metrics_server("127.0.0.1", port)


def test_a_worker_on_a_taken_metrics_port_exits_with_one_line(
    tmp_path, redis_server, tiny_model_dir, prior_set
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "tokgen", "worker", "--redis-url", redis_server.url, "--backend", "hf"]
        cmd += ["--metrics-port", str(port), "--codec", str(tiny_model_dir), "--priors", str(prior_set)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("tokgen: error:") and "--metrics-port" in lines[-1]
    assert "Traceback" not in r.stderr

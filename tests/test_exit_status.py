"""Every exit status in ``tokgen/cli/exits.py`` (README "Exit status"), each from a real
``tokgen`` process, against a real ``tokgen serve`` where the server's answer decides it;
and ``TOKGEN_SERVER`` as the default ``--server`` of the clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_serve_process import start_serve, stop
from tokgen.cli.exits import Exit

KEY = "exit-status-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, prior_set):
    """API keys required; no worker, so a submitted job stays queued and a quota of one
    job per key is reached by the first."""
    cwd = tmp_path_factory.mktemp("exits")
    (cwd / "keys").write_text(KEY + "\n")
    options = ["--no-worker", "--max-jobs-per-key", "1", "--api-keys-file", str(cwd / "keys")]
    served = start_serve(cwd, tiny_model_dir, prior_set, *options)
    yield served
    assert stop(served) == 0


@pytest.fixture(scope="module")
def queued_job(server) -> str:
    done = tokgen("jobs", "submit", "--mode", "ancestral", "--seconds", "1", server=server.address)
    assert done.returncode == Exit.OK, done.stderr
    return json.loads(done.stdout)["job_id"]


def environment(server: str | None, key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOKGEN_SERVER", "TOKGEN_API_KEY")}
    if server is not None:
        env["TOKGEN_SERVER"] = server
    if key is not None:
        env["TOKGEN_API_KEY"] = key
    return env


def tokgen(*args: str, server: str | None = None, key: str | None = KEY) -> subprocess.CompletedProcess:
    """``tokgen ARGS`` in a process of its own, ``server`` given as ``TOKGEN_SERVER``."""
    return subprocess.run(
        [sys.executable, "-m", "tokgen", *args],
        capture_output=True,
        text=True,
        env=environment(server, key),
        timeout=120,
    )


def closed_address() -> str:
    """A local port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def last_line_of(done: subprocess.CompletedProcess) -> str:
    return [line for line in done.stderr.splitlines() if line.strip()][-1]


def last_line(done: subprocess.CompletedProcess) -> str:
    """The one line a failed command ends with; no traceback before it."""
    assert "Traceback" not in done.stderr, done.stderr
    return last_line_of(done)


def test_0_ok_and_tokgen_server_is_the_default_server(server):
    done = tokgen("client", "info", "--json", server=server.address)
    assert done.returncode == Exit.OK == 0, done.stderr
    assert json.loads(done.stdout)["engine_backend"] == "hf"
    shown = " ".join(tokgen("client", "info", "--help").stdout.split())
    assert "the TOKGEN_SERVER variable, else 127.0.0.1:50051" in shown


def test_2_usage_and_bad_input(server, tmp_path):
    usage = tokgen("client", "info", "--no-such-flag")
    unreadable = tokgen(
        "client", "continue", "--prime", str(tmp_path / "missing.wav"), "--seconds", "1",
        "--out", str(tmp_path / "x.wav"), server=server.address,
    )  # fmt: skip
    refused = tokgen(
        "client", "continue", "--mode", "ancestral", "--seconds", "-1", "--out", str(tmp_path / "x.wav"),
        server=server.address,
    )  # fmt: skip
    bad_setting = subprocess.run(
        [sys.executable, "-m", "tokgen", "client", "info"],
        capture_output=True,
        text=True,
        env={**environment(server.address, KEY), "TOKGEN_LOG_LEVEL": "loud"},
        timeout=120,
    )
    assert [d.returncode for d in (usage, unreadable, refused, bad_setting)] == [Exit.USAGE] * 4 == [2] * 4
    assert "unrecognized arguments: --no-such-flag" in usage.stderr
    assert last_line(unreadable).startswith("tokgen: error: cannot read")
    # the server's answer, with the id its access log gives the call
    assert last_line(refused).startswith("tokgen: error: INVALID_ARGUMENT: seconds")
    assert "[request id " in last_line(refused)
    assert "TOKGEN_LOG_LEVEL" in last_line(bad_setting)


def test_3_a_server_that_refuses_connections_or_answers_too_late(server, tmp_path):
    refused = tokgen("client", "info", "--server", closed_address())
    jobs_refused = tokgen("jobs", "list", server=closed_address())
    late = tokgen(
        "client", "continue", "--mode", "ancestral", "--seconds", "30", "--timeout", "0.05",
        "--out", str(tmp_path / "late.wav"), server=server.address,
    )  # fmt: skip
    assert [d.returncode for d in (refused, jobs_refused, late)] == [Exit.UNAVAILABLE] * 3 == [3] * 3
    assert "UNAVAILABLE" in last_line(refused) and "UNAVAILABLE" in last_line(jobs_refused)
    assert "DEADLINE_EXCEEDED" in last_line(late)
    assert not list(tmp_path.glob("late.wav*"))


def test_4_refused_for_quota(server, queued_job):
    again = tokgen("jobs", "submit", "--mode", "ancestral", "--seconds", "1", server=server.address)
    assert again.returncode == Exit.EXHAUSTED == 4, again.stderr
    assert last_line(again).startswith("tokgen: error: RESOURCE_EXHAUSTED")


def test_5_not_found(server, queued_job):
    done = tokgen("jobs", "status", "no-such-job", server=server.address)
    assert done.returncode == Exit.NOT_FOUND == 5, done.stderr
    assert last_line(done).startswith("tokgen: error: NOT_FOUND")
    assert tokgen("jobs", "status", queued_job, server=server.address).returncode == Exit.OK


def test_6_no_key_or_a_wrong_key(server):
    missing = tokgen("client", "info", server=server.address, key=None)
    wrong = tokgen("jobs", "list", server=server.address, key="not-the-key-0123456789")
    assert [missing.returncode, wrong.returncode] == [Exit.DENIED] * 2 == [6] * 2
    assert "UNAUTHENTICATED" in last_line(missing)
    assert "not-the-key-0123456789" not in wrong.stderr + wrong.stdout


# A command that fails as tokgen never expects: a bug, stood in for by a patched command.
FAILING = """
import sys
import tokgen.cli.client

def bug(args):
    raise RuntimeError("something tokgen did not expect")

tokgen.cli.client.cmd_client_info = bug
from tokgen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_1_an_unexpected_error_is_one_line_and_its_traceback_only_at_debug():
    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", FAILING, "client", "info", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=environment(None, None), timeout=120)

    plain, debug = run(), run("--log-level", "debug")
    assert plain.returncode == debug.returncode == Exit.INTERNAL == 1
    assert last_line(plain) == (
        "tokgen: internal error: RuntimeError: something tokgen did not expect "
        "(--log-level debug shows the traceback)"
    )
    assert "Traceback" in debug.stderr and "in bug" in debug.stderr
    assert last_line_of(debug) == "tokgen: internal error: RuntimeError: something tokgen did not expect"


def test_1_tokgen_health_of_nothing_is_not_serving():
    done = tokgen("health", "--address", closed_address(), "--timeout", "2")
    assert done.returncode == Exit.NOT_SERVING == 1


def test_130_interrupted(server, queued_job, tmp_path: Path):
    """``jobs watch`` of a job no worker takes waits until Ctrl-C. The child starts with
    Python's own SIGINT handler: a test run started in the background (``make test &``)
    ignores SIGINT, and its children inherit that, as a shell's background jobs do."""
    interactive = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from tokgen.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    cmd = [sys.executable, "-c", interactive, "jobs", "watch", queued_job]
    env = environment(server.address, KEY)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as watch:
        try:
            assert json.loads(watch.stdout.readline())["state"] == "queued"  # watching
            watch.send_signal(signal.SIGINT)
            _, err = watch.communicate(timeout=60)
        finally:
            watch.kill()
    assert watch.returncode == Exit.INTERRUPTED == 130
    assert "tokgen: interrupted" in err and "Traceback" not in err

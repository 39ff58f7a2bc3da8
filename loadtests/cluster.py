"""The server side: real processes on loopback, started, killed and restarted on demand.

A ``Cluster`` owns a redis-server (tokgen's embedded one: AOF on, so a restart keeps
every accepted job), one ``tokgen serve`` and any number of ``tokgen worker`` processes,
all in a scratch directory that also holds their logs. Engines get a small KV cache each
(``TOKGEN_ENGINE_KV_CACHE_BYTES``) so several processes fit in memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tokgen.jobs.redis_server import EmbeddedRedis
from tokgen.monitoring.health import check


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    info: dict  # the JSON line it printed: addresses (listening, metrics, health), worker name
    started_s: float  # from launch to ready


@dataclass
class Cluster:
    workdir: Path
    backend: str = "auto"
    lease_s: float = 5.0
    worker_concurrency: int = 4
    kv_cache_bytes: int = 256 << 20
    redis: EmbeddedRedis | None = None
    server: Process | None = None
    workers: list[Process] = field(default_factory=list)
    _launched: int = 0

    @property
    def redis_url(self) -> str:
        return f"unix://{self.workdir / 'redis' / 'redis.sock'}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TOKGEN_CACHE_DIR": str(self.workdir / "cache"),
            "TOKGEN_ENGINE_KV_CACHE_BYTES": str(self.kv_cache_bytes),
            "OMP_NUM_THREADS": "1",
        }

    # ---- Redis -------------------------------------------------------------------------
    def start_redis(self) -> None:
        """From the main thread (the server dies with the thread that started it)."""
        self.redis = EmbeddedRedis.start(self.workdir / "redis")

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    # ---- tokgen processes --------------------------------------------------------------
    async def _launch(self, args: list[str], ready_timeout_s: float = 300) -> Process:
        self._launched += 1
        log = open(self.workdir / f"{args[0]}-{self._launched}.log", "wb")  # noqa: SIM115 (child's stderr)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tokgen", *args,
            stdout=asyncio.subprocess.PIPE, stderr=log, env=self._env(), cwd=self.workdir,
        )  # fmt: skip
        log.close()
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout_s)
        if not line:
            raise RuntimeError(f"tokgen {args[0]} exited at start; see {self.workdir}/{args[0]}-*.log")
        info = json.loads(line)
        if "health" in info:  # a server listens before its models load: wait for ready
            deadline = time.monotonic() + ready_timeout_s
            while await asyncio.to_thread(self._status, info["health"]) != "SERVING":
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tokgen {args[0]} never became ready; see {self.workdir}")
                await asyncio.sleep(0.3)
        return Process(proc, info, time.monotonic() - started)

    @staticmethod
    def _status(address: str) -> str:
        try:
            return check(address, timeout_s=2)
        except Exception:
            return "UNREACHABLE"

    async def start_server(self, *extra: str) -> Process:
        args = ["serve", "--port", "0", "--metrics-port", "0", "--health-port", "0"]
        args += [
            "--redis-url",
            self.redis_url,
            "--backend",
            self.backend,
            "--lease-seconds",
            str(self.lease_s),
        ]
        args += ["--worker-concurrency", str(self.worker_concurrency), *extra]
        self.server = await self._launch(args)
        return self.server

    async def start_worker(self) -> Process:
        args = ["worker", "--redis-url", self.redis_url, "--backend", self.backend]
        args += ["--metrics-port", "0", "--health-port", "0", "--lease-seconds", str(self.lease_s)]
        args += ["--worker-concurrency", str(self.worker_concurrency)]
        worker = await self._launch(args)
        self.workers.append(worker)
        return worker

    @staticmethod
    async def stop(process: Process, sig: int = signal.SIGTERM, timeout_s: float = 120) -> int:
        if process.proc.returncode is None:
            process.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(process.proc.wait(), timeout_s)
        except TimeoutError:
            process.proc.kill()
            return await process.proc.wait()

    async def close(self) -> None:
        for p in [*self.workers, *([self.server] if self.server else [])]:
            await self.stop(p)
        self.stop_redis()

    # ---- observing ---------------------------------------------------------------------
    @property
    def address(self) -> str:
        assert self.server is not None
        return self.server.info["listening"]

    def serving(self) -> bool:
        assert self.server is not None
        return self._status(self.server.info["health"]) == "SERVING"

    @staticmethod
    def scrape(process: Process) -> dict[str, float]:
        """``{'name{label="v",...}': value}`` from the process's /metrics."""
        text = urllib.request.urlopen(f"http://{process.info['metrics']}/metrics", timeout=10).read()
        out = {}
        for family in text_string_to_metric_families(text.decode()):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

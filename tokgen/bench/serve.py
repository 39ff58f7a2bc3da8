"""``tokgen bench serve``: a real ``tokgen serve`` and N concurrent real gRPC clients.

Each client continues the shipped example prime ``requests`` times, back to back (a closed
loop: a new request arrives while the others are mid-stream, as in steady use). Time to
first audio is measured by the client, from sending the call to receiving the first audio
chunk (so it includes decoding and encoding the prime). Stall is what a listener who
starts playing at the first chunk then waits for audio, in total, per request. The
real-time factor is all the audio received divided by the wall-clock time of the run.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokgen.assets import EXAMPLE_PRIME
from tokgen.client import AsyncTokgenClient, continue_request
from tokgen.errors import TokgenError


async def one_client(client: AsyncTokgenClient, requests: int, seconds: float, seed: int) -> list[dict]:
    out = []
    for i in range(requests):
        request = continue_request(prime=EXAMPLE_PRIME, seconds=seconds, seed=seed * 1000 + i)
        started = time.perf_counter()
        arrivals: list[tuple[float, float]] = []  # (seconds since the call, seconds of audio)
        error = None
        try:
            async for reply in client.stream(request, timeout=600):
                if reply.WhichOneof("event") == "chunk":
                    duration = len(reply.chunk.pcm) / 2 / reply.chunk.format.sample_rate
                    arrivals.append((time.perf_counter() - started, duration))
        except grpc.aio.AioRpcError as err:
            error = err.code().name
        out.append(
            {
                "ttfa": arrivals[0][0] if arrivals else None,
                "stall": stalled_seconds(arrivals),
                "audio": sum(d for _, d in arrivals),
                "error": error,
            }
        )
    return out


def stalled_seconds(arrivals: list[tuple[float, float]]) -> float:
    """Seconds a listener who starts playing at the first chunk waits for audio later on:
    each chunk (arrival time, seconds of audio) that arrives after the audio before it has
    played out adds the gap. Time to first audio alone rewards a tiny first chunk."""
    if not arrivals:
        return 0.0
    playing_until, stalled = arrivals[0][0], 0.0
    for at, duration in arrivals:
        if at > playing_until:
            stalled += at - playing_until
            playing_until = at
        playing_until += duration
    return stalled


async def load(address: str, clients: int, requests: int, seconds: float) -> dict:
    async with AsyncTokgenClient(address) as client:  # one channel: HTTP/2 multiplexes the calls
        started = time.perf_counter()
        runs = await asyncio.gather(*(one_client(client, requests, seconds, c) for c in range(clients)))
        wall = time.perf_counter() - started
    results = [r for run in runs for r in run]
    ok = [r for r in results if r["error"] is None and r["ttfa"] is not None]
    ttfa, stall = [r["ttfa"] for r in ok], [r["stall"] for r in ok]
    return {
        "ttfa_p50_s": round(float(np.percentile(ttfa, 50)), 3) if ttfa else None,
        "ttfa_p99_s": round(float(np.percentile(ttfa, 99)), 3) if ttfa else None,
        "ttfa_max_s": round(max(ttfa), 3) if ttfa else None,
        # Per request, seconds of silence after playback started (see stalled_seconds).
        "stall_p50_s": round(float(np.percentile(stall, 50)), 3) if stall else None,
        "stall_p99_s": round(float(np.percentile(stall, 99)), 3) if stall else None,
        "rtf": round(sum(r["audio"] for r in results) / wall, 3),
        "requests": len(results),
        "errors": sum(r["error"] is not None for r in results),
    }


async def served_backend(address: str) -> str:
    async with AsyncTokgenClient(address) as client:
        return (await client.model_info()).engine_backend


def wait_ready(address: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TokgenError(f"tokgen serve exited with status {proc.returncode} before it was ready")
            try:
                status = check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise TokgenError(f"tokgen serve was not ready within {timeout:g} s")


def bench_serve(
    backend: str, seconds: float, concurrency: tuple[int, ...], requests: int, server_args: list[str]
) -> dict:
    """Start ``tokgen serve`` on free ports, warm it up, run each concurrency level in turn."""
    cmd = [sys.executable, "-m", "tokgen", "serve", "--port", "0", "--metrics-port", "0"]
    cmd += ["--backend", backend, "--max-active", str(max(concurrency)), *server_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise TokgenError("tokgen serve exited before it listened (run it alone to see why)")
        address = json.loads(line)["listening"]
        wait_ready(address, proc)
        asyncio.run(load(address, 1, 1, 2.0))  # warm-up: first calls into each engine
        result: dict = {"backend": asyncio.run(served_backend(address)), "seconds_per_request": seconds}
        for n in concurrency:
            result[f"n{n}"] = asyncio.run(load(address, n, requests, seconds))
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()

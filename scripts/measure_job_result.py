"""A long job's result through a client that receives at most 4 MiB a message (issue 19,
item 5; README "Batch jobs"): a real server with JobService on a real redis-server, a job
finished through the queue with the result of a ``--seconds`` render with the shipped codec
(noise WAV and random codes: they compress as little as real ones), then, on a channel
with ``grpc.max_receive_message_length`` 4 MiB (Go's, Java's and grpcurl's default):
GetJobResult's answer, and StreamJobResult (``tokgen.client.jobs.fetch_result``): its
messages, bytes and time (the best of ``--repeats``). One JSON line each.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_job_result.py [--seconds 150]"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import redis.asyncio as aioredis

from tokgen.client.jobs import fetch_result
from tokgen.codec import load_codec
from tokgen.codec.codes import dump_codes
from tokgen.jobs.queue import JobQueue
from tokgen.jobs.redis_server import EmbeddedRedis
from tokgen.jobs.worker import wav_bytes
from tokgen.serve.admission import Admission
from tokgen.serve.jobs_service import JobServicer
from tokgen.serve.server import build_server
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc

LIMITED = [("grpc.max_receive_message_length", 4 << 20)]


async def finished_job(queue: JobQueue, seconds: float) -> tuple[str, bytes, bytes]:
    codec, rng = load_codec(), np.random.default_rng(0)
    samples = round(seconds * codec.sample_rate)
    audio = wav_bytes(rng.uniform(-0.5, 0.5, samples).astype(np.float32), codec.sample_rate)
    codes = dump_codes(
        [rng.integers(0, lv.codebook_size, -(-samples // lv.hop)) for lv in codec.levels], codec, samples
    )
    job_id, _ = await queue.submit(b"-", "normal")
    (claim,) = await queue.claim("w", 1)
    await queue.succeed(claim, "w", audio, codes)
    return job_id, audio, codes


async def measure(url: str, seconds: float, repeats: int) -> None:
    queue = JobQueue(aioredis.Redis.from_url(url))
    server, _, _, port = build_server("127.0.0.1:0", Admission(1, 0), jobs=JobServicer(queue))
    await server.start()
    job_id, audio, codes = await finished_job(queue, seconds)
    print(json.dumps({"seconds": seconds, "wav_bytes": len(audio), "codes_bytes": len(codes)}))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=LIMITED) as channel:
        stub = jpb_grpc.JobServiceStub(channel)
        try:
            await stub.GetJobResult(jpb.GetJobResultRequest(job_id=job_id))
            print(json.dumps({"GetJobResult": "OK"}))
        except grpc.RpcError as err:
            print(json.dumps({"GetJobResult": err.code().name, "details": err.details()}))
        request = jpb.StreamJobResultRequest(name=f"jobs/{job_id}")
        messages = [len(reply.SerializeToString()) async for reply in stub.StreamJobResult(request)]
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = await fetch_result(stub, job_id)
            times.append(time.perf_counter() - started)
        assert (result.audio, result.codes) == (audio, codes)
    print(
        json.dumps(
            {
                "StreamJobResult": "OK",
                "messages": len(messages),
                "largest_message_bytes": max(messages),
                "seconds_best": round(min(times), 3),
                "identical": True,
            }
        )
    )
    await server.stop(None)
    await queue.r.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = EmbeddedRedis.start(Path(tmp) / "redis")
        try:
            asyncio.run(measure(redis_server.url, args.seconds, args.repeats))
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()

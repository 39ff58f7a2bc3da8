"""What one job costs in Redis (issue 17, docs/OPERATIONS.md "Redis memory"): ``MEMORY USAGE``
of its keys on a real redis-server, through the queue's own code, with the shipped codec.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_redis_memory.py [--seconds 10 60 600]

For a primed job (the example prime, 12 s, and it looped to the 60 s limit, noise added) it
prints the queued record (the prepared job: every level's codes of the prime and its timbre
reference); for each length in ``--seconds`` a finished record (prime dropped) and its
result (WAV + every level's codes, random codes: they compress as little as real ones);
and the index entries a job adds (``used_memory`` over 2,000 finished jobs, per job). One
JSON line each."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
import soundfile as sf

from tokgen.assets import EXAMPLE_PRIME
from tokgen.codec import load_codec
from tokgen.codec.codes import dump_codes
from tokgen.generation.generator import Generator
from tokgen.jobs.queue import JobQueue, QueueConfig
from tokgen.jobs.redis_server import EmbeddedRedis
from tokgen.jobs.worker import wav_bytes
from tokgen.v1 import tokgen_pb2 as pb


async def usage(q: JobQueue, key: str) -> int:
    return int(await q.r.memory_usage(key, samples=0) or 0)


async def measure(url: str, lengths: list[float]) -> None:
    q = JobQueue(aioredis.Redis.from_url(url), QueueConfig(prefix="m"))
    codec = load_codec()  # the shipped codec
    g = Generator(codec, [])  # preparing a job needs the codec only
    prime, rate = sf.read(EXAMPLE_PRIME, dtype="float32")
    rng = np.random.default_rng(0)
    # The longest prime a request may carry: the example looped to 60 s, with noise so that
    # no stretch of codes repeats (repeats would deflate to nothing and understate it).
    looped = np.resize(prime, (60 * rate, *prime.shape[1:]))
    looped = looped + rng.normal(0, 0.02, looped.shape).astype(np.float32)
    for name, audio in (("ancestral", None), ("example prime, 12 s", prime), ("60 s prime", looped)):
        request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=30)
        if audio is not None:
            buf = io.BytesIO()
            sf.write(buf, audio, rate, format="FLAC")
            request = pb.ContinueRequest(prime_audio=buf.getvalue(), seconds=30)
        queued = g.queued(g.spec_from_pb(request)).dumps()
        job_id, _ = await q.submit(queued, "normal", owner="0" * 32)
        record = await usage(q, f"{q.config.namespace}:job:{job_id}")
        print(
            json.dumps(
                {"what": f"queued record, {name}", "prepared_job_bytes": len(queued), "memory_usage": record}
            )
        )
        await q.cancel(job_id)
    sr = codec.sample_rate
    for seconds in lengths:
        job_id, _ = await q.submit(b"-", "normal", owner="0" * 32)
        claims: list = []
        while not claims:  # the cancelled jobs' stream entries come first (and are dropped)
            claims = await q.claim("w", 1)
        (claim,) = claims
        samples = round(seconds * sr)
        codes = [rng.integers(0, lv.codebook_size, -(-samples // lv.hop)) for lv in codec.levels]
        audio = wav_bytes(rng.uniform(-0.5, 0.5, samples).astype(np.float32), sr)
        await q.succeed(
            claim, "w", audio, dump_codes(codes, codec, samples), json.dumps({"tokens": [1, 2, 3]})
        )
        print(
            json.dumps(
                {
                    "what": f"succeeded, {seconds:g} s",
                    "record_memory_usage": await usage(q, f"{q.config.namespace}:job:{job_id}"),
                    "result_memory_usage": await usage(q, f"{q.config.namespace}:result:{job_id}"),
                    "wav_bytes": len(audio),
                }
            )
        )
    before = (await q.r.info("memory"))["used_memory"]
    n = 2000
    for _ in range(n):
        job_id, _ = await q.submit(b"-", "normal", owner="0" * 32)
        await q.cancel(job_id)
    after = (await q.r.info("memory"))["used_memory"]
    print(
        json.dumps(
            {
                "what": f"a finished job, record and index entries ({n} jobs)",
                "bytes_per_job": (after - before) // n,
            }
        )
    )
    await q.r.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0, 600.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis.start(Path(tmp) / "redis")
        try:
            asyncio.run(measure(server.url, args.seconds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

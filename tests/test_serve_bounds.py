"""Bounds on what callers can make the server hold at once (issue 17), over real sockets
with a real Redis: concurrent preparations of primes (SubmitJob and Continue), requests
refused before they are parsed when the API key is missing, concurrent RPCs, WatchJob
pollers and watchers; and the client's warning about keys sent in plaintext."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf

from tokgen.codec import load_codec
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import LevelPrior
from tokgen.jobs.queue import JobQueue, QueueConfig
from tokgen.serve.admission import Admission
from tokgen.serve.jobs_service import JobServicer
from tokgen.serve.server import build_server, mark_ready
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def big_prime() -> bytes:
    """The largest prime a request may carry: 60 s of 48 kHz stereo noise (11.5 MB WAV),
    whose decoding, resampling and encoding takes long enough for calls to overlap."""
    noise = np.random.default_rng(0).standard_normal((60 * 48000, 2)).astype(np.float32) * 0.1
    buf = io.BytesIO()
    sf.write(buf, noise, 48000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def concurrently(calls: list) -> list:
    """Run every call at once (threads, each its own gRPC call); their results or errors."""

    def attempt(call):
        try:
            return call()
        except grpc.RpcError as err:
            return err

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(attempt, calls))


# ---- 3. preparations are bounded -------------------------------------------------------------


def test_concurrent_submissions_prepare_at_most_max_preparing_at_once(
    loop_thread, tiny_model_dir, redis_server, big_prime
):
    """Eight SubmitJobs with a 60 s stereo prime each, at once: at most two decode and
    encode their prime at any moment (counted in the preparing threads themselves), and
    every one is queued. Without the bound all eight prepare together."""
    codec = load_codec(tiny_model_dir)

    async def start():
        queue = JobQueue(aioredis.Redis.from_url(redis_server.url), QueueConfig(prefix="bounds-prep"))
        jobs = JobServicer(queue)
        server, _, _, port = build_server("127.0.0.1:0", Admission(2, 0), jobs=jobs)
        await server.start()
        jobs.attach(Generator(codec, []))
        return server, jobs, port

    server, jobs, port = loop_thread.run(start())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = jpb_grpc.JobServiceStub(channel)
            request = jpb.SubmitJobRequest(request=pb.ContinueRequest(prime_audio=big_prime, seconds=1))
            replies = concurrently([lambda: stub.SubmitJob(request, timeout=120)] * 8)
        assert all(isinstance(r, jpb.SubmitJobResponse) and r.created for r in replies), replies
        assert jobs.preparations.peak == 2, f"{jobs.preparations.peak} preparations ran at once"
        assert jobs.preparations.now == 0
    finally:
        loop_thread.run(server.stop(None))


def test_continue_prepares_its_prime_inside_its_admission_slot(
    loop_thread, engine, tiny_model_dir, big_prime
):
    """Six Continue calls with a 60 s stereo prime each against one slot and six waiting
    places: a call waiting for its slot has not decoded its prime yet, so only one
    preparation ever runs; all six stream to their summary."""
    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32, segment_frames=40)]

    async def start():
        server, servicer, health, port = build_server("127.0.0.1:0", Admission(max_active=1, max_queued=6))
        await server.start()
        await mark_ready(servicer, health, Generator(codec, priors))
        return server, servicer, port

    server, servicer, port = loop_thread.run(start())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TokgenServiceStub(channel)
            request = pb.ContinueRequest(prime_audio=big_prime, seconds=0.05)
            replies = concurrently([lambda: list(stub.Continue(request, timeout=120))] * 6)
        assert all(isinstance(r, list) and r[-1].WhichOneof("event") == "summary" for r in replies), replies
        assert servicer.preparations.peak == 1, f"{servicer.preparations.peak} preparations ran at once"
    finally:
        loop_thread.run(server.stop(None))


# ---- 8. authenticate first --------------------------------------------------------------------

KEY = "bounds-key-0123456789abcdef"


def test_calls_without_a_valid_key_are_refused_before_their_bytes_are_parsed(loop_thread):
    """With API keys configured, a call without a valid key gets UNAUTHENTICATED whatever
    its bytes (garbage included, which a keyed caller gets INVALID_ARGUMENT for), and its
    request is never deserialized (a probe method on the same server records every parse)
    nor even received."""
    parsed: list[int] = []

    def parse(data: bytes) -> pb.GetModelInfoRequest:
        parsed.append(len(data))
        return pb.GetModelInfoRequest.FromString(data)

    async def probe(request, context) -> bytes:
        return b"probed"

    async def start():
        server, _, _, port = build_server("127.0.0.1:0", Admission(1, 0), api_keys=[KEY.encode()])
        handler = grpc.unary_unary_rpc_method_handler(probe, parse, lambda reply: reply)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Probe", {"Call": handler}),)
        )
        await server.start()
        return server, port

    server, port = loop_thread.run(start())
    garbage = b"\xff\xff\xff\xff not a protobuf"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:

            def code(method: str, payload: bytes, metadata=()) -> grpc.StatusCode:
                call = channel.unary_unary(method)
                try:
                    call(payload, metadata=metadata, timeout=30)
                except grpc.RpcError as err:
                    return err.code()
                return grpc.StatusCode.OK

            for metadata in ((), (("x-api-key", "wrong-key-0123456789abcdef"),)):
                for payload in (garbage, b"", b"\x0a" * (1 << 20)):
                    assert code("/test.Probe/Call", payload, metadata) == grpc.StatusCode.UNAUTHENTICATED
                    info = code("/tokgen.v1.TokgenService/GetModelInfo", payload, metadata)
                    assert info == grpc.StatusCode.UNAUTHENTICATED
                stream = channel.unary_stream("/tokgen.v1.TokgenService/Continue")
                with pytest.raises(grpc.RpcError) as err:
                    list(stream(garbage, metadata=metadata, timeout=30))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert parsed == [], "requests without a valid key were parsed"
            # Not even received: a request over --max-request-bytes (64 MiB here), which a
            # keyed caller gets RESOURCE_EXHAUSTED for once grpc has read 64 MiB of it, is
            # UNAUTHENTICATED without a key (the handler refuses before reading anything).
            huge = b"\0" * (65 << 20)
            assert code("/test.Probe/Call", huge) == grpc.StatusCode.UNAUTHENTICATED
            assert code("/test.Probe/Call", huge, (("x-api-key", KEY),)) == grpc.StatusCode.RESOURCE_EXHAUSTED
            good = (("x-api-key", KEY),)
            assert code("/test.Probe/Call", b"", good) == grpc.StatusCode.OK and parsed == [0]
            assert code("/test.Probe/Call", garbage, good) == grpc.StatusCode.INVALID_ARGUMENT
            assert (
                code("/tokgen.v1.TokgenService/GetModelInfo", garbage, good)
                == grpc.StatusCode.INVALID_ARGUMENT
            )
    finally:
        loop_thread.run(server.stop(None))


# ---- 9. concurrent RPCs, watchers, keys in plaintext ----------------------------------------


@pytest.fixture
def jobs_server(loop_thread, tiny_model_dir, tmp_path):
    """A JobService server on a Redis of its own (its command counts are this test's alone);
    ``start(**options)`` -> (stub, servicer, queue)."""
    from tokgen.jobs.redis_server import EmbeddedRedis

    codec = load_codec(tiny_model_dir)
    redis_server = EmbeddedRedis.start(tmp_path / "redis")
    servers = []

    def start(max_concurrent_rpcs=None, **servicer_options):
        async def go():
            queue = JobQueue(aioredis.Redis.from_url(redis_server.url), QueueConfig(prefix="bounds"))
            jobs = JobServicer(queue, **servicer_options)
            server, _, _, port = build_server(
                "127.0.0.1:0", Admission(1, 0), jobs=jobs, max_concurrent_rpcs=max_concurrent_rpcs
            )
            await server.start()
            jobs.attach(Generator(codec, []))
            return server, jobs, queue, port

        server, jobs, queue, port = loop_thread.run(go())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        servers.append((server, channel))
        return jpb_grpc.JobServiceStub(channel), jobs, queue

    yield start
    for server, channel in servers:
        channel.close()
        loop_thread.run(server.stop(None))
    redis_server.stop()


def queued_job(stub) -> str:
    request = jpb.SubmitJobRequest(request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=1))
    return stub.SubmitJob(request, timeout=30).job.job_id


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_calls_beyond_max_concurrent_rpcs_are_refused(jobs_server):
    """Two WatchJob streams hold the server's two call slots: a third call of any kind is
    RESOURCE_EXHAUSTED at once; when a stream ends, calls are served again."""
    stub, jobs, _ = jobs_server(max_concurrent_rpcs=2)
    job_id = queued_job(stub)
    watches = [stub.WatchJob(jpb.WatchJobRequest(job_id=job_id), timeout=60) for _ in range(2)]
    assert all(next(w).job.state == jpb.JOB_STATE_QUEUED for w in watches)  # both running
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(jpb.GetJobRequest(job_id=job_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    watches[0].cancel()
    wait_for(lambda: jobs.watchers.count == 1, "the cancelled watch kept its place")
    assert stub.GetJob(jpb.GetJobRequest(job_id=job_id), timeout=10).job.job_id == job_id
    watches[1].cancel()


def test_watchers_share_one_poller(jobs_server, loop_thread):
    """Twenty WatchJob calls on two jobs, polled every 0.1 s for 2 s: Redis sees one read
    of each job per interval (about 40 HGETs), not one per watcher (about 400: the old
    per-call loop); then one change reaches all twenty, and each stream ends."""
    stub, jobs, queue = jobs_server(watch_every_s=0.1)
    ids = [queued_job(stub), queued_job(stub)]
    streams = [stub.WatchJob(jpb.WatchJobRequest(job_id=ids[i % 2]), timeout=60) for i in range(20)]
    firsts = [next(s) for s in streams]
    assert {f.job.state for f in firsts} == {jpb.JOB_STATE_QUEUED}  # all twenty watch now

    async def hgets_over(seconds: float) -> tuple[int, int]:
        await queue.r.config_resetstat()
        polls = jobs.watchers.polls
        await asyncio.sleep(seconds)
        stats = await queue.r.info("commandstats")
        return stats.get("cmdstat_hget", {}).get("calls", 0), jobs.watchers.polls - polls

    hgets, polls = loop_thread.run(hgets_over(2.0))
    print(f"\n20 watchers of 2 jobs for 2 s: {hgets} HGETs in {polls} polls")
    assert hgets <= 2 * polls + 2, f"{hgets} HGETs in {polls} polls of 2 jobs by 20 watchers"
    assert 10 <= polls <= 25, polls
    for job_id in ids:
        stub.CancelJob(jpb.CancelJobRequest(job_id=job_id), timeout=30)
    lasts = concurrently([lambda s=s: list(s)[-1] for s in streams])
    assert [x.job.state for x in lasts] == [jpb.JOB_STATE_CANCELLED] * 20, lasts
    wait_for(lambda: jobs.watchers.count == 0, "finished watches kept their places")


def test_watchers_beyond_the_bound_are_refused(jobs_server):
    stub, jobs, _ = jobs_server(max_watchers=2)
    job_id = queued_job(stub)
    watches = [stub.WatchJob(jpb.WatchJobRequest(job_id=job_id), timeout=60) for _ in range(2)]
    assert all(next(w).job.job_id == job_id for w in watches)
    code, _ = refused(lambda: list(stub.WatchJob(jpb.WatchJobRequest(job_id=job_id), timeout=30)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A finished job's watch answers at once and needs no place.
    done = queued_job(stub)
    stub.CancelJob(jpb.CancelJobRequest(job_id=done), timeout=30)
    replies = list(stub.WatchJob(jpb.WatchJobRequest(job_id=done), timeout=30))
    assert [r.job.state for r in replies] == [jpb.JOB_STATE_CANCELLED]
    watches[0].cancel()
    wait_for(lambda: jobs.watchers.count == 1, "the cancelled watch kept its place")
    third = stub.WatchJob(jpb.WatchJobRequest(job_id=job_id), timeout=60)
    assert next(third).job.job_id == job_id
    third.cancel()
    watches[1].cancel()


def refused(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


@pytest.mark.parametrize(
    "server, local",
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("dns:///localhost:50051", True),
        ("ipv4:127.0.0.2:50051", True),
        ("unix:/run/tokgen.sock", True),
        ("localhost", True),
        ("10.0.0.5:50051", False),
        ("tokgen.example.com:443", False),
        ("dns:///tokgen.example.com:443", False),
        ("[2001:db8::1]:50051", False),
        ("0.0.0.0:50051", False),
    ],
)
def test_which_targets_are_local(server, local):
    from tokgen.client import is_local

    assert is_local(server) == local


def test_the_client_warns_before_sending_a_key_in_plaintext_beyond_loopback(caplog):
    from tokgen.client import AsyncTokgenClient, TlsOptions

    async def make(server: str, key: str | None, tls: TlsOptions | None) -> list[str]:
        caplog.clear()
        async with AsyncTokgenClient(server, key, tls):
            pass
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    with caplog.at_level("WARNING", logger="tokgen.client"):
        warned = asyncio.run(make("10.0.0.5:50051", "k" * 20, None))
        assert len(warned) == 1 and "without TLS" in warned[0] and "k" * 20 not in warned[0]
        assert asyncio.run(make("127.0.0.1:50051", "k" * 20, None)) == []
        assert asyncio.run(make("10.0.0.5:50051", None, None)) == []
        assert asyncio.run(make("10.0.0.5:50051", "k" * 20, TlsOptions())) == []


def test_the_cli_warns_on_stderr_before_sending_a_key_in_plaintext(tmp_path):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "tokgen", "client", "continue", "--server", "192.0.2.1:50051"]
    cmd += ["--mode", "ancestral", "--seconds", "1", "--out", str(tmp_path / "x.wav"), "--timeout", "1"]
    env = {**os.environ, "TOKGEN_API_KEY": "cli-key-0123456789abcdef"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert "192.0.2.1:50051 without TLS" in done.stderr, done.stderr
    assert "cli-key-0123456789abcdef" not in done.stderr + done.stdout

"""Bounds on what callers can make the server hold at once (issue 17), over real sockets
with a real Redis: concurrent preparations of primes (SubmitJob and Continue), requests
refused before they are parsed when the API key is missing, concurrent RPCs, WatchJob
pollers and watchers; and the client's warning about keys sent in plaintext."""

from __future__ import annotations

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
    request is never deserialized: a probe method on the same server records every parse."""
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
            good = (("x-api-key", KEY),)
            assert code("/test.Probe/Call", b"", good) == grpc.StatusCode.OK and parsed == [0]
            assert code("/test.Probe/Call", garbage, good) == grpc.StatusCode.INVALID_ARGUMENT
            assert (
                code("/tokgen.v1.TokgenService/GetModelInfo", garbage, good)
                == grpc.StatusCode.INVALID_ARGUMENT
            )
    finally:
        loop_thread.run(server.stop(None))

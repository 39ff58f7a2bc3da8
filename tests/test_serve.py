"""The gRPC service over a real socket, on both engines (tiny codec; the session's tiny
Llama stands in for both levels' priors)."""

from __future__ import annotations

import io
import time

import grpc
import numpy as np
import pytest
import soundfile as sf
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tokgen.codec import load_codec
from tokgen.generation.generate import prepare
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import LevelPrior, SamplingSettings
from tokgen.serve.admission import Admission
from tokgen.serve.server import LIVE, SERVICE_NAME, build_server, mark_live, mark_ready
from tokgen.serve.service import pcm16
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc


def wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV")
    return buf.getvalue()


@pytest.fixture
def served(loop_thread, engine, tiny_model_dir):
    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32, segment_frames=40)]

    async def start():
        server, servicer, health, port = build_server("127.0.0.1:0", Admission(max_active=2, max_queued=0))
        await server.start()
        await mark_live(health)
        return server, servicer, health, port

    server, servicer, health, port = loop_thread.run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield codec, priors, servicer, health, channel, loop_thread
    channel.close()
    loop_thread.run(server.stop(None))


def test_ready_only_once_models_are_loaded(served):
    codec, priors, servicer, health, channel, loop_thread = served
    check = health_pb2_grpc.HealthStub(channel).Check
    status = lambda name: check(health_pb2.HealthCheckRequest(service=name)).status  # noqa: E731
    assert status(LIVE) == health_pb2.HealthCheckResponse.SERVING
    assert status("") == status(SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    stub = pb_grpc.TokgenServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelInfo(pb.GetModelInfoRequest())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    assert status("") == status(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.sample_rate == 16000 and [lv.hop for lv in info.levels] == [16, 8]
    assert info.max_seconds == 600 and info.engine_backend in ("hf", "vllm")


def test_continue_streams_the_rendered_audio(served, tone):
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    request = pb.ContinueRequest(prime_audio=wav(tone[:800]), seconds=0.1, sampling=pb.SamplingParams(seed=3))
    replies = list(pb_grpc.TokgenServiceStub(channel).Continue(request, timeout=120))
    chunks, summary = [r.chunk for r in replies[:-1]], replies[-1].summary
    assert chunks and all(r.WhichOneof("event") == "chunk" for r in replies[:-1])
    assert chunks[0].format.encoding == "s16le" and chunks[0].format.sample_rate == 16000
    assert [c.offset_seconds for c in chunks] == sorted(c.offset_seconds for c in chunks)
    pcm = b"".join(c.pcm for c in chunks)
    expected = loop_thread.run(
        Generator(codec, priors).render(prepare(codec, "primed", 0.1, tone[:800]), SamplingSettings(seed=3))
    )
    assert (
        np.abs(
            np.frombuffer(pcm, "<i2").astype(int)
            - np.frombuffer(pcm16(expected.audio[expected.prime_samples :]), "<i2").astype(int)
        ).max()
        <= 1
    )
    assert summary.audio_seconds == pytest.approx(0.1) and [lv.tokens for lv in summary.levels] == [100, 200]
    assert summary.seed == 3


def test_an_unseeded_stream_gets_a_fresh_seed_and_reports_it(served, tone):
    """No seed: each call draws its own (callers no longer all get seed 0's audio), and
    the seed in the summary reproduces the stream exactly."""
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    stub = pb_grpc.TokgenServiceStub(channel)

    def stream(sampling):
        request = pb.ContinueRequest(prime_audio=wav(tone[:800]), seconds=0.1, sampling=sampling)
        replies = list(stub.Continue(request, timeout=120))
        return b"".join(r.chunk.pcm for r in replies[:-1]), replies[-1].summary.seed

    (a, seed_a), (b, seed_b) = stream(pb.SamplingParams()), stream(pb.SamplingParams(top_k=0))
    assert seed_a != seed_b and a != b
    assert stream(pb.SamplingParams(seed=seed_a)) == (a, seed_a)
    assert stream(pb.SamplingParams(seed=0))[1] == 0  # a seed of 0 is a seed, not "none"


ANCESTRAL = {"mode": pb.MODE_ANCESTRAL, "seconds": 1}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"prime_audio": b"not audio", "seconds": 1}, "prime_audio"),
        ({"prime_audio": b"", "seconds": 0}, "seconds"),
        ({"prime_audio": b"", "seconds": 1}, "prime_audio"),
        ({"mode": pb.MODE_ANCESTRAL, "seconds": 1, "prime_audio": b"x"}, "prime_audio"),
        ({"mode": pb.MODE_CONTINUE, "seconds": 1}, "codes"),
        (
            {"mode": pb.MODE_ANCESTRAL, "seconds": 1, "sampling": pb.SamplingParams(temperature=0)},
            "sampling.temperature",
        ),
        (
            {"mode": pb.MODE_ANCESTRAL, "seconds": 1, "sampling": pb.SamplingParams(top_p=1.5)},
            "sampling.top_p",
        ),
        (
            {"mode": pb.MODE_ANCESTRAL, "seconds": 1, "sampling": pb.SamplingParams(top_k=5000)},
            "sampling.top_k",
        ),
        ({"mode": pb.MODE_ANCESTRAL, "seconds": float("nan")}, "seconds"),
        ({"mode": pb.MODE_ANCESTRAL, "seconds": 601}, "seconds"),
        ({"mode": 42, "seconds": 1}, "mode"),
        ({"mode": pb.MODE_ANCESTRAL, "seconds": 1, "priority": 9}, "priority"),
        ({"mode": pb.MODE_UPSAMPLE, "codes": b"PK\x03\x04 not a codes file"}, "codes"),
        ({"prime_audio": wav(np.zeros(1600, dtype=np.float32)), "seconds": 1}, "prime_audio"),  # silent
        ({"prime_audio": wav(np.full(4, 0.5, dtype=np.float32)), "seconds": 1}, "prime_audio"),  # < 1 frame
        ({}, "prime_audio"),  # nothing set: a primed request without its prime
        ({**ANCESTRAL, "num_samples": 9}, "num_samples"),
        ({**ANCESTRAL, "sample_rate": 96000}, "sample_rate"),
        ({**ANCESTRAL, "loudness_lufs": -100}, "loudness_lufs"),
    ],
)
def test_bad_requests_name_the_field(served, request_fields, field):
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    stub = pb_grpc.TokgenServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Continue(pb.ContinueRequest(**request_fields), timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    detail = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(detail)
    assert detail.field_violations[0].field == field
    assert stub.GetModelInfo(pb.GetModelInfoRequest()).sample_rate == 16000  # still serving


def test_malformed_and_oversize_requests_are_refused_and_the_server_keeps_serving(served, tone):
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    raw = channel.unary_stream("/tokgen.v1.TokgenService/Continue")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as err:
        list(raw(b"\xff\xff\xff\xff not a protobuf", timeout=30))
    assert (
        err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in err.value.details()
    )
    huge = pb.ContinueRequest(prime_audio=b"\0" * (65 << 20), seconds=1)  # over the 64 MiB limit
    with pytest.raises(grpc.RpcError) as err:
        list(pb_grpc.TokgenServiceStub(channel).Continue(huge, timeout=60))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    replies = list(
        pb_grpc.TokgenServiceStub(channel).Continue(
            pb.ContinueRequest(prime_audio=wav(tone[:800]), seconds=0.05), timeout=60
        )
    )
    assert replies[-1].WhichOneof("event") == "summary"


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_deadline_ends_the_call_and_its_engine_requests(served):
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    stub = pb_grpc.TokgenServiceStub(channel)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=30.0), timeout=1.0))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 10
    engine = priors[0].engine
    wait_until(lambda: servicer.admission.active == 0, "the expired call kept its slot")
    wait_until(lambda: engine.unfinished_requests() == 0, "the expired call left engine requests running")


def test_beyond_the_admission_limit_calls_are_refused_with_a_retry_hint(served, tone):
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    servicer.admission = Admission(max_active=1, max_queued=0)
    stub = pb_grpc.TokgenServiceStub(channel)
    long_call = stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=5.0), timeout=120)
    assert next(long_call).WhichOneof("event") == "chunk"  # running
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.05), timeout=60))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    assert rpc_status.from_call(err.value).details[0].Unpack(retry) and retry.retry_delay.seconds == 2
    assert priors[0].engine.unfinished_requests() > 0
    long_call.cancel()  # the client goes away: its slot and engine requests are freed at once
    wait_until(lambda: servicer.admission.active == 0, "the cancelled call kept its slot")
    wait_until(lambda: priors[0].engine.unfinished_requests() == 0, "the cancelled call left engine requests")
    replies = list(stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.05), timeout=60))
    assert replies[-1].WhichOneof("event") == "summary"


def test_api_keys_guard_every_call_but_health(loop_thread, engine, tiny_model_dir, monkeypatch, tmp_path):
    from tokgen.errors import TokgenError
    from tokgen.serve.auth import key_is_valid, load_api_keys

    (tmp_path / "keys").write_text("# ops\nkey-one-0123456789abcdef\n")
    monkeypatch.setenv("TOKGEN_API_KEYS", "key-two-0123456789abcdef")
    keys = load_api_keys(tmp_path / "keys")
    assert sorted(keys) == [b"key-one-0123456789abcdef", b"key-two-0123456789abcdef"]
    assert key_is_valid(b"key-two-0123456789abcdef", keys) and not key_is_valid(b"key-two", keys)
    assert not key_is_valid(None, keys)
    monkeypatch.setenv("TOKGEN_API_KEYS", "short")
    with pytest.raises(TokgenError, match="16 characters"):
        load_api_keys()

    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32)]

    async def start():
        server, servicer, health, port = build_server("127.0.0.1:0", Admission(2, 0), api_keys=keys)
        await server.start()
        await mark_ready(servicer, health, Generator(codec, priors))
        return server, port

    server, port = loop_thread.run(start())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TokgenServiceStub(channel)
            check = health_pb2_grpc.HealthStub(channel).Check
            assert check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
            tiny = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.05)
            for metadata in ((), (("x-api-key", "wrong-key-0123456789abcdef"),)):
                with pytest.raises(grpc.RpcError) as err:
                    stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as err:
                    list(stub.Continue(tiny, metadata=metadata))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            good = (("authorization", "Bearer key-one-0123456789abcdef"),)
            assert stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=good).sample_rate == 16000
            replies = list(stub.Continue(tiny, metadata=good))
            assert replies[-1].WhichOneof("event") == "summary"
    finally:
        loop_thread.run(server.stop(None))


def test_job_service_takes_the_same_keys_and_checks(loop_thread, engine, tiny_model_dir, redis_server):
    import redis.asyncio as aioredis

    from tokgen.jobs.queue import JobQueue, QueueConfig
    from tokgen.serve.jobs_service import JobServicer
    from tokgen.v1 import jobs_pb2 as jpb
    from tokgen.v1 import jobs_pb2_grpc as jpb_grpc

    codec = load_codec(tiny_model_dir)
    key = b"jobs-key-0123456789abcdef"

    async def start():
        queue = JobQueue(aioredis.Redis.from_url(redis_server.url), QueueConfig(prefix="svc"))
        jobs = JobServicer(queue)
        server, _, _, port = build_server("127.0.0.1:0", Admission(2, 0), api_keys=[key], jobs=jobs)
        await server.start()
        jobs.attach(Generator(codec, []))
        return server, port

    server, port = loop_thread.run(start())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = jpb_grpc.JobServiceStub(channel)
            submit = jpb.SubmitJobRequest(request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=1))
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(submit)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            good = (("x-api-key", key.decode()),)
            job = stub.SubmitJob(submit, metadata=good).job
            assert (
                job.state == jpb.JOB_STATE_QUEUED
                and stub.GetJob(jpb.GetJobRequest(job_id=job.job_id), metadata=good).job.job_id == job.job_id
            )
            bad = jpb.SubmitJobRequest(request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0))
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(bad, metadata=good)
            assert (
                err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "request.seconds" in err.value.details()
            )
            with pytest.raises(grpc.RpcError) as err:
                stub.GetJobResult(jpb.GetJobResultRequest(job_id=job.job_id), metadata=good)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # queued, no result yet
            cancelled = stub.CancelJob(jpb.CancelJobRequest(job_id=job.job_id), metadata=good).job
            assert cancelled.state == jpb.JOB_STATE_CANCELLED
    finally:
        loop_thread.run(server.stop(None))

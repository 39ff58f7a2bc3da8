"""The job API's shapes (issue 19, item 5), against a real Redis and a real gRPC server over
a socket: a result over 4 MiB (a render of over about two minutes) reaches a client that
receives at most 4 MiB a message, in chunks; jobs have resource names, Timestamps and a
google.rpc.Status once they end without a result; a page token is a cursor, so jobs
submitted or finished between pages neither repeat nor shift rows. Jobs are finished
through the real queue (claimed and succeeded or failed as a worker does), not rendered."""

from __future__ import annotations

import io
import json
import uuid

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf
from google.rpc import code_pb2

from tests.redis_cluster import ALSO_ON_CLUSTER
from tokgen.cli import main
from tokgen.client.jobs import ResultReader, fetch_result
from tokgen.errors import ServerError
from tokgen.jobs.queue import Cursor, JobQueue, QueueConfig
from tokgen.jobs.states import RetryPolicy
from tokgen.serve.admission import Admission
from tokgen.serve.jobs_service import CHUNK_BYTES, JobServicer, page_token
from tokgen.serve.server import build_server
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc

RATE = 16000
FOUR_MIB = 4 << 20
LIMITED = [("grpc.max_receive_message_length", FOUR_MIB)]  # Go's, Java's and grpcurl's default


@pytest.fixture
def served(loop_thread, redis_server):
    """A server with JobService (no models: jobs are queued and finished directly) on a
    queue of its own, and that queue; every dead job after one failure."""

    async def start():
        config = QueueConfig(prefix=f"jobapi{uuid.uuid4().hex[:8]}", policy=RetryPolicy(max_attempts=1))
        queue = JobQueue(aioredis.Redis.from_url(redis_server.url), config)
        server, _, _, port = build_server("127.0.0.1:0", Admission(2, 0), jobs=JobServicer(queue))
        await server.start()
        return server, queue, port

    server, queue, port = loop_thread.run(start())
    yield queue, f"127.0.0.1:{port}"
    loop_thread.run(server.stop(None))
    loop_thread.run(queue.r.aclose())


def wav(seconds: float) -> bytes:
    """A real 16-bit mono WAV at the shipped codec's rate, as a job's result is."""
    t = np.arange(int(seconds * RATE)) / RATE
    out = io.BytesIO()
    sf.write(out, 0.3 * np.sin(2 * np.pi * 220 * t), RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def finished(
    queue: JobQueue, audio: bytes = b"", codes: bytes = b"", error: str | None = None, retryable: bool = False
) -> str:
    """A job submitted and run to its end as a worker does: succeeded with ``audio`` and
    ``codes``, or (``error``) failed for good (``retryable``: dead, the fixture's queue
    retries nothing)."""
    job_id, _ = await queue.submit(b"request", "normal")
    claims = await queue.claim("w1", 1)
    assert [c.job.id for c in claims] == [job_id]
    if error is None:
        await queue.succeed(claims[0], "w1", audio, codes)
    else:
        await queue.fail(claims[0], "w1", error, retryable=retryable)
    return job_id


def test_a_150_s_result_is_fetched_by_a_client_receiving_at_most_4_mib(served, loop_thread):
    queue, address = served
    audio, codes = wav(150.0), np.random.default_rng(0).bytes(300_000)
    assert len(audio) + len(codes) > FOUR_MIB + 800_000
    big = loop_thread.run(finished(queue, audio, codes))
    small = loop_thread.run(finished(queue, wav(2.0), b"codes"))

    async def fetch():
        async with grpc.aio.insecure_channel(address, options=LIMITED) as channel:
            stub = jpb_grpc.JobServiceStub(channel)
            result = await fetch_result(stub, big)
            with pytest.raises(grpc.RpcError) as err:
                await stub.GetJobResult(jpb.GetJobResultRequest(job_id=big))
            unary = await stub.GetJobResult(jpb.GetJobResultRequest(name=f"jobs/{small}"))
            replies = [r async for r in stub.StreamJobResult(jpb.StreamJobResultRequest(name=f"jobs/{big}"))]
            return result, err.value, unary, replies

    result, refused, unary, replies = loop_thread.run(fetch())
    assert (result.audio, result.codes) == (audio, codes) and result.job.name == f"jobs/{big}"
    assert sf.info(io.BytesIO(result.audio)).duration == 150.0
    # GetJobResult says what to do instead of letting the client's limit refuse the reply.
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "StreamJobResult" in refused.details() and "4 MiB" in refused.details()
    assert unary.audio == wav(2.0) and unary.codes == b"codes"  # small results: one message still
    # The header, then the audio's 1 MiB chunks in order, then the codes'.
    assert replies[0].header.audio_size == len(audio) and replies[0].header.codes_size == len(codes)
    chunks = [r.chunk for r in replies[1:]]
    assert [(c.WhichOneof("data"), c.offset) for c in chunks] == [
        *(("audio", o) for o in range(0, len(audio), CHUNK_BYTES)),
        *(("codes", o) for o in range(0, len(codes), CHUNK_BYTES)),
    ]
    assert max(r.ByteSize() for r in replies) < CHUNK_BYTES + 64


def test_a_broken_result_stream_is_refused():
    """The client checks what it puts together: header first, chunks in place, every byte."""
    header = jpb.StreamJobResultResponse(header=jpb.JobResultHeader(audio_size=4, codes_size=1))

    def chunk(offset: int, **data: bytes) -> jpb.StreamJobResultResponse:
        return jpb.StreamJobResultResponse(chunk=jpb.JobResultChunk(offset=offset, **data))

    good = [header, chunk(0, audio=b"ab"), chunk(2, audio=b"cd"), chunk(0, codes=b"c")]
    reader = ResultReader()
    for reply in good:
        reader.add(reply)
    assert (reader.result().audio, reader.result().codes) == (b"abcd", b"c")
    for replies, what in (
        (good[1:], "header must come first"),
        ([header, header], "header must come first, and once"),
        ([header, chunk(2, audio=b"cd")], "at byte 2, expected 0"),
        ([header, chunk(0, audio=b"abcde")], "past the 4 bytes"),
        ([header, chunk(0)], "without data"),
        (good[:3], "0 bytes of codes, 1 announced"),
    ):
        reader = ResultReader()
        with pytest.raises(ServerError, match=what) as err:
            for reply in replies:
                reader.add(reply)
            reader.result()
        assert err.value.status == "DATA_LOSS"


def test_jobs_have_names_times_and_statuses(served, loop_thread):
    queue, address = served
    done = loop_thread.run(finished(queue, b"a", b"c"))
    failed = loop_thread.run(finished(queue, error="QueuedJobError: unreadable prime"))
    dead = loop_thread.run(finished(queue, error="RuntimeError: engine gone", retryable=True))
    cancelled, _ = loop_thread.run(queue.submit(b"request", "normal"))
    loop_thread.run(queue.cancel(cancelled))
    with grpc.insecure_channel(address) as channel:
        stub = jpb_grpc.JobServiceStub(channel)
        jobs = {
            j: stub.GetJob(jpb.GetJobRequest(name=f"jobs/{j}")).job for j in (done, failed, dead, cancelled)
        }
        for name, field in (("job/x", "name"), ("jobs/", "name"), ("jobs/a/b", "name"), ("", "job_id")):
            with pytest.raises(grpc.RpcError) as err:
                stub.GetJob(jpb.GetJobRequest(name=name))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith(f"{field}: ")
        with pytest.raises(grpc.RpcError) as err:
            stub.CancelJob(jpb.CancelJobRequest(job_id=done, name=f"jobs/{done}"))
        assert err.value.details() == "name: give job_id or name, not both"
        with pytest.raises(grpc.RpcError) as err:
            list(stub.WatchJob(jpb.WatchJobRequest(name="jobs/" + "f" * 32)))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    record = loop_thread.run(queue.get(done))
    job = jobs[done]
    assert job.name == f"jobs/{done}" and job.job_id == done
    assert job.create_time.ToMicroseconds() == round(record.created_at * 1e6)
    assert job.update_time.ToMicroseconds() == round(record.updated_at * 1e6)
    assert job.update_time.ToDatetime() >= job.create_time.ToDatetime()
    assert job.created_at == record.created_at  # the deprecated fields stay
    assert not job.HasField("status")  # succeeded: nothing went wrong
    statuses = {j: (jobs[j].status.code, jobs[j].status.message) for j in (failed, dead, cancelled)}
    assert statuses == {
        failed: (code_pb2.INVALID_ARGUMENT, "QueuedJobError: unreadable prime"),
        dead: (code_pb2.INTERNAL, "RuntimeError: engine gone"),
        cancelled: (code_pb2.CANCELLED, "cancelled"),
    }
    assert [jobs[j].state for j in (failed, dead)] == [jpb.JOB_STATE_FAILED, jpb.JOB_STATE_DEAD]


def listing(
    stub, size: int, state: int = jpb.JOB_STATE_UNSPECIFIED, token: str = ""
) -> tuple[list[str], str]:
    page = stub.ListJobs(jpb.ListJobsRequest(state=state, page_size=size, page_token=token))
    return [j.job_id for j in page.jobs], page.next_page_token


def test_pages_neither_repeat_nor_shift_when_jobs_arrive_between_them(served, loop_thread):
    queue, address = served
    submit = lambda: loop_thread.run(queue.submit(b"request", "normal"))[0]  # noqa: E731
    older = [submit() for _ in range(5)]
    with grpc.insecure_channel(address) as channel:
        stub = jpb_grpc.JobServiceStub(channel)
        first, token = listing(stub, 2)
        newer = [submit() for _ in range(3)]  # an offset would now show first[1] again
        second, token = listing(stub, 2, token=token)
        loop_thread.run(queue.cancel(older[0]))  # leaves QUEUED, stays in the listing of all
        third, end = listing(stub, 2, token=token)
        assert first + second + third == older[::-1] and end == ""
        assert listing(stub, 3)[0] == newer[::-1]  # a listing from the start sees them first
        # A state's listing: jobs leaving the state between pages shift nothing either.
        queued, token = listing(stub, 3, jpb.JOB_STATE_QUEUED)
        assert queued == [*newer[::-1]]
        loop_thread.run(queue.cancel(newer[0]))
        rest, end = listing(stub, 4, jpb.JOB_STATE_QUEUED, token)
        assert rest == older[:0:-1] and end == ""
        # Tokens are the server's own, for the listing they came from.
        for bad in ("2", "abc", "=" * 10, token[:-4], page_token(Cursor(1.0, "x"), None) + "x" * 400):
            with pytest.raises(grpc.RpcError) as err:
                listing(stub, 3, jpb.JOB_STATE_QUEUED, bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("page_token: ")
        with pytest.raises(grpc.RpcError) as err:
            listing(stub, 3, jpb.JOB_STATE_CANCELLED, token)  # a QUEUED listing's token
        assert err.value.details() == "page_token: not a token from ListJobs for this state"


@ALSO_ON_CLUSTER
def test_a_cursor_between_jobs_submitted_at_the_same_time(run):
    """Jobs with one submission time (one index score) are ordered by id; a page ending
    among them goes on after its last id, without a repeat or a gap."""

    async def scenario(q: JobQueue):
        ids = [(await q.submit(b"r", "normal"))[0] for _ in range(5)]
        await q.r.zadd(q._index(None), {job_id: 1000.5 for job_id in ids})
        seen, after = [], None
        while True:
            jobs, after = await q.list_jobs(None, after, 2)
            seen += [j.id for j in jobs]
            if after is None:
                return ids, seen

    ids, seen = run(scenario)
    assert seen == sorted(ids, reverse=True)


def test_jobs_fetch_streams_and_follows_the_out_extension(served, loop_thread, tmp_path, capsys):
    queue, address = served
    audio, codes = wav(150.0), b"npz bytes"
    job_id = loop_thread.run(finished(queue, audio, codes))
    out, codes_out = tmp_path / "job.flac", tmp_path / "job.npz"
    argv = ["jobs", "fetch", job_id, "--server", address, "--out", str(out), "--codes-out", str(codes_out)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"job_id": job_id, "out": str(out), "codes": str(codes_out)}
    info = sf.info(str(out))
    assert (info.format, info.frames, info.samplerate) == ("FLAC", 150 * RATE, RATE)
    assert codes_out.read_bytes() == codes

"""Python clients for tokgen's gRPC service: ``TokgenClient`` (synchronous, numpy in and
out) and ``AsyncTokgenClient`` (asyncio, streams into files; ``tokgen client``).

    with TokgenClient("127.0.0.1:50051") as client:
        audio = client.continue_audio("prime.wav", seconds=10)   # float32 at the codec's rate
        audio = client.continue_audio(prime_array, 44100, seconds=10, sample_rate=44100)
        for piece in client.stream_audio("prime.wav", seconds=10, num_samples=2):
            play(piece.sample_index, piece.audio)
        job = client.submit_job("prime.wav", seconds=120)          # a batch render, queued
        audio, rate = client.job_audio(client.wait_job(job.job_id).job_id)

    async with AsyncTokgenClient("127.0.0.1:50051") as client:
        request = continue_request(prime=Path("prime.wav"), seconds=10)
        result = await client.continue_to_file(request, Path("out.wav"))
        print(result.time_to_first_audio_s)

``TokgenClient`` retries a call the server refused for now (``RESOURCE_EXHAUSTED`` with a
``RetryInfo``: its admission is full) after the delay the server asks for, a few times.
``continue_to_file`` writes the audio as its chunks arrive (to ``OUT.part``, renamed to
``OUT`` once the stream completed), so a long continuation never sits in memory and a
failed one never leaves a truncated file that looks finished.
"""

from __future__ import annotations

import io
import ipaddress
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import soundfile as sf
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tokgen.audio import numbered_paths, output_format
from tokgen.errors import ServerError, TokgenError
from tokgen.names import MODES, PRIORITIES
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from tokgen.client.jobs import JobResult  # jobs imports this module

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]  # a 600 s job's WAV is 19 MB


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the server: ``ca`` to trust (None: the system's roots); ``cert`` and ``key``
    for a client certificate when the server requires mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise TokgenError("a TLS client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca), private_key=_read(self.key), certificate_chain=_read(self.cert)
        )


@dataclass(frozen=True)
class ContinueResult:
    out: Path  # the first sample's file
    outs: list[Path]  # every sample's (``numbered_paths``)
    audio_seconds: float  # of each sample
    time_to_first_audio_s: float  # from the call to its first audio chunk, as the client saw it
    total_s: float
    summary: pb.Summary


def continue_request(
    *,
    seconds: float,
    prime: Path | bytes | None = None,
    codes: Path | bytes | None = None,
    mode: str = "primed",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    key_guidance: float | None = None,
    instrument_guidance: float | None = None,
    priority: str = "normal",
    num_samples: int = 1,
    sample_rate: int | None = None,
    loudness_lufs: float | None = None,
) -> pb.ContinueRequest:
    """A ``ContinueRequest`` from local files (or their bytes). The server validates every
    field; this only reads the files and maps names to enum values. Without ``seed`` the
    server draws one and reports it (``Summary.seed``, ``Job.seed``); sample i of
    ``num_samples`` is sampled with seed + i (``Summary.seeds``)."""
    if mode not in MODES or priority not in PRIORITIES:
        raise TokgenError(f"mode must be one of {list(MODES)} and priority one of {list(PRIORITIES)}")
    request = pb.ContinueRequest(
        seconds=seconds,
        mode=MODES[mode],
        priority=PRIORITIES[priority],
        sampling=pb.SamplingParams(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            key_guidance=key_guidance,
            instrument_guidance=instrument_guidance,
        ),
        num_samples=num_samples,
        sample_rate=sample_rate or 0,
        loudness_lufs=loudness_lufs,
    )  # seed, the guidances and loudness_lufs left None leave those fields unset
    if prime is not None:
        request.prime_audio = prime if isinstance(prime, bytes) else _read(prime) or b""
    if codes is not None:
        request.codes = codes if isinstance(codes, bytes) else _read(codes) or b""
    return request


def prime_bytes(prime: Any, sample_rate: int | None) -> bytes:
    """A prime for the wire: a file's bytes (a path: any format the server reads), or an
    array of float samples, (samples,) or (channels, samples) (mixed to mono), at
    ``sample_rate``, as a lossless float WAV."""
    if isinstance(prime, bytes):
        return prime
    if isinstance(prime, str | Path):
        return _read(Path(prime)) or b""
    audio = prime.detach().cpu().numpy() if hasattr(prime, "detach") else np.asarray(prime)
    if sample_rate is None:
        raise TokgenError("a prime given as an array needs its sample rate (prime_sample_rate)")
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def audio_request(
    prime: Any, prime_sample_rate: int | None, seconds: float, codes: Path | bytes | None, options: dict
) -> pb.ContinueRequest:
    """``continue_request`` from what ``TokgenClient`` takes: a prime as a path, bytes or an array."""
    prime_data = None if prime is None else prime_bytes(prime, prime_sample_rate)
    return continue_request(seconds=seconds, prime=prime_data, codes=codes, **options)


def is_local(server: str) -> bool:
    """Whether a gRPC target stays on this machine: a unix socket, ``localhost`` or a
    loopback address (``127.0.0.1:50051``, ``[::1]:50051``, ``dns:///localhost:50051``)."""
    target = server.strip()
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        target = target.removeprefix(scheme)
    host = target.split(",")[0]  # ipv4:a,b lists addresses: the first tells
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]  # host:port (an IPv6 address without brackets has several)
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_plaintext_key(server: str, api_key: str | None, tls: TlsOptions | None) -> None:
    if api_key and tls is None and not is_local(server):
        log.warning(
            "sending an API key to %s without TLS: anyone on the network path can read it; "
            "use --tls (TlsOptions) unless a trusted network or mesh encrypts the traffic",
            server,
        )


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", api_key),) if api_key else ()


@dataclass(frozen=True)
class AudioPiece:
    """A piece of one sample's audio as it arrived: float32 mono in [-1, 1]."""

    sample_index: int
    offset_seconds: float  # from the start of its sample's continuation
    audio: np.ndarray
    sample_rate: int


def retry_delay(err: grpc.RpcError) -> float | None:
    """Seconds the server asked a refused call to wait (its ``RetryInfo``), if it was
    refused for now (``RESOURCE_EXHAUSTED``) and said when to retry; else None."""
    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


class TokgenClient:
    """A synchronous client of ``TokgenService``: audio in as arrays or files, numpy out.
    A call the server refuses for now (``RESOURCE_EXHAUSTED`` with a ``RetryInfo``: its
    admission is full) is retried after the delay the server gives (at most
    ``max_retry_delay_s``), up to ``retries`` times and within the call's ``timeout``; any
    other error raises ``ServerError`` (its ``status`` names the gRPC code) at once."""

    def __init__(
        self,
        server: str,
        api_key: str | None = None,
        tls: TlsOptions | None = None,
        retries: int = 3,
        max_retry_delay_s: float = 30.0,
    ):
        _warn_plaintext_key(server, api_key, tls)
        if tls is None:
            self.channel = grpc.insecure_channel(server, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.secure_channel(server, tls.credentials(), options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.TokgenServiceStub(self.channel)
        self.jobs = jpb_grpc.JobServiceStub(self.channel)
        self.metadata = _metadata(api_key)
        self.retries, self.max_retry_delay_s = retries, max_retry_delay_s
        self.last_summary: pb.Summary | None = None  # of the last stream that completed

    def __enter__(self) -> TokgenClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def model_info(self, timeout: float | None = 30.0) -> pb.GetModelInfoResponse:
        try:
            return self.stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as err:
            raise server_error(err) from err

    def continue_audio(
        self, prime: Any = None, prime_sample_rate: int | None = None, seconds: float = 10.0, **options: Any
    ) -> np.ndarray:
        """The continuation of ``prime`` (a path, a file's bytes, or an array of float
        samples at ``prime_sample_rate``, (samples,) or (channels, samples)) as float32
        mono at the output's rate (``sample_rate=``; default the codec's); with
        ``num_samples`` N > 1 an (N, samples) array, row i sampled with seed + i. Options
        as ``continue_request`` (``mode``, ``codes``, ``seed``, ``temperature``, ``top_k``,
        ``top_p``, ``priority``, ``sample_rate``, ``loudness_lufs``) and ``timeout``. The
        seeds used: ``last_summary.seeds``."""
        pieces: dict[int, list[np.ndarray]] = {}
        for piece in self.stream_audio(prime, prime_sample_rate, seconds, **options):
            pieces.setdefault(piece.sample_index, []).append(piece.audio)
        samples = [np.concatenate(pieces.get(i, [np.zeros(0, np.float32)])) for i in range(len(pieces) or 1)]
        return samples[0] if len(samples) == 1 else np.stack(samples)

    def stream_audio(
        self,
        prime: Any = None,
        prime_sample_rate: int | None = None,
        seconds: float = 10.0,
        *,
        codes: Path | bytes | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Iterator[AudioPiece]:
        """``continue_audio``'s pieces as they arrive (several samples' interleave: each
        piece names its sample). Stopping early cancels the call on the server."""
        request = audio_request(prime, prime_sample_rate, seconds, codes, options)
        for reply in self.stream(request, timeout):
            if reply.HasField("chunk"):
                chunk = reply.chunk
                audio = np.frombuffer(chunk.pcm, "<i2").astype(np.float32) / 32767.0
                yield AudioPiece(chunk.sample_index, chunk.offset_seconds, audio, chunk.format.sample_rate)

    def stream(
        self, request: pb.ContinueRequest, timeout: float | None = None
    ) -> Iterator[pb.ContinueResponse]:
        """The raw replies (audio chunks, then the summary), retrying a call refused for
        now as the class says. Stopping early cancels the call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = self.stub.Continue(request, metadata=self.metadata, timeout=left)
            try:
                first = next(call)  # a refusal comes before any reply
            except StopIteration:
                return
            except grpc.RpcError as err:
                attempt = self._wait_to_retry(err, attempt, deadline)
                continue
            try:
                for reply in itertools.chain([first], call):
                    if reply.HasField("summary"):
                        self.last_summary = reply.summary
                    yield reply
            except grpc.RpcError as err:
                raise server_error(err) from err
            finally:
                call.cancel()
            return

    def _wait_to_retry(self, err: grpc.RpcError, attempt: int, deadline: float | None) -> int:
        """Sleep as long as a refused call was asked to wait and return the next attempt's
        number; raise ``ServerError`` where it may not be retried (see the class)."""
        delay = retry_delay(err)
        if delay is None or attempt >= self.retries:
            raise server_error(err) from err
        delay = min(delay, self.max_retry_delay_s)
        if deadline is not None and time.monotonic() + delay >= deadline:
            raise server_error(err) from err
        log.info("server busy; retrying in %.1f s (retry %d of %d)", delay, attempt + 1, self.retries)
        time.sleep(delay)
        return attempt + 1

    def _unary(self, call: Callable[[float | None], Any], timeout: float | None) -> Any:
        """One unary call, retried as the class says."""
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return call(left)
            except grpc.RpcError as err:
                attempt = self._wait_to_retry(err, attempt, deadline)

    # -- batch jobs (JobService) ------------------------------------------------------------
    def submit_job(
        self,
        prime: Any = None,
        prime_sample_rate: int | None = None,
        seconds: float = 10.0,
        *,
        codes: Path | bytes | None = None,
        idempotency_key: str = "",
        timeout: float | None = 60.0,
        **options: Any,
    ) -> jpb.Job:
        """Queue a render (options as ``continue_audio``); the job it made, or the one this
        ``idempotency_key`` made before. A full queue is retried as the class says."""
        request = audio_request(prime, prime_sample_rate, seconds, codes, options)
        submit = jpb.SubmitJobRequest(request=request, idempotency_key=idempotency_key)
        return self._unary(
            lambda left: self.jobs.SubmitJob(submit, metadata=self.metadata, timeout=left), timeout
        ).job

    def job(self, job_id: str, timeout: float | None = 30.0) -> jpb.Job:
        request = jpb.GetJobRequest(job_id=job_id)
        return self._unary(
            lambda left: self.jobs.GetJob(request, metadata=self.metadata, timeout=left), timeout
        ).job

    def cancel_job(self, job_id: str, timeout: float | None = 30.0) -> jpb.Job:
        request = jpb.CancelJobRequest(job_id=job_id)
        return self._unary(
            lambda left: self.jobs.CancelJob(request, metadata=self.metadata, timeout=left), timeout
        ).job

    def wait_job(self, job_id: str, timeout: float | None = None) -> jpb.Job:
        """The job once it has ended (succeeded, failed, cancelled or dead), following it
        with WatchJob."""
        try:
            for update in self.jobs.WatchJob(
                jpb.WatchJobRequest(job_id=job_id), metadata=self.metadata, timeout=timeout
            ):
                if update.job.state in ENDED_STATES:
                    return update.job
        except grpc.RpcError as err:
            raise server_error(err) from err
        return self.job(job_id)  # the watch ended with the job (the server closes it at the end)

    def job_result(self, job_id: str, timeout: float | None = None) -> JobResult:
        """A succeeded job's WAV and codes file, of any length: fetched in chunks
        (StreamJobResult), so no message exceeds what a channel receives by default."""
        from tokgen.client.jobs import ResultReader

        reader = ResultReader()
        try:
            for reply in self.jobs.StreamJobResult(
                jpb.StreamJobResultRequest(job_id=job_id), metadata=self.metadata, timeout=timeout
            ):
                reader.add(reply)
        except grpc.RpcError as err:
            raise server_error(err) from err
        return reader.result()

    def job_audio(self, job_id: str, timeout: float | None = None) -> tuple[np.ndarray, int]:
        """A succeeded job's audio as float32 mono and its sample rate."""
        audio, rate = sf.read(io.BytesIO(self.job_result(job_id, timeout).audio), dtype="float32")
        return audio, rate


ENDED_STATES = frozenset(
    {jpb.JOB_STATE_SUCCEEDED, jpb.JOB_STATE_FAILED, jpb.JOB_STATE_CANCELLED, jpb.JOB_STATE_DEAD}
)


class AsyncTokgenClient:
    """The asyncio client (``tokgen client``, ``tokgen jobs``, the benchmarks): the raw
    streams of both services, and continuations streamed into files."""

    def __init__(self, server: str, api_key: str | None = None, tls: TlsOptions | None = None):
        _warn_plaintext_key(server, api_key, tls)
        if tls is None:
            self.channel = grpc.aio.insecure_channel(server, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.secure_channel(server, tls.credentials(), options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.TokgenServiceStub(self.channel)
        self.jobs = jpb_grpc.JobServiceStub(self.channel)
        self.metadata = _metadata(api_key)

    async def __aenter__(self) -> AsyncTokgenClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.channel.close()

    async def model_info(self, timeout: float | None = 30.0) -> pb.GetModelInfoResponse:
        return await self.stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=self.metadata, timeout=timeout)

    async def stream(
        self, request: pb.ContinueRequest, timeout: float | None = None
    ) -> AsyncIterator[pb.ContinueResponse]:
        """The raw reply stream: audio chunks, then the summary. Breaking out of the loop
        cancels the call, which stops the generation on the server at once."""
        call = self.stub.Continue(request, metadata=self.metadata, timeout=timeout)
        try:
            async for reply in call:
                yield reply
        finally:
            call.cancel()

    async def continue_to_file(
        self, request: pb.ContinueRequest, out: Path, timeout: float | None = None
    ) -> ContinueResult:
        """Stream a continuation into ``out`` (.wav, .flac, .ogg, .opus or .mp3) as its
        chunks arrive; with several samples, sample i into ``numbered_paths(out, n)[i]``
        (``out_0.wav``, ``out_1.wav``, ...)."""
        fmt, subtype = output_format(out)
        outs = numbered_paths(out, request.num_samples or 1)
        parts = [o.with_name(o.name + ".part") for o in outs]
        started = time.perf_counter()
        first: float | None = None
        writers: dict[int, sf.SoundFile] = {}
        samples = 0
        try:
            async for reply in self.stream(request, timeout):
                if reply.WhichOneof("event") == "summary":
                    if len(writers) != len(outs):  # a valid stream sends every sample (seconds > 0)
                        raise TokgenError(f"the server sent {len(writers)} of {len(outs)} samples")
                    for i, writer in writers.items():
                        writer.close()
                        os.replace(parts[i], outs[i])
                    rate = writers[0].samplerate
                    total = time.perf_counter() - started
                    return ContinueResult(outs[0], outs, samples / rate, first or 0.0, total, reply.summary)
                chunk = reply.chunk
                if first is None:
                    first = time.perf_counter() - started
                    if chunk.format.encoding != "s16le" or chunk.format.channels != 1:
                        raise TokgenError(f"unexpected audio format {chunk.format}")
                if chunk.sample_index >= len(outs):
                    raise TokgenError(f"the server sent sample {chunk.sample_index} of {len(outs)}")
                writer = writers.get(chunk.sample_index)
                if writer is None:
                    part = parts[chunk.sample_index]
                    part.parent.mkdir(parents=True, exist_ok=True)
                    writer = sf.SoundFile(part, "w", chunk.format.sample_rate, 1, subtype, format=fmt)
                    writers[chunk.sample_index] = writer
                pcm = np.frombuffer(chunk.pcm, "<i2")
                writer.write(pcm)
                writer.flush()
                if chunk.sample_index == 0:
                    samples += pcm.size
            raise TokgenError("the stream ended without a summary")
        except grpc.aio.AioRpcError as err:
            raise server_error(err) from None
        finally:
            for writer in writers.values():
                if not writer.closed:
                    writer.close()
            for part in parts:
                part.unlink(missing_ok=True)


def describe_error(err: grpc.RpcError) -> str:
    """One line a user can act on: the code and message (which names the field at fault),
    and the server's id of the call, which its operator finds in the access log."""
    text = f"{err.code().name}: {err.details()}"
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        text += " (is `tokgen serve` running there, and ready?)"
    if rid := request_id_of(err):
        text += f" [request id {rid}]"
    return text


def request_id_of(call: grpc.RpcError) -> str | None:
    """The ``x-request-id`` the server sent back for a call (None if it never answered).
    The server sends it as initial metadata; when a call fails before any reply, gRPC may
    deliver the two as one "trailers-only" response, the id then among the trailers."""
    for part in ("initial_metadata", "trailing_metadata"):
        metadata = getattr(call, part, None)
        for key, value in (metadata() if metadata else None) or ():
            if key == "x-request-id" and isinstance(value, str):
                return value
    return None


def server_error(err: grpc.RpcError) -> ServerError:
    """``err`` as the ``ServerError`` the command line reports (its status names the code,
    which decides the exit status)."""
    return ServerError(describe_error(err), err.code().name)


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TokgenError(f"cannot read {path}: {exc.strerror}") from None

"""A small Python client for tokgen's gRPC service (and ``tokgen client``).

    async with TokgenClient("127.0.0.1:50051") as client:
        request = continue_request(prime=Path("prime.wav"), seconds=10)
        result = await client.continue_to_file(request, Path("out.wav"))
        print(result.time_to_first_audio_s)

The audio is written as its chunks arrive (to ``OUT.part``, renamed to ``OUT`` once the
stream completed), so a long continuation never sits in memory and a failed one never
leaves a truncated file that looks finished.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from tokgen.audio import output_format
from tokgen.errors import ServerError, TokgenError
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MODES = {
    "primed": pb.MODE_PRIMED,
    "ancestral": pb.MODE_ANCESTRAL,
    "continue": pb.MODE_CONTINUE,
    "upsample": pb.MODE_UPSAMPLE,
}
PRIORITIES = {"high": pb.PRIORITY_HIGH, "normal": pb.PRIORITY_NORMAL, "low": pb.PRIORITY_LOW}


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
    out: Path
    audio_seconds: float
    time_to_first_audio_s: float  # from the call to its first audio chunk, as the client saw it
    total_s: float
    summary: pb.Summary


def continue_request(
    *,
    seconds: float,
    prime: Path | None = None,
    codes: Path | None = None,
    mode: str = "primed",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    priority: str = "normal",
) -> pb.ContinueRequest:
    """A ``ContinueRequest`` from local files. The server validates every field; this only
    reads the files and maps names to enum values. Without ``seed`` the server draws one
    and reports it (``Summary.seed``, ``Job.seed``)."""
    if mode not in MODES or priority not in PRIORITIES:
        raise TokgenError(f"mode must be one of {list(MODES)} and priority one of {list(PRIORITIES)}")
    request = pb.ContinueRequest(
        seconds=seconds,
        mode=MODES[mode],
        priority=PRIORITIES[priority],
        sampling=pb.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed),
    )  # seed=None leaves the field unset
    if prime is not None:
        request.prime_audio = _read(prime) or b""
    if codes is not None:
        request.codes = _read(codes) or b""
    return request


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


class TokgenClient:
    def __init__(self, server: str, api_key: str | None = None, tls: TlsOptions | None = None):
        options = [("grpc.max_receive_message_length", 64 << 20)]  # a 600 s job's WAV is 19 MB
        if api_key and tls is None and not is_local(server):
            log.warning(
                "sending an API key to %s without TLS: anyone on the network path can read it; "
                "use --tls (TlsOptions) unless a trusted network or mesh encrypts the traffic",
                server,
            )
        if tls is None:
            self.channel = grpc.aio.insecure_channel(server, options=options)
        else:
            self.channel = grpc.aio.secure_channel(server, tls.credentials(), options=options)
        self.stub = pb_grpc.TokgenServiceStub(self.channel)
        self.jobs = jpb_grpc.JobServiceStub(self.channel)
        self.metadata = (("x-api-key", api_key),) if api_key else ()

    async def __aenter__(self) -> TokgenClient:
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
        chunks arrive."""
        fmt, subtype = output_format(out)
        part = out.with_name(out.name + ".part")
        started = time.perf_counter()
        first: float | None = None
        writer: sf.SoundFile | None = None
        samples = 0
        try:
            async for reply in self.stream(request, timeout):
                if reply.WhichOneof("event") == "summary":
                    if writer is None:  # a valid stream of no audio (cannot happen with seconds > 0)
                        raise TokgenError("the server sent no audio")
                    writer.close()
                    os.replace(part, out)
                    return ContinueResult(
                        out,
                        samples / writer.samplerate,
                        first or 0.0,
                        time.perf_counter() - started,
                        reply.summary,
                    )
                chunk = reply.chunk
                if first is None:
                    first = time.perf_counter() - started
                    if chunk.format.encoding != "s16le" or chunk.format.channels != 1:
                        raise TokgenError(f"unexpected audio format {chunk.format}")
                    part.parent.mkdir(parents=True, exist_ok=True)
                    writer = sf.SoundFile(part, "w", chunk.format.sample_rate, 1, subtype, format=fmt)
                assert writer is not None
                pcm = np.frombuffer(chunk.pcm, "<i2")
                writer.write(pcm)
                writer.flush()
                samples += pcm.size
            raise TokgenError("the stream ended without a summary")
        except grpc.aio.AioRpcError as err:
            raise server_error(err) from None
        finally:
            if writer is not None and not writer.closed:
                writer.close()
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

"""The HTTP/JSON API and the web page of ``tokgen serve --http-port``.

Thin on purpose: an HTTP request is turned into the gRPC request message it stands for and
served by the very same servicer method (``TokgenServicer.Continue``, ``JobServicer.SubmitJob``,
...), in the same process and event loop as the gRPC server: same ``Generator``, admission,
job queue, API keys and metrics, so validation, admission, tenancy and idempotency cannot
differ between the two transports (in-process transcoding, as grpc-gateway does it over a
socket). When a servicer aborts a call, ``HttpCall`` (the one part of a gRPC call context
the servicers use) raises ``CallAborted``, which becomes the matching HTTP status and a
JSON body ``{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": ...}}``
(plus ``field``, named as in the form, when one field is wrong).

    GET    /                     the page (``serve/web/index.html``: no network but this server)
    GET    /healthz              200 {"status": "serving"} once the models are loaded, else 503
    POST   /v1/continuations     multipart form -> the audio, streamed while it is generated
                                 (num_samples > 1: a zip of one file per sample, once all are done)
    POST   /v1/jobs              the same form (+ priority, idempotency_key) -> the queued job
    GET    /v1/jobs              the caller's jobs (?state=&page_size=&page_token=)
    GET    /v1/jobs/{id}         one job: state, progress
    GET    /v1/jobs/{id}/audio   its result (?format=wav|flac|ogg|opus|mp3)
    DELETE /v1/jobs/{id}         cancel it

With API keys configured, every ``/v1`` request presents one (``x-api-key: KEY`` or
``Authorization: Bearer KEY``), checked before its body is read: a request without a valid
key gets 401 and its bytes are never parsed. Bodies are bounded by ``--max-request-bytes``
(413) as they arrive, whatever ``Content-Length`` says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import math
import re
import secrets
import socket
import ssl
import time
import zipfile
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
import soundfile as sf
import uvicorn
from google.rpc import error_details_pb2, status_pb2
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tokgen.audio import encode_audio, load_audio
from tokgen.errors import TokgenError
from tokgen.generation.output import output_samples
from tokgen.generation.spec import FieldError
from tokgen.logs import REQUEST_ID
from tokgen.monitoring import metrics
from tokgen.names import MODES, PRIORITIES, job_dict
from tokgen.serve.access_log import REQUEST_ID_KEY, log_call, request_id
from tokgen.serve.audio_stream import CONTENT_TYPES, FORMATS, StreamEncoder
from tokgen.serve.auth import ANONYMOUS_CALLER, DENIED, Caller, act_as, identify, presented_key
from tokgen.serve.jobs_service import MAX_IDEMPOTENCY_KEY, JobServicer
from tokgen.serve.security import TlsFiles
from tokgen.serve.service import RETRY_AFTER_S, TokgenServicer
from tokgen.settings import host_port
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import tokgen_pb2 as pb

# gRPC status -> HTTP status, as Google's HTTP mapping of google.rpc.Code does it (a job
# not finished yet is a conflict with its state: 409).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# The request's fields as the form names them (gRPC names on the left; a SubmitJob's
# are under "request.").
FORM_FIELDS = {
    "prime_audio": "prime",
    "sampling.temperature": "temperature",
    "sampling.top_k": "top_k",
    "sampling.top_p": "top_p",
    "sampling.seed": "seed",
    "sampling.key_guidance": "key_guidance",
    "sampling.instrument_guidance": "instrument_guidance",
}
FORM_OVERHEAD = 64 << 10  # multipart boundaries, part headers and the small fields
T = TypeVar("T")
SEED_BITS = 62  # a fresh seed when none is given: what the gRPC spec and `tokgen generate` draw


class CallAborted(Exception):
    """A call that ends with an error status (a gRPC code: the servicers' own words)."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the request is larger than this server's limit of {limit} bytes")


class HttpCall:
    """What the gRPC servicers use of their call's context, for a call that came over HTTP:
    ``abort`` and ``abort_with_status`` raise ``CallAborted`` (as grpc's raise to end the
    call), naming the field of a ``BadRequest`` detail the way the form does."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise CallAborted(code, details)

    async def abort_with_status(self, status: grpc.Status) -> None:
        violation = field_violation(status)
        if violation is None:
            raise CallAborted(status.code, status.details)
        field, description = violation
        raise CallAborted(status.code, f"{field}: {description}", field)


def field_violation(status: grpc.Status) -> tuple[str, str] | None:
    """The first field a status' ``BadRequest`` detail names, as the form names it."""
    for key, value in status.trailing_metadata or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad) and bad.field_violations:
                violation = bad.field_violations[0]
                name = violation.field.removeprefix("request.")
                # the form calls the prime "prime" (in the description too: "needs prime_audio")
                return FORM_FIELDS.get(name, name), violation.description.replace("prime_audio", "prime")
    return None


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": status, "status": code, "message": message}
    if field is not None:
        body["field"] = field
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# -- the form: text fields and files into the gRPC request ----------------------------------
def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FieldError(name, "must be a text field, not a file")
    return value


def _float(form: FormData, name: str) -> float | None:
    """A number field, or None when absent; its range is the spec's to check."""
    text = _text(form, name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise FieldError(name, f"must be a number, got {text[:40]!r}") from None


def _int(form: FormData, name: str, high: int) -> int | None:
    """A whole number field in [0, high) (what its wire type holds), or None when absent."""
    text = _text(form, name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise FieldError(name, f"must be a whole number, got {text[:40]!r}") from None
    if not 0 <= value < high:
        raise FieldError(name, f"must be in [0, {high}), got {text[:40]}")
    return value


def _choice(form: FormData, name: str, choices: Mapping[str, T]) -> T | None:
    text = _text(form, name)
    if text is None:
        return None
    if text not in choices:
        raise FieldError(name, f"unknown {name} {text[:40]!r}; use one of {', '.join(choices)}")
    return choices[text]


async def _file(form: FormData, name: str, limit: int) -> bytes | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, UploadFile):
        raise FieldError(name, "must be a file upload (multipart/form-data)")
    if value.size is not None and value.size > limit:
        raise TooLarge(limit)
    return await value.read()


async def continue_request(form: FormData, max_bytes: int) -> pb.ContinueRequest:
    """The ``ContinueRequest`` a form stands for. Only the form's syntax is checked here
    (numbers are numbers, names are known); the servicer validates the request as it does
    every gRPC one (and, as there, a request without a seed gets a fresh one)."""
    request = pb.ContinueRequest()
    prime, codes = await _file(form, "prime", max_bytes), await _file(form, "codes", max_bytes)
    if prime is not None:
        request.prime_audio = prime
    if codes is not None:
        request.codes = codes
    if (mode := _choice(form, "mode", MODES)) is not None:
        request.mode = mode
    if (priority := _choice(form, "priority", PRIORITIES)) is not None:
        request.priority = priority
    if (seconds := _float(form, "seconds")) is not None:
        request.seconds = seconds
    if (temperature := _float(form, "temperature")) is not None:
        request.sampling.temperature = temperature
    if (top_p := _float(form, "top_p")) is not None:
        request.sampling.top_p = top_p
    if (top_k := _int(form, "top_k", 2**32)) is not None:
        request.sampling.top_k = top_k
    if (seed := _int(form, "seed", 2**63)) is not None:
        request.sampling.seed = seed
    if (key_guidance := _float(form, "key_guidance")) is not None:
        request.sampling.key_guidance = key_guidance
    if (instrument_guidance := _float(form, "instrument_guidance")) is not None:
        request.sampling.instrument_guidance = instrument_guidance
    if (num_samples := _int(form, "num_samples", 2**32)) is not None:
        request.num_samples = num_samples
    if (sample_rate := _int(form, "sample_rate", 2**32)) is not None:
        request.sample_rate = sample_rate
    if (loudness := _float(form, "loudness_lufs")) is not None:
        request.loudness_lufs = loudness
    return request


def audio_format(value: str | None) -> str:
    fmt = (value or "wav").lower()
    if fmt not in FORMATS:
        raise FieldError("format", f"unknown format {fmt[:40]!r}; use one of {', '.join(FORMATS)}")
    return fmt


def requested_samples(request: pb.ContinueRequest, sample_rate: int) -> int | None:
    """The samples the stream is cut to (``ContinueSpec.samples``: the seconds asked for,
    rounded as the spec rounds them); None in mode upsample, where the codes decide."""
    return None if request.mode == pb.MODE_UPSAMPLE else round(round(float(request.seconds), 6) * sample_rate)


# -- the application --------------------------------------------------------------------------
class HttpApi:
    """The routes, over the servicers the gRPC server registered (``streams`` for
    continuations; ``jobs`` for the queue, None where the server has none)."""

    def __init__(
        self,
        streams: TokgenServicer,
        jobs: JobServicer | None,
        api_keys: list[bytes] | None = None,
        operator_keys: list[bytes] | None = None,
    ):
        self.streams, self.jobs = streams, jobs
        self.keys = [*(api_keys or []), *(operator_keys or [])]
        self.first_operator = len(api_keys or [])
        self.max_bytes = streams.max_request_bytes
        self.draining = False  # set on shutdown: /healthz says so before the port closes
        self.page, self.page_policy = load_page()
        self.app = Starlette(
            routes=[
                Route("/", self.index, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/v1/continuations", self.continuations, methods=["POST"]),
                Route("/v1/jobs", self.submit_job, methods=["POST"]),
                Route("/v1/jobs", self.list_jobs, methods=["GET"]),
                Route("/v1/jobs/{job_id}", self.get_job, methods=["GET"]),
                Route("/v1/jobs/{job_id}", self.cancel_job, methods=["DELETE"]),
                Route("/v1/jobs/{job_id}/audio", self.job_audio, methods=["GET"]),
            ],
            exception_handlers={
                CallAborted: self._aborted,
                FieldError: self._invalid,
                TooLarge: self._too_large,
                HTTPException: self._http_error,
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: the app, with every request counted by route and status and
        logged with its request id (``access_log``), which its response carries too."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # what the client sees if the app fails before answering
        given = dict(scope["headers"]).get(REQUEST_ID_KEY.encode(), b"").decode("latin-1")
        rid = request_id(given)
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (REQUEST_ID_KEY.encode(), rid.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status), metrics.serving_model()).inc()
            client = scope.get("client")
            peer = host_port(client[0], client[1]) if client else "-"
            duration = time.perf_counter() - started
            path = quote(scope["path"])  # as sent: a decoded %0A must not start a new log line
            log_call("http", scope["method"], status, duration, peer, rid, path, route == "/healthz")
            REQUEST_ID.reset(token)

    # -- the pieces every /v1 route shares ------------------------------------------------
    def _authenticate(self, request: Request) -> None:
        """The caller, from the key the request presents, before anything else is read
        (as ``ApiKeyInterceptor`` does for gRPC); 401 without a valid one."""
        identity: Caller | None = ANONYMOUS_CALLER
        if self.keys:
            identity = identify(presented_key(tuple(request.headers.items())), self.keys, self.first_operator)
        if identity is None:
            raise CallAborted(grpc.StatusCode.UNAUTHENTICATED, DENIED)
        act_as(identity)

    async def _form(self, request: Request) -> FormData:
        """The multipart (or urlencoded) body, read at most ``max_bytes`` + a little for the
        form's own overhead: a body that says it is larger is refused before it is read,
        one that turns out larger as it arrives (chunked uploads) as soon as it does."""
        limit = self.max_bytes + FORM_OVERHEAD
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(self.max_bytes)
        received = 0

        async def receive() -> Message:
            nonlocal received
            message = await request.receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise TooLarge(self.max_bytes)
            return message

        return await Request(request.scope, receive).form(max_files=2, max_fields=16)

    def _jobs(self) -> JobServicer:
        if self.jobs is None:
            raise CallAborted(grpc.StatusCode.UNIMPLEMENTED, "this server has no job queue")
        return self.jobs

    # -- routes ---------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page, headers={"Content-Security-Policy": self.page_policy})

    async def healthz(self, request: Request) -> Response:
        ready = self.streams.generator is not None and not self.draining
        return JSONResponse(
            {"status": "serving" if ready else "not_serving"}, status_code=200 if ready else 503
        )

    async def continuations(self, request: Request) -> Response:
        self._authenticate(request)
        form = await self._form(request)
        continuation = await continue_request(form, self.max_bytes)
        if not continuation.sampling.HasField("seed"):  # drawn here: its header goes out first
            continuation.sampling.seed = secrets.randbits(SEED_BITS)
        seed = continuation.sampling.seed
        fmt = audio_format(_text(form, "format"))
        replies = self.streams.Continue(continuation, HttpCall())
        try:  # validated, admitted, prepared, first audio: errors until here get their status
            first = await anext(replies)
        except BaseException:
            await replies.aclose()
            raise
        assert self.streams.generator is not None  # it answered: the models are loaded
        codec_rate = self.streams.generator.codec.sample_rate
        sample_rate = first.chunk.format.sample_rate or codec_rate  # the output's
        wanted = requested_samples(continuation, codec_rate)
        samples = None if wanted is None else output_samples(wanted, codec_rate, sample_rate)
        headers = {
            "X-Tokgen-Seed": str(seed),
            "X-Tokgen-Sample-Rate": str(sample_rate),
            "Cache-Control": "no-store",
        }
        if continuation.num_samples > 1:
            seeds = ",".join(str(seed + i) for i in range(continuation.num_samples))
            archive = await zipped(first, replies, fmt, sample_rate, samples)
            disposition = 'attachment; filename="continuations.zip"'
            headers |= {"X-Tokgen-Seeds": seeds, "Content-Disposition": disposition}
            return Response(archive, media_type="application/zip", headers=headers)
        encoder = StreamEncoder(fmt, sample_rate, samples)

        async def body() -> AsyncIterator[bytes]:
            try:
                yield encoder.header() + (encoder.add(first.chunk.pcm) if first.HasField("chunk") else b"")
                async for reply in replies:
                    if reply.HasField("chunk") and (data := encoder.add(reply.chunk.pcm)):
                        yield data
                yield encoder.finish()
            finally:
                await replies.aclose()

        headers |= {
            "Content-Disposition": f'inline; filename="continuation.{fmt}"',
            "X-Accel-Buffering": "no",  # a proxy (nginx) in front must not hold the stream back
        }
        return AudioStream(body(), headers=headers, media_type=encoder.content_type)

    async def submit_job(self, request: Request) -> Response:
        self._authenticate(request)
        jobs = self._jobs()
        form = await self._form(request)
        key = _text(form, "idempotency_key") or request.headers.get("idempotency-key") or ""
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise FieldError("idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY} characters")
        continuation = await continue_request(form, self.max_bytes)
        reply = await jobs.SubmitJob(
            jpb.SubmitJobRequest(request=continuation, idempotency_key=key), HttpCall()
        )
        seed = reply.job.seed  # kept on the job: a retry with the idempotency key gets it too
        return JSONResponse(
            {"job": job_dict(reply.job), "created": reply.created, "seed": seed},
            status_code=201 if reply.created else 200,
            headers={"Location": f"/v1/jobs/{reply.job.job_id}", "X-Tokgen-Seed": str(seed)},
        )

    async def list_jobs(self, request: Request) -> Response:
        self._authenticate(request)
        jobs = self._jobs()
        query = request.query_params
        state = query.get("state", "")
        states = {jpb.JobState.Name(v).removeprefix("JOB_STATE_").lower(): v for v in jpb.JobState.values()}
        if state and (state not in states or state == "unspecified"):
            raise FieldError("state", f"unknown state {state[:40]!r}")
        size = query.get("page_size", "")
        if size and not (size.isdigit() and len(size) < 10):
            raise FieldError("page_size", f"must be a whole number, got {size[:40]!r}")
        listing = jpb.ListJobsRequest(
            state=states.get(state, 0), page_size=int(size or 0), page_token=query.get("page_token", "")
        )
        reply = await jobs.ListJobs(listing, HttpCall())
        return JSONResponse(
            {"jobs": [job_dict(job) for job in reply.jobs], "next_page_token": reply.next_page_token}
        )

    async def get_job(self, request: Request) -> Response:
        self._authenticate(request)
        reply = await self._jobs().GetJob(jpb.GetJobRequest(job_id=request.path_params["job_id"]), HttpCall())
        return JSONResponse({"job": job_dict(reply.job)})

    async def cancel_job(self, request: Request) -> Response:
        self._authenticate(request)
        job_id = request.path_params["job_id"]
        reply = await self._jobs().CancelJob(jpb.CancelJobRequest(job_id=job_id), HttpCall())
        return JSONResponse({"job": job_dict(reply.job)})

    async def job_audio(self, request: Request) -> Response:
        """The job's result: as stored (WAV), or re-encoded to ``?format=``."""
        self._authenticate(request)
        fmt = audio_format(request.query_params.get("format"))
        job_id = request.path_params["job_id"]
        _, audio, _ = await self._jobs().result(jpb.GetJobResultRequest(job_id=job_id), HttpCall())
        generator = self.streams.generator
        if fmt != "wav":
            if generator is None:
                raise CallAborted(grpc.StatusCode.UNAVAILABLE, "models are still loading; retry shortly")
            audio = await asyncio.to_thread(reencode, audio, generator.codec.sample_rate, fmt)
        return Response(
            audio,
            media_type=CONTENT_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="{job_id}.{fmt}"'},
        )

    # -- errors ---------------------------------------------------------------------------
    async def _aborted(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CallAborted)
        status = HTTP_STATUS.get(exc.code, 500)
        return error_response(status, exc.code.name, exc.message, exc.field)

    async def _invalid(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FieldError)
        return error_response(400, "INVALID_ARGUMENT", str(exc), exc.field)

    async def _too_large(self, request: Request, exc: Exception) -> Response:
        return error_response(413, "RESOURCE_EXHAUSTED", str(exc))

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's own: no such route or method, a malformed multipart body."""
        assert isinstance(exc, HTTPException)
        code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(
            exc.status_code, "UNKNOWN"
        )
        return error_response(exc.status_code, code, str(exc.detail))


class AudioStream(StreamingResponse):
    """Closes the audio stream however the response ends, a client hanging up included
    (its next write fails): that stops the generation and frees its admission slot now,
    not whenever the stream object is collected."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


def reencode(wav: bytes, sample_rate: int, fmt: str) -> bytes:
    """A job's WAV result as ``fmt`` (CPU work: run it in a thread), at the rate it was
    rendered at (the job's ``sample_rate``; ``sample_rate``, the codec's, if it has none)."""
    with sf.SoundFile(io.BytesIO(wav)) as f:
        rate = f.samplerate or sample_rate
    return encode_audio(load_audio(wav, rate, allow_silent=True), rate, f".{fmt}")


async def zipped(
    first: pb.ContinueResponse,
    replies: AsyncGenerator[pb.ContinueResponse, None],
    fmt: str,
    sample_rate: int,
    samples: int | None,
) -> bytes:
    """A stream of several samples as a zip of one ``fmt`` file per sample
    (``continuation_{i}.{fmt}``), once all are complete (the files of a zip follow one
    another, the samples' chunks interleave). The audio is held as PCM until then."""
    pcm: dict[int, list[bytes]] = {}
    try:
        async for reply in _chained(first, replies):
            if reply.HasField("chunk"):
                pcm.setdefault(reply.chunk.sample_index, []).append(reply.chunk.pcm)
    finally:
        await replies.aclose()

    def archive() -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for index in sorted(pcm):
                encoder = StreamEncoder(fmt, sample_rate, samples)
                data = encoder.header() + b"".join(encoder.add(p) for p in pcm[index]) + encoder.finish()
                z.writestr(f"continuation_{index}.{fmt}", data)
        return buf.getvalue()

    return await asyncio.to_thread(archive)


async def _chained(
    first: pb.ContinueResponse, rest: AsyncIterator[pb.ContinueResponse]
) -> AsyncIterator[pb.ContinueResponse]:
    yield first
    async for reply in rest:
        yield reply


def load_page() -> tuple[str, str]:
    """The page's HTML and the Content-Security-Policy it is served with: nothing but this
    server is reachable from it, and only its own inline script and style run (by hash)."""
    html = resources.files("tokgen.serve").joinpath("web/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies
        )

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; media-src 'self' blob:; img-src 'self' data: blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


# -- the server: uvicorn in the gRPC server's event loop -----------------------------------------
class _InLoopServer(uvicorn.Server):
    """uvicorn leaves the process' signals alone: ``tokgen serve`` handles SIGTERM for
    both of its servers (health first, then both drain)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class HttpServer:
    """``api`` on ``host:port``, bound at once (the port is known before ``start``: 0 picks a
    free one), with the gRPC port's TLS and a bound on requests in flight (beyond: 503)."""

    def __init__(
        self,
        api: HttpApi,
        host: str,
        port: int,
        tls: TlsFiles | None = None,
        max_concurrent: int | None = None,
        grace_s: float = 10.0,
    ):
        self.api = api
        bare = host.strip("[]")
        try:
            self.socket = socket.create_server(
                (bare, port), family=socket.AF_INET6 if ":" in bare else socket.AF_INET
            )
        except OSError as exc:
            raise TokgenError(
                f"cannot serve HTTP on {host}:{port} ({exc.strerror or exc}); choose another --http-port "
                "(TOKGEN_HTTP_PORT), or 0 for any free port"
            ) from None
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            api,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            limit_concurrency=max_concurrent,
            timeout_graceful_shutdown=math.ceil(grace_s),
            ssl_certfile=tls.cert if tls else None,
            ssl_keyfile=tls.key if tls else None,
            ssl_ca_certs=str(tls.client_ca) if tls and tls.client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.client_ca else ssl.CERT_NONE,
        )
        try:
            config.load()  # reads the TLS files now: a bad one is an error at start, not later
        except (OSError, ssl.SSLError) as exc:
            self.socket.close()
            raise TokgenError(f"cannot serve HTTP with the TLS files given: {exc}") from None
        self.server = _InLoopServer(config)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise TokgenError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let requests in flight finish for the grace period, then cancel
        them (as the gRPC server does its streams)."""
        self.api.draining = True
        if grace_s is not None:
            self.server.config.timeout_graceful_shutdown = math.ceil(grace_s)
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self.socket.close()

"""Bad input against the real ``tokgen serve`` process: property-based requests (hypothesis),
a corpus of malformed ones (``fuzz_corpus``), and the server's memory under a stream of them.

Every call goes over the socket to one server for the module (``--no-worker``: submitted jobs
only queue; ``--max-request-bytes 1048576``: the oversize cases stay cheap). Every status
observed must be one that docs/RELIABILITY.md documents, and never UNKNOWN or INTERNAL; after
each corpus case the server must still be SERVING and still stream. The tests at the end are
the bugs this suite found, fixed: they stay as regressions. A second server (``keyed``) has
two tenants' API keys and an operator's (issue 17): without a valid key every call is
UNAUTHENTICATED whatever its bytes, and tenants never see each other's jobs.

Run with ``-s`` to see the status each corpus case got and the memory numbers."""

from __future__ import annotations

import math
import re
import signal
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fuzz_corpus import (
    ALICE,
    BOB,
    CASES,
    JOBS,
    KEYED_CASES,
    MAX_REQUEST_BYTES,
    METHODS,
    NOT_KEYS,
    NOT_PROTOBUF,
    OPERATOR,
    REFLECTION,
    STREAMING,
    TOKGEN,
    Case,
    as_key,
    bug_codes_cases,
    codes_file,
    codes_with_long_model,
    encoded,
    flac_claiming,
    good_codes,
    npz,
    stored_npz,
    tone,
    wav_header,
    zip_claiming,
)
from tests.test_serve_process import Served, start_serve, tracebacks
from tokgen.jobs.queue import Cursor
from tokgen.serve.jobs_service import STATES, page_token, read_page_token, request_digest
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

RELIABILITY = Path(__file__).parent.parent / "docs" / "RELIABILITY.md"
NEVER = {"UNKNOWN", "INTERNAL"}
SERVING = health_pb2.HealthCheckResponse.SERVING
MAX_SECONDS = 600.0
EXAMPLES = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def documented_codes() -> set[str]:
    """The codes of docs/RELIABILITY.md's status table: rows "| `CODE` | methods | when |"."""
    codes = {line.split("`")[1] for line in RELIABILITY.read_text().splitlines() if line.startswith("| `")}
    assert codes and codes <= set(grpc.StatusCode.__members__), codes
    return codes


# ---- the server ---------------------------------------------------------------------------


@dataclass
class Fuzzed:
    served: Served
    channel: grpc.Channel
    info: pb.GetModelInfoResponse
    documented: set[str]
    log: list[str]
    observed: Counter = field(default_factory=Counter)  # (what, code) -> calls
    idempotency: dict[str, str] = field(default_factory=dict)  # key -> the request it made a job of


@contextmanager
def fuzzed_server(cwd: Path, tiny_model_dir: Path, prior_set: Path, *extra: str, metadata=()):
    """A ``tokgen serve`` (``--no-worker``, 1 MiB requests) for a module's calls; on exit
    it must stop cleanly (exit 0) with no traceback logged."""
    served = start_serve(
        cwd, tiny_model_dir, prior_set, "--max-request-bytes", str(MAX_REQUEST_BYTES), "--no-worker", *extra
    )
    log = served.log  # its stderr, drained as it comes
    channel = grpc.insecure_channel(served.address)
    stub = pb_grpc.TokgenServiceStub(channel)
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=30)
    assert info.max_request_bytes == MAX_REQUEST_BYTES
    fuzzed = Fuzzed(served, channel, info, documented_codes(), log)
    try:
        yield fuzzed
    finally:
        channel.close()
        served.proc.send_signal(signal.SIGTERM)
        try:
            code = served.proc.wait(timeout=60)
        finally:
            served.proc.kill()
            served.drain.join(timeout=10)
            served.proc.stdout.close()
            served.proc.stderr.close()
        print(
            "\nstatus codes observed:",
            dict(sorted(Counter(c for _, c in fuzzed.observed.elements()).items())),
        )
        assert code == 0, "".join(log)[-4000:]
        assert not tracebacks(log), tracebacks(log)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory, tiny_model_dir, prior_set):
    with fuzzed_server(tmp_path_factory.mktemp("fuzz"), tiny_model_dir, prior_set) as fuzzed:
        yield fuzzed


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_model_dir, prior_set):
    """The same server with two tenants' API keys and an operator's (issue 17)."""
    cwd = tmp_path_factory.mktemp("keyed")
    (cwd / "keys").write_text(f"{ALICE}\n{BOB}\n")
    (cwd / "operators").write_text(f"{OPERATOR}\n")
    files = ("--api-keys-file", str(cwd / "keys"), "--operator-keys-file", str(cwd / "operators"))
    with fuzzed_server(cwd, tiny_model_dir, prior_set, *files, metadata=as_key(ALICE)) as fuzzed:
        yield fuzzed


# ---- calls --------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: str  # grpc.StatusCode name
    reply: bytes | None = None  # the reply, or a stream's first message (serialized)
    error: grpc.RpcError | None = None

    @property
    def field(self) -> str | None:
        """The field a BadRequest detail names, if there is one."""
        status = rpc_status.from_call(self.error) if self.error is not None else None
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad) and bad.field_violations:
                return bad.field_violations[0].field
        return None

    def __str__(self) -> str:
        return self.code + (f" ({self.error.details()[:160]})" if self.error is not None else "")


def invoke(fx: Fuzzed, method: str, payload: bytes, metadata=(), timeout: float = 20.0) -> Outcome:
    """``payload`` (any bytes) to ``method``; of a stream only the first message is read,
    then the call is cancelled (so a long valid continuation costs one chunk)."""
    try:
        if method in STREAMING:
            call = fx.channel.unary_stream(method)(payload, metadata=metadata, timeout=timeout)
            try:
                reply = next(call, None)
            finally:
                call.cancel()
        else:
            reply = fx.channel.unary_unary(method)(payload, metadata=metadata, timeout=timeout)
        return Outcome("OK", reply)
    except grpc.RpcError as exc:
        return Outcome(exc.code().name, error=exc)


def check(fx: Fuzzed, outcome: Outcome, what: str, label: bool = False) -> Outcome:
    """Every status the server gives is documented, and never UNKNOWN or INTERNAL. With
    ``label``, the code is a hypothesis event (--hypothesis-show-statistics)."""
    fx.observed[(what, outcome.code)] += 1
    if label:
        event(f"{outcome.code} {outcome.field or ''}".strip())
    assert outcome.code not in NEVER, f"{what}: {outcome}"
    assert outcome.code in fx.documented, f"{what}: {outcome} is not in docs/RELIABILITY.md"
    return outcome


def health(fx: Fuzzed, service: str = "") -> int:
    check_call = health_pb2_grpc.HealthStub(fx.channel).Check
    return check_call(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def assert_still_serving(fx: Fuzzed) -> None:
    """The process runs, health says SERVING and a small continuation streams to its end."""
    assert fx.served.proc.poll() is None, "".join(fx.log)[-4000:]
    assert health(fx) == SERVING
    small = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.01)
    replies = list(pb_grpc.TokgenServiceStub(fx.channel).Continue(small, timeout=60))
    assert [r.WhichOneof("event") for r in replies][-2:] == ["chunk", "summary"]


def cancel_job(fx: Fuzzed, job_id: str) -> None:
    reply = invoke(fx, JOBS + "CancelJob", jpb.CancelJobRequest(job_id=job_id).SerializeToString())
    assert check(fx, reply, "CancelJob").code == "OK"
    assert jpb.CancelJobResponse.FromString(reply.reply).job.state == jpb.JOB_STATE_CANCELLED


def metric(fx: Fuzzed, name: str) -> float:
    """The value of the series ``name`` (``family{labels}``, the ``model`` label left out)."""
    text = urllib.request.urlopen(f"http://{fx.served.metrics}/metrics", timeout=10).read().decode()
    lines = (re.sub(r',?model="[^"]*"', "", line) for line in text.splitlines())
    return float(next(line for line in lines if line.startswith(name + " ")).split()[-1])


# ---- what the server must say about a ContinueRequest (its documented checks) -------------

MODES = {0: "primed", 1: "primed", 2: "ancestral", 3: "continue", 4: "upsample"}
NEEDS = {"primed": "prime_audio", "ancestral": None, "continue": "codes", "upsample": "codes"}


def violations(req: pb.ContinueRequest, codebook_size: int) -> set[str]:
    """The fields of ``req`` that break the documented rules (the server names the first it
    checks); empty: valid, up to decoding the prime or codes."""
    bad: set[str] = set()
    mode = MODES.get(req.mode)
    if mode is None:
        bad.add("mode")
    if req.priority not in (0, 1, 2, 3):
        bad.add("priority")
    source = req.WhichOneof("source")
    if mode is not None and source != NEEDS[mode]:
        bad.add(NEEDS[mode] or source or "source")
    seconds = round(req.seconds, 6)  # what the server compares (float32 on the wire)
    if mode != "upsample" and not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        bad.add("seconds")
    s = req.sampling
    temperature = s.temperature if s.HasField("temperature") else 1.0
    top_p = s.top_p if s.HasField("top_p") else 1.0
    if not (math.isfinite(temperature) and 0 < temperature <= 100):
        bad.add("sampling.temperature")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        bad.add("sampling.top_p")
    if s.top_k > codebook_size:
        bad.add("sampling.top_k")
    if s.seed >= 2**63:
        bad.add("sampling.seed")
    for name in ("key_guidance", "instrument_guidance"):
        strength = round(getattr(s, name), 6) if s.HasField(name) else 0.0
        if not (math.isfinite(strength) and 0 <= strength <= 20):
            bad.add(f"sampling.{name}")
    return bad


# ---- strategies ---------------------------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)
F32 = st.floats(width=32)  # NaN, +-inf, subnormals, +-3.4e38
NAN, INF = float("nan"), float("inf")


def enum_or_any(values) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(list(values)), INT32)


SECONDS = st.one_of(  # any float32, and the edges of (0, 600]
    st.sampled_from([0.0, -0.0, -1.0, 1e-45, 1e-7, 1e-6, 600.0001, 601.0, 3.4e38, NAN, INF, -INF]), F32
)
# Valid ones: mostly short (a first chunk in ~0.3 s), sometimes up to the 600 s limit. One
# chunk of those takes seconds: time to first audio grows with the length asked for (every
# 0.5 s bottom-level segment is a task, and every code written wakes all of them).
VALID_SECONDS = st.one_of(
    st.floats(2**-16, 2.0, width=32), st.sampled_from([1e-6, 0.01, 0.1, 1.0, 30.0, 600.0])
)
TEMPERATURE = F32
VALID_TEMPERATURE = st.one_of(st.floats(2**-100, 100.0, width=32), st.sampled_from([1.0, 100.0, 1e-30]))
TOP_P = st.one_of(st.sampled_from([0.0, -0.0, 1.0000001, -1.0]), F32)
VALID_TOP_P = st.one_of(st.floats(0.0, 1.0, exclude_min=True, width=32), st.sampled_from([1.0, 1e-45]))
GUIDANCE = st.one_of(st.sampled_from([-1e-3, 20.0001, 1e30, -0.5]), F32)
VALID_GUIDANCE = st.one_of(st.floats(0.0, 20.0, width=32), st.sampled_from([0.0, 20.0, 1e-45]))
# A WAV whose header fields are drawn: rate, channels, sample width, format tag, length.
WAVS = st.builds(
    wav_header,
    rate=st.one_of(
        st.sampled_from([1, 8000, 16000, 44100, 384_000, 384_001, 655_350, 1_000_000]),
        st.integers(0, 2**32 - 1),
    ),
    channels=st.integers(0, 12),
    bits=st.sampled_from([8, 16, 24, 32]),
    frames=st.integers(0, 400),
    fmt_tag=st.sampled_from([1, 3]),
)
# A FLAC of 10 ms whose header claims a length: bounded by rate, channels, seconds and
# decoded bytes (frames x channels x 4) before anything is decoded (issue 17).
FLAC_CLAIMS = st.builds(
    flac_claiming,
    rate=st.sampled_from([8000, 16000, 48000, 192_000, 384_000, 655_350]),
    channels=st.integers(1, 8),
    claimed_seconds=st.sampled_from([0.01, 1.0, 30.0, 59.0, 61.0, 3600.0]),
)
VALID_WAV = encoded(tone(800))
# Sources; a valid codes file is a builder (it names the served codec).
PRIMES = st.one_of(st.just(VALID_WAV), WAVS, FLAC_CLAIMS, st.binary(max_size=600))
# Codes files that inflate past their bounds: a long model name, a member that claims more
# than it holds, more members than a codes file has.
HOSTILE_CODES = st.one_of(
    st.sampled_from([10, 256, 257, 10_000, 100_000_000]).map(
        lambda chars: lambda info: codes_with_long_model(info, chars)
    ),
    st.integers(0, 2**32 - 1).map(
        lambda size: lambda info: zip_claiming(stored_npz(good_codes(info)), "codes_0.npy", size)
    ),
    st.integers(0, 100).map(lambda extra: lambda info: stored_npz(good_codes(info), extra=extra)),
)
CODES = st.one_of(st.just(codes_file), HOSTILE_CODES, st.binary(max_size=600), st.just(b"PK\x03\x04"))
SOURCES = st.one_of(st.none(), st.tuples(st.just("prime_audio"), PRIMES), st.tuples(st.just("codes"), CODES))
FIELDS = (
    "mode",
    "priority",
    "source",
    "seconds",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "key_guidance",
    "instrument_guidance",
)
GUIDANCES = ("key_guidance", "instrument_guidance")


@dataclass(frozen=True)
class RequestSpec:
    """A drawn ContinueRequest, built once the model info is known (a valid codes file
    names the served codec)."""

    fields: dict
    source: tuple[str, bytes | Callable] | None

    def build(self, info: pb.GetModelInfoResponse) -> pb.ContinueRequest:
        request = pb.ContinueRequest(**self.fields)
        if self.source is not None:
            name, data = self.source
            setattr(request, name, data(info) if callable(data) else data)
        return request

    def __repr__(self) -> str:
        source = self.source and (self.source[0], getattr(self.source[1], "__name__", self.source[1]))
        shown = {k: v if k != "sampling" else str(v).replace("\n", " ") for k, v in self.fields.items()}
        return f"RequestSpec({shown}, source={str(source)[:300]})"


@st.composite
def continue_requests(draw) -> RequestSpec:
    """Requests whose fields are valid but for a drawn set of them, which take any value of
    their type (so the valid and the nearly valid are both common: each kind of refusal, and
    real streams)."""
    corrupt = draw(st.sets(st.sampled_from(FIELDS), max_size=3))
    pick = lambda name, valid, wild: draw(wild if name in corrupt else valid)  # noqa: E731
    mode = pick("mode", st.sampled_from(range(5)), INT32)
    fields = {
        "mode": mode,
        "priority": pick("priority", st.sampled_from(range(4)), INT32),
        "seconds": pick("seconds", VALID_SECONDS, SECONDS),
    }
    if draw(st.booleans()) or {"temperature", "top_p", "top_k", "seed", *GUIDANCES} & corrupt:
        sampling = pb.SamplingParams(
            top_k=pick("top_k", st.integers(0, 32), st.integers(0, 2**32 - 1)),
            seed=pick("seed", st.integers(0, 2**63 - 1), st.integers(0, 2**64 - 1)),
        )
        temperature = pick("temperature", st.one_of(st.none(), VALID_TEMPERATURE), TEMPERATURE)
        top_p = pick("top_p", st.one_of(st.none(), VALID_TOP_P), TOP_P)
        if temperature is not None:
            sampling.temperature = temperature
        if top_p is not None:
            sampling.top_p = top_p
        for name in GUIDANCES:
            strength = pick(name, st.one_of(st.none(), VALID_GUIDANCE), GUIDANCE)
            if strength is not None:
                setattr(sampling, name, strength)
        fields["sampling"] = sampling
    matching = {
        "prime_audio": st.tuples(st.just("prime_audio"), PRIMES),
        "codes": st.tuples(st.just("codes"), CODES),
        None: st.none(),
    }
    valid_source = matching[NEEDS[MODES[mode]]] if mode in MODES else SOURCES
    source = pick("source", valid_source, SOURCES)
    return RequestSpec(fields, source)


def max_codebook(fx: Fuzzed) -> int:
    return max(lv.codebook_size for lv in fx.info.levels)


# ---- 1. property-based --------------------------------------------------------------------


@EXAMPLES
@given(spec=continue_requests())
def test_continue_answers_arbitrary_requests_with_a_chunk_or_a_documented_refusal(fuzz, spec):
    request = spec.build(fuzz.info)
    # 40 s: a valid 600 s request's first chunk takes 4-15 s on 2 busy cores (see VALID_SECONDS)
    outcome = invoke(fuzz, TOKGEN + "Continue", request.SerializeToString(), timeout=40)
    check(fuzz, outcome, "Continue", label=True)
    bad = violations(request, max_codebook(fuzz))
    source = request.WhichOneof("source")
    if outcome.code == "RESOURCE_EXHAUSTED":  # admission full: documented, retryable
        assert "busy" in outcome.error.details()
    elif bad:
        assert outcome.code == "INVALID_ARGUMENT" and outcome.field in bad, (str(outcome), bad)
    elif source is None:  # mode ancestral, every field valid
        assert outcome.code == "OK", str(outcome)
    else:  # valid fields: the prime or codes decide
        refused = (outcome.code, outcome.field) == ("INVALID_ARGUMENT", source)
        assert outcome.code == "OK" or refused, str(outcome)
    if outcome.code == "OK":
        assert outcome.reply is not None, "the stream ended without a message"
        first = pb.ContinueResponse.FromString(outcome.reply)
        assert first.WhichOneof("event") in ("chunk", "summary")


JOB_IDS = st.one_of(
    st.text(),  # any Unicode but surrogates (protobuf strings are UTF-8), NUL included
    st.text(min_size=60, max_size=70),  # around the 64-character lookup limit
    st.text(min_size=65, max_size=3000),
    st.sampled_from(["", "\0", "*", "tokgen:jobs", "0" * 32, "../../etc/passwd", "\u202e", "🎵" * 64]),
)
LOOKUPS = {
    "GetJob": jpb.GetJobRequest,
    "CancelJob": jpb.CancelJobRequest,
    "GetJobResult": jpb.GetJobResultRequest,
    "WatchJob": jpb.WatchJobRequest,
    "StreamJobResult": jpb.StreamJobResultRequest,
}


@settings(EXAMPLES, max_examples=100)
@given(method=st.sampled_from(sorted(LOOKUPS)), job_id=JOB_IDS)
def test_unknown_job_ids_are_not_found(fuzz, method, job_id):
    payload = LOOKUPS[method](job_id=job_id).SerializeToString()
    outcome = check(fuzz, invoke(fuzz, JOBS + method, payload), method, label=True)
    if job_id:
        assert outcome.code == "NOT_FOUND", str(outcome)
    else:
        assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "job_id"), str(outcome)


def takes_token(token: str, state: int) -> bool:
    """Whether ListJobs takes a page token: none, or a cursor it wrote for this state."""
    listed = next((s for s, e in STATES.items() if e == state), None)
    return not token or read_page_token(token, listed) is not None


TOKENS = st.one_of(
    st.text(max_size=30),
    st.integers(0, 10**6).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "0", "-0", "+1", " 7 ", "1_000", "٣", "9" * 4301, "1e3", "0x10", "\0"]),
    st.builds(  # cursors as ListJobs writes them, of any time and job id, for any listing
        lambda t, job_id, state: page_token(Cursor(t, job_id), state),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=70),
        st.sampled_from([None, *STATES]),
    ),
)


@settings(EXAMPLES, max_examples=80)
@given(
    page_size=st.one_of(st.integers(0, 1001), st.integers(0, 2**32 - 1)),
    state=enum_or_any(range(7)),
    token=TOKENS,
)
def test_list_jobs_takes_any_page_request(fuzz, page_size, state, token):
    size = page_size or 50
    payload = jpb.ListJobsRequest(page_size=page_size, state=state, page_token=token).SerializeToString()
    outcome = check(fuzz, invoke(fuzz, JOBS + "ListJobs", payload), "ListJobs", label=True)
    if size > 1000:
        assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "page_size"), str(outcome)
    elif not 0 <= state <= 6:
        assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "state"), str(outcome)
    elif not takes_token(token, state):
        assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "page_token"), str(outcome)
    else:
        assert outcome.code == "OK", str(outcome)
        assert len(jpb.ListJobsResponse.FromString(outcome.reply).jobs) <= size


KEYS = st.one_of(
    st.just(""), st.text(max_size=40), st.text(min_size=195, max_size=210), st.text(max_size=1000)
)


@EXAMPLES
@given(spec=continue_requests(), key=KEYS)
def test_submit_job_accepts_valid_specs_and_names_the_bad_field(fuzz, spec, key):
    request = spec.build(fuzz.info)
    payload = jpb.SubmitJobRequest(request=request, idempotency_key=key).SerializeToString()
    outcome = check(fuzz, invoke(fuzz, JOBS + "SubmitJob", payload), "SubmitJob", label=True)
    bad = {f"request.{name}" for name in violations(request, max_codebook(fuzz))}
    same = request_digest(request)  # the priority is not part of it
    if bad:
        assert outcome.code == "INVALID_ARGUMENT" and outcome.field in bad, (str(outcome), bad)
    elif len(key) > 200:
        assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "idempotency_key"), str(outcome)
    elif outcome.code == "INVALID_ARGUMENT":  # valid fields: the prime or codes decide, as for Continue
        assert request.WhichOneof("source") and outcome.field == f"request.{request.WhichOneof('source')}"
    elif key and fuzz.idempotency.get(key, same) != same:
        # the key made a job of another request: an error, not that job (issue 17)
        assert outcome.code == "ALREADY_EXISTS", str(outcome)
        assert "different request" in outcome.error.details()
    else:
        assert outcome.code == "OK", str(outcome)
        reply = jpb.SubmitJobResponse.FromString(outcome.reply)
        assert reply.created == (key not in fuzz.idempotency), str(outcome)
        if key:
            fuzz.idempotency[key] = same
        cancel_job(fuzz, reply.job.job_id)  # no job piles up (this server has no worker anyway)


# ---- 2. the corpus ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_request_corpus(fuzz, case: Case):
    outcome = check(fuzz, invoke(fuzz, case.method, case.payload(fuzz.info), case.metadata), case.id)
    print(f"{case.id}: {outcome}")
    assert outcome.code == case.expected, str(outcome)
    if case.field is not None:
        assert outcome.field == case.field, str(outcome)
    if outcome.code == "OK" and case.method == JOBS + "SubmitJob":
        cancel_job(fuzz, jpb.SubmitJobResponse.FromString(outcome.reply).job.job_id)
    assert_still_serving(fuzz)


@pytest.mark.parametrize(
    "metadata",
    [
        (("x-junk", "héllo ♪"),),  # non-ASCII in a text header
        (("x-junk", "a\0b"),),
        (("x-junk", "a\nb"),),
        (("X-Junk", "uppercase key"),),
        (("x junk", "a space in the key"),),
        (("x-api-key", "☃"),),
    ],
    ids=[
        "non-ascii-value",
        "nul-value",
        "newline-value",
        "uppercase-key",
        "space-in-key",
        "non-ascii-api-key",
    ],
)
def test_illegal_metadata_is_refused_by_the_client_library(fuzz, metadata):
    """The grpc Python client refuses these itself (INTERNAL "Invalid metadata") and sends
    nothing; where such headers are legal (-bin keys) the corpus sends them to the server."""
    before = metric(fuzz, 'tokgen_requests_total{code="OK",method="GetModelInfo"}')
    outcome = invoke(fuzz, TOKGEN + "GetModelInfo", b"", metadata)
    print(f"{metadata}: {outcome}")
    assert (outcome.code, outcome.error.details()) == ("INTERNAL", "Invalid metadata")
    assert metric(fuzz, 'tokgen_requests_total{code="OK",method="GetModelInfo"}') == before
    assert_still_serving(fuzz)


def test_job_states_seen_through_lookups(fuzz):
    """A queued job (no worker here): GetJobResult is FAILED_PRECONDITION, WatchJob streams
    its state; once cancelled, still FAILED_PRECONDITION, and cancelling twice is harmless."""
    submitted = invoke(
        fuzz,
        JOBS + "SubmitJob",
        jpb.SubmitJobRequest(
            request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.1)
        ).SerializeToString(),
    )
    job_id = jpb.SubmitJobResponse.FromString(check(fuzz, submitted, "SubmitJob").reply).job.job_id
    lookup = lambda method: check(  # noqa: E731
        fuzz, invoke(fuzz, JOBS + method, LOOKUPS[method](job_id=job_id).SerializeToString()), method
    )
    assert lookup("GetJobResult").code == "FAILED_PRECONDITION"
    watched = lookup("WatchJob")
    assert jpb.WatchJobResponse.FromString(watched.reply).job.state == jpb.JOB_STATE_QUEUED
    cancel_job(fuzz, job_id)
    cancel_job(fuzz, job_id)
    result = lookup("GetJobResult")
    assert result.code == "FAILED_PRECONDITION" and "cancelled" in result.error.details()
    assert lookup("GetJob").code == "OK"


def test_health_of_odd_service_names(fuzz):
    for name in ("", "live", "tokgen.v1.TokgenService"):
        assert health(fuzz, name) == SERVING
    for name in ("tokgen.v1.JobService", "nope", "\0", "♪" * 1000):
        with pytest.raises(grpc.RpcError) as err:
            health(fuzz, name)
        check(fuzz, Outcome(err.value.code().name, error=err.value), f"Health.Check({name[:20]!r})")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


# ---- 4. API keys and tenants (issue 17) -----------------------------------------------------


@pytest.mark.parametrize("case", KEYED_CASES, ids=[c.id for c in KEYED_CASES])
def test_keyed_corpus(keyed, case: Case):
    outcome = check(keyed, invoke(keyed, case.method, case.payload(keyed.info), case.metadata), case.id)
    assert outcome.code == case.expected, str(outcome)
    if case.expected == "UNAUTHENTICATED":
        assert "API key" in outcome.error.details()


PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)  # what metadata values may hold
NOT_A_KEY = st.one_of(
    st.sampled_from(list(NOT_KEYS.values())),
    st.text(PRINTABLE, max_size=80).map(as_key),
    st.text(PRINTABLE, max_size=80).map(lambda k: (("authorization", f"Bearer {k}"),)),
    st.integers(0, len(ALICE) - 1).map(lambda n: as_key(ALICE[:n] + ALICE[n + 1 :])),  # one char off
)
ANY_BYTES = st.one_of(
    st.binary(max_size=3000),
    st.sampled_from(list(NOT_PROTOBUF.values())),
    st.integers(MAX_REQUEST_BYTES - 64, 3 * MAX_REQUEST_BYTES).map(lambda n: b"\x0a" * n),
)


@EXAMPLES
@given(method=st.sampled_from([*METHODS, REFLECTION]), payload=ANY_BYTES, metadata=NOT_A_KEY)
def test_without_a_valid_key_any_request_is_unauthenticated(keyed, method, payload, metadata):
    """Whatever the bytes (garbage, valid, over --max-request-bytes) and whatever passes for
    a key: UNAUTHENTICATED, before the request is read."""
    outcome = check(keyed, invoke(keyed, method, payload, metadata), method, label=True)
    assert outcome.code == "UNAUTHENTICATED", str(outcome)


@pytest.fixture(scope="module")
def tenant_jobs(keyed) -> dict[str, list[str]]:
    """Jobs of each tenant on the keyed server: Alice's three (one cancelled), Bob's one,
    the operator's one."""

    def submit(key: str, seconds: float) -> str:
        request = jpb.SubmitJobRequest(request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=seconds))
        outcome = invoke(keyed, JOBS + "SubmitJob", request.SerializeToString(), as_key(key))
        return jpb.SubmitJobResponse.FromString(check(keyed, outcome, "SubmitJob").reply).job.job_id

    jobs = {"alice": [submit(ALICE, 0.1 + i) for i in range(3)], "bob": [submit(BOB, 1.0)]}
    jobs["operator"] = [submit(OPERATOR, 1.0)]
    cancel = jpb.CancelJobRequest(job_id=jobs["alice"][0]).SerializeToString()
    assert invoke(keyed, JOBS + "CancelJob", cancel, as_key(ALICE)).code == "OK"
    return jobs


TENANT_KEYS = {"alice": ALICE, "bob": BOB, "operator": OPERATOR}


@settings(EXAMPLES, max_examples=80)
@given(
    method=st.sampled_from(sorted(LOOKUPS)), who=st.sampled_from(sorted(TENANT_KEYS)), which=st.integers(0, 2)
)
def test_a_tenant_finds_only_its_own_jobs(keyed, tenant_jobs, method, who, which):
    """Bob looking up Alice's job gets exactly what a missing job gets; Alice and the
    operator find it. (Cancelling is among the lookups: Bob's changes nothing.)"""
    job_id = tenant_jobs["alice"][which]
    payload = LOOKUPS[method](job_id=job_id).SerializeToString()
    outcome = check(
        keyed, invoke(keyed, JOBS + method, payload, as_key(TENANT_KEYS[who])), method, label=True
    )
    if who == "bob":
        missing = LOOKUPS[method](job_id="0" * 32).SerializeToString()
        nothing = invoke(keyed, JOBS + method, missing, as_key(BOB))
        assert outcome.code == nothing.code == "NOT_FOUND", str(outcome)
        assert outcome.error.details().replace(job_id, "0" * 32) == nothing.error.details()
    else:
        assert outcome.code in ("OK", "FAILED_PRECONDITION"), str(outcome)  # no result yet: no worker


@settings(EXAMPLES, max_examples=40)
@given(
    who=st.sampled_from(sorted(TENANT_KEYS)),
    state=st.integers(0, 6),
    page_size=st.integers(0, 4),
    pages=st.integers(1, 4),
)
def test_a_listing_holds_only_the_callers_jobs(keyed, tenant_jobs, who, state, page_size, pages):
    seen: list[str] = []
    token = ""
    for _ in range(pages):
        request = jpb.ListJobsRequest(state=state, page_size=page_size, page_token=token)
        outcome = check(
            keyed,
            invoke(keyed, JOBS + "ListJobs", request.SerializeToString(), as_key(TENANT_KEYS[who])),
            "ListJobs",
        )
        assert outcome.code == "OK", str(outcome)
        reply = jpb.ListJobsResponse.FromString(outcome.reply)
        assert all(state == 0 or j.state == state for j in reply.jobs)
        seen += [j.job_id for j in reply.jobs]
        token = reply.next_page_token
        if not token:
            break
    everyone = {j for ids in tenant_jobs.values() for j in ids}
    own = everyone if who == "operator" else set(tenant_jobs[who])
    assert set(seen) <= own, (who, set(seen) - own)
    assert len(seen) == len(set(seen))  # no job twice across pages


@settings(EXAMPLES, max_examples=30)
@given(key=st.text(min_size=1, max_size=60))
def test_idempotency_keys_are_per_tenant_and_bound_to_their_request(keyed, key):
    key = f"{uuid.uuid4().hex[:8]}{key}"[:200]  # fresh for this example, arbitrary after

    def submit(who: str, seconds: float) -> Outcome:
        request = jpb.SubmitJobRequest(
            request=pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=seconds), idempotency_key=key
        )
        payload = request.SerializeToString()
        return check(keyed, invoke(keyed, JOBS + "SubmitJob", payload, as_key(TENANT_KEYS[who])), "SubmitJob")

    first, again, bobs = submit("alice", 0.1), submit("alice", 0.1), submit("bob", 0.1)
    replies = [jpb.SubmitJobResponse.FromString(o.reply) for o in (first, again, bobs)]
    assert [r.created for r in replies] == [True, False, True]
    assert replies[1].job.job_id == replies[0].job.job_id != replies[2].job.job_id
    conflict = submit("alice", 0.2)
    assert conflict.code == "ALREADY_EXISTS" and replies[0].job.job_id in conflict.error.details()
    for who, reply in (("alice", replies[0]), ("bob", replies[2])):
        cancel = jpb.CancelJobRequest(job_id=reply.job.job_id).SerializeToString()
        assert invoke(keyed, JOBS + "CancelJob", cancel, as_key(TENANT_KEYS[who])).code == "OK"


# ---- 3. memory ----------------------------------------------------------------------------


def primed_bytes(audio: bytes) -> bytes:
    return pb.ContinueRequest(prime_audio=audio, seconds=0.1).SerializeToString()


def test_memory_stays_flat_under_bad_requests(fuzz):
    """RSS (prometheus_client's process_resident_memory_bytes) before and after 400 bad
    requests, after 50 to warm up: the corpus's refusals, the known-bug requests (their
    exceptions must not leak either) and fresh ~1 MB garbage primes just under the limit."""
    refused = [c for c in CASES if c.expected != "OK" and not c.metadata]
    bugs = list(bug_codes_cases().values())
    rng = np.random.default_rng(1)

    def request(i: int) -> tuple[str, bytes, bool]:
        if i % 4 == 0:
            garbage = rng.bytes(MAX_REQUEST_BYTES - 1024)
            return TOKGEN + "Continue", primed_bytes(garbage), True
        if i % 25 == 1:
            return TOKGEN + "Continue", bugs[i % len(bugs)](fuzz.info), False
        case = refused[i % len(refused)]
        return case.method, case.payload(fuzz.info), True

    def burst(n: int, offset: int) -> None:
        for i in range(offset, offset + n):
            method, payload, checked = request(i)
            outcome = invoke(fuzz, method, payload)
            if checked:
                check(fuzz, outcome, "memory loop")
                assert outcome.code != "OK", (method, str(outcome))

    burst(50, 0)
    before = metric(fuzz, "process_resident_memory_bytes")
    started = time.monotonic()
    burst(400, 50)
    elapsed = time.monotonic() - started
    after = metric(fuzz, "process_resident_memory_bytes")
    growth = (after - before) / 2**20
    print(
        f"\nmemory: RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB "
        f"({growth:+.1f} MiB) over 400 bad requests in {elapsed:.1f} s"
    )
    assert growth < 100
    deadline = time.monotonic() + 30
    while metric(fuzz, "tokgen_requests_active") != 0:
        assert time.monotonic() < deadline, "refused calls still hold admission slots"
        time.sleep(0.1)
    assert_still_serving(fuzz)


# ---- bugs this suite found (each fixed; kept as regressions) ----


@pytest.mark.parametrize("name", sorted(bug_codes_cases()))
def test_codes_files_that_are_almost_codes_files_are_invalid_arguments(fuzz, name):
    outcome = invoke(fuzz, TOKGEN + "Continue", bug_codes_cases()[name](fuzz.info))
    print(f"codes {name}: {outcome}")
    assert_still_serving(fuzz)
    assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "codes"), str(outcome)


@pytest.mark.parametrize("temperature", [1e-45, 1e-42])
def test_a_subnormal_temperature_is_refused_or_served(fuzz, temperature):
    request = pb.ContinueRequest(
        mode=pb.MODE_ANCESTRAL, seconds=0.1, sampling=pb.SamplingParams(temperature=temperature)
    )
    outcome = invoke(fuzz, TOKGEN + "Continue", request.SerializeToString())
    print(f"temperature {temperature}: {outcome}")
    assert_still_serving(fuzz)
    refused = (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "sampling.temperature")
    assert outcome.code == "OK" or refused, str(outcome)


@pytest.mark.parametrize("token", [str(2**63 - 1), str(2**63 - 50), "99999999999999999999"])
def test_a_page_token_past_int64_is_refused_or_an_empty_page(fuzz, token):
    outcome = invoke(fuzz, JOBS + "ListJobs", jpb.ListJobsRequest(page_token=token).SerializeToString())
    print(f"page_token {token}: {outcome}")
    assert_still_serving(fuzz)
    refused = (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "page_token")
    assert outcome.code == "OK" or refused, str(outcome)


@pytest.mark.parametrize("mode", [pb.MODE_CONTINUE, pb.MODE_UPSAMPLE])
def test_empty_codes_are_refused_naming_codes(fuzz, mode):
    request = pb.ContinueRequest(mode=mode, seconds=1.0, codes=b"")
    assert request.WhichOneof("source") == "codes"  # set, if empty
    outcome = invoke(fuzz, TOKGEN + "Continue", request.SerializeToString())
    print(f"empty codes, mode {mode}: {outcome}")
    assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "codes"), str(outcome)


def test_upsample_codes_longer_than_max_seconds_are_refused(fuzz):
    """A codes file decides an UPSAMPLE's length: 610 s of top-level codes (a 5 KB request)
    is a render longer than the 600 s any request may ask for. A refusal is immediate; the
    bug starts a 610 s render (seconds of event-loop work before its first chunk), so the
    call gives up after 3 s."""
    top_frames = round(610 * fuzz.info.sample_rate / fuzz.info.levels[0].hop)
    arrays = good_codes(fuzz.info, top_frames)
    request = pb.ContinueRequest(mode=pb.MODE_UPSAMPLE, codes=npz(arrays, compressed=True))
    outcome = invoke(fuzz, TOKGEN + "Continue", request.SerializeToString(), timeout=3)
    print(f"upsample {top_frames} top frames ({len(request.codes)} bytes): {outcome}")
    assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "codes"), str(outcome)

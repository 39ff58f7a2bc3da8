"""Every Prometheus series tokgen exports, one ``/metrics`` port per process.

Names follow the conventions vLLM, TGI and Triton use: a ``tokgen_`` prefix, base units
(seconds, ratios 0-1), ``_total`` counters, and labels of low cardinality only (gRPC
method and status code, job priority and state, prior level, audio source, the served
model: never request ids, job ids or clients). Buckets are chosen per metric: engine steps
and chunk gaps are milliseconds, streams seconds, jobs up to an hour.

The server's request and latency series carry a ``model`` label (``set_serving_model``):
one value per process, so that two model versions behind one Prometheus (a canary, a
rollout) are told apart in the same queries.

Which process exports what: the server the ``requests``/``time_to_first_audio`` family;
a worker (also the one inside ``tokgen serve`` unless ``--no-worker``) the job attempts
and leases; both the engine series of their own engines and the queue gauges, which are
cluster-wide (every process reports the same value: aggregate them with ``max``).
``deploy/grafana`` and ``deploy/prometheus`` use only the names defined here (tested).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import grpc
from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

import tokgen
from tokgen.errors import TokgenError

# ---- calls (server) ------------------------------------------------------------------
REQUESTS = Counter(
    "tokgen_requests",
    "gRPC calls by method and final status code (health checks excluded)",
    ["method", "code", "model"],
)
# The HTTP API (``tokgen serve --http-port``) serves through the same servicers, so the
# series below count its continuations too; this counts its requests, by route template.
HTTP_REQUESTS = Counter(
    "tokgen_http_requests",
    "HTTP API requests by method, route and status code (the page and /healthz included)",
    ["method", "route", "code", "model"],
)
ACTIVE = Gauge("tokgen_requests_active", "Admission slots held by continuations generating (one per sample)")
WAITING = Gauge("tokgen_requests_waiting", "Continuations waiting for an admission slot")
TIME_TO_FIRST_AUDIO = Histogram(
    "tokgen_time_to_first_audio_seconds",
    "From a Continue call's arrival to its first audio chunk",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
PREPARING = Gauge(
    "tokgen_preparing",
    "Requests decoding and encoding their prime or codes right now (stream: inside an admission "
    "slot; job: SubmitJob, at most --max-preparing at once)",
    ["source"],
)
PREPARE = Histogram(
    "tokgen_prepare_seconds",
    "Decoding and encoding a request's prime or codes, before sampling starts",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CHUNK_GAP = Histogram(
    "tokgen_inter_chunk_seconds",
    "Between consecutive audio chunks of one stream",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REQUEST_DURATION = Histogram(
    "tokgen_request_duration_seconds",
    "Whole Continue calls that completed, arrival to summary",
    ["model"],
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0),
)

# ---- audio (server and workers) ------------------------------------------------------
AUDIO_SECONDS = Counter(
    "tokgen_audio_seconds", "Seconds of audio produced, by source (stream or job)", ["source"]
)
REALTIME_FACTOR = Histogram(
    "tokgen_realtime_factor",
    "Audio seconds per wall-clock second of one stream or job attempt (above 1: faster than real time)",
    ["source"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0),
)

# ---- jobs ----------------------------------------------------------------------------
JOBS_SUBMITTED = Counter("tokgen_jobs_submitted", "Jobs created through SubmitJob, by priority", ["priority"])
JOB_OUTCOMES = Counter(
    "tokgen_job_attempts",
    "Job attempts this worker ended, by the job's state after it (queued: to be retried; "
    "stale: the attempt had been taken over)",
    ["state"],
)
JOB_QUEUE_WAIT = Histogram(
    "tokgen_job_queue_wait_seconds",
    "From a job becoming runnable (submitted, or its retry backoff over) to a worker starting it",
    ["priority"],
    buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
JOB_RUN_SECONDS = Histogram(
    "tokgen_job_run_seconds",
    "One attempt of a job, claim to final state change",
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0),
)
# Sampled from Redis every few seconds by every process with a queue (cluster-wide values).
JOBS_QUEUED = Gauge("tokgen_jobs_queued", "Jobs waiting for a worker, by priority", ["priority"])
JOBS_RUNNING = Gauge("tokgen_jobs_running", "Jobs held by a worker (leased), by priority", ["priority"])
JOBS_DELAYED = Gauge("tokgen_jobs_delayed", "Failed attempts waiting out their retry backoff")
DEAD_LETTERS = Gauge("tokgen_jobs_dead_letter", "Entries in the dead-letter stream (jobs out of attempts)")
REDIS_UP = Gauge("tokgen_redis_up", "1 if the last Redis check of this process succeeded, else 0")

# ---- this worker ---------------------------------------------------------------------
WORKER_SLOTS = Gauge("tokgen_worker_slots", "Jobs this worker may render at once (0: not claiming)")
LEASES_HELD = Gauge("tokgen_worker_leases_held", "Jobs this worker holds a lease on (rendering)")
LEASES_RECLAIMED = Counter(
    "tokgen_worker_leases_reclaimed", "Jobs this worker took over from a worker whose lease expired"
)
LEASES_LOST = Counter(
    "tokgen_worker_leases_lost", "Attempts this worker stopped because another worker took them over"
)

# ---- engines (one per prior level) ---------------------------------------------------
ENGINE_RUNNING = Gauge("tokgen_engine_requests_running", "Sequences in the engine's batch", ["level"])
ENGINE_WAITING = Gauge("tokgen_engine_requests_waiting", "Sequences waiting to join the batch", ["level"])
KV_CACHE_USAGE = Gauge(
    "tokgen_engine_kv_cache_usage_ratio",
    "Fraction of the engine's KV cache in use (vllm: blocks; hf: batch rows)",
    ["level"],
)
GENERATED_TOKENS = Counter("tokgen_engine_generated_tokens", "Tokens sampled by the engine", ["level"])
PROMPT_TOKENS = Counter("tokgen_engine_prompt_tokens", "Prompt tokens prefilled by the engine", ["level"])
STEP_SECONDS = Histogram(
    "tokgen_engine_step_seconds",
    "One engine step (a forward pass over the batch)",
    ["level"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)
BATCH_SIZE = Histogram(
    "tokgen_engine_batch_size",
    "Sequences in one engine step",
    ["level"],
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256),
)

BUILD = Info("tokgen_build", "Version, role, engine backend and model ids of this process")


# The ``model`` label of this process' request and latency series (``set_serving_model``);
# "unknown" in a server built without it (tests, embedding code).
_serving_model = "unknown"


def set_serving_model(codec_dir: Path, priors_dir: Path) -> str:
    """Label the request and latency series with the models this server serves:
    ``CODEC_ID+PRIORS_ID``, the ids ``tokgen_build_info`` shows (``model_id``), e.g.
    ``codec@0a1b2c3d4e5f+priors@5f4e3d2c1b0a``. Reads the weights to hash them (cached, and
    ``set_build_info`` then reuses the hashes): call it in a thread. Returns the label."""
    global _serving_model
    _serving_model = f"{model_id(codec_dir)}+{model_id(priors_dir)}"
    return _serving_model


def serving_model() -> str:
    """The ``model`` label value of this process' request and latency series."""
    return _serving_model


def count_call(method: str, code: grpc.StatusCode) -> None:
    REQUESTS.labels(method, code.name, _serving_model).inc()


def model_id(directory: Path) -> str:
    """``name@hash``: the folder's name and the first 12 hex digits of the SHA-256 of its
    weights (every ``*.safetensors`` below it), so a dashboard shows which models run."""
    files = tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.rglob("*.safetensors"))
    )
    return f"{directory.name}@{_weights_digest(files)}"


@functools.lru_cache(maxsize=32)
def _weights_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    """The first 12 hex digits of the SHA-256 of ``files`` (path, size, mtime), read in
    order. Cached on exactly those: a server hashes its weights once for its metrics' model
    label and once for its build info, and the weights may be gigabytes."""
    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:12]


def set_build_info(role: str, backend: str, codec_dir: Path, priors_dir: Path) -> None:
    BUILD.info(
        {
            "version": tokgen.__version__,
            "role": role,
            "backend": backend,
            "codec": model_id(codec_dir),
            "priors": model_id(priors_dir),
        }
    )


def start_metrics_server(host: str, port: int) -> int:
    """Serve ``/metrics`` in a thread (it coexists with ``grpc.aio``); returns the port.
    A port in use is one clear error naming the setting, not a traceback (two processes
    on one host both default to 9464)."""
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        raise TokgenError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose another "
            "--metrics-port (TOKGEN_METRICS_PORT), or 0 for any free port"
        ) from None
    return int(server.server_port)

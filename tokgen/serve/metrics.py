"""Prometheus metrics of the serving process, on its own ``/metrics`` port.

Names follow the Prometheus conventions vLLM, TGI and Triton use: a ``tokgen_`` prefix,
base units (seconds), ``_total`` counters, labels of low cardinality only (the method and
the gRPC status code: never request ids or clients). Buckets are chosen per metric: chunk
gaps are milliseconds, whole requests are up to minutes.
"""

from __future__ import annotations

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter("tokgen_requests", "gRPC calls by method and final status code", ["method", "code"])
ACTIVE = Gauge("tokgen_requests_active", "Continuations holding an admission slot (generating)")
WAITING = Gauge("tokgen_requests_waiting", "Continuations waiting for an admission slot")
TIME_TO_FIRST_AUDIO = Histogram(
    "tokgen_time_to_first_audio_seconds",
    "From a Continue call's arrival to its first audio chunk",
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
PREPARE = Histogram(
    "tokgen_prepare_seconds",
    "Decoding and encoding a request's prime or codes, before sampling starts",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CHUNK_GAP = Histogram(
    "tokgen_inter_chunk_seconds",
    "Between consecutive audio chunks of one stream",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REQUEST_DURATION = Histogram(
    "tokgen_request_duration_seconds",
    "Whole Continue calls that completed, arrival to summary",
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0),
)
AUDIO_SECONDS = Counter("tokgen_audio_seconds", "Seconds of audio streamed to clients")
JOB_OUTCOMES = Counter(
    "tokgen_job_attempts", "Job attempts this worker ended, by the job's state after it", ["state"]
)
JOBS_RUNNING = Gauge("tokgen_jobs_running", "Jobs this worker is rendering")
JOB_RUN_SECONDS = Histogram(
    "tokgen_job_run_seconds",
    "One attempt of a job, claim to final state change",
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0),
)


def count_call(method: str, code: grpc.StatusCode) -> None:
    REQUESTS.labels(method, code.name).inc()


def start_metrics_server(host: str, port: int) -> int:
    """Serve ``/metrics`` in a thread (it coexists with ``grpc.aio``); returns the port."""
    server, _ = start_http_server(port, addr=host)
    return int(server.server_port)

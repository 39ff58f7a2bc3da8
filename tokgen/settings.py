"""Process-wide settings, read from the environment (prefix ``TOKGEN_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokgen.errors import TokgenError

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


class LogSettings(BaseSettings):
    """How a process logs (``tokgen.logs``). A class of its own because every command reads
    it before it does anything else: a bad unrelated setting (say ``TOKGEN_PORT``) must not
    keep ``tokgen encode`` from starting. ``Settings`` includes these fields."""

    model_config = SettingsConfigDict(env_prefix="TOKGEN_", populate_by_name=True)

    # debug also shows tracebacks of unexpected errors and third-party libraries' INFO lines
    log_level: LogLevel = "info"
    # text: one line per record for people; json: one JSON object per line for log shippers
    log_format: LogFormat = "text"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        """``TOKGEN_LOG_LEVEL=INFO`` is as good as ``info``."""
        return value.lower() if isinstance(value, str) else value


class Settings(LogSettings):
    # Where derived data is cached (e.g. the held-out renders `codec eval` makes).
    cache_dir: Path = Path.home() / ".cache" / "tokgen"
    # Token generation engine when none is named: auto = vllm where importable, else hf.
    engine_backend: Literal["auto", "vllm", "hf"] = "auto"
    # KV cache of each vLLM engine (one per prior level) in a server or worker; ~2.5 MiB
    # holds one sequence of the shipped priors at full context (docs/OPERATIONS.md)
    engine_kv_cache_bytes: int = Field(default=1 << 30, ge=16 << 20)
    # Weights and arithmetic of the priors in the engines. bfloat16 is faster in vLLM's
    # kernels on CPUs with avx512_bf16 or AMX, slower in plain torch (the hf engine) on
    # CPUs without AMX (docs/PERFORMANCE.md); auto: bfloat16 where it is faster (vLLM on
    # such a CPU), else float32 (``engine.factory.resolve_dtype``).
    engine_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # `tokgen serve`: processes that decode and encode stream primes (0: threads of the
    # server, which wait for its interpreter lock under load), and the niceness of its vLLM
    # engine processes, so that a new request's prime does not queue behind the engines'
    # bulk work for the streams already playing (docs/PERFORMANCE.md)
    prepare_workers: int = Field(default=2, ge=0, le=64)
    engine_nice: int = Field(default=5, ge=0, le=19)

    # Models (flags --codec and --priors); unset: the shipped codec and priors.
    codec: Path | None = None
    priors: Path | None = None

    # `tokgen serve` (each also a flag: --host, --port, ...; the flag wins).
    host: str = "127.0.0.1"  # beyond loopback, TLS and API keys are required (see --insecure)
    port: int = Field(default=50051, ge=0, le=65535)  # 0: any free port
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # Prometheus /metrics; 0: any free port
    # the HTTP/JSON API and the web page at / (same models, keys, admission and TLS); unset: off
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # gRPC health alone, plaintext, for probes (the API port may need TLS and keys); unset: off
    health_port: int | None = Field(default=None, ge=0, le=65535)
    max_active: int = Field(default=8, ge=1)  # continuations generating at once (they share the engine)
    max_queued: int = Field(default=16, ge=0)  # more wait for a slot; beyond: RESOURCE_EXHAUSTED
    max_request_bytes: int = Field(default=64 << 20, ge=1 << 16)  # a 60 s 48 kHz stereo WAV is ~11 MB
    # gRPC calls in flight at once, of every kind (beyond: RESOURCE_EXHAUSTED before the request
    # is read); with max_request_bytes it bounds what requests in flight can hold
    max_concurrent_rpcs: int = Field(default=128, ge=4)
    max_watchers: int = Field(default=64, ge=1)  # WatchJob calls at once (one shared Redis poller)
    # SubmitJobs decoding and encoding their prime at once (a batch job encodes all of it:
    # ~9 MiB per second of prime with the shipped codec, 520 MiB for 60 s); more wait
    max_preparing: int = Field(default=2, ge=1)
    grace_seconds: float = Field(default=10.0, ge=0)  # on SIGTERM: for in-flight streams, running jobs
    api_keys_file: Path | None = None  # one key per line; TOKGEN_API_KEYS adds comma-separated keys
    # keys that also see every tenant's jobs; TOKGEN_OPERATOR_API_KEYS adds comma-separated ones
    operator_keys_file: Path | None = None
    tls_cert: Path | None = None  # PEM certificate chain
    tls_key: Path | None = None  # PEM private key
    tls_client_ca: Path | None = None  # PEM CA for client certificates: mutual TLS
    insecure: bool = False  # allow a non-loopback address without TLS or API keys

    # Batch jobs (`tokgen worker`).
    # REDIS_URL (the usual name) or TOKGEN_REDIS_URL; redis+cluster:// (rediss+cluster://)
    # for a Redis Cluster; unset: an embedded redis-server under cache_dir/redis, owned
    # by the process
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TOKGEN_REDIS_URL", "REDIS_URL")
    )
    worker: bool = True  # `tokgen serve` also renders jobs in-process (--no-worker: API only)
    worker_concurrency: int = Field(default=4, ge=1)  # jobs one worker renders at once
    lease_seconds: float = Field(default=15.0, gt=0)  # a worker silent this long has lost its jobs
    # A finished job's record (state, error, times; not its prime) stays this long after it
    # finished, then expires from Redis and from listings; its result stays result_ttl_seconds
    # (at most as long). Applied by whichever process finishes the job: set it alike on
    # servers and workers.
    job_retention_seconds: float = Field(default=7 * 24 * 3600.0, ge=1)
    result_ttl_seconds: float = Field(default=24 * 3600.0, ge=1)
    # Unfinished jobs (queued or running) one API key may have; beyond: RESOURCE_EXHAUSTED,
    # so that one tenant cannot fill the queue's 10,000 for everyone.
    max_jobs_per_key: int = Field(default=1000, ge=1)


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC and people write it: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def redact_url(url: str) -> str:
    """``url`` safe to print or log: a password in it (``redis://user:PASSWORD@host``,
    ``unix://:PASSWORD@/path``, a ``?password=`` parameter) becomes ``***``; a URL without
    one comes back unchanged. Userinfo without a colon may be a password alone
    (``redis://PASSWORD@host``): all of it goes."""
    scheme, sep, rest = url.partition("://")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: keep only what follows the last @
        return (
            f"{scheme}{sep}***@{rest.rsplit('@', 1)[-1].split('?')[0]}" if "@" in url else url.split("?")[0]
        )
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    netloc = (f"{user}:***@{host}" if colon else f"***@{host}") if at else parts.netloc
    secret = ("pass", "secret", "token")
    query = "&".join(
        f"{key}=***" if eq and any(word in key.lower() for word in secret) else item
        for item in parts.query.split("&")
        for key, eq, _ in [item.partition("=")]
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def get_settings() -> Settings:
    return _read(Settings)


def get_log_settings() -> LogSettings:
    return _read(LogSettings)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _read(kind: type[SettingsT]) -> SettingsT:
    """``kind`` from the environment; a bad value is one ``TokgenError`` naming its variable."""
    try:
        return kind()
    except ValidationError as exc:
        problems = "; ".join(
            f"TOKGEN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise TokgenError(f"bad setting: {problems}") from None

"""``tokgen serve``, ``tokgen worker`` and ``tokgen health``.

The options of ``serve`` and ``worker`` are ``tokgen.settings.Settings`` fields: each
flag's type, choices, default and environment variable come from the field, and only the
flags given on the command line override the environment (flag > ``TOKGEN_*`` > default).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from typing import TYPE_CHECKING, Literal, Union, get_args, get_origin

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from tokgen.cli.common import default_address
from tokgen.cli.exits import Exit
from tokgen.errors import TokgenError
from tokgen.settings import Settings

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands

# Flags named otherwise than their field (a bool field that defaults to true is turned
# off by --no-FIELD).
_FLAG_NAMES = {"engine_backend": "--backend"}

# The fields `tokgen serve` takes as flags, in --help order, with their help (the default
# and the environment variable are added from the field).
SERVE_OPTIONS = {
    "host": "address to bind",
    "port": "gRPC port; 0: any free port, printed",
    "metrics_port": "Prometheus /metrics port; 0: any",
    "http_port": "HTTP API and web page (same models, keys and admission); 0: any (unset: off)",
    "health_port": "plaintext gRPC health for probes; 0: any (unset: off)",
    "priors": "prior set directory (unset: the shipped priors)",
    "codec": "codec model directory (unset: the shipped codec)",
    "engine_backend": "token generation engine; auto: vllm where installed, else hf",
    "max_active": "continuations generating at once",
    "max_queued": "continuations waiting for a slot",
    "max_request_bytes": "largest request accepted, in bytes",
    "max_concurrent_rpcs": "gRPC calls in flight at once; beyond: RESOURCE_EXHAUSTED",
    "max_watchers": "WatchJob calls at once (one shared poller)",
    "max_preparing": "SubmitJobs decoding and encoding their prime at once",
    "grace_seconds": "for in-flight streams on SIGTERM",
    "api_keys_file": "one key per line; TOKGEN_API_KEYS adds comma-separated keys",
    "operator_keys_file": "keys that see every tenant's jobs; TOKGEN_OPERATOR_API_KEYS adds more",
    "tls_cert": "PEM certificate chain: serve TLS only",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA: require client certificates it signed (mTLS)",
    "insecure": "allow a non-loopback address without TLS or API keys",
    "redis_url": "job queue: redis://, rediss://, unix:// or redis+cluster:// (unset: embedded)",
    "worker": "serve the API only: no jobs rendered here",
    "worker_concurrency": "jobs the in-process worker renders at once",
    "lease_seconds": "job lease renewed while it runs",
    "job_retention_seconds": "a finished job's record is kept this long",
    "result_ttl_seconds": "a succeeded job's result is kept this long (at most the retention)",
    "max_jobs_per_key": "unfinished jobs one API key may have queued or running",
}

# The fields `tokgen worker` takes as flags.
WORKER_OPTIONS = {
    "redis_url": "redis://, rediss://, unix:// or redis+cluster:// URL (unset: an embedded server)",
    "priors": SERVE_OPTIONS["priors"],
    "codec": SERVE_OPTIONS["codec"],
    "engine_backend": SERVE_OPTIONS["engine_backend"],
    "worker_concurrency": "jobs rendered at once",
    "lease_seconds": "lease renewed while a job runs",
    "host": "address of the metrics and health ports",
    "metrics_port": SERVE_OPTIONS["metrics_port"],
    "health_port": "gRPC health for probes; 0: any (unset: off)",
    "grace_seconds": "for running jobs on SIGTERM",
    "job_retention_seconds": SERVE_OPTIONS["job_retention_seconds"],
    "result_ttl_seconds": SERVE_OPTIONS["result_ttl_seconds"],
}


def flag_of(name: str) -> str:
    """The command-line flag of Settings field ``name``."""
    field = Settings.model_fields[name]
    if field.annotation is bool and field.default is True:
        return f"--no-{name.replace('_', '-')}"
    return _FLAG_NAMES.get(name, f"--{name.replace('_', '-')}")


def env_vars(name: str) -> list[str]:
    """The environment variables Settings reads field ``name`` from."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"{Settings.model_config.get('env_prefix', '')}{name}".upper()]


def _value_types(field: FieldInfo) -> tuple:
    """The annotation's types, ``None`` dropped (``int | None`` -> ``(int,)``)."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_settings_options(p: argparse.ArgumentParser, options: dict[str, str]) -> None:
    """One flag per Settings field in ``options`` (field -> help). Every flag defaults to
    None, so that only the flags given override the settings (``settings_with_flags``)."""
    for name, text in options.items():
        field = Settings.model_fields[name]
        env = " or ".join(env_vars(name))
        (kind,) = _value_types(field)
        if kind is bool:
            flag = flag_of(name)
            action = "store_false" if flag.startswith("--no-") else "store_true"
            help_text = f"{text} [env {env}={str(action == 'store_true').lower()}]"
            p.add_argument(flag, dest=name, action=action, default=None, help=help_text.replace("%", "%%"))
            continue
        default = "" if field.default is None else f" (default {_shown(field.default)})"
        extra: dict = {"type": kind} if kind in (int, float) else {}
        if get_origin(kind) is Literal:
            extra["choices"] = get_args(kind)
        help_text = f"{text}{default} [env {env}]"
        p.add_argument(flag_of(name), dest=name, default=None, help=help_text.replace("%", "%%"), **extra)


def settings_with_flags(args: argparse.Namespace) -> Settings:
    """Settings (env ``TOKGEN_*``), overridden by the flags given on the command line."""
    from pydantic import ValidationError

    from tokgen.settings import get_settings

    flags = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        return Settings.model_validate(get_settings().model_dump() | flags)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise TokgenError(f"bad option {flag_of(str(error['loc'][0]))}: {error['msg']}") from None


def _print_where(where: object) -> None:
    print(json.dumps(where), flush=True)


def cmd_serve(args: argparse.Namespace) -> None:
    import asyncio

    from tokgen.serve.server import serve

    asyncio.run(serve(settings_with_flags(args), _print_where))


def cmd_worker(args: argparse.Namespace) -> None:
    import asyncio

    from tokgen.jobs.run import run_worker

    asyncio.run(run_worker(settings_with_flags(args), _print_where))


def cmd_health(args: argparse.Namespace) -> None:
    """Exit 0 if SERVING, else 1 (``Exit.NOT_SERVING``), also when nothing answers:
    Docker's HEALTHCHECK reads 1 as unhealthy and reserves 2, the code other tokgen errors
    exit with."""
    from tokgen.monitoring.health import check

    try:
        status = check(args.address, args.service, args.timeout)
    except TokgenError as exc:
        print(f"tokgen: {exc}", file=sys.stderr)
        sys.exit(Exit.NOT_SERVING)
    print(status)
    if status != "SERVING":
        sys.exit(Exit.NOT_SERVING)


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "serve",
        help="serve streamed continuations over gRPC (tokgen.v1.TokgenService) and optionally HTTP",
        description="Every option also reads its environment variable (shown); a flag wins.",
    )
    add_settings_options(p, SERVE_OPTIONS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker",
        help="render batch jobs from the Redis queue",
        description="Every option also reads its environment variable (shown); a flag wins.",
    )
    add_settings_options(p, WORKER_OPTIONS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "health",
        help="gRPC health check of a server or worker (exit 0 only if SERVING)",
        description="For container HEALTHCHECKs and scripts; plaintext (use the --health-port).",
    )
    address = default_address()
    p.add_argument("--address", default=address, help=f"host:port (default {address})")
    p.add_argument("--service", default="", help="'' (default): ready to work; live: the process runs")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_health)

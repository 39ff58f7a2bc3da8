"""``tokgen client continue|info`` and ``tokgen jobs ...``: calls to a running ``tokgen serve``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tokgen.cli.common import (
    add_mode_argument,
    add_output_arguments,
    add_sampling_arguments,
    default_address,
)
from tokgen.errors import TokgenError
from tokgen.names import PRIORITIES

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands


def _client(args: argparse.Namespace):
    from tokgen.client import AsyncTokgenClient, TlsOptions

    key = os.environ.get("TOKGEN_API_KEY")
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text().strip()
        except OSError as exc:
            raise TokgenError(f"cannot read {args.api_key_file}: {exc.strerror}") from None
    paths = [Path(p) if p else None for p in (args.tls_ca, args.tls_cert, args.tls_key)]
    tls = TlsOptions(*paths) if args.tls or any(paths) else None
    return AsyncTokgenClient(args.server, key, tls)


def _request(args: argparse.Namespace):
    from tokgen.client import continue_request

    return continue_request(
        seconds=args.seconds,
        prime=Path(args.prime) if args.prime else None,
        codes=Path(args.codes) if args.codes else None,
        mode=args.mode,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        key_guidance=args.key_guidance,
        instrument_guidance=args.instrument_guidance,
        priority=args.priority,
        num_samples=args.num_samples,
        sample_rate=args.sample_rate,
        loudness_lufs=args.loudness_lufs,
    )


def cmd_client_continue(args: argparse.Namespace) -> None:
    import asyncio

    request = _request(args)

    async def run():
        async with _client(args) as client:
            return await client.continue_to_file(request, Path(args.out), args.timeout)

    result = asyncio.run(run())
    report = {
        "out": str(result.out),
        "outs": [str(o) for o in result.outs],  # sample i in outs[i], sampled with seeds[i]
        "seconds": round(result.audio_seconds, 3),
        "time_to_first_audio_s": round(result.time_to_first_audio_s, 3),
        "total_s": round(result.total_s, 3),
        "tokens": [lv.tokens for lv in result.summary.levels],
        "seed": result.summary.seed,  # sending it back reproduces the audio
        "seeds": list(result.summary.seeds),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"time to first audio: {report['time_to_first_audio_s']} s; wrote {report['seconds']} s "
            f"to {', '.join(report['outs'])} in {report['total_s']} s"
        )


def cmd_client_info(args: argparse.Namespace) -> None:
    import asyncio

    import grpc
    from google.protobuf.json_format import MessageToDict

    from tokgen.client import server_error

    async def run():
        async with _client(args) as client:
            return await client.model_info()

    try:
        info = asyncio.run(run())
    except grpc.RpcError as err:
        raise server_error(err) from None
    print(
        json.dumps(
            MessageToDict(info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
            indent=None if args.json else 2,
        )
    )


def cmd_jobs(args: argparse.Namespace) -> None:
    from tokgen.client.jobs import run_jobs_command

    run_jobs_command(args, lambda: _client(args), _request)


def _add_job_arguments(p: argparse.ArgumentParser, job_id: bool) -> None:
    if job_id:
        p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    _add_connection_arguments(p)
    p.set_defaults(func=cmd_jobs)


def _add_request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prime", help="prime audio (WAV, FLAC or OGG); modes primed")
    p.add_argument("--codes", help="saved codes (.npz); modes continue and upsample")
    p.add_argument("--seconds", type=float, required=True, help="seconds of continuation to generate")
    add_mode_argument(p)
    add_sampling_arguments(p, seed=None)
    p.add_argument("--priority", default="normal", choices=list(PRIORITIES))
    add_output_arguments(p)


def _add_connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("TOKGEN_SERVER") or default_address(),
        help=f"HOST:PORT of `tokgen serve` (default: the TOKGEN_SERVER variable, else {default_address()})",
    )
    p.add_argument("--api-key-file", help="file holding the API key (or set TOKGEN_API_KEY)")
    p.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs")
    p.add_argument("--tls-ca", help="PEM CA to trust for the server (implies --tls)")
    p.add_argument("--tls-cert", help="PEM client certificate, for servers that require mTLS")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")


def register(sub: Subcommands) -> None:
    client = sub.add_parser("client", help="call a running `tokgen serve`").add_subparsers(
        dest="client_cmd", required=True
    )
    p = client.add_parser("continue", help="stream a continuation into an audio file")
    _add_request_arguments(p)
    p.add_argument("--out", required=True, help="audio file to write (.wav, .flac or .ogg)")
    p.add_argument("--timeout", type=float, default=None, help="gRPC deadline in seconds (default none)")
    p.add_argument("--json", action="store_true")
    _add_connection_arguments(p)
    p.set_defaults(func=cmd_client_continue)
    p = client.add_parser("info", help="the served models and the server's limits")
    p.add_argument("--json", action="store_true")
    _add_connection_arguments(p)
    p.set_defaults(func=cmd_client_info)

    jobs = sub.add_parser("jobs", help="batch render jobs on a running `tokgen serve`").add_subparsers(
        dest="jobs_cmd", required=True
    )
    p = jobs.add_parser("submit", help="queue a render; prints {job_id, created}")
    _add_request_arguments(p)
    p.add_argument("--idempotency-key", help="submitting again with this key returns the same job")
    _add_job_arguments(p, job_id=False)
    for name, text in (("status", "a job's state and progress"), ("cancel", "cancel a job")):
        _add_job_arguments(jobs.add_parser(name, help=text), job_id=True)
    p = jobs.add_parser("watch", help="print a job's state as it changes, until it is final")
    _add_job_arguments(p, job_id=True)
    p = jobs.add_parser("list", help="jobs, newest first")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled", "dead"])
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    _add_job_arguments(p, job_id=False)
    p = jobs.add_parser("fetch", help="write a succeeded job's audio (and codes)")
    p.add_argument("--out", required=True, help="WAV file to write")
    p.add_argument("--codes-out", help="also write every level's codes (.npz)")
    _add_job_arguments(p, job_id=True)

"""``tokgen bench engine|generate|serve|queue``: benchmarks (``tokgen.bench``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tokgen.cli.common import add_backend_argument, add_segment_argument, interrupt_on_sigterm

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands


def _report(result: dict, as_json: bool) -> None:
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))


def _rounds(text: str) -> int:
    try:
        rounds = int(text)
    except ValueError:
        rounds = 0
    if rounds < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rounds, at least 1, got {text!r}")
    return rounds


def cmd_bench_engine(args: argparse.Namespace) -> None:
    from tokgen.bench.engine import bench_engines

    batches = tuple(int(b) for b in args.batches.split(","))
    result = bench_engines(
        Path(args.prior) if args.prior else None,
        args.prompt_tokens,
        args.new_tokens,
        batches,
        args.dtype,
        args.vllm_dtype,
        args.rounds,
    )
    _report(result, args.json)


def cmd_bench_generate(args: argparse.Namespace) -> None:
    from tokgen.bench.generate import bench_generate

    concurrency = (1, args.concurrency)
    result = bench_generate(
        Path(args.codec) if args.codec else None,
        Path(args.priors) if args.priors else None,
        args.backend,
        args.seconds,
        concurrency,
        args.segment_seconds,
        args.overlap_seconds,
    )
    _report(result, args.json)


def cmd_bench_serve(args: argparse.Namespace) -> None:
    from tokgen.bench.serve import bench_serve

    interrupt_on_sigterm()  # a stopped bench stops the server it started (and its engines)
    result = bench_serve(args.backend, args.seconds, (1, args.concurrency), args.requests, args.server_arg)
    _report(result, args.json)


def cmd_bench_queue(args: argparse.Namespace) -> None:
    from tokgen.bench.queue import bench_queue

    interrupt_on_sigterm()  # a stopped bench stops the processes it started
    result = bench_queue(args.backend, args.jobs, args.seconds, args.worker_concurrency)
    _report(result, args.json)


def register(sub: Subcommands) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_cmd", required=True)
    p = bench.add_parser(
        "engine", help="vLLM, in-process engine, a bare reference loop and transformers generate: tokens/s"
    )
    p.add_argument("--prior", default=None, help="prior directory (default: a random default-size prior)")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument(
        "--batches", default="1,16,64", help="concurrent requests, comma-separated (default 1,16,64)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the reference, transformers generate and hf (default float32: plain torch is slower in bf16 "
        "without AMX)",
    )
    p.add_argument(
        "--vllm-dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="vLLM (default auto: what generation uses, bf16 on a CPU with bf16 arithmetic)",
    )
    p.add_argument(
        "--rounds",
        type=_rounds,
        default=3,
        help="times each way runs each batch, interleaved; the figures are the medians (default 3)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_engine)

    p = bench.add_parser("generate", help="real-time factor of whole continuations, 1 and N at once")
    p.add_argument("--priors", default=None, help="prior set directory (default: the shipped priors)")
    p.add_argument("--codec", default=None, help="codec model directory (default: shipped codec)")
    add_backend_argument(p)
    p.add_argument("--seconds", type=float, default=10.0, help="audio per request (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent requests of the second run")
    add_segment_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_generate)

    p = bench.add_parser("serve", help="time to first audio and real-time factor through a real server")
    add_backend_argument(p)
    p.add_argument("--seconds", type=float, default=10.0, help="audio per request (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients of the second run")
    p.add_argument("--requests", type=int, default=3, help="requests per client, back to back")
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra `tokgen serve` argument (repeatable)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_serve)

    p = bench.add_parser("queue", help="jobs/s and mean batch through the Redis queue, 1 and 2 workers")
    add_backend_argument(p)
    p.add_argument("--jobs", type=int, default=16, help="jobs per run (default 16)")
    p.add_argument("--seconds", type=float, default=2.0, help="audio per job (default 2)")
    p.add_argument("--worker-concurrency", type=int, default=4, help="jobs per worker at once")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_queue)

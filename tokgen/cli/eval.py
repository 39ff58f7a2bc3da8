"""``tokgen eval continuation|train-classifier``: objective evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tokgen.cli.common import (
    add_backend_argument,
    add_sampling_arguments,
    add_segment_argument,
    held_out_corpus,
    instrument_guidance,
    key_guidance,
)
from tokgen.errors import TokgenError

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands


def cmd_eval_continuation(args: argparse.Namespace) -> None:
    from tokgen.codec import load_codec
    from tokgen.eval.classifier import load_classifier
    from tokgen.eval.continuation import HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS, evaluate_continuations
    from tokgen.eval.embeddings import load_embedding
    from tokgen.generation.generate import check_settings
    from tokgen.generation.generator import Generator
    from tokgen.generation.sampler import SamplingSettings

    sampling = SamplingSettings(
        args.temperature, args.top_k, args.top_p, args.seed, key_guidance(args), instrument_guidance(args)
    )
    codec = load_codec(args.codec)
    check_settings(codec, sampling)  # before the engines start
    if args.data:
        data = Path(args.data)
    else:
        data = held_out_corpus(codec.sample_rate, HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS)
    embeddings = {name: load_embedding(name) for name in ("aisfx", "classic")}
    classifier = load_classifier(args.classifier)
    generator = Generator.load(
        codec,
        args.priors,
        args.backend,
        segment_seconds=args.segment_seconds,
        overlap_seconds=args.overlap_seconds,
    )
    result = evaluate_continuations(
        generator,
        data,
        args.split,
        args.n,
        args.prime_seconds,
        args.seconds,
        embeddings,
        classifier,
        sampling,
        args.ablations,
        bootstrap=args.bootstrap,
        plots=Path(args.plots) if args.plots else None,
        fad_inf=args.fad_inf,
    )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['n']} held-out pieces continued, {result['n']} others for real_vs_real; "
        f"{args.prime_seconds:g} s primes, {args.seconds:g} s continuations"
    )
    print(
        f"timbre classifier: {result['classifier']['accuracy_on_real']:.0%} right on the real continuations"
    )

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def interval(m: dict, key: str) -> str:
        ci = m.get(key)
        return "" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"

    print(
        f"{'system':<22} {'n':>4} {'FAD':>7} {'95% CI':>15} {'FAD cl.':>8} {'95% CI':>15} {'KID':>8} "
        f"{'KID ai':>7} {'IS':>5} {'timbre':>6} {'key':>6} {'seams':>6} {'excess':>6} {'codes':>6}"
    )
    for name, m in result["systems"].items():
        print(
            f"{name:<22} {m['n']:>4} {m['fad']:>7.2f} {interval(m, 'fad_ci95'):>15} {m['fad_classic']:>8.2f} "
            f"{interval(m, 'fad_classic_ci95'):>15} {m['kid']:>8.3f} {m['kid_aisfx']:>7.3f} {m['is']:>5.2f} "
            f"{m['timbre_consistency']:>6.2f} {m['key_consistency']:>6.2f} "
            f"{number(m.get('seam_flux_ratio'), 2):>6} {number(m.get('seam_flux_excess'), 2):>6} "
            f"{number(m.get('distinct_code_ratio'), 2):>6}"
        )
    print(
        "seams: spectral flux at the bottom segments' seams / elsewhere; excess: that over the real "
        "continuations' at the same positions; codes: distinct bottom codes / the real continuation's"
    )
    if args.plots:
        print(f"spectrograms of the first clips in {args.plots}")


def cmd_eval_timbre_swap(args: argparse.Namespace) -> None:
    from tokgen.codec import load_codec
    from tokgen.codec.top_levels import TopLevels
    from tokgen.eval.classifier import load_classifier
    from tokgen.eval.continuation import HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS, pieces
    from tokgen.eval.timbre_swap import timbre_swap

    if args.n < 1 or args.seconds <= 0 or args.prime_seconds <= 0:
        raise TokgenError("--n, --seconds and --prime-seconds must be positive")
    codec = load_codec(args.codec)
    if args.levels is not None:
        codec = TopLevels(codec, args.levels)
    data = (
        Path(args.data)
        if args.data
        else held_out_corpus(codec.sample_rate, HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS)
    )
    clips = pieces(data, args.split, args.n, args.prime_seconds, args.seconds, codec.sample_rate)
    result = {"codec": codec.name, **timbre_swap(codec, load_classifier(args.classifier), clips)}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


def cmd_eval_train_classifier(args: argparse.Namespace) -> None:
    from tokgen.eval.classifier import TrainClassifierConfig, train_classifier

    cfg = TrainClassifierConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    print(json.dumps(train_classifier(Path(args.data), Path(args.out), cfg)))


def register(sub: Subcommands) -> None:
    evaluation = sub.add_parser("eval", help="objective evaluation").add_subparsers(
        dest="eval_cmd", required=True
    )
    p = evaluation.add_parser(
        "continuation", help="FAD and KID of continuations of held-out primes, against baselines"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--n",
        type=int,
        default=128,
        help="held-out pieces to continue (default 128); real_vs_real takes n others",
    )
    p.add_argument("--prime-seconds", type=float, default=4.0)
    p.add_argument("--seconds", type=float, default=5.0, help="continuation length (default 5)")
    p.add_argument("--codec", help="codec model directory (default: shipped codec)")
    p.add_argument("--priors", help="prior set directory (default: the shipped priors)")
    add_backend_argument(p)
    add_segment_argument(p)
    p.add_argument("--data", help="rendered corpus with a test split (default: held-out renders, cached)")
    p.add_argument("--split", default="test", help="which split's pieces (default test: never trained on)")
    p.add_argument("--classifier", help="timbre classifier directory (default: the shipped one)")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also score model_real_levels_K: the top K levels' real codes, the rest sampled",
    )
    p.add_argument(
        "--bootstrap", type=int, default=200, help="resamples for the FAD intervals (default 200; 0: none)"
    )
    p.add_argument("--plots", help="folder for spectrograms of the first primes and their continuations")
    p.add_argument("--fad-inf", action="store_true", help="also FAD-infinity (unreliable at small n)")
    add_sampling_arguments(p)
    p.set_defaults(func=cmd_eval_continuation)

    p = evaluation.add_parser(
        "timbre-swap",
        help="decode held-out codes with another piece's timbre reference: which instrument is heard",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--n", type=int, default=64, help="held-out pieces (default 64)")
    p.add_argument("--prime-seconds", type=float, default=4.0, help="reference clip: the prime (default 4)")
    p.add_argument("--seconds", type=float, default=5.0, help="decoded clip (default 5)")
    p.add_argument("--codec", help="codec model directory (default: shipped codec)")
    p.add_argument("--data", help="rendered corpus with a test split (default: held-out renders, cached)")
    p.add_argument("--split", default="test")
    p.add_argument("--classifier", help="timbre classifier directory (default: the shipped one)")
    p.add_argument(
        "--levels", type=int, help="decode from the top N levels only (the shipped priors generate 2)"
    )
    p.set_defaults(func=cmd_eval_timbre_swap)

    p = evaluation.add_parser(
        "train-classifier", help="train the timbre classifier (GM family) used for IS, KID and consistency"
    )
    p.add_argument("--data", required=True, help="directory made by `tokgen data render` (train + valid)")
    p.add_argument("--out", required=True, help="classifier directory to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_eval_train_classifier)

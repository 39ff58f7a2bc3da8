"""``tokgen prior train|export|eval``: the per-level priors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tokgen.cli.common import add_loop_arguments, add_run_argument, interrupt_on_sigterm, loop_options

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands


def cmd_prior_train(args: argparse.Namespace) -> None:
    from tokgen.codec import load_codec
    from tokgen.prior.model import preset_config
    from tokgen.prior.train import PriorTrainConfig, train_prior

    preset = preset_config(args.preset, args.level)
    interrupt_on_sigterm()
    cfg = PriorTrainConfig(
        **loop_options(args), lr=args.lr, scheduled_sampling=args.scheduled_sampling, dropout=args.dropout
    )
    result = train_prior(
        load_codec(args.codec),
        [Path(d) for d in args.data],
        Path(args.run),
        args.level,
        preset,
        cfg,
        args.resume,
        Path(args.init_from) if args.init_from else None,
        args.grow_layers,
        args.reference_tokens,
    )
    print(json.dumps(result))


def cmd_prior_export(args: argparse.Namespace) -> None:
    from tokgen.prior.model import export_prior_set

    metas = export_prior_set([Path(r) for r in args.run], Path(args.out), args.dtype)
    print(
        json.dumps(
            {
                "prior_set": str(args.out),
                "levels": [{"level": m["level"], "steps": m.get("steps")} for m in metas],
            }
        )
    )


def cmd_prior_eval(args: argparse.Namespace) -> None:
    from tokgen.codec import load_codec
    from tokgen.generation.generate import DEFAULT_PRIORS_DIR
    from tokgen.prior.evaluate import evaluate_prior

    codec = load_codec(args.codec)
    prior_dirs = args.prior or [DEFAULT_PRIORS_DIR / f"level{lv}" for lv in range(len(codec.levels))]
    levels = [evaluate_prior(codec, Path(args.data), Path(p)) for p in prior_dirs]
    result = {"levels": sorted(levels, key=lambda r: r["level"])}
    if args.json:
        print(json.dumps(result))
        return
    for r in result["levels"]:
        print(
            f"level {r['level']}: {r['bits_per_token']:.3f} bits/token "
            f"(unigram entropy {r['unigram_bits_per_token']:.3f}, uniform {r['uniform_bits_per_token']:.3f})"
        )


def register(sub: Subcommands) -> None:
    prior = sub.add_parser("prior", help="train and evaluate the per-level priors").add_subparsers(
        dest="prior_cmd", required=True
    )
    p = prior.add_parser("train", help="train one level's prior on the corpus codes (resumable)")
    p.add_argument("--level", type=int, required=True, help="0 = top prior, >= 1 = upsampler")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="directory made by `tokgen data render`; repeat to train on several corpora as one",
    )
    add_run_argument(p, "state, logs, model/")
    p.add_argument("--codec", default=None, help="codec model directory (default: shipped codec)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    p.add_argument(
        "--init-from",
        default=None,
        help="prior directory to start from (e.g. another run's best/; its architecture, not --preset's)",
    )
    p.add_argument(
        "--grow-layers",
        type=int,
        default=None,
        help="with --init-from: this many layers, the seed's spread among new ones that start as identities",
    )
    p.add_argument(
        "--reference-tokens",
        type=int,
        default=None,
        help="upsamplers: own-level prime codes in front of every window (default: the seed's or preset's)",
    )
    p.add_argument(
        "--scheduled-sampling",
        type=float,
        default=0.0,
        help="share of the input codes replaced by the prior's own draws for them, targets kept "
        "real, so it learns to continue from its own mistakes (default 0)",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="dropout on the embeddings and on each attention and MLP output, in training only "
        "(default 0); give it again with --resume",
    )
    add_loop_arguments(p, batch_size=16)
    p.set_defaults(func=cmd_prior_train)

    p = prior.add_parser("export", help="assemble trained runs (one per level) into a prior set")
    p.add_argument("--run", action="append", required=True, help="run directory (repeat per level)")
    p.add_argument("out", help="prior set directory to write (level0/, level1/, ...)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.set_defaults(func=cmd_prior_export)

    p = prior.add_parser("eval", help="validation bits/token per level vs the unigram baseline")
    p.add_argument("--data", required=True)
    p.add_argument(
        "--prior", action="append", help="prior directory (repeat per level; default: the shipped priors)"
    )
    p.add_argument("--codec", default=None, help="codec model directory (default: shipped codec)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prior_eval)

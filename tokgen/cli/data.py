"""``tokgen data render``: the offline training corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands


def cmd_data_render(args: argparse.Namespace) -> None:
    from tokgen.data.render import RenderOptions, render_dataset

    manifest = render_dataset(
        Path(args.out_dir),
        RenderOptions(
            hours=args.hours,
            seed=args.seed,
            sample_rate=args.sample_rate,
            renders_per_piece=args.renders_per_piece,
            workers=args.workers,
            soundfont=args.soundfont,
            only_split=args.only_split,
            paired=args.paired,
        ),
    )
    summary = {k: manifest[k] for k in ("hours", "splits", "sample_rate", "soundfont", "seed")}
    summary["programs"] = len({i["program"] for i in manifest["items"]})
    summary["families"] = sorted({i["program_family"] for i in manifest["items"]})
    print(json.dumps(summary))


def register(sub: Subcommands) -> None:
    data = sub.add_parser("data", help="offline training corpus").add_subparsers(
        dest="data_cmd", required=True
    )
    p = data.add_parser("render", help="render music21 scores to audio through a GM soundfont")
    p.add_argument("out_dir")
    p.add_argument("--hours", type=float, default=5.0, help="audio to render, split 90/5/5 (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--renders-per-piece", type=int, default=1, help="timbres per piece")
    p.add_argument(
        "--paired",
        action="store_true",
        help="the renders of a piece are one performance with other melody instruments (distinct "
        "families; same transposition, accompaniment, level; aligned to the sample)",
    )
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--soundfont", default=None, help="GM .sf2 (default: Debian's FluidR3_GM)")
    p.add_argument(
        "--only-split", choices=["train", "valid", "test"], default=None, help="render just this split"
    )
    p.set_defaults(func=cmd_data_render)

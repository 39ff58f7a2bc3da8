"""``tokgen encode``, ``tokgen decode`` and ``tokgen codec train|eval|export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tokgen.cli.common import (
    add_loop_arguments,
    add_run_argument,
    held_out_corpus,
    interrupt_on_sigterm,
    loop_options,
    preset,
)
from tokgen.errors import TokgenError

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands


def _levels(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated level numbers, got {value!r}") from exc


def cmd_encode(args: argparse.Namespace) -> None:
    from tokgen.audio import load_audio
    from tokgen.codec import load_codec
    from tokgen.codec.codes import save_codes

    codec = load_codec(args.model)
    audio = load_audio(args.input, codec.sample_rate, max_seconds=args.max_seconds)
    codes = codec.encode(audio)
    save_codes(args.output, codes, codec, audio.size)
    print(
        json.dumps(
            {
                "input": str(args.input),
                "output": str(args.output),
                "model": codec.name,
                "seconds": round(audio.size / codec.sample_rate, 3),
                "levels": [
                    {"level": i, "hop": lv.hop, "frames": int(c.shape[-1])}
                    for i, (lv, c) in enumerate(zip(codec.levels, codes, strict=True))
                ],
            }
        )
    )


def cmd_decode(args: argparse.Namespace) -> None:
    from tokgen.audio import save_audio
    from tokgen.codec import load_codec
    from tokgen.codec.codes import load_codes

    codec = load_codec(args.model)
    codes = load_codes(args.input)
    codes.check_matches(codec)
    level = len(codec.levels) - 1 if args.level is None else args.level
    if not 0 <= level < len(codes.codes):
        raise TokgenError(f"--level must be in 0..{len(codes.codes) - 1} (0 = top), got {level}")
    audio = codec.decode_levels(codes.codes[: level + 1])[: codes.num_samples]
    save_audio(args.output, audio, codec.sample_rate)
    print(
        json.dumps(
            {
                "input": str(args.input),
                "output": str(args.output),
                "level": level,
                "seconds": round(audio.size / codec.sample_rate, 3),
            }
        )
    )


def cmd_codec_eval(args: argparse.Namespace) -> None:
    from tokgen.codec import load_codec
    from tokgen.codec.evaluate import evaluate_on_split

    codec = load_codec(args.model)
    data = Path(args.data) if args.data else held_out_corpus(codec.sample_rate)
    result = evaluate_on_split(codec, data, args.split, args.max_files, args.max_seconds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['model']}: {result['files']} files, {result['seconds']} s of {args.split} audio")
    print(
        f"{'level':>5} {'hop':>5} {'kbps':>6} {'SC dB':>7} {'SI-SDR':>7} {'mel':>6} {'key':>6} "
        f"{'ppl':>7} {'dead':>6}"
    )
    for lv in result["levels"]:
        print(
            f"{lv['level']:>5} {lv['hop']:>5} {lv['bitrate_bps'] / 1000:>6.2f} "
            f"{lv['spectral_convergence_db']:>7.2f} {lv['si_sdr_db']:>7.2f} {lv['mel_distance']:>6.3f} "
            f"{lv['key_consistency']:>6.2f} {lv['perplexity']:>7.1f} {lv['dead_code_fraction']:>6.1%}"
        )
    print("key: pitch-class profile of each level's reconstruction against the input's, per 5 s clip")


def _derived_codec_config(model_dir: Path, levels: list[int] | None, decoder_channels: list[int] | None):
    """The config of a trained codec, with new decoder widths for ``levels`` (default: all)."""
    from tokgen.codec.checkpoint import CONFIG, parse_vqvae_config, read_config

    raw = read_config(model_dir)
    raw.pop("training_steps", None)
    if decoder_channels:
        for lv in range(len(raw["levels"])) if levels is None else levels:
            if not 0 <= lv < len(raw["levels"]):
                raise TokgenError(f"--levels must be in 0..{len(raw['levels']) - 1}, got {levels}")
            raw["levels"][lv]["decoder_channels"] = decoder_channels
    return parse_vqvae_config(raw, model_dir / CONFIG)


def cmd_codec_train(args: argparse.Namespace) -> None:
    from tokgen.codec.presets import MSVQ_PRESETS, PRESETS
    from tokgen.codec.train import TrainConfig, train

    if args.preset in MSVQ_PRESETS:
        from tokgen.codec.train_msvq import MSVQTrainConfig, train_msvq

        interrupt_on_sigterm()
        options = {k: v for k, v in loop_options(args).items() if v is not None}
        if args.lr is not None:
            options["lr"] = args.lr
        result = train_msvq(
            MSVQ_PRESETS[args.preset],
            MSVQTrainConfig(**options),
            Path(args.data),
            Path(args.run),
            args.resume,
        )
        print(json.dumps(result))
        return
    if args.init_from:
        model_cfg = _derived_codec_config(Path(args.init_from), args.levels, args.decoder_channels)
    elif args.decoder_channels or args.freeze_codes:
        raise TokgenError("--decoder-channels and --freeze-codes need --init-from (a trained codec)")
    else:
        model_cfg = preset(PRESETS, args.preset)
    interrupt_on_sigterm()
    cfg = TrainConfig(**loop_options(args), freeze_codes=args.freeze_codes)
    init_from = Path(args.init_from) if args.init_from else None
    levels = train(model_cfg, cfg, Path(args.data), Path(args.run), args.levels, args.resume, init_from)
    print(json.dumps({f"level{k}": v for k, v in levels.items()}))


def cmd_codec_export(args: argparse.Namespace) -> None:
    from tokgen.codec.train import export
    from tokgen.codec.train_msvq import export_last

    run = Path(args.run)
    if (run / "state.pt").is_file():  # a multi-scale VQ run: its latest weights
        export_last(run, Path(args.out))
    else:
        export(run, Path(args.out))
    print(json.dumps({"model_dir": str(args.out)}))


def register(sub: Subcommands) -> None:
    p = sub.add_parser("encode", help="audio file -> codes of every level (.npz)")
    p.add_argument("input", help="WAV, FLAC or OGG file")
    p.add_argument("output", help="codes file to write (.npz)")
    p.add_argument("--model", default=None, help="codec model directory (default: shipped codec)")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="refuse longer inputs")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="codes (.npz) -> audio of one level")
    p.add_argument("input", help="codes file written by `tokgen encode`")
    p.add_argument("output", help="audio file to write (.wav, .flac or .ogg)")
    p.add_argument("--level", type=int, default=None, help="level to decode, 0 = top (default: bottom)")
    p.add_argument("--model", default=None, help="codec model directory (default: shipped codec)")
    p.set_defaults(func=cmd_decode)

    codec = sub.add_parser("codec", help="train, evaluate and export codecs").add_subparsers(
        dest="codec_cmd", required=True
    )
    p = codec.add_parser("train", help="train the multi-level VQ-VAE (resumable)")
    p.add_argument("--data", required=True, help="directory made by `tokgen data render`")
    add_run_argument(p, "checkpoints and logs")
    p.add_argument("--levels", type=_levels, default=None, help="e.g. 0,1 (default: all)")
    p.add_argument(
        "--init-from",
        default=None,
        help="codec model directory to start a new run from (instead of --preset)",
    )
    p.add_argument(
        "--freeze-codes",
        action="store_true",
        help="train only the decoders, so the codes (and priors trained on them) stay valid",
    )
    p.add_argument(
        "--decoder-channels",
        type=_levels,
        default=None,
        help="with --init-from: new decoder widths for --levels, e.g. 32,64,128,256",
    )
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (msvq presets)")
    add_loop_arguments(p, batch_size=8)
    p.set_defaults(func=cmd_codec_train)

    p = codec.add_parser("eval", help="per-level reconstruction metrics on held-out renders")
    p.add_argument("--model", default=None, help="codec model directory (default: shipped codec)")
    p.add_argument(
        "--data",
        default=None,
        help="rendered corpus (default: the held-out test split, rendered into the cache)",
    )
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--max-files", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="evaluate at most this much of each file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_codec_eval)

    p = codec.add_parser("export", help="assemble a training run into a model directory")
    p.add_argument("run")
    p.add_argument("out")
    p.set_defaults(func=cmd_codec_export)

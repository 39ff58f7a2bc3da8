"""``tokgen generate``: continue a prime (or saved codes) into an audio file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from tokgen.cli.common import (
    add_backend_argument,
    add_mode_argument,
    add_output_arguments,
    add_sampling_arguments,
    add_segment_argument,
    instrument_guidance,
    key_guidance,
)
from tokgen.errors import TokgenError

if TYPE_CHECKING:
    from tokgen.cli.common import Subcommands


def cmd_generate(args: argparse.Namespace) -> None:
    import asyncio
    import secrets
    import time

    import numpy as np
    from tqdm import tqdm

    from tokgen.audio import load_audio, numbered_paths, output_format, save_audio
    from tokgen.codec import load_codec
    from tokgen.codec.codes import load_codes, save_codes
    from tokgen.generation.generate import (
        MAX_PRIME_SECONDS,
        check_settings,
        codec_for_priors,
        context_kept,
        prepare,
    )
    from tokgen.generation.generator import Generator
    from tokgen.generation.output import finish_audio
    from tokgen.generation.sampler import CodeBoard, SamplingSettings, level_frames
    from tokgen.generation.spec import FieldError, check_output

    output_format(args.out)  # an unsupported extension fails now, not after the render
    # Everything is checked before the engines start (they take a while).
    try:
        output = check_output(args.num_samples, args.sample_rate, args.loudness_lufs)
    except FieldError as exc:
        raise TokgenError(f"--{exc.field.replace('_', '-')} {exc.message}") from None
    codec = codec_for_priors(load_codec(args.codec), args.priors)  # the levels the priors generate
    seed = secrets.randbits(62) if args.seed is None else args.seed  # reported: any output reproduces
    seeds = [seed + i for i in range(args.num_samples)]  # sample i: seed + i
    settings = [
        SamplingSettings(
            args.temperature, args.top_k, args.top_p, s, key_guidance(args), instrument_guidance(args)
        )
        for s in seeds
    ]
    for s in settings:
        check_settings(codec, s)
    outs = numbered_paths(args.out, len(seeds))
    codes_outs = numbered_paths(args.save_codes, len(seeds)) if args.save_codes else []
    prime = codes = reference = None
    if args.mode == "primed":
        if not args.prime:
            raise TokgenError("--prime is required in mode primed (or choose --mode ancestral)")
        prime = load_audio(args.prime, codec.sample_rate, max_seconds=MAX_PRIME_SECONDS)
    elif args.mode in ("continue", "upsample"):
        if not args.codes:
            raise TokgenError(f"--codes is required in mode {args.mode}")
        saved = load_codes(args.codes)
        saved.check_matches(codec)
        codes, reference = saved.codes, saved.reference
    job = prepare(codec, args.mode, args.seconds, prime, codes, reference)
    generator = Generator.load(
        codec,
        args.priors,
        args.backend,
        args.hop_fraction,
        args.segment_seconds,
        overlap_seconds=args.overlap_seconds,
    )
    kept = context_kept(codec, generator.priors, job)
    known_seconds = job.known[0].size * codec.levels[0].hop / codec.sample_rate
    if known_seconds > kept[0] > 0:
        print(
            f"tokgen: note: the top prior's context holds the last {kept[0]:g} s of the "
            f"{known_seconds:g} s prime; earlier audio does not shape the continuation",
            file=sys.stderr,
        )
    totals = level_frames(job.top_frames, [lv.hop for lv in codec.levels])
    n = len(seeds)
    bars = [
        tqdm(total=t * n, initial=k.size * n, desc=f"level {lv}", unit="tok", file=sys.stderr, position=lv)
        for lv, (t, k) in enumerate(zip(totals, job.known, strict=True))
    ]
    shown: dict[int, list[int]] = {}  # per sample's board: frames counted so far per level

    def show(board: CodeBoard, level: int) -> None:
        counted = shown.setdefault(id(board), list(board.initial_frames))
        bars[level].update(board.known_frames[level] - counted[level])
        counted[level] = board.known_frames[level]

    async def run():
        async with generator:
            started = time.monotonic()
            results = await generator.render_samples([job] * n, settings, on_change=show)
            return results, time.monotonic() - started

    try:
        results, elapsed = asyncio.run(run())
    finally:
        for bar in bars:
            bar.close()
    rate = output.rate(codec.sample_rate)
    # Whole top frames are generated; the file holds the seconds asked for (upsample: all).
    wanted = None if args.mode == "upsample" else round(args.seconds * codec.sample_rate)
    for i, result in enumerate(results):
        audio = result.new_audio(wanted)
        if args.include_prime:
            audio = np.concatenate([result.audio[: result.prime_samples], audio])
        audio = finish_audio(audio, codec.sample_rate, output)
        save_audio(outs[i], audio, rate)
        if codes_outs:
            save_codes(codes_outs[i], result.codes, codec, result.audio.size, job.reference)
    print(
        json.dumps(
            {
                "output": str(outs[0]),
                "outputs": [str(o) for o in outs],  # sample i in outputs[i], sampled with seeds[i]
                "mode": args.mode,
                "seed": seed,
                "seeds": seeds,
                "backend": generator.backend,
                "sample_rate": rate,
                "seconds": round(audio.size / rate, 3),
                "prime_seconds": round(result.prime_samples / codec.sample_rate, 3),
                "prime_seconds_in_context": kept,
                "levels": [{"level": i, "frames": int(c.size)} for i, c in enumerate(result.codes)],
                "generate_s": round(elapsed, 2),  # sampling and decoding (engine start-up excluded)
            }
        )
    )


def register(sub: Subcommands) -> None:
    p = sub.add_parser("generate", help="continue a prime (or saved codes) with the priors")
    p.add_argument("--prime", help="prime audio (WAV, FLAC or OGG)")
    p.add_argument("--codes", help="saved codes (.npz) for modes continue and upsample")
    p.add_argument("--seconds", type=float, required=True, help="seconds of continuation to generate")
    p.add_argument("--out", required=True, help="audio file to write (--num-samples N: OUT_0 ... OUT_N-1)")
    p.add_argument("--save-codes", help="also save every level's codes (.npz), prime included")
    add_output_arguments(p)
    add_mode_argument(p)
    p.add_argument("--include-prime", action="store_true", help="write the prime before the continuation")
    p.add_argument("--priors", default=None, help="prior set directory: level0/, level1/, ...")
    p.add_argument("--codec", default=None, help="codec model directory (default: shipped codec)")
    add_backend_argument(p)
    add_sampling_arguments(p, seed=None)
    p.add_argument("--hop-fraction", type=float, default=0.5, help="share of each window that is new")
    add_segment_argument(p)
    p.set_defaults(func=cmd_generate)

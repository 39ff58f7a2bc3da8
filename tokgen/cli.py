"""The ``tokgen`` command line.

Subcommands are thin: they parse arguments, call one function of the package and print
the result (JSON on stdout where asked; progress and logs on stderr). A ``TokgenError``
becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from tokgen.errors import TokgenError


def _levels(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated level numbers, got {value!r}") from exc


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
        ),
    )
    summary = {k: manifest[k] for k in ("hours", "splits", "sample_rate", "soundfont", "seed")}
    summary["programs"] = len({i["program"] for i in manifest["items"]})
    summary["families"] = sorted({i["program_family"] for i in manifest["items"]})
    print(json.dumps(summary))


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
    audio = codec.decode(codes.codes[level], level)[: codes.num_samples]
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
    data = Path(args.data) if args.data else _held_out_corpus(codec.sample_rate)
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


def _held_out_corpus(sample_rate: int, hours: float = 6.0, max_seconds: float = 120.0) -> Path:
    """The test split of the default corpus (seed 0) planned for ``hours`` in all, each
    render cut at ``max_seconds``, rendered once into the cache (a folder named after
    those options). Test pieces are chosen by a hash of the piece id, so they are never in
    any training split."""
    from tokgen.data.render import MANIFEST, RenderOptions, render_dataset
    from tokgen.settings import get_settings

    name = (
        "heldout-test"
        if (hours, max_seconds) == (6.0, 120.0)
        else f"heldout-test-h{hours:g}-s{max_seconds:g}"
    )
    out = get_settings().cache_dir / f"{name}-{sample_rate}"
    if not (out / MANIFEST).is_file():
        print(f"rendering held-out test audio into {out} ...", file=sys.stderr)
        options = RenderOptions(
            hours=hours, seed=0, sample_rate=sample_rate, max_seconds=max_seconds, only_split="test"
        )
        render_dataset(out, options)
    return out


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so long jobs checkpoint before they exit."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _preset(presets: dict, name: str):
    if name not in presets:
        raise TokgenError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]


def _loop_options(args: argparse.Namespace) -> dict:
    """The training-loop settings both `train` commands take (see ``_add_loop_arguments``)."""
    keys = ("steps", "max_minutes", "batch_size", "seed", "checkpoint_every", "lr_decay_from")
    return {k: getattr(args, k) for k in keys}


def _add_loop_arguments(p: argparse.ArgumentParser, batch_size: int) -> None:
    p.add_argument("--preset", default="default")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument(
        "--lr-decay-from", type=int, default=None, help="decay the LR linearly from this step to --steps"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --run")


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

        _interrupt_on_sigterm()
        options = {k: v for k, v in _loop_options(args).items() if v is not None}
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
        model_cfg = _preset(PRESETS, args.preset)
    _interrupt_on_sigterm()
    cfg = TrainConfig(**_loop_options(args), freeze_codes=args.freeze_codes)
    init_from = Path(args.init_from) if args.init_from else None
    levels = train(model_cfg, cfg, Path(args.data), Path(args.run), args.levels, args.resume, init_from)
    print(json.dumps({f"level{k}": v for k, v in levels.items()}))


def cmd_eval_continuation(args: argparse.Namespace) -> None:
    from tokgen.codec import load_codec
    from tokgen.eval.classifier import load_classifier
    from tokgen.eval.continuation import HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS, evaluate_continuations
    from tokgen.eval.embeddings import load_embedding
    from tokgen.generation.generate import check_settings, load_priors
    from tokgen.generation.sampler import SamplingSettings

    sampling = SamplingSettings(args.temperature, args.top_k, args.top_p, args.seed)
    codec = load_codec(args.codec)
    check_settings(codec, sampling)  # before the engines start
    if args.data:
        data = Path(args.data)
    else:
        data = _held_out_corpus(codec.sample_rate, HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS)
    embeddings = {name: load_embedding(name) for name in ("aisfx", "classic")}
    classifier = load_classifier(args.classifier)
    priors = load_priors(args.priors, codec, args.backend)
    result = evaluate_continuations(
        codec,
        priors,
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
        f"{'KID ai':>7} {'IS':>5} {'timbre':>6} {'key':>6} {'seams':>6} {'codes':>6}"
    )
    for name, m in result["systems"].items():
        print(
            f"{name:<22} {m['n']:>4} {m['fad']:>7.2f} {interval(m, 'fad_ci95'):>15} {m['fad_classic']:>8.2f} "
            f"{interval(m, 'fad_classic_ci95'):>15} {m['kid']:>8.3f} {m['kid_aisfx']:>7.3f} {m['is']:>5.2f} "
            f"{m['timbre_consistency']:>6.2f} {m['key_consistency']:>6.2f} "
            f"{number(m.get('seam_flux_ratio'), 2):>6} {number(m.get('distinct_code_ratio'), 2):>6}"
        )
    print(
        "seams: spectral flux at the bottom segments' seams / elsewhere; "
        "codes: distinct bottom codes / the real continuation's"
    )
    if args.plots:
        print(f"spectrograms of the first clips in {args.plots}")


def cmd_eval_train_classifier(args: argparse.Namespace) -> None:
    from tokgen.eval.classifier import TrainClassifierConfig, train_classifier

    cfg = TrainClassifierConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    print(json.dumps(train_classifier(Path(args.data), Path(args.out), cfg)))


def cmd_codec_export(args: argparse.Namespace) -> None:
    from tokgen.codec.train import export

    export(Path(args.run), Path(args.out))
    print(json.dumps({"model_dir": str(args.out)}))


def cmd_prior_train(args: argparse.Namespace) -> None:
    from tokgen.codec import load_codec
    from tokgen.prior.model import preset_config
    from tokgen.prior.train import PriorTrainConfig, train_prior

    preset = preset_config(args.preset, args.level)
    _interrupt_on_sigterm()
    cfg = PriorTrainConfig(**_loop_options(args), lr=args.lr)
    result = train_prior(
        load_codec(args.codec),
        Path(args.data),
        Path(args.run),
        args.level,
        preset,
        cfg,
        args.resume,
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


def cmd_generate(args: argparse.Namespace) -> None:
    import asyncio
    import time

    from tqdm import tqdm

    from tokgen.audio import load_audio, save_audio
    from tokgen.codec import load_codec
    from tokgen.codec.codes import load_codes, save_codes
    from tokgen.generation.generate import MAX_PRIME_SECONDS, check_settings, context_kept, prepare
    from tokgen.generation.generator import Generator
    from tokgen.generation.sampler import CodeBoard, SamplingSettings, level_frames

    # Everything is checked before the engines start (they take a while).
    codec = load_codec(args.codec)
    settings = SamplingSettings(args.temperature, args.top_k, args.top_p, args.seed)
    check_settings(codec, settings)
    prime = codes = None
    if args.mode == "primed":
        if not args.prime:
            raise TokgenError("--prime is required in mode primed (or choose --mode ancestral)")
        prime = load_audio(args.prime, codec.sample_rate, max_seconds=MAX_PRIME_SECONDS)
    elif args.mode in ("continue", "upsample"):
        if not args.codes:
            raise TokgenError(f"--codes is required in mode {args.mode}")
        saved = load_codes(args.codes)
        saved.check_matches(codec)
        codes = saved.codes
    job = prepare(codec, args.mode, args.seconds, prime, codes)
    generator = Generator.load(codec, args.priors, args.backend, args.hop_fraction, args.segment_seconds)
    kept = context_kept(codec, generator.priors, job)
    known_seconds = job.known[0].size * codec.levels[0].hop / codec.sample_rate
    if known_seconds > kept[0] > 0:
        print(
            f"tokgen: note: the top prior's context holds the last {kept[0]:g} s of the "
            f"{known_seconds:g} s prime; earlier audio does not shape the continuation",
            file=sys.stderr,
        )
    totals = level_frames(job.top_frames, [lv.hop for lv in codec.levels])
    bars = [
        tqdm(total=t, initial=k.size, desc=f"level {lv}", unit="tok", file=sys.stderr, position=lv)
        for lv, (t, k) in enumerate(zip(totals, job.known, strict=True))
    ]

    def show(board: CodeBoard, level: int) -> None:
        bars[level].update(board.known_frames[level] - bars[level].n)

    async def run():
        async with generator:
            started = time.monotonic()
            return await generator.render(job, settings, on_change=show), time.monotonic() - started

    try:
        result, elapsed = asyncio.run(run())
    finally:
        for bar in bars:
            bar.close()
    audio = result.audio if args.include_prime else result.audio[result.prime_samples :]
    save_audio(args.out, audio, codec.sample_rate)
    if args.save_codes:
        save_codes(args.save_codes, result.codes, codec, result.audio.size)
    print(
        json.dumps(
            {
                "output": str(args.out),
                "mode": args.mode,
                "backend": generator.backend,
                "seconds": round(audio.size / codec.sample_rate, 3),
                "prime_seconds": round(result.prime_samples / codec.sample_rate, 3),
                "prime_seconds_in_context": kept,
                "levels": [{"level": i, "frames": int(c.size)} for i, c in enumerate(result.codes)],
                "generate_s": round(elapsed, 2),  # sampling and decoding (engine start-up excluded)
            }
        )
    )


def cmd_serve(args: argparse.Namespace) -> None:
    import asyncio

    from tokgen.serve.server import serve

    config = _settings_with_flags(args)
    asyncio.run(serve(config, lambda where: print(json.dumps(where), flush=True)))


def _settings_with_flags(args: argparse.Namespace):
    """Settings (env ``TOKGEN_*``), overridden by the flags given on the command line."""
    from pydantic import ValidationError

    from tokgen.settings import Settings, get_settings

    flags = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    if args.backend is not None:
        flags["engine_backend"] = args.backend
    try:
        return Settings.model_validate(get_settings().model_dump() | flags)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise TokgenError(f"bad option --{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None


def cmd_worker(args: argparse.Namespace) -> None:
    import asyncio

    from tokgen.jobs.run import run_worker

    config = _settings_with_flags(args)
    asyncio.run(run_worker(config, lambda where: print(json.dumps(where), flush=True)))


def cmd_health(args: argparse.Namespace) -> None:
    """Exit 0 if SERVING, else 1, also when nothing answers: Docker's HEALTHCHECK reads 1
    as unhealthy and reserves 2, the code other tokgen errors exit with."""
    from tokgen.monitoring.health import check

    try:
        status = check(args.address, args.service, args.timeout)
    except TokgenError as exc:
        print(f"tokgen: {exc}", file=sys.stderr)
        sys.exit(1)
    print(status)
    if status != "SERVING":
        sys.exit(1)


def _client(args: argparse.Namespace):
    import os

    from tokgen.client import TlsOptions, TokgenClient

    key = os.environ.get("TOKGEN_API_KEY")
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text().strip()
        except OSError as exc:
            raise TokgenError(f"cannot read {args.api_key_file}: {exc.strerror}") from None
    paths = [Path(p) if p else None for p in (args.tls_ca, args.tls_cert, args.tls_key)]
    tls = TlsOptions(*paths) if args.tls or any(paths) else None
    return TokgenClient(args.server, key, tls)


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
        priority=args.priority,
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
        "seconds": round(result.audio_seconds, 3),
        "time_to_first_audio_s": round(result.time_to_first_audio_s, 3),
        "total_s": round(result.total_s, 3),
        "tokens": [lv.tokens for lv in result.summary.levels],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"time to first audio: {report['time_to_first_audio_s']} s; wrote {report['seconds']} s "
            f"to {result.out} in {report['total_s']} s"
        )


def cmd_client_info(args: argparse.Namespace) -> None:
    import asyncio

    import grpc
    from google.protobuf.json_format import MessageToDict

    from tokgen.client import describe_error

    async def run():
        async with _client(args) as client:
            return await client.model_info()

    try:
        info = asyncio.run(run())
    except grpc.RpcError as err:
        raise TokgenError(describe_error(err)) from None
    print(
        json.dumps(
            MessageToDict(info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
            indent=None if args.json else 2,
        )
    )


def cmd_bench_serve(args: argparse.Namespace) -> None:
    from tokgen.bench.serve import bench_serve

    result = bench_serve(args.backend, args.seconds, (1, args.concurrency), args.requests, args.server_arg)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


def cmd_bench_queue(args: argparse.Namespace) -> None:
    from tokgen.bench.queue import bench_queue

    result = bench_queue(args.backend, args.jobs, args.seconds, args.worker_concurrency)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


def cmd_bench_engine(args: argparse.Namespace) -> None:
    from tokgen.bench.engine import bench_engines

    result = bench_engines(
        Path(args.prior) if args.prior else None, args.prompt_tokens, args.new_tokens, (16, 1), args.dtype
    )
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


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
    )
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


def _seconds_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds like 2 or 2,0.5, got {text!r}") from None


def _add_segment_argument(p: argparse.ArgumentParser) -> None:
    from tokgen.generation.generate import DEFAULT_BOTTOM_SEGMENT_SECONDS, DEFAULT_SEGMENT_SECONDS

    p.add_argument(
        "--segment-seconds",
        type=_seconds_list,
        default=None,
        help="length of the upsampler segments sampled in parallel: one value, or one per upsampler "
        f"(default {DEFAULT_BOTTOM_SEGMENT_SECONDS:g} s for the bottom level, {DEFAULT_SEGMENT_SECONDS:g} s "
        "for the others; 0: one segment, no seams, slower)",
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


def _add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


def _add_request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prime", help="prime audio (WAV, FLAC or OGG); modes primed")
    p.add_argument("--codes", help="saved codes (.npz); modes continue and upsample")
    p.add_argument("--seconds", type=float, required=True, help="seconds of continuation to generate")
    p.add_argument("--mode", default="primed", choices=["primed", "ancestral", "continue", "upsample"])
    _add_sampling_arguments(p)
    p.add_argument("--priority", default="normal", choices=["high", "normal", "low"])


def _add_connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of `tokgen serve`")
    p.add_argument("--api-key-file", help="file holding the API key (or set TOKGEN_API_KEY)")
    p.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs")
    p.add_argument("--tls-ca", help="PEM CA to trust for the server (implies --tls)")
    p.add_argument("--tls-cert", help="PEM client certificate, for servers that require mTLS")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokgen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="offline training corpus").add_subparsers(
        dest="data_cmd", required=True
    )
    p = data.add_parser("render", help="render music21 scores to audio through a GM soundfont")
    p.add_argument("out_dir")
    p.add_argument("--hours", type=float, default=5.0, help="audio to render, split 90/5/5 (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--renders-per-piece", type=int, default=1, help="timbres per piece")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--soundfont", default=None, help="GM .sf2 (default: Debian's FluidR3_GM)")
    p.add_argument(
        "--only-split", choices=["train", "valid", "test"], default=None, help="render just this split"
    )
    p.set_defaults(func=cmd_data_render)

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
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
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
    _add_sampling_arguments(p)
    p.set_defaults(func=cmd_eval_continuation)

    p = evaluation.add_parser(
        "train-classifier", help="train the timbre classifier (GM family) used for IS, KID and consistency"
    )
    p.add_argument("--data", required=True, help="directory made by `tokgen data render` (train + valid)")
    p.add_argument("--out", required=True, help="classifier directory to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_eval_train_classifier)

    codec = sub.add_parser("codec", help="train, evaluate and export codecs").add_subparsers(
        dest="codec_cmd", required=True
    )
    p = codec.add_parser("train", help="train the multi-level VQ-VAE (resumable)")
    p.add_argument("--data", required=True, help="directory made by `tokgen data render`")
    p.add_argument("--run", required=True, help="run directory for checkpoints and logs")
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
    _add_loop_arguments(p, batch_size=8)
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

    p = sub.add_parser("generate", help="continue a prime (or saved codes) with the priors")
    p.add_argument("--prime", help="prime audio (WAV, FLAC or OGG)")
    p.add_argument("--codes", help="saved codes (.npz) for modes continue and upsample")
    p.add_argument("--seconds", type=float, required=True, help="seconds of continuation to generate")
    p.add_argument("--out", required=True, help="audio file to write")
    p.add_argument("--save-codes", help="also save every level's codes (.npz), prime included")
    p.add_argument("--mode", default="primed", choices=["primed", "ancestral", "continue", "upsample"])
    p.add_argument("--include-prime", action="store_true", help="write the prime before the continuation")
    p.add_argument("--priors", default=None, help="prior set directory: level0/, level1/, ...")
    p.add_argument("--codec", default=None, help="codec model directory (default: shipped codec)")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    _add_sampling_arguments(p)
    p.add_argument("--hop-fraction", type=float, default=0.5, help="share of each window that is new")
    _add_segment_argument(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "serve",
        help="serve streamed continuations over gRPC (tokgen.v1.TokgenService)",
        description="Every option also reads TOKGEN_<NAME> (e.g. TOKGEN_MAX_ACTIVE); a flag wins.",
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051; 0: any free port, printed)")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default 9464; 0: any)")
    p.add_argument("--health-port", type=int, help="plaintext gRPC health for probes (default off; 0: any)")
    p.add_argument("--priors", help="prior set directory (default: the shipped priors)")
    p.add_argument("--codec", help="codec model directory (default: shipped codec)")
    p.add_argument("--backend", choices=["auto", "vllm", "hf"])
    p.add_argument("--max-active", type=int, help="continuations generating at once (default 8)")
    p.add_argument("--max-queued", type=int, help="continuations waiting for a slot (default 16)")
    p.add_argument("--max-request-bytes", type=int, help="largest request accepted (default 64 MiB)")
    p.add_argument("--grace-seconds", type=float, help="for in-flight streams on SIGTERM (default 10)")
    p.add_argument("--api-keys-file", help="one key per line; TOKGEN_API_KEYS adds comma-separated keys")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS only")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed (mTLS)")
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback address without TLS or API keys",
    )
    p.add_argument("--redis-url", help="job queue: redis://, rediss:// or unix:// (default: embedded)")
    p.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        default=None,
        help="serve the API only: no jobs rendered here",
    )
    p.add_argument("--worker-concurrency", type=int, help="jobs the in-process worker renders at once")
    p.add_argument("--lease-seconds", type=float, help="job lease renewed while it runs (default 15)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker",
        help="render batch jobs from the Redis queue",
        description="Every option also reads TOKGEN_<NAME> (e.g. TOKGEN_REDIS_URL); a flag wins.",
    )
    p.add_argument("--redis-url", help="redis://, rediss:// or unix:// URL (default: an embedded server)")
    p.add_argument("--priors", help="prior set directory (default: the shipped priors)")
    p.add_argument("--codec", help="codec model directory (default: shipped codec)")
    p.add_argument("--backend", choices=["auto", "vllm", "hf"])
    p.add_argument("--worker-concurrency", type=int, help="jobs rendered at once (default 4)")
    p.add_argument("--lease-seconds", type=float, help="lease renewed while a job runs (default 15)")
    p.add_argument("--host", help="address of the metrics and health ports (default 127.0.0.1)")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default 9464; 0: any)")
    p.add_argument("--health-port", type=int, help="gRPC health for probes (default off; 0: any)")
    p.add_argument("--grace-seconds", type=float, help="for running jobs on SIGTERM (default 10)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "health",
        help="gRPC health check of a server or worker (exit 0 only if SERVING)",
        description="For container HEALTHCHECKs and scripts; plaintext (use the --health-port).",
    )
    p.add_argument("--address", default="127.0.0.1:50051", help="host:port (default 127.0.0.1:50051)")
    p.add_argument("--service", default="", help="'' (default): ready to work; live: the process runs")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_health)

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

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_cmd", required=True)
    p = bench.add_parser("engine", help="vLLM vs in-process engine tokens/s at batch 16 and 1")
    p.add_argument("--prior", default=None, help="prior directory (default: a random default-size prior)")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="both engines")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_engine)
    p = bench.add_parser("generate", help="real-time factor of whole continuations, 1 and N at once")
    p.add_argument("--priors", default=None, help="prior set directory (default: the shipped priors)")
    p.add_argument("--codec", default=None, help="codec model directory (default: shipped codec)")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    p.add_argument("--seconds", type=float, default=10.0, help="audio per request (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent requests of the second run")
    _add_segment_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_generate)

    p = bench.add_parser("serve", help="time to first audio and real-time factor through a real server")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    p.add_argument("--seconds", type=float, default=10.0, help="audio per request (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients of the second run")
    p.add_argument("--requests", type=int, default=3, help="requests per client, back to back")
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra `tokgen serve` argument (repeatable)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_serve)

    p = bench.add_parser("queue", help="jobs/s and mean batch through the Redis queue, 1 and 2 workers")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    p.add_argument("--jobs", type=int, default=16, help="jobs per run (default 16)")
    p.add_argument("--seconds", type=float, default=2.0, help="audio per job (default 2)")
    p.add_argument("--worker-concurrency", type=int, default=4, help="jobs per worker at once")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_queue)

    prior = sub.add_parser("prior", help="train and evaluate the per-level priors").add_subparsers(
        dest="prior_cmd", required=True
    )
    p = prior.add_parser("train", help="train one level's prior on the corpus codes (resumable)")
    p.add_argument("--level", type=int, required=True, help="0 = top prior, >= 1 = upsampler")
    p.add_argument("--data", required=True, help="directory made by `tokgen data render`")
    p.add_argument("--run", required=True, help="run directory (state, logs, model/)")
    p.add_argument("--codec", default=None, help="codec model directory (default: shipped codec)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    _add_loop_arguments(p, batch_size=16)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TokgenError as exc:
        print(f"tokgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokgen: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What several command groups share: running a command (logging, errors and exit
statuses), the logging options, SIGTERM as KeyboardInterrupt, presets, the training-loop,
sampling, segment and backend arguments, and the held-out corpus that evaluations default
to."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, get_args

from pydantic import ValidationError

from tokgen import logs
from tokgen.cli.exits import Exit, exit_status
from tokgen.engine.factory import Backend
from tokgen.errors import TokgenError
from tokgen.settings import get_log_settings

if TYPE_CHECKING:
    # What ``add_subparsers`` returns: each command group's ``register`` adds to it.
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger("tokgen.cli")

# The engine backends a --backend flag accepts.
BACKENDS: tuple[str, ...] = get_args(Backend)


def run(args: argparse.Namespace) -> int:
    """Configure logging, then run the parsed command; returns its exit status
    (``tokgen.cli.exits``). A ``TokgenError`` is one line on stderr, an unexpected error
    too (its traceback only at ``--log-level debug``), an interrupt (Ctrl-C or SIGTERM)
    status 130."""
    try:
        log_settings = get_log_settings()
        logs.configure(
            getattr(args, "log_level", log_settings.log_level),
            getattr(args, "log_format", log_settings.log_format),
        )
        args.func(args)
    except TokgenError as exc:
        _report(f"tokgen: error: {exc}")
        return exit_status(exc)
    except ValidationError as exc:  # an option out of range, or a config file that does not fit
        _report(f"tokgen: error: {invalid_values(exc)}")
        return Exit.USAGE
    except KeyboardInterrupt:
        _report("tokgen: interrupted")
        return Exit.INTERRUPTED
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        hint = "" if log.isEnabledFor(logging.DEBUG) else " (--log-level debug shows the traceback)"
        _report(f"tokgen: internal error: {type(exc).__name__}: {exc}{hint}")
        return Exit.INTERNAL
    return Exit.OK


def invalid_values(exc: ValidationError, most: int = 3) -> str:
    """One line for a settings model that refused its values: which, why and what it got."""
    problems = [
        f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']} (got {e['input']!r})"
        for e in exc.errors()[:most]
    ]
    return f"invalid {exc.title}: " + "; ".join(problems)


def _report(line: str) -> None:
    """The one line a failed command ends with: plain on stderr, or a JSON record there
    when the logs are JSON lines (so that stderr stays parseable)."""
    if logs.json_lines():
        log.error(line)
    else:
        print(logs.redact(line), file=sys.stderr)


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``, on every command (before or after its name).
    They default to "not given", so that one given anywhere is kept and the environment
    (``TOKGEN_LOG_LEVEL``, ``TOKGEN_LOG_FORMAT``) decides otherwise."""
    from tokgen.settings import LogSettings

    fields = LogSettings.model_fields
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=argparse.SUPPRESS,
        help=f"log records at this level and above, on stderr (default {fields['log_level'].default}; "
        "debug also shows tracebacks and third-party INFO lines) [env TOKGEN_LOG_LEVEL]",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=argparse.SUPPRESS,
        help=f"text lines, or one JSON object per line (default {fields['log_format'].default}) "
        "[env TOKGEN_LOG_FORMAT]",
    )


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so long jobs checkpoint before they exit."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def preset(presets: dict, name: str):
    if name not in presets:
        raise TokgenError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]


def loop_options(args: argparse.Namespace) -> dict:
    """The training-loop settings both `train` commands take (see ``add_loop_arguments``)."""
    keys = ("steps", "max_minutes", "batch_size", "seed", "checkpoint_every", "lr_decay_from")
    return {k: getattr(args, k) for k in keys}


def add_loop_arguments(p: argparse.ArgumentParser, batch_size: int) -> None:
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


def add_sampling_arguments(p: argparse.ArgumentParser, seed: int | None = 0) -> None:
    """``seed=None``: without --seed a fresh random seed is drawn (and reported)."""
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument(
        "--key-guidance",
        type=float,
        default=None,
        help="how strongly sampling keeps to the prime's pitch classes, 0-20 "
        "(0: off; default: the model's, tokgen.generation.key.DEFAULT_KEY_GUIDANCE)",
    )
    p.add_argument(
        "--instrument-guidance",
        type=float,
        default=None,
        help="how strongly sampling keeps to the prime's instrument, 0-20 (0: off; default: "
        "the model's, tokgen.generation.instrument.DEFAULT_INSTRUMENT_GUIDANCE)",
    )
    help_text = "default: a fresh random seed, reported in the JSON" if seed is None else f"default {seed}"
    p.add_argument("--seed", type=int, default=seed, help=help_text)


def key_guidance(args: argparse.Namespace) -> float:
    """--key-guidance, or the model's default when not given."""
    from tokgen.generation.key import DEFAULT_KEY_GUIDANCE

    return DEFAULT_KEY_GUIDANCE if args.key_guidance is None else float(args.key_guidance)


def instrument_guidance(args: argparse.Namespace) -> float:
    """--instrument-guidance, or the model's default when not given."""
    from tokgen.generation.instrument import DEFAULT_INSTRUMENT_GUIDANCE

    value = args.instrument_guidance
    return DEFAULT_INSTRUMENT_GUIDANCE if value is None else float(value)


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """How many samples, at what rate and loudness (checked with the request:
    ``spec.check_output``, so a bad value is exit status 2 before any work)."""
    p.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="continuations to sample side by side (1-8), sample i with seed + i, "
        "written to OUT_0, OUT_1, ... (default 1: OUT)",
    )
    p.add_argument(
        "--sample-rate", type=int, default=None, help="output rate, 8000-48000 Hz (default: the codec's)"
    )
    p.add_argument(
        "--loudness-lufs",
        type=float,
        default=None,
        help="normalise each output to this integrated loudness (ITU-R BS.1770, -70 to -5 LUFS); "
        "never clips: the gain stops where the peak reaches -1 dBFS",
    )


def add_mode_argument(p: argparse.ArgumentParser) -> None:
    from tokgen.generation.generate import Mode

    p.add_argument("--mode", default="primed", choices=get_args(Mode))


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="token generation engine (default auto: the TOKGEN_ENGINE_BACKEND setting, whose "
        "default auto means vllm where installed, else hf)",
    )


def default_address() -> str:
    """``host:port`` of a ``tokgen serve`` run with the default settings."""
    from tokgen.settings import Settings, host_port

    fields = Settings.model_fields
    return host_port(fields["host"].default, fields["port"].default)


def seconds_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds like 2 or 2,0.5, got {text!r}") from None


def add_segment_argument(p: argparse.ArgumentParser) -> None:
    from tokgen.generation.generate import (
        DEFAULT_BOTTOM_SEGMENT_SECONDS,
        DEFAULT_OVERLAP_SECONDS,
        DEFAULT_SEGMENT_SECONDS,
    )

    p.add_argument(
        "--segment-seconds",
        type=seconds_list,
        default=None,
        help="length of the upsampler segments sampled in parallel: one value, or one per upsampler "
        f"(default {DEFAULT_BOTTOM_SEGMENT_SECONDS:g} s for the bottom level, {DEFAULT_SEGMENT_SECONDS:g} s "
        "for the others; 0: one segment, no seams, slower)",
    )
    p.add_argument(
        "--overlap-seconds",
        type=float,
        default=DEFAULT_OVERLAP_SECONDS,
        help="warm-up each later segment samples before its start and drops, so it does not start "
        f"cold at the seam (default {DEFAULT_OVERLAP_SECONDS:g} s; 0: none)",
    )


def held_out_corpus(sample_rate: int, hours: float = 6.0, max_seconds: float = 120.0) -> Path:
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


def add_run_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--run`` of a training command. ``torchrun ... -m tokgen prior train --run DIR``
    fails (torchrun's parser takes --run for an abbreviation of its --run-path), so the
    same option is also ``--run-dir``."""
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help=f"run directory ({what}); --run-dir under torchrun",
    )

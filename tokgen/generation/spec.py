"""Check a ``ContinueRequest`` field by field before any work starts (pure functions).

Every problem is a ``FieldError`` naming the offending field, which the servicer turns into
``INVALID_ARGUMENT`` with a ``BadRequest`` detail a client can act on.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass, field

from tokgen.generation.generate import MAX_SECONDS
from tokgen.generation.instrument import DEFAULT_INSTRUMENT_GUIDANCE, MAX_INSTRUMENT_GUIDANCE
from tokgen.generation.key import DEFAULT_KEY_GUIDANCE, MAX_KEY_GUIDANCE
from tokgen.generation.output import Output
from tokgen.generation.sampler import SamplingSettings
from tokgen.names import MODE_NAMES, PRIORITY_NAMES, Mode, Priority
from tokgen.v1 import tokgen_pb2 as pb

__all__ = ["ContinueSpec", "FieldError", "Priority", "check_continue", "check_output"]

# Bounds of what one request may ask for (GetModelInfo reports them).
MAX_NUM_SAMPLES = 8
MIN_OUTPUT_RATE, MAX_OUTPUT_RATE = 8000, 48000
MIN_LOUDNESS_LUFS, MAX_LOUDNESS_LUFS = -70.0, -5.0
MAX_SEED = 2**63  # seeds are below it (the wire's uint64, the engines' int64)


class FieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple:
        """Pickled as its two parts: it crosses from prepare workers (``prepare_pool``)."""
        return (type(self), (self.field, self.message))


@dataclass(frozen=True)
class ContinueSpec:
    mode: Mode
    seconds: float
    settings: SamplingSettings
    prime_audio: bytes | None
    codes: bytes | None
    priority: Priority = "normal"
    num_samples: int = 1
    output: Output = field(default_factory=Output)

    def sample_settings(self) -> list[SamplingSettings]:
        """Each sample's settings: sample i is sampled with seed + i, so it is the audio a
        one-sample request with that seed gets."""
        return [
            dataclasses.replace(self.settings, seed=self.settings.seed + i) for i in range(self.num_samples)
        ]

    def samples(self, sample_rate: int) -> int | None:
        """Samples of new audio asked for; whole top frames are generated, and the result
        is cut to this. None in mode upsample (the saved top level decides the length)."""
        return round(self.seconds * sample_rate) if self.mode != "upsample" else None


def check_continue(req: pb.ContinueRequest, vocab_size: int, codebook_size: int) -> ContinueSpec:
    mode = MODE_NAMES.get(req.mode)
    if mode is None:
        raise FieldError("mode", f"unknown mode {req.mode}; use MODE_PRIMED, MODE_ANCESTRAL, ...")
    priority = PRIORITY_NAMES.get(req.priority)
    if priority is None:
        raise FieldError("priority", f"unknown priority {req.priority}; use PRIORITY_HIGH, _NORMAL or _LOW")
    source = req.WhichOneof("source")
    needs = {"primed": "prime_audio", "continue": "codes", "upsample": "codes", "ancestral": None}[mode]
    if source != needs:
        what = f"needs {needs}" if needs else "takes no prime_audio or codes"
        raise FieldError(needs or source or "source", f"mode {mode} {what}")
    # float32 on the wire: 0.1 arrives as 0.10000000149, which would round up a whole frame
    seconds = round(float(req.seconds), 6)
    if mode != "upsample" and not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise FieldError("seconds", f"must be in (0, {MAX_SECONDS:g}], got {req.seconds}")
    s = req.sampling
    temperature = s.temperature if s.HasField("temperature") else 1.0
    top_p = s.top_p if s.HasField("top_p") else 1.0
    if not (math.isfinite(temperature) and 0 < temperature <= 100):
        raise FieldError("sampling.temperature", f"must be in (0, 100], got {temperature}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise FieldError("sampling.top_p", f"must be in (0, 1], got {top_p}")
    if s.top_k > codebook_size:
        raise FieldError(
            "sampling.top_k", f"must be at most the codebook size {codebook_size}, got {s.top_k}"
        )
    num_samples = req.num_samples or 1
    output = check_output(
        num_samples, req.sample_rate or None, req.loudness_lufs if req.HasField("loudness_lufs") else None
    )
    if s.seed > MAX_SEED - num_samples:
        raise FieldError("sampling.seed", f"must be below 2**63 - num_samples + 1, got {s.seed}")
    # No seed: a fresh one, which the reply reports, so every output can be reproduced.
    seed = s.seed if s.HasField("seed") else secrets.randbits(62)
    key_guidance = guidance(s, "key_guidance", DEFAULT_KEY_GUIDANCE, MAX_KEY_GUIDANCE)
    instrument = guidance(s, "instrument_guidance", DEFAULT_INSTRUMENT_GUIDANCE, MAX_INSTRUMENT_GUIDANCE)
    settings = SamplingSettings(temperature, s.top_k, top_p, seed, key_guidance, instrument)
    settings.check(vocab_size)
    return ContinueSpec(
        mode,
        seconds if mode != "upsample" else 1.0,
        settings,
        req.prime_audio if source == "prime_audio" else None,
        req.codes if source == "codes" else None,
        priority,
        num_samples,
        output,
    )


def guidance(s: pb.SamplingParams, name: str, default: float, maximum: float) -> float:
    """A guidance strength field: the model's default when unset, else in [0, maximum]."""
    value = round(float(getattr(s, name)), 6) if s.HasField(name) else default
    if not (math.isfinite(value) and 0 <= value <= maximum):
        raise FieldError(f"sampling.{name}", f"must be in [0, {maximum:g}], got {value}")
    return value


def check_output(num_samples: int, sample_rate: int | None, loudness_lufs: float | None) -> Output:
    """The samples and output a request asks for, within the bounds above (the CLI and the
    Python API check theirs here too)."""
    if not 1 <= num_samples <= MAX_NUM_SAMPLES:
        raise FieldError("num_samples", f"must be in [1, {MAX_NUM_SAMPLES}], got {num_samples}")
    if sample_rate is not None and not MIN_OUTPUT_RATE <= sample_rate <= MAX_OUTPUT_RATE:
        raise FieldError(
            "sample_rate", f"must be in [{MIN_OUTPUT_RATE}, {MAX_OUTPUT_RATE}] Hz, got {sample_rate}"
        )
    if loudness_lufs is not None and not (
        math.isfinite(loudness_lufs) and MIN_LOUDNESS_LUFS <= loudness_lufs <= MAX_LOUDNESS_LUFS
    ):
        raise FieldError(
            "loudness_lufs",
            f"must be in [{MIN_LOUDNESS_LUFS:g}, {MAX_LOUDNESS_LUFS:g}] LUFS, got {loudness_lufs}",
        )
    return Output(sample_rate, loudness_lufs)

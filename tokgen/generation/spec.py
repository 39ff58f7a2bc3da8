"""Check a ``ContinueRequest`` field by field before any work starts (pure functions).

Every problem is a ``FieldError`` naming the offending field, which the servicer turns into
``INVALID_ARGUMENT`` with a ``BadRequest`` detail a client can act on.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Literal

from tokgen.generation.generate import MAX_SECONDS, Mode
from tokgen.generation.sampler import SamplingSettings
from tokgen.v1 import tokgen_pb2 as pb

# How urgent a request is: for admission (serve) and the job queue (jobs).
Priority = Literal["high", "normal", "low"]

MODES: dict[int, Mode] = {
    pb.MODE_UNSPECIFIED: "primed",
    pb.MODE_PRIMED: "primed",
    pb.MODE_ANCESTRAL: "ancestral",
    pb.MODE_CONTINUE: "continue",
    pb.MODE_UPSAMPLE: "upsample",
}


PRIORITIES: dict[int, Priority] = {
    pb.PRIORITY_UNSPECIFIED: "normal",
    pb.PRIORITY_HIGH: "high",
    pb.PRIORITY_NORMAL: "normal",
    pb.PRIORITY_LOW: "low",
}


class FieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ContinueSpec:
    mode: Mode
    seconds: float
    settings: SamplingSettings
    prime_audio: bytes | None
    codes: bytes | None
    priority: Priority = "normal"

    def samples(self, sample_rate: int) -> int | None:
        """Samples of new audio asked for; whole top frames are generated, and the result
        is cut to this. None in mode upsample (the saved top level decides the length)."""
        return round(self.seconds * sample_rate) if self.mode != "upsample" else None


def check_continue(req: pb.ContinueRequest, vocab_size: int, codebook_size: int) -> ContinueSpec:
    mode = MODES.get(req.mode)
    if mode is None:
        raise FieldError("mode", f"unknown mode {req.mode}; use MODE_PRIMED, MODE_ANCESTRAL, ...")
    priority = PRIORITIES.get(req.priority)
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
    if s.seed >= 2**63:
        raise FieldError("sampling.seed", f"must be below 2**63, got {s.seed}")
    # No seed: a fresh one, which the reply reports, so every output can be reproduced.
    seed = s.seed if s.HasField("seed") else secrets.randbits(62)
    settings = SamplingSettings(temperature, s.top_k, top_p, seed)
    settings.check(vocab_size)
    return ContinueSpec(
        mode,
        seconds if mode != "upsample" else 1.0,
        settings,
        req.prime_audio if source == "prime_audio" else None,
        req.codes if source == "codes" else None,
        priority,
    )

"""A validated ``ContinueSpec`` (``validation``) to a ``prior.generate.Job``: decode the
prime or codes and encode. Shared by the streaming service and the batch workers."""

from __future__ import annotations

import math

from tokgen.audio import load_audio
from tokgen.codec.base import Codec
from tokgen.codec.codes import load_codes
from tokgen.errors import TokgenError
from tokgen.generation.generate import (
    MAX_PRIME_SECONDS,
    MAX_SECONDS,
    Job,
    encode_prime_context,
    prepare,
    prime_tail_seconds,
)
from tokgen.generation.sampler import LevelPrior
from tokgen.generation.spec import ContinueSpec, FieldError


def prepare_spec(codec: Codec, spec: ContinueSpec, context_of: list[LevelPrior] | None = None) -> Job:
    """The job of ``spec`` (CPU work: call it in a thread); errors are ``FieldError``s
    naming the field. With ``context_of``, a prime is encoded only as far as those priors
    see it (``encode_prime_context``: fast, for streaming); else all of it (batch jobs
    return every level's codes, prime included)."""
    field = (
        "prime_audio" if spec.prime_audio is not None else "codes" if spec.codes is not None else "seconds"
    )
    mode, prime, codes, reference = spec.mode, None, None, None
    try:
        if spec.prime_audio is not None:
            # A stream decodes only the end of its prime (what the priors see); a batch job
            # returns the whole prime's codes, so it decodes all of it.
            tail = prime_tail_seconds(codec, context_of) if context_of is not None else None
            prime = load_audio(
                spec.prime_audio, codec.sample_rate, max_seconds=MAX_PRIME_SECONDS, tail_seconds=tail
            )
            if context_of is not None:
                reference = prime
                mode, codes, prime = "continue", encode_prime_context(codec, context_of, prime), None
        if spec.codes is not None:
            # Saved codes are at most a longest prime plus a longest continuation (a job's
            # result); an upsample renders all of its top level, so that is one request.
            longest = MAX_SECONDS if spec.mode == "upsample" else MAX_PRIME_SECONDS + MAX_SECONDS
            finest = min(lv.hop for lv in codec.levels)
            saved = load_codes(spec.codes, max_frames=math.ceil(longest * codec.sample_rate / finest))
            saved.check_matches(codec)
            top_seconds = saved.codes[0].size * codec.levels[0].hop / codec.sample_rate
            if top_seconds > longest + 1e-6:
                raise TokgenError(
                    f"the codes span {top_seconds:.1f} s; at most {longest:g} s in mode {spec.mode}"
                )
            codes, reference = saved.codes, saved.reference
        return prepare(codec, mode, spec.seconds, prime, codes, reference)
    except TokgenError as exc:
        raise FieldError(field, str(exc)) from exc

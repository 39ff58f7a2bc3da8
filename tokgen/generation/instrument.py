"""Instrument guidance: sampling steered towards the prime's instrument.

The middle upsampler sees the prime's own codes as a reference prompt, yet about a third of
its continuations drift to codes of another instrument, and the decoder then plays that
instrument (the timbre swap test in docs/MODELS.md: the codes, not the timbre vector,
decide it). Where a codec knows which instrument family each code stands for
(``Codec.instruments``: P(family | code), counted on a labelled corpus), the prime's codes
say which family it is: their mean P(family | code) at the coarsest counted level (the
top level names the family of 95% of held-out 5 s clips). Every code of a guided level
then gets ``strength`` times its log-ratio log P(family | code) / P(family) averaged over
that distribution: codes of the prime's instrument a little more likely, codes that only
other instruments use less, the prior still choosing among them. Like key guidance it is
one bias vector per request and level, added by the engine.
"""

from __future__ import annotations

import numpy as np

from tokgen.codec.instruments import InstrumentTable
from tokgen.generation.key import check_strength

MAX_INSTRUMENT_GUIDANCE = 20.0
# The default strength, chosen on the continuation evaluation (docs/MODELS.md).
DEFAULT_INSTRUMENT_GUIDANCE = 1.0
# The levels it steers: the upsamplers. The top prior keeps the instrument already (the
# sampled top codes lose no more of it than the real ones; docs/MODELS.md).
INSTRUMENT_GUIDED_LEVELS = (1, 2)


def check_instrument_guidance(strength: float) -> None:
    check_strength("instrument guidance", strength, MAX_INSTRUMENT_GUIDANCE)


def prime_families(table: InstrumentTable, known: list[np.ndarray]) -> np.ndarray | None:
    """The prime's instrument family distribution, from its codes at the coarsest level
    the table counts (None without prime codes there)."""
    level = min(table.counts)
    codes = known[level] if level < len(known) else np.zeros(0, np.int64)
    return table.profile(level, codes) if codes.size else None


def instrument_biases(
    table: InstrumentTable | None, known: list[np.ndarray], strength: float, guided: tuple[int, ...]
) -> list[np.ndarray | None]:
    """Per level, the logit bias over its codes (see the module docstring) for the levels in
    ``guided`` that the table counts; None elsewhere and when there is nothing to steer by."""
    none: list[np.ndarray | None] = [None] * len(known)
    if strength == 0.0 or table is None:
        return none
    families = prime_families(table, known)
    if families is None:
        return none
    return [
        strength * (table.log_ratio(level) @ families) if level in guided and level in table.counts else None
        for level in range(len(known))
    ]

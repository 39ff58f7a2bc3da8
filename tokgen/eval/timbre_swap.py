"""The timbre swap test: does the codec's decoder take the instrument from its reference clip?

A codec with a timbre encoder (``msvq``) decodes codes in the timbre of a reference clip:
the prime in generation. For held-out pieces A, each paired with a piece B whose melody is
another instrument family, A's codes are decoded three ways: with A's own prime as the
reference (what generation does), with B's prime (the swap) and with none (the neutral
timbre). The timbre classifier names each result's family. If the decoder only copied
timbre from the codes, the swap would still be heard as A's family; the more it is heard
as B's, the more the timbre vector, not the codes, decides the instrument. The codes
themselves carry timbre too (they are residual acoustic codes), so a swap that moves part
of the way is the expected result; ``reference_family_gain`` says how far.
"""

from __future__ import annotations

import numpy as np

from tokgen.codec.base import Codec
from tokgen.eval.classifier import TimbreClassifier
from tokgen.eval.continuation import Piece


def swap_partners(families: list[str]) -> list[int]:
    """For each piece, the next one (cyclically) whose family differs; -1 if none does."""
    n = len(families)
    partners = []
    for i, family in enumerate(families):
        others = [(i + k) % n for k in range(1, n) if families[(i + k) % n] != family]
        partners.append(others[0] if others else -1)
    return partners


def timbre_swap(codec: Codec, classifier: TimbreClassifier, pieces: list[Piece]) -> dict:
    """Classifier verdicts on each piece's continuation decoded with its own, a swapped
    and no timbre reference (see the module docstring)."""
    known = [p for p in pieces if p.family in classifier.cfg.families]
    partners = swap_partners([p.family for p in known])
    sr, families = codec.sample_rate, classifier.cfg.families
    own_right, neutral_right, swap_names_b, swap_names_a = [], [], [], []
    p_b_own, p_b_swap = [], []
    for a, b in zip(known, partners, strict=True):
        if b < 0:
            continue
        fa, fb = families.index(a.family), families.index(known[b].family)
        codes = codec.encode(a.real)
        own = classifier.probabilities(codec.decode_levels(codes, a.prime)[: a.real.size], sr)
        swapped = classifier.probabilities(codec.decode_levels(codes, known[b].prime)[: a.real.size], sr)
        neutral = classifier.probabilities(codec.decode_levels(codes)[: a.real.size], sr)
        own_right.append(own.argmax() == fa)
        neutral_right.append(neutral.argmax() == fa)
        swap_names_b.append(swapped.argmax() == fb)
        swap_names_a.append(swapped.argmax() == fa)
        p_b_own.append(own[fb])
        p_b_swap.append(swapped[fb])
    n = len(own_right)
    if n == 0:
        return {"n": 0}
    return {
        "n": n,
        "own_reference_accuracy": round(float(np.mean(own_right)), 3),
        "neutral_accuracy": round(float(np.mean(neutral_right)), 3),
        "swap_named_as_reference": round(float(np.mean(swap_names_b)), 3),
        "swap_named_as_codes": round(float(np.mean(swap_names_a)), 3),
        "reference_family_probability": {
            "own_reference": round(float(np.mean(p_b_own)), 3),
            "swapped_reference": round(float(np.mean(p_b_swap)), 3),
        },
        "reference_family_gain": round(float(np.mean(p_b_swap) - np.mean(p_b_own)), 3),
        "chance": round(1 / len(families), 3),
    }

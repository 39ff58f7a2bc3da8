"""General MIDI programs used to vary timbre across renders.

Renders draw a GM *family* uniformly, then a program inside it, so that every family is
about equally common: the corpus is not one timbre, and issue #8's timbre classifier sees
balanced labels. Programs are 0-based GM numbers.
"""

from __future__ import annotations

# Lead (melody) programs per GM family, chosen among those that sound like an instrument
# playing a tune in FluidR3_GM and TimGM6mb.
LEAD_PROGRAMS: dict[str, tuple[int, ...]] = {
    "piano": (0, 1, 4, 6),
    "chromatic_percussion": (8, 11, 12),
    "organ": (16, 19, 21),
    "guitar": (24, 25, 26),
    "strings": (40, 41, 42, 46),
    "ensemble": (48, 49, 52),
    "brass": (56, 57, 60),
    "reed": (65, 68, 71),
    "pipe": (73, 74, 75),
    "synth_lead": (80, 81),
}

# Accompaniment (chord/bass channels written by abc2midi from guitar chords).
ACCOMPANIMENT_PROGRAMS: tuple[int, ...] = (0, 4, 24, 25, 32, 33, 48, 19)

GM_FAMILIES = (
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
)


def family_of(program: int) -> str:
    """GM family name of a 0-based program number (8 programs per family)."""
    if not 0 <= program < 128:
        raise ValueError(f"GM program must be in [0, 127], got {program}")
    return GM_FAMILIES[program // 8]

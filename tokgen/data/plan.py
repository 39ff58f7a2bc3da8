"""Which pieces to render, into which split, with which timbre: pure functions.

The split is decided by a hash of the piece id alone, never by the seed or the requested
size, so a piece held out for testing stays held out in every dataset anyone renders
(priors and evaluations built on different corpus sizes never leak test pieces into
training). The seed decides which pieces are taken and their timbre and transposition.

Paired renders (``paired``): the renders of a piece are the same performance with another
melody instrument: same transposition, accompaniment and level, lead programs from
distinct families, and (``RenderJob.aligned``) cut at the first note rather than at the
first audible sample, so the same note starts at the same sample in every render. A
decoder learns from such pairs to take the instrument from a reference clip.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tokgen.data.programs import ACCOMPANIMENT_PROGRAMS, LEAD_PROGRAMS

SPLITS = ("train", "valid", "test")
# Fraction of pieces (by hash) and of requested hours that goes to each split.
SPLIT_FRACTIONS = {"train": 0.90, "valid": 0.05, "test": 0.05}


@dataclass(frozen=True)
class RenderJob:
    piece_id: str
    render_index: int  # 0.. renders_per_piece-1: the same piece with other timbres
    split: str
    program: int  # lead GM program (0-based)
    accompaniment_program: int
    transpose: int  # semitones
    peak_db: float  # peak level the render is normalised to, dBFS
    seed: int
    aligned: bool = False  # starts at the first note (paired renders share the sample grid)

    @property
    def name(self) -> str:
        """File stem: readable and unique per (piece, render)."""
        safe = re.sub(r"[^A-Za-z0-9]+", "_", self.piece_id.replace(".abc#", "_"))
        return f"{safe}_r{self.render_index}"


def split_of(piece_id: str) -> str:
    """Stable split of a piece: a hash of its id mapped to [0, 1)."""
    u = int.from_bytes(hashlib.sha1(piece_id.encode()).digest()[:8], "big") / 2**64
    if u < SPLIT_FRACTIONS["test"]:
        return "test"
    if u < SPLIT_FRACTIONS["test"] + SPLIT_FRACTIONS["valid"]:
        return "valid"
    return "train"


def plan_renders(
    piece_ids: Sequence[str],
    duration_of: Callable[[str], float | None],
    *,
    hours: float,
    seed: int,
    renders_per_piece: int = 1,
    min_seconds: float = 5.0,
    max_seconds: float = 120.0,
    paired: bool = False,
) -> list[RenderJob]:
    """Pick pieces per split until each split holds its share of ``hours``.

    ``duration_of`` gives a piece's length in seconds (None if it cannot be rendered); it is
    only called for pieces that are considered, so a small dataset does not parse the whole
    corpus. Every split gets at least one piece when the corpus has one for it.
    """
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    if renders_per_piece < 1:
        raise ValueError(f"renders_per_piece must be >= 1, got {renders_per_piece}")
    families = sorted(LEAD_PROGRAMS)
    if paired and not 2 <= renders_per_piece <= len(families):
        raise ValueError(
            f"paired renders need 2 to {len(families)} renders per piece (one lead family each), "
            f"got {renders_per_piece}"
        )
    rng = random.Random(seed)
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for pid in sorted(piece_ids):
        by_split[split_of(pid)].append(pid)
    jobs: list[RenderJob] = []
    for split in SPLITS:
        pool = by_split[split]
        rng.shuffle(pool)
        budget = hours * 3600.0 * SPLIT_FRACTIONS[split]
        total = 0.0
        for pid in pool:
            if total >= budget:
                break
            seconds = duration_of(pid)
            if seconds is None or seconds < min_seconds:
                continue
            if paired:
                jobs += paired_jobs(rng, pid, split, rng.sample(families, renders_per_piece))
                total += renders_per_piece * min(seconds, max_seconds)
                continue
            for r in range(renders_per_piece):
                family = rng.choice(families)
                jobs.append(
                    RenderJob(
                        piece_id=pid,
                        render_index=r,
                        split=split,
                        program=rng.choice(LEAD_PROGRAMS[family]),
                        accompaniment_program=rng.choice(ACCOMPANIMENT_PROGRAMS),
                        transpose=rng.randint(-4, 4),
                        peak_db=round(rng.uniform(-12.0, -1.0), 2),
                        seed=rng.getrandbits(31),
                    )
                )
                total += min(seconds, max_seconds)
    return jobs


def paired_jobs(rng: random.Random, piece_id: str, split: str, families: list[str]) -> list[RenderJob]:
    """One aligned render of ``piece_id`` per lead family; all else shared."""
    accompaniment, transpose = rng.choice(ACCOMPANIMENT_PROGRAMS), rng.randint(-4, 4)
    peak_db, seed = round(rng.uniform(-12.0, -1.0), 2), rng.getrandbits(31)
    return [
        RenderJob(
            piece_id=piece_id,
            render_index=r,
            split=split,
            program=rng.choice(LEAD_PROGRAMS[family]),
            accompaniment_program=accompaniment,
            transpose=transpose,
            peak_db=peak_db,
            seed=seed,
            aligned=True,
        )
        for r, family in enumerate(families)
    ]

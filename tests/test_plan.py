"""The render plan: split by piece (stable), deterministic given a seed, varied timbre."""

from tokgen.data.plan import SPLITS, plan_renders, split_of
from tokgen.data.programs import LEAD_PROGRAMS, family_of

PIECES = [f"book{b}.abc#{n}" for b in range(20) for n in range(1, 60)]


def _dur(pid: str) -> float:
    return 20.0 + (hash(pid) % 7) * 5.0


def test_split_depends_only_on_piece_id():
    assert {split_of(p) for p in PIECES} == set(SPLITS)
    a = plan_renders(PIECES, _dur, hours=0.5, seed=1)
    b = plan_renders(PIECES, _dur, hours=2.0, seed=2)
    for job in a + b:
        assert job.split == split_of(job.piece_id)


def test_plan_is_deterministic_and_meets_the_budget():
    a = plan_renders(PIECES, _dur, hours=1.0, seed=7)
    assert a == plan_renders(PIECES, _dur, hours=1.0, seed=7)
    assert a != plan_renders(PIECES, _dur, hours=1.0, seed=8)
    train_seconds = sum(_dur(j.piece_id) for j in a if j.split == "train")
    assert 0.9 * 3600 <= train_seconds < 0.9 * 3600 + 60


def test_every_split_gets_a_piece_even_when_tiny():
    jobs = plan_renders(PIECES, _dur, hours=0.01, seed=0)
    assert {j.split for j in jobs} == set(SPLITS)


def test_no_piece_in_two_splits_and_renders_per_piece():
    jobs = plan_renders(PIECES, _dur, hours=1.0, seed=0, renders_per_piece=3)
    by_piece: dict[str, set[str]] = {}
    for j in jobs:
        by_piece.setdefault(j.piece_id, set()).add(j.split)
    assert all(len(s) == 1 for s in by_piece.values())
    assert all(sum(1 for j in jobs if j.piece_id == p) == 3 for p in by_piece)
    assert len({j.name for j in jobs}) == len(jobs)


def test_timbres_are_varied_and_valid():
    jobs = plan_renders(PIECES, _dur, hours=2.0, seed=0)
    families = {family_of(j.program) for j in jobs}
    assert len(families) >= 8
    assert all(j.program in LEAD_PROGRAMS[family_of(j.program)] for j in jobs)
    assert all(-4 <= j.transpose <= 4 and -12 <= j.peak_db <= -1 for j in jobs)


def test_unrenderable_and_short_pieces_are_skipped():
    jobs = plan_renders(
        PIECES, lambda p: None if p.endswith("#1") else 2.0 if p.endswith("#2") else 30.0, hours=0.5, seed=0
    )
    assert not any(j.piece_id.endswith(("#1", "#2")) for j in jobs)


def test_paired_renders_are_one_performance_with_other_instruments():
    import pytest

    jobs = plan_renders(PIECES, _dur, hours=0.5, seed=3, renders_per_piece=2, paired=True)
    by_piece: dict[str, list] = {}
    for j in jobs:
        by_piece.setdefault(j.piece_id, []).append(j)
    assert by_piece and all(len(g) == 2 for g in by_piece.values())
    for a, b in by_piece.values():
        assert a.aligned and b.aligned and (a.render_index, b.render_index) == (0, 1)
        shared = ("transpose", "accompaniment_program", "peak_db", "seed", "split")
        assert all(getattr(a, k) == getattr(b, k) for k in shared)
        assert family_of(a.program) != family_of(b.program)  # another instrument family
    assert len({a.transpose for a, _ in by_piece.values()}) > 1  # still varied across pieces
    assert not any(j.aligned for j in plan_renders(PIECES, _dur, hours=0.5, seed=3, renders_per_piece=2))
    with pytest.raises(ValueError, match="paired"):
        plan_renders(PIECES, _dur, hours=0.5, seed=3, renders_per_piece=1, paired=True)

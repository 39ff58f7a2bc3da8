"""Seam flux and distinct codes on synthetic audio and codes."""

from __future__ import annotations

import numpy as np
import pytest

from tokgen.eval.structure import (
    distinct_code_ratio,
    distinct_codes,
    seam_flux_excess,
    seam_flux_ratio,
    seam_positions,
)

SR = 16000


def test_seam_positions_step_by_the_segment_from_where_sampling_started():
    assert seam_positions(80000, 8000) == list(range(8000, 80000, 8000))
    assert seam_positions(20000, 8000, offset=100) == [7900, 15900]
    assert seam_positions(80000, None) == [] and seam_positions(5000, 8000) == []


def test_seam_flux_ratio_finds_abrupt_changes_at_the_seams_only():
    rng = np.random.default_rng(0)
    t = np.arange(5 * SR) / SR
    seams = seam_positions(t.size, 8000)
    steady = [(0.1 * rng.standard_normal(t.size)).astype(np.float32) for _ in range(2)]
    ratio = seam_flux_ratio(steady, SR, [seams, seams])
    assert ratio is not None and 0.85 < ratio < 1.15
    # A tone whose pitch jumps at every seam.
    freq = np.where((np.arange(t.size) // 8000) % 2 == 0, 440.0, 620.0)
    jumpy = (0.3 * np.sin(2 * np.pi * np.cumsum(freq) / SR)).astype(np.float32)
    assert seam_flux_ratio([jumpy], SR, [seams]) > 2.0
    elsewhere = [s + 4000 for s in seams[:-1]]  # half-way between the jumps
    assert seam_flux_ratio([jumpy], SR, [elsewhere]) < 1.0
    assert seam_flux_ratio([jumpy], SR, [[]]) is None
    with pytest.raises(ValueError):
        seam_flux_ratio([jumpy], SR, [])


def test_seam_flux_excess_discounts_what_the_real_music_does_at_the_seams():
    """Notes that start on every seam give real audio a high ratio there too; a clip with
    the same onsets has no excess, one that clicks at its seams on top of them has."""
    rng = np.random.default_rng(1)
    t = np.arange(4 * SR) / SR
    seams = seam_positions(t.size, 8000)
    envelope = np.exp(-((np.arange(t.size) % 8000) / SR) * 12)  # a decaying note from every seam
    real = (envelope * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    same = (envelope * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    ratio = seam_flux_ratio([real], SR, [seams])
    assert ratio is not None and ratio > 1.5  # the meter alone
    excess = seam_flux_excess(seam_flux_ratio([same], SR, [seams]), ratio)
    assert excess is not None and 0.9 < excess < 1.1
    clicky = same.copy()  # the same notes, and a click at every seam
    for s in seams:
        clicky[s - 32 : s + 32] += 0.5 * rng.standard_normal(64).astype(np.float32)
    clicky_excess = seam_flux_excess(seam_flux_ratio([clicky], SR, [seams]), ratio)
    assert clicky_excess is not None and clicky_excess > 1.2
    assert seam_flux_excess(seam_flux_ratio([same], SR, [[]]), ratio) is None
    assert seam_flux_excess(excess, None) is None


def test_distinct_code_ratio_counts_loops():
    real = np.arange(16)
    looping = np.tile(np.arange(4), 4)
    assert distinct_codes(looping) == 4
    assert distinct_code_ratio([looping, real], [real, real]) == pytest.approx((0.25 + 1.0) / 2)
    two_codebooks = np.stack([np.tile([0, 1], 4), np.tile([0, 0, 1, 1], 2)])  # 4 distinct pairs
    assert distinct_codes(two_codebooks) == 4
    with pytest.raises(ValueError):
        distinct_code_ratio([real], [])

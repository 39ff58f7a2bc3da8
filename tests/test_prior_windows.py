import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokgen.errors import TokgenError
from tokgen.generation.windows import Window, plan_segments, plan_windows, upper_span


def test_prime_shorter_than_one_hop_fills_the_first_window():
    plan = plan_windows(prime_frames=3, total_frames=30, n_ctx=8, hop_fraction=0.5)
    assert plan.windows[0] == Window(start=0, context=3, new=5)
    assert all(w.context == 4 and w.new == 4 for w in plan.windows[1:-1])
    assert plan.prime_frames_dropped == 0


def test_prime_longer_than_the_context_keeps_its_end():
    plan = plan_windows(prime_frames=20, total_frames=24, n_ctx=8, hop_fraction=0.25)
    assert plan.windows == (Window(start=14, context=6, new=2), Window(start=16, context=6, new=2))
    assert plan.prime_frames_dropped == 14


def test_output_shorter_than_one_window_and_nothing_to_do():
    assert plan_windows(5, 7, n_ctx=100, hop_fraction=0.5).windows == (Window(0, 5, 2),)
    assert plan_windows(5, 5, n_ctx=100, hop_fraction=0.5).windows == ()


def test_ancestral_sampling_starts_from_nothing():
    plan = plan_windows(0, 10, n_ctx=4, hop_fraction=0.5)
    assert plan.windows[0] == Window(0, 0, 4)
    assert [w.new for w in plan.windows] == [4, 2, 2, 2]


def test_after_a_lead_window_windows_double_until_full():
    plan = plan_windows(prime_frames=40, total_frames=300, n_ctx=64, hop_fraction=0.5, lead=3)
    assert [w.new for w in plan.windows[:6]] == [3, 6, 12, 24, 32, 32]
    assert all(w.context == 32 for w in plan.windows)  # full context throughout: no seam
    assert sum(w.new for w in plan.windows) == 260


def test_lead_windows_of_two_levels_end_together():
    """With leads in the ratio of their hops, a level's k-th window ends where the level
    above's k-th window ends: the level below waits for no more than that window."""
    top = plan_windows(10, 200, n_ctx=256, hop_fraction=0.5, lead=10)
    mid = plan_windows(40, 800, n_ctx=512, hop_fraction=0.5, lead=40)
    for t, m in list(zip(top.windows, mid.windows, strict=False))[:3]:
        assert upper_span(m, 4, 200)[1] == t.end


def test_bad_arguments():
    with pytest.raises(TokgenError, match="hop_fraction"):
        plan_windows(0, 10, 8, 0.0)
    with pytest.raises(TokgenError, match="at least 2"):
        plan_windows(0, 10, 1, 0.5)
    with pytest.raises(TokgenError, match="prime"):
        plan_windows(11, 10, 8, 0.5)
    with pytest.raises(TokgenError, match="start"):
        plan_windows(3, 10, 8, 0.5, start=4)
    with pytest.raises(TokgenError, match="segment_frames"):
        plan_segments(0, 10, 8, 0.5, 0)


def test_segments_continue_the_prime_then_start_fresh():
    first, second, third = plan_segments(5, 25, n_ctx=8, hop_fraction=0.5, segment_frames=8)
    assert first.windows == (Window(1, 4, 4), Window(5, 4, 4))  # reads the prime
    assert second.start == 13 and second.windows == (Window(13, 0, 8),)  # nothing before 13
    assert third.windows == (Window(21, 0, 4),)
    assert plan_segments(5, 25, 8, 0.5, None) == (plan_windows(5, 25, 8, 0.5),)
    assert plan_segments(5, 25, 8, 0.5, 100) == (plan_windows(5, 25, 8, 0.5),)
    assert plan_segments(5, 5, 8, 0.5, 4) == (plan_windows(5, 5, 8, 0.5),)  # nothing to do


def test_later_segments_warm_up_before_their_start():
    first, second = plan_segments(5, 21, n_ctx=8, hop_fraction=0.5, segment_frames=8, overlap=3)
    assert first.warmup == 0 and first.keep_from == 0
    assert second.start == 10 and second.keep_from == 13  # frames 10-12 are sampled, then dropped
    assert second.windows == (Window(10, 0, 8), Window(14, 4, 3))
    with pytest.raises(TokgenError, match="overlap"):
        plan_segments(5, 21, 8, 0.5, 8, overlap=8)


def test_upper_span_covers_the_window():
    assert upper_span(Window(start=6, context=4, new=4), ratio=4, upper_frames=100) == (1, 4)
    assert upper_span(Window(start=0, context=0, new=8), ratio=4, upper_frames=1) == (0, 1)


@given(
    prime=st.integers(0, 300),
    extra=st.integers(0, 300),
    n_ctx=st.integers(2, 64),
    hop_fraction=st.floats(0.01, 1.0),
)
def test_plan_properties(prime, extra, n_ctx, hop_fraction):
    plan = plan_windows(prime, prime + extra, n_ctx, hop_fraction)
    pos = prime
    for i, w in enumerate(plan.windows):
        assert w.start + w.context == pos  # new frames tile [prime, total) in order
        assert w.new >= 1 and w.context + w.new <= n_ctx
        assert w.context == min(pos, n_ctx - max(1, int(hop_fraction * n_ctx)))  # keep all that fits
        if i < len(plan.windows) - 1:
            assert w.context + w.new == n_ctx  # every window but the last is full
        pos += w.new
    assert pos == prime + extra


@given(
    prime=st.integers(0, 200),
    extra=st.integers(0, 400),
    n_ctx=st.integers(2, 64),
    hop_fraction=st.floats(0.01, 1.0),
    segment=st.one_of(st.none(), st.integers(1, 100)),
    overlap=st.integers(0, 99),
)
def test_segment_properties(prime, extra, n_ctx, hop_fraction, segment, overlap):
    overlap = min(overlap, segment - 1) if segment else 0
    plans = plan_segments(prime, prime + extra, n_ctx, hop_fraction, segment, overlap=overlap)
    kept = prime
    for plan in plans:
        assert max(plan.prime_frames, plan.keep_from) == kept  # kept frames tile [prime, total) in order
        pos = plan.prime_frames
        for w in plan.windows:
            assert w.start >= plan.start and w.start + w.context == pos  # never reads before its start
            assert w.new >= 1 and w.context + w.new <= n_ctx
            pos += w.new
        assert pos == plan.total_frames
        kept = pos
    assert kept == prime + extra
    assert all(p.start == p.prime_frames and p.warmup == overlap for p in plans[1:])  # later: nothing known

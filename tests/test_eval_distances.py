"""FAD, KID and IS against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from tokgen.eval.distances import (
    clip_fad,
    fad,
    fad_bootstrap,
    fad_infinity,
    frechet_distance,
    inception_score,
    kid,
)


def gaussian(rng, mean, std, n=20000, d=8):
    return rng.normal(mean, std, size=(n, d))


def test_frechet_distance_of_gaussians_is_the_closed_form():
    # Diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2.
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected)
    # Non-diagonal, same covariance: only the means count; rotation-invariant.
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    cov = rot @ np.diag(var_a) @ rot.T
    assert frechet_distance(mu_a, cov, mu_b, cov) == pytest.approx(((mu_a - mu_b) ** 2).sum())


def test_fad_of_samples_identical_near_zero_and_shifted_near_the_shift():
    rng = np.random.default_rng(1)
    same = fad(gaussian(rng, 0, 1), gaussian(rng, 0, 1))
    assert 0 <= same < 0.01
    shifted = fad(gaussian(rng, 0, 1), gaussian(rng, 0.5, 1))  # 8 dims x 0.5^2 = 2.0
    assert shifted == pytest.approx(2.0, rel=0.03)
    scaled = fad(gaussian(rng, 0, 1), gaussian(rng, 0, 2))  # 8 x (1 - 2)^2 = 8.0
    assert scaled == pytest.approx(8.0, rel=0.03)


def _poly_kernel_mean(mu_x, s_x, mu_y, s_y, d):
    """E[(x.y / d + 1)^3] for independent x ~ N(mu_x, s_x^2 I), y ~ N(mu_y, s_y^2 I): the
    moments of z = x.y from the cumulants of its independent terms x_i y_i."""
    m1 = mu_x * mu_y
    m2 = (mu_x**2 + s_x**2) * (mu_y**2 + s_y**2)
    m3 = (mu_x**3 + 3 * mu_x * s_x**2) * (mu_y**3 + 3 * mu_y * s_y**2)
    k1, k2, k3 = d * m1, d * (m2 - m1**2), d * (m3 - 3 * m2 * m1 + 2 * m1**3)
    ez, ez2, ez3 = k1, k2 + k1**2, k3 + 3 * k2 * k1 + k1**3
    return ez3 / d**3 + 3 * ez2 / d**2 + 3 * ez / d + 1


def test_kid_is_unbiased_zero_for_identical_and_the_analytic_mmd_for_shifted():
    rng = np.random.default_rng(2)
    d = 8
    mean, std = kid(gaussian(rng, 0, 1, n=4000), gaussian(rng, 0, 1, n=4000), subsets=50, subset_size=500)
    assert abs(mean) < 3 * std / np.sqrt(50) + 1e-3  # zero within its standard error
    a, b = (0.0, 1.0), (0.5, 1.0)
    analytic = _poly_kernel_mean(*a, *a, d) + _poly_kernel_mean(*b, *b, d) - 2 * _poly_kernel_mean(*a, *b, d)
    mean, std = kid(gaussian(rng, *a, n=4000), gaussian(rng, *b, n=4000), subsets=50, subset_size=500)
    assert mean == pytest.approx(analytic, rel=0.1), (mean, analytic)


def test_inception_score_extremes():
    uniform_guess = np.full((100, 5), 0.2)
    assert inception_score(uniform_guess)[0] == pytest.approx(1.0)
    certain_and_balanced = np.eye(5)[np.arange(100) % 5]
    assert inception_score(certain_and_balanced)[0] == pytest.approx(5.0, rel=1e-6)
    always_class_0 = np.eye(5)[np.zeros(100, int)]
    assert inception_score(always_class_0)[0] == pytest.approx(1.0, rel=1e-6)


def test_fad_refuses_mismatched_sets():
    with pytest.raises(ValueError):
        fad(np.zeros((10, 3)), np.zeros((10, 4)))


def _clips(rng, n, mean, std, frames=3, d=8):
    return [rng.normal(mean, std, size=(frames, d)) for _ in range(n)]


@pytest.mark.parametrize("d", [4, 64])  # more frames than dimensions, and fewer (the SVD form)
def test_clip_fad_is_fad_of_the_frames_of_the_clips_repeated_as_counted(d):
    rng = np.random.default_rng(3)
    a, b = _clips(rng, 12, 0, 1, d=d), _clips(rng, 10, 0.3, 1.5, d=d)
    assert clip_fad(a, b) == pytest.approx(fad(np.concatenate(a), np.concatenate(b)), rel=1e-6)
    counts_a, counts_b = rng.integers(0, 3, 12), rng.integers(0, 3, 10)
    repeated_a = np.concatenate([c for c, k in zip(a, counts_a, strict=True) for _ in range(k)])
    repeated_b = np.concatenate([c for c, k in zip(b, counts_b, strict=True) for _ in range(k)])
    assert clip_fad(a, b, counts_a, counts_b) == pytest.approx(fad(repeated_a, repeated_b), rel=1e-6)


def test_fad_bootstrap_interval_holds_the_estimate_and_narrows_with_more_clips():
    rng = np.random.default_rng(4)
    reference = _clips(rng, 200, 0, 1)
    systems = {"near": _clips(rng, 200, 0.1, 1), "far": _clips(rng, 200, 1.0, 1)}
    few = {"near": systems["near"][:20]}
    wide = fad_bootstrap(few, reference[:20], resamples=50, seed=0)["near"]
    intervals = fad_bootstrap(systems, reference, resamples=50, seed=0)
    for name, (lo, hi) in intervals.items():
        assert lo <= clip_fad(systems[name], reference) <= hi
    assert intervals["near"][1] < intervals["far"][0]  # separated
    assert intervals["near"][1] - intervals["near"][0] < wide[1] - wide[0]
    assert fad_bootstrap(systems, reference, resamples=50, seed=0) == intervals  # seeded


def test_fad_infinity_removes_the_small_set_bias_when_frames_outnumber_dimensions():
    rng = np.random.default_rng(5)
    a, b = _clips(rng, 400, 0, 1, frames=4, d=4), _clips(rng, 400, 0.5, 1, frames=4, d=4)  # true FD 1.0
    small_a, small_b = a[:10], b[:10]
    at_ten = clip_fad(small_a, small_b)
    fit = fad_infinity(a, b, sizes=[50, 100, 200, 400], draws=3, seed=0)
    assert fit is not None and fit[0] == pytest.approx(1.0, abs=0.15) and fit[1] > 0
    assert abs(fit[0] - 1.0) < abs(at_ten - 1.0)
    assert fad_infinity(a[:2], b[:2]) is None  # one subset size only

"""Distribution metrics on embeddings, as the audio-generation literature computes them.

- Fréchet distance (FAD when the embeddings are audio frames): the 2-Wasserstein distance
  between Gaussians fitted to two sets, ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2)``.
  The trace of the matrix square root is taken as ``Tr((A S_b A)^1/2)`` with
  ``A = S_a^1/2``: both are symmetric positive semi-definite, so eigen-decompositions give
  them stably (negative round-off eigenvalues clipped), with no complex parts to discard.
- KID: the squared maximum mean discrepancy with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, unbiased (diagonal terms left out), averaged over random
  subsets as Binkowski et al. do; unlike FAD it has no bias that depends on the set size.
- Inception score: ``exp(E_x KL(p(y|x) || p(y)))`` from a classifier's class probabilities.
"""

from __future__ import annotations

import numpy as np


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    root_a = _psd_sqrt(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def fad(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two sets of embeddings (rows are frames)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two sets of >= 2 embeddings of one size, got {a.shape} and {b.shape}")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kid(
    a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, standard deviation) of the unbiased MMD^2 over ``subsets`` random subsets of
    ``subset_size`` rows of each set (all rows when a set is smaller)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError("KID needs at least 2 embeddings in each set")
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """(mean, std over ``splits``) of exp(E KL(p(y|x) || p(y))); ``probs`` rows sum to 1.
    1 when every prediction is the same; the number of classes when each is certain and
    the classes are used equally."""
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(0, keepdims=True)
        scores.append(float(np.exp((part * (np.log(part) - np.log(marginal))).sum(1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


# --- FAD of sets of clips: bootstrap intervals and the extrapolation to infinitely many clips.
#
# A clip gives a few frames (aiSFX: 3 per 5 s clip, 512-d), so FAD is computed on the frames
# of sets of clips, and resampling (bootstrap) or subsampling (FAD-infinity) picks clips,
# never single frames. With fewer frames than dimensions a sample covariance has low rank
# and FAD is biased upwards by an amount that shrinks as 1/clips (Chong & Forsyth 2020 for
# FID): FAD-infinity is the intercept of the least-squares line of FAD against 1/clips.


def _weighted_rows(frames: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, rows R) with R^T R the covariance of ``frames`` counted ``weights`` times each
    (what np.cov gives for the frames repeated that often)."""
    total = weights.sum()
    mu = weights @ frames / total
    rows = (frames - mu) * np.sqrt(weights / (total - 1))[:, None]
    return mu, rows


def clip_fad(
    a: list[np.ndarray],
    b: list[np.ndarray],
    a_counts: np.ndarray | None = None,
    b_counts: np.ndarray | None = None,
) -> float:
    """FAD between two sets of clips (each an (n_i, d) array of frames), clip ``i`` of
    ``a`` counted ``a_counts[i]`` times (default once): as ``fad`` of the frames of the
    repeated clips, without repeating them. When a set has fewer frames than dimensions,
    ``Tr((S_a^1/2 S_b S_a^1/2)^1/2)`` is the nuclear norm of ``R_b R_a^T`` (R: the centred
    rows, S = R^T R): an SVD of frames x frames instead of two d x d eigen-decompositions."""

    def rows(clips: list[np.ndarray], counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        counts = np.ones(len(clips)) if counts is None else np.asarray(counts, np.float64)
        used = np.nonzero(counts > 0)[0]
        frames = np.concatenate([np.asarray(clips[i], np.float64) for i in used])
        weights = np.concatenate([np.full(len(clips[i]), counts[i]) for i in used])
        if weights.sum() < 2:
            raise ValueError("need at least 2 frames in each set")
        return _weighted_rows(frames, weights)

    mu_a, ra = rows(a, a_counts)
    mu_b, rb = rows(b, b_counts)
    if ra.shape[1] != rb.shape[1]:
        raise ValueError(f"embeddings of different sizes: {ra.shape[1]} and {rb.shape[1]}")
    diff = mu_a - mu_b
    traces = float((ra * ra).sum() + (rb * rb).sum())
    if min(len(ra), len(rb)) < ra.shape[1]:
        trace_sqrt = float(np.linalg.svd(rb @ ra.T, compute_uv=False).sum())
    else:
        root_a = _psd_sqrt(ra.T @ ra)
        cross = np.linalg.eigvalsh(root_a @ (rb.T @ rb) @ root_a)
        trace_sqrt = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    return float(diff @ diff + traces - 2.0 * trace_sqrt)


def fad_bootstrap(
    systems: dict[str, list[np.ndarray]],
    reference: list[np.ndarray],
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """``level`` interval of each system's FAD against ``reference`` from ``resamples``
    bootstrap resamples: the clips of the system and of the reference drawn with
    replacement (each set at its own size; the reference drawn once per resample for all
    systems). A resample repeats clips, which raises FAD like fewer clips would (the bias
    above), so the resamples' percentiles are taken around their median and moved onto the
    estimate from all clips: the interval is the spread, centred where FAD was measured."""
    if resamples < 2:
        raise ValueError(f"need at least 2 resamples, got {resamples}")
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(resamples):
        ref_counts = np.bincount(rng.integers(0, len(reference), len(reference)), minlength=len(reference))
        for name, clips in systems.items():
            counts = np.bincount(rng.integers(0, len(clips), len(clips)), minlength=len(clips))
            values[name].append(clip_fad(clips, reference, counts, ref_counts))
    tail = (1 - level) / 2 * 100
    out = {}
    for name, v in values.items():
        shift = clip_fad(systems[name], reference) - float(np.median(v))
        out[name] = (float(np.percentile(v, tail)) + shift, float(np.percentile(v, 100 - tail)) + shift)
    return out


def fad_infinity(
    a: list[np.ndarray],
    b: list[np.ndarray],
    sizes: list[int] | None = None,
    draws: int = 3,
    seed: int = 0,
) -> tuple[float, float] | None:
    """(FAD at infinitely many clips, slope) of the line FAD(n) = FAD_inf + slope / n fitted
    by least squares to the FAD of random subsets of n clips of each set (without
    replacement, ``draws`` per size). ``sizes``: default 5 sizes from a quarter of the
    smaller set to all of it. None when fewer than 2 distinct sizes fit."""
    largest = min(len(a), len(b))
    if sizes is None:
        sizes = sorted({int(v) for v in np.rint(np.linspace(max(2, largest / 4), largest, 5))})
    sizes = [n for n in sizes if 2 <= n <= largest]
    if len(set(sizes)) < 2:
        return None
    rng = np.random.default_rng(seed)
    x, y = [], []
    for n in sizes:
        for _ in range(draws if n < largest or len(a) != len(b) else 1):  # all of both: one value
            pick_a = np.zeros(len(a))
            pick_a[rng.choice(len(a), n, replace=False)] = 1
            pick_b = np.zeros(len(b))
            pick_b[rng.choice(len(b), n, replace=False)] = 1
            x.append(1.0 / n)
            y.append(clip_fad(a, b, pick_a, pick_b))
    slope, intercept = np.polyfit(np.asarray(x), np.asarray(y), 1)
    return float(intercept), float(slope)

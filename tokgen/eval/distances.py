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

"""Regularised linear discriminant analysis from the shared statistics (SFDA's Fisher space, ETran's LDA score).

The Fisher/LDA class posterior with a shrunk within-class covariance ``S`` is

    log p(k | x) = (x − μ)ᵀ S⁻¹ (μ_k − μ) − ½ (μ_k − μ)ᵀ S⁻¹ (μ_k − μ) + log π_k + const(x)

(written about the global mean μ, which leaves it unchanged and keeps large offsets from cancelling). Only
``S⁻¹ Mᵀ`` ``(D, K)`` is ever needed, from one Cholesky factorisation, never the D×D eigenproblem that the authors'
code solves: the classifier is the same.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from facezoo.errors import FaceZooError
from facezoo.metrics.stats import FeatureStats

__all__ = [
    "cholesky", "sfda_shrinkage", "shrink", "lda_log_posteriors", "linear_log_posteriors", "shrunk_lda_log_posteriors",
]


def _largest_eigenvalue(sym: np.ndarray) -> float:
    if sym.shape[0] <= 64:
        return float(np.linalg.eigvalsh(sym)[-1])
    v0 = np.ones(sym.shape[0]) / np.sqrt(sym.shape[0])  # fixed start: deterministic
    return float(scipy.sparse.linalg.eigsh(sym, k=1, which="LA", v0=v0, return_eigenvectors=False)[0])


def sfda_shrinkage(within: np.ndarray, a: float = 5.0) -> float:
    """SFDA's regularisation strength ``λ = max(exp(−a σ), 1e-10)``, σ the largest eigenvalue of ``S_W``.

    ``σ ≥ max_i (S_W)_ii``: when that bound already puts λ at its floor (usual for real features) no eigensolver
    runs.
    """
    if np.exp(-a * np.diagonal(within).max()) <= 1e-10:
        return 1e-10
    return max(float(np.exp(-a * _largest_eigenvalue(within))), 1e-10)


def shrink(within: np.ndarray, lam: float) -> np.ndarray:
    """``(1 − λ) S_W + λ (tr S_W / D) I``: shrinkage towards a scaled identity."""
    d = within.shape[0]
    out = (1.0 - lam) * within
    out[np.diag_indices(d)] += lam * np.trace(within) / d
    return out


def cholesky(stats: FeatureStats, covariance: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a within-class covariance, made positive definite when it is not.

    A covariance that is singular to the precision of the statistics (N < D: rank ≤ N − K; perfectly collapsed
    classes) gets the smallest ridge of the ladder ``10·eps·s, 100·eps·s, ...`` that factorises, with ``eps`` the
    machine epsilon of the features' arithmetic (float32 or float64) and ``s`` the mean variance per dimension:
    rounding noise in a float32 Gram is ~1e-7 of its scale, far above SFDA's own floor λ = 1e-10. The classifier
    then treats the null directions as uninformative.
    """
    try:
        return scipy.linalg.cholesky(covariance, lower=True)
    except np.linalg.LinAlgError:
        pass
    scale = max(np.trace(covariance) / len(covariance), stats.total_variance / stats.dim)
    for power in range(1, 8):
        try:
            ridge = 10.0**power * stats.eps * scale
            return scipy.linalg.cholesky(covariance + ridge * np.eye(len(covariance)), lower=True)
        except np.linalg.LinAlgError:
            continue
    raise FaceZooError("the within-class covariance is not positive definite even with a ridge of 1e-1 × its scale")


def lda_log_posteriors(
    stats: FeatureStats,
    covariance: np.ndarray,
    means: np.ndarray,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """``log p(k | x_i)`` ``(N, K)`` (rows in class order) of the LDA with ``covariance`` ``(D, D)``.

    Args:
        means: class means about the global mean ``(K, D)``.
        project: maps directions ``(D, K)`` to the projections ``(N, K)`` of the samples about the global mean;
            default: one pass over the features (``stats.project(·, "global")``).
    """
    coef = scipy.linalg.cho_solve((cholesky(stats, covariance), True), means.T)  # S⁻¹ Mᵀ (D, K)
    return linear_log_posteriors(stats, coef, means, project)


def linear_log_posteriors(
    stats: FeatureStats,
    coef: np.ndarray,
    means: np.ndarray,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """:func:`lda_log_posteriors` from ``coef = S⁻¹ Mᵀ`` ``(D, K)`` already solved (or a pseudo-inverse's)."""
    z = stats.project(coef, "global") if project is None else project(coef)
    logits = z - (0.5 * np.einsum("kd,dk->k", means, coef) - np.log(stats.priors))
    return log_softmax(logits)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, in place on ``logits`` ``(N, K)`` (no temporaries of that size beyond one).

    ``log Σ exp`` is taken as ``max + log1p(Σ_{others} exp(l − max))``, not ``log(1 + Σ ...)``: when the other
    classes' mass is below float64's 1.1e-16, ``1 + mass`` rounds to 1 and a posterior of 1 − 1e-30 became exactly
    ``log 1 = 0``; ``log1p`` keeps it at −1e-30. Elsewhere the two agree to rounding.
    """
    rows = np.arange(len(logits))
    top = logits.argmax(1)
    logits -= logits[rows, top][:, None]
    others = np.exp(logits)
    others[rows, top] = 0.0  # exp(0) = 1, kept out of the sum and added exactly by log1p
    logits -= np.log1p(others.sum(1, keepdims=True))
    return logits


def shrunk_lda_log_posteriors(stats: FeatureStats, a: float = 5.0) -> tuple[float, np.ndarray]:
    """SFDA's first Fisher fit, shared by SFDA and ETran: ``(λ, log p(k | x_i))`` with ``S_Wλ``, class order."""

    def compute() -> tuple[float, np.ndarray]:
        within = stats.within_scatter()
        lam = sfda_shrinkage(within, a)
        return lam, lda_log_posteriors(stats, shrink(within, lam), stats.class_deviations)

    return stats.memo(("shrunk_lda", a), compute)

"""H-score and its shrinkage (Ledoit–Wolf) version.

H-score: Bao, Li, Huang, Xu, Yang, Zhong, "An Information-Theoretic Approach to Transferability in Task Transfer
Learning", ICIP 2019::

    H(f) = tr(cov(f)⁺ cov(E[f | y])) = Σ_k π_k (μ_k − μ)ᵀ Σ_T⁺ (μ_k − μ)

Shrinkage H-score: Ibrahim, Ponomareva, Mazumder, "Newer is not always better: Rethinking transferability metrics,
their peculiarities, stability and performance", ECML-PKDD 2022::

    Σ_α = (1 − α) Σ_T + α (tr Σ_T / D) I,   H_α = (1 − α) tr(Σ_α⁻¹ cov(E[f | y]))

with α the Ledoit–Wolf shrinkage of the feature covariance.

Both from the shared statistics alone: Σ_T from the Gram, class means from the class sums, Ledoit–Wolf's fourth
moment ``Σ_i ‖x_i − μ‖⁴`` from sums of the Gram's pass (scikit-learn forms the D×D matrix ``(X∘X)ᵀ(X∘X)`` only to
sum it). Cost: one Cholesky factorisation O(D³/3) after the shared pass (the shared eigen-decomposition of Σ_T only
when the covariance is singular), no pass over the features.

Deviations from public code: the pseudo-inverse cut-off is NumPy's default (``D·eps`` relative), not tllib's 1e-15,
which lets rounding noise into the inverse when N < D; one published H-score (google-research ``stable_transfer``)
multiplies ``pinv(cov f) * cov g`` element-wise instead of as matrices, contrary to the paper; both covariances use
1/N here (tllib mixes 1/N and 1/(N − 1) in the shrinkage version, a constant factor N/(N − 1)).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from facezoo.metrics._registry import register_metric
from facezoo.metrics.stats import FeatureStats

__all__ = ["hscore", "hscore_shrinkage", "ledoit_wolf_shrinkage"]


def _between_quadratic(stats: FeatureStats, alpha: float = 0.0) -> float:
    """``Σ_k π_k (μ_k − μ)ᵀ cov⁺ (μ_k − μ)`` with ``cov = (1 − α) Σ_T + α (tr Σ_T / D) I``: a Cholesky solve, or
    NumPy's pseudo-inverse cut-off (``D·eps`` relative, ``eps`` that of the features' arithmetic) when ``cov`` is
    singular to that precision (N ≤ D, collinear features), decided by the reciprocal condition number of the
    Cholesky factor (LAPACK ``pocon``). The pseudo-inverse reads Σ_T's eigen-decomposition, shared with every metric
    of the statistics (shrinkage keeps the eigenvectors and maps each eigenvalue λ to ``(1 − α) λ + α tr Σ_T / D``),
    so H-score and its shrinkage version cost one decomposition between them, not one each."""
    dev = stats.class_deviations
    cutoff = stats.dim * stats.eps  # a float32 Gram is only good to ~1e-7 of its scale
    ridge = alpha * float(np.trace(stats.covariance)) / stats.dim
    cov = stats.covariance if alpha == 0 else (1.0 - alpha) * stats.covariance
    if alpha:
        cov[np.diag_indices(stats.dim)] += ridge
    try:
        chol = scipy.linalg.cholesky(cov, lower=True)
        rcond, info = scipy.linalg.lapack.dpocon(chol, np.abs(cov).sum(0).max(), uplo="L")
        if info == 0 and rcond > cutoff:
            white = scipy.linalg.solve_triangular(chol, dev.T, lower=True)  # L⁻¹ (μ_k − μ)
            return float(stats.priors @ (white**2).sum(0))
    except np.linalg.LinAlgError:
        pass
    eigvals, eigvecs = stats.covariance_eigh  # descending, clipped at 0
    eigvals = (1.0 - alpha) * eigvals + ridge
    keep = eigvals > cutoff * eigvals[0]
    return float(stats.priors @ ((dev @ eigvecs[:, keep]) ** 2 / eigvals[keep]).sum(1))


@register_metric("hscore", paper="Bao et al., ICIP 2019", uses_gram=True)
def hscore(stats: FeatureStats) -> float:
    """H-score ``tr(Σ_T⁺ Σ_between)``; higher is better."""
    return _between_quadratic(stats)


def ledoit_wolf_shrinkage(stats: FeatureStats) -> float:
    """Ledoit–Wolf shrinkage intensity α ∈ [0, 1] of the feature covariance (scikit-learn's estimator)."""
    n, d = stats.n, stats.dim
    cov = stats.covariance
    trace = float(np.trace(cov))
    mu = trace / d
    frob2 = float(np.sum(cov**2))
    beta = (stats.centered_fourth_moment / n - frob2) / (d * n)
    delta = (frob2 - 2.0 * mu * trace + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 else float(beta / delta)


@register_metric("hscore_shrinkage", paper="Ibrahim et al., ECML-PKDD 2022", uses_gram=True)
def hscore_shrinkage(stats: FeatureStats) -> float:
    """Shrinkage H-score ``(1 − α) tr(Σ_α⁻¹ Σ_between)``; higher is better."""
    alpha = ledoit_wolf_shrinkage(stats)
    return (1.0 - alpha) * _between_quadratic(stats, alpha)

"""LogME: the log of the maximum marginal evidence of a Bayesian linear model on the features.

You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021, and the
fixed-point algorithm of "Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs",
JMLR 2022. For each class k, ``y = 1[label = k]`` is regressed on the raw (uncentred) features ``F`` with prior
``w ~ N(0, α⁻¹ I)`` and noise ``N(0, β⁻¹)``; with ``FᵀF = V diag(σ) Vᵀ`` and ``x = Uᵀ y`` (``U = F V σ^-½``),
iterate from α = β = 1 (at most 11 times, until ``|Δ(α/β)| / (α/β) ≤ 1e-3``)::

    t = α/β,  γ = Σ σ/(σ + t),  m² = Σ σ x²/(σ + t)²,  r² = Σ x²/(1 + σ/t)² + (‖y‖² − ‖x‖²)
    α = γ/(m² + 1e-5),  β = (N − γ)/(r² + 1e-5)

and report the evidence per sample, averaged over classes::

    L = [D/2 log α + N/2 log β − 1/2 Σ_{i≤D} log(α + β σ_i) − β/2 r² − α/2 m² − N/2 log 2π] / N

Everything comes from the shared statistics: ``FᵀF`` from the Gram, ``Fᵀ y_k`` is the class sum, ``‖y_k‖² = n_k``,
so no pass over the features (the authors' code forms ``F V`` (N×D)). Cost O(D³ + K·D²). Vectorised over classes.

Deviation from the authors' code (thuml/LogME): when N < D the code's log-determinant sums only the non-zero σ and
misses ``−(D − rank)/2 · log α`` (thuml/LogME issue #23); the sum here runs over all D eigenvalues, as in the paper.
Not shift-invariant: the model has no bias, so a constant offset of the features changes the evidence.
"""

from __future__ import annotations

import numpy as np

from facezoo.metrics._registry import register_metric
from facezoo.metrics.stats import FeatureStats

__all__ = ["logme"]


@register_metric("logme", paper="You et al., ICML 2021; JMLR 2022", uses_gram=True, shift_invariant=False)
def logme(stats: FeatureStats, *, max_iter: int = 11, tol: float = 1e-3) -> float:
    """Mean over classes of the per-sample log evidence; higher is better."""
    n, d = stats.n, stats.dim
    c, s = stats.shift, stats.class_sums.sum(0)
    raw_gram = stats.gram + np.outer(c, s) + np.outer(s, c) + n * np.outer(c, c)  # FᵀF from the shifted Gram
    sigma, v = np.linalg.eigh(raw_gram)
    # FᵀF has rank ≤ min(N, D); eigenvalues below the rounding noise of what it is made of are that noise: the
    # shifted Gram is good to eps (of its arithmetic) × its trace, and the float64 sum and eigh to eps64 × ‖FᵀF‖.
    # Not eps × ‖FᵀF‖: under a large offset the offset's own eigenvalue dwarfs the spread, which is exact
    noise = stats.eps * np.trace(stats.gram) + d * np.finfo(np.float64).eps * sigma[-1]
    keep = (sigma > noise) & (np.arange(d) >= d - min(n, d))
    sigma, v = sigma[keep], v[:, keep]
    fty = stats.class_sums + np.outer(stats.counts, c)  # Fᵀ y_k (K, D)
    x2 = (fty @ v) ** 2 / sigma  # (Uᵀ y_k)²
    res_x2 = np.maximum(stats.counts - x2.sum(1), 0.0)

    k = stats.n_classes
    alpha, beta = np.ones(k), np.ones(k)
    m2, res2 = np.zeros(k), np.zeros(k)
    active = np.ones(k, dtype=bool)
    for _ in range(max_iter):
        t = (alpha / beta)[:, None]
        # σ/(σ+t) and t/(σ+t), never (σ+t)²: features of scale 1e-140 would underflow it to 0
        gain, shrink = sigma / (sigma + t), t / (sigma + t)
        gamma = gain.sum(1)
        m2 = np.where(active, (gain * x2 / (t + sigma)).sum(1), m2)
        res2 = np.where(active, (x2 * shrink**2).sum(1) + res_x2, res2)
        alpha = np.where(active, gamma / (m2 + 1e-5), alpha)
        beta = np.where(active, (n - gamma) / (res2 + 1e-5), beta)
        active &= np.abs(alpha / beta - t[:, 0]) / t[:, 0] > tol
        if not active.any():
            break
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * np.log(alpha[:, None] + beta[:, None] * sigma).sum(1)
        - 0.5 * (d - len(sigma)) * np.log(alpha)
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    ) / n
    return float(evidence.mean())

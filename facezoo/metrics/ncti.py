"""NCTI: Neural Collapse informed Transferability Index.

Wang, Zhao, Gao, Yuan, Liu, "How Far Pre-trained Models Are from Neural Collapse on the Target Dataset Informs their
Transferability", ICCV 2023. Three terms measured after reducing the features to 64 principal directions and fitting
an LDA (within-class covariance ``S_W / N``, shrunk towards ``(tr/d) I`` by ``s = exp(−Σ_{j<32} λ_j)`` when
``s > 1e-10``):

- ``seli`` (simplex ETF-ness): the nuclear norm of the LDA-transformed, centred features ``‖Z‖_*``;
- ``ncc`` (nearest-centre classifier): the mean LDA posterior of the true class ``(1/N) Σ_i p(y_i | x_i)``;
- ``vc`` (variability collapse): ``log Σ_k ‖P_k‖_*``, ``P_k`` the LDA posteriors ``(n_k, K)`` of class k's rows.

Zoo score: ``norm(seli) + norm(ncc) − norm(vc)``, each term min-max normalised across the models being ranked
(``zoo_norm``); for a single model the raw ``seli + ncc − vc``, which means little on its own.

The paper's text was not available to us; the terms follow the authors' public code (BUserName/NCTI
``metrics.py``), which computes them with scikit-learn's PCA and LDA. Here ``‖Z‖_*`` comes in closed form from the
d×d class statistics in PCA space (the LDA transform whitens the within-class covariance with ``W`` and keeps the
between-class subspace ``Q``: ``Z`` has the singular values of ``Qᵀ Wᵀ T W Q`` square-rooted, ``T`` the total
scatter), and the posteriors from the PCA projections shared with FaCe and GBC. ``W`` is scikit-learn's svd-solver
whitening, rank cut-off included: with N ≤ 64 + K samples the within covariance in PCA space is singular, and
the cut-off keeps the score finite and independent of the samples' order. The within covariance is normalised by N,
as in current scikit-learn (both its svd and shrinkage solvers); its svd solver divided by N − K before 2026
(scikit-learn PR #33626), as in the authors' runs, which scales ``seli`` by ``sqrt(N/(N − K))`` and sharpens the
posteriors slightly.

Cost: the shared Gram and PCA projection, O(d³ + N·d·K + N·K²). Higher is better.
"""

from __future__ import annotations

import numpy as np

from facezoo.metrics._gaussian import pca_class_moments
from facezoo.metrics._lda import linear_log_posteriors
from facezoo.metrics._registry import register_metric, zoo_normalise
from facezoo.metrics.stats import FeatureStats

__all__ = ["ncti"]


def _combine_ncti(terms: dict[str, np.ndarray], *, zoo_norm: str = "minmax") -> np.ndarray:
    return zoo_normalise(terms["seli"], zoo_norm) + zoo_normalise(terms["ncc"], zoo_norm) - zoo_normalise(
        terms["vc"], zoo_norm
    )


@register_metric(
    "ncti", paper="Wang et al., ICCV 2023", uses_gram=True, combine=_combine_ncti,
    combine_options={"zoo_norm": "minmax"},
)
def ncti(stats: FeatureStats, *, pca_dim: int | None = 64) -> dict[str, float]:
    """NCTI's raw terms ``seli``, ``ncc``, ``vc`` (zoo score: module docstring)."""
    moments = pca_class_moments(stats, pca_dim)
    means, residuals, variances = moments["means"], moments["residuals"], moments["variances"]
    n, k, d = stats.n, stats.n_classes, means.shape[1]
    within = residuals.T @ residuals
    between = (means.T * stats.counts) @ means
    cov = within / n
    s = float(np.exp(-variances[:32].sum()))
    if s > 1e-10:
        cov = (1.0 - s) * cov + s * np.trace(cov) / d * np.eye(d)

    whiten = _within_whitening(stats, cov, variances[0])  # (d, r): whitenedᵀ cov whitened = I
    coef = whiten @ (whiten.T @ means.T)  # cov⁺ Mᵀ on the kept subspace
    log_post = linear_log_posteriors(stats, coef, means, lambda c: (residuals + means[stats.sorted_codes]) @ c)
    post = np.exp(log_post)
    ncc = float(post[np.arange(n), stats.sorted_codes].mean())
    nuclear = sum(
        np.linalg.svd(post[stats.starts[c] : stats.starts[c + 1]], compute_uv=False).sum() for c in range(k)
    )

    # the LDA transform whitens the within-class covariance and keeps the between-class subspace Q:
    # ZᵀZ = Qᵀ Wᵀ T W Q
    beta, q = np.linalg.eigh(whiten.T @ between @ whiten)
    q = q[:, beta > 1e-8 * beta.max()]  # scikit-learn's rank cut-off (tol 1e-4 on singular values)
    total = whiten.T @ (within + between) @ whiten
    seli = float(np.sqrt(np.clip(np.linalg.eigvalsh(q.T @ total @ q), 0.0, None)).sum())
    return {"seli": seli, "ncc": ncc, "vc": float(np.log(nuclear))}


def _within_whitening(stats: FeatureStats, cov: np.ndarray, top_variance: float) -> np.ndarray:
    """scikit-learn's svd-solver whitening ``W`` ``(d, r)`` of a within-class covariance, singular or not.

    The covariance is standardised to unit diagonal and only the directions of that correlation matrix with
    eigenvalue above 1e-8 (scikit-learn's tol 1e-4 on singular values) are kept: when N ≤ d + K the covariance is
    singular, and inverting its rounding noise would make the score depend on the order of the samples. A PCA
    direction whose within-class variance is rounding noise (≤ 10·eps of the top variance) counts as zero variance,
    as a zero standard deviation does in scikit-learn, and drops out; when all do, the classes are points
    (scikit-learn would answer uniform posteriors, the worst score for the best features).
    """
    var = np.diagonal(cov)
    live = var > 10.0 * stats.eps * top_variance
    if not live.any():
        # every class is a point: the limit of perfect collapse, whitened at the noise floor to stay finite
        return np.eye(len(cov)) / np.sqrt(10.0 * stats.eps * top_variance)
    std = np.sqrt(np.where(live, var, 1.0))
    corr = cov / std[:, None] / std[None, :]
    corr[~live, :] = 0.0
    corr[:, ~live] = 0.0
    lam, vec = np.linalg.eigh(corr)
    keep = lam > max(1e-8, stats.dim * stats.eps)  # a float32 Gram is only good to ~1e-7 of its scale
    return vec[:, keep] / np.sqrt(lam[keep]) / std[:, None]

"""Class-conditional Gaussians in PCA space and the Bhattacharyya coefficient between them (FaCe's F, GBC)."""

from __future__ import annotations

import numpy as np

from facezoo.errors import FaceZooError
from facezoo.metrics.stats import FeatureStats

__all__ = [
    "COV_TYPES", "pca_dims", "pca_basis", "pca_class_moments", "class_gaussians", "rest_gaussians", "bhattacharyya",
    "bhattacharyya_matrix",
]

COV_TYPES = ("full", "diag", "spherical")


def pca_dims(stats: FeatureStats, n_components: int | None) -> int:
    """The PCA dimension actually used: ``n_components`` (``None`` = all) capped at ``min(D, N − 1)``, the most
    principal directions centred features can have."""
    if n_components is not None and (not isinstance(n_components, (int, np.integer)) or n_components < 1):
        raise FaceZooError(f"pca_dim must be a positive integer or None, got {n_components!r}")
    cap = min(stats.dim, stats.n - 1)
    return cap if n_components is None else min(int(n_components), cap)


def pca_basis(stats: FeatureStats, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-d principal directions and variances (cached on ``stats``)."""
    return stats.memo(("pca", d), lambda: stats.pca(d))


def pca_class_moments(stats: FeatureStats, n_components: int | None) -> dict[str, np.ndarray]:
    """Class means and unregularised class covariances of the features reduced to their top principal directions.

    Returns a dict with ``variances`` ``(d,)`` (PCA variances), ``means`` ``(K, d)`` (``μ_k − μ`` in PCA space),
    ``diag`` ``(K, d)`` (per-dimension class variances) and ``residuals`` ``(N, d)`` (class-centred projections, rows
    in class order, for full covariances). Cached on ``stats``: FaCe's F, GBC and NCTI share one projection.
    """
    d = pca_dims(stats, n_components)

    def compute() -> dict[str, np.ndarray]:
        basis, variances = pca_basis(stats, d)
        residuals = stats.class_residuals(("pca", d), basis)
        diag = stats.class_sums_of(residuals**2) / stats.counts[:, None]
        return {"variances": variances, "means": stats.class_deviations @ basis, "diag": diag, "residuals": residuals}

    return stats.memo(("pca_class_moments", d), compute)


def _full_covariances(stats: FeatureStats, residuals: np.ndarray) -> np.ndarray:
    out = np.empty((stats.n_classes, residuals.shape[1], residuals.shape[1]))
    for k in range(stats.n_classes):
        r = residuals[stats.starts[k] : stats.starts[k + 1]]
        out[k] = r.T @ r / stats.counts[k]
    return out


def _regularise(cov: np.ndarray, cov_type: str, var_floor: float, shrinkage: float) -> np.ndarray:
    """Floor the variances at ``var_floor``; for full covariances first shrink towards their diagonal."""
    if cov_type == "full":
        diag = np.diagonal(cov, axis1=-2, axis2=-1)
        cov = (1.0 - shrinkage) * cov + shrinkage * (diag[..., :, None] * np.eye(cov.shape[-1]))
        idx = np.arange(cov.shape[-1])
        cov[..., idx, idx] = np.maximum(cov[..., idx, idx], var_floor)
        return cov
    cov = np.maximum(cov, var_floor)
    return cov.mean(-1) if cov_type == "spherical" else cov


def _check(cov_type: str, shrinkage: float) -> None:
    if cov_type not in COV_TYPES:
        raise FaceZooError(f"cov must be one of {', '.join(COV_TYPES)}, got {cov_type!r}")
    if not 0.0 <= shrinkage <= 1.0:
        raise FaceZooError(f"shrinkage must be in [0, 1], got {shrinkage!r}")


def class_gaussians(
    stats: FeatureStats, moments: dict[str, np.ndarray], cov_type: str, var_floor: float, shrinkage: float = 0.0
) -> np.ndarray:
    """Regularised class covariances: ``(K, d, d)`` full, ``(K, d)`` diag or ``(K,)`` spherical."""
    _check(cov_type, shrinkage)
    raw = _full_covariances(stats, moments["residuals"]) if cov_type == "full" else moments["diag"]
    return _regularise(raw, cov_type, var_floor, shrinkage)


def rest_gaussians(
    stats: FeatureStats, moments: dict[str, np.ndarray], cov_type: str, var_floor: float, shrinkage: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """For every class k, one Gaussian fitted to all samples *not* in k: means ``(K, d)`` and covariances.

    Moment-matched from the class moments (no pass over the data): the scatter of the rest about the global mean is
    the total scatter minus class k's, ``n_k (Σ_k + m_k m_kᵀ)``.
    """
    _check(cov_type, shrinkage)
    n = stats.counts.astype(float)
    m = moments["means"]
    n_rest = stats.n - n
    rest_means = -(n[:, None] * m) / n_rest[:, None]  # Σ_k n_k m_k = 0
    if cov_type == "full":
        scatter = n[:, None, None] * (_full_covariances(stats, moments["residuals"]) + m[:, :, None] * m[:, None, :])
        rest = (scatter.sum(0) - scatter) / n_rest[:, None, None] - rest_means[:, :, None] * rest_means[:, None, :]
    else:
        scatter = n[:, None] * (moments["diag"] + m**2)
        rest = (scatter.sum(0) - scatter) / n_rest[:, None] - rest_means**2
    return rest_means, _regularise(rest, cov_type, var_floor, shrinkage)


def _logdet(cov: np.ndarray, cov_type: str, d: int) -> np.ndarray:
    if cov_type == "full":
        return np.linalg.slogdet(cov)[1]
    if cov_type == "diag":
        return np.log(cov).sum(-1)
    return d * np.log(cov)


def _mahalanobis_and_logdet(dm: np.ndarray, avg: np.ndarray, cov_type: str) -> tuple[np.ndarray, np.ndarray]:
    d = dm.shape[-1]
    if cov_type == "full":
        maha = np.einsum("...i,...i->...", dm, np.linalg.solve(avg, dm[..., None])[..., 0])
    elif cov_type == "diag":
        maha = (dm**2 / avg).sum(-1)
    else:
        maha = (dm**2).sum(-1) / avg
    return maha, _logdet(avg, cov_type, d)


def bhattacharyya(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray, cov_type: str) -> np.ndarray:
    """Bhattacharyya distance between Gaussians, vectorised over leading axes.

    ``D_B = 1/8 Δμᵀ Σ̄⁻¹ Δμ + 1/2 ln(det Σ̄ / sqrt(det Σ1 det Σ2))``, ``Σ̄ = (Σ1 + Σ2)/2``. Spherical covariances
    are ``σ² I`` in ``d`` dimensions, so their log-determinant term counts ``d`` times.
    """
    d = m1.shape[-1]
    maha, logdet_avg = _mahalanobis_and_logdet(m1 - m2, 0.5 * (c1 + c2), cov_type)
    return maha / 8.0 + (logdet_avg - 0.5 * (_logdet(c1, cov_type, d) + _logdet(c2, cov_type, d))) / 2.0


def bhattacharyya_matrix(means: np.ndarray, covs: np.ndarray, cov_type: str) -> np.ndarray:
    """``(K, K)`` Bhattacharyya coefficients ``exp(−D_B)`` between all class pairs (1 on the diagonal).

    Vectorised over one class axis: K iterations of O(K·d) work (O(K·d³) for full covariances).
    """
    k, d = means.shape
    logdets = _logdet(covs, cov_type, d)
    out = np.empty((k, k))
    for i in range(k):
        maha, logdet_avg = _mahalanobis_and_logdet(means[i] - means, 0.5 * (covs[i] + covs), cov_type)
        out[i] = np.exp(-(maha / 8.0 + (logdet_avg - 0.5 * (logdets[i] + logdets)) / 2.0))
    np.fill_diagonal(out, 1.0)
    return out

"""N-LEEP: LEEP with a Gaussian mixture on the target features in place of the source classifier.

Li, Jia, Zhu, Sun, Zhang, Wang, Chen, Gong, "Ranking Neural Checkpoints", CVPR 2021. Reduce the features by PCA to
the directions keeping ``variance_kept`` (80 %) of the variance, fit a Gaussian mixture with
``components_per_class × K`` components (full covariances, scikit-learn's EM), and compute LEEP (with the log) on the
mixture's posteriors ``θ_iz = p(z | x_i)``.

The mixture is fitted on at most ``max_samples`` rows (a deterministic stratified subsample) and evaluated on all;
the PCA comes from the shared eigen-decomposition. Deviation from public code: SFDA's repository reports N-LEEP
without the log (mean probability); the paper, and this implementation, keep it. Cost: dominated by EM,
O(iterations · M · components · d²). Higher is better.
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from facezoo.errors import FaceZooError
from facezoo.metrics._registry import register_metric
from facezoo.metrics._sampling import stratified_subsample
from facezoo.metrics.leep import leep_from_probabilities
from facezoo.metrics.stats import FeatureStats

__all__ = ["nleep"]


@register_metric("nleep", paper="Li et al., CVPR 2021", uses_gram=True, uses_eigh=True)
def nleep(
    stats: FeatureStats,
    *,
    variance_kept: float = 0.8,
    components_per_class: int = 5,
    covariance_type: str = "full",
    max_samples: int = 10000,
    seed: int = 0,
) -> float:
    """N-LEEP score (at most 0); higher is better."""
    if not 0.0 < variance_kept <= 1.0:
        raise FaceZooError(f"variance_kept must be in (0, 1], got {variance_kept!r}")
    eigvals, eigvecs = stats.covariance_eigh
    dims = int(np.searchsorted(np.cumsum(eigvals), variance_kept * eigvals.sum()) + 1)
    z = stats.project(eigvecs[:, : min(dims, stats.dim)], "global")
    fit = stratified_subsample(stats, max_samples)
    mixture = GaussianMixture(
        n_components=min(components_per_class * stats.n_classes, len(fit)),
        covariance_type=covariance_type,
        random_state=seed,
    ).fit(z[fit])
    return leep_from_probabilities(mixture.predict_proba(z), stats.sorted_codes, stats.n_classes)

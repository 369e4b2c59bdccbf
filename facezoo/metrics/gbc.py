"""GBC: Gaussian Bhattacharyya Coefficient.

Pándy, Agostinelli, Uijlings, Ferrari, Mensink, "Transferability Estimation using Bhattacharyya Class Separability",
CVPR 2022. Reduce the features to 64 principal directions, fit one Gaussian per class (spherical for
classification, diagonal in the paper's segmentation setting), variances floored at 1e-4, and sum the Bhattacharyya
coefficients over ordered pairs of distinct classes::

    GBC = −Σ_{i≠j} exp(−D_B(c_i, c_j))   ∈ [−K(K−1), 0]

Deviation from the authors' code (google-research ``stable_transfer/transferability/gbc.py``): for spherical
Gaussians the code adds the log-determinant term once instead of d times (it treats ``σ²`` as a 1-D variance); the
Bhattacharyya distance of ``σ² I`` in d dimensions has it d times, as here.

Cost: the shared Gram, a partial eigen-decomposition, one projection pass onto 64 directions (shared with FaCe's F),
then O(K²·d). Higher (closer to 0) is better.
"""

from __future__ import annotations

import numpy as np

from facezoo.errors import FaceZooError
from facezoo.metrics._gaussian import bhattacharyya_matrix, class_gaussians, pca_class_moments
from facezoo.metrics._registry import register_metric
from facezoo.metrics.stats import FeatureStats

__all__ = ["gbc"]

_GAUSSIANS = {"spherical": "spherical", "diagonal": "diag"}


@register_metric("gbc", paper="Pándy et al., CVPR 2022", uses_gram=True)
def gbc(
    stats: FeatureStats, *, pca_dim: int | None = 64, gaussian: str = "spherical", var_floor: float = 1e-4
) -> float:
    """GBC score; higher (less class overlap) is better."""
    if gaussian not in _GAUSSIANS:
        raise FaceZooError(f"gaussian must be 'spherical' or 'diagonal', got {gaussian!r}")
    if not var_floor > 0:
        raise FaceZooError(f"var_floor must be > 0, got {var_floor!r}")
    moments = pca_class_moments(stats, pca_dim)
    cov_type = _GAUSSIANS[gaussian]
    bc = bhattacharyya_matrix(moments["means"], class_gaussians(stats, moments, cov_type, var_floor), cov_type)
    np.fill_diagonal(bc, 0.0)
    return float(-bc.sum())

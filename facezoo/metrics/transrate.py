"""TransRate: the coding rate of the features minus their coding rate given the class.

Huang, Huang, Lian, Wang, Zhang, "Frustratingly Easy Transferability Estimation", ICML 2022. With ``Z`` the features
centred on their mean and ``Z_k`` the rows of class k::

    R(Z, ε) = 1/2 log det(I + ZᵀZ / (N ε))
    TransRate = R(Z, ε) − Σ_k (n_k / N) R(Z_k, ε),     ε = 1e-4

``ε`` scales as in the code printed with the paper (``1/(N ε)``); the class term is weighted by ``n_k / N`` as in the
paper's definition and the authors' repository, of which the printed code's ``1/K`` is the balanced special case.
By concavity of log det, TransRate ≥ 0, with 0 when every class has the same second moments (identical class
distributions).

Cost: each term as the log det of the smaller of ``ZᵀZ`` and ``Z Zᵀ`` (Sylvester): the global one from the shared
Gram (one Cholesky of D×D) when N ≥ D, else from the N×N sample Gram (one more pass, O(N²·D): the D×D Gram's
D − N null directions hold float32 rounding that ``1/ε`` would amplify); the class terms in one pass over the
features by class: O(N·D·min(n_k, D)).
Not scale-invariant (ε is absolute).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from facezoo.errors import FaceZooError
from facezoo.metrics._registry import register_metric
from facezoo.metrics.stats import FeatureStats

__all__ = ["transrate"]


def _half_logdet_identity_plus(gram: np.ndarray, scale: float) -> float:
    """``1/2 log det(I + scale · gram)`` for a symmetric PSD ``gram``."""
    m = scale * gram
    m[np.diag_indices(len(m))] += 1.0
    return float(np.log(np.diag(scipy.linalg.cholesky(m, lower=True, overwrite_a=True, check_finite=False))).sum())


@register_metric("transrate", paper="Huang et al., ICML 2022", uses_gram=True)
def transrate(stats: FeatureStats, *, eps: float = 1e-4) -> float:
    """TransRate; higher is better."""
    if not eps > 0:
        raise FaceZooError(f"eps must be > 0, got {eps!r}")
    rate = _half_logdet_identity_plus(stats.centred_small_gram(), 1.0 / (stats.n * eps))
    conditional = sum(
        stats.priors[k] * _half_logdet_identity_plus(stats.small_gram(block), 1.0 / (stats.counts[k] * eps))
        for k, block in stats.class_blocks(center="global")
    )
    return float(rate - conditional)

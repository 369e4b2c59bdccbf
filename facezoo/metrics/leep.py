"""LEEP: Log Expected Empirical Prediction.

Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned Representations",
ICML 2020. With ``θ_i = softmax(logits_i)`` the source model's prediction ``(N, Cs)``::

    P̂(y, z) = (1/N) Σ_{i: y_i = y} θ_iz,   P̂(y | z) = P̂(y, z) / P̂(z)
    LEEP = (1/N) Σ_i log Σ_z P̂(y_i | z) θ_iz

Cost O(N·Cs·K). Higher is better; at most 0, and ``(1/N) Σ_i log π_{y_i}`` when the source predictions carry no
information about the target classes.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from facezoo.metrics._registry import register_metric
from facezoo.metrics.stats import FeatureStats

__all__ = ["leep", "leep_from_probabilities"]


def leep_from_probabilities(theta: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """LEEP from source probabilities ``θ`` ``(N, Cs)`` and target class codes ``(N,)``."""
    joint = np.zeros((n_classes, theta.shape[1]))
    np.add.at(joint, codes, theta)
    joint /= len(codes)
    marginal = joint.sum(0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P̂(y | z)
    expected = np.einsum("iz,iz->i", theta, conditional[codes])
    return float(np.log(expected).mean())


@register_metric("leep", paper="Nguyen et al., ICML 2020", needs_logits=True)
def leep(stats: FeatureStats, logits: np.ndarray) -> float:
    """LEEP of the source classifier's ``logits`` ``(N, Cs)`` (rows in input order); higher is better."""
    return leep_from_probabilities(softmax(logits, axis=1), stats.codes, stats.n_classes)

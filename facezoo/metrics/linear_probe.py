"""Linear probe: cross-validated accuracy of a logistic regression on the frozen features.

The classic transfer baseline (Kornblith, Shlens, Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019):
standardise the features (fitted on the training folds), fit an L2-regularised multinomial logistic regression
(scikit-learn, L-BFGS), report the accuracy over ``folds`` stratified folds.

Folds and the subsample above ``max_samples`` rows are deterministic and content-defined (``_sampling``), so the
score does not depend on the row order. Cost: ``folds`` logistic-regression fits on M = min(N, max_samples) rows.
Higher is better.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from facezoo.errors import FaceZooError
from facezoo.metrics._registry import register_metric
from facezoo.metrics._sampling import stratified_folds, stratified_subsample
from facezoo.metrics.stats import FeatureStats

__all__ = ["linear_probe"]


@register_metric("linear_probe", paper="Kornblith et al., CVPR 2019")
def linear_probe(
    stats: FeatureStats, *, folds: int = 5, C: float = 1.0, max_samples: int = 5000, max_iter: int = 1000
) -> float:
    """Cross-validated logistic-regression accuracy in [0, 1]; higher is better."""
    if not (isinstance(folds, (int, np.integer)) and folds >= 2):
        raise FaceZooError(f"folds must be an integer >= 2, got {folds!r}")
    positions = stratified_subsample(stats, max_samples)
    x = stats.rows(positions).astype(np.float64)
    y = stats.sorted_codes[positions]
    fold = stratified_folds(stats, positions, folds)
    correct = 0
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        scaler = StandardScaler().fit(x[~test])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the documented budget
            model = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(x[~test]), y[~test])
        correct += int((model.predict(scaler.transform(x[test])) == y[test]).sum())
    return correct / len(positions)

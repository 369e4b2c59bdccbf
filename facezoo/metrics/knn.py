"""k-NN accuracy: leave-one-out k-nearest-neighbour accuracy of the target classes in feature space.

The trivial baseline every transferability comparison needs (used as a transfer proxy e.g. by Puigcerver et al.,
"Scalable Transfer Learning with Expert Models", ICLR 2021). Euclidean distance; each sample is classified by the
majority class of its k nearest other samples, ties going to the class with the nearest member.

Above ``max_samples`` rows the score is computed on a deterministic stratified subsample (``_sampling``), so it does
not depend on the row order. Cost O(M²·D) for M = min(N, max_samples), in chunks of queries (memory O(chunk·M)).
Invariant to translation, rotation and global scaling of the features. Higher is better.
"""

from __future__ import annotations

import numpy as np

from facezoo.errors import FaceZooError
from facezoo.metrics._registry import register_metric
from facezoo.metrics._sampling import stratified_subsample
from facezoo.metrics.stats import FeatureStats

__all__ = ["knn"]

_QUERY_CHUNK = 1024


@register_metric("knn", paper="Puigcerver et al., ICLR 2021 (k-NN transfer proxy)")
def knn(stats: FeatureStats, *, k: int = 5, max_samples: int = 5000) -> float:
    """Leave-one-out k-NN accuracy in [0, 1]; higher is better."""
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise FaceZooError(f"k must be a positive integer, got {k!r}")
    positions = stratified_subsample(stats, max_samples)
    x = stats.rows(positions)
    x = x - x.mean(0)  # distances by expansion: centring keeps the digits
    codes = stats.sorted_codes[positions]
    m = len(positions)
    k = min(k, m - 1)
    sq = np.einsum("ij,ij->i", x, x)
    classes = np.arange(stats.n_classes)
    correct = 0
    for a in range(0, m, _QUERY_CHUNK):
        b = min(a + _QUERY_CHUNK, m)
        d2 = sq[a:b, None] - 2.0 * (x[a:b] @ x.T) + sq[None, :]
        d2[np.arange(b - a), np.arange(a, b)] = np.inf  # leave one out
        nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
        nearest = np.take_along_axis(nearest, np.argsort(np.take_along_axis(d2, nearest, 1), 1, kind="stable"), 1)
        votes = codes[nearest][:, :, None] == classes  # (chunk, k, K)
        first = np.where(votes.any(1), votes.argmax(1), k)  # rank of each class's nearest member
        predicted = np.argmax(votes.sum(1) * (k + 1) - first, axis=1)
        correct += int((predicted == codes[a:b]).sum())
    return correct / m

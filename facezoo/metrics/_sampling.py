"""Deterministic, stratified, permutation-invariant subsampling and folds for the sample-level baselines.

Samples are ordered within their class by their projection on a fixed random direction: a content-defined order,
so shuffling the input rows or renaming the classes changes neither the subsample nor the folds.
"""

from __future__ import annotations

import numpy as np

from facezoo.metrics.stats import FeatureStats

__all__ = ["content_order", "stratified_subsample", "stratified_folds"]


def content_order(stats: FeatureStats) -> np.ndarray:
    """Class-order positions sorted within each class by a fixed random projection of the features."""

    def compute() -> np.ndarray:
        direction = np.random.default_rng(0).standard_normal((stats.dim, 1))
        key = stats.project(direction, "global")[:, 0]
        return np.lexsort((key, stats.sorted_codes))

    return stats.memo("content_order", compute)


def stratified_subsample(stats: FeatureStats, max_samples: int) -> np.ndarray:
    """Class-order positions of at most ``max_samples`` rows, each class in proportion (at least 2 per class),
    spread evenly along the content order; all rows when ``N <= max_samples``."""
    if stats.n <= max_samples:
        return np.arange(stats.n)
    order = content_order(stats)
    take = np.maximum(np.floor(max_samples * stats.priors).astype(int), np.minimum(stats.counts, 2))
    picks = []
    for k in range(stats.n_classes):
        block = order[stats.starts[k] : stats.starts[k + 1]]
        picks.append(block[np.linspace(0, len(block) - 1, take[k]).round().astype(int)])
    return np.sort(np.concatenate(picks))


def stratified_folds(stats: FeatureStats, positions: np.ndarray, n_folds: int) -> np.ndarray:
    """Fold index ``(len(positions),)`` of each position: round-robin along the content order within each class."""
    rank = np.empty(stats.n, dtype=np.int64)
    order = content_order(stats)
    rank[order] = np.arange(stats.n)
    codes = stats.sorted_codes[positions]
    by_content = np.lexsort((rank[positions], codes))
    within = np.empty(len(positions), dtype=np.int64)
    starts = np.searchsorted(codes[by_content], np.arange(stats.n_classes))
    within[by_content] = np.arange(len(positions)) - starts[codes[by_content]]
    return within % n_folds

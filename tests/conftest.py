"""Shared fixtures: small labelled feature sets with known structure (float64, offline, seeded)."""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads OpenBLAS: see facezoo/__init__.py

import numpy as np
import pytest


def make_classes(n_per_class=(30, 25, 40, 35), dim=12, separation=3.0, noise=1.0, seed=0, offset=0.0):
    """Gaussian classes with anisotropic noise: features (N, D) float64 and int labels, shuffled."""
    rng = np.random.default_rng(seed)
    k = len(n_per_class)
    means = rng.standard_normal((k, dim)) * separation
    scales = np.exp(rng.standard_normal(dim) * 0.3)
    labels = np.repeat(np.arange(k), n_per_class)
    features = means[labels] + rng.standard_normal((len(labels), dim)) * scales * noise + offset
    perm = rng.permutation(len(labels))
    return features[perm], labels[perm]


@pytest.fixture
def classes():
    return make_classes()


@pytest.fixture
def logits_for():
    """Source logits (N, Cs) correlated with the labels (a weak, informative source classifier)."""

    def make(labels, n_source=7, seed=1):
        rng = np.random.default_rng(seed)
        proj = rng.standard_normal((labels.max() + 1, n_source)) * 2
        return proj[labels] + rng.standard_normal((len(labels), n_source))

    return make

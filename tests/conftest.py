"""Shared fixtures: small labelled feature sets with known structure (float64, offline, seeded)."""

import os
import tempfile

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads OpenBLAS: see facezoo/__init__.py
# nothing a test runs may write into the checkout: the default home (and Prefect's, derived from it) is a temp dir
os.environ.setdefault("FACEZOO_HOME", tempfile.mkdtemp(prefix="facezoo-test-home-"))

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# CI draws the same examples every run, so red means a regression, not a newly drawn case; search wider with
# HYPOTHESIS_PROFILE=explore (random draws, 2000 examples per test) and pin what it finds with @example
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("explore", max_examples=2000, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API for the whole session (its start-up takes ~10 s on 2 cores)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield

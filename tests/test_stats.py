"""The shared statistics against direct NumPy computations, for any chunking, dtype and array library."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_classes
from facezoo.metrics import FeatureStats


def naive_moments(x, y):
    ks = np.unique(y)
    return {
        "counts": np.array([np.sum(y == k) for k in ks]),
        "class_means": np.array([x[y == k].mean(0) for k in ks]),
        "covariance": np.atleast_2d(np.cov(x.T, bias=True)),
        "within": sum((x[y == k] - x[y == k].mean(0)).T @ (x[y == k] - x[y == k].mean(0)) for k in ks) / len(x),
        "fourth": (((x - x.mean(0)) ** 2).sum(1) ** 2).sum(),
    }


@given(
    n_per_class=st.lists(st.integers(2, 9), min_size=2, max_size=5),
    dim=st.integers(1, 9),
    chunk_rows=st.integers(1, 40),
    offset=st.sampled_from([0.0, 1e3]),
    seed=st.integers(0, 10_000),
)
def test_statistics_match_numpy_for_any_chunking(n_per_class, dim, chunk_rows, offset, seed):
    x, y = make_classes(tuple(n_per_class), dim=dim, seed=seed, offset=offset)
    stats = FeatureStats(x, y, gram=seed % 2 == 0, chunk_rows=chunk_rows)  # Gram in the first pass or on demand
    want = naive_moments(x, y)
    np.testing.assert_array_equal(stats.counts, want["counts"])
    np.testing.assert_allclose(stats.class_means, want["class_means"], rtol=1e-12, atol=1e-9)
    scale = np.abs(want["covariance"]).max()
    np.testing.assert_allclose(stats.covariance, want["covariance"], rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(stats.within_scatter(), want["within"], rtol=1e-9, atol=1e-9 * scale)
    assert stats.centered_fourth_moment == pytest.approx(want["fourth"], rel=1e-7)
    assert stats.total_variance == pytest.approx(np.trace(want["covariance"]), rel=1e-9)

    directions = np.random.default_rng(seed).standard_normal((dim, 3))
    order = np.argsort(y, kind="stable")
    residuals = x - want["class_means"][np.searchsorted(np.unique(y), y)]
    np.testing.assert_allclose(stats.project(directions, "class"), (residuals @ directions)[order],
                               rtol=1e-9, atol=1e-9 * np.sqrt(scale))
    np.testing.assert_allclose(stats.project(directions, "global"), ((x - x.mean(0)) @ directions)[order],
                               rtol=1e-9, atol=1e-9 * np.sqrt(scale))
    w = np.random.default_rng(seed + 1).random(len(y))
    gram_w2, sums_w, sums_w2 = stats.weighted_residual_moments(w)
    r_sorted = residuals[order]
    np.testing.assert_allclose(gram_w2, (r_sorted * w[:, None] ** 2).T @ r_sorted, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(sums_w, stats.class_sums_of(r_sorted * w[:, None]), rtol=1e-9,
                               atol=1e-9 * np.sqrt(scale) * len(y))


def test_row_logsumexp_and_class_blocks():
    x, y = make_classes(dim=7)
    stats = FeatureStats(x, y, chunk_rows=13)
    order = np.argsort(y, kind="stable")
    want = np.log(np.exp(x).sum(1))[order]
    np.testing.assert_allclose(stats.row_logsumexp(), want, rtol=1e-12)
    for k, block in stats.class_blocks(center="global"):
        np.testing.assert_allclose(block, x[y == k] - x.mean(0), atol=1e-12)
        np.testing.assert_allclose(stats.small_gram(block), (x[y == k] - x.mean(0)).T @ (x[y == k] - x.mean(0))
                                   if block.shape[0] >= block.shape[1] else
                                   (x[y == k] - x.mean(0)) @ (x[y == k] - x.mean(0)).T, rtol=1e-12)


def test_centred_small_gram_is_the_smaller_gram_of_the_centred_rows():
    x, y = make_classes(n_per_class=(6, 5, 7), dim=30, offset=1e3)  # N < D: the N×N sample Gram, class order
    z = (x - x.mean(0))[np.argsort(y, kind="stable")]
    np.testing.assert_allclose(FeatureStats(x, y).centred_small_gram(), z @ z.T, rtol=1e-9, atol=1e-9 * len(x))
    x, y = make_classes(dim=5)
    np.testing.assert_allclose(FeatureStats(x, y).centred_small_gram(), (x - x.mean(0)).T @ (x - x.mean(0)),
                               rtol=1e-12)


def test_float32_input_is_read_in_float32_and_accumulated_in_float64():
    x, y = make_classes(n_per_class=(3000, 2000), dim=6, offset=50.0)
    stats = FeatureStats(x.astype(np.float32), y, gram=True, chunk_rows=512)
    # the float32 rounding of the input, not the arithmetic, bounds the error
    np.testing.assert_allclose(stats.covariance, np.cov(x.astype(np.float32).astype(np.float64).T, bias=True),
                               rtol=1e-5, atol=1e-5)
    assert stats.class_sums.dtype == np.float64 and stats.gram.dtype == np.float64


def test_float32_means_and_projections_keep_the_spread_under_a_large_offset():
    # float32 rounds an offset of 1e4 by up to 5e-4: neither the means nor the projections may inherit that
    x, y = make_classes(n_per_class=(300, 200), dim=8)
    single = (x + 1e4).astype(np.float32)
    exact = single.astype(np.float64)  # the same numbers: what float64 arithmetic on this input gives
    stats = FeatureStats(single, y)
    np.testing.assert_allclose(stats.mean, exact.mean(0), rtol=0, atol=1e-9)
    directions = np.random.default_rng(0).standard_normal((8, 3))
    want = ((exact - exact.mean(0)) @ directions)[np.argsort(y, kind="stable")]
    np.testing.assert_allclose(stats.project(directions, "global"), want, rtol=0, atol=1e-5 * np.abs(want).max())
    state = stats.state()
    state["shift"] = state["shift"] + 1e-4  # as stored before the shift was rounded: within float32's half-ulp
    np.testing.assert_array_equal(FeatureStats(single, y, state=state).mean, stats.mean)


def test_torch_input_matches_numpy():
    torch = pytest.importorskip("torch")
    x, y = make_classes(dim=5)
    a = FeatureStats(x, y, gram=True, chunk_rows=17)
    b = FeatureStats(torch.from_numpy(x), torch.from_numpy(y), gram=True, chunk_rows=17)
    np.testing.assert_allclose(b.gram, a.gram, rtol=1e-12)
    np.testing.assert_allclose(b.class_sums, a.class_sums, rtol=1e-12)
    d = np.eye(5)[:, :2]
    np.testing.assert_allclose(b.project(d, "class"), a.project(d, "class"), rtol=1e-12, atol=1e-12)


def test_saved_state_restores_every_metric_without_the_first_pass(tmp_path):
    from facezoo import metrics

    x, y = make_classes(dim=9)
    stats = FeatureStats(x, y, gram=True)
    path = tmp_path / "stats.npz"
    np.savez(path, **stats.state())
    with np.load(path, allow_pickle=False) as saved:
        restored = FeatureStats(x, y, state=dict(saved))
    names = [m for m in metrics.available() if not metrics.info(m).needs_logits]
    assert metrics.score_many_from_stats(restored, names) == metrics.score_many_from_stats(stats, names)
    with pytest.raises(Exception, match="do not belong"):
        FeatureStats(x[:-3], y[:-3], state=stats.state())

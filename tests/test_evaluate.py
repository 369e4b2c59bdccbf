"""Ranking-quality statistics (``facezoo.evaluate``)."""

import numpy as np
import pytest
import scipy.stats

from facezoo import FaceZooError, evaluate

rng = np.random.default_rng(0)
SCORE = rng.standard_normal(11)
ACC = 0.6 * SCORE + rng.standard_normal(11) * 0.5


def test_weighted_tau_is_scipys_with_defaults():
    assert evaluate.weighted_tau(SCORE, ACC) == scipy.stats.weightedtau(SCORE, ACC)[0]


@pytest.mark.parametrize("fn", [evaluate.weighted_tau, evaluate.kendall_tau, evaluate.pearson, evaluate.spearman])
def test_correlations_are_one_for_the_same_order_and_minus_one_reversed(fn):
    acc = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    assert fn(acc * 3 + 1, acc) == pytest.approx(1.0)
    assert fn(-acc, acc) == pytest.approx(-1.0)


def test_kendall_and_spearman_by_hand():
    score, acc = [1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4]  # one discordant pair of six
    assert evaluate.kendall_tau(score, acc) == pytest.approx((5 - 1) / 6)
    assert evaluate.spearman(score, acc) == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_top1_regret():
    acc = [0.70, 0.90, 0.80]
    assert evaluate.top1_regret([3, 2, 1], acc) == pytest.approx(0.20)
    assert evaluate.top1_regret([1, 3, 2], acc) == 0.0
    assert evaluate.top1_regret([3, 3, 1], acc) == pytest.approx(0.20)  # ties count pessimistically


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    est, low, high = evaluate.bootstrap_ci("weighted_tau", SCORE, ACC, n_resamples=500)
    assert est == evaluate.weighted_tau(SCORE, ACC)
    assert -1 <= low <= est <= high <= 1
    assert evaluate.bootstrap_ci("weighted_tau", SCORE, ACC, n_resamples=500) == (est, low, high)
    assert np.isnan(evaluate.bootstrap_ci("kendall_tau", [1, 2], [2, 3])[1])


def test_bad_input():
    with pytest.raises(FaceZooError, match="score has 3 models, accuracy has 2"):
        evaluate.kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(FaceZooError, match="at least 2 models"):
        evaluate.pearson([1], [1])
    with pytest.raises(FaceZooError, match="finite"):
        evaluate.weighted_tau([1, np.nan], [1, 2])

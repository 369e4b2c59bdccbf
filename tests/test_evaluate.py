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
    assert evaluate.top1_regret([3, 3, 1], acc) == pytest.approx(0.10)  # a tie at the top: the mean of the two


# ---------------------------------------------------------------------------------------------------- ties
def naive_weighted_tau(x, y):
    """Vigna (2015), additive hyperbolic weights, by the definition: pairs i < j, a tied pair counts in neither the
    numerator nor that ranking's norm; averaged over the importance orders by (x, y) and by (y, x)."""
    n = len(x)

    def one(a, b):
        rho = np.empty(n, dtype=int)
        rho[np.lexsort((-b, -a))] = np.arange(n)  # 0 = most important: largest a, then largest b
        w = 1.0 / (rho + 1)
        num = saa = sbb = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                wij = w[i] + w[j]
                num += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) * wij
                saa += (x[i] != x[j]) * wij
                sbb += (y[i] != y[j]) * wij
        return num / np.sqrt(saa * sbb)

    return (one(x, y) + one(y, x)) / 2


def naive_kendall_tau_b(x, y):
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    n_x = sum(x[i] != x[j] for i, j in pairs)
    n_y = sum(y[i] != y[j] for i, j in pairs)
    return s / np.sqrt(n_x * n_y)


def naive_spearman(x, y):
    def average_ranks(v):
        return np.array([np.sum(v < e) + (np.sum(v == e) + 1) / 2 for e in v])

    return np.corrcoef(average_ranks(x), average_ranks(y))[0, 1]


TIED_SCORES = [
    np.array([0.0, 0.0, 0.0, 0.0, 0.0, -0.4]),  # the demo's SFDA: five models at exactly 0.0
    np.array([2.0, 1.0, 1.0, 1.0, -3.0, -3.0, 0.5]),
    np.array([1.0, 1.0, 0.2, 0.3, 0.3, 0.9, 0.9, 0.1]),
]


@pytest.mark.parametrize("score", TIED_SCORES, ids=["five-at-top", "middle-and-bottom", "pairs"])
def test_ties_in_the_score_are_ties_in_every_statistic(score):
    acc = np.random.default_rng(len(score)).permutation(np.linspace(0.5, 0.9, len(score)))  # distinct accuracies
    assert evaluate.weighted_tau(score, acc) == pytest.approx(naive_weighted_tau(score, acc), rel=1e-12)
    assert evaluate.kendall_tau(score, acc) == pytest.approx(naive_kendall_tau_b(score, acc), rel=1e-12)
    assert evaluate.spearman(score, acc) == pytest.approx(naive_spearman(score, acc), rel=1e-12)
    top = score == score.max()
    assert evaluate.top1_regret(score, acc) == pytest.approx(acc.max() - acc[top].mean(), rel=1e-12)
    # the statistics do not depend on the order the tied models come in
    perm = np.random.default_rng(1).permutation(len(score))
    for fn in (evaluate.weighted_tau, evaluate.kendall_tau, evaluate.spearman, evaluate.top1_regret):
        assert fn(score[perm], acc[perm]) == pytest.approx(fn(score, acc), rel=1e-12, abs=1e-15), fn.__name__


def test_a_score_that_ties_every_model_ranks_like_chance():
    acc = np.array([0.6, 0.8, 0.7, 0.9])
    assert evaluate.top1_regret(np.zeros(4), acc) == pytest.approx(0.9 - acc.mean())  # a random pick's expectation


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

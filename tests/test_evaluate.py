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


# ------------------------------------------------------------------------------------- across tasks (the benchmark)
def naive_bootstrap_mean(v, n_resamples, level, seed):
    """The documented scheme, one resample at a time in float64."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(v), size=(n_resamples, len(v)))
    means = sorted(sum(v[i] for i in row) / len(v) for row in draws)
    return np.quantile(means, [(1 - level) / 2, (1 + level) / 2])


def test_mean_ci_is_the_naive_task_bootstrap():
    taus = np.array([0.61, -0.52, 0.35, -0.40, 0.05, 0.44, -0.27])
    got = evaluate.mean_ci(taus, n_resamples=300, level=0.9, seed=3)
    low, high = naive_bootstrap_mean(taus, 300, 0.9, 3)
    assert (got.estimate, got.low, got.high, got.n_tasks) == pytest.approx((taus.mean(), low, high, 7), rel=1e-12)
    assert got.low < got.estimate < got.high and not got.excludes_zero
    assert evaluate.mean_ci(taus + 1.0).excludes_zero  # every task positive: the whole interval is too
    one = evaluate.mean_ci([0.3])
    assert one.estimate == 0.3 and np.isnan(one.low) and not one.excludes_zero


def test_paired_difference_resamples_tasks_jointly():
    # a task-difficulty effect shared by both metrics plus a small constant edge of a: only pairing reveals it
    hard = np.array([-0.6, 0.9, 0.1, -0.3, 0.7, 0.4, -0.8, 0.2, 0.5, -0.1])
    edge = np.array([0.05, 0.07, 0.04, 0.06, 0.05, 0.08, 0.03, 0.06, 0.05, 0.07])
    a, b = hard + edge, hard
    paired = evaluate.paired_difference_ci(a, b, n_resamples=400, seed=1)
    low, high = naive_bootstrap_mean(a - b, 400, 0.95, 1)
    assert (paired.estimate, paired.low, paired.high) == pytest.approx((a.mean() - b.mean(), low, high), rel=1e-12)
    assert paired.excludes_zero and paired.low > 0
    # unpaired, the same edge is lost in the spread of task difficulty
    unpaired_low = evaluate.mean_ci(a, seed=1).low - evaluate.mean_ci(b, seed=2).high
    assert unpaired_low < 0
    assert evaluate.paired_difference_ci(b, a).high < 0  # antisymmetric
    assert not evaluate.paired_difference_ci(a, a).excludes_zero  # identical metrics: [0, 0]
    assert paired.significant


def test_too_few_tasks_carry_no_significance():
    # two tasks where a beats b: the bootstrap interval excludes 0 (every resample is positive), a sign test on two
    # tasks could not; from MIN_TASKS_FOR_SIGNIFICANCE unanimous tasks on, the difference counts
    n = evaluate.MIN_TASKS_FOR_SIGNIFICANCE
    two = evaluate.paired_difference_ci([0.5, 0.6], [0.2, 0.3])
    assert two.excludes_zero and not two.significant
    few = evaluate.paired_difference_ci(np.linspace(0.5, 0.6, n - 1), np.zeros(n - 1))
    assert few.excludes_zero and not few.significant
    assert evaluate.paired_difference_ci(np.linspace(0.5, 0.6, n), np.zeros(n)).significant
    assert 2 * 0.5 ** (n - 1) > 0.05 >= 2 * 0.5 ** n  # the exact sign test's threshold the constant stands for


def test_task_statistics_bad_input():
    with pytest.raises(FaceZooError, match="a has 3 tasks, b has 2"):
        evaluate.paired_difference_ci([1, 2, 3], [1, 2])
    with pytest.raises(FaceZooError, match="finite"):
        evaluate.mean_ci([0.1, np.nan])
    with pytest.raises(FaceZooError, match="no task values"):
        evaluate.mean_ci([])


def naive_noise_ceiling(acc, fn):
    """Every assignment of seeds to two groups of S//2 and the rest, each unordered split once, by brute force."""
    s = acc.shape[1]
    seen, values = set(), []
    for mask in range(2 ** s):
        first = tuple(i for i in range(s) if mask >> i & 1)
        second = tuple(i for i in range(s) if not mask >> i & 1)
        if len(first) != s // 2 or frozenset((first, second)) in seen:
            continue
        seen.add(frozenset((first, second)))
        values.append(fn(acc[:, list(first)].mean(1), acc[:, list(second)].mean(1)))
    return np.mean(values), len(values)


@pytest.mark.parametrize("seeds", [2, 3, 4, 5])
def test_noise_ceiling_is_the_mean_tau_over_seed_disjoint_splits(seeds):
    gen = np.random.default_rng(seeds)
    acc = np.linspace(0.5, 0.9, 7)[:, None] + 0.08 * gen.standard_normal((7, seeds))
    expected, splits = naive_noise_ceiling(acc, naive_weighted_tau)
    assert splits == {2: 1, 3: 3, 4: 3, 5: 10}[seeds]
    assert evaluate.noise_ceiling(acc) == pytest.approx(expected, rel=1e-12)
    assert evaluate.noise_ceiling(acc, "kendall_tau") == pytest.approx(
        naive_noise_ceiling(acc, naive_kendall_tau_b)[0], rel=1e-12)


def test_noise_ceiling_of_a_noiseless_and_of_a_pure_noise_ground_truth():
    assert evaluate.noise_ceiling(np.repeat(np.linspace(0.5, 0.9, 6)[:, None], 3, axis=1)) == pytest.approx(1.0)
    noise = np.random.default_rng(0).standard_normal((40, 4))  # no model is better than another
    assert abs(evaluate.noise_ceiling(noise, "kendall_tau")) < 0.2
    assert np.isnan(evaluate.noise_ceiling(np.full((4, 2), 0.5)))  # ties every model: nothing to agree on
    with pytest.raises(FaceZooError, match=r"\(models, seeds\) with 2\+ of each, got shape \(5, 1\)"):
        evaluate.noise_ceiling(np.ones((5, 1)))

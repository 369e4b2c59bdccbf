"""How well a transferability score ranks models: correlations with fine-tuned accuracy, regret, intervals.

The field's headline number is the weighted Kendall τ of Vigna (2015) with hyperbolic weights, as computed by
``scipy.stats.weightedtau(score, accuracy)[0]`` with its defaults (You et al., LogME; Pándy et al., GBC; and later
papers report it): swaps among the top models cost more than swaps at the bottom. Every function takes one score and
one accuracy per model and validates them the same way.

Ties in the score (SFDA gives exactly 0.0 to every model whose posteriors saturate) are ties, never an order: the
τ's are τ-b (a tied pair is neither concordant nor discordant; SciPy's weighted τ follows Vigna's definition with
ties), Spearman gives tied models their average rank, and the top-1 regret averages over the models tied at the top.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.stats

from facezoo.errors import FaceZooError

__all__ = ["weighted_tau", "kendall_tau", "pearson", "spearman", "top1_regret", "bootstrap_ci", "CORRELATIONS",
           "Interval", "MIN_TASKS_FOR_SIGNIFICANCE", "mean_ci", "paired_difference_ci", "noise_ceiling"]

# Below this many tasks no difference is called significant: a percentile bootstrap over n tasks excludes 0 whenever
# all n differences share a sign (for n = 2, always when they do), while even the exact sign test cannot reach
# p < 0.05 (two-sided) with n ≤ 5 unanimous tasks (2 · 0.5⁵ = 0.0625).
MIN_TASKS_FOR_SIGNIFICANCE = 6


def _pair(score: Any, accuracy: Any) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    accuracy = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    if score.shape != accuracy.shape:
        raise FaceZooError(f"score has {score.size} models, accuracy has {accuracy.size}")
    if score.size < 2:
        raise FaceZooError(f"ranking quality needs at least 2 models, got {score.size}")
    if not (np.isfinite(score).all() and np.isfinite(accuracy).all()):
        raise FaceZooError("score and accuracy must be finite (drop failed models first)")
    return score, accuracy


def weighted_tau(score: Any, accuracy: Any) -> float:
    """Weighted Kendall τ (hyperbolic weights, additive, ranks by decreasing value) in [−1, 1]."""
    return float(scipy.stats.weightedtau(*_pair(score, accuracy))[0])


def kendall_tau(score: Any, accuracy: Any) -> float:
    """Kendall τ-b in [−1, 1]."""
    return float(scipy.stats.kendalltau(*_pair(score, accuracy))[0])


def pearson(score: Any, accuracy: Any) -> float:
    """Pearson correlation of the values in [−1, 1]."""
    return float(scipy.stats.pearsonr(*_pair(score, accuracy))[0])


def spearman(score: Any, accuracy: Any) -> float:
    """Spearman rank correlation in [−1, 1]."""
    return float(scipy.stats.spearmanr(*_pair(score, accuracy))[0])


def top1_regret(score: Any, accuracy: Any) -> float:
    """Accuracy of the best model minus that of the model the score ranks first (≥ 0; 0 = picked the best).

    Models tied for the top score share the pick: the regret is the mean over them, the expected regret of a user
    who picks one of them at random (the score says nothing more). Not the worst of them: a score that ties every
    model would then look worse than a random ranking, where τ-b and Spearman rightly put it level with one (0).
    """
    score, accuracy = _pair(score, accuracy)
    picked = accuracy[score == score.max()].mean()
    return float(accuracy.max() - picked)


CORRELATIONS: dict[str, Callable[[Any, Any], float]] = {
    "weighted_tau": weighted_tau,
    "kendall_tau": kendall_tau,
    "pearson": pearson,
    "spearman": spearman,
    "top1_regret": top1_regret,
}


def bootstrap_ci(
    statistic: Callable[[Any, Any], float] | str,
    score: Any,
    accuracy: Any,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval over models: ``(estimate, low, high)``.

    Models are resampled with replacement; resamples with fewer than 2 distinct models, or where the statistic is
    undefined (constant scores, NaN), are skipped. With fewer than 3 models no interval exists: ``(est, nan, nan)``.
    """
    fn = CORRELATIONS[statistic] if isinstance(statistic, str) else statistic
    score, accuracy = _pair(score, accuracy)
    if not 0 < level < 1:
        raise FaceZooError(f"level must be in (0, 1), got {level!r}")
    estimate = fn(score, accuracy)
    m = score.size
    if m < 3:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for idx in rng.integers(0, m, size=(n_resamples, m)):
        if len(np.unique(idx)) < 2:
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant resamples: SciPy warns and returns NaN, skipped below
            try:
                v = fn(score[idx], accuracy[idx])
            except (FaceZooError, ValueError, FloatingPointError):
                continue
        if np.isfinite(v):
            values.append(v)
    if not values:
        return estimate, float("nan"), float("nan")
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return estimate, float(low), float(high)


# ------------------------------------------------------------------------------------ across tasks (the benchmark)

@dataclass(frozen=True)
class Interval:
    """A mean over tasks and its percentile bootstrap interval (``low``, ``high``; NaN with fewer than 2 tasks)."""

    estimate: float
    low: float
    high: float
    n_tasks: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def significant(self) -> bool:
        """A difference significant at the interval's level: it excludes 0 over at least
        :data:`MIN_TASKS_FOR_SIGNIFICANCE` tasks (fewer cannot carry significance, whatever the bootstrap says)."""
        return self.excludes_zero and self.n_tasks >= MIN_TASKS_FOR_SIGNIFICANCE


def _task_values(values: Any, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise FaceZooError(f"{name}: no task values")
    if not np.isfinite(v).all():
        raise FaceZooError(f"{name}: every task value must be finite (leave undefined tasks out first)")
    return v


def mean_ci(values: Any, *, n_resamples: int = 10000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of per-task values (τ or regret, one per task) with a percentile bootstrap interval over tasks.

    Resampling: ``rng = np.random.default_rng(seed)``, ``idx = rng.integers(0, n, size=(n_resamples, n))``, one
    mean per row; the interval is the ``(1 ± level) / 2`` quantiles of those means. Tasks, not models, are the
    units: the question is how a metric does on the next task. Cost O(n_resamples · n).
    """
    return _bootstrap_mean(_task_values(values, "mean_ci"), n_resamples, level, seed)


def paired_difference_ci(a: Any, b: Any, *, n_resamples: int = 10000, level: float = 0.95,
                         seed: int = 0) -> Interval:
    """Mean over tasks of ``a - b`` (two metrics' τ on the same tasks, in the same order) with a paired bootstrap
    interval: tasks are resampled jointly (as in :func:`mean_ci`), so what a hard task costs both metrics cancels.
    ``significant``: the two metrics differ at this level (and enough tasks were paired to say so)."""
    a, b = _task_values(a, "paired_difference_ci a"), _task_values(b, "paired_difference_ci b")
    if a.shape != b.shape:
        raise FaceZooError(f"paired_difference_ci: a has {a.size} tasks, b has {b.size}; pair them on the same tasks")
    return _bootstrap_mean(a - b, n_resamples, level, seed)


def _bootstrap_mean(v: np.ndarray, n_resamples: int, level: float, seed: int) -> Interval:
    if not 0 < level < 1:
        raise FaceZooError(f"level must be in (0, 1), got {level!r}")
    if n_resamples < 1:
        raise FaceZooError(f"n_resamples must be positive, got {n_resamples}")
    if v.size < 2:
        return Interval(float(v.mean()), float("nan"), float("nan"), int(v.size))
    means = v[np.random.default_rng(seed).integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(v.mean()), float(low), float(high), int(v.size))


def noise_ceiling(accuracy: Any, statistic: Callable[[Any, Any], float] | str = "weighted_tau") -> float:
    """How well a task's ground truth agrees with itself: the mean τ between seed-disjoint ground truths.

    ``accuracy``: ``(models, seeds)``, one fine-tuned test accuracy per model and seed. For every split of the seeds
    into two disjoint groups of ``S // 2`` and ``S - S // 2`` (each unordered split once), each group's mean
    accuracy per model is one ground truth; the statistic between the two is averaged over the splits (splits where
    either ground truth ties every model are skipped; NaN when all are). No metric's τ against a ground truth of
    S/2 seeds can be expected above this; the S-seed mean is somewhat more reliable than either half.
    Cost: C(S, S/2) statistics of ``models`` values.
    """
    fn = CORRELATIONS[statistic] if isinstance(statistic, str) else statistic
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 2 or acc.shape[0] < 2 or acc.shape[1] < 2:
        raise FaceZooError(f"noise_ceiling needs (models, seeds) with 2+ of each, got shape {acc.shape}")
    if not np.isfinite(acc).all():
        raise FaceZooError("noise_ceiling: accuracies must be finite (drop failed models first)")
    seeds = range(acc.shape[1])
    values = []
    for first in itertools.combinations(seeds, acc.shape[1] // 2):
        second = [s for s in seeds if s not in first]
        if len(first) == len(second) and first > tuple(second):
            continue  # equal halves: (A, B) and (B, A) are the same split
        x, y = acc[:, list(first)].mean(axis=1), acc[:, second].mean(axis=1)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        values.append(fn(x, y))
    return float(np.mean(values)) if values else float("nan")

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

import warnings
from typing import Any, Callable

import numpy as np
import scipy.stats

from facezoo.errors import FaceZooError

__all__ = ["weighted_tau", "kendall_tau", "pearson", "spearman", "top1_regret", "bootstrap_ci", "CORRELATIONS"]


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

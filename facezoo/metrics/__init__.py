"""Transferability metrics: FaCe and the field's baselines behind one validated API.

    >>> from facezoo import metrics
    >>> metrics.available()                                   # every registered metric
    >>> metrics.score("face", features, labels)               # one metric, one model
    >>> metrics.score_many(features, labels, ["face", "logme"])  # shared statistics computed once
    >>> metrics.rank_zoo({"resnet": scores_a, "vit": scores_b})  # zoo-normalised scores and ranks

Every metric reads the same :class:`FeatureStats` (class counts, class sums, Gram, computed in one chunked pass),
so ``score_many`` pays for the expensive parts once. Higher is better for every metric except ``nc1``; ask
``info(name)`` for a metric's direction, inputs, options and paper.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from facezoo.errors import FaceZooError
from facezoo.metrics import (  # noqa: F401  (importing registers the metrics)
    etran, face, gbc, hscore, knn, leep, linear_probe, logme, nce, ncti, nleep, sfda, transrate,
)
from facezoo.metrics._registry import MetricInfo, get_metric, list_metrics
from facezoo.metrics.stats import FeatureStats

__all__ = [
    "FeatureStats", "MetricInfo", "available", "info", "score", "score_many", "score_many_from_stats", "face_terms",
    "rank_zoo", "describe_ties",
]

TERM_SEPARATOR = ":"


def available() -> list[str]:
    """Names of every registered metric, sorted (like ``timm.list_models()``)."""
    return list_metrics()


def info(name: str) -> MetricInfo:
    """Direction, inputs, options with defaults, zoo normalisation and paper of metric ``name``."""
    return get_metric(name)


def _check_logits(logits: Any, n: int) -> np.ndarray:
    if hasattr(logits, "detach"):
        logits = logits.detach().cpu().numpy()
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise FaceZooError(f"logits must be 2-D (N, source classes), got shape {logits.shape}")
    if logits.shape[0] != n:
        raise FaceZooError(f"logits has {logits.shape[0]} rows, features has {n}")
    if logits.dtype.kind not in "fiu":
        raise FaceZooError(f"logits must be real numbers, got dtype {logits.dtype}")
    if not np.isfinite(logits).all():
        r, c = np.argwhere(~np.isfinite(logits))[0]
        raise FaceZooError(f"logits contain NaN or inf (row {r}, column {c})")
    return logits.astype(np.float64, copy=False)


def _evaluate(metric: MetricInfo, stats: FeatureStats, logits: np.ndarray | None, options: dict[str, Any]) -> dict:
    """``{name: value}`` plus, for zoo-normalised metrics, ``{name:term: raw value}`` for :func:`rank_zoo`."""
    own, combine = metric.split_options(options)
    args = (stats,)
    if metric.needs_logits:
        if logits is None:
            raise FaceZooError(f"metric {metric.name!r} needs the source model's logits (logits=...)")
        args = (stats, logits)
    value = metric.fn(*args, **own)
    if not metric.zoo_normalised:
        out = {metric.name: float(value)}
    else:
        single = metric.combine({t: np.array([v]) for t, v in value.items()}, **{**combine, "zoo_norm": "none"})
        terms = {f"{metric.name}{TERM_SEPARATOR}{t}": float(v) for t, v in value.items()}
        out = {metric.name: float(single[0]), **terms}
    bad = [k for k, v in out.items() if not np.isfinite(v)]
    if bad:  # a NaN stored as a score would sort as a rank: refuse it here, naming the input
        raise FaceZooError(f"{bad[0]} is {out[bad[0]]} on these features ({stats.n} samples, {stats.dim} dimensions, "
                           f"{stats.n_classes} classes): degenerate for this metric")
    return out


def score(name: str, features: Any, labels: Any, *, logits: Any = None, **options: Any) -> float:
    """One metric of one model.

    Args:
        name: a name from :func:`available`.
        features: ``(N, D)`` real array (NumPy or ``torch.Tensor`` on any device); never modified.
        labels: ``(N,)`` class labels (ints or strings).
        logits: ``(N, Cs)`` source-classifier outputs, for metrics that need them (``leep``, ``nce``).
        **options: the metric's options (``info(name).options``).

    For a zoo-normalised metric (``face``, ``ncti``, ``etran``) this is its single-model value (no normalisation);
    rank a zoo with :func:`score_many` and :func:`rank_zoo`.
    """
    metric = get_metric(name)
    stats = FeatureStats(features, labels, gram=metric.needs_gram(options))
    logits = None if logits is None else _check_logits(logits, stats.n)
    return _evaluate(metric, stats, logits, options)[name]


def score_many(
    features: Any,
    labels: Any,
    names: Iterable[str] | None = None,
    *,
    logits: Any = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Several metrics of one model from one shared :class:`FeatureStats`.

    Args:
        names: metrics to compute; default every metric whose inputs are given (those needing logits only when
            ``logits`` is passed).
        options: per-metric options, ``{"face": {"pca_dim": 32}}``.

    Returns:
        ``{name: value}``, plus ``{"name:term": raw term}`` for zoo-normalised metrics (input of :func:`rank_zoo`).
    """
    if names is None:
        names = [n for n in available() if logits is not None or not get_metric(n).needs_logits]
    names = list(names)
    metrics = [get_metric(n) for n in names]
    options = options or {}
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise FaceZooError(f"options given for metrics not requested: {', '.join(unknown)}")
    stats = FeatureStats(features, labels, gram=any(m.needs_gram(options.get(m.name)) for m in metrics))
    return score_many_from_stats(stats, names, logits=logits, options=options)


def score_many_from_stats(
    stats: FeatureStats,
    names: Iterable[str],
    *,
    logits: Any = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, float]:
    """:func:`score_many` on statistics already computed (and cached into): for callers that keep a
    :class:`FeatureStats` and add metrics later."""
    metrics = [get_metric(n) for n in names]
    options = options or {}
    logits = None if logits is None else _check_logits(logits, stats.n)
    if any(m.uses_eigh for m in metrics):
        _ = stats.covariance_eigh  # one full eigen-decomposition serves every metric that reads the spectrum
    out: dict[str, float] = {}
    for metric in metrics:
        out.update(_evaluate(metric, stats, logits, options.get(metric.name, {})))
    return out


def face_terms(features: Any, labels: Any, **options: Any) -> dict[str, object]:
    """FaCe's quantities for one model: ``nc1``, ``variance_collapse`` (C), ``class_fairness`` (F) and the
    per-class ``overlaps`` ``{label: o_k}`` (options as for ``score("face", ...)``, without the zoo ones)."""
    return face.face_terms(FeatureStats(features, labels, gram=get_metric("face").needs_gram(options)), **options)


def rank_zoo(
    raw: dict[str, dict[str, float]],
    names: Iterable[str] | None = None,
    *,
    options: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Zoo-level scores and ranks of every model for every metric.

    Args:
        raw: ``{model: score_many(...) output}``; a missing or NaN value marks a failed metric for that model.
        names: metrics to rank (default: every registered metric present for at least one model).
        options: per-metric zoo options (``{"face": {"zoo_norm": "zscore", "fairness_weight": 0.5}}``).

    Returns:
        A long table with one row per (metric, model): ``metric``, ``model``, ``raw`` (the single-model value),
        ``score`` (zoo-normalised where the metric is, else the raw value), ``rank`` (1 = predicted best, following
        the metric's direction; ties share the best rank; failed models rank last with NaN), ``tied`` (how many
        models share that rank on that metric: 1 = no tie, 0 for a failed model), sorted by metric and rank.
        Scores tie when they are equal to the last bit (SFDA gives exactly 0.0 to every model whose posteriors
        are all 1 in float64): :func:`describe_ties` says so in words.
    """
    models = list(raw)
    if not models:
        raise FaceZooError("rank_zoo needs at least one model")
    options = options or {}
    if names is None:
        present = {key.split(TERM_SEPARATOR)[0] for scores in raw.values() for key in scores}
        names = [n for n in available() if n in present]
    rows = []
    for name in names:
        metric = get_metric(name)
        value = np.array([raw[m].get(name, np.nan) for m in models], dtype=np.float64)
        zoo = value
        if metric.zoo_normalised:
            unknown = sorted(set(options.get(name, {})) - set(metric.combine_options))
            if unknown:
                raise FaceZooError(f"metric {name!r} has no zoo option {', '.join(unknown)}")
            prefix = f"{name}{TERM_SEPARATOR}"
            term_names = sorted({k[len(prefix):] for s in raw.values() for k in s if k.startswith(prefix)})
            if not term_names:
                raise FaceZooError(f"rank_zoo needs the raw terms of {name!r} ({prefix}*): pass score_many output")
            terms = {t: np.array([raw[m].get(prefix + t, np.nan) for m in models]) for t in term_names}
            zoo = metric.combine(terms, **{**metric.combine_options, **options.get(name, {})})
        order_key = -zoo if metric.higher_is_better else zoo
        ranks = pd.Series(order_key).rank(method="min", na_option="keep")
        tied = ranks.map(ranks.value_counts()).fillna(0).astype(int).to_numpy()  # value_counts skips NaN: 0
        rows += [
            {"metric": name, "model": m, "raw": v, "score": s, "rank": r, "tied": t}
            for m, v, s, r, t in zip(models, value, zoo, ranks.to_numpy(), tied, strict=True)
        ]
    table = pd.DataFrame(rows, columns=["metric", "model", "raw", "score", "rank", "tied"])
    return table.sort_values(["metric", "rank", "model"], na_position="last", kind="stable").reset_index(drop=True)


def describe_ties(table: pd.DataFrame) -> list[str]:
    """One line per tie in a :func:`rank_zoo` table (or its records), ``"sfda: 5 models tie at rank 1 (a, b, c, d,
    e)"``, by metric and rank; none when every model has a rank of its own."""
    table = pd.DataFrame(table)
    if table.empty:
        return []
    tied = table[table["tied"] > 1]
    return [
        f"{metric}: {len(group)} models tie at rank {rank:g} ({', '.join(sorted(map(str, group['model'])))})"
        for (metric, rank), group in tied.groupby(["metric", "rank"], sort=True)
    ]

"""The metric registry: one decorator per metric, discoverable like ``timm.list_models()``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from facezoo.errors import FaceZooError

__all__ = ["MetricInfo", "register_metric", "get_metric", "list_metrics", "zoo_normalise"]

_REGISTRY: dict[str, "MetricInfo"] = {}


@dataclass(frozen=True)
class MetricInfo:
    """What the registry knows about one metric.

    Attributes:
        name: registry name.
        fn: ``fn(stats, [logits,] **options)`` returning a float, or for zoo-normalised metrics a dict of raw terms.
        paper: the reference (authors, venue, year).
        higher_is_better: direction of the score.
        needs_logits: needs the source classifier's logits ``(N, Cs)``.
        uses_gram: reads the Gram, so ``score_many`` computes it in the first pass; or a function of the metric's
            options saying whether those options do (FaCe's F in the between-class basis does not).
        uses_eigh: reads the full eigen-decomposition of the covariance, so ``score_many`` computes it before
            metrics that could otherwise do with a partial one.
        shift_invariant: the score does not change when a constant vector is added to every feature (the paper's
            formula has no such invariance when False, e.g. LogME's linear model without bias).
        combine: for zoo-normalised metrics, ``combine(terms, norm, **options)`` maps ``{term: (M,) array over
            models}`` to the ``(M,)`` zoo scores; ``norm="none"`` gives the single-model value.
        combine_options: defaults of ``combine``'s options (they are options of the metric too).
    """

    name: str
    fn: Callable[..., Any]
    paper: str
    higher_is_better: bool = True
    needs_logits: bool = False
    uses_gram: bool | Callable[[dict[str, Any]], bool] = False
    uses_eigh: bool = False
    shift_invariant: bool = True
    combine: Callable[..., np.ndarray] | None = None
    combine_options: dict[str, Any] = field(default_factory=dict)

    def needs_gram(self, options: dict[str, Any] | None = None) -> bool:
        """Whether the metric reads the Gram with these options (the first pass then computes it)."""
        return self.uses_gram(options or {}) if callable(self.uses_gram) else self.uses_gram

    @property
    def zoo_normalised(self) -> bool:
        return self.combine is not None

    @property
    def options(self) -> dict[str, Any]:
        """Every option with its default."""
        params = inspect.signature(self.fn).parameters.values()
        defaults = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return {**defaults, **self.combine_options}

    def split_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check option names and split them into the metric's own and ``combine``'s."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise FaceZooError(
                f"metric {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options are {', '.join(sorted(self.options)) or 'none'}"
            )
        own = {k: v for k, v in options.items() if k not in self.combine_options}
        return own, {k: v for k, v in options.items() if k in self.combine_options}


def register_metric(name: str, **info: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` under ``name`` with the fields of :class:`MetricInfo`."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} is already registered")
        _REGISTRY[name] = MetricInfo(name=name, fn=fn, **info)
        return fn

    return decorate


def get_metric(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``; a clear error listing the available names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FaceZooError(f"unknown metric {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def list_metrics() -> list[str]:
    return sorted(_REGISTRY)


def zoo_normalise(values: np.ndarray, norm: str) -> np.ndarray:
    """Normalise one raw term across the models of a zoo, ignoring NaN (failed models).

    ``"minmax"`` maps to [0, 1], ``"zscore"`` to zero mean and unit (population) deviation, ``"none"`` keeps the
    values. A term that is equal for every model carries no ranking information and normalises to 0.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if norm == "none" or not finite.any():
        return values
    v = values[finite]
    if norm == "minmax":
        span = v.max() - v.min()
        return (values - v.min()) / span if span > 0 else np.where(finite, 0.0, np.nan)
    if norm == "zscore":
        std = v.std()
        return (values - v.mean()) / std if std > 0 else np.where(finite, 0.0, np.nan)
    raise FaceZooError(f"zoo_norm must be 'minmax', 'zscore' or 'none', got {norm!r}")

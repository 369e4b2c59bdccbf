"""Score one model's stored features with the requested metrics, each metric on its own (one failing metric does
not lose the others), from the statistics stored beside the features."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from prefect.cache_policies import NONE
from pydantic import BaseModel

from facezoo import metrics
from facezoo.errors import FaceZooError
from storage.features import FeatureStore
from tasks._prefect import task
from tasks.extract import FeatureRef

__all__ = ["ModelScores", "score_features"]


class ModelScores(BaseModel):
    """One model's raw scores (``score_many`` keys, terms included), seconds per metric, and per-metric errors."""

    model: str
    values: dict[str, float]
    seconds: dict[str, float]
    errors: dict[str, str]
    n: int
    n_classes: int
    unscored_classes: list[str] = []  # classes with a single sample: left out of every metric (FeatureSet.scorable)


# One model's metrics at a time per process: each already uses every core through BLAS, and several at once
# oversubscribe them (the warm demo's four concurrent scoring tasks took 39 s of wall time for 21 s of work).
_ONE_AT_A_TIME = threading.Lock()


@task(name="score", task_run_name="score {ref.model}", cache_policy=NONE)
def score_features(ref: FeatureRef, names: list[str], options: dict[str, dict[str, Any]]) -> ModelScores:
    # the lock is taken in an importable function: Dask pickles this task's body by value, and a lock cannot be
    # pickled
    return _score(ref, names, options)


def _score(ref: FeatureRef, names: list[str], options: dict[str, dict[str, Any]]) -> ModelScores:
    with _ONE_AT_A_TIME:
        stored, single = FeatureStore(ref.path).read(ref.path).scorable()
        stats = stored.stats()
        values: dict[str, float] = {}
        seconds: dict[str, float] = {}
        errors: dict[str, str] = {}
        for name in names:
            if metrics.info(name).needs_logits and stored.logits is None:
                errors[name] = f"{ref.model} has no classifier head: {name} needs the source model's logits"
                continue
            start = time.perf_counter()
            try:
                values.update(metrics.score_many_from_stats(
                    stats, [name], logits=stored.logits if metrics.info(name).needs_logits else None,
                    options={name: options[name]} if name in options else None,
                ))
            # ArithmeticError: an overflow is that one metric's error
            except (FaceZooError, np.linalg.LinAlgError, ValueError, ArithmeticError) as error:
                errors[name] = f"{type(error).__name__}: {error}"
            seconds[name] = time.perf_counter() - start
        return ModelScores(model=ref.model, values=values, seconds=seconds, errors=errors, n=stats.n,
                           n_classes=stats.n_classes, unscored_classes=single)

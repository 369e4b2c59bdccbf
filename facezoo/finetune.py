"""Ground truth for transferability scores: how well each model does once trained on the target task.

Protocols (each accuracy is stored with the protocol that produced it; correlations never mix protocols):

- ``frozen_head``: the backbone stays frozen; a multinomial logistic-regression head is trained on its features of
  the training split (standardised on that split), its L2 strength chosen from ``C_GRID`` on a 20 % stratified
  validation split of train, then retrained on all of train and scored on the test split. The field's fallback for
  models that cannot be trained end to end (ONNX graphs, static embeddings), and the cheap first look.

The metrics: accuracy and mean per-class accuracy (balanced accuracy) on the test split.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from facezoo.errors import FaceZooError

__all__ = ["C_GRID", "PROTOCOLS", "FineTuneResult", "budget_key", "frozen_head"]

C_GRID = (0.01, 0.1, 1.0, 10.0)
PROTOCOLS = ("frozen_head",)


@dataclass
class FineTuneResult:
    """One model's ground truth: test ``accuracy``, ``mean_class_accuracy``, the ``protocol``, its ``budget``
    (the settings that define it), what was selected (``selected``) and ``curve`` (validation score per setting)."""

    accuracy: float
    mean_class_accuracy: float
    protocol: str
    budget: dict[str, Any]
    selected: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)


def budget_key(protocol: str, budget: dict[str, Any]) -> str:
    """A short stable key of a protocol and its budget: cached ground truth is reused only for the same settings."""
    return hashlib.sha256(json.dumps({"protocol": protocol, **budget}, sort_keys=True).encode()).hexdigest()[:16]


def _validation_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified validation subset (at least one sample of every class with 2 or more)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if len(idx) >= 2:
            mask[idx[: max(1, int(round(fraction * len(idx))))]] = True
    return mask


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the budget
        head = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(x), y)
    return scaler, head


def frozen_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    c_grid: tuple[float, ...] = C_GRID,
    validation_fraction: float = 0.2,
    max_iter: int = 1000,
    seed: int = 0,
) -> FineTuneResult:
    """The ``frozen_head`` protocol on stored features (see the module docstring)."""
    if len(np.unique(train_labels)) < 2:
        raise FaceZooError("frozen_head needs at least 2 classes in the training split")
    if len(test_labels) == 0:
        raise FaceZooError("frozen_head needs a non-empty test split")
    val = _validation_split(train_labels, validation_fraction, seed)
    curve = []
    for c in c_grid:
        scaler, head = _fit(train_features[~val], train_labels[~val], c, max_iter)
        curve.append({"C": c, "validation_accuracy": float(head.score(scaler.transform(train_features[val]),
                                                                       train_labels[val]))})
    best = max(curve, key=lambda point: (point["validation_accuracy"], -point["C"]))  # ties: stronger L2
    scaler, head = _fit(train_features, train_labels, best["C"], max_iter)
    predicted = head.predict(scaler.transform(test_features))
    budget = {"c_grid": list(c_grid), "validation_fraction": validation_fraction, "max_iter": max_iter, "seed": seed}
    return FineTuneResult(
        accuracy=float(np.mean(predicted == test_labels)),
        mean_class_accuracy=float(balanced_accuracy_score(test_labels, predicted)),
        protocol="frozen_head", budget=budget, selected={"C": best["C"]}, curve=curve,
    )

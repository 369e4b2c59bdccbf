"""The metrics demo: rank a small zoo of feature maps of a real offline dataset, with every metric, and check the
ranking against held-out accuracy. Runs in seconds with no downloads.

The "models" are label-free feature maps of scikit-learn's digits (1 797 real 8×8 scans): the raw pixels, PCA
projections, a 4×4 downsampling, random ReLU and random Fourier features, and pure noise as a control. Each metric
scores the maps on a stratified 70 % split; the ground truth is the test accuracy of a logistic regression trained
on that split and evaluated on the other 30 %. The pipeline issue replaces this with the real model zoo.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import RBFSampler
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from facezoo import evaluate, metrics

__all__ = ["feature_maps", "run_metrics_demo"]


def feature_maps(seed: int = 0) -> dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """Label-free feature maps fitted on the training images only: ``fit_transform(train, test)``."""
    rng = np.random.default_rng(seed)
    relu_w, relu_b = rng.standard_normal((64, 512)) / 8, rng.standard_normal(512)

    def fitted(model):
        return lambda tr, te: (model.fit_transform(tr), model.transform(te))

    def pooled(tr, te):
        pool = lambda x: x.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16)  # noqa: E731
        return pool(tr), pool(te)

    return {
        "pixels": lambda tr, te: (tr, te),
        "pca-16": fitted(PCA(16, random_state=seed)),
        "pca-4": fitted(PCA(4, random_state=seed)),
        "downsample-4x4": pooled,
        "random-relu-512": lambda tr, te: (np.maximum(tr @ relu_w + relu_b, 0), np.maximum(te @ relu_w + relu_b, 0)),
        "rbf-256": fitted(RBFSampler(gamma=0.002, n_components=256, random_state=seed)),
        "noise-64": lambda tr, te: (rng.standard_normal(tr.shape), rng.standard_normal(te.shape)),
    }


def run_metrics_demo(seed: int = 0) -> dict[str, object]:
    """Score every map with every feature metric, rank the zoo, and correlate with held-out accuracy."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, stratify=digits.target, random_state=seed
    )
    raw, accuracy, seconds = {}, {}, {}
    for name, transform in feature_maps(seed).items():
        f_train, f_test = transform(x_train, x_test)
        start = time.perf_counter()
        raw[name] = metrics.score_many(f_train, y_train)
        seconds[name] = time.perf_counter() - start
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(f_train, y_train)
        accuracy[name] = float(probe.score(f_test, y_test))
    table = metrics.rank_zoo(raw)
    scores = table.pivot(index="model", columns="metric", values="score").loc[list(raw)]
    quality = {}
    for metric_name in scores.columns:
        sign = 1.0 if metrics.info(metric_name).higher_is_better else -1.0
        quality[metric_name] = evaluate.weighted_tau(sign * scores[metric_name].to_numpy(), list(accuracy.values()))
    ranking = pd.DataFrame({"test accuracy": accuracy, "face": scores["face"],
                            "face rank": table[table.metric == "face"].set_index("model")["rank"].astype("Int64"),
                            "seconds (all metrics)": seconds})
    return {
        "ranking": ranking.sort_values("face rank"),
        "weighted_tau": pd.Series(quality).sort_values(ascending=False),
        "table": table,
    }

"""Can a randomized range finder replace the Gram for F's principal directions? Cost against error, same run.

    python benchmarks/face_sketch.py [--sizes 20000x1024x50,50000x2048x100] [--seeds 3]

F (every candidate of docs/face.md) takes its class Gaussians in the top ``pca_dim=64`` principal directions, which
the library gets from the Gram (N·D²/2 multiply-adds). A range finder gets approximate directions from products
with the data instead: ``q`` power steps of an ``l``-column block, each one pass ``Xᵀ(X Q)`` (2·N·D·l), then a
Rayleigh–Ritz step on the last product. This script runs that sketch over the features (chunked, centred, float32
products as the library's passes), times it against one float32 Gram of the same features in the same run, and
reports how far F moves from its value with the exact directions (relative change, max over the seeds), on the
synthetic features of ``benchmarks/metric_speed.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from facezoo.metrics.face import FAIRNESS, face_terms
from facezoo.metrics.stats import FeatureStats
from metric_speed import best_of, make_features

CANDIDATES = [f for f in FAIRNESS if f not in ("softmax_entropy", "neg_cv", "collapse_dispersion")]
SKETCHES = ((0, 128), (1, 80), (1, 128), (2, 80))  # (power steps q, block width l)


def sketch(x: np.ndarray, mean: np.ndarray, d: int, q: int, width: int, rows: int = 8192) -> tuple[np.ndarray, ...]:
    """Top-``d`` directions and variances of the covariance from ``q + 1`` passes of ``Xᵀ(X Q)`` (no Gram)."""
    block = np.random.default_rng(0).standard_normal((x.shape[1], width)).astype(np.float32)
    for step in range(q + 1):
        block = np.linalg.qr(block)[0].astype(np.float32)
        product = np.zeros((x.shape[1], width))
        for a in range(0, len(x), rows):
            chunk = x[a : a + rows]
            product += chunk.T @ (chunk @ block)
        product = product / len(x) - np.outer(mean, mean @ block)  # Σ_T Q
        if step < q:
            block = product.astype(np.float32)
    h = block.T.astype(np.float64) @ product
    theta, w = np.linalg.eigh((h + h.T) / 2)
    return block.astype(np.float64) @ w[:, ::-1][:, :d], theta[::-1][:d]


def fairness(stats: FeatureStats, basis: tuple[np.ndarray, ...] | None) -> dict[str, float]:
    out = {}
    for candidate in CANDIDATES:
        stats._memo.clear()
        if basis is not None:  # the sketch's directions in place of the Gram's
            stats._memo[("pca", 64)] = basis
        out[candidate] = face_terms(stats, fairness=candidate)["class_fairness"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000x1024x50,50000x2048x100")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print("| N, D, K | sketch (q, l) | × Gram | " + " | ".join(f"Δ {c}" for c in CANDIDATES) + " |")
    print("|---|---|---:|" + "---:|" * len(CANDIDATES))
    for size in args.sizes.split(","):
        n, d, k = map(int, size.split("x"))
        errors: dict[tuple[int, int], dict[str, float]] = {s: dict.fromkeys(CANDIDATES, 0.0) for s in SKETCHES}
        cost: dict[tuple[int, int], float] = {}
        for seed in range(args.seeds):
            x, y = make_features(n, d, k, seed)
            stats = FeatureStats(x, y)
            exact = fairness(stats, None)
            gram = best_of(3, lambda: x.T @ x)
            for q, width in SKETCHES:
                start = time.perf_counter()
                basis = sketch(x, stats.mean.astype(np.float64), 64, q, width)
                cost[q, width] = min(cost.get((q, width), np.inf), (time.perf_counter() - start) / gram)
                for c, v in fairness(stats, basis).items():
                    errors[q, width][c] = max(errors[q, width][c], abs(v - exact[c]) / abs(exact[c]))
        for s in SKETCHES:
            print(f"| {n}, {d}, {k} | {s} | {cost[s]:.2f} | "
                  + " | ".join(f"{errors[s][c]:.1e}" for c in CANDIDATES) + " |", flush=True)


if __name__ == "__main__":
    main()

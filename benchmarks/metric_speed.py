"""Speed and memory of every metric, as ratios to one float32 Gram ``X.T @ X`` timed in the same run.

    python benchmarks/metric_speed.py --n 50000 --d 2048 --classes 100 [--out benchmarks/results/metric_speed.md]

Synthetic Gaussian class data shaped like real penultimate features: class means in a 64-dimensional subspace, within-
class noise with a decaying spectrum (rank 256) plus a little isotropic noise, a common offset, float32. Every
metric is timed alone (``metrics.score``, its own statistics), then ``metrics.score_many`` over every metric except
the sample-level ``knn``, ``nleep`` and ``linear_probe`` (one shared statistics object). Peak memory of
``score_many`` is measured in a fresh subprocess as the growth of the peak resident set (``VmHWM``, reset just
before the call) over the features already in memory, so BLAS and LAPACK work space count too.

Absolute seconds mean little on shared machines: read the ratios. Best of ``--repeat`` runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads OpenBLAS: see facezoo/__init__.py

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facezoo import metrics

EXCLUDED_FROM_TOTAL = ("knn", "nleep", "linear_probe")
TARGETS = {"face": 1.5, "nc1": 0.5, "face_variance": 0.5}
TOTAL_TARGET = 5.0
MEMORY_TARGET = 2.0


def make_features(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features (n, d) and labels, generated chunk by chunk (no float64 copy of the whole array)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    means = (rng.standard_normal((classes, 64)) @ rng.standard_normal((64, d)) / 8).astype(np.float32)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(256)))[:, None]
    mixing = (spectrum * rng.standard_normal((256, d))).astype(np.float32)
    offset = rng.standard_normal(d).astype(np.float32) * 5
    x = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 8192):
        b = min(a + 8192, n)
        x[a:b] = means[labels[a:b]] + rng.standard_normal((b - a, 256), dtype=np.float32) @ mixing
        x[a:b] += 0.1 * rng.standard_normal((b - a, d), dtype=np.float32) + offset
    return x, labels


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def score_many_breakdown(x: np.ndarray, y: np.ndarray, names: list[str]) -> list[tuple[str, float]]:
    """Seconds of the shared pass, then of each metric in ``score_many``'s order (what it adds on top)."""
    start = time.perf_counter()
    stats = metrics.FeatureStats(x, y, gram=True)
    parts = [("shared pass (counts, sums, Gram)", time.perf_counter() - start)]
    for name in names:
        start = time.perf_counter()
        metrics.score_many_from_stats(stats, [name])
        parts.append((name, time.perf_counter() - start))
    return parts


def peak_memory_child(n: int, d: int, classes: int, names: list[str]) -> dict:
    x, y = make_features(n, d, classes)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM) to the current one
    before = _status_bytes("VmRSS")
    metrics.score_many(x, y, names)
    return {"features_bytes": x.nbytes, "growth_bytes": _status_bytes("VmHWM") - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], help="metrics not to time alone (e.g. nleep)")
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [m for m in metrics.available() if not metrics.info(m).needs_logits and m not in EXCLUDED_FROM_TOTAL]
    if args.memory_child:
        print(json.dumps(peak_memory_child(args.n, args.d, args.classes, names)))
        return

    x, y = make_features(args.n, args.d, args.classes)
    gram = best_of(max(5, args.repeat), lambda: x.T @ x)  # the baseline gets the most tries: ratios stay honest
    rows = []
    for name in metrics.available():
        if metrics.info(name).needs_logits:
            continue  # LEEP/NCE read logits (N, Cs) only: O(N·Cs), not a feature-space cost
        if name in args.skip:
            rows.append((name, None, "skipped (--skip)"))
            continue
        seconds = best_of(1 if name in EXCLUDED_FROM_TOTAL else args.repeat, lambda m=name: metrics.score(m, x, y))
        target = TARGETS.get(name)
        note = "" if target is None else f"target ≤ {target} × Gram: {'met' if seconds / gram <= target else 'MISSED'}"
        if name in EXCLUDED_FROM_TOTAL:
            note = "excluded from the score_many target (works on a ≤ 5000/10000-row subsample)"
        rows.append((name, seconds, note))
    total = best_of(args.repeat, lambda: metrics.score_many(x, y, names))
    breakdown = score_many_breakdown(x, y, names)
    child = subprocess.run(
        [sys.executable, __file__, "--memory-child", "--n", str(args.n), "--d", str(args.d),
         "--classes", str(args.classes)],
        check=True, capture_output=True, text=True,
    )
    memory = json.loads(child.stdout)
    memory_ratio = memory["growth_bytes"] / memory["features_bytes"]

    lines = [
        f"# Metric speed: N={args.n}, D={args.d}, K={args.classes}, float32",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"NumPy {np.__version__}. Best of {args.repeat}. Reproduce: "
        f"`python benchmarks/metric_speed.py --n {args.n} --d {args.d} --classes {args.classes}`.",
        "",
        f"Baseline: one float32 Gram `X.T @ X` (NumPy, a single BLAS syrk) = {gram:.3f} s, best of "
        f"{max(5, args.repeat)}.",
        "",
        "| metric | seconds | × Gram | note |",
        "|---|---:|---:|---|",
    ]
    for name, seconds, note in rows:
        if seconds is None:
            lines.append(f"| {name} | – | – | {note} |")
        else:
            lines.append(f"| {name} | {seconds:.3f} | {seconds / gram:.2f} | {note} |")
    verdict = "met" if total / gram <= TOTAL_TARGET else "MISSED"
    lines += [
        f"| **score_many** ({len(names)} metrics: all but {', '.join(EXCLUDED_FROM_TOTAL)}) | {total:.3f} | "
        f"{total / gram:.2f} | target ≤ {TOTAL_TARGET} × Gram: {verdict} |",
        "",
        f"Peak memory of score_many: {memory['growth_bytes'] / 2**20:.0f} MiB over the features' "
        f"{memory['features_bytes'] / 2**20:.0f} MiB = {memory_ratio:.2f} × the float32 features "
        f"(target ≤ {MEMORY_TARGET}: {'met' if memory_ratio <= MEMORY_TARGET else 'MISSED'}).",
        "",
        "LEEP and NCE read only the source logits (N × Cs) and are not timed here.",
        "",
        "Where score_many's time goes (one run; each metric adds what the shared statistics and the metrics before "
        "it have not already computed):",
        "",
        "| step | seconds | × Gram |",
        "|---|---:|---:|",
        *[f"| {step} | {seconds:.3f} | {seconds / gram:.2f} |" for step, seconds in breakdown],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

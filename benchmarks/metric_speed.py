"""Speed and memory of every metric, as ratios to one float32 Gram ``X.T @ X`` timed in the same run.

    python benchmarks/metric_speed.py [--only-face] [--out benchmarks/results/metric_speed.md]
    python benchmarks/metric_speed.py --n 50000 --d 2048 --classes 100      # one size

By default both sizes of FaCe's speed target: N=20000, D=1024, K=50 and N=50000, D=2048, K=100.

Synthetic Gaussian class data shaped like real penultimate features: class means in a 64-dimensional subspace, within-
class noise with a decaying spectrum (rank 256) plus a little isotropic noise, a common offset, float32. Every
metric is timed alone (``metrics.score``, its own statistics), then ``metrics.score_many`` over every metric except
the sample-level ``knn``, ``nleep`` and ``linear_probe`` (one shared statistics object). Peak memory of
``score_many`` is measured in a fresh subprocess as the growth of the peak resident set (``VmHWM``, reset just
before the call) over the features already in memory, so BLAS and LAPACK work space count too. A last table times
FaCe with other options against FaCe with its defaults (C alone, F reported in the between-class basis), among them
the literal reconstruction (``basis="pca"``: F in the Gram's principal directions) and the candidates of the
pre-registered selection (``docs/face.md``; when it ran, rule 5 excluded any costing over 1.25 × the then default's
CPU time, and none did). ``--only-face`` times the Gram, ``face``, ``face_variance``, ``nc1`` and that table only.

Absolute seconds mean little on shared machines: read the ratios. Warm (the Gram and every metric run ``--repeat``
times; the Gram at least 5), best of ``--repeat`` runs.
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
SIZES = ((20000, 1024, 50), (50000, 2048, 100))  # FaCe's speed target holds at both
FACE_OPTIONS = [{"basis": "pca"}, {"basis": "pca", "fairness": "worst"}, {"basis": "pca", "fairness_weight": 1.0},
                {"fairness": "worst"}, {"fairness": "collapse_dispersion"}, {"fairness_weight": 1.0},
                {"c_shrinkage": 0.1}, {"between_energy": 0.9}]


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


def face_options(x: np.ndarray, y: np.ndarray, gram: float, repeat: int) -> list[str]:
    """FaCe with each of :data:`FACE_OPTIONS` against FaCe with its defaults: wall seconds (× Gram) and CPU seconds
    of the process (× the default's; CPU time, unlike wall time, barely moves when other jobs load the machine)."""
    def timed(options: dict) -> tuple[float, float]:
        wall = cpu = float("inf")
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            metrics.score("face", x, y, **options)
            wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
        return wall, cpu

    _, default_cpu = timed({})
    lines = ["| FaCe option | seconds | × Gram | CPU seconds | × default's CPU |", "|---|---:|---:|---:|---:|"]
    for options in FACE_OPTIONS:
        wall, cpu = timed(options)
        lines.append(f"| {', '.join(f'{k}={v}' for k, v in options.items())} | {wall:.3f} | {wall / gram:.2f} | "
                     f"{cpu:.3f} | {cpu / default_cpu:.2f} |")
    return lines


def one_size(n: int, d: int, classes: int, args: argparse.Namespace) -> list[str]:
    """The report's section for one size."""
    x, y = make_features(n, d, classes)
    gram = best_of(max(5, args.repeat), lambda: x.T @ x)  # the baseline gets the most tries: ratios stay honest
    names = [m for m in metrics.available() if not metrics.info(m).needs_logits and m not in EXCLUDED_FROM_TOTAL]
    rows = []
    for name in metrics.available():
        if metrics.info(name).needs_logits or (args.only_face and name not in TARGETS):
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
    lines = [
        f"## N={n}, D={d}, K={classes}, float32",
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
    if not args.only_face:
        lines += score_many_lines(x, y, names, gram, args, n, d, classes)
    return lines + ["", "FaCe with other options (docs/face.md):", "", *face_options(x, y, gram, args.repeat), ""]


def score_many_lines(x: np.ndarray, y: np.ndarray, names: list[str], gram: float, args: argparse.Namespace, n: int,
                     d: int, classes: int) -> list[str]:
    total = best_of(args.repeat, lambda: metrics.score_many(x, y, names))
    breakdown = score_many_breakdown(x, y, names)
    child = subprocess.run(
        [sys.executable, __file__, "--memory-child", "--n", str(n), "--d", str(d), "--classes", str(classes)],
        check=True, capture_output=True, text=True,
    )
    memory = json.loads(child.stdout)
    memory_ratio = memory["growth_bytes"] / memory["features_bytes"]
    verdict = "met" if total / gram <= TOTAL_TARGET else "MISSED"
    return [
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help="one size instead of both (default of the others: the large size)")
    parser.add_argument("--d", type=int)
    parser.add_argument("--classes", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], help="metrics not to time alone (e.g. nleep)")
    parser.add_argument("--only-face", action="store_true", help="time only the Gram, face, face_variance, nc1 "
                        "and FaCe's candidates")
    parser.add_argument("--out", type=Path, help="also write the report as Markdown here")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    one = args.n is not None or args.d is not None or args.classes is not None
    sizes = [(args.n or SIZES[1][0], args.d or SIZES[1][1], args.classes or SIZES[1][2])] if one else list(SIZES)
    if args.memory_child:
        names = [m for m in metrics.available() if not metrics.info(m).needs_logits and m not in EXCLUDED_FROM_TOTAL]
        print(json.dumps(peak_memory_child(*sizes[0], names)))
        return
    command = " ".join(["python benchmarks/metric_speed.py", *sys.argv[1:]])
    lines = [
        "# Metric speed, float32",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"NumPy {np.__version__}. Best of {args.repeat}. Reproduce: `{command}`.",
        "",
    ]
    for n, d, classes in sizes:
        lines += one_size(n, d, classes, args)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

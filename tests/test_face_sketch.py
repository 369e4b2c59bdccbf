"""The range finder of ``benchmarks/face_sketch.py``, whose measured error is the evidence that F keeps the Gram's
exact principal directions (docs/face.md): it must be exact where a range finder is, so that its error elsewhere is
the method's, not a bug's."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import face_sketch  # noqa: E402

from facezoo.metrics.stats import FeatureStats  # noqa: E402


def test_a_sketch_wider_than_the_rank_finds_the_exact_directions_and_f():
    gen = np.random.default_rng(0)
    y = gen.integers(0, 6, 3000)
    mixing = gen.standard_normal((40, 300)) * np.linspace(3, 0.5, 40)[:, None]  # rank 40 < the block's 80 columns
    x = (gen.standard_normal((3000, 40)) @ mixing + 4 * gen.standard_normal((6, 300))[y] @ np.eye(300) * 0.3
         + 7.0).astype(np.float32)
    stats = FeatureStats(x, y)
    basis, variances = face_sketch.sketch(x, stats.mean, 64, q=2, width=80)
    exact_w, exact_v = np.linalg.eigh(np.cov(x.astype(np.float64).T, bias=True))
    top = exact_v[:, ::-1][:, :45]  # rank 40 + 5 centred class-mean directions: the non-null spectrum
    np.testing.assert_allclose(variances[:45], exact_w[::-1][:45], rtol=1e-4)
    assert np.abs(np.linalg.svd(basis[:, :45].T @ top, compute_uv=False)).min() > 1 - 1e-5  # same subspace
    exact = face_sketch.fairness(stats, None)
    sketched = face_sketch.fairness(stats, (basis, variances))
    for candidate in face_sketch.CANDIDATES:
        assert abs(sketched[candidate] - exact[candidate]) <= 1e-4 * abs(exact[candidate]), candidate

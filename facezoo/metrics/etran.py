"""ETran: energy-based transferability estimation.

Gholami, Akbari, Wang, Zhang, Sadeghi, "ETran: Energy-Based Transferability Estimation", ICCV 2023. For
classification, two terms, each min-max normalised across the zoo and weighted (``energy_weight``, default 0.15 as
in the authors' evaluation script, the LDA term taking the rest):

- ``energy``: with ``e_i = log Σ_d exp(x_id)`` the negative free energy of sample i (temperature 1, raw features),
  the mean over the ``energy_fraction`` (0.5 %) of samples with the lowest ``e_i`` (at least one sample);
- ``lda``: the mean posterior of the true class, ``(1/N) Σ_i p(y_i | x_i)``, of a regularised LDA (SFDA's first
  Fisher fit, shared with ``sfda``).

The paper's text was not available to us; the terms follow the authors' public code (mgholamikn/ETran
``metrics.py``, ``tw.py``), except that its LDA solves ``eigh(S_W⁻¹ S_B)`` on a non-symmetric matrix, which makes
the classifier nearest-class-mean with identity covariance; the LDA here uses ``S_W`` as the method intends. The
regression (SVD) term is for detection and not part of the classification score; the code's tail of
``int(0.005·N)`` samples is empty (NaN) below N = 200, here it is at least one sample.

Cost: one pass for ``e_i`` (O(N·D) exponentials) + the shared LDA fit. Not shift-invariant (the energy of raw
features is not). Higher is better.
"""

from __future__ import annotations

import numpy as np

from facezoo.errors import FaceZooError
from facezoo.metrics._lda import shrunk_lda_log_posteriors
from facezoo.metrics._registry import register_metric, zoo_normalise
from facezoo.metrics.stats import FeatureStats

__all__ = ["etran"]


def _combine_etran(
    terms: dict[str, np.ndarray], *, zoo_norm: str = "minmax", energy_weight: float = 0.15
) -> np.ndarray:
    return energy_weight * zoo_normalise(terms["energy"], zoo_norm) + (1.0 - energy_weight) * zoo_normalise(
        terms["lda"], zoo_norm
    )


@register_metric(
    "etran", paper="Gholami et al., ICCV 2023", uses_gram=True, shift_invariant=False, combine=_combine_etran,
    combine_options={"zoo_norm": "minmax", "energy_weight": 0.15},
)
def etran(stats: FeatureStats, *, energy_fraction: float = 0.005, a: float = 5.0) -> dict[str, float]:
    """ETran's raw terms ``energy`` and ``lda`` (zoo score: module docstring)."""
    if not 0.0 < energy_fraction <= 1.0:
        raise FaceZooError(f"energy_fraction must be in (0, 1], got {energy_fraction!r}")
    e = stats.row_logsumexp()
    tail = max(1, int(energy_fraction * stats.n))
    energy = float(np.partition(e, tail - 1)[:tail].mean())
    _, log_post = shrunk_lda_log_posteriors(stats, a)
    lda = float(np.exp(log_post[np.arange(stats.n), stats.sorted_codes]).mean())
    return {"energy": energy, "lda": lda}

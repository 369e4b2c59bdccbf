"""SFDA: Self-challenging Fisher Discriminant Analysis.

Shao, Zhao, Ge, Liu, Yang, Luo, "Not All Models Are Equal: Predicting Model Transferability in a Self-challenging
Fisher Space", ECCV 2022.

1. Regularised Fisher discriminant: ``S_W`` the (1/N) within-class covariance, ``λ = max(exp(−a σ_max(S_W)), 1e-10)``
   (a = 5), ``S_Wλ = (1 − λ) S_W + λ (tr S_W / D) I``; class posteriors ``p(k | x)`` of the LDA with ``S_Wλ``
   (the Fisher projection onto the top generalised eigenvectors of ``(S_B, S_Wλ)`` gives the same classifier).
2. ConfMix self-challenge: ``w_i = softmax_k(p(k | x_i))[y_i]`` (the authors' softened true-class confidence),
   ``x̂_i = w_i x_i + (1 − w_i) μ̄_{y_i}``, ``μ̄_c`` the mean of the other classes' means; refit step 1 on ``X̂``
   with the same λ.
3. ``SFDA = (1/N) Σ_i log p̂(y_i | x̂_i)``.

Deviations from the authors' code (TencentARC/SFDA ``metrics.py``), following the paper: the score keeps the log
(the code drops it "in case of instability", making it a mean probability); the input array is never modified (the
code writes ConfMix into the caller's array); ``σ_max`` is the exact largest eigenvalue (the code takes 3 power
iterations); ``log p̂(y | x̂)`` is taken in the log domain (``_lda.log_softmax``: ``−log1p`` of the other classes'
mass), where the code's softmax rounds a posterior of 1 − 1e-30 to 1. Well separated classes used to score exactly
0.0 and tie; they now keep their margin (e.g. −8e-41 against −2e-80); values that do not round are unchanged
(to 1e-15). Where the other classes' mass is below 1e-308 even this is 0.0: with N < D the within-class covariance
is singular, its shrunk null directions make the margins ~1e5 nats and every model scores exactly 0.0 in float64,
as in the authors' code; ``rank_zoo`` reports such ties (its ``tied`` column). Same classifier, computed without the
D×D generalised eigenproblem.

With float32 features and N < D, ``S_Wλ`` is singular to the precision of the statistics (λ = 1e-10 is below
float32 rounding); the Cholesky step then adds the smallest ridge at that precision (``_lda.cholesky``).

Cost: the shared Gram + one weighted Gram pass for the refit (ConfMix changes every sample) + two projection passes
onto K directions + two Cholesky factorisations of D×D: O(N·D² + D³).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from facezoo.metrics._lda import lda_log_posteriors, shrink, shrunk_lda_log_posteriors
from facezoo.metrics._registry import register_metric
from facezoo.metrics.stats import FeatureStats

__all__ = ["sfda"]


@register_metric("sfda", paper="Shao et al., ECCV 2022", uses_gram=True)
def sfda(stats: FeatureStats, *, a: float = 5.0) -> float:
    """SFDA score (mean log-posterior of the true class after the self-challenge); higher is better."""
    n, k = stats.n, stats.n_classes
    lam, log_post = shrunk_lda_log_posteriors(stats, a)

    codes = stats.sorted_codes
    w = softmax(np.exp(log_post), axis=1)[np.arange(n), codes]
    dev = stats.class_deviations
    others = (dev.sum(0) - dev) / (k - 1)  # μ̄_c − μ
    delta = dev - others  # μ_c − μ̄_c
    gram_w2, sums_w, sums_w2 = stats.weighted_residual_moments(w)
    # x̂_i − μ̄_c = w_i (r_i + δ_c): class means and within scatter of X̂ in closed form
    u = (sums_w + stats.class_sums_of(w)[:, None] * delta) / stats.counts[:, None]  # μ̂_c − μ̄_c
    w2 = stats.class_sums_of(w**2)
    cross = sums_w2.T @ delta
    within_hat = (gram_w2 + cross + cross.T + (delta.T * w2) @ delta - (u.T * stats.counts) @ u) / n
    means_hat = others + u  # μ̂_c − μ
    mean_hat = stats.priors @ means_hat  # μ̂ − μ

    def project_hat(coef: np.ndarray) -> np.ndarray:
        # x̂_i − μ̂ = w_i ((x_i − μ) − (μ̄_c − μ)) + (μ̄_c − μ) − (μ̂ − μ): one pass over the original features
        z = stats.project(coef, "global")
        return w[:, None] * (z - (others @ coef)[codes]) + ((others - mean_hat) @ coef)[codes]

    log_post_hat = lda_log_posteriors(stats, shrink(within_hat, lam), means_hat - mean_hat, project_hat)
    return float(log_post_hat[np.arange(n), codes].mean())

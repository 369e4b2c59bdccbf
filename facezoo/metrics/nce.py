"""NCE: Negative Conditional Entropy.

Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019. With the source
model's hard predictions ``z_i = argmax logits_i`` and the empirical joint ``P̂(y, z)``::

    NCE = −H(Y | Z) = Σ_{y,z} P̂(y, z) log P̂(y | z)

Cost O(N·Cs). Higher is better; at most 0 (Z determines Y), at least ``−H(Y)`` (Z says nothing about Y).
Empty cells contribute 0 (``0 log 0 = 0``): the authors' and thuml's code yield NaN there.
"""

from __future__ import annotations

import numpy as np

from facezoo.metrics._registry import register_metric
from facezoo.metrics.stats import FeatureStats

__all__ = ["nce"]


@register_metric("nce", paper="Tran et al., ICCV 2019", needs_logits=True)
def nce(stats: FeatureStats, logits: np.ndarray) -> float:
    """NCE of the source classifier's ``logits`` ``(N, Cs)`` (rows in input order); higher is better."""
    z = np.unique(np.argmax(logits, axis=1), return_inverse=True)[1].reshape(-1)
    joint = np.zeros((stats.n_classes, z.max() + 1))
    np.add.at(joint, (stats.codes, z), 1.0)
    joint /= stats.n
    conditional = joint / joint.sum(0)
    nz = joint > 0
    return float((joint[nz] * np.log(conditional[nz])).sum())

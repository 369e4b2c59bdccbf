"""The embedded demo: the offline zoo ranked on a real offline dataset, then checked against fine-tuned accuracy.

Image (default): the six ImageNet-era backbones of ``configs/zoos/demo-image.yaml`` on Animal-MNIST (animal
silhouettes, 10 classes; a stratified sample of ``max_samples`` images, default 1000: 800 to rank and train on,
200 to test: about 7 minutes on 2 CPU cores from a cold home). Text (``--text``): the sentence encoders of
``configs/zoos/demo-text.yaml`` on Rotten Tomatoes (a sample of 2000 reviews).

Every metric but N-LEEP scores each model; the ground truth is the ``frozen_head`` protocol (a logistic-regression
head on the frozen features, its L2 strength chosen on a validation split). Everything lands in the home folder:
features (Parquet), results (DuckDB), runs (MLflow). A second run reuses every feature and fine-tuned accuracy.
"""

from __future__ import annotations

from typing import Any

from flows.rank import rank_zoo
from flows.validate import validate

__all__ = ["DEMOS", "run_demo"]

DEMOS = {
    False: {"zoo": "demo-image", "dataset": "builtin:animal-mnist", "max_samples": 1000},
    True: {"zoo": "demo-text", "dataset": "builtin:rotten-tomatoes", "max_samples": 2000},
}


def run_demo(*, text: bool = False, max_samples: int | None = None, device: str = "auto",
             home: str | None = None) -> dict[str, Any]:
    """Rank, then validate; returns ``{"rank": rank_zoo summary, "validate": validate summary}``."""
    demo = DEMOS[text]
    n = max_samples or demo["max_samples"]
    ranked = rank_zoo(demo["zoo"], demo["dataset"], device=device, max_samples=n, home=home)
    checked = validate(demo["zoo"], ranked["dataset"], device=device, home=home)
    return {"rank": ranked, "validate": checked}

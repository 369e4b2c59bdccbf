"""The embedded demo: the offline zoo ranked on a real offline dataset, then checked against fine-tuned accuracy.

Image (default): the six ImageNet-era backbones of ``configs/zoos/demo-image.yaml`` on Animal-MNIST (animal
silhouettes, 10 classes; a stratified sample of ``max_samples`` images, default 1000: 800 to rank and train on,
200 to test: about 7 minutes on 2 CPU cores from a cold home). Text (``--text``): the sentence encoders of
``configs/zoos/demo-text.yaml`` on Rotten Tomatoes (a sample of 2000 reviews).

Every metric but N-LEEP scores each model; the ground truth is a small-budget ``full`` fine-tuning of every model
that can be trained end to end (the ONNX models through onnx2torch; WordLlama and fastText get a head on frozen
features, and the summary says so): one learning rate, a few dozen steps at a reduced resolution, so that it fits a
laptop CPU. It shows the machinery, not a benchmark: ``benchmarks/ranking_quality.py`` is that. Everything lands in
the home folder: features (Parquet), results (DuckDB), runs (MLflow). A second run reuses every feature and
fine-tuned accuracy.
"""

from __future__ import annotations

from typing import Any

from facezoo import progress
from flows.rank import rank_zoo
from flows.validate import validate

__all__ = ["DEMOS", "PROTOCOL", "run_demo"]

# ``full`` fine-tuning for every model that can be trained end to end, ``frozen_head`` for the others (the help text
# of ``facezoo demo`` and the README say so; tests/test_cli.py holds them to it)
PROTOCOL = "auto"

DEMOS = {
    False: {"zoo": "demo-image", "dataset": "builtin:animal-mnist", "max_samples": 1000,
            "budget": {"steps": 60, "batch_size": 32, "resolution": 64, "lr_grid": [0.01],
                       "weight_decay_grid": [1e-4]}},
    True: {"zoo": "demo-text", "dataset": "builtin:rotten-tomatoes", "max_samples": 2000,
           "budget": {"steps": 60, "batch_size": 16, "max_length": 64, "lr_grid": [5e-5]}},
}


def run_demo(*, text: bool = False, max_samples: int | None = None, device: str = "auto",
             home: str | None = None) -> dict[str, Any]:
    """Rank, then validate; returns ``{"rank": rank_zoo summary, "validate": validate summary}``."""
    demo = DEMOS[text]
    n = max_samples or demo["max_samples"]
    progress.stage(f"demo, step 1 of 2: rank the {demo['zoo']} zoo on {n} samples of {demo['dataset']}")
    ranked = rank_zoo(demo["zoo"], demo["dataset"], device=device, max_samples=n, home=home)
    budget = ", ".join(f"{k} {v}" for k, v in demo["budget"].items())
    progress.stage(f"demo, step 2 of 2: check the ranking by full fine-tuning of every model ({budget})")
    checked = validate(demo["zoo"], ranked["dataset"], protocol=PROTOCOL, budget=demo["budget"], device=device,
                       home=home)
    return {"rank": ranked, "validate": checked}

"""``onboard_dataset``: check a new dataset, fingerprint and register it, rank the zoo on it, optionally validate.

Checks (each failure is one line naming the file/row/field): the source is readable, every image/text decodes
(all unreadable files listed at once), at least 2 classes, every class with at least 2 training samples, and the
train/test splits exist. The dataset is then registered in the results store under ``name`` (a new fingerprint
under an existing name is a new version) and, unless ``zoo`` is ``None``, the zoo is ranked on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facezoo import progress
from facezoo.config import Home
from facezoo.data import check_name
from facezoo.errors import FaceZooError
from flows.rank import rank_zoo, resolve_zoo, start_job
from flows.validate import validate
from storage.results import ResultsStore
from tasks import datasets
from tasks._prefect import flow

__all__ = ["onboard_dataset", "check_dataset"]


def check_dataset(dataset: Any, split: str = "train") -> dict[str, Any]:
    """The onboarding checks the loaders do not already make; returns ``dataset.describe()``."""
    summary = dataset.describe()
    if split not in dataset.split_names:
        raise FaceZooError(f"dataset {dataset.name!r} has no {split!r} split; it has {', '.join(dataset.split_names)}")
    if dataset.task != "segmentation":
        train = dataset.labels[dataset.splits == split]
        counts = np.bincount(train, minlength=len(dataset.class_names))
        thin = [f"{dataset.class_names[k]} ({c})" for k, c in enumerate(counts) if c < 2]
        if thin:
            raise FaceZooError(
                f"dataset {dataset.name!r}: classes with fewer than 2 {split} samples: {', '.join(thin[:10])}; "
                "add samples or drop those classes"
            )
    return summary


@flow(name="onboard-dataset")
def onboard_dataset(
    source: str,
    name: str,
    options: dict[str, Any] | None = None,
    zoo: str | None = "demo-image",
    validate_top_k: int | None = None,
    device: str = "auto",
    home: str | None = None,
) -> dict[str, Any]:
    """Onboard ``source`` as ``name``; returns ``{"dataset": describe(), "rank": rank summary | None,
    "validate": validation summary | None}``."""
    check_name(name)
    if zoo:
        resolve_zoo(zoo)  # an unknown zoo fails before the dataset is read, let alone registered
    where = Home.resolve(home).ensure()
    ref = datasets.DatasetRef(name=name, source=source, options=options or {})
    progress.stage(f"checking {source}")
    dataset = datasets.load(ref)
    summary = check_dataset(dataset)
    results = ResultsStore(where.results_db)
    results.register_dataset(dataset, ref.source, ref.options, None)
    job_id = start_job(where, results, "onboard", zoo or "", name,
                       {"source": source, "options": options or {}})
    results.finish_job(job_id, "completed", message=f"registered fingerprint {dataset.fingerprint}")
    ranked = rank_zoo(zoo, name, device=device, home=str(where.root)) if zoo else None
    checked = (validate(zoo, name, top_k=validate_top_k, device=device, home=str(where.root))
               if zoo and validate_top_k else None)
    return {"dataset": summary, "rank": ranked, "validate": checked}

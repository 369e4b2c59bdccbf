"""Ground truth for one model: its fine-tuned accuracy under a protocol, cached in the results store."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NONE
from pydantic import BaseModel

from facezoo import finetune
from facezoo.errors import FaceZooError
from facezoo.models.zoo import ModelSpec
from storage.features import FeatureStore
from storage.results import ResultsStore
from tasks import datasets
from tasks._prefect import task, transient
from tasks.extract import stored_features

__all__ = ["GroundTruth", "ground_truth"]


class GroundTruth(BaseModel):
    """One model's accuracy under ``protocol``; ``cached`` when it came from the results store."""

    model: str
    protocol: str
    accuracy: float
    mean_class_accuracy: float
    budget_key: str
    cached: bool
    curve: list[dict[str, float]]


@task(name="ground-truth", task_run_name="fine-tune {spec.name}", retries=1, retry_condition_fn=transient,
      cache_policy=NONE)
def ground_truth(
    spec: ModelSpec,
    dataset: datasets.DatasetRef,
    protocol: str,
    splits: tuple[str, str],
    features_root: str,
    results_db: str,
    job_id: str,
    extract_options: dict[str, Any],
) -> GroundTruth:
    """The model's accuracy on ``splits[1]`` after training on ``splits[0]`` (cached by model digest, dataset
    fingerprint, protocol and budget)."""
    if protocol not in finetune.PROTOCOLS:
        raise FaceZooError(f"unknown protocol {protocol!r}; known: {', '.join(finetune.PROTOCOLS)}")
    data = datasets.load(dataset)
    model = spec.create()
    budget = {"c_grid": list(finetune.C_GRID), "validation_fraction": 0.2, "max_iter": 1000, "seed": 0,
              "weights": model.digest, "splits": list(splits)}
    key = finetune.budget_key(protocol, budget)
    results = ResultsStore(results_db)
    found = results.get_finetune(spec.name, data.fingerprint, protocol, key)
    if found is not None:
        return GroundTruth(model=spec.name, protocol=protocol, accuracy=found["accuracy"],
                           mean_class_accuracy=found["mean_class_accuracy"], budget_key=key, cached=True, curve=[])
    store = FeatureStore(features_root)
    train, _ = stored_features(model, data, splits[0], store, **extract_options)
    test, _ = stored_features(model, data, splits[1], store, **extract_options)
    result = finetune.frozen_head(train.features, train.labels, test.features, test.labels)
    results.write_finetune(
        model=spec.name, dataset=data.name, dataset_fingerprint=data.fingerprint, protocol=protocol, budget_key=key,
        accuracy=result.accuracy, mean_class_accuracy=result.mean_class_accuracy, budget=budget, job_id=job_id,
    )
    return GroundTruth(model=spec.name, protocol=protocol, accuracy=result.accuracy,
                       mean_class_accuracy=result.mean_class_accuracy, budget_key=key, cached=False,
                       curve=result.curve)

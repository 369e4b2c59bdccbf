"""Ground truth for one model: its fine-tuned accuracy under a protocol and budget, cached in the results store."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NONE
from pydantic import BaseModel

from facezoo import finetune, progress
from facezoo.models.zoo import ModelSpec
from storage.features import FeatureStore
from storage.results import ResultsStore
from tasks import datasets
from tasks._prefect import get_run_logger, task, transient
from tasks.extract import stored_features

__all__ = ["GroundTruth", "ground_truth"]


class GroundTruth(BaseModel):
    """One model's accuracy under ``protocol`` (the one actually run: ``auto`` resolves per model, and ``fallback``
    says why a model got ``frozen_head``); ``cached`` when it came from the results store."""

    model: str
    protocol: str
    accuracy: float
    mean_class_accuracy: float
    budget_key: str
    cached: bool
    seconds: float | None = None
    fallback: str | None = None
    curve: list[dict[str, float]] = []
    # FaCe's terms of the fine-tuned backbone's test features (``full`` classification; None otherwise)
    ft_nc1: float | None = None
    ft_variance_collapse: float | None = None
    ft_class_fairness: float | None = None


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
    budget: dict[str, Any] | None = None,
) -> GroundTruth:
    """The model's accuracy on ``splits[1]`` (the held-out split) after training on ``splits[0]``, cached by model
    digest, dataset fingerprint, protocol, budget and splits. ``budget``: fields of :class:`facezoo.finetune.Budget`
    (``full`` only). Says what it does on standard error (:mod:`facezoo.progress`) and in the run's Prefect log."""
    data = datasets.load(dataset)
    model = spec.create()
    used, fallback = finetune.resolve_protocol(model, protocol, dense=data.task == "segmentation")
    if used == "full":
        settings = finetune.Budget(**(budget or {}))
        budget_record = settings.to_dict()
    else:
        settings = None
        budget_record = {"c_grid": list(finetune.C_GRID), "validation_fraction": 0.2, "max_iter": 1000, "seed": 0}
    budget_record |= {"weights": model.digest, "splits": list(splits)}
    key = finetune.budget_key(used, budget_record)
    results = ResultsStore(results_db)
    found = results.get_finetune(spec.name, data.fingerprint, used, key)
    figure = "mIoU" if data.task == "segmentation" else "accuracy"
    if found is not None:
        progress.stage(f"{spec.name}: {used} {figure} {found['accuracy']:.3f} on {splits[1]!r} (cached)")
        return GroundTruth(model=spec.name, protocol=used, accuracy=found["accuracy"],
                           mean_class_accuracy=found["mean_class_accuracy"], budget_key=key, cached=True,
                           seconds=found["seconds"], fallback=fallback,
                           **_collapse((found.get("budget") or {}).get("selected") or {}))
    logger = get_run_logger()

    def say(message: str) -> None:
        logger.info(message)
        progress.stage(message)

    if used == "full":
        result = finetune.full(model, data.subset(splits[0]), data.subset(splits[1]), settings,
                               device=extract_options.get("device", "auto"), log=say)
    else:
        store = FeatureStore(features_root)
        train, _ = stored_features(model, data, splits[0], store, **extract_options)
        test, _ = stored_features(model, data, splits[1], store, **extract_options)
        result = finetune.frozen_head(train.features, train.labels, test.features, test.labels)
    seconds = result.selected.get("seconds")
    say(f"{spec.name}: {used} {figure} {result.accuracy:.3f} on {splits[1]!r}"
        + (f" in {seconds:.0f} s" if seconds is not None else ""))
    results.write_finetune(
        model=spec.name, dataset=data.name, dataset_fingerprint=data.fingerprint, protocol=used, budget_key=key,
        accuracy=result.accuracy, mean_class_accuracy=result.mean_class_accuracy, seconds=seconds,
        budget={**budget_record, **result.budget, "selected": result.selected, "fallback": fallback},
        seed=result.budget.get("seed"), job_id=job_id,
    )
    return GroundTruth(model=spec.name, protocol=used, accuracy=result.accuracy,
                       mean_class_accuracy=result.mean_class_accuracy, budget_key=key, cached=False, seconds=seconds,
                       fallback=fallback, curve=result.curve, **_collapse(result.selected))


def _collapse(selected: dict[str, Any]) -> dict[str, float]:
    """``ft_<term>`` of a result's ``fine_tuned_collapse`` (:func:`facezoo.finetune.full`), if it has one."""
    return {f"ft_{k}": v for k, v in (selected.get("fine_tuned_collapse") or {}).items()}

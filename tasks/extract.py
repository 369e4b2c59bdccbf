"""Features for (model, dataset, split): read from the feature store when the cache key is there, else extract once
and store. Plain functions; the pipeline wraps them in Prefect tasks."""

from __future__ import annotations

from typing import Any

from facezoo import __version__
from facezoo.data.base import Dataset
from facezoo.extract import EXTRACTION_VERSION, extract
from facezoo.models.base import ModelAdapter
from storage.features import FeatureSet, FeatureStore, cache_key

__all__ = ["feature_key", "stored_features"]


def feature_key(
    model: ModelAdapter, dataset: Dataset, split: str, *, pixels_per_image: int = 1000, seed: int = 0
) -> str:
    """The cache key: everything that determines the stored features, and nothing that does not (names, paths)."""
    dense = {"pixels_per_image": pixels_per_image, "seed": seed} if dataset.task == "segmentation" else {}
    return cache_key(
        model_source=model.source, weights=model.digest, preprocessing=model.preprocessing,
        dataset=dataset.fingerprint, split=split, task=dataset.task, extraction=EXTRACTION_VERSION, **dense,
    )


def stored_features(
    model: ModelAdapter,
    dataset: Dataset,
    split: str,
    store: FeatureStore,
    **extract_options: Any,
) -> tuple[FeatureSet, bool]:
    """``(features, cache_hit)``: the stored extraction of ``split``, extracting (and storing) only on a miss.

    ``extract_options`` go to :func:`facezoo.extract.extract` (batch size, device, workers, pixels, seed, ...).
    """
    key = feature_key(model, dataset, split, pixels_per_image=extract_options.get("pixels_per_image", 1000),
                      seed=extract_options.get("seed", 0))
    found = store.get(model.name, dataset.name, split, key)
    if found is not None:
        return found, True
    out = extract(model, dataset.subset(split), **extract_options)
    metadata = {
        "model_source": model.source, "weights_digest": model.digest, "preprocessing": model.preprocessing,
        "dataset_fingerprint": dataset.fingerprint, "dataset_source": dataset.source, "task": dataset.task,
        "extraction_version": EXTRACTION_VERSION, "code_version": __version__,
        "extraction_seconds": out.seconds, "samples_per_second": out.samples_per_second,
    }
    stored = store.put(
        model.name, dataset.name, split, key, features=out.features, labels=out.labels, sample_ids=out.sample_ids,
        logits=out.logits, class_names=list(dataset.class_names), metadata=metadata,
    )
    return stored, False

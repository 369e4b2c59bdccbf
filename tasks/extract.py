"""Features for (model, dataset, split): read from the feature store when the cache key is there, else extract once
and store. ``stored_features`` does the work; ``extract_features`` is its Prefect task, which returns a reference to
the stored file, never arrays."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NONE
from pydantic import BaseModel

from facezoo import __version__, backends
from facezoo.config import Home
from facezoo.data.base import Dataset
from facezoo.extract import EXTRACTION_VERSION, extract, pick_device
from facezoo.models.base import ModelAdapter
from facezoo.models.zoo import ModelSpec
from storage.features import FeatureSet, FeatureStore, cache_key
from tasks import datasets
from tasks._prefect import task, transient

__all__ = ["FeatureRef", "extract_features", "feature_key", "stored_features"]


def feature_key(
    model: ModelAdapter, dataset: Dataset, split: str, *, backend: str, pixels_per_image: int = 1000, seed: int = 0
) -> str:
    """The cache key: everything that determines the stored features, and nothing that does not (names, paths).

    ``backend`` is the one that runs the model (:func:`facezoo.backends.choose`): features of different backends
    agree to 1e-4 of their scale, not bit for bit, so they are never mixed silently.
    """
    dense = {"pixels_per_image": pixels_per_image, "seed": seed} if dataset.task == "segmentation" else {}
    return cache_key(
        model_source=model.source, weights=model.digest, preprocessing=model.preprocessing,
        dataset=dataset.fingerprint, split=split, task=dataset.task, extraction=EXTRACTION_VERSION, backend=backend,
        **dense,
    )


def stored_features(
    model: ModelAdapter,
    dataset: Dataset,
    split: str,
    store: FeatureStore,
    **extract_options: Any,
) -> tuple[FeatureSet, bool]:
    """``(features, cache_hit)``: the stored extraction of ``split``, extracting (and storing) only on a miss.

    ``extract_options`` go to :func:`facezoo.extract.extract` (batch size, device, backend, workers, pixels, seed,
    ...); ``export_dir`` defaults to the home's ``onnx/`` folder, where exports and equality verdicts are cached.
    """
    options = {"export_dir": str(Home.resolve().onnx), **extract_options}
    backend = backends.choose(model, pick_device(options.get("device", "auto")), options.get("backend", "auto"),
                              dense=dataset.task == "segmentation", export_dir=options["export_dir"])
    keyed = {"pixels_per_image": options.get("pixels_per_image", 1000), "seed": options.get("seed", 0)}
    key = feature_key(model, dataset, split, backend=backend, **keyed)
    found = store.get(model.name, dataset.name, split, key)
    if found is not None:
        return found, True
    out = extract(model, dataset.subset(split), **{**options, "backend": backend})
    if out.backend != backend:  # rejected by its equality check on this first run: stored as what ran
        key = feature_key(model, dataset, split, backend=out.backend, **keyed)
    metadata = {
        "model_source": model.source, "weights_digest": model.digest, "preprocessing": model.preprocessing,
        "dataset_fingerprint": dataset.fingerprint, "dataset_source": dataset.source, "task": dataset.task,
        "extraction_version": EXTRACTION_VERSION, "code_version": __version__, "backend": out.backend,
        "extraction_seconds": out.seconds, "samples_per_second": out.samples_per_second,
    }
    stored = store.put(
        model.name, dataset.name, split, key, features=out.features, labels=out.labels, sample_ids=out.sample_ids,
        logits=out.logits, class_names=list(dataset.class_names), metadata=metadata,
    )
    return stored, False


class FeatureRef(BaseModel):
    """Where a model's stored features are, and what the results store and MLflow record about them."""

    model: str
    source: str
    digest: str
    modality: str
    dim: int
    num_logits: int | None
    preprocessing: dict[str, Any]
    dataset: str
    split: str
    cache_key: str
    backend: str
    path: str
    cache_hit: bool
    n: int
    extraction_seconds: float


@task(name="extract-features", task_run_name="extract {spec.name}", retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient, cache_policy=NONE)
def extract_features(
    spec: ModelSpec, dataset: datasets.DatasetRef, split: str, features_root: str, extract_options: dict[str, Any]
) -> FeatureRef:
    """Build the model, then read or extract its features of ``split`` (one model per task: failures stay local)."""
    model = spec.create()
    stored, hit = stored_features(model, datasets.load(dataset), split, FeatureStore(features_root), **extract_options)
    return FeatureRef(
        model=model.name, source=model.source, digest=model.digest, modality=model.modality, dim=model.dim,
        num_logits=model.num_logits, preprocessing=model.preprocessing, dataset=dataset.name, split=split,
        cache_key=stored.metadata["cache_key"], backend=stored.metadata["backend"], path=str(stored.path),
        cache_hit=hit, n=len(stored.labels),
        extraction_seconds=0.0 if hit else float(stored.metadata["extraction_seconds"]),
    )

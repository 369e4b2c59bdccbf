"""Datasets by reference: a small, serialisable description that any task (or worker process) can load again."""

from __future__ import annotations

import json
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from facezoo.data import Dataset, load_dataset

__all__ = ["DatasetRef", "load", "load_source"]

_loaded: dict[tuple[str, str | None, str], Dataset] = {}
_lock = threading.Lock()


class DatasetRef(BaseModel):
    """How to load a dataset: its source (``builtin:animal-mnist``, ``folder:/data/x``, ...), name and options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    options: dict[str, Any] = Field(default_factory=dict)
    max_samples: int | None = None  # a deterministic stratified sample of the dataset (Dataset.sample)


def _cached(source: str, name: str | None, options: dict[str, Any]) -> Dataset:
    key = (source, name, json.dumps(options, sort_keys=True))
    with _lock:  # tasks run in threads: load (and fingerprint every file) once per process
        if key not in _loaded:
            dataset = load_dataset(source, name=name, **options)
            _loaded[key] = _loaded[(source, dataset.name, key[2])] = dataset
        return _loaded[key]


def load_source(source: str, options: dict[str, Any] | None = None) -> Dataset:
    """The dataset of a source under its default name (cached, so a :class:`DatasetRef` to it loads nothing)."""
    return _cached(source, None, options or {})


def load(ref: DatasetRef) -> Dataset:
    """The dataset of ``ref``, loaded once per process."""
    dataset = _cached(ref.source, ref.name, ref.options)
    return dataset if ref.max_samples is None else dataset.sample(ref.max_samples)

"""Datasets by reference: a small, serialisable description that any task (or worker process) can load again."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from facezoo.data import Dataset, load_dataset
from facezoo.errors import FaceZooError

if TYPE_CHECKING:
    from storage.results import ResultsStore

__all__ = ["HELD_OUT_SPLITS", "DatasetRef", "eval_split", "load", "load_source", "registered"]

# the held-out split validation scores on when none is named, in this order of preference
HELD_OUT_SPLITS = ("test", "val", "validation", "valid", "dev")

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


def registered(results: ResultsStore, name: str) -> dict[str, Any]:
    """The latest registered version of ``name`` in ``results``.

    Raises:
        FaceZooError: one line naming the unknown dataset and listing the registered ones.
    """
    row = results.get_dataset(name)
    if row is None:
        known = [d["name"] for d in results.list_datasets()]
        listed = (f"registered: {', '.join(known[:20])}{f' and {len(known) - 20} more' if len(known) > 20 else ''}"
                  if known else "none is registered in this home yet")
        raise FaceZooError(f"unknown dataset {name!r} ({listed}); onboard it (facezoo onboard PATH --name {name}) "
                           "or pass a source such as builtin:animal-mnist")
    return row


def eval_split(dataset: Dataset, requested: str | None = None, train_split: str = "train") -> str:
    """The split validation scores on: ``requested``, or the first of :data:`HELD_OUT_SPLITS` the dataset has.

    Raises:
        FaceZooError: one line, when the requested split does not exist, is the training split, or the dataset has
            no held-out split at all.
    """
    splits = dataset.split_names
    if requested is not None:
        if requested not in splits:
            raise FaceZooError(f"dataset {dataset.name!r} has no split {requested!r} (--eval-split); "
                               f"it has {', '.join(splits)}")
        if requested == train_split:
            raise FaceZooError(f"--eval-split {requested!r} is the training split; name a held-out one "
                               f"(dataset {dataset.name!r} has {', '.join(splits)})")
        return requested
    for split in HELD_OUT_SPLITS:
        if split in splits and split != train_split:
            return split
    raise FaceZooError(f"dataset {dataset.name!r} has no held-out split ({', '.join(HELD_OUT_SPLITS)}): it has "
                       f"{', '.join(splits)}; name one with --eval-split")

"""The last step of every adapter: validate names, labels and ids, make the split if there is none, fingerprint."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facezoo.data.base import Dataset, Fingerprint, stratified_split
from facezoo.errors import FaceZooError

__all__ = ["check_name", "assemble"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: Any, what: str = "dataset name", fix: str = "pass name=... to choose another") -> str:
    """``name`` if it is safe in paths, SQL and hive partitions (``split=…``), else a :class:`FaceZooError` that
    ends with ``fix``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise FaceZooError(
            f"{what} {name!r} is not allowed: use 1-100 letters, digits, '-', '_' or '.' (starting with a letter or "
            f"digit; no '/', '..', spaces or quotes); {fix}"
        )
    return name


def assemble(
    *,
    name: str,
    task: str,
    refs: Sequence[Any],
    labels: np.ndarray,
    class_names: Sequence[str],
    sample_ids: Sequence[str],
    content: Fingerprint,
    loader: Callable[[Any], Any],
    source: str,
    splits: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    ignore_index: int | None = None,
) -> Dataset:
    """Build the :class:`Dataset` once an adapter has read its samples.

    Args:
        labels: ``(N,)`` codes ``0..K-1`` (``-1`` for segmentation).
        content: fingerprint already fed with every sample's content (bytes or text, in sample order).
        splits: the data's own split per sample, or ``None`` for a stratified ``test_fraction`` split seeded by
            the content fingerprint (so it depends on the data only).

    The final fingerprint covers the content, labels, class names, sample ids, split spec and splits.
    """
    check_name(name)
    labels = np.asarray(labels, dtype=np.int64)
    class_names = tuple(class_names)
    sample_ids = np.asarray(sample_ids, dtype=str)
    if len(refs) == 0:
        raise FaceZooError(f"{source}: no samples found; check the path and the expected layout")
    if task == "segmentation":
        if len(class_names) < 2:
            raise FaceZooError(f"{source}: {len(class_names)} class(es); segmentation needs at least 2")
    elif len(np.unique(labels)) < 2:
        raise FaceZooError(
            f"{source}: every sample has the class {class_names[labels[0]]!r}; a transferability score needs at "
            "least 2 classes"
        )
    if len(set(sample_ids.tolist())) != len(sample_ids):
        raise FaceZooError(f"{source}: sample ids are not unique; give every sample its own file or row")
    content_digest = content.hexdigest()
    if splits is None:
        split_spec = f"stratified:{test_fraction:g}"
        split_array = stratified_split(sample_ids, labels, test_fraction, seed=content_digest)
    else:
        split_spec = "given"
        for split in sorted(set(splits)):
            check_name(split, what=f"{source}: split name", fix="rename the split")
        split_array = np.asarray(splits, dtype=str)
    fingerprint = Fingerprint("dataset").update(
        task, content_digest, labels, "\n".join(class_names), "\n".join(sample_ids.tolist()), split_spec,
        "\n".join(split_array.tolist()), str(ignore_index),
    )
    return Dataset(
        name=name, task=task, refs=list(refs), labels=labels, class_names=class_names, splits=split_array,
        sample_ids=sample_ids, fingerprint=fingerprint.hexdigest(), loader=loader, source=source,
        split_spec=split_spec, ignore_index=ignore_index,
    )

"""The common shape of every dataset: samples, labels, class names, splits, stable ids and a content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from facezoo.errors import FaceZooError

__all__ = ["Dataset", "TASKS", "Fingerprint", "stratified_split", "encode_labels"]

TASKS = ("image", "text", "segmentation")


class Fingerprint:
    """Incremental SHA-256 over the parts that define a dataset (content, labels, split spec).

    Feed it bytes in a deterministic order (e.g. sorted relative paths followed by file bytes); ``hexdigest()``
    is the dataset's stable identity: the same content gives the same fingerprint on any machine.
    """

    def __init__(self, kind: str):
        self._h = hashlib.sha256(kind.encode())

    def update(self, *parts: bytes | str | np.ndarray) -> "Fingerprint":
        for part in parts:
            if isinstance(part, np.ndarray):
                part = np.ascontiguousarray(part)
                self._h.update(f"{part.dtype.str}{part.shape}".encode())
                part = part.tobytes()
            elif isinstance(part, str):
                part = part.encode()
            self._h.update(len(part).to_bytes(8, "little"))
            self._h.update(part)
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]


def stratified_split(
    sample_ids: np.ndarray, labels: np.ndarray, test_fraction: float = 0.2, seed: str = ""
) -> np.ndarray:
    """A deterministic stratified train/test assignment ``(N,)`` of ``"train"``/``"test"``.

    Within each class, samples are ordered by a hash of ``seed + sample_id`` and the first
    ``round(test_fraction · n_k)`` (at least 1 when the class has 2 or more samples, never all of them) go to test.
    The assignment depends on the content only, not on the order of the samples.
    """
    if not 0.0 < test_fraction < 1.0:
        raise FaceZooError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    keys = np.array([hashlib.sha256(f"{seed}/{sid}".encode()).hexdigest() for sid in sample_ids])
    out = np.full(len(labels), "train", dtype=object)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        idx = idx[np.argsort(keys[idx], kind="stable")]
        n_test = min(max(int(round(test_fraction * len(idx))), 1 if len(idx) >= 2 else 0), len(idx) - 1)
        out[idx[:n_test]] = "test"
    return out.astype(str)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset.

    Attributes:
        name: short name (used in paths and tables; validated by the results store, never trusted in SQL/paths).
        task: ``"image"``, ``"text"`` or ``"segmentation"``.
        refs: one reference per sample that ``loader`` understands (a path, an index into an array, a string).
        labels: ``(N,)`` int64 class codes ``0..K-1`` for classification; for segmentation ``-1`` (the labels are
            per pixel, in the masks).
        class_names: the K class names, index = code.
        splits: ``(N,)`` split name per sample (``"train"``, ``"test"``, ...): the dataset's own, or a
            deterministic stratified 80/20 split (``split_spec`` says which).
        sample_ids: ``(N,)`` unique, stable string ids (relative path, row number, ...).
        fingerprint: content hash of data + labels + split spec (:class:`Fingerprint`).
        loader: ``loader(ref)`` returns a PIL image (image), a ``str`` (text) or ``(PIL image, (H, W) int64 mask)``
            (segmentation).
        source: where it came from, for humans (a path, ``builtin:mnist-5k``).
        split_spec: how ``splits`` was made (``"given"`` or ``"stratified:0.2"``).
        ignore_index: segmentation mask value to ignore (e.g. 255), else ``None``.
    """

    name: str
    task: str
    refs: Sequence[Any]
    labels: np.ndarray
    class_names: tuple[str, ...]
    splits: np.ndarray
    sample_ids: np.ndarray
    fingerprint: str
    loader: Callable[[Any], Any] = field(repr=False)
    source: str = ""
    split_spec: str = "given"
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        n = len(self.refs)
        if self.task not in TASKS:
            raise FaceZooError(f"dataset {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        for attr in ("labels", "splits", "sample_ids"):
            if len(getattr(self, attr)) != n:
                raise FaceZooError(f"dataset {self.name!r}: {attr} has {len(getattr(self, attr))} rows, refs has {n}")

    def __len__(self) -> int:
        return len(self.refs)

    def load(self, i: int) -> Any:
        """Sample ``i`` as the model adapters expect it (see ``loader``)."""
        return self.loader(self.refs[i])

    @property
    def split_names(self) -> list[str]:
        return sorted(set(self.splits.tolist()))

    def subset(self, split: str) -> "Dataset":
        """The samples of one split (same class list; fingerprint extended by the split name)."""
        mask = self.splits == split
        if not mask.any():
            raise FaceZooError(f"dataset {self.name!r} has no split {split!r}; it has {', '.join(self.split_names)}")
        return self.take(np.flatnonzero(mask), Fingerprint("split").update(self.fingerprint, split).hexdigest())

    def sample(self, max_samples: int) -> "Dataset":
        """At most ``max_samples`` samples, every class and split in proportion (at least 2 per class when it has
        them), chosen by a hash of their ids: deterministic, and the same whatever the order of the samples."""
        if max_samples >= len(self):
            return self
        if max_samples < 2:
            raise FaceZooError(f"max_samples must be at least 2, got {max_samples}")
        keys = np.array([hashlib.sha256(f"{self.fingerprint}/{sid}".encode()).hexdigest() for sid in self.sample_ids])
        groups = self.labels.astype(str).astype(object) + "|" + self.splits.astype(object)
        names = sorted(set(groups.tolist()))
        sizes = np.array([np.sum(groups == g) for g in names])
        # largest-remainder quotas: exactly max_samples in all, unless the 2-per-group floor needs more
        exact = max_samples * sizes / len(self)
        quota = np.floor(exact).astype(int)
        quota[np.argsort(-(exact - quota), kind="stable")[: max_samples - quota.sum()]] += 1
        quota = np.minimum(sizes, np.maximum(quota, 2))
        chosen = [np.flatnonzero(groups == g)[np.argsort(keys[groups == g], kind="stable")[:q]]
                  for g, q in zip(names, quota, strict=True)]
        return self.take(np.sort(np.concatenate(chosen)))

    def take(self, indices: Sequence[int], fingerprint: str | None = None) -> "Dataset":
        """The samples at ``indices`` (same class list); the fingerprint covers the chosen sample ids."""
        idx = np.asarray(indices, dtype=np.int64)
        if fingerprint is None:
            fingerprint = Fingerprint("take").update(self.fingerprint, "\n".join(self.sample_ids[idx])).hexdigest()
        return replace(self, refs=[self.refs[i] for i in idx], labels=self.labels[idx], splits=self.splits[idx],
                       sample_ids=self.sample_ids[idx], fingerprint=fingerprint)

    def describe(self) -> dict[str, Any]:
        """Counts for humans and the results store: sizes per split and class."""
        counts = {name: int(c) for name, c in zip(self.class_names, np.bincount(
            self.labels[self.labels >= 0], minlength=len(self.class_names)), strict=True)}
        return {
            "name": self.name, "task": self.task, "source": self.source, "fingerprint": self.fingerprint,
            "n_samples": len(self), "n_classes": len(self.class_names), "splits": {
                s: int((self.splits == s).sum()) for s in self.split_names}, "class_counts": counts,
        }


def encode_labels(raw: Iterable[Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map raw label values to codes ``0..K-1``: ``(codes, class_names)``, classes in numeric order when every
    label is an integer, else in string order."""
    raw = [str(v).strip() for v in raw]
    distinct = set(raw)
    try:
        names = tuple(sorted(distinct, key=int))
    except ValueError:
        names = tuple(sorted(distinct))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in raw], dtype=np.int64), names

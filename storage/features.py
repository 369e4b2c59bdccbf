"""The feature store: extracted features as Parquet, content-addressed, written atomically, read without copies.

Layout (hive partitions, so DuckDB and pyarrow datasets see ``model``, ``dataset`` and ``split`` as columns)::

    <root>/model=<model>/dataset=<dataset>/split=<split>/<cache key>.parquet      features, labels, ids, logits
    <root>/model=<model>/dataset=<dataset>/split=<split>/<cache key>.stats.npz    the metrics' sufficient statistics

A file is one (model, dataset, split) extraction. Its name is the cache key: a hash of the model (source, weights
digest, preprocessing), the dataset fingerprint, the split, the extraction settings and the code version, so a second
request for the same key reads, and anything that changes the features gets a new key. Columns: ``sample_id``
string, ``label`` int64, ``feature`` ``fixed_size_list<float32>[D]``, optional ``logits``
``fixed_size_list<float32>[C]``; zstd with byte-stream-split on the float values; one row group, so the read-back
array is a view of Arrow's buffer. The key-value metadata ``facezoo`` holds JSON: cache key, model, dataset
fingerprint, class names, code version, created-at.

Writes go to a hidden temporary file in the same folder, are flushed to disk and renamed over the final name: a
reader sees a complete file or none. The statistics are renamed into place before the Parquet file, which is the
commit point; a run killed in between leaves statistics without features, which the next run overwrites. Temporary
files carry their writer's pid: the next write in the folder deletes those whose process is gone. A feature file that
still cannot be read (a disk fault, a copy cut short) is a cache miss: it is renamed aside to ``*.corrupt`` and the
features are extracted again. A full disk is one error that says so, never a retried write.

``root`` may also be a URL (``s3://bucket/features``, any filesystem pyarrow or fsspec opens; :mod:`storage.objectstore`):
the same layout, keys and commit order, each object published whole by one move from a temporary key, and paths
are then URLs. Temporary keys of killed writers are not swept there (their pid may be on another machine).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facezoo.data import check_name
from facezoo.errors import FaceZooError, first_line
from facezoo.metrics.stats import FeatureStats, single_sample_classes
from storage._process import process_alive
from storage.objectstore import ObjectStore, is_url

__all__ = ["FeatureSet", "FeatureStore", "cache_key"]

_META_KEY = b"facezoo"
_log = logging.getLogger("facezoo")


def cache_key(**parts: Any) -> str:
    """SHA-256 (first 32 hex digits) of the canonical JSON of everything that determines the features."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class FeatureSet:
    """One stored extraction: ``features`` (N, D) float32, ``labels`` (N,) int64, ``sample_ids`` (N,),
    ``logits`` (N, C) float32 or None, ``metadata`` (the JSON of the file), ``path``, and the stored statistics."""

    features: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    logits: np.ndarray | None
    metadata: dict[str, Any]
    path: Path | str  # a URL when the store is one
    stats_state: dict[str, np.ndarray] | None = None

    @property
    def class_names(self) -> list[str]:
        return self.metadata["class_names"]

    def scorable(self) -> tuple["FeatureSet", list[str]]:
        """``(these features without the classes that have a single sample, those classes' names)``: a class with one
        sample has no within-class spread, so no metric can score it (a long tail, e.g. Reuters-R52, has such
        classes); the rest of the set still ranks the models. The set itself when every class has two or more."""
        single = single_sample_classes(self.labels)
        if not len(single):
            return self, []
        keep = ~np.isin(self.labels, single)
        names = self.class_names
        return replace(self, features=self.features[keep], labels=self.labels[keep], sample_ids=self.sample_ids[keep],
                       logits=None if self.logits is None else self.logits[keep], stats_state=None), [
            names[k] if 0 <= k < len(names) else str(k) for k in single.tolist()]

    def stats(self) -> FeatureStats:
        """The metrics' statistics: from the stored ones (no pass over the features) when present."""
        return FeatureStats(self.features, self.labels, state=self.stats_state, gram=self.stats_state is None)


def _fixed_size_list(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _to_matrix(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)  # one row group: no copy
    width = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=True).reshape(-1, width)


def _atomic_write(path: Path, write: Any) -> None:
    """Run ``write(tmp_path)`` on a hidden temporary file beside ``path``, fsync it, rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            free = shutil.disk_usage(path.parent).free / 2**20
            raise FaceZooError(f"no space left on the device writing {path} ({free:.0f} MiB free); free some space "
                               "or move the home folder, then re-run: finished models are cached") from None
        raise


def _sweep_temporary_files(folder: Path) -> None:
    """Delete the temporary files that writers killed mid-write left in ``folder`` (their pid is gone)."""
    for tmp in folder.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 3)[-3] if tmp.name.count(".") >= 4 else ""
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


class FeatureStore:
    """Parquet feature files under ``root`` (usually ``<FACEZOO_HOME>/features``)."""

    def __init__(self, root: str | Path):
        self.remote = ObjectStore(str(root)) if is_url(root) else None
        self.root: Path | str = Path(root) if self.remote is None else str(root).rstrip("/")

    def folder(self, model: str, dataset: str, split: str) -> Path | str:
        parts = (("model", model), ("dataset", dataset), ("split", split))
        names = [f"{k}={check_name(value, f'{k} name', 'rename it')}" for k, value in parts]
        return self.root.joinpath(*names) if self.remote is None else "/".join([self.root, *names])

    def path(self, model: str, dataset: str, split: str, key: str) -> Path | str:
        if not re.fullmatch(r"[0-9a-f]{32}", key):
            raise FaceZooError(f"cache key {key!r} is not a 32-digit hex digest")
        folder = self.folder(model, dataset, split)
        return folder / f"{key}.parquet" if self.remote is None else f"{folder}/{key}.parquet"

    def has(self, model: str, dataset: str, split: str, key: str) -> bool:
        path = self.path(model, dataset, split, key)
        return path.is_file() if self.remote is None else self.remote.exists(path)

    def put(
        self,
        model: str,
        dataset: str,
        split: str,
        key: str,
        *,
        features: np.ndarray,
        labels: np.ndarray,
        sample_ids: np.ndarray,
        logits: np.ndarray | None,
        class_names: list[str],
        metadata: dict[str, Any],
    ) -> FeatureSet:
        """Store one extraction (and its statistics) atomically; returns what a later :meth:`get` returns."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        n = len(features)
        if not (len(labels) == len(sample_ids) == n) or (logits is not None and len(logits) != n):
            raise FaceZooError(f"feature set {model}/{dataset}/{split}: features, labels, ids, logits differ in length")
        if not np.isfinite(features).all():
            row, column = np.argwhere(~np.isfinite(features))[0]
            raise FaceZooError(f"feature set {model}/{dataset}/{split}: the model produced NaN or inf features (first "
                               f"at sample {np.asarray(sample_ids)[row]!s}, row {row}, column {column}); nothing "
                               "stored")
        path = self.path(model, dataset, split, key)
        if self.remote is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _sweep_temporary_files(path.parent)
        meta = {
            **metadata, "cache_key": key, "model": model, "dataset": dataset, "split": split,
            "class_names": list(class_names), "n": n, "dim": int(features.shape[1]),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        columns = {
            "sample_id": pa.array(np.asarray(sample_ids, dtype=str)),
            "label": pa.array(np.asarray(labels, dtype=np.int64)),
            "feature": _fixed_size_list(features),
        }
        if logits is not None:
            columns["logits"] = _fixed_size_list(logits)
        table = pa.table(columns).replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        stats = None
        publish = _atomic_write if self.remote is None else self.remote.write_atomic
        # the metrics' statistics need two classes of 2+ samples; scoring reports the first and drops a class with a
        # single sample (FeatureSet.scorable), so statistics stored here would never be read
        if len(np.unique(labels)) >= 2 and not len(single_sample_classes(labels)):
            stats = FeatureStats(features, labels, gram=True).state()
            publish(_stats_path(path), lambda out: _save_npz(out, stats))
        float_columns = [c for c in ("feature.list.element", "logits.list.element") if c.split(".")[0] in columns]
        publish(path, lambda out: pq.write_table(
            table, out, compression="zstd", use_dictionary=["sample_id"], use_byte_stream_split=float_columns,
            row_group_size=max(1, n), write_statistics=["sample_id", "label"],
        ))
        return FeatureSet(features, np.asarray(labels, dtype=np.int64), np.asarray(sample_ids, dtype=str),
                          None if logits is None else np.asarray(logits, dtype=np.float32), meta, path, stats)

    def get(self, model: str, dataset: str, split: str, key: str) -> FeatureSet | None:
        """The stored extraction for ``key``, or ``None`` (a cache miss; an unreadable file is moved aside)."""
        path = self.path(model, dataset, split, key)
        if not self.has(model, dataset, split, key):
            return None
        try:
            return self.read(path)
        except FaceZooError as error:
            for damaged in (path, _stats_path(path)):
                if self.remote is not None:
                    if self.remote.exists(damaged):
                        self.remote.move(damaged, f"{damaged}.corrupt")
                elif damaged.exists():
                    os.replace(damaged, damaged.with_name(damaged.name + ".corrupt"))
            _log.warning("%s; moved aside to *.corrupt, extracting again", error)
            return None

    def read(self, path: str | Path) -> FeatureSet:
        """Read one feature file (and its statistics when present)."""
        remote = ObjectStore(str(path)) if is_url(path) else None
        path = Path(path) if remote is None else str(path)
        stem = Path(path).stem if remote is None else path.rpartition("/")[2].removesuffix(".parquet")
        for attempt in range(1 if remote is None else 3):
            try:
                # an object is read whole (its size, then its bytes): replaced in between, by a writer of the same
                # key, the bytes fail to parse, and the next attempt reads the new version whole
                table = pq.read_table(path if remote is None else pa.BufferReader(remote.read_bytes(path)))
                meta = json.loads(table.schema.metadata[_META_KEY])
                break
            except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as error:
                if remote is None or attempt == 2:
                    raise FaceZooError(f"{path}: unreadable feature file ({first_line(error)})") from None
        if meta.get("cache_key") != stem:
            raise FaceZooError(f"{path}: its metadata says cache key {meta.get('cache_key')!r}, not {stem!r}")
        stats_path = _stats_path(path)
        stats = None
        if stats_path.is_file() if remote is None else remote.exists(stats_path):
            try:
                source = stats_path if remote is None else io.BytesIO(remote.read_bytes(stats_path))
                with np.load(source, allow_pickle=False) as saved:
                    stats = {k: saved[k] for k in saved.files}
            except (OSError, ValueError, zipfile.BadZipFile) as error:  # a cache of the features: recomputed
                _log.warning("%s: unreadable statistics (%s); they are recomputed from the features", stats_path, error)
        return FeatureSet(
            features=_to_matrix(table.column("feature")),
            labels=table.column("label").to_numpy(),
            sample_ids=np.asarray(table.column("sample_id").to_pylist(), dtype=str),
            logits=_to_matrix(table.column("logits")) if "logits" in table.column_names else None,
            metadata=meta,
            path=path,
            stats_state=stats,
        )

    def entries(self) -> Iterator[dict[str, Any]]:
        """Metadata of every stored feature file (without reading the features)."""
        if self.remote is None:
            paths = sorted(self.root.glob("model=*/dataset=*/split=*/*.parquet"))
        else:
            paths = [url for url in self.remote.list(self.root) if _PUBLISHED.search(url)]
        for path in paths:
            meta = pq.read_schema(path if self.remote is None else self.remote.open(path)).metadata or {}
            if _META_KEY in meta:
                yield {**json.loads(meta[_META_KEY]), "path": str(path)}


_PUBLISHED = re.compile(r"/model=[^/]+/dataset=[^/]+/split=[^/]+/[0-9a-f]{32}\.parquet$")


def _stats_path(path: Path | str) -> Path | str:
    return path.with_suffix(".stats.npz") if isinstance(path, Path) else path.removesuffix(".parquet") + ".stats.npz"


def _save_npz(out: str | Any, arrays: dict[str, np.ndarray]) -> None:
    """Into a file name or a writable stream (np.savez would append ".npz" to a name; an object store's stream
    cannot seek, which the zip writer needs, so that goes through memory)."""
    if isinstance(out, str):
        with open(out, "wb") as f:
            np.savez(f, **arrays)
        return
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    out.write(buffer.getbuffer())

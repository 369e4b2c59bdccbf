"""Hugging Face ``datasets`` folders written by ``save_to_disk``, read with pyarrow alone (no ``datasets`` import).

A Dataset folder holds ``dataset_info.json`` (features, e.g. ClassLabel names), ``state.json`` (``_data_files``: the
``data-XXXXX-of-YYYYY.arrow`` shards in order) and the shards in Arrow IPC *stream* format. A DatasetDict folder
holds ``dataset_dict.json`` (``{"splits": [...]}``) and one such folder per split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from facezoo.data._assemble import check_name
from facezoo.data.base import Dataset, encode_labels
from facezoo.data.text import from_texts
from facezoo.errors import FaceZooError

__all__ = ["load_hf_disk"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FaceZooError(f"{path}: cannot read the JSON file ({e})") from None
    if not isinstance(value, dict):
        raise FaceZooError(f"{path}: expected a JSON object")
    return value


def _shards(folder: Path) -> list[Path]:
    """The Arrow shards in ``state.json`` order; names are checked to be plain files of ``folder``."""
    entries = _read_json(folder / "state.json").get("_data_files")
    if not isinstance(entries, list) or not entries:
        raise FaceZooError(f"{folder / 'state.json'}: no '_data_files' list; is this a save_to_disk folder?")
    out = []
    for entry in entries:
        filename = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(filename, str) or Path(filename).name != filename or filename.startswith("."):
            raise FaceZooError(f"{folder / 'state.json'}: bad data file entry {entry!r}; expected a plain file name")
        out.append(folder / filename)
    return out


def _read_split(folder: Path, columns: Sequence[str]) -> pa.Table:
    """The listed columns of every shard of one split, concatenated."""
    tables = []
    for shard in _shards(folder):
        try:
            with pa.memory_map(str(shard)) as source:
                table = pa.ipc.open_stream(source).read_all()
        except (OSError, pa.ArrowException) as e:
            raise FaceZooError(f"{shard}: not an Arrow IPC stream ({e})") from None
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise FaceZooError(
                f"{shard}: no column {missing[0]!r}; the columns are {', '.join(map(repr, table.column_names))}"
            )
        tables.append(table.select(list(columns)))
    return pa.concat_tables(tables)


def _class_label_names(folder: Path, label_column: str) -> list[str] | None:
    """The ClassLabel names of ``label_column`` in ``dataset_info.json``, or ``None`` (no file, plain values)."""
    info_path = folder / "dataset_info.json"
    if not info_path.is_file():
        return None
    feature = (_read_json(info_path).get("features") or {}).get(label_column)
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return [str(n) for n in feature["names"]]
    return None


def load_hf_disk(
    path: str | Path,
    *,
    name: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    splits: Sequence[str] | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """A text classification set saved with ``datasets``' ``save_to_disk``.

    Args:
        splits: for a DatasetDict, the splits to load (default all; leave out unlabelled ones such as GLUE's test).
            A DatasetDict's splits are given; a single Dataset gets a stratified split.

    Labels: ClassLabel codes with their names when ``dataset_info.json`` declares them (code ``-1``, "no label", is
    an error), else the raw values encoded like any other adapter. Sample ids are ``<split>/<row>`` or ``<row>``.
    """
    root = Path(path)
    if (root / "dataset_dict.json").is_file():
        available = _read_json(root / "dataset_dict.json").get("splits")
        if not isinstance(available, list):
            raise FaceZooError(f"{root / 'dataset_dict.json'}: no 'splits' list of names")
        for split in available:  # they name sub-folders: no '..' or '/'
            check_name(split, what=f"{root / 'dataset_dict.json'}: split name", fix="rename the split")
        splits = [splits] if isinstance(splits, str) else splits
        unknown = sorted(set(splits or ()) - set(available))
        if unknown:
            raise FaceZooError(f"{root}: no split {', '.join(map(repr, unknown))}; it has {', '.join(available)}")
        parts: list[tuple[str | None, Path]] = [(s, root / s) for s in available if splits is None or s in splits]
    elif (root / "state.json").is_file():
        parts = [(None, root)]
    else:
        raise FaceZooError(f"{root}: not a save_to_disk folder (no dataset_dict.json or state.json)")
    if not parts:
        raise FaceZooError(f"{root}: splits=[] selects nothing; name at least one split")
    names = {split: _class_label_names(folder, label_column) for split, folder in parts}
    class_names = next(iter(names.values()))
    if any(n != class_names for n in names.values()):
        raise FaceZooError(f"{root}: the splits declare different ClassLabel names for {label_column!r}")
    texts, raw_labels, ids, split_of = [], [], [], []
    for split, folder in parts:
        table = _read_split(folder, [text_column, label_column])
        prefix = "" if split is None else f"{split}/"
        column_texts, column_labels = (table.column(c).to_pylist() for c in (text_column, label_column))
        for row, (text, label) in enumerate(zip(column_texts, column_labels, strict=True)):
            where = f"{folder}: row {row}"
            if not isinstance(text, str) or not text.strip():
                raise FaceZooError(f"{where}: no text in column {text_column!r}; drop the row before saving")
            is_code = isinstance(label, int) and 0 <= label < len(class_names or ())
            if label is None or (class_names is not None and not is_code):
                raise FaceZooError(
                    f"{where}: label {label!r} is not a class of {label_column!r}; load only labelled splits "
                    "(splits=[...]) or drop unlabelled rows"
                )
            texts.append(text)
            raw_labels.append(label)
            ids.append(f"{prefix}{row}")
            split_of.append(split)
    if class_names is None:
        codes, class_names = encode_labels(raw_labels)
    else:
        codes = raw_labels
    return from_texts(
        texts, codes, class_names, ids, name=name or root.resolve().name, kind="hf-disk", source=f"hf-disk:{root}",
        splits=None if parts[0][0] is None else split_of, test_fraction=test_fraction,
    )

"""Tables (CSV, TSV, Parquet) with a label column and either a text column or an image-path column."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facezoo.data.base import Dataset, encode_labels
from facezoo.data.images import from_image_files
from facezoo.data.text import from_texts
from facezoo.errors import FaceZooError, first_line

__all__ = ["read_table_columns", "load_table"]

_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET = (".parquet", ".pq")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")  # pandas decompresses these by name


def _format(path: Path) -> str:
    """The table's extension (``.csv``, ``.tsv``, ``.tab``, ``.parquet``, ``.pq``), compression suffix removed."""
    name = path.name.lower()
    for suffix in _COMPRESSION:
        name = name.removesuffix(suffix)
    ext = Path(name).suffix
    if ext not in _SEPARATORS and ext not in _PARQUET:
        raise FaceZooError(f"{path}: unknown table format; use .csv, .tsv or .parquet (CSV/TSV may be .gz/.bz2/.xz)")
    return ext


def read_table_columns(path: str | Path, columns: dict[str, str]) -> dict[str, list[Any]]:
    """The listed columns of a CSV/TSV (read as UTF-8 strings) or Parquet file, as Python lists.

    Args:
        columns: ``{option name: column name}``; the option name goes into the error when the column is missing.
    """
    path = Path(path)
    ext = _format(path)
    wanted = list(dict.fromkeys(columns.values()))
    try:
        if ext in _PARQUET:
            _check_columns(path, columns, pq.read_schema(path).names)
            table = pq.read_table(path, columns=wanted)
            return {c: table.column(c).to_pylist() for c in wanted}
        # TSV has no quoting (IANA text/tab-separated-values): a quote is part of the text
        quoting = csv.QUOTE_NONE if _SEPARATORS[ext] == "\t" else csv.QUOTE_MINIMAL
        frame = pd.read_csv(
            path, sep=_SEPARATORS[ext], quoting=quoting, dtype=str, keep_default_na=False, encoding="utf-8"
        )
        _check_columns(path, columns, [str(c) for c in frame.columns])
        return {c: frame[c].tolist() for c in wanted}
    except UnicodeDecodeError:
        raise FaceZooError(f"{path}: {_first_non_utf8(path)} is not UTF-8 text; re-save the table as UTF-8") from None
    except (OSError, pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise FaceZooError(f"{path}: cannot read the table ({first_line(e)})") from None


def _check_columns(path: Path, columns: dict[str, str], available: list[str]) -> None:
    for option, column in columns.items():
        if column not in available:
            raise FaceZooError(
                f"{path}: no column {column!r} ({option}); the columns are {', '.join(map(repr, available))}"
            )


def _required(path: Path, values: list[Any], column: str, what: str) -> list[str]:
    """``values`` as strings; a missing or blank value is an error naming the row (counted from 1 after the header)."""
    out = []
    for row, value in enumerate(values, 1):
        if value is None or not str(value).strip():
            raise FaceZooError(f"{path}: row {row}: no {what} in column {column!r}; fill it in or drop the row")
        out.append(str(value))
    return out


def _relative_image_paths(path: Path, root: Path, values: list[str]) -> list[str]:
    """Image paths normalised relative to ``root``; absolute paths, paths leaving ``root`` and missing files fail."""
    out = []
    for row, value in enumerate(values, 1):
        rel = os.path.normpath(value).replace(os.sep, "/")
        if os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
            raise FaceZooError(
                f"{path}: row {row}: image path {value!r} is not inside {root}; write it relative to that folder"
            )
        if not (root / rel).is_file():
            raise FaceZooError(f"{path}: row {row}: image {value!r} not found in {root}")
        out.append(rel)
    return out


def load_table(
    path: str | Path,
    *,
    name: str | None = None,
    label_column: str = "label",
    text_column: str | None = None,
    path_column: str | None = None,
    split_column: str | None = None,
    image_root: str | Path | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """A labelled table: one row per sample.

    Args:
        path: ``.csv``, ``.tsv`` (optionally ``.gz``/``.bz2``/``.xz``) or ``.parquet``.
        label_column: the class of each row (any values; integers sort numerically).
        text_column: the text of each row (a text dataset); the default when ``path_column`` is not given is ``text``.
        path_column: image file paths relative to ``image_root`` (an image dataset).
        split_column: each row's split name; without it the split is stratified.
        image_root: the folder image paths are relative to; default the table's folder.

    Text samples are ids ``row-<n>`` (``n`` from 1); image samples are ids = their normalised relative paths.
    """
    path = Path(path)
    if text_column is not None and path_column is not None:
        raise FaceZooError(f"{path}: give text_column or path_column, not both")
    is_text = path_column is None
    columns = {"label_column": label_column, **(
        {"text_column": text_column or "text"} if is_text else {"path_column": path_column})}
    if split_column is not None:
        columns["split_column"] = split_column
    data = read_table_columns(path, columns)
    raw_labels = _required(path, data[label_column], label_column, "label")
    splits = None if split_column is None else _required(path, data[split_column], split_column, "split")
    default_name = path.name.split(".")[0]
    if is_text:
        column = columns["text_column"]
        texts = _required(path, data[column], column, "text")
        codes, class_names = encode_labels(raw_labels)
        return from_texts(
            texts, codes, class_names, [f"row-{n}" for n in range(1, len(texts) + 1)], name=name or default_name,
            kind="table-text", source=f"table:{path}", splits=splits, test_fraction=test_fraction,
        )
    root = Path(image_root) if image_root is not None else path.parent
    rel_paths = _relative_image_paths(path, root, _required(path, data[path_column], path_column, "image path"))
    return from_image_files(
        root, rel_paths, raw_labels, splits, name=name or default_name, kind="table-images", source=f"table:{path}",
        test_fraction=test_fraction,
    )


def _first_non_utf8(path: Path) -> str:
    """``line N`` (1-based, the header is line 1) of the first byte sequence that is not UTF-8."""
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            return f"line {number} (byte {error.start + 1})"
    return "a byte sequence"  # split across lines: cannot happen with UTF-8's self-synchronising encoding

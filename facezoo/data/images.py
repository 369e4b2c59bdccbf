"""Image files decoded with clear errors, and image folders ``<root>/[<split>/]<class>/<file>``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from facezoo.data._assemble import assemble
from facezoo.data.base import Dataset, Fingerprint, encode_labels
from facezoo.errors import FaceZooError

__all__ = ["SPLIT_FOLDERS", "decode_image", "open_image", "visible_children", "from_image_files", "load_image_folder"]

SPLIT_FOLDERS = ("train", "val", "valid", "validation", "dev", "test")

# What PIL raises on unidentified, truncated or otherwise corrupt files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def decode_image(data: bytes, where: str) -> Image.Image:
    """Fully decode image file bytes (so truncated files fail now, not mid-extraction); ``where`` names the file."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except _DECODE_ERRORS as e:
        raise FaceZooError(f"{where}: not a readable image ({e}); replace or remove the file") from None
    return image


def open_image(path: str) -> Image.Image:
    """The image file at ``path`` as an RGB PIL image (the loader of file-based image datasets)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FaceZooError(f"{path}: cannot read the image ({e.strerror})") from None
    return decode_image(data, path).convert("RGB")


def visible_children(folder: Path) -> list[Path]:
    """Entries of ``folder`` sorted by name, without hidden ones (``.DS_Store``, ``.ipynb_checkpoints``)."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def from_image_files(
    root: Path,
    rel_paths: Sequence[str],
    raw_labels: Sequence[str],
    splits: Sequence[str] | None,
    *,
    name: str,
    kind: str,
    source: str,
    test_fraction: float = 0.2,
) -> Dataset:
    """An image dataset over files ``root / rel_path``, each read once: fingerprinted by (relative path, bytes) in
    the given order and decoded to catch corrupt files up front. Samples load lazily as RGB PIL images."""
    root = root.resolve()
    content = Fingerprint(kind)
    bad: list[str] = []  # every unreadable file, so one run lists them all
    for rel in rel_paths:
        path = root / rel
        try:
            data = path.read_bytes()
            decode_image(data, str(path))
        except OSError as e:
            bad.append(f"{rel} ({e.strerror})")
            continue
        except FaceZooError:
            bad.append(rel)
            continue
        content.update(rel, data)
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise FaceZooError(f"{root}: {len(bad)} unreadable image(s): {shown}; replace or remove them")
    labels, class_names = encode_labels(raw_labels)
    return assemble(
        name=name, task="image", refs=[str(root / rel) for rel in rel_paths], labels=labels, class_names=class_names,
        sample_ids=list(rel_paths), content=content, loader=open_image, source=source, splits=splits,
        test_fraction=test_fraction,
    )


def load_image_folder(root: str | Path, *, name: str | None = None, test_fraction: float = 0.2) -> Dataset:
    """An image folder: ``<root>/<class>/<file>``, or ``<root>/<split>/<class>/<file>`` when every top-level folder
    is a split name (:data:`SPLIT_FOLDERS`; the splits are then given).

    Files and folders starting with ``.`` are skipped; any other file must be a readable image. Samples are in sorted
    path order, ids are the paths relative to ``root``, class names are the folder names.
    """
    root = Path(root)
    if not root.is_dir():
        raise FaceZooError(f"{root}: not a folder; an image folder holds <class>/<image> or <split>/<class>/<image>")
    top = visible_children(root)
    for p in top:
        if not p.is_dir():
            raise FaceZooError(f"{p}: a file at the top of an image folder; move it into a class folder or remove it")
    split_layout = bool(top) and all(p.name in SPLIT_FOLDERS for p in top)
    groups = [(p.name, p) for p in top] if split_layout else [(None, root)]
    rel_paths: list[str] = []
    raw_labels: list[str] = []
    splits: list[str] = []
    for split, base in groups:
        for class_dir in visible_children(base):
            if not class_dir.is_dir():
                raise FaceZooError(f"{class_dir}: expected a class folder here, found a file; move it into one")
            for f in visible_children(class_dir):
                if f.is_dir():
                    raise FaceZooError(f"{f}: a folder inside a class folder; images must sit directly in <class>/")
                rel_paths.append(f.relative_to(root).as_posix())
                raw_labels.append(class_dir.name)
                splits.append(split or "")
    return from_image_files(
        root, rel_paths, raw_labels, splits if split_layout else None, name=name or root.resolve().name,
        kind="image-folder", source=f"folder:{root}", test_fraction=test_fraction,
    )

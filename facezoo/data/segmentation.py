"""Segmentation folders: ``images/<stem>.<ext>`` with ``masks/<stem>.png`` of per-pixel class indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facezoo.data._assemble import assemble
from facezoo.data.base import Dataset, Fingerprint
from facezoo.data.images import decode_image, open_image, visible_children
from facezoo.data.text import decode_text
from facezoo.errors import FaceZooError

__all__ = ["decode_mask", "load_pair", "load_segmentation_folder"]

_MASK_MODES = ("L", "P", "I", "I;16")  # single-channel modes whose values are the class indices


def decode_mask(data: bytes, where: str) -> np.ndarray:
    """A mask file's bytes as ``(H, W)`` int64 class indices; it must be a single-channel PNG (lossless)."""
    mask = decode_image(data, where)
    if mask.format != "PNG" or mask.mode not in _MASK_MODES:
        raise FaceZooError(
            f"{where}: masks must be single-channel PNGs of class indices, got a {mask.format} image in mode "
            f"{mask.mode}; save it as an 8-bit grayscale or palette PNG"
        )
    return np.asarray(mask, dtype=np.int64)


def load_pair(ref: tuple[str, str]) -> tuple[Image.Image, np.ndarray]:
    """Loader of segmentation folders: ``(image path, mask path)`` → (RGB PIL image, ``(H, W)`` int64 mask)."""
    image_path, mask_path = ref
    try:
        data = Path(mask_path).read_bytes()
    except OSError as e:
        raise FaceZooError(f"{mask_path}: cannot read the mask ({e.strerror})") from None
    return open_image(image_path), decode_mask(data, mask_path)


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FaceZooError(f"{folder}: missing; a segmentation folder holds images/ and masks/ with the same stems")
    out: dict[str, Path] = {}
    for p in visible_children(folder):
        if p.stem in out:
            raise FaceZooError(f"{p}: another file in {folder} has the stem {p.stem!r}; stems must be unique")
        out[p.stem] = p
    return out


def _read_classes(path: Path) -> list[str] | None:
    """Class names from ``classes.txt`` (one per line, line i = class i; blank lines ignored), if present."""
    if not path.is_file():
        return None
    names = [line.strip() for line in decode_text(path.read_bytes()).split("\n") if line.strip()]
    if len(set(names)) != len(names):
        raise FaceZooError(f"{path}: class names repeat; give each class one line")
    return names


def load_segmentation_folder(
    root: str | Path, *, name: str | None = None, ignore_index: int = 255, test_fraction: float = 0.2
) -> Dataset:
    """A segmentation folder: ``images/`` (any image format, loaded as RGB), ``masks/`` (PNG, same stems, same size,
    values = class index or ``ignore_index``), optional ``classes.txt`` (else ``class_0..class_<max value>``).

    Every image and mask is read and checked now. Sample ids are ``images/<file>``; labels are ``-1`` (the labels are
    the masks) and the split is stratified.
    """
    root = Path(root)
    images, masks = _by_stem(root / "images"), _by_stem(root / "masks")
    for stem in sorted(images.keys() ^ masks.keys()):
        present, absent = ("images", "masks") if stem in images else ("masks", "images")
        path = (images if stem in images else masks)[stem]
        raise FaceZooError(f"{path}: no file with the stem {stem!r} in {absent}/; every file in {present}/ needs one")
    class_names = _read_classes(root / "classes.txt")
    if class_names is not None and 0 <= ignore_index < len(class_names):
        raise FaceZooError(f"{root}: ignore_index {ignore_index} is also class {class_names[ignore_index]!r}")
    content = Fingerprint("segmentation-folder")
    refs, ids = [], []
    max_value = -1
    for stem in sorted(images):
        image_rel, mask_rel = f"images/{images[stem].name}", f"masks/{masks[stem].name}"
        image_data, mask_data = images[stem].read_bytes(), masks[stem].read_bytes()
        image = decode_image(image_data, str(root / image_rel))
        mask = decode_mask(mask_data, str(root / mask_rel))
        if mask.shape != (image.height, image.width):
            raise FaceZooError(
                f"{root / image_rel}: mask is {mask.shape[0]}×{mask.shape[1]}, image is {image.height}×{image.width}"
            )
        values = np.unique(mask)
        values = values[values != ignore_index]
        if class_names is not None and len(values) and (values[0] < 0 or values[-1] >= len(class_names)):
            bad = values[(values < 0) | (values >= len(class_names))][0]
            raise FaceZooError(
                f"{root / mask_rel}: mask value {bad} is neither a class (0..{len(class_names) - 1} in classes.txt) "
                f"nor the ignore label {ignore_index}"
            )
        max_value = max(max_value, int(values[-1]) if len(values) else -1)
        content.update(image_rel, image_data, mask_rel, mask_data)
        refs.append((str(images[stem].resolve()), str(masks[stem].resolve())))
        ids.append(image_rel)
    if class_names is None:
        class_names = [f"class_{k}" for k in range(max_value + 1)]
    return assemble(
        name=name or root.resolve().name, task="segmentation", refs=refs, labels=np.full(len(refs), -1),
        class_names=class_names, sample_ids=ids, content=content, loader=load_pair, source=f"segmentation:{root}",
        test_fraction=test_fraction, ignore_index=ignore_index,
    )

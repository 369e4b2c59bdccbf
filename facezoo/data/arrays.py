"""Image datasets held in memory as one uint8 array (MNIST-style sets: IDX files, CSV pixels, package pickles)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from facezoo.data._assemble import assemble
from facezoo.data.base import Dataset, Fingerprint
from facezoo.errors import FaceZooError

__all__ = ["ArrayImages", "from_arrays"]


class ArrayImages:
    """Loader over an image array: ``loader(i)`` is image ``i`` as a PIL image (``"L"`` for ``(N, H, W)``, ``"RGB"``
    for ``(N, H, W, 3)``). A class rather than a closure so that DataLoader workers can pickle it."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    name: str,
    kind: str,
    source: str,
    splits: Sequence[str] | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """An image dataset over ``images`` ``(N, H, W)`` or ``(N, H, W, 3)`` uint8 with ``labels`` ``(N,)`` codes into
    ``class_names``. Sample ids are the row indices; the fingerprint hashes the pixel array."""
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise FaceZooError(
            f"{source}: images must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    if len(labels) != len(images):
        raise FaceZooError(f"{source}: {len(images)} images but {len(labels)} labels; they must match one to one")
    return assemble(
        name=name, task="image", refs=list(range(len(images))), labels=labels, class_names=class_names,
        sample_ids=[str(i) for i in range(len(images))], content=Fingerprint(kind).update(images),
        loader=ArrayImages(images), source=source, splits=splits, test_fraction=test_fraction,
    )

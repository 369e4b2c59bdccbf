"""The project's shared offline data (``shared:<name>``), read in place from ``$FACEZOO_SHARED_DATA``
(default ``<repo>/../shared/data``; see its README.md). Never copied into the project."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from PIL import Image

from facezoo.data._locate import shared_path
from facezoo.data._registry import register_builtin
from facezoo.data.base import Dataset
from facezoo.data.canvas import canvas_dataset
from facezoo.data.idx import load_idx
from facezoo.data.images import load_image_folder
from facezoo.data.text import load_lines

__all__ = ["cifar10_canvas", "cifar10_test", "mnist_test", "sst2"]

_TEXT = "text-classification"
_SST2_FILES = {"train": "stsa.binary.train", "dev": "stsa.binary.dev", "test": "stsa.binary.test"}


@register_builtin(
    "shared:cifar10-test", "CIFAR-10 test set: 10000 32×32 RGB JPEGs, 10 classes × 1000, stratified split",
    locate=functools.partial(shared_path, "cifar10-test"),
)
def cifar10_test(*, name: str) -> Dataset:
    return replace(load_image_folder(shared_path("cifar10-test"), name=name), source="shared:cifar10-test")


@register_builtin(
    "shared:cifar10-canvas",
    "segmentation: 1-3 CIFAR-10 objects (32×32) on 96×96 canvases, 11 classes (10 + background), from a seed",
    locate=functools.partial(shared_path, "cifar10-test"),
)
def cifar10_canvas(*, name: str, n_images: int = 500, size: int = 96, objects_per_image: int | Sequence[int] = (1, 3),
                   per_class: int = 100, seed: int = 0) -> Dataset:
    """CIFAR-10 test images (the first ``per_class`` of each class, by file name) pasted on black canvases; the mask
    is the object's class over its whole 32×32 rectangle (CIFAR-10 has no object masks), background elsewhere."""
    folder = shared_path("cifar10-test")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(k, f) for k, c in enumerate(classes) for f in sorted((folder / c).glob("*.jpg"))[:per_class]]
    objects = np.stack([np.asarray(Image.open(f).convert("RGB")) for _, f in files])
    return canvas_dataset(objects, np.array([k for k, _ in files]), classes, name=name, source="shared:cifar10-canvas",
                          n_images=n_images, size=size, digits_per_image=objects_per_image, seed=seed, threshold=None)


@register_builtin(
    "shared:mnist-test", "MNIST test set: 10000 28×28 grayscale digits, 10 classes, stratified split",
    locate=functools.partial(shared_path, "mnist-test"),
)
def mnist_test(*, name: str) -> Dataset:
    folder = shared_path("mnist-test")
    dataset = load_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz", name=name)
    return replace(dataset, source="shared:mnist-test")


@register_builtin(
    "shared:sst2", "SST-2 sentences: 9613, 2 classes, given train/dev/test (6920/872/1821)",
    locate=functools.partial(shared_path, _TEXT),
)
def sst2(*, name: str) -> Dataset:
    return replace(load_lines(shared_path(_TEXT), name=name, split_files=_SST2_FILES), source="shared:sst2")


def _line_file(key: str, file: str, *, name: str) -> Dataset:
    # CR and MPQA have a few lines with a label and no text (4 and 3): skipped, not failed.
    dataset = load_lines(shared_path(f"{_TEXT}/{file}"), name=name, skip_empty=True)
    return replace(dataset, source=key)


for _key, _file, _description in (
    ("shared:mr", "rt-polarity.all", "MR movie-review sentences: 10662, 2 classes, stratified split (Windows-1252)"),
    ("shared:subj", "subj.all", "Subj subjectivity sentences: 10000, 2 classes, stratified split (Windows-1252)"),
    ("shared:cr", "custrev.all", "CR customer reviews: 3771 non-empty lines, 2 classes, stratified split"),
    ("shared:mpqa", "mpqa.all", "MPQA opinion phrases: 10603 non-empty lines, 2 classes, stratified split"),
):
    register_builtin(_key, _description, locate=functools.partial(shared_path, f"{_TEXT}/{_file}"))(
        functools.partial(_line_file, _key, _file)
    )

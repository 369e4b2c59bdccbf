"""MNIST's IDX format: an images file ``(N, H, W)`` uint8 and a labels file ``(N,)``, gzip'd or not."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from facezoo.data.arrays import from_arrays
from facezoo.data.base import Dataset, encode_labels
from facezoo.errors import FaceZooError

__all__ = ["read_idx", "load_idx"]

# IDX type byte → big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip detected from its magic bytes, not its name) into a native-endian array.

    Header: two zero bytes, a type byte (:data:`_IDX_DTYPES`), the number of dimensions, then each dimension as a
    big-endian uint32; the data must fill exactly the product of the dimensions.
    """
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise FaceZooError(f"{path}: cannot read the IDX file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise FaceZooError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FaceZooError(f"{path}: IDX header is truncated ({len(raw)} bytes, needs {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise FaceZooError(
            f"{path}: IDX header says shape {dims} of {dtype.name} ({expected} bytes) but the file holds "
            f"{len(raw) - header} bytes of data; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def load_idx(
    images_path: str | Path, labels_path: str | Path, *, name: str | None = None, test_fraction: float = 0.2
) -> Dataset:
    """An IDX image set: ``images_path`` holds ``(N, H, W)`` uint8, ``labels_path`` ``(N,)`` integers.

    Samples load as ``"L"`` PIL images; ids are the indices. No split in the format, so it is stratified.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise FaceZooError(f"{images_path}: expected (N, H, W) uint8 images, got {images.dtype.name} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise FaceZooError(f"{labels_path}: expected (N,) integer labels, got {labels.dtype.name} {labels.shape}")
    if len(labels) != len(images):
        raise FaceZooError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}; they must match"
        )
    codes, class_names = encode_labels(labels.tolist())
    return from_arrays(
        images, codes, class_names, name=name or Path(images_path).name.split(".")[0], kind="idx",
        source=f"idx:{images_path},{labels_path}", test_fraction=test_fraction,
    )

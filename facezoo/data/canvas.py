"""Synthetic, deterministic segmentation sets: small images (digits, CIFAR-10 objects) pasted without overlap onto
blank canvases, the mask giving each pasted pixel its image's class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from facezoo.data._assemble import assemble
from facezoo.data.base import Dataset, Fingerprint
from facezoo.errors import FaceZooError

__all__ = ["CanvasSamples", "render_canvases", "canvas_dataset"]

_MAX_TRIES = 100  # random positions tried per digit before it is left out of a crowded canvas


class CanvasSamples:
    """Loader over rendered canvases: ``loader(i)`` → (RGB PIL image, ``(H, W)`` int64 mask)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        self.images = images
        self.masks = masks

    def __call__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        return Image.fromarray(self.images[i]).convert("RGB"), self.masks[i].astype(np.int64)


def _digit_range(digits_per_image: int | Sequence[int]) -> tuple[int, int]:
    pair = tuple(digits_per_image) if isinstance(digits_per_image, (list, tuple)) else (digits_per_image,) * 2
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair) or not 1 <= pair[0] <= pair[1]:
        raise FaceZooError(f"digits_per_image must be n or (min, max) with 1 <= min <= max, got {digits_per_image!r}")
    return int(pair[0]), int(pair[1])


def render_canvases(
    digits: np.ndarray,
    labels: np.ndarray,
    *,
    n_images: int,
    size: int,
    digits_per_image: int | Sequence[int] = (1, 3),
    seed: int = 0,
    threshold: int | None = 127,
    background: int = 10,
) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int, int]]]]:
    """Paste digits (or any small images) onto ``size × size`` black canvases at random non-overlapping positions.

    Args:
        digits: ``(M, h, w)`` uint8 digit images (bright strokes on black), or ``(M, h, w, 3)`` RGB images; labels
            ``(M,)`` their classes.
        digits_per_image: how many digits per canvas, drawn uniformly from ``(min, max)``; a digit that finds no
            free place in ``_MAX_TRIES`` tries is left out (the first one always fits).
        threshold: a pixel belongs to its digit's class when its intensity exceeds this; ``None``: the whole pasted
            rectangle does (objects without a mask of their own, such as CIFAR-10's).
        background: the mask value everywhere else.

    Returns:
        images ``(n_images, size, size[, 3])`` uint8, masks ``(n_images, size, size)`` uint8, and per canvas its
        placements ``(digit index, top, left)``. Everything follows from ``seed`` (NumPy's PCG64 stream).
    """
    lo, hi = _digit_range(digits_per_image)
    m, h, w = digits.shape[:3]
    if not (isinstance(n_images, int) and n_images >= 1 and isinstance(size, int) and size >= max(h, w)):
        raise FaceZooError(f"need n_images >= 1 and size >= {max(h, w)}, got n_images={n_images!r}, size={size!r}")
    if threshold is not None and not 0 <= threshold < 255:
        raise FaceZooError(f"threshold must be in 0..254 or None, got {threshold!r}")
    rng = np.random.default_rng(seed)
    images = np.zeros((n_images, size, size, *digits.shape[3:]), np.uint8)
    masks = np.full((n_images, size, size), background, np.uint8)
    placements: list[list[tuple[int, int, int]]] = []
    for i in range(n_images):
        placed: list[tuple[int, int, int]] = []
        for _ in range(rng.integers(lo, hi + 1)):
            d = int(rng.integers(m))
            for _ in range(_MAX_TRIES):
                top, left = (int(v) for v in rng.integers(0, size - np.array([h, w]) + 1))
                if all(top + h <= t or t + h <= top or left + w <= x or x + w <= left for _, t, x in placed):
                    images[i, top : top + h, left : left + w] = digits[d]
                    region = masks[i, top : top + h, left : left + w]
                    region[(digits[d] > threshold) if threshold is not None else slice(None)] = labels[d]
                    placed.append((d, top, left))
                    break
        placements.append(placed)
    return images, masks, placements


def canvas_dataset(
    digits: np.ndarray,
    labels: np.ndarray,
    digit_names: Sequence[str],
    *,
    name: str,
    source: str,
    n_images: int = 500,
    size: int = 64,
    digits_per_image: int | Sequence[int] = (1, 3),
    seed: int = 0,
    threshold: int | None = 127,
) -> Dataset:
    """A segmentation dataset of :func:`render_canvases` canvases: classes ``digit_names + ("background",)``,
    background = ``len(digit_names)``; samples load as (RGB PIL image, int64 mask); stratified split."""
    images, masks, _ = render_canvases(
        digits, labels, n_images=n_images, size=size, digits_per_image=digits_per_image, seed=seed,
        threshold=threshold, background=len(digit_names),
    )
    return assemble(
        name=name, task="segmentation", refs=list(range(n_images)), labels=np.full(n_images, -1),
        class_names=[*digit_names, "background"], sample_ids=[str(i) for i in range(n_images)],
        content=Fingerprint("canvas").update(images, masks), loader=CanvasSamples(images, masks), source=source,
    )

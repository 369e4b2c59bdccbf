"""The extraction engine: a model adapter and a dataset in, penultimate features (or sampled pixel features) out.

The model runs under ``torch.inference_mode`` on the best device, on the backend :mod:`facezoo.backends` chooses (ONNX
Runtime for models that export, proven equal to eager on the first batch). With a GPU (bf16 autocast, channels-last
memory), ``DataLoader`` worker processes decode and preprocess samples while it computes. On a CPU, images are decoded
by a pool of threads in this process between forward passes (texts tokenized in this thread), so the cores do one
thing at a time: a worker process overlapping the model preempted one of the model's threads, and every parallel
operator then waited for it. Features come back as float32 NumPy in dataset order, with the labels, the sample ids
and, when the model has a classifier head, its logits.

Segmentation: the model's last feature map is sampled at class-balanced pixel positions of each mask
(``pixels_per_image``, ignore label skipped), by bilinear interpolation at those positions of the map resized to the
mask: the same values as upsampling the whole map, without materialising it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import default_collate

from facezoo import backends
from facezoo import progress as progress_report
from facezoo.data.base import Dataset
from facezoo.errors import FaceZooError, first_line
from facezoo.models.base import ModelAdapter

__all__ = ["EXTRACTION_VERSION", "Extracted", "extract", "pick_device", "sample_pixels"]

EXTRACTION_VERSION = "1"  # part of every cache key: bump when the engine's output changes for the same inputs


@dataclass
class Extracted:
    """What extraction produces: ``features`` (N, D) float32, ``labels`` (N,) int64, ``sample_ids`` (N,) str,
    ``logits`` (N, C) float32 or None, throughput figures (``seconds``, ``samples_per_second``) and the ``backend``
    that ran the model (see :mod:`facezoo.backends`)."""

    features: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    logits: np.ndarray | None
    seconds: float
    samples_per_second: float
    backend: str


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA device when there is one, else the CPU. Anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as error:
        raise FaceZooError(f"unknown device {device!r}: {error}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FaceZooError(f"device {device!r} asked for, but this machine has no CUDA GPU")
    return dev


def _default_workers(device: torch.device) -> int:
    # On a GPU the CPU only decodes: all cores to workers. On a CPU none: the model needs every core, and a worker
    # overlapping it made extraction slower (MiniLM 157 texts/s with one, 234 without; MobileNetV2 on ONNX Runtime
    # 0.56-0.7 of a bare loop with one, 0.82 with threads decoding between forward passes)
    return min(8, max(1, _cpu_count() - 1)) if device.type == "cuda" else 0


class _Samples(TorchDataset):
    """Dataset samples → model inputs (runs in workers: holds only the dataset and the preprocessing)."""

    def __init__(self, dataset: Dataset, model: ModelAdapter, dense: bool):
        self.dataset, self.model, self.dense = dataset, model, dense

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, Any, Any]:
        sample = self.dataset.load(i)
        if self.dense:
            image, mask = sample
            return i, self.model.preprocess_dense(image), torch.as_tensor(np.asarray(mask, dtype=np.int64))
        return i, self.model.preprocess(sample), None


class _Collate:
    def __init__(self, model: ModelAdapter, dense: bool):
        self.model, self.dense = model, dense

    def __call__(self, items: list[tuple[int, Any, Any]]) -> tuple[list[int], Any, list[Any]]:
        index = [i for i, _, _ in items]
        masks = [m for _, _, m in items]
        batch = default_collate([x for _, x, _ in items]) if self.dense else self.model.collate([x for _, x, _ in items])
        return index, batch, masks


def sample_pixels(
    feature_map: torch.Tensor, mask: torch.Tensor, n_pixels: int, ignore_index: int | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-balanced pixel features of one image.

    Args:
        feature_map: ``(C, h, w)`` dense features of the (resized, uncropped) image.
        mask: ``(H, W)`` int64 class per pixel of the original image.
        n_pixels: pixels to draw, split evenly over the classes present (each class at most all of its pixels; what
            a small class cannot use goes to the others).

    Returns:
        ``(features (P, C) float32, labels (P,), flat pixel indices (P,))``: features bilinearly interpolated at
        the pixel centres of the map resized to ``(H, W)`` (``align_corners=False``).
    """
    h_mask, w_mask = mask.shape
    flat = mask.reshape(-1)
    valid = flat != ignore_index if ignore_index is not None else torch.ones_like(flat, dtype=torch.bool)
    classes = torch.unique(flat[valid])
    chosen = []
    budget, remaining = n_pixels, len(classes)
    for k in sorted(classes.tolist(), key=lambda c: int((flat == c).sum())):  # small classes first: share leftovers
        where = torch.nonzero(flat == k).reshape(-1)
        take = min(len(where), math.ceil(budget / remaining))
        chosen.append(where[torch.randperm(len(where), generator=generator)[:take]])
        budget -= take
        remaining -= 1
    if not chosen:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty((0, feature_map.shape[0])), empty, empty
    index = torch.cat(chosen).sort().values
    ys, xs = index // w_mask, index % w_mask
    # pixel centres in grid_sample's [-1, 1] coordinates of the mask-sized image
    grid = torch.stack([(xs.float() + 0.5) / w_mask * 2 - 1, (ys.float() + 0.5) / h_mask * 2 - 1], dim=-1)
    sampled = torch.nn.functional.grid_sample(
        feature_map[None].float(), grid[None, None].to(feature_map.device), mode="bilinear", align_corners=False,
        padding_mode="border",  # clamp at the edges, as resizing the whole map does
    )[0, :, 0].T
    return sampled.float().cpu(), flat[index].cpu(), index


def extract(
    model: ModelAdapter,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str = "auto",
    backend: str = "auto",
    export_dir: str | Path | None = None,
    pixels_per_image: int = 1000,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> Extracted:
    """Features of every sample of ``dataset`` (use ``dataset.subset(split)`` for one split).

    Args:
        batch_size: samples per forward pass; out of memory, the extraction starts over at half of it, down to 1.
        num_workers: DataLoader worker processes (default: up to 8 with a GPU, none on a CPU). Without workers, images
            are decoded by ``threads`` threads between forward passes, texts tokenized in this thread.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        backend: ``"auto"``, ``"eager"``, ``"channels-last"`` or ``"onnxruntime"`` (see :mod:`facezoo.backends`; a
            model that cannot use the one asked for runs on its fallback, which ``Extracted.backend`` names).
        export_dir: where ONNX exports and equality verdicts are cached (``<home>/onnx``); None: in memory only.
        pixels_per_image: segmentation only: class-balanced pixels sampled per image.
        seed: segmentation only: the pixel sampling is a deterministic function of ``seed`` and the sample index.
        threads: CPU threads for the model (default: every core this process may use); restored afterwards.
        progress: report progress through :mod:`facezoo.progress` (a bar on a terminal, timed lines in a log);
            False: silence.
    """
    if dataset.task != "segmentation" and model.modality != dataset.task:
        raise FaceZooError(f"model {model.name!r} reads {model.modality}, dataset {dataset.name!r} is {dataset.task}")
    if len(dataset) == 0:
        raise FaceZooError(f"dataset {dataset.name!r} is empty")
    dense = dataset.task == "segmentation"
    dev = pick_device(device)
    chosen = backends.choose(model, dev, backend, dense=dense, export_dir=export_dir)
    workers = _default_workers(dev) if num_workers is None else num_workers
    previous_threads = torch.get_num_threads()
    threads = threads or _cpu_count()
    if dev.type == "cpu":
        torch.set_num_threads(threads)  # deliberately: concurrent tasks pass their share
    try:
        while True:
            try:
                run = backends.runner(model, dev, chosen, export_dir=export_dir, threads=threads,
                                      auto=backend == "auto")
                return _run(model, dataset, run, workers, threads, batch_size, dense, pixels_per_image, seed,
                            progress)
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
                if not _out_of_memory(error):
                    raise
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                if batch_size == 1:
                    raise FaceZooError(f"model {model.name!r} ran out of memory on {dev} even at batch size 1: "
                                       f"{first_line(error)}") from None
                batch_size = max(1, batch_size // 2)  # the results do not depend on the batch size: start over
                warnings.warn(f"{model.name}: out of memory on {dev}; retrying at batch size {batch_size}",
                              stacklevel=2)
    finally:
        torch.set_num_threads(previous_threads)


def _out_of_memory(error: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError``, Python's ``MemoryError``, or the CPU allocator's ``RuntimeError``."""
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(error)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _forkserver(model: ModelAdapter) -> Any:
    """The fork server context, told to import what workers unpickle (the engine, the adapters, the model's
    preprocessing) when it starts: each worker forked from it then starts in ~0.3 s instead of ~2.7 s of imports.
    It starts once per process, so the first extraction's model decides. Forking from it stays safe: the server
    never computes, so the idle threads BLAS starts at import hold no lock."""
    own = [type(value).__module__ for value in (getattr(model, "transform", None), getattr(model, "tokenizer", None))
           if value is not None]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "facezoo.extract", "facezoo.models", *own])
    return context


def _decoded_by_threads(samples: _Samples, collate: _Collate, order: Sequence[int] | None, batch_size: int,
                        threads: int) -> Iterator[tuple[list[int], Any, list[Any]]]:
    """Batches as a ``DataLoader`` without workers yields them, each decoded by ``threads`` threads (Pillow and NumPy
    release the GIL while they decode, resize and normalise) before the model runs on it. In turns, not overlapped:
    on a CPU both need every core, and ONNX Runtime's parallel operators stall on a thread a decoder preempts."""
    order = range(len(samples)) if order is None else order
    with ThreadPoolExecutor(threads, thread_name_prefix="facezoo-decode") as pool:
        for start in range(0, len(order), batch_size):
            yield collate(list(pool.map(samples.__getitem__, order[start:start + batch_size])))


def _run(
    model: ModelAdapter,
    dataset: Dataset,
    run: backends.Runner,
    workers: int,
    threads: int,
    batch_size: int,
    dense: bool,
    pixels_per_image: int,
    seed: int,
    progress: bool,
) -> Extracted:
    dev = run.device
    # texts longest first: a batch pads to its longest text, so batching similar lengths skips most padding (~2x);
    # the first batch, which checks the backend, has the longest sequences
    order = None if dense or model.modality != "text" else \
        sorted(range(len(dataset)), key=lambda i: -len(dataset.load(i)))
    samples, collate = _Samples(dataset, model, dense), _Collate(model, dense)
    if workers == 0 and model.modality == "image":
        loader: Iterable[Any] = _decoded_by_threads(samples, collate, order, batch_size, threads)
    else:
        loader = DataLoader(
            samples,
            batch_size=batch_size,
            sampler=order,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=dev.type == "cuda",
            # workers start from a clean single-threaded server, never by forking this process: forking while other
            # threads run BLAS (a pipeline scoring one model while extracting the next) can deadlock the child
            multiprocessing_context=_forkserver(model) if workers and sys.platform == "linux" else None,
            persistent_workers=False,
        )
    features, logits, labels, ids, seen = [], [], [], [], []
    unit = "text" if model.modality == "text" else "img"
    bar = progress_report.task(len(dataset), f"extracting {model.name}", unit=unit, enabled=progress)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        for index, batch, masks in loader:
            if not run.checked:
                run = run.check(batch)  # equality with eager, proven once per model and backend
            batch = run.format(batch)
            if dense:
                maps = model.feature_maps(batch)
                for i, fmap, mask in zip(index, maps, masks, strict=True):
                    generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
                    f, lab, pix = sample_pixels(fmap, mask, pixels_per_image, dataset.ignore_index, generator)
                    features.append(f.numpy())
                    labels.append(lab.numpy())
                    ids.extend(f"{dataset.sample_ids[i]}@{int(p)}" for p in pix)
            else:
                out = run.forward(batch)
                features.append(out["features"].float().cpu().numpy())
                if out.get("logits") is not None:
                    logits.append(out["logits"].float().cpu().numpy())
                seen.extend(index)
            bar.update(len(index))
    seconds = time.perf_counter() - start
    bar.close(note=run.backend)
    if dense:
        rows, row_labels, row_ids = np.concatenate(features), np.concatenate(labels), np.asarray(ids, dtype=str)
    else:  # one row per sample, back in dataset order
        position = np.argsort(np.asarray(seen), kind="stable")
        rows, row_labels, row_ids = np.concatenate(features)[position], dataset.labels, dataset.sample_ids
        logits = [np.concatenate(logits)[position]] if logits else []
    return Extracted(
        features=np.ascontiguousarray(rows, dtype=np.float32),
        labels=np.asarray(row_labels, dtype=np.int64),
        sample_ids=np.asarray(row_ids, dtype=str),
        logits=np.ascontiguousarray(np.concatenate(logits), dtype=np.float32) if logits else None,
        seconds=seconds,
        samples_per_second=len(dataset) / seconds if seconds > 0 else float("inf"),
        backend=run.backend,
    )

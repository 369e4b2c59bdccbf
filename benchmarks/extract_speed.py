"""Throughput of the extraction engine against a bare ``model(x)`` loop, and Parquet I/O as a share of extraction.

    python benchmarks/extract_speed.py [--models pypi:mobilenet_v2 pypi:efficientnet_lite0] [--n 1000]
                                       [--device auto] [--out benchmarks/results/extract_speed.md]

For each model, on the first ``--n`` images of ``shared:cifar10-test`` (10 per class in turn):

- engine: ``facezoo.extract.extract`` end to end: JPEG decoding and the model's preprocessing in DataLoader workers,
  batching, the forward pass, copying features back;
- bare loop: the same preprocessed tensors loaded into memory first (not timed), then only
  ``adapter.forward(batch)`` over batches of the same size under ``torch.inference_mode`` on the same device;
- Parquet: writing the features (with their statistics) to the feature store, and reading them back, as a share of
  the engine's extraction time.

The engine and the bare loop alternate, ``--repeat`` times each; the table reports the best of each.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads OpenBLAS: see facezoo/__init__.py

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facezoo.data import load_dataset
from facezoo.extract import extract, pick_device
from facezoo.models import create_model
from storage.features import FeatureStore, cache_key


def first_images(n: int):
    """The first ``n / 10`` images of every CIFAR-10 class."""
    dataset = load_dataset("shared:cifar10-test")
    k = len(dataset.class_names)
    return dataset.take(np.concatenate([np.flatnonzero(dataset.labels == c)[: n // k] for c in range(k)]))


def bare_loop(adapter, dataset, batch_size: int, device: torch.device) -> float:
    tensors = [adapter.preprocess(dataset.load(i)) for i in range(len(dataset))]
    batches = [adapter.collate(tensors[a : a + batch_size]) for a in range(0, len(tensors), batch_size)]
    channels_last = device.type == "cuda" and adapter.supports_channels_last
    batches = [b.to(device).contiguous(memory_format=torch.channels_last) if channels_last else b.to(device)
               for b in batches]
    adapter.to(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        start = time.perf_counter()
        for batch in batches:
            adapter.forward(batch)["features"].float().cpu()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pypi:mobilenet_v2", "pypi:efficientnet_lite0"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = pick_device(args.device)
    dataset = first_images(args.n)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    lines = [
        f"# Extraction speed: {len(dataset)} CIFAR-10 test images (JPEG), batch {args.batch_size}, {card}",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads. Best of "
        f"{args.repeat}. Reproduce: `python benchmarks/extract_speed.py --n {args.n} --device {args.device}`.",
        "",
        "| model | engine images/s | bare loop images/s | engine / bare (target ≥ 0.9) | Parquet write | "
        "Parquet read | Parquet (write + read) / extraction (target ≤ 5 %) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for source in args.models:
        adapter = create_model(source)
        engine, bare = [], []
        for _ in range(args.repeat):
            out = extract(adapter, dataset, batch_size=args.batch_size, device=args.device, progress=False)
            engine.append(out.seconds)
            bare.append(bare_loop(adapter, dataset, args.batch_size, device))
        with tempfile.TemporaryDirectory() as root:
            store = FeatureStore(root)
            key = cache_key(source=source, n=len(dataset))
            start = time.perf_counter()
            store.put(adapter.name, "cifar10-bench", "bench", key, features=out.features, labels=out.labels,
                      sample_ids=out.sample_ids, logits=out.logits, class_names=list(dataset.class_names),
                      metadata={})
            write = time.perf_counter() - start
            start = time.perf_counter()
            store.get(adapter.name, "cifar10-bench", "bench", key)
            read = time.perf_counter() - start
        n = len(dataset)
        e, b = n / min(engine), n / min(bare)
        verdict = "met" if e / b >= 0.9 else "MISSED"
        io_share = (write + read) / min(engine)
        lines.append(
            f"| {source} ({out.features.shape[1]}-d) | {e:.1f} | {b:.1f} | {e / b:.2f} ({verdict}) | {write:.3f} s | "
            f"{read:.3f} s | {100 * io_share:.1f} % ({'met' if io_share <= 0.05 else 'MISSED'}) |"
        )
    lines += [
        "",
        "The engine's time includes JPEG decoding and preprocessing in its DataLoader workers; the bare loop's "
        "excludes them (its tensors are prepared before timing). Parquet write includes computing the metrics' "
        "sufficient statistics stored beside the features.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

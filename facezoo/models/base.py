"""One interface for every model source: preprocessing, batched penultimate features, logits, dense maps, digest."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import default_collate

from facezoo.errors import FaceZooError

__all__ = ["ModelAdapter", "NotTrainable", "file_digest", "state_dict_digest"]



class NotTrainable(FaceZooError):
    """The model has no differentiable form here (the message says why)."""


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (first 32 hex digits) of a weights file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:32]


def state_dict_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes, values), for models built in memory."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        # reshape(-1): a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


class ModelAdapter(ABC):
    """A pre-trained model as the extraction engine sees it.

    The engine calls, in DataLoader workers, ``preprocess(sample)`` on each sample (a PIL image for image models, a
    ``str`` for text models), then ``collate(list)`` to build a batch, then in the main process ``to(device)`` once
    and ``forward(batch)`` under ``torch.inference_mode``.

    Attributes:
        name: the zoo's name for the model (file-system and SQL safe names are the storage layer's job).
        source: the zoo config source string (``timm:resnet50``, ``hf:...``, ``pypi:mobilenet_v2``, ...).
        modality: ``"image"`` or ``"text"``.
        dim: penultimate feature dimension D.
        num_logits: number of source classes when the model keeps its classifier head, else ``None``.
        digest: hash of the weights (cache keys).
        preprocessing: JSON-able description of the preprocessing (cache keys, MLflow params).
    """

    name: str
    source: str
    modality: str
    dim: int
    num_logits: int | None = None
    digest: str
    preprocessing: dict[str, Any]
    # what runs ``forward``: "torch" (the engine may run it on another backend, see facezoo.backends), else the
    # model's own runtime ("onnxruntime", "numpy", ...), which the engine records as the backend
    runtime: str = "torch"
    export_axes: dict[int, str] = {0: "batch"}  # axes of every exported input that vary between batches

    @abstractmethod
    def preprocess(self, sample: Any) -> Any:
        """One raw sample to the model's input format (runs in DataLoader workers: must be picklable)."""

    def collate(self, items: Sequence[Any]) -> Any:
        """A list of preprocessed samples to one batch (default: stack tensors; in a DataLoader worker straight into
        shared memory, so the batch reaches the main process without another copy: 0.4 ms an image at 224 px)."""
        return default_collate(list(items))

    @abstractmethod
    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """``{"features": (B, D) float}`` plus ``"logits": (B, C)`` when the model has a classifier head."""

    def feature_maps(self, batch: Any) -> torch.Tensor:
        """Dense features ``(B, C, h, w)`` of the last feature map, for semantic segmentation."""
        raise NotImplementedError(f"model {self.name!r} ({self.source}) gives no dense feature maps")

    def preprocess_dense(self, image: Any) -> torch.Tensor:
        """An image for ``feature_maps``: the whole image (no crop, so pixels stay aligned with the mask),
        resized to the model's input size and normalised as ``preprocess`` does.

        The default reads ``preprocessing["input_size"]`` ``(C, H, W)``, ``["mean"]`` and ``["std"]`` (0–1 scale);
        adapters with other conventions override it.
        """
        import torchvision.transforms.functional as tf

        _, h, w = self.preprocessing["input_size"]
        x = tf.to_tensor(image.convert("RGB").resize((w, h), resample=3))  # 3 = bicubic
        return tf.normalize(x, self.preprocessing["mean"], self.preprocessing["std"])

    def trainable(self, dense: bool = False) -> torch.nn.Module:
        """A fresh copy of the network for fine-tuning: an ``nn.Module`` in train mode with gradients on, whose
        ``forward(batch)`` takes a batch from ``collate`` (on its device) and returns ``(B, dim)`` penultimate features,
        or with ``dense`` takes a ``(B, 3, H, W)`` batch of ``preprocess_dense`` images and returns the ``(B, C, h, w)``
        maps of ``feature_maps`` (for segmentation).

        The adapter's own model is untouched. Models that cannot be trained end to end (ONNX Runtime graphs without a
        converter, static or quantised embeddings) raise :class:`NotTrainable`; the fine-tuning engine then falls back
        to a head on frozen features.
        """
        raise NotTrainable(f"model {self.name!r} ({self.source}) cannot be trained end to end")

    def to(self, device: torch.device | str, channels_last: bool | None = None) -> "ModelAdapter":
        """Move the model to ``device`` (no-op for CPU-only backends such as ONNX Runtime on CPU); ``channels_last``:
        the memory format of a convolutional network's weights (default: channels-last on CUDA when supported)."""
        return self

    def export_example(self) -> Any | None:
        """A small collated batch to trace ``forward`` with for ONNX export (a tensor, or a mapping of tensors whose
        :attr:`export_axes` vary), or None when the model cannot be exported (the default)."""
        return None

    @property
    def supports_channels_last(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "modality": self.modality, "dim": self.dim,
                "num_logits": self.num_logits, "digest": self.digest, "preprocessing": self.preprocessing}

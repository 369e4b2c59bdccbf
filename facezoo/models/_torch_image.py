"""PyTorch image models: one adapter for modules with timm's two-stage interface, one for plain torchvision models."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from facezoo.errors import FaceZooError
from facezoo.models._common import DetachableAdapter
from facezoo.models._transforms import ImagePreprocessing
from facezoo.models.base import NotTrainable

__all__ = ["HookedAdapter", "TorchImageAdapter", "TwoStageAdapter"]


class TorchImageAdapter(DetachableAdapter):
    """A ``torch.nn.Module`` image model in eval mode; ``preprocess`` is ``transform`` (picklable, model-free).

    The batch is moved to the model's device in ``forward``; on CUDA a model that ``supports_channels_last`` is
    converted to channels-last memory by ``to`` (convolutions run faster; the engine formats the batch to match).
    """

    modality = "image"
    _detached = ("model",)

    def __init__(self, *, name: str, source: str, model: nn.Module, transform: Callable[[Any], torch.Tensor],
                 preprocessing: dict[str, Any], dim: int, num_logits: int | None, digest: str,
                 channels_last: bool = True):
        self.name, self.source = name, source
        self.model = model.eval().requires_grad_(False)
        self.transform = transform
        self.preprocessing = preprocessing
        self.dim, self.num_logits, self.digest = int(dim), num_logits, digest
        self._channels_last = channels_last

    def preprocess(self, sample: Any) -> torch.Tensor:
        """PIL image → ``(3, H, W)`` float tensor."""
        if not hasattr(sample, "convert"):
            raise FaceZooError(f"image model {self.name!r} takes PIL images, got {type(sample).__name__}")
        return self.transform(sample.convert("RGB"))

    def preprocess_dense(self, image: Any) -> torch.Tensor:
        """The whole image at the input size (no crop), normalised like ``preprocess``."""
        if isinstance(self.transform, ImagePreprocessing):
            return self.transform.dense(image)
        return super().preprocess_dense(image)  # timm: its config's input_size, mean and std

    @property
    def supports_channels_last(self) -> bool:
        return self._channels_last

    def to(self, device: torch.device | str, channels_last: bool | None = None) -> TorchImageAdapter:
        device = torch.device(device)
        if channels_last is None:
            channels_last = device.type == "cuda" and self._channels_last
        layout = torch.channels_last if channels_last and self._channels_last else torch.contiguous_format
        self.model = self._require("model").to(device).to(memory_format=layout)
        return self

    def export_example(self) -> torch.Tensor:
        """Two blank images at the model's input size (the batch axis is dynamic in the export)."""
        return torch.zeros(2, *self.preprocessing["input_size"])

    def _input(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` batch on the model's device and dtype."""
        param = next(self._require("model").parameters())
        if batch.ndim != 4:
            raise FaceZooError(f"model {self.name!r} expects a (B, 3, H, W) batch, got shape {tuple(batch.shape)}")
        return batch.to(device=param.device, dtype=param.dtype, non_blocking=True)


class TwoStageAdapter(TorchImageAdapter):
    """A module with timm's interface: ``forward_features(x)`` → the last feature map, ``forward_head(maps,
    pre_logits=True)`` → pooled penultimate features ``(B, D)``, ``forward_head(maps)`` → logits ``(B, C)``.

    timm models have it natively; the CIFAR ResNets and EfficientNet-Lite are given it here. One
    ``forward_features`` pass yields both outputs (the head is a pooling and a linear layer).
    """

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self._require("model")
        maps = model.forward_features(self._input(batch))
        out = {"features": model.forward_head(maps, pre_logits=True).flatten(1).float()}
        if self.num_logits:
            out["logits"] = model.forward_head(maps).float()
        return out

    def trainable(self, dense: bool = False) -> nn.Module:
        wrapper = _TwoStageMaps if dense else _TwoStageBackbone
        return wrapper(copy.deepcopy(self._require("model")), self.name).train().requires_grad_(True)

    def feature_maps(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)``: the output of ``forward_features``; ViT tokens are laid back on their patch grid."""
        model = self._require("model")
        return _as_map(model, model.forward_features(self._input(batch)), self.name).float()


def _as_map(model: nn.Module, maps: torch.Tensor, name: str) -> torch.Tensor:
    """``forward_features`` output as ``(B, C, h, w)``: NHWC transposed, ViT tokens laid back on their patch grid."""
    if maps.ndim == 4:
        return maps.permute(0, 3, 1, 2) if getattr(model, "output_fmt", "NCHW") == "NHWC" else maps
    if maps.ndim != 3:
        raise FaceZooError(f"model {name!r} gives features of shape {tuple(maps.shape)}, not a feature map")
    tokens = maps[:, getattr(model, "num_prefix_tokens", 0):]
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None or grid[0] * grid[1] != tokens.shape[1]:
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise FaceZooError(
                f"model {name!r} gives {tokens.shape[1]} tokens, which do not form a known patch grid: "
                f"it has no dense feature map"
            )
        grid = (side, side)
    return tokens.reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[2]).permute(0, 3, 1, 2)


class _TwoStageBackbone(nn.Module):
    """Pooled penultimate features of a module with timm's two-stage interface, differentiable."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True).flatten(1)


class _TwoStageMaps(_TwoStageBackbone):
    """The last feature map ``(B, C, h, w)`` of a module with timm's two-stage interface, differentiable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _as_map(self.model, self.model.forward_features(x), self.name)


class _Headless(nn.Module):
    """A classifier whose last linear layer was replaced by the identity: its output is the penultimate features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).flatten(1)


class _Truncated(nn.Module):
    """A network whose output is one of its modules' outputs (read by a hook; the classifier tail it also runs is a
    pooling and a linear layer, negligible)."""

    def __init__(self, model: nn.Module, output: nn.Module):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _capture(self.output, inputs=False) as box:
            self.model(x)
        return box[-1]


@contextmanager
def _capture(module: nn.Module, inputs: bool) -> Iterator[list[torch.Tensor]]:
    """Collect the input (``inputs=True``) or output of ``module`` during the ``with`` block."""
    box: list[torch.Tensor] = []
    if inputs:
        handle = module.register_forward_pre_hook(lambda _m, args: box.append(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _args, out: box.append(out))
    try:
        yield box
    finally:
        handle.remove()


class HookedAdapter(TorchImageAdapter):
    """A plain classifier (torchvision's): features = the input of its last ``nn.Linear``, logits = its output, maps
    = the output of ``map_module`` (e.g. ``features`` or ``layer4``), all read by hooks during the model's own forward,
    so any architecture whose classifier ends in a linear layer works unchanged.
    """

    _detached = ("model", "classifier", "map_module")

    def __init__(self, *, classifier: nn.Linear, map_module: nn.Module | None, **kwargs: Any):
        super().__init__(dim=classifier.in_features, num_logits=classifier.out_features, **kwargs)
        self.classifier, self.map_module = classifier, map_module

    def trainable(self, dense: bool = False) -> nn.Module:
        model, classifier = self._require("model"), self._require("classifier")
        target = self.map_module if dense else classifier
        if dense and target is None:
            raise NotTrainable(f"model {self.name!r} ({self.source}) gives no dense feature maps")
        path = next((n for n, m in model.named_modules() if m is target), None)
        if not path:
            raise NotTrainable(f"model {self.name!r}: its {'feature map' if dense else 'classifier'} is not a named "
                               f"submodule of the network")
        clone = copy.deepcopy(model)
        if dense:
            return _Truncated(clone, clone.get_submodule(path)).train().requires_grad_(True)
        parent, _, attr = path.rpartition(".")
        setattr(clone.get_submodule(parent), attr, nn.Identity())
        return _Headless(clone).train().requires_grad_(True)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self._require("model")
        with _capture(self._require("classifier"), inputs=True) as box:
            logits = model(self._input(batch))
        return {"features": box[-1].flatten(1).float(), "logits": logits.float()}

    def feature_maps(self, batch: torch.Tensor) -> torch.Tensor:
        if self.map_module is None and self.model is not None:
            return super().feature_maps(batch)
        with _capture(self._require("map_module"), inputs=False) as box:
            self._require("model")(self._input(batch))
        return box[-1].float()

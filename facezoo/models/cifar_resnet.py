"""``cifar_resnet:<20|32|44|56>``: the CIFAR-10 ResNets of He et al. 2016, §4.2, in plain torch.

Three stages of ``n`` basic blocks (16, 32, 64 channels; depth ``6n + 2``), option-A shortcuts (stride-2
subsampling and zero-padded channels, no parameters), batch norm, global average pooling and a linear 64 → 10
classifier. The module and parameter names follow akamaster/pytorch_resnet_cifar10, whose trained weights
(``resnet{20,32,44,56}-*.th``, 91.8–93.6 % top-1) are in the shared data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facezoo.errors import FaceZooError
from facezoo.models._registry import ModelUnavailableError, register_source
from facezoo.models._torch_image import TwoStageAdapter
from facezoo.models._transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing
from facezoo.models._weights import load_into, load_state_dict
from facezoo.models.base import file_digest

__all__ = ["CIFAR_DEPTHS", "CIFAR_PREPROCESSING", "CifarResNet", "cifar_resnet", "cifar_resnet_adapter"]

CIFAR_DEPTHS = (20, 32, 44, 56)
# The normalisation akamaster trained with: ImageNet's statistics, not CIFAR's own. On 1 000 images (100 a class) of
# the shared, JPEG re-encoded CIFAR-10 test set, ResNet-20/32/44/56 score 80.4/84.0/82.1/82.5 % with it (CIFAR's
# (0.4914, 0.4822, 0.4465)/(0.2470, 0.2435, 0.2616) gives 80.7/82.8/81.8/82.7 %: the weights barely care).
CIFAR_PREPROCESSING: dict[str, Any] = {"size": 32, "resize": 32, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes - in_planes  # option A: the extra channels of the shortcut are zeros

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.pad:
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32 × 32 inputs, with timm's ``forward_features``/``forward_head`` interface.

    Shapes: input ``(B, 3, 32, 32)``; ``forward_features`` → ``(B, 64, 8, 8)``; ``forward_head(·, pre_logits=True)``
    → ``(B, 64)``; ``forward`` → logits ``(B, num_classes)``.
    """

    num_features = 64

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise FaceZooError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*(_BasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                               for i in range(n)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def shared_data_dir() -> Path:
    """``$FACEZOO_SHARED_DATA``, else ``<repository>/../shared/data``."""
    env = os.environ.get("FACEZOO_SHARED_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def cifar_resnet_adapter(depth: int, weights: Path, *, name: str, source: str, trust_pickle: bool = False,
                         preprocessing: dict[str, Any] | None = None) -> TwoStageAdapter:
    """The adapter of a CIFAR ResNet-``depth`` with the weights file ``weights``."""
    state_dict = load_state_dict(weights, trust_pickle=trust_pickle)
    model = CifarResNet(depth, num_classes=int(state_dict["linear.weight"].shape[0]) if "linear.weight" in state_dict
                        else 10)
    load_into(model, state_dict, f"CIFAR ResNet-{depth} from {weights}")
    transform = ImagePreprocessing.build(CIFAR_PREPROCESSING, preprocessing, source)
    return TwoStageAdapter(name=name, source=source, model=model, transform=transform,
                           preprocessing=transform.describe(), dim=CifarResNet.num_features,
                           num_logits=model.num_classes, digest=file_digest(weights))


@register_source("cifar_resnet", syntax="cifar_resnet:<20|32|44|56>",
                 description="the CIFAR-10 ResNets of He et al. 2016 (akamaster's weights in the shared data)")
def cifar_resnet(ref: str, *, name: str, source: str, weights_dir: str | None = None,
                 preprocessing: dict[str, Any] | None = None) -> TwoStageAdapter:
    """``cifar_resnet:<depth>``: weights ``resnet<depth>-*.th`` from ``weights_dir`` (default:
    ``<shared data>/cifar10-resnets``). ``preprocessing`` overrides fields of :class:`ImagePreprocessing`."""
    if not ref.isdigit() or int(ref) not in CIFAR_DEPTHS:
        raise FaceZooError(f"cifar_resnet depth must be one of {', '.join(map(str, CIFAR_DEPTHS))}, got {ref!r}")
    folder = Path(weights_dir).expanduser() if weights_dir else shared_data_dir() / "cifar10-resnets"
    found = sorted(folder.glob(f"resnet{ref}-*.th"))
    if not found:
        raise ModelUnavailableError(
            f"no CIFAR ResNet-{ref} weights (resnet{ref}-*.th) in {folder}: set FACEZOO_SHARED_DATA to the shared "
            f"data folder or give options: {{weights_dir: DIR}}"
        )
    return cifar_resnet_adapter(int(ref), found[0], name=name, source=source, preprocessing=preprocessing)

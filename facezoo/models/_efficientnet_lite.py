"""EfficientNet-Lite (efficientnet_lite_pytorch's ``EfficientNet``) behind timm's two-stage interface."""

from __future__ import annotations

import torch
from torch import nn

from facezoo.models._transforms import ImagePreprocessing

__all__ = ["LITE_PREPROCESSING", "EfficientNetLite"]

# TensorFlow's EfficientNet evaluation recipe, which the weights come from: resize to size + 32, centre crop, bicubic;
# pixels scaled to [-1, 1] as in TF-Lite's (x - 127) / 128, as timm's tf_efficientnet_lite* do. The package's README
# example uses ImageNet's mean/std instead, but on 300 CIFAR-10 test images [-1, 1] agrees more with MobileNetV2's
# top-1 (27-29 % vs 17-21 % for Lite0/1/2) and is more confident: the weights were trained with it.
LITE_PREPROCESSING = {
    variant: ImagePreprocessing(size=size, resize=size + 32, interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                                std=(0.5, 0.5, 0.5))
    for variant, size in ((0, 224), (1, 240), (2, 260), (3, 280), (4, 300))
}


class EfficientNetLite(nn.Module):
    """Shapes: ``forward_features`` → ``(B, 1280, h, w)``; ``forward_head(·, pre_logits=True)`` → ``(B, 1280)``
    (the package's ``extract_features(x).mean((2, 3))``); ``forward_head(·)`` → logits ``(B, 1000)``."""

    num_features = 1280

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.num_classes = net._fc.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.net._fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

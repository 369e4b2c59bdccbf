"""CRAFT's VGG16-BN backbone (torchvision ``vgg16_bn`` features up to conv5_2) behind timm's two-stage interface."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CraftBackbone", "craft_backbone_state"]

# CRAFT's BaseNet splits vgg16_bn().features into slice1..slice4 = features[0:39] under their original
# indices (slice5 is CRAFT's own dilated fc6/fc7, not VGG); index 39 is the ReLU after conv5_2's BatchNorm
_DEPTH = 40
_PREFIX = "basenet.slice"


def craft_backbone_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VGG16-BN tensors of a CRAFT checkpoint (``module.`` prefixes already removed), keyed as in
    ``vgg16_bn().features``: ``basenet.slice2.12.weight`` → ``12.weight``."""
    return {key.split(".", 2)[2]: value for key, value in state_dict.items()
            if key.startswith(_PREFIX) and not key.startswith(f"{_PREFIX}5")}


class CraftBackbone(nn.Module):
    """Shapes: ``forward_features`` → ``(B, 512, H/16, W/16)``; ``forward_head(·, pre_logits=True)`` → ``(B, 512)``
    (the spatial mean). No classifier: CRAFT is a text detector, its head predicts region and affinity maps."""

    num_features = 512

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.features = torchvision.models.vgg16_bn(weights=None).features[:_DEPTH]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not pre_logits:
            raise NotImplementedError("the CRAFT backbone has no classifier: only pre_logits features")
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), pre_logits=True)

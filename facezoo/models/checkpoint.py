"""``checkpoint:<architecture>@<path>``: a local weights file for a known architecture (timm, torchvision, CIFAR).

The file is read with ``torch.load(weights_only=True)`` (or safetensors): a file that needs full unpickling is
refused unless the zoo entry says ``trust_pickle: true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from facezoo.errors import FaceZooError
from facezoo.models._registry import register_source
from facezoo.models._torch_image import HookedAdapter, TorchImageAdapter
from facezoo.models._transforms import ImagePreprocessing
from facezoo.models._weights import load_into, load_state_dict
from facezoo.models.base import file_digest
from facezoo.models.cifar_resnet import CIFAR_DEPTHS, cifar_resnet_adapter
from facezoo.models.timm_models import timm_adapter

__all__ = ["checkpoint_model", "torchvision_adapter"]

# the child whose output is the last feature map, by torchvision family (the first one a model has is used)
_MAP_MODULES = ("features", "layer4", "trunk_output", "conv5", "layers", "Mixed_7c", "inception5b")
_AUX_HEADS = ("AuxLogits", "aux1", "aux2")


def _torchvision_defaults(arch: str) -> dict[str, Any]:
    """Input size, resize and normalisation of torchvision's own weights for ``arch`` (no download: metadata)."""
    import torchvision

    t = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    return {"size": t.crop_size[0], "resize": t.resize_size[0], "mean": tuple(t.mean), "std": tuple(t.std),
            "interpolation": t.interpolation.value}


def _last_linear(model: nn.Module, arch: str) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise FaceZooError(f"torchvision model {arch!r} has no final linear classifier: not supported as a checkpoint")
    return linears[-1]


def torchvision_adapter(arch: str, state_dict: dict[str, torch.Tensor], *, name: str, source: str, digest: str,
                        preprocessing: dict[str, Any] | None = None) -> HookedAdapter:
    """A torchvision classifier ``arch`` with ``state_dict``; the head size is the checkpoint's."""
    import torchvision

    model = torchvision.models.get_model(arch, weights=None)
    head_name, head = _last_linear(model, arch)
    saved = state_dict.get(f"{head_name}.weight")
    if saved is not None and saved.shape[0] != head.out_features:
        model = torchvision.models.get_model(arch, weights=None, num_classes=int(saved.shape[0]))
        head_name, head = _last_linear(model, arch)
    for aux in _AUX_HEADS:  # Inception/GoogLeNet checkpoints saved without their training-only auxiliary heads
        if getattr(model, aux, None) is not None and not any(k.startswith(f"{aux}.") for k in state_dict):
            setattr(model, aux, None)
            model.aux_logits = False
    load_into(model, state_dict, f"torchvision {arch}")
    children = dict(model.named_children())
    map_module = next((children[c] for c in _MAP_MODULES if c in children), None)
    transform = ImagePreprocessing.build(_torchvision_defaults(arch), preprocessing, source)
    return HookedAdapter(name=name, source=source, model=model, transform=transform,
                         preprocessing=transform.describe(), digest=digest, classifier=head, map_module=map_module,
                         channels_last=map_module is not None)


def _parse(ref: str) -> tuple[str, str, Path]:
    """``[timm/|torchvision/]<arch>@<path>`` → (family, arch, path); a bare name is timm's, else torchvision's."""
    arch, sep, path = ref.partition("@")
    if not sep or not arch or not path:
        raise FaceZooError(f"checkpoint source must be 'checkpoint:<architecture>@<path>', got 'checkpoint:{ref}'")
    family, slash, bare = arch.partition("/")
    if slash:
        if family not in ("timm", "torchvision"):
            raise FaceZooError(f"checkpoint architecture prefix must be 'timm/' or 'torchvision/', got {family!r}")
        return family, bare, Path(path).expanduser()
    if arch.startswith("cifar_resnet"):
        return "cifar", arch, Path(path).expanduser()
    import timm

    return ("timm" if timm.is_model(arch) else "torchvision"), arch, Path(path).expanduser()


@register_source("checkpoint", syntax="checkpoint:[timm/|torchvision/]<architecture>@<path>",
                 description="a local weights file (state dict or safetensors) for a timm, torchvision or CIFAR "
                             "ResNet (cifar_resnet20...56) architecture")
def checkpoint_model(ref: str, *, name: str, source: str, trust_pickle: bool = False,
                     preprocessing: dict[str, Any] | None = None) -> TorchImageAdapter:
    """``checkpoint:<arch>@<path>``. Options: ``trust_pickle`` (allow a file that needs full unpickling: it runs the
    file's code), ``preprocessing`` (fields of :class:`ImagePreprocessing`; torchvision and CIFAR architectures only,
    timm ones use their pretrained config)."""
    family, arch, path = _parse(ref)
    if family == "timm":
        if preprocessing is not None:
            raise FaceZooError(f"{source}: the preprocessing option does not apply to timm architectures")
        return timm_adapter(arch, name=name, source=source, checkpoint=str(path), trust_pickle=trust_pickle)
    if family == "cifar":
        depth = arch.removeprefix("cifar_resnet")
        if not depth.isdigit() or int(depth) not in CIFAR_DEPTHS:
            raise FaceZooError(f"CIFAR architecture must be one of "
                               f"{', '.join(f'cifar_resnet{d}' for d in CIFAR_DEPTHS)}, got {arch!r}")
        return cifar_resnet_adapter(int(depth), path, name=name, source=source, trust_pickle=trust_pickle,
                                    preprocessing=preprocessing)
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise FaceZooError(f"{arch!r} is neither a timm nor a torchvision classification model "
                           f"(timm.list_models(), torchvision.models.list_models() list them)")
    state_dict = load_state_dict(path, trust_pickle=trust_pickle)
    return torchvision_adapter(arch, state_dict, name=name, source=source, digest=file_digest(path),
                               preprocessing=preprocessing)

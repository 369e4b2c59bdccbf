"""``timm:<name>``: any timm image model, with timm's own preprocessing for its pretrained weights."""

from __future__ import annotations

import difflib
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facezoo.errors import FaceZooError
from facezoo.models._hub import hub_errors, hub_offline
from facezoo.models._registry import ModelUnavailableError, register_source
from facezoo.models._torch_image import TwoStageAdapter
from facezoo.models._weights import load_into, load_state_dict
from facezoo.models.base import file_digest, state_dict_digest

__all__ = ["timm_adapter", "timm_model"]


def _check_name(name: str) -> None:
    import timm

    if not name.startswith("hf-hub:") and not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
        hint = f"; close matches: {', '.join(close)}" if close else "; timm.list_models('*pattern*') lists them"
        raise FaceZooError(f"timm has no model {name!r}{hint}")


def _checkpoint_num_classes(arch: str, state_dict: dict[str, torch.Tensor]) -> int:
    """The classifier size the checkpoint was saved with (0 for a headless checkpoint)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch, allow_unregistered=True)
    names = cfg.classifier if cfg is not None else "head"
    for key in (names,) if isinstance(names, str) else names:
        if f"{key}.weight" in state_dict:
            return int(state_dict[f"{key}.weight"].shape[0])
    return 0


def _url_cached(cfg: Any) -> bool:
    """Whether a URL-only pretrained file (no Hugging Face Hub copy) is already in torch's hub cache."""
    return bool(cfg.url) and (Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name).is_file()


def _pretrained(arch: str) -> nn.Module:
    import timm

    how = (f"Pre-download it on a machine with network (python -c \"import timm; timm.create_model('{arch}', "
           f"pretrained=True)\") and copy ~/.cache/huggingface, or give a local file: options: {{checkpoint: PATH}}")
    if hub_offline() and not arch.startswith("hf-hub:"):
        # weights hosted only at a URL (no Hub copy) are fetched by urllib, which offline mode does not stop
        cfg = timm.models.get_pretrained_cfg(arch, allow_unregistered=True)
        if cfg is not None and not cfg.hf_hub_id and not _url_cached(cfg):
            raise ModelUnavailableError(f"timm:{arch} pretrained weights cannot be fetched offline. {how}")
    with hub_errors(f"timm:{arch} pretrained weights", how):
        return timm.create_model(arch, pretrained=True)


_SEEDING = threading.Lock()  # torch's RNG is global: two threads seeding at once would interleave their draws


def _seeded_random(arch: str) -> nn.Module:
    """Random weights that are the same on every call (seed 0): same digest, same cache key, same features."""
    import timm

    with _SEEDING, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model(arch, pretrained=False)


def timm_adapter(arch: str, *, name: str, source: str, pretrained: bool = True, checkpoint: str | None = None,
                 trust_pickle: bool = False) -> TwoStageAdapter:
    """The adapter of timm architecture ``arch``: pretrained from timm's hub, from ``checkpoint``, or random."""
    import timm
    import timm.data

    _check_name(arch)
    if checkpoint is not None:
        state_dict = load_state_dict(checkpoint, trust_pickle=trust_pickle)
        model = timm.create_model(arch, pretrained=False, num_classes=_checkpoint_num_classes(arch, state_dict))
        load_into(model, state_dict, f"timm:{arch} from {checkpoint}")
        digest = file_digest(Path(checkpoint).expanduser())
    else:
        model = _pretrained(arch) if pretrained else _seeded_random(arch)
        digest = state_dict_digest(model)
    config = timm.data.resolve_model_data_config(model)
    preprocessing = {"kind": "timm", **{k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}}
    return TwoStageAdapter(
        name=name, source=source, model=model, transform=timm.data.create_transform(**config),
        preprocessing=preprocessing, dim=getattr(model, "head_hidden_size", None) or model.num_features,
        num_logits=model.num_classes or None, digest=digest,
        # channels-last speeds up convolutions; transformers (patch embeddings) gain nothing from it
        channels_last=not hasattr(model, "patch_embed"),
    )


@register_source("timm", syntax="timm:<timm model name>",
                 description="a timm image model with its pretrained weights (hub cache or a local checkpoint file)")
def timm_model(ref: str, *, name: str, source: str, pretrained: bool = True, checkpoint: str | None = None,
               trust_pickle: bool = False) -> TwoStageAdapter:
    """``timm:<name>``. Options: ``pretrained`` (False: random weights), ``checkpoint`` (a local weights file, loaded
    with ``weights_only=True``), ``trust_pickle`` (allow a checkpoint that needs full unpickling: runs its code)."""
    return timm_adapter(ref, name=name, source=source, pretrained=pretrained, checkpoint=checkpoint,
                        trust_pickle=trust_pickle)

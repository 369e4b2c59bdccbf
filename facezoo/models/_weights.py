"""Loading weight files without running their code: ``weights_only=True`` or safetensors, never a silent fallback."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from facezoo.errors import FaceZooError, first_line

__all__ = ["load_into", "load_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model")  # training scripts save {"state_dict": ..., "epoch": ...} or {"model": ...}


def load_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, on CPU, unwrapped and without ``module.`` prefixes.

    Args:
        path: a ``.safetensors`` file, or a ``torch.save`` file holding a state dict, possibly wrapped in a dict
            under ``"state_dict"`` or ``"model"`` and saved from ``DataParallel`` (``module.`` key prefixes).
        trust_pickle: load with ``weights_only=False``, which runs whatever code the file's pickle names. Only for
            files whose origin you trust; the default refuses such files.

    Raises:
        FaceZooError: the file is missing, holds more than tensors and plain containers (unless ``trust_pickle``),
            or holds no tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FaceZooError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(path, device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
        except pickle.UnpicklingError as e:
            raise FaceZooError(
                f"refusing to load {str(path)!r}: it holds Python objects beyond tensors, and unpickling them could "
                f"run code ({first_line(e)}). Re-save it as a plain state dict (torch.save(model.state_dict(), path)) "
                f"or as safetensors, or, only if you trust its origin, pass the option trust_pickle: true"
            ) from None
        except (RuntimeError, EOFError, OSError) as e:
            raise FaceZooError(f"cannot read weights file {str(path)!r}: {e}") from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise FaceZooError(f"weights file {str(path)!r} holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise FaceZooError(f"weights file {str(path)!r} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def load_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state_dict)`` (strict), with mismatches reported in one line."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise FaceZooError(f"the weights of {what} do not fit its architecture: {detail[:600]}") from None

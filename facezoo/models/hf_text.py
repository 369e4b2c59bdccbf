"""``hf:<hub id or local directory>``: a Hugging Face transformers text encoder, pooled to one vector per text.

Features are the last hidden layer pooled over the attention mask (``mean``, as sentence-transformers does) or its
first token (``cls``). A checkpoint whose config names a ``...ForSequenceClassification`` architecture is loaded
with its head, so the same forward pass also gives its logits.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch

from facezoo.errors import FaceZooError
from facezoo.models._common import TextAdapter
from facezoo.models._hub import hub_errors, hub_offline
from facezoo.models._registry import register_source
from facezoo.models.base import NotTrainable, state_dict_digest

__all__ = ["HfTextAdapter", "hf_adapter", "hf_model", "pool"]

Pooling = Literal["mean", "cls"]
DEFAULT_MAX_LENGTH = 256


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """``(B, T, H)`` hidden states and ``(B, T)`` mask → ``(B, H)``: masked mean, or the first (CLS) token."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class HfTextAdapter(TextAdapter):
    """A transformers encoder; ``collate`` tokenises (the tokenizer pickles, the model stays in the main process)."""

    _detached = ("model",)
    export_axes = {0: "batch", 1: "sequence"}

    def __init__(self, *, name: str, source: str, model: torch.nn.Module, tokenizer: Any, pooling: Pooling,
                 max_length: int, num_logits: int | None, digest: str):
        self.name, self.source, self.digest = name, source, digest
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.pooling, self.max_length = tokenizer, pooling, max_length
        self.dim, self.num_logits = int(model.config.hidden_size), num_logits
        backend = getattr(tokenizer, "backend_tokenizer", None)
        vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
        self.preprocessing = {"kind": "text", "tokenizer": hashlib.sha256(vocab.encode()).hexdigest()[:16],
                              "max_length": max_length, "pooling": pooling, "truncation": True}

    def collate(self, items: Sequence[str]) -> Any:
        """Texts → a padded ``BatchEncoding`` (``input_ids``, ``attention_mask``, ... each ``(B, T)``)."""
        return self.tokenizer(list(items), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def to(self, device: torch.device | str, channels_last: bool | None = None) -> HfTextAdapter:
        self.model = self._require("model").to(device)
        return self

    def export_example(self) -> dict[str, torch.Tensor]:
        """Two texts of different lengths: the trace sees padding, and both axes vary in the export."""
        return dict(self.collate(["a", "an example sentence, long enough to pad the first one"]))

    def trainable(self, dense: bool = False) -> torch.nn.Module:
        if dense:
            raise NotTrainable(f"text model {self.name!r} has no dense feature maps")
        encoder = copy.deepcopy(self._require("model").base_model)  # base_model: the encoder without any head
        return _PooledEncoder(encoder, self.pooling).train().requires_grad_(True)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        model = self._require("model")
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items()}
        out = model(**inputs, output_hidden_states=self.num_logits is not None)
        hidden = out.hidden_states[-1] if self.num_logits else out.last_hidden_state
        result = {"features": pool(hidden, inputs["attention_mask"], self.pooling).float()}
        if self.num_logits:
            result["logits"] = out.logits.float()
        return result


class _PooledEncoder(torch.nn.Module):
    """A transformers encoder (without any classification head) and its pooling, differentiable."""

    def __init__(self, encoder: torch.nn.Module, pooling: Pooling):
        super().__init__()
        self.encoder, self.pooling = encoder, pooling

    def forward(self, batch: Any) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items()}
        return pool(self.encoder(**inputs).last_hidden_state, inputs["attention_mask"], self.pooling)


def _default_max_length(folder: Path | None) -> int:
    """sentence-transformers' ``max_seq_length`` when the model ships one (its training length), else 256."""
    config = folder / "sentence_bert_config.json" if folder is not None else None
    if config is not None and config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", DEFAULT_MAX_LENGTH))
    return DEFAULT_MAX_LENGTH


def hf_adapter(ref: str, *, name: str, source: str, pooling: Pooling = "mean",
               max_length: int | None = None) -> HfTextAdapter:
    """The adapter of the transformers model in directory or hub id ``ref``."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if pooling not in ("mean", "cls"):
        raise FaceZooError(f"{source}: pooling must be 'mean' or 'cls', got {pooling!r}")
    folder = Path(ref).expanduser()
    if folder.is_dir():
        location, local_only, guard = str(folder), True, nullcontext()
    elif ref.startswith(("/", ".", "~")):
        raise FaceZooError(f"{source}: directory {str(folder)!r} does not exist")
    else:
        folder, location, local_only = None, ref, hub_offline()
        guard = hub_errors(f"hf:{ref}", f"Pre-download it on a machine with network (hf download {ref}) and copy "
                                        f"~/.cache/huggingface, or save it to a directory and use hf:/path/to/dir")
    try:
        with guard:
            config = AutoConfig.from_pretrained(location, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
            classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or ())
            loader = AutoModelForSequenceClassification if classifier else AutoModel
            model = loader.from_pretrained(location, local_files_only=local_only)
    except (OSError, ValueError) as e:
        if isinstance(e, FaceZooError):
            raise
        raise FaceZooError(f"{source}: not a loadable transformers model: {' '.join(str(e).split())[:300]}") from None
    limit = min(getattr(config, "max_position_embeddings", None) or 10**6, tokenizer.model_max_length)
    return HfTextAdapter(name=name, source=source, model=model, tokenizer=tokenizer, pooling=pooling,
                         max_length=min(max_length or _default_max_length(folder), limit),
                         num_logits=int(config.num_labels) if classifier else None, digest=state_dict_digest(model))


@register_source("hf", syntax="hf:<hub id or local directory>",
                 description="a Hugging Face transformers text encoder (mean or CLS pooling; logits when it has a "
                             "sequence-classification head)")
def hf_model(ref: str, *, name: str, source: str, pooling: Pooling = "mean",
             max_length: int | None = None) -> HfTextAdapter:
    """``hf:<id or dir>``. Options: ``pooling`` (``mean`` over the attention mask, or ``cls``), ``max_length``
    (tokens; default: the model's sentence-transformers length, else 256)."""
    return hf_adapter(ref, name=name, source=source, pooling=pooling, max_length=max_length)

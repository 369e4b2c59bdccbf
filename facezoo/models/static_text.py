"""Text encoders that their own library runs on the CPU, not PyTorch: lookup tables (WordLlama, fastText, spaCy's
static vectors, a model2vec-style table) and networks in NumPy or C (spaCy's tok2vec CNN, USE in NumPy). None of them
is trainable here, so fine-tuning validates them with a head on frozen features (``frozen_head``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facezoo.models._common import TextAdapter
from facezoo.models.base import NotTrainable

__all__ = ["FastTextAdapter", "LibraryTextAdapter", "WordLlamaAdapter"]


class WordLlamaAdapter(TextAdapter):
    """WordLlama static token embeddings, average-pooled by WordLlama itself: ``(B, dim)``; no classifier. ``dim`` below
    the file's is a Matryoshka truncation (the first ``dim`` coordinates of the same vectors: a variant, not another
    encoder)."""

    _detached = ("wordllama",)
    runtime = "wordllama"

    def __init__(self, *, name: str, source: str, wordllama: Any, dim: int, digest: str, config: str):
        self.name, self.source, self.digest = name, source, digest
        self.wordllama, self.dim = wordllama, dim
        self.preprocessing = {"kind": "text", "model": f"wordllama-{config}-{dim}", "norm": False}

    def trainable(self, dense: bool = False) -> torch.nn.Module:
        raise NotTrainable(f"model {self.name!r} is a WordLlama static embedding table (NumPy inference, truncated "
                           f"Matryoshka vectors): there is no network to fine-tune")

    def forward(self, batch: Sequence[str]) -> dict[str, torch.Tensor]:
        vectors = self._require("wordllama").embed(list(batch), norm=False, return_np=True)
        return {"features": torch.from_numpy(np.asarray(vectors, dtype=np.float32).reshape(len(batch), self.dim))}


class FastTextAdapter(TextAdapter):
    """A supervised fastText model: its sentence vector ``(B, D)`` (mean of word and character n-gram vectors) and the
    log-probabilities of its labels ``(B, C)`` as logits, in the model file's fixed label order."""

    _detached = ("fasttext",)
    runtime = "fasttext"
    # fastText clamps probabilities through log(p + 1e-5); labels below that are not returned and get this floor
    _FLOOR = 1e-5

    def __init__(self, *, name: str, source: str, path: Path, digest: str):
        import fasttext

        self.name, self.source, self.digest = name, source, digest
        self.fasttext = fasttext.load_model(str(path))
        self.dim = int(self.fasttext.get_dimension())
        self.labels = [label.removeprefix("__label__") for label in self.fasttext.get_labels()]
        self._index = {f"__label__{label}": i for i, label in enumerate(self.labels)}
        self.num_logits = len(self.labels) or None
        self.preprocessing = {"kind": "text", "model": path.name, "newlines": "space"}

    def trainable(self, dense: bool = False) -> torch.nn.Module:
        raise NotTrainable(f"model {self.name!r} is a fastText model (quantised n-gram embeddings in a C++ library): "
                           f"it cannot be fine-tuned from PyTorch")

    def forward(self, batch: Sequence[str]) -> dict[str, torch.Tensor]:
        model = self._require("fasttext")
        texts = [" ".join(text.splitlines()) for text in batch]  # fastText reads one line per text
        out = {"features": torch.from_numpy(np.stack([model.get_sentence_vector(t) for t in texts]).astype(np.float32)
                                            .reshape(len(texts), self.dim))}
        if self.num_logits:
            probs = np.zeros((len(texts), self.num_logits))
            for row, text in enumerate(texts):
                # the binding's own predict: FastText.predict breaks on NumPy 2 (np.array(copy=False))
                for p, label in model.f.predict(text + "\n", -1, 0.0, "strict"):
                    probs[row, self._index[label]] = p
            out["logits"] = torch.from_numpy(np.log(probs + self._FLOOR).astype(np.float32))
        return out


class LibraryTextAdapter(TextAdapter):
    """A text encoder run by its own library: ``encode(texts)`` → ``(B, dim)`` array; no classifier.

    ``runtime`` names the library (the extraction engine records it as the backend), ``frozen`` says why it cannot be
    fine-tuned from PyTorch (the message of :class:`NotTrainable`), ``preprocessing`` describes it for cache keys.
    """

    _detached = ("encode",)

    def __init__(self, *, name: str, source: str, encode: Callable[[list[str]], Any], dim: int, digest: str,
                 runtime: str, frozen: str, preprocessing: dict[str, Any]):
        self.name, self.source, self.digest = name, source, digest
        self.encode, self.dim, self.runtime, self.frozen = encode, dim, runtime, frozen
        self.preprocessing = {"kind": "text", **preprocessing}

    def trainable(self, dense: bool = False) -> torch.nn.Module:
        raise NotTrainable(f"model {self.name!r} {self.frozen}: there is no PyTorch network to fine-tune")

    def forward(self, batch: Sequence[str]) -> dict[str, torch.Tensor]:
        vectors = np.asarray(self._require("encode")(list(batch)), dtype=np.float32)
        return {"features": torch.from_numpy(vectors.reshape(len(batch), self.dim))}

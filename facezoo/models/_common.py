"""What every adapter here shares: pickling without the model (for DataLoader workers) and the text adapters' I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from facezoo.errors import FaceZooError
from facezoo.models.base import ModelAdapter

__all__ = ["DetachableAdapter", "TextAdapter"]


class DetachableAdapter(ModelAdapter):
    """An adapter that pickles without its model.

    DataLoader workers started by ``spawn`` (macOS, CUDA) receive ``adapter.preprocess`` pickled, i.e. the adapter
    itself. They only run ``preprocess`` and ``collate``, so the attributes named in ``_detached`` (the network, an
    ONNX Runtime session, a fastText model: large or unpicklable) are left out and come back as ``None``; such a copy
    refuses ``forward``.
    """

    _detached: tuple[str, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for attr in self._detached:
            state[attr] = None
        return state

    def _require(self, attr: str) -> Any:
        value = getattr(self, attr)
        if value is None:
            raise FaceZooError(
                f"model {self.name!r} is a pickled copy made for DataLoader workers (preprocess/collate only); "
                f"call create_model({self.source!r}) to run it"
            )
        return value


class TextAdapter(DetachableAdapter):
    """Text models: a sample is a ``str``, a batch the list of them (tokenisation, if any, happens in ``collate``)."""

    modality = "text"

    def preprocess(self, sample: Any) -> str:
        if not isinstance(sample, str):
            raise FaceZooError(f"text model {self.name!r} takes str samples, got {type(sample).__name__}")
        return sample

    def collate(self, items: Sequence[str]) -> Any:
        return list(items)

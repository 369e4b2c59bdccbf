"""``reevaluate``: re-rank every registered dataset with the current zoo, as a scheduled (cron) deployment.

Features already extracted are cache hits, so a nightly run costs only what is new (a model added to the zoo, a
dataset onboarded since). The schedule lives in ``configs/schedules/reevaluate.yaml``; ``facezoo serve`` runs the
deployment with ``flow.serve(cron=...)`` in the foreground (``prefect.yaml`` holds the same deployment for a Prefect
server with work pools).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.schedules import Cron
from pydantic import BaseModel, ConfigDict, ValidationError

from facezoo.config import Home
from facezoo.errors import FaceZooError
from flows.rank import one_line, rank_zoo
from storage.results import ResultsStore
from tasks._prefect import flow

__all__ = ["Schedule", "deployment", "load_schedule", "reevaluate", "serve"]

SCHEDULE = Path(__file__).resolve().parents[1] / "configs" / "schedules" / "reevaluate.yaml"


class Schedule(BaseModel):
    """The re-evaluation deployment's settings (``configs/schedules/reevaluate.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "nightly-reevaluation"
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    zoo: str = "demo-image"
    device: str = "auto"


def load_schedule(path: str | Path = SCHEDULE) -> Schedule:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        return Schedule(**raw)
    except (OSError, yaml.YAMLError) as error:
        raise FaceZooError(f"{path}: cannot read the schedule ({one_line(error)})") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in error.errors())
        raise FaceZooError(f"{path}: {problems}") from None
    except TypeError as error:
        raise FaceZooError(f"{path}: {one_line(error)}") from None


@flow(name="reevaluate-zoo")
def reevaluate(zoo: str = "demo-image", device: str = "auto", home: str | None = None) -> dict[str, Any]:
    """Re-rank ``zoo`` on every registered dataset; one dataset's failure does not stop the others."""
    where = Home.resolve(home).ensure()
    results = ResultsStore(where.results_db)
    done: dict[str, Any] = {}
    for row in results.list_datasets():
        try:
            done[row["name"]] = rank_zoo(zoo, row["name"], device=device, home=str(where.root))["status"]
        except Exception as error:  # noqa: BLE001 - recorded per dataset, never fatal to the schedule
            done[row["name"]] = f"failed: {one_line(error)}"
    return done


def deployment(schedule: Schedule, home: str | None = None) -> Any:
    """The cron deployment of :func:`reevaluate` that ``serve`` runs (a ``RunnerDeployment``)."""
    return reevaluate.to_deployment(
        name=schedule.name, schedule=Cron(schedule.cron, timezone=schedule.timezone),
        parameters={"zoo": schedule.zoo, "device": schedule.device, "home": str(Home.resolve(home).root)},
    )


def serve(schedule: Schedule, home: str | None = None) -> None:  # pragma: no cover - runs until interrupted
    """Serve the cron deployment in this process (Ctrl-C stops it)."""
    from prefect import serve as serve_deployments

    serve_deployments(deployment(schedule, home))

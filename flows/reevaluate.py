"""``reevaluate``: re-rank every registered dataset with the current zoo, as a scheduled (cron) deployment.

Features already extracted are cache hits, so a nightly run costs only what is new (a model added to the zoo, a
dataset onboarded since). The schedule (a cron expression, or an interval in seconds) lives in
``configs/schedules/reevaluate.yaml``; ``facezoo serve`` serves the deployment in the foreground with a local Prefect
server whose scheduler creates the runs (:mod:`flows.serve`); ``prefect.yaml`` holds the same deployment for a
Prefect server with work pools. Each run is a ``reevaluate`` job in the jobs table, beside the rank job of each
dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.schedules import Cron, Interval
from prefect.schedules import Schedule as PrefectSchedule
from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError, model_validator

from facezoo.config import Home
from facezoo.errors import FaceZooError
from flows.rank import one_line, rank_zoo, start_job
from storage.results import ResultsStore
from tasks._prefect import flow

__all__ = ["Schedule", "deployment", "load_schedule", "prefect_schedule", "reevaluate", "serve"]

SCHEDULE = Path(__file__).resolve().parents[1] / "configs" / "schedules" / "reevaluate.yaml"


class Schedule(BaseModel):
    """The re-evaluation deployment's settings (``configs/schedules/reevaluate.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "nightly-reevaluation"
    cron: str = "0 2 * * *"
    interval: PositiveInt | None = None  # seconds between runs, instead of the cron expression
    timezone: str = "UTC"
    zoo: str = "demo-image"
    device: str = "auto"

    @model_validator(mode="after")
    def _one_schedule(self) -> Schedule:
        if self.interval is not None and "cron" in self.model_fields_set:
            raise ValueError("give cron or interval, not both")
        return self

    def describe(self) -> str:
        every = f"every {self.interval} s" if self.interval is not None else f"cron {self.cron!r} ({self.timezone})"
        return f"{self.name}: {every}, zoo {self.zoo}"


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
    names = [row["name"] for row in results.list_datasets()]
    job_id = start_job(where, results, "reevaluate", zoo, None, {"device": device, "datasets": names})
    done: dict[str, Any] = {}
    for name in names:
        try:
            done[name] = rank_zoo(zoo, name, device=device, home=str(where.root))["status"]
        except Exception as error:  # noqa: BLE001 - recorded per dataset, never fatal to the schedule
            done[name] = f"failed: {one_line(error)}"
    failed = [name for name, status in done.items() if status not in ("completed", "partial")]
    status = ("failed" if names and len(failed) == len(names)
              else "partial" if failed or "partial" in done.values() else "completed")
    message = "; ".join(f"{name}: {state}" for name, state in done.items()) or "no registered dataset"
    results.finish_job(job_id, status, message=message[:2000])
    return done


def prefect_schedule(schedule: Schedule) -> PrefectSchedule:
    """Prefect's form of ``schedule``: an interval when it has one, else its cron expression."""
    if schedule.interval is not None:
        return Interval(schedule.interval, timezone=schedule.timezone)
    return Cron(schedule.cron, timezone=schedule.timezone)


def deployment(schedule: Schedule, home: str | None = None) -> Any:
    """The scheduled deployment of :func:`reevaluate` (a ``RunnerDeployment``), as ``facezoo serve`` registers it
    through Prefect's runner, for ``flow.serve``/``prefect.serve`` against a server of one's own."""
    return reevaluate.to_deployment(
        name=schedule.name, schedule=prefect_schedule(schedule),
        parameters={"zoo": schedule.zoo, "device": schedule.device, "home": str(Home.resolve(home).root)},
    )


def serve(schedule: Schedule, home: str | None = None, echo: Any = print) -> None:
    """Serve the deployment in the foreground until SIGINT or SIGTERM, with a local Prefect server whose scheduler
    creates the runs (:func:`flows.serve.serve_schedule`)."""
    from flows.serve import serve_schedule

    serve_schedule(schedule, Home.resolve(home).ensure(), echo=echo)

"""Per-model extraction on Prefect workers: the ``extract-features`` flow (deployed to a work pool, one run per model)
and the parent's side of it in ``rank_zoo(pool=...)``.

A worker runs one model's :func:`tasks.extract.extract_features` task (the same task, cache keys and retries as the
local path) in a flow run of its own and writes the features to the shared feature store (a folder every machine
mounts, or a URL: :mod:`storage.objectstore`). It reports what it stored, or why it failed, as a Prefect artifact of
its flow run: the parent then reads the features from the store and scores them exactly as the local path does.

What happens when something stops (tests/test_pool.py shows the first three):

- a model's run fails, crashes or is cancelled: that model is recorded as failed, the others finish (job
  ``partial``, exit status 3);
- a worker dies mid-run (machine lost, process killed): its run stops sending heartbeats (a flow-run label written
  every ``FACEZOO_POOL_STALE_SECONDS / 4`` s); after ``FACEZOO_POOL_STALE_SECONDS`` (default 120) without one
  (``FACEZOO_POOL_START_SECONDS``, default 600, before the first, while the process starts) the parent marks the run
  ``Crashed`` and the model failed;
- the parent is interrupted (Ctrl-C, SIGTERM) or its ``timeout`` passes: it **cancels** every child run not yet
  finished (``Cancelled`` if no worker took it yet, ``Cancelling`` if one runs it: the worker stops the process);
- the parent is killed outright (SIGKILL, OOM): nothing can cancel, so every child run carries a ``deadline`` (its
  submission time plus the parent's timeout): a run a worker starts after it **times out** at once, without
  extracting. A run already extracting finishes and leaves its features in the cache for the next job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facezoo.errors import FaceZooError
from facezoo.models import ModelUnavailableError
from facezoo.models.zoo import ModelSpec
from tasks import datasets
from tasks._prefect import flow
from tasks.extract import FeatureRef, extract_features

__all__ = ["FLOW_NAME", "PoolOutcome", "check_pool", "deploy", "extract_model", "run_on_pool", "stale_seconds"]

FLOW_NAME = "extract-features"
ARTIFACT_TYPE = "facezoo-extraction"
ROOT = Path(__file__).resolve().parents[1]
_FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
_HEARTBEAT_LABEL = "facezoo.heartbeat"


def stale_seconds(name: str = "FACEZOO_POOL_STALE_SECONDS", default: float = 120) -> float:
    """``FACEZOO_POOL_STALE_SECONDS``: a child run without a heartbeat for this long has lost its worker;
    ``FACEZOO_POOL_START_SECONDS``: the same for a run a worker took that has not sent its first heartbeat yet."""
    raw = os.environ.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise FaceZooError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


@contextlib.contextmanager
def _heartbeat(flow_run_id: str | None) -> Iterator[None]:
    """Write the time into a label of this flow run every quarter of the stale window, while the block runs."""
    if flow_run_id is None:
        yield
        return
    from prefect import get_client

    stop = threading.Event()
    every = stale_seconds() / 4

    def beat() -> None:
        with get_client(sync_client=True) as client:
            while True:
                with contextlib.suppress(Exception):  # a missed beat is one of four before the parent gives up
                    client.update_flow_run_labels(flow_run_id, {_HEARTBEAT_LABEL: f"{time.time():.1f}"})
                if stop.wait(every):
                    return

    thread = threading.Thread(target=beat, name="facezoo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _report(outcome: dict[str, Any]) -> None:
    from prefect.artifacts import Artifact

    Artifact(type=ARTIFACT_TYPE, description="what this extraction stored, or why it failed", data=outcome).create()


@flow(name=FLOW_NAME, flow_run_name="extract {spec.name}", persist_result=False, log_prints=False)
def extract_model(
    spec: ModelSpec, dataset: datasets.DatasetRef, split: str, features: str, extract_options: dict[str, Any],
    deadline: float | None = None,
) -> None:
    """One model's features of ``split`` of ``dataset`` into the store at ``features`` (a folder or URL), through
    the same task as the local path; the outcome is reported as an artifact of this run for the parent to read."""
    from prefect.runtime import flow_run

    if deadline is not None and time.time() > deadline:
        raise FaceZooError(f"expired: started {time.time() - deadline:.0f} s after the parent job stopped waiting")
    with _heartbeat(flow_run.id):
        try:
            ref = extract_features(spec, dataset, split, features, extract_options)
        except Exception as error:
            from flows.rank import one_line

            _report({"error": one_line(error), "unavailable": isinstance(error, ModelUnavailableError)})
            raise
    _report({"ref": ref.model_dump(mode="json")})


def deploy(pool: str, name: str = FLOW_NAME, source: str | Path = ROOT) -> str:
    """Create (or update) the ``extract-features`` deployment on ``pool``, its code at ``source`` (a folder every
    worker has at that path, or a git URL); returns its id. ``prefect deploy --name extract-features`` does the same
    from prefect.yaml."""
    deployable = extract_model.from_source(source=str(source), entrypoint="flows/pool.py:extract_model")
    return str(deployable.deploy(name=name, work_pool_name=pool, print_next_steps=False))


def check_pool(pool: str) -> str:
    """Fail early, in one line, unless a Prefect server (``PREFECT_API_URL``: the one the pool's workers poll)
    answers and has an extract-features deployment on ``pool``; returns its name."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise FaceZooError(f"--pool {pool}: set PREFECT_API_URL to the Prefect server the pool's workers poll (the "
                           "local default has no workers)")
    with get_client(sync_client=True) as client:
        return _deployment(client, pool)


def _deployment(client: Any, pool: str) -> str:
    """``flow/deployment`` of the extract-features deployment on ``pool``."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, WorkPoolFilter, WorkPoolFilterName

    try:
        found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                                        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
                                        limit=1)
    except Exception as error:  # noqa: BLE001 - no server at PREFECT_API_URL, refused, ...
        raise FaceZooError(f"--pool {pool}: cannot reach the Prefect server at PREFECT_API_URL ({error})") from None
    if not found:
        raise FaceZooError(f"no {FLOW_NAME} deployment on work pool {pool!r}: deploy it first "
                           f"(prefect deploy --name {FLOW_NAME}, from the facezoo checkout)")
    return f"{FLOW_NAME}/{found[0].name}"


@dataclass
class PoolOutcome:
    """What the children said: ``refs`` (features stored), ``failures`` ({model: message}), ``skipped``
    ({model: why}, optional models whose weights the worker lacks)."""

    refs: dict[str, FeatureRef] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _artifact(client: Any, run_id: Any) -> dict[str, Any] | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType, FlowRunFilter, FlowRunFilterId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=[ARTIFACT_TYPE])),
                                  flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    if not found:
        return None
    data = found[-1].data
    while isinstance(data, str):
        data = json.loads(data)
    return data


def _lost(run: Any, now: float, stale: float, start: float) -> bool:
    """A run a worker took whose process is gone: no heartbeat for ``stale`` s; before its first heartbeat, pending
    or starting for ``start`` s (a process that imports torch and loads the flow: a minute on a busy machine)."""
    beat = (run.labels or {}).get(_HEARTBEAT_LABEL)
    if beat is not None:
        return now - float(beat) > stale
    return now - run.state.timestamp.timestamp() > start


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C while the parent waits, so its ``finally`` cancels the children (Python's default
    for SIGTERM ends the process without running it). Only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cancel(client: Any, batch: str, why: str) -> None:
    """Cancel the unfinished child runs tagged ``batch`` (found by tag, so a run created just as the parent was
    interrupted is among them): ``Cancelled`` before a worker took it, ``Cancelling`` (the worker stops the process)
    after."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.states import Cancelled, Cancelling

    with contextlib.suppress(Exception):  # best effort: the deadline parameter catches what this misses
        for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[batch]))):
            if run.state_type.value in _FINAL:
                continue
            state = Cancelled(message=why) if run.state_type.value == "SCHEDULED" else Cancelling(message=why)
            with contextlib.suppress(Exception):
                client.set_flow_run_state(run.id, state, force=True)


def run_on_pool(
    specs: list[ModelSpec], dataset: datasets.DatasetRef, split: str, features: str,
    extract_options: dict[str, Any], pool: str, timeout: float, on_ref: Callable[[FeatureRef], None],
    poll_seconds: float = 1.0,
) -> PoolOutcome:
    """Submit one ``extract-features`` run per model to ``pool``, wait for them (at most ``timeout`` s), call
    ``on_ref`` with each model's stored features as they arrive, and return what every child said.

    The parent's ``finally`` cancels unfinished children; see the module docstring for every way of stopping.
    """
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Crashed

    outcome = PoolOutcome()
    stale, start = stale_seconds(), stale_seconds("FACEZOO_POOL_START_SECONDS", 600)
    deadline = time.time() + timeout
    batch = f"facezoo-batch-{uuid.uuid4().hex[:16]}"  # this job's children, for cancelling them all
    with get_client(sync_client=True) as client, _sigterm_raises():
        name = _deployment(client, pool)
        runs: dict[str, Any] = {}
        try:
            for spec in specs:
                runs[spec.name] = run_deployment(
                    name, timeout=0, as_subflow=True, flow_run_name=f"extract {spec.name}", tags=[batch],
                    parameters={"spec": spec.model_dump(mode="json"), "dataset": dataset.model_dump(mode="json"),
                                "split": split, "features": features, "extract_options": extract_options,
                                "deadline": deadline})
            while runs:
                now = time.time()
                for model, run in list(runs.items()):
                    current = client.read_flow_run(run.id)
                    kind = current.state_type.value
                    if kind in _FINAL:
                        del runs[model]
                        _settle(client, outcome, specs, model, current, on_ref)
                    elif kind in ("PENDING", "RUNNING") and _lost(current, now, stale, start):
                        why = (f"its worker stopped: no heartbeat for {stale:g} s (FACEZOO_POOL_STALE_SECONDS; "
                               f"{start:g} s before the first, FACEZOO_POOL_START_SECONDS)")
                        client.set_flow_run_state(run.id, Crashed(message=why), force=True)
                        del runs[model]
                        outcome.failures[model] = f"crashed: {why}"
                if runs and now > deadline:
                    for model in runs:
                        outcome.failures[model] = f"cancelled: not finished within the job's {timeout:g} s timeout"
                    break
                if runs:
                    time.sleep(poll_seconds)
        finally:
            if runs or len(outcome.refs) + len(outcome.failures) + len(outcome.skipped) < len(specs):
                _cancel(client, batch, "the parent rank job stopped waiting")  # interrupted, maybe mid-submission
    return outcome


def _settle(client: Any, outcome: PoolOutcome, specs: list[ModelSpec], model: str, run: Any,
            on_ref: Callable[[FeatureRef], None]) -> None:
    """A finished child run: its features, or its failure (a skip for an optional model the worker lacks)."""
    said = _artifact(client, run.id) or {}
    if run.state_type.value == "COMPLETED" and "ref" in said:
        outcome.refs[model] = FeatureRef.model_validate(said["ref"])
        on_ref(outcome.refs[model])
        return
    if said.get("unavailable") and next(s for s in specs if s.name == model).optional:
        outcome.skipped[model] = said["error"]
        return
    message = said.get("error") or (run.state.message or "").strip() or "no message"
    outcome.failures[model] = f"{run.state_type.value.lower()}: {message}"[:500]

"""MLflow tracking: one experiment per dataset, one parent run per job, one child run per model.

    >>> tracker = Tracker(home.tracking_uri, home.artifacts)          # sqlite:///…/mlflow.db, …/mlartifacts
    >>> run_id = tracker.log_rank_job("cifar10", job_id, params, models, ranking, failures)
    >>> subprocess.run(tracker.ui_command())                          # MLflow's UI on http://127.0.0.1:5000
    >>> tracker.ui_urls()["cifar10"]                                  # its runs, on the model-training pages

Layout::

    experiment  facezoo/<dataset>          artifact_location = <artifact_root>/<dataset> (explicit, never ./mlruns)
                                           tag mlflow.experimentKind = custom_model_development (the UI opens
                                           it on its runs, not on the GenAI overview)
      run       rank <dataset> <job8>      tags facezoo.job_id, facezoo.kind, facezoo.ties.<metric>; params;
                                           metrics <metric>/<model> (the zoo's scores, one per model); ranking.csv,
                                           ranking.md, face.png, params.json
        run     <model>                    tag mlflow.parentRunId; params (source, digest, dims, ...); metrics
                                           <metric>, <metric>_rank, <metric>_raw, <metric>_seconds,
                                           extraction_seconds; a failed model: status FAILED, tag facezoo.error
      run       validate <dataset> <job8>  metrics <stat>/<protocol>/<metric>; finetune.csv, correlations.csv,
                                           params.json, scatter/<metric>.png
        run     <model>                    metrics <protocol>/accuracy, ...; learning curves curve/<name> per step

Every run has the target dataset as its MLflow dataset input (name, digest = the dataset's fingerprint, source:
the UI's Dataset column) when the caller knows the fingerprint, and tags ``mlflow.source.name`` (the ``facezoo``
command line that ran, type ``JOB``; else the Prefect flow's name, type ``LOCAL``: the UI's Source column).

Only :class:`mlflow.tracking.MlflowClient` is used, bound to the tracking URI given: no global ``mlflow`` state
(``set_tracking_uri``, active runs, autolog), so two trackers in one process (or Prefect's task threads) do not
interfere. MLflow 3.17 refuses the file store: the URI is ``sqlite:///…``, and every experiment gets an explicit
``artifact_location``, else artifacts land in ``./mlruns`` of whatever the working directory was.

A failure while logging never loses results (they are in the results store first): it raises a one-line
:class:`FaceZooError` for the caller to record, after ending every run it had opened as ``FAILED``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

# MLflow reads these when imported; the string "true" because MLflow ignores "1". A user's own setting wins.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The UI server (ui_command) inherits this: its job runner (GenAI judges, trace roll-ups: nothing facezoo logs) is
# 8 more processes and ~1.4 GiB; without it and with one worker the server is up in 15 s instead of 37 s, in 0.5 GiB.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_DATASET_DIGEST_SIZE,
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from facezoo.data import check_name  # noqa: E402
from facezoo.errors import FaceZooError, first_line  # noqa: E402
from storage._process import exclusive  # noqa: E402

__all__ = ["Tracker"]

_TRUNCATED = "…[truncated]"
_PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
# MLflow 3's UI opens an experiment without this tag (or with the value it infers from traces) on the GenAI overview
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
_FLOWS = {"rank": "rank-zoo", "validate": "validate-ranking"}  # the Prefect flows that log each kind of job
_CORRELATION_STATS = (
    "weighted_tau", "kendall_tau", "pearson", "spearman", "top1_regret", "ci_low", "ci_high", "n_models",
)
_FINETUNE_METRICS = ("accuracy", "mean_class_accuracy", "seconds")
_MODEL_KEYS = ("name", "cache_key", "seconds", "extraction_seconds")  # logged as run name, tag and metrics
_CURVE_TUPLE = ("step", "loss", "accuracy")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED


def _key(name: str) -> str:
    """A valid MLflow param/metric key: characters outside ``\\w . - / space`` become ``_`` (colons are refused on
    Windows stores), at most 250 characters."""
    return re.sub(r"[^\w./\- ]", "_", str(name))[:MAX_ENTITY_KEY_LENGTH]


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def _params(values: Mapping[str, Any]) -> list[Param]:
    """MLflow params: strings of at most 6000 characters (longer ones are cut and marked ``…[truncated]``)."""
    return [Param(_key(k), _cut(_param_text(v), MAX_PARAM_VAL_LENGTH)) for k, v in values.items()]


def _finite(value: Any) -> bool:
    return value is not None and not pd.isna(value) and np.isfinite(float(value))


def _check_columns(table: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise FaceZooError(f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, table.columns))}")


def _source_tags(kind: str) -> dict[str, str]:
    """``mlflow.source.*`` of a job's runs: the command line when this process is the ``facezoo`` CLI (a ``JOB``:
    the UI shows its whole name), else the name of the flow that logs ``kind`` (``LOCAL``)."""
    if Path(sys.argv[0]).stem == "facezoo":
        return {MLFLOW_SOURCE_NAME: _cut(shlex.join(["facezoo", *sys.argv[1:]]), MAX_TAG_VAL_LENGTH),
                MLFLOW_SOURCE_TYPE: "JOB"}
    return {MLFLOW_SOURCE_NAME: _FLOWS[kind], MLFLOW_SOURCE_TYPE: "LOCAL"}


def _dataset_input(dataset: str, info: Mapping[str, Any], context: str) -> list[DatasetInput]:
    """The target dataset as an MLflow dataset input (``[]`` without a fingerprint: a digest is required, and any
    other would lie); ``info`` is :meth:`facezoo.data.Dataset.describe` output, its counts become the profile."""
    fingerprint = info.get("fingerprint")
    if not fingerprint:
        return []
    profile = {k: info[k] for k in ("task", "n_samples", "n_classes", "splits") if k in info}
    return [DatasetInput(Dataset(
        name=dataset, digest=str(fingerprint)[:MAX_DATASET_DIGEST_SIZE], source_type="local",
        source=json.dumps({"uri": str(info.get("source") or dataset)}),
        profile=json.dumps(profile) if profile else None,
    ), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])]


def _ties(ranking: pd.DataFrame) -> dict[str, str]:
    """``{metric: "rank 1 shared by a, b; rank 4 shared by c, d"}`` for the metrics where models share a rank: from
    the ``tied`` column (models sharing that rank) when the table has one, else from equal ranks."""
    ranked = ranking[ranking["rank"].map(_finite).astype(bool)]  # an empty object mask would select columns
    shared = ranked["tied"] > 1 if "tied" in ranked.columns else ranked.duplicated(["metric", "rank"], keep=False)
    ties: dict[str, str] = {}
    for metric, rows in ranked[shared].groupby("metric", sort=False):
        ties[str(metric)] = "; ".join(
            f"rank {rank:g} shared by {', '.join(sorted(map(str, group['model'])))}"
            for rank, group in rows.groupby("rank", sort=True)
        )
    return ties


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _ranking_markdown(ranking: pd.DataFrame, failures: Mapping[str, str], dataset: str, job_id: str) -> str:
    """Models × metrics, each cell ``rank (score)``, models in the order of ``face`` (else the first metric)."""
    metrics = list(dict.fromkeys(ranking["metric"]))
    if not metrics:  # every model failed: the table lists them
        return f"# Zoo ranking on {dataset} (job {job_id})\n\nNo model could be scored.\n\n" + "".join(
            f"- {_markdown_cell(model)}: failed: {_markdown_cell(error)}\n" for model, error in failures.items())
    order_metric = "face" if "face" in metrics else metrics[0]
    order = ranking[ranking["metric"] == order_metric].sort_values(["rank", "model"], na_position="last")["model"]
    models = list(dict.fromkeys([*order, *ranking["model"], *failures]))
    cells = {
        (row.model, row.metric): f"{row.rank:g} ({row.score:.4g})" if _finite(row.rank) else "—"
        for row in ranking.itertuples()
    }
    lines = [
        f"# Zoo ranking on {dataset} (job {job_id})", "",
        f"Each cell: rank (score); rank 1 = predicted best. Models in the order of `{order_metric}`.", "",
        "| model | " + " | ".join(map(_markdown_cell, metrics)) + " |",
        "| --- |" + " ---: |" * len(metrics),
    ]
    for model in models:
        row = ["failed" if model in failures else cells.get((model, m), "—") for m in metrics]
        lines.append(f"| {_markdown_cell(model)} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _face_chart(ranking: pd.DataFrame, dataset: str, path: Path) -> bool:
    """A horizontal bar chart of the FaCe score per model, best on top; ``False`` (no file) without FaCe scores."""
    face = ranking[(ranking["metric"] == "face") & ranking["score"].map(_finite)].sort_values("score")
    if face.empty:
        return False
    figure = Figure(figsize=(7, max(2.5, 0.35 * len(face) + 1.2)), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without pyplot: no global figure manager, safe in Prefect's task threads
    axes = figure.subplots()
    axes.barh(face["model"].astype(str), face["score"], color="tab:blue")
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("FaCe score (zoo-normalised; higher = predicted to transfer better)")
    axes.set_title(f"FaCe zoo ranking on {dataset}")
    figure.savefig(path, dpi=120)
    return True


def _scatter(
    metric: str, scores: pd.DataFrame, finetune: pd.DataFrame, correlations: pd.DataFrame, path: Path
) -> None:
    """Score of ``metric`` against fine-tuned accuracy, one series per protocol, weighted τ in the title."""
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    metric_scores = scores.loc[scores["metric"] == metric, ["model", "score"]]
    titles = []
    for protocol, accuracy in finetune.groupby("protocol", sort=True):
        points = metric_scores.merge(accuracy[["model", "accuracy"]], on="model")
        points = points[points["score"].map(_finite) & points["accuracy"].map(_finite)]
        axes.scatter(points["score"], points["accuracy"], label=str(protocol))
        for point in points.itertuples():
            axes.annotate(str(point.model), (point.score, point.accuracy), fontsize=7, alpha=0.8,
                          xytext=(3, 3), textcoords="offset points")
        tau = correlations.loc[(correlations["metric"] == metric) & (correlations["protocol"] == protocol)]
        tau_text = f"{tau['weighted_tau'].iloc[0]:.3f}" if len(tau) and _finite(tau["weighted_tau"].iloc[0]) else "n/a"
        titles.append(f"weighted τ = {tau_text} ({protocol})")
    axes.set_xlabel(f"{metric} score")
    axes.set_ylabel("fine-tuned accuracy")
    axes.set_title(f"{metric}: " + ", ".join(titles), fontsize=10)
    if finetune["protocol"].nunique() > 1:
        axes.legend(title="protocol")
    figure.savefig(path, dpi=120)


class Tracker:
    """Logs ranking and validation jobs to MLflow.

    Args:
        tracking_uri: ``sqlite:///<home>/mlflow.db`` (``Home.tracking_uri``) or a tracking server's URL.
        artifact_root: a folder (``Home.artifacts``) or an artifact-store URI; experiment ``facezoo/<dataset>``
            keeps its artifacts in ``<artifact_root>/<dataset>``.
    """

    def __init__(self, tracking_uri: str, artifact_root: str | Path):
        self.tracking_uri = tracking_uri
        root = str(artifact_root)
        is_uri = len(urlparse(root).scheme) > 1  # one letter: a Windows drive, not a scheme
        if is_uri:  # the URI is stored in MLflow's database as each experiment's artifact location
            from storage.objectstore import check_no_credentials

            check_no_credentials(root)
        self.artifact_root_uri = root.rstrip("/") if is_uri else Path(root).expanduser().resolve().as_uri()
        # Two jobs starting at once on a fresh home would both run MLflow's migrations on the new SQLite file, and
        # one would fail ("Online migration expected to match one row ..."): the first creates it, the other waits.
        database = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else ":memory:"
        database = None if database == ":memory:" else Path(database)
        try:
            with exclusive(database.with_name(database.name + ".init-lock")) if database else nullcontext():
                self.client = MlflowClient(tracking_uri=tracking_uri)
                self.client.search_experiments(max_results=1)  # the store (and its migrations) are made here
        except Exception as error:  # noqa: BLE001 - callers record one line; the results are safe in DuckDB
            raise FaceZooError(f"MLflow store {tracking_uri}: {first_line(error)}") from error

    # -- experiments and runs ----------------------------------------------------------------------------------

    def experiment_for(self, dataset: str) -> str:
        """The id of experiment ``facezoo/<dataset>``, created (artifacts in ``<artifact_root>/<dataset>``) or
        restored from the trash when needed, marked a model-training experiment (one of an older home too)."""
        check_name(dataset, "dataset name")  # it names a folder of the artifact root
        try:
            return self._experiment_id(dataset)
        except MlflowException as error:
            raise FaceZooError(
                f"MLflow experiment for {dataset!r} at {self.tracking_uri}: {first_line(error)}"
            ) from error

    def _experiment_id(self, dataset: str) -> str:
        name = f"facezoo/{dataset}"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=f"{self.artifact_root_uri}/{dataset}",
                    tags={"facezoo.dataset": dataset, _EXPERIMENT_KIND[0]: _EXPERIMENT_KIND[1]},
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = self.client.get_experiment_by_name(name)  # another job created it meanwhile
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        if experiment.tags.get(_EXPERIMENT_KIND[0]) != _EXPERIMENT_KIND[1]:  # made before the tag, or by the UI
            self.client.set_experiment_tag(experiment.experiment_id, *_EXPERIMENT_KIND)
        return experiment.experiment_id

    @contextmanager
    def _logging(self, what: str) -> Iterator[list[str]]:
        """Yield the list of runs opened so far; on any error end them ``FAILED`` and raise one line."""
        open_runs: list[str] = []
        try:
            yield open_runs
        except BaseException as error:
            for run_id in open_runs:
                with suppress(Exception):  # the store itself may be what failed; the error below says why
                    self.client.set_terminated(run_id, "FAILED")
            if not isinstance(error, Exception):
                raise
            raise FaceZooError(f"{what}: MLflow logging to {self.tracking_uri} failed: {first_line(error)}") from error

    def _start(self, open_runs: list[str], experiment_id: str, name: str, tags: Mapping[str, str]) -> str:
        run_id = self.client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
        open_runs.append(run_id)
        return run_id

    def _end(self, open_runs: list[str], run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)
        open_runs.remove(run_id)

    def _log_batch(
        self, run_id: str, metrics: Sequence[Metric] = (), params: Sequence[Param] = (), tags: Sequence[RunTag] = ()
    ) -> None:
        """``log_batch`` in chunks within MLflow's per-request limits (1000 metrics, 100 params, 100 tags)."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        step_m, step_p = MAX_METRICS_PER_BATCH - 2 * MAX_PARAMS_TAGS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH
        while metrics or params or tags:
            self.client.log_batch(run_id, metrics=metrics[:step_m], params=params[:step_p], tags=tags[:step_p])
            metrics, params, tags = metrics[step_m:], params[step_p:], tags[step_p:]

    # -- jobs ------------------------------------------------------------------------------------------------------

    def close_interrupted(self, job_ids: Sequence[str]) -> int:
        """End as ``KILLED`` the runs of jobs whose process died while logging them (they would show as running
        forever in the UI); returns how many were ended."""
        if not job_ids:
            return 0
        experiments = [e.experiment_id for e in self.client.search_experiments(filter_string="name LIKE 'facezoo/%'")]
        ended = 0
        for job_id in map(str, map(uuid.UUID, job_ids)):  # a uuid: nothing else reaches the filter string
            for run in self.client.search_runs(
                experiments, filter_string=f"tags.`facezoo.job_id` = '{job_id}' AND attributes.status = 'RUNNING'"
            ) if experiments else ():
                self.client.set_terminated(run.info.run_id, "KILLED")
                ended += 1
        return ended

    def log_rank_job(
        self,
        dataset: str,
        job_id: str,
        params: Mapping[str, Any],
        models: Sequence[Mapping[str, Any]],
        ranking: pd.DataFrame,
        failures: Mapping[str, str],
        dataset_info: Mapping[str, Any] | None = None,
    ) -> str:
        """Log one ranking job; returns the parent run id.

        Args:
            params: the job's settings (zoo, dataset, fingerprint, metrics, split, device, ...); values that are not
                strings are logged as JSON, values over 6000 characters cut (all of them in ``params.json``).
            models: one dict per model: ``name``; optional ``cache_key`` (a tag), ``seconds`` (``{metric: seconds}``,
                metrics ``<metric>_seconds``) and ``extraction_seconds`` (a metric); everything else (source, digest,
                dims, N, classes, options, ...) as params of its child run.
            ranking: :func:`facezoo.metrics.rank_zoo` output (``metric``, ``model``, ``raw``, ``score``, ``rank``,
                optionally ``tied``: models sharing that rank); NaN values (failed metrics) are not logged. The parent
                gets each score as ``<metric>/<model>`` and a tag ``facezoo.ties.<metric>`` where models share a rank.
            failures: ``{model: error}``: these child runs end ``FAILED`` with tag ``facezoo.error``.
            dataset_info: the target dataset's :meth:`facezoo.data.Dataset.describe` (``fingerprint``, ``source``,
                counts): the dataset input of every run; without it, ``params["fingerprint"]`` if any, else none.
        """
        _check_columns(ranking, ["metric", "model", "raw", "score", "rank"], "ranking table")
        experiment_id = self.experiment_for(dataset)
        by_name = {str(m["name"]): m for m in models}
        names = list(dict.fromkeys([*by_name, *map(str, ranking["model"]), *failures]))
        now = int(time.time() * 1000)
        source = _source_tags("rank")
        inputs = _dataset_input(dataset, dataset_info or {"fingerprint": params.get("fingerprint")}, "rank")
        with self._logging(f"rank job {job_id} on {dataset}") as open_runs:
            parent = self._start(open_runs, experiment_id, f"rank {dataset} {job_id[:8]}", {
                **source, "facezoo.job_id": job_id, "facezoo.kind": "rank", "facezoo.dataset": dataset,
                "facezoo.status": "partial" if failures else "completed",
            })
            self._log_batch(parent, params=_params(params), metrics=[
                Metric("n_models", len(names), now, 0), Metric("n_failed", len(failures), now, 0),
                *(Metric(_key(f"{row['metric']}/{row['model']}"), float(row["score"]), now, 0)
                  for row in ranking.to_dict("records") if _finite(row["score"])),
            ], tags=[RunTag(_key(f"facezoo.ties.{metric}"), _cut(text, MAX_TAG_VAL_LENGTH))
                     for metric, text in _ties(ranking).items()])
            if inputs:
                self.client.log_inputs(parent, datasets=inputs)
            for name in names:
                info = by_name.get(name, {})
                tags = {**source, _PARENT_TAG: parent, "facezoo.job_id": job_id, "facezoo.model": name}
                if info.get("cache_key"):
                    tags["facezoo.cache_key"] = str(info["cache_key"])
                if name in failures:
                    tags["facezoo.error"] = _cut(str(failures[name]), MAX_TAG_VAL_LENGTH)
                child = self._start(open_runs, experiment_id, name, tags)
                if inputs:
                    self.client.log_inputs(child, datasets=inputs)
                rows = ranking[ranking["model"].astype(str) == name]
                self._log_batch(
                    child,
                    params=_params({k: v for k, v in info.items() if k not in _MODEL_KEYS}),
                    metrics=self._model_metrics(rows, info, now),
                )
                self._end(open_runs, child, "FAILED" if name in failures else "FINISHED")
            with tempfile.TemporaryDirectory(prefix="facezoo-mlflow-") as tmp:
                folder = Path(tmp)
                ranking.to_csv(folder / "ranking.csv", index=False)
                (folder / "ranking.md").write_text(_ranking_markdown(ranking, failures, dataset, job_id))
                (folder / "params.json").write_text(_param_text(dict(params)))
                _face_chart(ranking, dataset, folder / "face.png")
                self.client.log_artifacts(parent, str(folder))
            self._end(open_runs, parent)
        return parent

    @staticmethod
    def _model_metrics(rows: pd.DataFrame, info: Mapping[str, Any], timestamp: int) -> list[Metric]:
        """``<metric>`` (score), ``<metric>_rank``, ``<metric>_raw`` where it differs from the score (zoo-normalised
        metrics), ``<metric>_seconds``, ``extraction_seconds``; NaN values are skipped."""
        values: dict[str, Any] = {"extraction_seconds": info.get("extraction_seconds")}
        for metric, seconds in (info.get("seconds") or {}).items():
            values[f"{_key(metric)}_seconds"] = seconds
        for row in rows.to_dict("records"):
            metric = _key(row["metric"])
            values.update({metric: row["score"], f"{metric}_rank": row["rank"]})
            if _finite(row["raw"]) and row["raw"] != row["score"]:
                values[f"{metric}_raw"] = row["raw"]
        return [Metric(k, float(v), timestamp, 0) for k, v in values.items() if _finite(v)]

    def log_validation(
        self,
        dataset: str,
        job_id: str,
        params: Mapping[str, Any],
        finetune: pd.DataFrame,
        correlations: pd.DataFrame,
        scores: pd.DataFrame,
        curves: Mapping[str, Sequence[tuple[int, float, float] | Mapping[str, float]]] | None = None,
        dataset_info: Mapping[str, Any] | None = None,
    ) -> str:
        """Log one validation job (ranking scores against fine-tuned accuracy); returns the parent run id.

        Args:
            finetune: one row per (model, protocol): ``model``, ``protocol``, ``accuracy``, optionally
                ``mean_class_accuracy`` and ``seconds``; other columns go to ``finetune.csv`` only.
            correlations: one row per metric (and protocol): ``metric``, any of ``weighted_tau``, ``kendall_tau``,
                ``pearson``, ``spearman``, ``top1_regret``, ``ci_low``, ``ci_high``, ``n_models`` (parent metrics
                ``<stat>/<protocol>/<metric>``), and ``protocol`` unless ``finetune`` has only one.
            scores: :func:`facezoo.metrics.rank_zoo` output of the ranking being validated (``metric``, ``model``,
                ``score``): one scatter plot per metric, ``scatter/<metric>.png``.
            curves: ``{model: [point, ...]}`` learning curves: a point is ``(step, loss, accuracy)`` or a mapping
                ``{name: value}`` (with ``step``, else its position), logged as ``curve/<name>`` at that step.
            dataset_info: as for :meth:`log_rank_job`: the dataset input of every run.
        """
        _check_columns(finetune, ["model", "protocol", "accuracy"], "fine-tuning table")
        _check_columns(correlations, ["metric"], "correlations table")
        _check_columns(scores, ["metric", "model", "score"], "scores table")
        if "protocol" not in correlations.columns:
            protocols = finetune["protocol"].unique()
            if len(protocols) != 1:
                raise FaceZooError(f"correlations table needs a protocol column: fine-tuning has {len(protocols)}")
            correlations = correlations.assign(protocol=protocols[0])
        curves = curves or {}
        experiment_id = self.experiment_for(dataset)
        names = list(dict.fromkeys([*map(str, finetune["model"]), *curves]))
        now = int(time.time() * 1000)
        source = _source_tags("validate")
        inputs = _dataset_input(dataset, dataset_info or {"fingerprint": params.get("fingerprint")}, "validate")
        with self._logging(f"validation job {job_id} on {dataset}") as open_runs:
            parent = self._start(open_runs, experiment_id, f"validate {dataset} {job_id[:8]}", {
                **source, "facezoo.job_id": job_id, "facezoo.kind": "validate", "facezoo.dataset": dataset,
            })
            if inputs:
                self.client.log_inputs(parent, datasets=inputs)
            quality = [
                Metric(_key(f"{stat}/{row['protocol']}/{row['metric']}"), float(row[stat]), now, 0)
                for row in correlations.to_dict("records") for stat in _CORRELATION_STATS
                if stat in row and _finite(row[stat])
            ]
            self._log_batch(parent, params=_params(params), metrics=quality)
            for name in names:
                child = self._start(open_runs, experiment_id, name, {
                    **source, _PARENT_TAG: parent, "facezoo.job_id": job_id, "facezoo.model": name,
                })
                if inputs:
                    self.client.log_inputs(child, datasets=inputs)
                metrics = [
                    Metric(_key(f"{row['protocol']}/{column}"), float(row[column]), now, 0)
                    for row in finetune[finetune["model"].astype(str) == name].to_dict("records")
                    for column in _FINETUNE_METRICS if column in row and _finite(row[column])
                ]
                for position, point in enumerate(curves.get(name, ())):
                    point = dict(point) if isinstance(point, Mapping) else dict(zip(_CURVE_TUPLE, point, strict=True))
                    step = int(point.pop("step", position))
                    metrics += [Metric(_key(f"curve/{k}"), float(v), now, step) for k, v in point.items() if _finite(v)]
                self._log_batch(child, metrics=metrics)
                self._end(open_runs, child)
            with tempfile.TemporaryDirectory(prefix="facezoo-mlflow-") as tmp:
                folder = Path(tmp)
                finetune.to_csv(folder / "finetune.csv", index=False)
                correlations.to_csv(folder / "correlations.csv", index=False)
                (folder / "params.json").write_text(_param_text(dict(params)))
                (folder / "scatter").mkdir()
                for metric in dict.fromkeys(scores["metric"]):
                    _scatter(metric, scores, finetune, correlations, folder / "scatter" / f"{_key(metric)}.png")
                self.client.log_artifacts(parent, str(folder))
            self._end(open_runs, parent)
        return parent

    # -- UI --------------------------------------------------------------------------------------------------------

    def ui_command(self, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
        """The argv of an MLflow server over this store (local-only unless ``host`` says otherwise): existing
        experiments keep their own artifact locations; ones created in the UI go under the artifact root. One
        worker: a reviewer's browser needs no more, and MLflow's default four cost ~0.8 GiB more."""
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.tracking_uri,
            "--default-artifact-root", self.artifact_root_uri,
            "--artifacts-destination", self.artifact_root_uri,
            "--host", host, "--port", str(port), "--workers", "1",
        ]

    def ui_urls(self, host: str = "127.0.0.1", port: int = 5000) -> dict[str, str]:
        """``{dataset: address of its runs}`` in the UI of :meth:`ui_command`, one per active ``facezoo/``
        experiment. MLflow 3.17's UI ignores ``mlflow.experimentKind``: it shows model-training pages when the link
        says ``workflowType=machine_learning`` (or the browser remembers its switch), GenAI pages otherwise."""
        experiments = self.client.search_experiments(filter_string="name LIKE 'facezoo/%'")
        return {
            e.name.removeprefix("facezoo/"): f"http://{host}:{port}/#/experiments/{e.experiment_id}/runs"
                                              "?workflowType=machine_learning"
            for e in sorted(experiments, key=lambda e: e.name)
        }

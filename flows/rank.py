"""``rank_zoo``: rank every model of a zoo on one dataset, end to end.

1. resolve the dataset (a registered name, or a source that gets registered) and the zoo (a YAML path or the name
   of one in ``configs/zoos``);
2. per model, as Prefect tasks: read or extract its features (cache hits skip extraction; at most ``concurrency``
   extractions at once), then score them with every requested metric from the stored statistics;
3. rank the zoo (zoo-normalised metrics need every model), write scores, models, feature sets and failures to
   DuckDB, log the job to MLflow (parent run, one child run per model, ranking table and FaCe chart);
4. return a summary with the metric the held-out evidence recommends for the task (:mod:`facezoo.evidence`); the
   CLI prints the ranking table ordered by it.

A model that fails (missing weights, out of memory, bad output) is recorded with its error and stage and the others
finish: the job is then ``partial``. Transient I/O errors retry.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from facezoo import backends
from facezoo import metrics as metric_registry
from facezoo import progress
from facezoo.config import Home
from facezoo.errors import FaceZooError
from facezoo.evidence import recommendation
from facezoo.models import ModelUnavailableError
from facezoo.models.zoo import ModelSpec, ZooConfig
from storage.results import ResultsStore
from storage.tracking import Tracker
from tasks import datasets
from tasks._prefect import ThreadPoolTaskRunner, flow
from tasks.extract import FeatureRef, extract_features
from tasks.score import ModelScores, score_features

__all__ = ["DEFAULT_METRICS", "SEGMENTATION_METRICS", "check_task", "rank_zoo",
           "resolve_zoo", "resolve_dataset", "one_line"]

_log = logging.getLogger("facezoo")
CONFIG_ZOOS = Path(__file__).resolve().parents[1] / "configs" / "zoos"
# every metric but N-LEEP, whose Gaussian mixture (5 components per class, full covariances) costs minutes per model
DEFAULT_METRICS = tuple(m for m in metric_registry.available() if m != "nleep")
# Segmentation scores class-balanced pixel features: FaCe and the baselines that apply to them (the source-classifier
# metrics need image-level logits), GBC with diagonal Gaussians as in its paper's segmentation setting.
SEGMENTATION_METRICS = ("face", "face_variance", "face_fairness", "nc1", "logme", "gbc", "hscore", "transrate",
                        "ncti", "knn")
SEGMENTATION_OPTIONS = {"gbc": {"gaussian": "diagonal"}}


def check_task(task: str | None, data: Any) -> None:
    """``--task``: a guard that the dataset is of the task the user means."""
    if task is not None and task != data.task:
        raise FaceZooError(f"dataset {data.name!r} is a {data.task} dataset, not {task}")


def one_line(error: BaseException) -> str:
    """An exception as the one line a user reads."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def resolve_zoo(zoo: str) -> ZooConfig:
    """A zoo YAML path, or the name of one in ``configs/zoos`` (``demo-image``)."""
    path = Path(zoo).expanduser()
    if not path.is_file():
        named = CONFIG_ZOOS / f"{zoo}.yaml"
        if not named.is_file():
            known = ", ".join(sorted(p.stem for p in CONFIG_ZOOS.glob("*.yaml")))
            raise FaceZooError(f"unknown zoo {zoo!r}: neither a YAML file nor a zoo in configs/zoos (known: {known})")
        path = named
    return ZooConfig.from_yaml(path)


def resolve_dataset(
    dataset: str, results: ResultsStore, options: dict[str, Any] | None = None, max_samples: int | None = None
) -> datasets.DatasetRef:
    """A registered dataset name, or a source (``builtin:animal-mnist``, ``folder:/data/x``) registered on the way.

    With ``max_samples`` the dataset is a deterministic stratified sample, registered under ``<name>-s<N>``.
    """
    if ":" in dataset:
        base = datasets.DatasetRef(name=datasets.load_source(dataset, options or {}).name, source=dataset,
                                   options=options or {})
    else:
        row = datasets.registered(results, dataset)
        base = datasets.DatasetRef(name=row["name"], source=row["source"], options=row["options"],
                                   max_samples=row.get("max_samples"))
    ref = base
    if max_samples is not None and max_samples != base.max_samples:
        ref = base.model_copy(update={"name": f"{base.name}-s{max_samples}", "max_samples": max_samples})
    results.register_dataset(datasets.load(ref), ref.source, ref.options, ref.max_samples)
    return ref


def start_job(where: Home, results: ResultsStore, kind: str, zoo: str | None, dataset: str | None,
              params: dict[str, Any]) -> str:
    """Start a job, after closing (in DuckDB and MLflow) the jobs of this home that a killed process left running."""
    stale = results.close_interrupted()
    if stale:
        _log.warning("closed %d job(s) left running by a process that no longer exists: %s", len(stale),
                     ", ".join(stale))
        try:
            Tracker(where.tracking_uri, where.artifacts).close_interrupted(stale)
        except Exception as error:  # noqa: BLE001 - the runs stay RUNNING in the UI; the jobs table is right
            _log.warning("could not end their MLflow runs: %s", one_line(error))
    return results.start_job(kind, zoo, dataset, params)


def _gpu_annotation(enabled: bool) -> Any:
    """Dask resource annotation of the tasks submitted inside it (a no-op unless asked for)."""
    if not enabled:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources={"GPU": 1})


def _default_concurrency(device: str) -> int:
    if device == "cpu" or not torch.cuda.is_available():
        return 1  # one extraction uses every core
    return max(1, torch.cuda.device_count())


@flow(name="rank-zoo", task_runner=ThreadPoolTaskRunner(max_workers=4))
def rank_zoo(
    zoo: str,
    dataset: str,
    metrics: list[str] | None = None,
    split: str = "train",
    device: str = "auto",
    batch_size: int = 64,
    concurrency: int | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    dataset_options: dict[str, Any] | None = None,
    max_samples: int | None = None,
    dask_gpu: bool = False,
    task: str | None = None,
    home: str | None = None,
    backend: str = "auto",
    pool: str | None = None,
    pool_timeout: float = 6 * 3600,
) -> dict[str, Any]:
    """Rank the models of ``zoo`` on ``split`` of ``dataset``; see the module docstring.

    ``metrics`` default to :data:`DEFAULT_METRICS`, or :data:`SEGMENTATION_METRICS` (with
    :data:`SEGMENTATION_OPTIONS`) for a segmentation dataset; ``task`` checks the dataset's task when given.

    ``dask_gpu``: with a ``DaskTaskRunner`` whose workers declare ``resources={"GPU": n}``, each extraction asks
    for one GPU, so a worker runs at most n extractions at once.

    ``pool`` (default: the zoo's ``pool:``): extract on the workers of that Prefect work pool instead, one
    ``extract-features`` run per model (:mod:`flows.pool`; needs ``PREFECT_API_URL`` and a feature store every
    worker sees, ``$FACEZOO_FEATURES``), waiting at most ``pool_timeout`` seconds; scoring stays here.

    Returns:
        ``{"job_id", "status", "dataset", "ranking" (records of metrics.rank_zoo), "failures" ({model: error}),
        "cache_hits" ([models]), "mlflow_run_id"}``.
    """
    where = Home.resolve(home).ensure()
    results = ResultsStore(where.results_db)
    for name in metrics or ():
        metric_registry.info(name)  # unknown names fail before any work
    backends.check_name(backend)
    zoo_config = resolve_zoo(zoo)
    pool = pool or zoo_config.pool  # the caller's pool, else the zoo's (a scheduled re-evaluation follows the zoo)
    if pool is not None:
        from flows.pool import check_pool

        check_pool(pool)
    ref = resolve_dataset(dataset, results, dataset_options, max_samples)
    data = datasets.load(ref)
    check_task(task, data)
    if split not in data.split_names:
        raise FaceZooError(f"dataset {ref.name!r} has no split {split!r}; it has {data.split_names}")
    segmentation = data.task == "segmentation"
    names = list(metrics or (SEGMENTATION_METRICS if segmentation else DEFAULT_METRICS))
    metric_options = {**(SEGMENTATION_OPTIONS if segmentation else {}), **(metric_options or {})}
    # logged with the job, so the MLflow run says which to trust; settled once the scores say which metrics scored
    # every model (LEEP needs a source head some models lack)
    advice = recommendation(data.task, set(names))
    params = {"zoo": zoo_config.name, "dataset": ref.name, "split": split, "metrics": names, "device": device,
              "backend": backend, "batch_size": batch_size, "metric_options": metric_options,
              "recommended_metric": advice.metric, "recommendation": advice.statement}
    job_id = start_job(where, results, "rank", zoo_config.name, ref.name, params)
    try:
        specs = list(zoo_config.models)
        progress.stage(f"ranking {len(specs)} models of zoo {zoo_config.name} on {ref.name} "
                       f"({int((data.splits == split).sum())} {split} samples, {len(names)} metrics)")
        if pool is not None:
            refs, scores, failures, skipped = _run_pool(
                specs, ref, split, names, metric_options, device, batch_size, backend, features_root(where), pool,
                pool_timeout)
        else:
            with _gpu_annotation(dask_gpu):
                refs, scores, failures, skipped = _run_models(
                    specs, ref, split, where, names, metric_options, device, batch_size,
                    concurrency or _default_concurrency(device), backend,
                )
        summary = _record(results, where, job_id, ref, params, specs, refs, scores, failures, names)
    except BaseException as error:  # a job never stays "running": interrupted or broken, it says so
        results.finish_job(job_id, "failed", message=one_line(error))
        raise
    return {**summary, "skipped": skipped}


def _run_models(
    specs: list[ModelSpec], ref: datasets.DatasetRef, split: str, where: Home, names: list[str],
    metric_options: dict[str, dict[str, Any]], device: str, batch_size: int, concurrency: int, backend: str,
) -> tuple[dict[str, FeatureRef], dict[str, ModelScores], dict[str, tuple[str, str]], dict[str, str]]:
    """Extraction, ``concurrency`` models at a time in zoo order, and scoring, as Prefect tasks.

    A model's scoring is submitted once its features are stored, so it overlaps the next models' extraction, and no
    task ever sits in a worker thread waiting for another (a bounded thread pool could deadlock on that). An
    ``optional`` model whose weights are not installed here is skipped, not failed.
    """
    extract_options = {"device": device, "batch_size": batch_size, "progress": True, "backend": backend,
                       "export_dir": str(where.onnx)}
    refs: dict[str, FeatureRef] = {}
    failures: dict[str, tuple[str, str]] = {}
    skipped: dict[str, str] = {}
    scoring = {}
    for start in range(0, len(specs), concurrency):
        batch = specs[start : start + concurrency]
        futures = [extract_features.submit(spec, ref, split, features_root(where), extract_options) for spec in batch]
        for spec, future in zip(batch, futures, strict=True):
            try:
                refs[spec.name] = future.result()
            except ModelUnavailableError as error:
                if spec.optional:
                    skipped[spec.name] = one_line(error)
                else:
                    failures[spec.name] = ("extract", one_line(error))
                continue
            except Exception as error:  # noqa: BLE001 - one model's failure is recorded, never fatal to the zoo
                failures[spec.name] = ("extract", one_line(error))
                progress.stage(f"{spec.name}: failed to extract features: {failures[spec.name][1]}")
                continue
            found = " (features from the cache)" if refs[spec.name].cache_hit else ""
            progress.stage(f"scoring {spec.name}{found}")
            scoring[spec.name] = score_features.submit(refs[spec.name], names, metric_options)
    return refs, _scored(scoring, failures), failures, skipped


def _scored(scoring: dict[str, Any], failures: dict[str, tuple[str, str]]) -> dict[str, ModelScores]:
    """The scores of the submitted scoring tasks; a failed one goes to ``failures``."""
    scores: dict[str, ModelScores] = {}
    for model, future in scoring.items():
        try:
            scores[model] = future.result()
        except Exception as error:  # noqa: BLE001
            failures[model] = ("score", one_line(error))
    return scores


def features_root(where: Home) -> str:
    """The feature store: ``$FACEZOO_FEATURES`` (a folder or a URL such as ``s3://bucket/features``, shared with
    pool workers), else the home's ``features/`` folder."""
    return os.environ.get("FACEZOO_FEATURES") or str(where.features)


def artifacts_root(where: Home) -> str:
    """MLflow's artifact root for new experiments: ``$FACEZOO_ARTIFACTS`` (a folder or a URL, ``s3://bucket/mlflow``;
    MLflow's database stays in the home), else the home's ``mlartifacts/``."""
    return os.environ.get("FACEZOO_ARTIFACTS") or str(where.artifacts)


def _run_pool(
    specs: list[ModelSpec], ref: datasets.DatasetRef, split: str, names: list[str],
    metric_options: dict[str, dict[str, Any]], device: str, batch_size: int, backend: str, features: str, pool: str,
    timeout: float,
) -> tuple[dict[str, FeatureRef], dict[str, ModelScores], dict[str, tuple[str, str]], dict[str, str]]:
    """Extraction on the workers of ``pool`` (:func:`flows.pool.run_on_pool`), scoring here as each model's
    features arrive. The workers use their own home's ONNX exports, so no ``export_dir`` is passed."""
    from flows.pool import run_on_pool

    scoring: dict[str, Any] = {}

    def score(found: FeatureRef) -> None:
        progress.stage(f"scoring {found.model}{' (features from the cache)' if found.cache_hit else ''}")
        scoring[found.model] = score_features.submit(found, names, metric_options)

    progress.stage(f"extracting on work pool {pool}: one run per model")
    outcome = run_on_pool(specs, ref, split, features, {"device": device, "batch_size": batch_size,
                                                        "backend": backend}, pool, timeout, score)
    failures = {model: ("extract", error) for model, error in outcome.failures.items()}
    for model, error in outcome.failures.items():
        progress.stage(f"{model}: failed to extract features: {error}")
    return outcome.refs, _scored(scoring, failures), failures, outcome.skipped


def _record(
    results: ResultsStore, where: Home, job_id: str, ref: datasets.DatasetRef, params: dict[str, Any],
    specs: list[ModelSpec], refs: dict[str, FeatureRef], scores: dict[str, ModelScores],
    failures: dict[str, tuple[str, str]], names: list[str],
) -> dict[str, Any]:
    """Rank, write DuckDB, log MLflow, close the job."""
    for model, (stage, error) in failures.items():
        results.record_failure(job_id, model, stage, error)
    data = datasets.load(ref)
    described = data.describe()
    fingerprint = described["fingerprint"]
    advice = recommendation(data.task, fully_scored(scores, names) or set(names))
    params = {**params, "recommended_metric": advice.metric, "recommendation": advice.statement}
    for f in refs.values():
        results.upsert_model(f.model, source=f.source, digest=f.digest, modality=f.modality, dim=f.dim,
                             num_logits=f.num_logits, preprocessing=f.preprocessing)
        results.record_feature_set(f.cache_key, model=f.model, dataset=f.dataset, split=f.split,
                                   dataset_fingerprint=fingerprint, path=f.path, n=f.n, dim=f.dim,
                                   extraction_seconds=f.extraction_seconds)
    table = pd.DataFrame(columns=["metric", "model", "raw", "score", "rank"])
    unscored = sorted({c for s in scores.values() for c in s.unscored_classes})
    if unscored:
        listed = ", ".join(unscored[:8]) + (", ..." if len(unscored) > 8 else "")
        progress.stage(f"left out of every metric: {len(unscored)} class{'es' if len(unscored) > 1 else ''} with a "
                       f"single sample in the {params['split']} split ({listed})")
    if scores:
        raw = {model: s.values for model, s in scores.items()}
        present = [n for n in names if any(n in s.values for s in scores.values())]
        progress.stage(f"ranking {len(scores)} models on {len(present)} metrics")
        table = metric_registry.rank_zoo(raw, present, options={
            n: {k: v for k, v in o.items() if k in metric_registry.info(n).combine_options}
            for n, o in params["metric_options"].items() if metric_registry.info(n).zoo_normalised
        })
        seconds = {(model, metric): sec for model, s in scores.items() for metric, sec in s.seconds.items()}
        results.write_scores(job_id, ref.name, table, seconds)
    status = "failed" if not scores else "partial" if failures else "completed"
    run_id, message = None, None
    progress.stage("logging to MLflow")
    try:
        run_id = Tracker(where.tracking_uri, artifacts_root(where)).log_rank_job(
            ref.name, job_id, params, models=[_tracked(refs[m], scores[m]) for m in scores],
            ranking=table, failures={m: f"{stage}: {error}" for m, (stage, error) in failures.items()},
            dataset_info=described,
        )
    except FaceZooError as error:  # the scores are safe in DuckDB; say what MLflow missed
        message = f"MLflow logging failed: {error}"
        _log.warning(message)
    if failures and message is None:
        message = f"{len(failures)} of {len(specs)} models failed: " + "; ".join(
            f"{m} ({stage}): {error}" for m, (stage, error) in failures.items())
    results.finish_job(job_id, status, message=message, mlflow_run_id=run_id, params=params)
    return {
        "job_id": job_id, "status": status, "dataset": ref.name, "ranking": table.to_dict("records"),
        "failures": {m: f"{stage}: {error}" for m, (stage, error) in failures.items()},
        "cache_hits": sorted(m for m, r in refs.items() if r.cache_hit), "mlflow_run_id": run_id,
        "unscored_classes": unscored, "recommendation": advice.to_dict(),
    }


def fully_scored(scores: dict[str, ModelScores], names: list[str]) -> set[str]:
    """The metrics of ``names`` with a finite score for every scored model: only those can order the whole zoo (LEEP
    needs a source classifier head that some models lack), so only those can be recommended."""
    return {n for n in names if scores and all(math.isfinite(s.values.get(n, math.nan)) for s in scores.values())}


def _tracked(ref: FeatureRef, scores: ModelScores) -> dict[str, Any]:
    return {
        "name": ref.model, "source": ref.source, "digest": ref.digest, "dim": ref.dim, "n": scores.n,
        "n_classes": scores.n_classes, "cache_key": ref.cache_key, "cache_hit": ref.cache_hit, "backend": ref.backend,
        "extraction_seconds": ref.extraction_seconds, "seconds": scores.seconds, "metric_errors": scores.errors,
        "unscored_classes": scores.unscored_classes,
    }

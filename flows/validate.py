"""``validate``: fine-tune (a subset of) the zoo and measure how well every metric's ranking predicted the result.

1. the scores: the latest rank job of this zoo on this dataset in the results store, or a fresh ``rank_zoo`` run;
2. which models: all, or the ``top_k`` by ``by`` (default: the metric the held-out evidence recommends for the
   task, :mod:`facezoo.evidence`) plus ``controls`` lower-ranked ones spread over the rest (a
   ranking is only tested by models it ranks low);
3. ground truth per model as Prefect tasks (one at a time on a CPU, where one fine-tuning already uses every core),
   cached in the results store by (model, dataset fingerprint, protocol, budget): a model already fine-tuned under
   the same settings is not trained again. ``protocol="auto"`` fine-tunes every trainable model in full and gives the
   others a head on frozen features;
4. for every metric scored on those models: weighted τ, Kendall τ, Pearson, Spearman, top-1 regret and a bootstrap
   interval of the weighted τ over models, written to DuckDB and logged to MLflow with a scatter plot per metric.
   Correlations are computed per protocol; when ``auto`` had to mix protocols, one more set over all models is
   stored under the protocol ``mixed:<a>+<b>`` and the summary says so: protocols are never mixed silently;
5. FaCe's premise (``collapse_premise``): across the fully fine-tuned models, the rank correlation between the
   collapse of their pre-trained features (NC1, from the scores) and that of their fine-tuned test features (the
   same NC1, computed by :func:`facezoo.finetune.full`). FaCe assumes it is strong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from facezoo import evaluate, finetune, progress
from facezoo import metrics as metric_registry
from facezoo.config import Home
from facezoo.errors import FaceZooError
from facezoo.evidence import recommendation
from facezoo.extract import pick_device
from flows.rank import check_task, one_line, rank_zoo, resolve_dataset, resolve_zoo, start_job
from storage.results import ResultsStore
from storage.tracking import Tracker
from tasks import datasets
from tasks._prefect import ThreadPoolTaskRunner, flow
from tasks.finetune import GroundTruth, ground_truth

__all__ = ["validate", "choose_models", "collapse_premise", "correlations", "protocol_correlations",
           "rank_agreement"]


def ranked_by(scores: pd.DataFrame, metric: str) -> list[str]:
    """Every scored model, best first by ``metric``; the models it could not score (a source-logit metric on a model
    without logits) come last, so that they are still fine-tuned, not dropped."""
    ranked = scores[scores.metric == metric].dropna(subset=["rank"]).sort_values("rank")["model"].tolist()
    return ranked + sorted(set(scores.model) - set(ranked))


def choose_models(ranked: list[str], top_k: int | None, controls: int) -> list[str]:
    """``ranked`` best first: all of them, or the first ``top_k`` and ``controls`` evenly spaced below them."""
    if top_k is None or top_k >= len(ranked):
        return list(ranked)
    rest = ranked[top_k:]
    picks = np.unique(np.linspace(0, len(rest) - 1, min(controls, len(rest))).round().astype(int)) if controls else []
    return list(ranked[:top_k]) + [rest[i] for i in picks]


def correlations(scores: pd.DataFrame, accuracy: dict[str, float], seed: int = 0) -> pd.DataFrame:
    """Ranking quality of every metric in ``scores`` (long table: metric, model, score) against ``accuracy``."""
    rows = []
    for metric, group in scores.groupby("metric", sort=True):
        group = group[group["model"].isin(accuracy) & np.isfinite(group["score"])]
        if len(group) < 3:
            continue  # fewer than 3 models: no meaningful rank correlation
        sign = 1.0 if metric_registry.info(metric).higher_is_better else -1.0
        score = sign * group["score"].to_numpy(dtype=float)
        acc = np.array([accuracy[m] for m in group["model"]])
        if np.ptp(score) == 0 or np.ptp(acc) == 0:
            continue
        tau, low, high = evaluate.bootstrap_ci("weighted_tau", score, acc, seed=seed)
        rows.append({
            "metric": metric, "weighted_tau": tau, "kendall_tau": evaluate.kendall_tau(score, acc),
            "pearson": evaluate.pearson(score, acc), "spearman": evaluate.spearman(score, acc),
            "top1_regret": evaluate.top1_regret(score, acc), "ci_low": low, "ci_high": high, "n_models": len(group),
        })
    return pd.DataFrame(rows, columns=["metric", "weighted_tau", "kendall_tau", "pearson", "spearman", "top1_regret",
                                       "ci_low", "ci_high", "n_models"])


def protocol_correlations(
    scores: pd.DataFrame, accuracy: dict[str, float], protocols: dict[str, str], seed: int = 0
) -> dict[str, pd.DataFrame]:
    """:func:`correlations` per fine-tuning protocol; when there are several, one more table over all models under
    ``mixed:<a>+<b>``, so that a mixed comparison is always labelled as one."""
    groups = {p: {m: a for m, a in accuracy.items() if protocols[m] == p} for p in sorted(set(protocols.values()))}
    if len(groups) > 1:
        groups[f"mixed:{'+'.join(groups)}"] = dict(accuracy)
    return {p: correlations(scores, acc, seed=seed) for p, acc in groups.items()}


def collapse_premise(scores: pd.DataFrame, truth: dict[str, GroundTruth]) -> dict[str, Any] | None:
    """Spearman ρ and Kendall τ-b, across models, between the collapse of the pre-trained features (``nc1`` in
    ``scores``, else ``face_variance`` = −log NC1) and the same quantity of the fine-tuned test features; None with
    fewer than 3 models that have both (or neither metric was scored)."""
    for metric, term in (("nc1", "ft_nc1"), ("face_variance", "ft_variance_collapse")):
        pre = scores[scores.metric == metric].set_index("model")["score"]
        if pre.empty:
            continue
        agreement = rank_agreement(pre, {m: getattr(t, term) for m, t in truth.items()})
        return None if agreement is None else {"metric": metric, **agreement}
    return None


def rank_agreement(before: pd.Series, after: dict[str, float | None]) -> dict[str, Any] | None:
    """``n_models``, Spearman ρ and Kendall τ-b between ``before`` (indexed by model) and ``after`` over the models
    finite in both; None with fewer than 3."""
    models = sorted(m for m, v in after.items()
                    if v is not None and np.isfinite(v) and m in before.index and np.isfinite(before[m]))
    if len(models) < 3:
        return None
    x, y = before[models].to_numpy(dtype=float), np.array([after[m] for m in models], dtype=float)
    return {"n_models": len(models), "spearman": evaluate.spearman(x, y), "kendall_tau": evaluate.kendall_tau(x, y)}


@flow(name="validate-ranking", task_runner=ThreadPoolTaskRunner(max_workers=2))
def validate(
    zoo: str,
    dataset: str,
    top_k: int | None = None,
    controls: int = 2,
    by: str = "recommended",
    protocol: str = "auto",
    budget: dict[str, Any] | None = None,
    metrics: list[str] | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    max_samples: int | None = None,
    task: str | None = None,
    home: str | None = None,
) -> dict[str, Any]:
    """Validate the zoo's ranking on ``dataset``; returns ``{"job_id", "status", "accuracy", "protocols",
    "correlations", "failures", "eval_split", "rank_job_id", "mlflow_run_id", "by", "recommendation"}``.
    ``protocol``: ``auto``, ``full`` or ``frozen_head``; ``budget``: fields of :class:`facezoo.finetune.Budget` for
    ``full``. On a segmentation dataset the ground truth is the held-out mIoU of ``full`` fine-tuning with an FCN
    head (stored as ``accuracy``).

    Models train on ``train_split`` and are scored on ``eval_split``: by default the first held-out split the
    dataset has (:data:`tasks.datasets.HELD_OUT_SPLITS`: ``test``, else ``val``, ...), so that an ImageNet-style
    ``train/`` + ``val/`` folder validates as it ranks. Splits, protocol and budget are checked before any work."""
    if protocol not in ("auto", *finetune.PROTOCOLS):
        raise FaceZooError(f"unknown protocol {protocol!r}; known: auto, {', '.join(finetune.PROTOCOLS)}")
    finetune.Budget(**(budget or {}))  # a bad budget fails here, before any work
    where = Home.resolve(home).ensure()
    results = ResultsStore(where.results_db)
    zoo_config = resolve_zoo(zoo)
    ref = resolve_dataset(dataset, results, max_samples=max_samples)
    data = datasets.load(ref)
    check_task(task, data)
    if train_split not in data.split_names:
        raise FaceZooError(f"dataset {ref.name!r} has no split {train_split!r} to train on; it has "
                           f"{', '.join(data.split_names)}")
    held_out = datasets.eval_split(data, eval_split, train_split)
    chosen_by = "--eval-split" if eval_split else f"the first held-out split of {', '.join(datasets.HELD_OUT_SPLITS)}"
    progress.stage(f"validating on {ref.name}: training on {train_split!r}, scoring on {held_out!r} ({chosen_by})")
    rank_job = results.latest_job("rank", dataset=ref.name, zoo=zoo_config.name)
    if rank_job is None:
        rank_job = rank_zoo(zoo, ref.name, metrics=metrics, split=train_split, device=device, batch_size=batch_size,
                            max_samples=max_samples, home=str(where.root))["job_id"]
    scores = results.scores(rank_job)
    if scores.empty:
        raise FaceZooError(f"rank job {rank_job} of {ref.name!r} has no scores to validate")
    advice = recommendation(data.task, set(scores.metric))
    if by == "recommended":
        by = advice.metric
    elif by not in set(scores.metric):
        raise FaceZooError(f"--by {by!r}: rank job {rank_job} has no such metric; it has "
                           f"{', '.join(sorted(set(scores.metric)))}")
    chosen = set(choose_models(ranked_by(scores, by), top_k, controls))
    specs = [spec for spec in zoo_config.models if spec.name in chosen]
    params = {"zoo": zoo_config.name, "dataset": ref.name, "protocol": protocol, "top_k": top_k,
              "controls": controls, "by": by, "rank_job": rank_job, "splits": [train_split, held_out],
              "budget": budget or {}, "recommendation": advice.statement}
    job_id = start_job(where, results, "validate", zoo_config.name, ref.name, params)
    try:
        summary = _validate(results, where, job_id, ref, params, specs, scores, protocol, (train_split, held_out),
                            {"device": device, "batch_size": batch_size, "progress": True,
                             "export_dir": str(where.onnx)}, budget or {})
        return {**summary, "by": by, "recommendation": advice.to_dict()}
    except BaseException as error:  # a job never stays "running": interrupted or broken, it says so
        results.finish_job(job_id, "failed", message=one_line(error))
        raise


def _validate(
    results: ResultsStore, where: Home, job_id: str, ref: Any, params: dict[str, Any], specs: list[Any],
    scores: pd.DataFrame, protocol: str, splits: tuple[str, str], extract_options: dict[str, Any],
    budget: dict[str, Any],
) -> dict[str, Any]:
    """Ground truth as tasks, correlations, DuckDB, MLflow, job status."""
    sequential = pick_device(extract_options["device"]).type == "cpu"
    progress.stage(f"fine-tuning {len(specs)} models ({protocol}): {', '.join(spec.name for spec in specs)}")
    futures = []
    for spec in specs:
        futures.append(ground_truth.submit(spec, ref, protocol, splits, str(where.features), str(where.results_db),
                                           job_id, extract_options, budget))
        if sequential:
            futures[-1].wait()
    truth: dict[str, GroundTruth] = {}
    failures: dict[str, str] = {}
    for spec, future in zip(specs, futures, strict=True):
        try:
            truth[spec.name] = future.result()
        except Exception as error:  # noqa: BLE001 - one model's failure is recorded, never fatal
            failures[spec.name] = one_line(error)
            results.record_failure(job_id, spec.name, "finetune", failures[spec.name])
    accuracy = {m: t.accuracy for m, t in truth.items()}
    progress.stage(f"correlating every metric's ranking with the accuracies of {len(accuracy)} models")
    tables = protocol_correlations(scores, accuracy, {m: t.protocol for m, t in truth.items()})
    for used, table in tables.items():
        results.write_correlations(job_id, ref.name, used, table)
    table = pd.concat([correlations(scores, {}).assign(protocol=pd.Series(dtype=str)),
                       *(t.assign(protocol=p) for p, t in tables.items())], ignore_index=True)
    status = "failed" if len(truth) < 2 else "partial" if failures else "completed"
    run_id, message = None, ("; ".join(f"{m}: {e}" for m, e in failures.items()) or None)
    progress.stage("logging to MLflow")
    try:
        finetuned = pd.DataFrame([{**t.model_dump(exclude={"curve"})} for t in truth.values()])
        curves = {m: t.curve for m, t in truth.items() if t.curve}
        run_id = Tracker(where.tracking_uri, where.artifacts).log_validation(
            ref.name, job_id, params, finetune=finetuned, correlations=table, scores=scores, curves=curves,
            dataset_info=datasets.load(ref).describe())
    except FaceZooError as error:
        message = f"{message + '; ' if message else ''}MLflow logging failed: {error}"
    results.finish_job(job_id, status, message=message, mlflow_run_id=run_id)
    protocols = {m: t.protocol for m, t in truth.items()}
    return {"job_id": job_id, "status": status, "accuracy": accuracy, "protocols": protocols,
            "fallbacks": {m: t.fallback for m, t in truth.items() if t.fallback},
            "correlations": table.to_dict("records"), "eval_split": splits[1],
            "collapse_premise": collapse_premise(scores, truth),
            "failures": failures, "rank_job_id": params["rank_job"], "mlflow_run_id": run_id}

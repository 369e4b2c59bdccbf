"""The ``facezoo`` command line.

Every command takes ``--home`` (default ``$FACEZOO_HOME`` or ``./.facezoo``), where features, the results database,
MLflow and Prefect's state live; ``--json`` prints machine-readable output. A user error prints one line and exits
with status 2; a model or dataset that fails inside a run is reported in the run's summary (status ``partial``,
exit status 3).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from facezoo import FaceZooError, __version__
from facezoo.config import Home

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Rank pre-trained models by transferability.")

_STATE: dict[str, Any] = {}
EXIT_USER_ERROR, EXIT_PARTIAL = 2, 3


@app.callback()
def main(
    home: Optional[str] = typer.Option(None, "--home", help="Home folder (default $FACEZOO_HOME or ./.facezoo)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's and MLflow's own logs."),
):
    """FaCe Zoo: rank a zoo of pre-trained models on a labelled dataset, and prove the ranking."""
    _STATE["home"] = home
    _STATE["verbose"] = verbose


def _home() -> Home:
    """Resolve and activate the home (Prefect and MLflow settings) before any flow module is imported."""
    if not _STATE.get("verbose"):
        # the CLI reports failures itself, one line each; Prefect would add a traceback per failed task
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow resets its logger's level on import
    try:
        return Home.resolve(_STATE.get("home")).activate()
    except FaceZooError as error:
        _fail(error)
        raise  # unreachable: _fail exits


def _fail(error: BaseException) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=EXIT_USER_ERROR)


def _run(fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except FaceZooError as error:
        _fail(error)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _print_ranking(summary: dict[str, Any]) -> None:
    import pandas as pd

    from facezoo.metrics import describe_ties

    table = pd.DataFrame(summary["ranking"])
    if table.empty:
        typer.echo("no model could be scored")
    else:
        ranks = table.pivot(index="model", columns="metric", values="rank")
        lead = summary.get("recommendation", {}).get("metric", "face")
        first = list(dict.fromkeys(m for m in (lead, "face", "face_variance", "face_fairness") if m in ranks.columns))
        ranks = ranks[first + [c for c in ranks.columns if c not in first]]
        if first:
            ranks = ranks.sort_values(first[0])
        # a shared rank reads "1=": equal scores (SFDA's 0.0 for every saturated model) must not pass for an order
        cells = ["–" if pd.isna(r) else f"{r:.0f}{'=' if t > 1 else ''}" for r, t in zip(table["rank"], table["tied"])]
        shown = table.assign(cell=cells).pivot(index="model", columns="metric", values="cell")
        typer.echo(f"Ranks on {summary['dataset']} (1 = predicted best, 1= shared; job {summary['job_id']}):\n")
        typer.echo(shown.loc[ranks.index, ranks.columns].to_string())
        ties = describe_ties(table)
        if ties:
            typer.echo("\nties (equal scores):\n" + "\n".join(f"  {line}" for line in ties))
    for model, error in summary["failures"].items():
        typer.echo(f"FAILED {model}: {error}", err=True)
    for model, why in summary.get("skipped", {}).items():
        typer.echo(f"skipped {model} (optional): {why}")
    if summary.get("cache_hits"):
        typer.echo(f"\ncache hits (no extraction): {', '.join(summary['cache_hits'])}")
    _print_recommendation(summary)
    typer.echo(f"status: {summary['status']}")


def _print_recommendation(summary: dict[str, Any]) -> None:
    advice = summary.get("recommendation")
    if advice:
        typer.echo(f"\nrecommended metric: {advice['metric']}. Evidence: {advice['statement']}")


def _exit_for(summary: dict[str, Any]) -> None:
    if summary["status"] == "failed":
        raise typer.Exit(code=1)
    if summary["status"] == "partial":
        raise typer.Exit(code=EXIT_PARTIAL)


def _split_list(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they are JSON (numbers, true/false, lists), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FaceZooError(f"option {pair!r} must look like key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def rank(
    zoo: str = typer.Option(..., "--zoo", help="Zoo YAML file, or the name of one in configs/zoos."),
    dataset: str = typer.Option(..., "--dataset", help="Registered dataset name, or a source (builtin:digits)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics (default: all but nleep; "
                                                                  "for segmentation the ones that apply)."),
    split: str = typer.Option("train", "--split"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Rank on a stratified sample."),
    task: Optional[str] = typer.Option(None, "--task", help="image, text or segmentation: check the dataset is."),
    backend: str = typer.Option("auto", "--backend", help="Inference backend: auto, eager, channels-last or "
                                                         "onnxruntime (CPU; checked equal to eager)."),
    pool: Optional[str] = typer.Option(None, "--pool", envvar="FACEZOO_POOL",
                                       help="Extract on this Prefect work pool's workers, one run per model (needs "
                                            "PREFECT_API_URL and a shared $FACEZOO_FEATURES)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rank every model of a zoo on a dataset: extract (cache hits skipped), score, store, log, print."""
    home = _home()
    from flows.rank import rank_zoo

    summary = _run(rank_zoo, zoo, dataset, metrics=_split_list(metrics), split=split, device=device,
                   max_samples=max_samples, task=task, home=str(home.root), backend=backend, pool=pool)
    _echo_json(summary) if as_json else _print_ranking(summary)
    _exit_for(summary)


_FORMATS = ("folder", "table", "lines", "hf-disk", "segmentation", "idx")


def _source(path: str, fmt: Optional[str]) -> str:
    """A dataset source from a path (format guessed from its layout unless given) or a source string as it is."""
    kind = path.partition(":")[0]
    if kind in (*_FORMATS, "builtin", "shared"):
        return path
    if fmt:
        if fmt not in _FORMATS:
            raise FaceZooError(f"--format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
        return f"{fmt}:{path}"
    p = Path(path)
    if p.is_dir():
        if (p / "images").is_dir() and (p / "masks").is_dir():
            return f"segmentation:{path}"
        if (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file():
            return f"hf-disk:{path}"
        return f"folder:{path}"
    if p.suffix.lower() in (".csv", ".tsv", ".parquet"):
        return f"table:{path}"
    if p.is_file():
        return f"lines:{path}"
    raise FaceZooError(f"{path}: no such file or folder")


@app.command()
def onboard(
    path: str = typer.Argument(..., help="Dataset folder/file, or a source (builtin:animal-mnist)."),
    name: str = typer.Option(..., "--name"),
    fmt: Optional[str] = typer.Option(None, "--format", help=f"One of {', '.join(_FORMATS)} (default: guessed)."),
    option: list[str] = typer.Option([], "--option", help="Loader option key=value (repeatable)."),
    zoo: str = typer.Option("demo-image", "--zoo", help="Zoo to rank on it ('none' to only register)."),
    validate_top_k: Optional[int] = typer.Option(None, "--validate-top-k", help="Also fine-tune the top k."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check, fingerprint and register a dataset, then rank the zoo on it."""
    home = _home()
    from flows.onboard import onboard_dataset

    source = _run(_source, path, fmt)
    summary = _run(onboard_dataset, source, name, options=_run(_options, option),
                   zoo=None if zoo == "none" else zoo, validate_top_k=validate_top_k, device=device,
                   home=str(home.root))
    if as_json:
        _echo_json(summary)
        return
    d = summary["dataset"]
    typer.echo(f"registered {d['name']} ({d['task']}, {d['n_samples']} samples, {d['n_classes']} classes, "
               f"splits {d['splits']}), fingerprint {d['fingerprint']}")
    if summary["rank"]:
        _print_ranking(summary["rank"])
        _exit_for(summary["rank"])


@app.command("validate")
def validate_command(
    zoo: str = typer.Option(..., "--zoo"),
    dataset: str = typer.Option(..., "--dataset"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Fine-tune the top k (by --by) plus --controls."),
    controls: int = typer.Option(2, "--controls"),
    by: str = typer.Option("recommended", "--by", help="Metric choosing the top k (default: the one the held-out "
                                                      "evidence recommends for the task)."),
    protocol: str = typer.Option("auto", "--protocol",
                                 help="full (fine-tune end to end), frozen_head, or auto (full where possible)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Budget of full: optimiser steps per run."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Budget of full: batch size."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Budget of full: image side in pixels."),
    lr: Optional[list[float]] = typer.Option(None, "--lr", help="Budget of full: learning-rate grid (repeat)."),
    weight_decay: Optional[list[float]] = typer.Option(None, "--wd", help="Budget of full: weight-decay grid."),
    train_subset: Optional[int] = typer.Option(None, "--train-subset", help="Budget of full: at most N training "
                                                                            "samples (stratified)."),
    eval_split: Optional[str] = typer.Option(None, "--eval-split", help="Held-out split to score on (default: "
                                                                        "test, else val, validation, valid, dev)."),
    device: str = typer.Option("auto", "--device"),
    max_samples: Optional[int] = typer.Option(None, "--max-samples"),
    task: Optional[str] = typer.Option(None, "--task", help="image, text or segmentation: check the dataset is."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fine-tune the zoo (or its top k) and report how well each metric's ranking predicted the accuracies
    (for segmentation: test mIoU of the backbone with an FCN head)."""
    home = _home()
    from flows.validate import validate

    budget = {k: v for k, v in {"steps": steps, "batch_size": batch, "resolution": resolution, "lr_grid": lr,
                                "weight_decay_grid": weight_decay, "train_subset": train_subset}.items() if v}
    summary = _run(validate, zoo, dataset, top_k=top_k, controls=controls, by=by, protocol=protocol, budget=budget,
                   eval_split=eval_split, device=device, max_samples=max_samples, task=task, home=str(home.root))
    if as_json:
        _echo_json(summary)
        return
    _print_validation(summary)
    _exit_for(summary)


def _print_validation(summary: dict[str, Any]) -> None:
    import pandas as pd

    split = summary.get("eval_split")
    typer.echo(f"\nFine-tuned accuracy{f' on the {split!r} split' if split else ''} (ground truth):")
    protocols = summary.get("protocols", {})
    for model, acc in sorted(summary["accuracy"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {model:<24} {acc:.3f}  {protocols.get(model, '')}")
    for model, why in summary.get("fallbacks", {}).items():
        typer.echo(f"  ({model}: frozen_head, because {why})")
    table = pd.DataFrame(summary["correlations"])
    for protocol, group in (table.groupby("protocol", sort=False) if not table.empty else ()):
        mixed = " — protocols MIXED, read with care" if str(protocol).startswith("mixed:") else ""
        typer.echo(f"\nHow well each metric ranked them under {protocol} (weighted Kendall tau, 95 % bootstrap "
                   f"interval){mixed}:\n")
        group = group.sort_values("weighted_tau", ascending=False).set_index("metric")
        typer.echo(group[["weighted_tau", "ci_low", "ci_high", "kendall_tau", "top1_regret", "n_models"]]
                   .to_string(float_format=lambda v: f"{v:+.3f}"))
    premise = summary.get("collapse_premise")
    if premise:
        typer.echo(f"\nFaCe's premise, neural collapse before vs after fine-tuning ({premise['metric']}, "
                   f"{premise['n_models']} models): Spearman {premise['spearman']:+.3f}, "
                   f"Kendall tau {premise['kendall_tau']:+.3f}")
    for model, error in summary["failures"].items():
        typer.echo(f"FAILED {model}: {error}", err=True)
    advice = summary.get("recommendation")
    if advice and summary.get("by") not in (None, advice["metric"]):
        typer.echo(f"\nthe models were chosen by {summary['by']} (--by)")
    _print_recommendation(summary)
    typer.echo(f"status: {summary['status']}")


@app.command()
def report(
    dataset: Optional[str] = typer.Option(None, "--dataset"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The leaderboard: every dataset's latest ranking, from the results database."""
    home = _home()
    from storage.results import ResultsStore
    from tasks.datasets import registered

    store = ResultsStore(home.results_db)
    if dataset is not None:
        _run(registered, store, dataset)  # a name that is not registered is a user error, not an empty leaderboard
    board = _run(store.leaderboard, dataset)
    if as_json:
        _echo_json(board.to_dict("records"))
        return
    if board.empty:
        # a registered dataset (or a fresh home) with no ranking yet is a state, not an error: say what to run, exit 0
        where = f" of {dataset}" if dataset else ""
        typer.echo(f"no ranking yet{where}: run `facezoo rank` or `facezoo demo`")
        return
    for name, group in board.groupby("dataset"):
        ranks = group.pivot(index="model", columns="metric", values="rank")
        if "face" in ranks.columns:
            ranks = ranks.sort_values("face")
        typer.echo(f"\n{name} (job {group['job_id'].iloc[0]}):\n")
        typer.echo(ranks.to_string(float_format=lambda v: f"{v:.0f}", na_rep="–"))


@app.command()
def query(
    sql: str = typer.Argument(..., help="A SQL query over the results database (read-only)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run a read-only SQL query on the results database (tables: datasets, models, feature_sets, jobs, scores,
    failures, finetune, correlations; view: leaderboard)."""
    home = _home()
    from storage.results import ResultsStore

    table = _run(ResultsStore(home.results_db).query, sql)
    _echo_json(table.to_dict("records")) if as_json else typer.echo(table.to_string(index=False))


@app.command()
def serve(schedule: Optional[str] = typer.Option(None, "--schedule", help="Schedule YAML (configs/schedules).")):
    """Serve the scheduled re-evaluation of every registered dataset (foreground, with a local Prefect server that
    creates the scheduled runs; Ctrl-C or SIGTERM stops it and every run in flight)."""
    home = _home()
    from flows.rank import resolve_zoo
    from flows.reevaluate import SCHEDULE, load_schedule
    from flows.reevaluate import serve as serve_schedule

    settings = _run(load_schedule, schedule or SCHEDULE)
    _run(resolve_zoo, settings.zoo)  # a zoo that does not exist is said now, not at the first run hours later
    typer.echo(f"serving {settings.describe()}; starting a local Prefect server under {home.prefect}")
    _run(serve_schedule, settings, home=str(home.root), echo=typer.echo)
    # everything serve started has stopped and its jobs are closed: skip the interpreter's teardown of torch,
    # Prefect and MLflow, which takes seconds on a busy machine, more than a supervisor's stop allows
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def ui(
    port: int = typer.Option(5000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (default: this machine only)."),
) -> None:
    """Start the MLflow UI on the home's tracking database (127.0.0.1 unless --host says otherwise)."""
    home = _home()
    from flows.serve import serve_ui
    from storage.tracking import Tracker

    tracker = Tracker(home.tracking_uri, home.artifacts)
    argv = tracker.ui_command(host=host, port=port)
    typer.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C or SIGTERM stops it and its workers)")
    for dataset, url in tracker.ui_urls(host, port).items():  # plain links open MLflow's GenAI pages
        typer.echo(f"  {dataset}: {url}")
    raise typer.Exit(code=serve_ui(argv))


@app.command()
def demo(
    text: bool = typer.Option(False, "--text", help="The text zoo on Rotten Tomatoes instead of the image zoo."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Images/texts to use (train + test)."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The embedded demo: rank the offline zoo on a real offline dataset with FaCe and every baseline, check the
    ranking against a small-budget full fine-tuning of every model (end to end with a new head; a head on frozen
    features only for a model that cannot be trained end to end), store everything, print the result."""
    home = _home()
    from flows.demo import run_demo

    summary = _run(run_demo, text=text, max_samples=max_samples, device=device, home=str(home.root))
    if as_json:
        _echo_json(summary)
        return
    _print_ranking(summary["rank"])
    _print_validation(summary["validate"])
    typer.echo(f"\nEverything is in {home.root}: `facezoo report`, `facezoo query \"SELECT * FROM leaderboard\"`, "
               "`facezoo ui` (MLflow).")
    _exit_for(summary["validate"])


@app.command("metrics")
def list_metrics(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List every metric: direction, inputs, zoo normalisation, paper and options."""
    from facezoo import metrics

    rows = []
    for name in metrics.available():
        info = metrics.info(name)
        rows.append({"metric": name, "higher_is_better": info.higher_is_better, "needs_logits": info.needs_logits,
                     "zoo_normalised": info.zoo_normalised, "paper": info.paper, "options": info.options})
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        direction = "higher=better" if row["higher_is_better"] else "lower=better"
        extras = ", ".join(k for k in ("needs_logits", "zoo_normalised") if row[k])
        typer.echo(f"{row['metric']:<18} {direction:<14} {extras:<28} {row['paper']}")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app(sys.argv[1:])

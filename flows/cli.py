"""The ``facezoo`` command line."""

from __future__ import annotations

import json
import sys

import typer

from facezoo import FaceZooError, __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Rank pre-trained models by transferability.")


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


@app.command()
def demo(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Rank a small zoo of feature maps of scikit-learn's digits with every metric (offline, seconds)."""
    from flows.metrics_demo import run_metrics_demo

    try:
        result = run_metrics_demo()
    except FaceZooError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps({"ranking": result["ranking"].reset_index(names="model").to_dict("records"),
                               "weighted_tau": result["weighted_tau"].to_dict()}, indent=2))
        return
    typer.echo("FaCe Zoo metrics demo: feature maps of scikit-learn's digits, ranked by FaCe\n")
    typer.echo(result["ranking"].to_string(float_format=lambda v: f"{v:.3f}"))
    typer.echo("\nWeighted Kendall tau of each metric's ranking against held-out accuracy:\n")
    typer.echo(result["weighted_tau"].to_string(float_format=lambda v: f"{v:+.3f}"))


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
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        direction = "higher=better" if row["higher_is_better"] else "lower=better"
        extras = ", ".join(k for k in ("needs_logits", "zoo_normalised") if row[k])
        typer.echo(f"{row['metric']:<18} {direction:<14} {extras:<28} {row['paper']}")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry point convenience
    app(sys.argv[1:])

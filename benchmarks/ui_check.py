"""Browser check of the MLflow UI review: what a reviewer sees after `facezoo rank` and `facezoo validate`.

Builds a small home (a zoo of three tiny timm architectures, random weights, ranked on 300 images of
scikit-learn's digits, then a `facezoo validate` with a budget of a few steps), reads back what the runs carry
(experiment kind, dataset input, source, the zoo's scores on the parent), starts `facezoo ui` on it and takes
screenshots with headless Chromium (no driver) of what a reviewer opens: the experiment's runs, the parent rank run,
its FaCe chart and its ranking table. Exits 1 when a check fails, 2 when Chromium is missing.

    python benchmarks/ui_check.py                    # ~3 minutes on 2 cores; writes benchmarks/results/ui-*.png
    python benchmarks/ui_check.py --home H           # reuse a home with rank and validate runs on digits-s300

Needs Chromium (Debian: `apt-get install chromium`). The screenshots and ui_check.md are written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ZOO = """name: ui-check
models:
  - {name: test_resnet, source: "timm:test_resnet", options: {pretrained: false}}
  - {name: test_vit, source: "timm:test_vit", options: {pretrained: false}}
  - {name: test_efficientnet, source: "timm:test_efficientnet", options: {pretrained: false}}
"""
DATASET = "builtin:digits"
MAX_SAMPLES = 300
# MLflow 3.17's UI picks its GenAI or model-training pages from this query parameter, else from the browser's
# remembered choice (GenAI on a first visit): it ignores the experiment tag mlflow.experimentKind (still set, for the
# UIs that read it), so a plain link to an experiment opens the GenAI overview.
ML_VIEW = "workflowType=machine_learning"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--virtual-time-budget=20000",
]


def facezoo(*args: str, home: Path) -> list[str]:
    """The argv of a `facezoo` command on ``home`` (the CLI next to this Python, as a user runs it)."""
    cli = Path(sys.executable).with_name("facezoo")
    return [str(cli if cli.exists() else shutil.which("facezoo") or "facezoo"), "--home", str(home), *args]


def build_home(home: Path, zoo: Path) -> list[list[str]]:
    """Rank and validate the tiny zoo on ``home``; returns the commands run."""
    zoo.write_text(ZOO)
    commands = [
        facezoo("rank", "--zoo", str(zoo), "--dataset", DATASET, "--max-samples", str(MAX_SAMPLES), home=home),
        facezoo("validate", "--zoo", str(zoo), "--dataset", f"digits-s{MAX_SAMPLES}", "--top-k", "1",
                "--controls", "1", "--steps", "5", "--resolution", "32", "--lr", "0.01", "--train-subset", "100",
                home=home),
    ]
    for argv in commands:
        print("$", " ".join(argv), flush=True)
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode not in (0, 3):  # 3: some models failed, the runs are still there
            sys.exit(f"{argv[3]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return commands


def read_runs(client: MlflowClient) -> tuple[str, list[str]]:
    """The latest parent rank run's id and the checks that failed on what MLflow stored."""
    experiment = client.get_experiment_by_name(f"facezoo/digits-s{MAX_SAMPLES}")
    if experiment is None:
        sys.exit(f"no experiment facezoo/digits-s{MAX_SAMPLES} at {client.tracking_uri}")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    rank = next(r for r in parents if r.data.tags.get("facezoo.kind") == "rank")
    failed = []
    if experiment.tags.get("mlflow.experimentKind") != "custom_model_development":
        failed.append(f"experiment tag mlflow.experimentKind = {experiment.tags.get('mlflow.experimentKind')!r}")
    for run in runs:
        name = run.info.run_name
        if not run.inputs.dataset_inputs:
            failed.append(f"run {name!r} has no dataset input")
        if not run.data.tags.get("mlflow.source.name", "").startswith("facezoo "):
            failed.append(f"run {name!r} has source {run.data.tags.get('mlflow.source.name')!r}")
    if not any("/" in key for key in rank.data.metrics):
        failed.append("the rank parent has no <metric>/<model> scores")
    return rank.info.run_id, failed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"facezoo ui exited with {server.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"facezoo ui did not answer {url} within {seconds:.0f} s")


def stop(server: subprocess.Popen, grace: float = 10) -> None:
    """End the server's whole process group (the CLI, MLflow's server and workers): SIGTERM, SIGKILL after
    ``grace`` seconds; the group outlives the CLI if its children do not exit with it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            server.poll()  # reap the CLI, else it stays a zombie member of the group
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def screenshot(chromium: str, url: str, path: Path, size: str, profile: Path) -> None:
    """One headless Chromium screenshot of ``url`` with a fresh profile (nothing remembered between views)."""
    with tempfile.TemporaryDirectory(dir=profile) as user_data:
        argv = [chromium, *CHROMIUM_FLAGS, f"--window-size={size}", f"--user-data-dir={user_data}",
                f"--screenshot={path.resolve()}", url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not path.is_file():
        sys.exit(f"chromium failed on {url} ({done.returncode}): {done.stderr.strip()[-1500:]}")


def shrink(path: Path) -> None:
    """A 256-colour PNG: a UI screenshot has few colours, and the file is committed."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home with rank and validate runs (default: build one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).is_file():
        print(f"no Chromium at {args.chromium}: install it (Debian: apt-get install chromium)", file=sys.stderr)
        sys.exit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facezoo-ui-check-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        home = args.home or work / "home"
        commands = [] if args.home else build_home(home, work / "ui-check.yaml")
        built = time.monotonic() - started
        from facezoo.config import Home
        from storage.tracking import Tracker

        tracker = Tracker(Home.resolve(home).tracking_uri, Home.resolve(home).artifacts)
        rank_run, failed = read_runs(tracker.client)
        port = free_port()
        runs = tracker.ui_urls(port=port)[f"digits-s{MAX_SAMPLES}"]  # what `facezoo ui` links to
        ui = facezoo("ui", "--port", str(port), home=home)
        print("$", " ".join(ui), flush=True)
        # its own process group: the MLflow server and its workers go with it, whatever the CLI does with signals
        server = subprocess.Popen(ui, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/health", server)
            run = f"{runs.split('?')[0]}/{rank_run}"
            views = {  # sorted by a metric, the runs table lists children flat: the zoo in FaCe order on top
                "ui-runs.png": (f"{runs}&orderByKey=metrics.%60face%60&orderByAsc=false", "1600,900"),
                "ui-run.png": (f"{run}?{ML_VIEW}", "1600,1500"),
                "ui-artifacts.png": (f"{run}/artifacts/face.png?{ML_VIEW}", "1600,800"),
                "ui-ranking.png": (f"{run}/artifacts/ranking.md?{ML_VIEW}", "1600,800"),
            }
            for name, (url, size) in views.items():
                screenshot(args.chromium, url, args.out / name, size, work)
                shrink(args.out / name)
                print(f"{name}: {url} ({(args.out / name).stat().st_size // 1024} KiB)", flush=True)
        finally:
            stop(server)
        write_report(args.out / "ui_check.md", [*commands, ui], work, {n: u for n, (u, _) in views.items()}, failed,
                     built if commands else None)
    for line in failed:
        print("FAILED:", line, file=sys.stderr)
    sys.exit(1 if failed else 0)


def write_report(path: Path, commands: list[list[str]], work: Path, views: dict[str, str], failed: list[str],
                 built: float | None) -> None:
    import mlflow

    chromium = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True, text=True)
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True).stdout.split("\n")
    code = f"commit {commit.stdout.strip()}" + (" with local changes" if any(changed) else "") if commit.stdout else ""
    lines = [
        "# MLflow UI check", "",
        f"`python benchmarks/ui_check.py`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {code or 'no git'}: "
        f"MLflow {mlflow.__version__}, {chromium.stdout.strip() or 'Chromium'} headless"
        + (f"; building the home took {built:.0f} s on this machine." if built is not None else ", an existing home."),
        "",
        "Checked on what MLflow stored: the experiment is tagged `mlflow.experimentKind = custom_model_development`; "
        "every run (rank and validate parents and their children) has the dataset input (name, digest = the "
        "dataset's fingerprint) and `mlflow.source.name` = the `facezoo` command that ran; the rank parent has the "
        "zoo's scores as `<metric>/<model>` metrics.", "",
        "Then what a reviewer sees (MLflow 3.17 ignores the experiment tag and opens an experiment on its GenAI "
        "overview unless the link says `workflowType=machine_learning` or the browser remembers the sidebar's "
        "Model training switch):", "",
        *(f"- `{name}`: `{url.split('/', 3)[-1]}`" for name, url in views.items()), "",
        "Commands (`$TMP`: a temporary folder; the zoo: timm's `test_resnet`, `test_vit`, `test_efficientnet` with "
        "random weights):", "",
        "```bash", *(shlex.join(["facezoo", *argv[1:]]).replace(str(work), "$TMP") for argv in commands), "```", "",
        "Result: " + ("every check passed." if not failed else "FAILED: " + "; ".join(failed)), "",
    ]
    path.write_text("\n".join(lines))
    print(json.dumps({"report": str(path), "failed": failed}))


if __name__ == "__main__":
    main()

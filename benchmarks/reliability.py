"""Faults injected into real runs, and bad inputs fed to the real CLI: what survives, what is lost, what is said.

    python benchmarks/reliability.py [--out benchmarks/results/reliability.md] [--only faults|inputs]

Faults. Each scenario runs ``facezoo rank`` in a child process (a three-model tiny zoo on 200 digits), kills it
with SIGKILL at one point, then runs the same command again and checks what a user relies on:

- the re-run exits 0, its job is ``completed``, the models finished before the kill are cache hits;
- the killed job is closed as ``interrupted`` (DuckDB) and its MLflow runs as ``KILLED``: nothing stays "running";
- every feature file in the store reads back (no half-written Parquet), no temporary file is left behind;
- no duplicate score rows, and no row lost: the re-run's scores equal those of an undisturbed reference run.

The kill points: at the start of the second model's extraction; half-way through writing the second model's Parquet
file; inside the DuckDB transaction that writes the scores; in the middle of the MLflow logging; and from outside,
by the parent, as soon as the first feature file exists. Further scenarios: a zoo with a model that raises, one that
runs out of memory at every batch size, one that runs out of memory only above batch 8 (recovers), and one whose
weights are missing (exit 3, ``partial``, every failure named); two jobs started at once on one home; a home with no
free space and one that cannot be created (one line, exit 2, no job written).

Bad inputs. Each case is a CLI call on a fresh, broken input; it passes when the exit status is non-zero, the error
is one line naming the culprit, and nothing was written half-way (no dataset registered, no feature file, no job
left running).

The tests (``tests/test_reliability.py``) run the same scenarios and assert on the same checks.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads OpenBLAS: see facezoo/__init__.py

import argparse
import itertools
import json
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ZOO = """
name: tiny
models:
  - {name: test_resnet, source: "timm:test_resnet", options: {pretrained: false}}
  - {name: test_vit, source: "timm:test_vit", options: {pretrained: false}}
  - {name: test_efficientnet, source: "timm:test_efficientnet", options: {pretrained: false}}
"""
RANK = ["rank", "--zoo", "{zoo}", "--dataset", "builtin:digits", "--max-samples", "200", "--metrics",
        "face,logme,knn", "--device", "cpu"]
OFFLINE_MODEL = "hf:no-such-org/no-such-model-xyz"
KILLS = ("kill-mid-extraction", "kill-mid-parquet-write", "kill-mid-duckdb-write", "kill-mid-mlflow",
         "kill-from-outside")


@dataclass
class Outcome:
    """One scenario: ``ok`` when every check held; ``checks`` says which did not."""

    kind: str  # "fault" or "input"
    name: str
    ok: bool
    detail: str
    checks: dict[str, bool] = field(default_factory=dict)
    rows_lost: int = 0
    seconds: float = 0.0


# -- the child process: the real CLI, with one fault installed ---------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _nth_call(n: int, real: Callable, instead: Callable) -> Callable:
    """``real``, except that its ``n``-th call runs ``instead``."""
    calls = itertools.count(1)

    def wrapper(*args, **kwargs):
        return (instead if next(calls) == n else real)(*args, **kwargs)

    return wrapper


class FailingForward:
    """A model's forward pass that fails as ``kind`` says (module level: DataLoader workers unpickle the adapter)."""

    def __init__(self, forward: Callable, kind: str):
        self.real, self.kind = forward, kind

    def __call__(self, batch):
        import torch

        if self.kind == "raise":
            raise RuntimeError("injected failure in the forward pass")
        if self.kind == "oom" or (self.kind == "oom-above-8" and len(batch) > 8):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self.real(batch)


def _register_faulty_sources() -> None:
    """``fault:raise``, ``fault:oom``, ``fault:oom-above-8``: a tiny timm model whose forward pass fails so."""
    from facezoo.models import create_model
    from facezoo.models._registry import register_source

    @register_source("fault", syntax="fault:<raise|oom|oom-above-8>", description="fault injection (benchmarks)")
    def fault_model(ref: str, *, name: str, source: str):
        model = create_model("timm:test_resnet", name=name, pretrained=False)
        model.forward = FailingForward(model.forward, ref)
        return model


def install_fault(fault: str) -> None:
    """Patch this (child) process so that it dies at the named point, or meets the named faulty models."""
    if fault == "kill-mid-extraction":  # the second model's extraction starts, and the process dies
        import facezoo.extract as extraction

        extraction._run = _nth_call(2, extraction._run, lambda *a, **k: _die())
    elif fault == "kill-mid-parquet-write":  # half of the second feature file is on disk when the process dies
        import pyarrow.parquet as pq

        real_write, writes = pq.write_table, itertools.count(1)

        def write_table(table, where, **options):
            if ".parquet." in Path(str(where)).name and next(writes) == 2:  # the store's temporary Parquet file
                real_write(table, where, **options)
                data = Path(where).read_bytes()
                Path(where).write_bytes(data[: len(data) // 2])
                _die()
            return real_write(table, where, **options)

        pq.write_table = write_table
    elif fault == "kill-mid-duckdb-write":  # the scores are inside an open transaction when the process dies
        import storage.results as results

        real_upsert = results._upsert

        def upsert(con, table, *args, **kwargs):
            out = real_upsert(con, table, *args, **kwargs)
            if table == "scores":
                _die()
            return out

        results._upsert = upsert
    elif fault == "kill-mid-mlflow":  # the parent run and some model runs are open in MLflow
        from storage.tracking import Tracker

        Tracker._log_batch = _nth_call(3, Tracker._log_batch, lambda *a, **k: _die())
    elif fault == "disk-full-mid-run":  # the disk fills up after the checks at the start passed
        import errno

        import pyarrow.parquet as pq

        def no_space(table, where, **options):
            raise OSError(errno.ENOSPC, "No space left on device", str(where))

        pq.write_table = no_space
    elif fault == "faulty-models":
        _register_faulty_sources()
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault!r}")


def child_main(fault: str, argv: list[str]) -> None:
    if fault == "inputs":  # argv: --home HOME --inputs SPEC ANSWERS
        _answer_bad_inputs(Path(argv[1]), Path(argv[3]), Path(argv[4]))
        return
    install_fault(fault)
    from flows.cli import app

    app(argv, prog_name="facezoo")


# -- the parent: scenarios and their checks ----------------------------------------------------------------------


class Child:
    """``facezoo <argv>`` in a child process of its own session, its output in files (a killed child's helpers
    could hold pipes open)."""

    def __init__(self, home: Path, argv: list[str], fault: str = "none", env: dict | None = None):
        command = [sys.executable, str(Path(__file__).resolve()), "--child", fault, "--", "--home", str(home), *argv]
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.out, stderr=self.err, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                        start_new_session=True)

    def wait(self, timeout: float = 900) -> tuple[int, str, str]:
        code = self.process.wait(timeout=timeout)
        self.out.seek(0), self.err.seek(0)
        return code, self.out.read(), self.err.read()


def _cli(home: Path, argv: list[str], fault: str = "none", env: dict | None = None) -> tuple[int, str, str]:
    return Child(home, argv, fault, env).wait()


def _orphans(since: set[int]) -> list[int]:
    """Processes of ours (Prefect servers, DataLoader workers) left running by a killed child: none should be."""
    pids = set()
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = status.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "prefect.server.api.server" in cmdline or "tasks._server_guard" in cmdline:
            pids.add(int(status.parent.name))
    return sorted(pids - since)


def _rank_argv(zoo: Path, extra: list[str] | None = None) -> list[str]:
    return [a.replace("{zoo}", str(zoo)) for a in RANK] + (extra or [])


def _store(home: Path):
    from storage.results import ResultsStore

    return ResultsStore(home / "results.duckdb")


def _scores(home: Path, job_id: str) -> dict[tuple[str, str], float]:
    table = _store(home).query("SELECT model, metric, raw FROM scores WHERE job_id = ?", [job_id])
    return {(r.model, r.metric): r.raw for r in table.itertuples()}


def _latest(home: Path) -> dict:
    return _store(home).query("SELECT * FROM jobs ORDER BY started_at DESC LIMIT 1").iloc[0].to_dict()


def _store_is_clean(home: Path) -> dict[str, bool]:
    """Every feature file reads back, no temporary file is left, no score row is duplicated, nothing runs."""
    from mlflow.tracking import MlflowClient

    from storage.features import FeatureStore

    store = FeatureStore(home / "features")
    readable = True
    for path in (home / "features").glob("model=*/dataset=*/split=*/*.parquet"):
        try:
            store.read(path)
        except Exception:  # noqa: BLE001 - any failure to read is what this check counts
            readable = False
    results = _store(home)
    duplicates = results.query("SELECT job_id, model, metric, count(*) AS n FROM scores GROUP BY ALL HAVING n > 1")
    running = results.query("SELECT job_id FROM jobs WHERE status = 'running'")
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    open_runs = client.search_runs(experiments, "attributes.status = 'RUNNING'") if experiments else []
    return {
        "feature files readable": readable,
        "no temporary files": not list((home / "features").rglob("*.tmp")),
        "no duplicate rows": duplicates.empty,
        "no job left running": running.empty,
        "no MLflow run left running": not open_runs,
    }


def reference(work: Path, zoo: Path) -> dict[tuple[str, str], float]:
    """The scores of an undisturbed run: what every recovered run must reproduce. Its home also gives the template
    of the scenarios' homes: Prefect's and MLflow's databases already created (a fresh one costs ~15 s each run)."""
    home = work / "reference"
    code, out, err = _cli(home, _rank_argv(zoo))
    if code != 0:
        raise RuntimeError(f"the reference run failed ({code}): {err.strip()[-500:]}")
    from mlflow.tracking import MlflowClient

    template = work / "template"
    shutil.copytree(home / "prefect", template / "prefect")
    MlflowClient(f"sqlite:///{template / 'mlflow.db'}").search_experiments()  # creates and migrates the database
    return _scores(home, _latest(home)["job_id"])


def _home(work: Path, name: str) -> Path:
    """A fresh home for one scenario, from the template when there is one."""
    home = work / name
    if (work / "template").is_dir():
        shutil.copytree(work / "template", home)
    return home


def kill_scenario(work: Path, zoo: Path, fault: str, expected: dict[tuple[str, str], float]) -> Outcome:
    started = time.perf_counter()
    home = _home(work, fault)
    servers = set(_orphans(set()))
    if fault == "kill-from-outside":
        child = Child(home, _rank_argv(zoo))
        deadline = time.monotonic() + 300
        while not list((home / "features").glob("model=*/dataset=*/split=*/*.parquet")):
            if child.process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        child.process.send_signal(signal.SIGKILL)  # the CLI's process only, as the OOM killer would
        code, _, _ = child.wait()
    else:
        code, _, _ = _cli(home, _rank_argv(zoo), fault=fault)
    time.sleep(2.5)  # the guard polls its parent every second
    orphans = _orphans(servers)
    killed = _latest(home) if (home / "results.duckdb").exists() else None
    again, out, err = _cli(home, _rank_argv(zoo))
    rerun = _latest(home)
    recovered = _scores(home, rerun["job_id"])
    lost = sum(1 for key, value in expected.items()
               if key not in recovered or not np.isclose(recovered[key], value, rtol=1e-9, atol=1e-12))
    killed_state = _store(home).job(killed["job_id"])["status"] if killed is not None else "no job yet"
    hits = out.split("cache hits (no extraction):")[-1].split("\n")[0].strip() if "cache hits" in out else ""
    checks = {
        "killed by SIGKILL": code == -signal.SIGKILL,
        "no orphaned server": not orphans,
        "re-run exits 0": again == 0,
        "re-run completed": rerun["status"] == "completed",
        "killed job closed as interrupted": killed_state in ("interrupted", "no job yet"),
        "finished models were cache hits": fault == "kill-from-outside" or bool(hits),
        **_store_is_clean(home),
        "no row lost": lost == 0,
    }
    return Outcome("fault", fault, all(checks.values()), f"killed job: {killed_state}; cache hits on re-run: "
                   f"{hits or 'none'}", checks, lost, time.perf_counter() - started)


FAULTY_ZOO = """
name: faulty
models:
  - {name: good, source: "timm:test_resnet", options: {pretrained: false}}
  - {name: raises, source: "fault:raise"}
  - {name: out_of_memory, source: "fault:oom"}
  - {name: oom_above_8, source: "fault:oom-above-8"}
  - {name: missing_weights, source: "checkpoint:resnet18@/nonexistent/weights.safetensors"}
"""


def faulty_models_scenario(work: Path) -> Outcome:
    started = time.perf_counter()
    home, zoo = _home(work, "faulty"), work / "faulty.yaml"
    zoo.write_text(FAULTY_ZOO)
    # the faults live in the torch module's forward pass, which an exported ONNX graph would never call
    code, out, err = _cli(home, _rank_argv(zoo, ["--backend", "eager"]), fault="faulty-models")
    job = _latest(home)
    failures = _store(home).query("SELECT model, stage, error FROM failures WHERE job_id = ?", [job["job_id"]])
    failed = dict(zip(failures.model, failures.error, strict=True))
    scored = set(_store(home).query("SELECT DISTINCT model FROM scores WHERE job_id = ?", [job["job_id"]]).model)
    checks = {
        "exit 3 (partial)": code == 3,
        "job partial": job["status"] == "partial",
        "good models scored": scored == {"good", "oom_above_8"},
        "raise named": "injected failure" in failed.get("raises", ""),
        "out of memory named": "out of memory" in failed.get("out_of_memory", "") and "batch size 1" in failed.get(
            "out_of_memory", ""),
        "missing weights named": "does not exist" in failed.get("missing_weights", ""),
        "each failure printed": all(f"FAILED {m}" in err for m in ("raises", "out_of_memory", "missing_weights")),
        **_store_is_clean(home),
    }
    return Outcome("fault", "failing models (raise, OOM, OOM above batch 8, missing weights)", all(checks.values()),
                   "; ".join(f"{m}: {e[:70]}" for m, e in failed.items()), checks, 0, time.perf_counter() - started)


def concurrent_scenario(work: Path, zoo: Path, expected: dict[tuple[str, str], float]) -> Outcome:
    """Two rank jobs started at once on one home: one on the reference task, one on another sample of the data."""
    started = time.perf_counter()
    home = work / "concurrent"  # a new home: both jobs also race to create its Prefect and MLflow databases
    children = [Child(home, _rank_argv(zoo)), Child(home, [a if a != "200" else "150" for a in _rank_argv(zoo)])]
    outputs = [child.wait() for child in children]
    codes = [code for code, _, _ in outputs]
    jobs = _store(home).query("SELECT job_id, dataset, status FROM jobs WHERE kind = 'rank'")
    by_dataset = dict(zip(jobs.dataset, jobs.job_id, strict=False))
    recovered = _scores(home, by_dataset.get("digits-s200", ""))
    lost = sum(1 for key, value in expected.items()
               if key not in recovered or not np.isclose(recovered[key], value, rtol=1e-9, atol=1e-12))
    other = _scores(home, by_dataset.get("digits-s150", ""))
    checks = {
        "both exit 0": codes == [0, 0],
        "both jobs completed": len(jobs) == 2 and set(jobs.status) == {"completed"},
        "both score every model and metric": len(other) == len(expected),
        **_store_is_clean(home),
        "no row lost": lost == 0,
    }
    errors = " | ".join(err.strip().splitlines()[-1] for _, _, err in outputs if err.strip())
    return Outcome("fault", "two jobs at once on one home", all(checks.values()), f"exit {codes}; {errors}"[:200],
                   checks, lost, time.perf_counter() - started)


def disk_full_scenario(work: Path, zoo: Path) -> Outcome:
    """The disk fills up during the run: every model fails with that reason, no file is left half-written."""
    started = time.perf_counter()
    home = _home(work, "disk-full")
    code, out, err = _cli(home, _rank_argv(zoo), fault="disk-full-mid-run")
    job = _latest(home)
    errors = _store(home).query("SELECT error FROM failures WHERE job_id = ?", [job["job_id"]]).error.tolist()
    checks = {
        "exit 1 (failed)": code == 1,
        "job failed": job["status"] == "failed",
        "every model says no space": len(errors) == 3 and all("no space left" in e for e in errors),
        "no feature file": not list((home / "features").rglob("*.parquet")),
        **_store_is_clean(home),
    }
    return Outcome("fault", "disk fills up during the run", all(checks.values()), (errors or ["none"])[0][:160],
                   checks, 0, time.perf_counter() - started)


def home_scenarios(work: Path, zoo: Path) -> list[Outcome]:
    """No free space (the check is given a 1 MiB disk), and a home that cannot be created."""
    outcomes = []
    blocker = work / "a-file"
    blocker.write_text("not a folder")
    cases = [
        ("home with no free space", work / "full", {"FACEZOO_MIN_FREE_MB": "999999999"}, "free"),
        ("home that cannot be created", blocker / "home", {}, "home"),
    ]
    for name, home, env, word in cases:
        started = time.perf_counter()
        code, out, err = _cli(home, _rank_argv(zoo), env=env)
        lines = _error_lines(err)
        checks = {
            "exit 2": code == 2,
            "one line": len(lines) == 1 and lines[0].startswith("error:"),
            "says why": word in err.lower(),
            "no job written": not (home / "results.duckdb").exists() or _store(home).query(
                "SELECT count(*) AS n FROM jobs").n[0] == 0,
        }
        outcomes.append(Outcome("fault", name, all(checks.values()), (lines or ["(no output)"])[0][:160], checks, 0,
                                time.perf_counter() - started))
    return outcomes


# -- bad inputs ------------------------------------------------------------------------------------------------------


@dataclass
class BadInput:
    name: str
    argv: list[str]
    expect: str  # a piece of the error that names the culprit
    exit_codes: tuple[int, ...] = (2,)
    bad_dataset: bool = True  # False: the dataset is fine (and gets registered), the zoo is what is broken


def _png(path: Path, size=(8, 8), value=0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size[::-1], 3), value, np.uint8)).save(path)


def _mask(path: Path, values: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)


def bad_inputs(work: Path) -> list[BadInput]:
    """Build every broken input under ``work``; the CLI call that must refuse each."""
    cases = []

    def folder(name: str, counts: dict[str, int]) -> Path:
        root = work / name
        root.mkdir(parents=True, exist_ok=True)
        for cls, n in counts.items():
            (root / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _png(root / cls / f"{i}.png", value=40 * i)
        return root

    def onboard(path: Path, name: str, *more: str) -> list[str]:
        return ["onboard", str(path), "--name", name, "--zoo", "none", *more]

    cases.append(BadInput("empty dataset", onboard(folder("empty", {}), "empty"), "empty"))
    cases.append(BadInput("one class", onboard(folder("one-class", {"cat": 4}), "oneclass"), "class"))
    cases.append(BadInput("a class with one sample", onboard(folder("singleton", {"cat": 4, "dog": 1}), "singleton"),
                          "dog"))
    corrupt = folder("corrupt", {"cat": 3, "dog": 3})
    (corrupt / "dog" / "1.png").write_bytes(b"this is not a png")
    cases.append(BadInput("corrupt image", onboard(corrupt, "corrupt"), "1.png"))
    truncated = folder("truncated", {"cat": 3, "dog": 3})
    data = (truncated / "cat" / "2.png").read_bytes()
    (truncated / "cat" / "2.png").write_bytes(data[: len(data) // 2])
    cases.append(BadInput("truncated image", onboard(truncated, "truncated"), "2.png"))

    text = work / "bad-utf8.csv"
    text.write_bytes(b"text,label\ngood review,pos\nbad \xff\xfe bytes,neg\nfine,neg\nok,pos\n")
    cases.append(BadInput("non-UTF-8 text row", onboard(text, "badutf8"), "line 3"))
    empty_text = work / "empty-row.csv"
    empty_text.write_text("text,label\ngood review,pos\n,neg\nfine,neg\nok,pos\n")
    cases.append(BadInput("empty text row", onboard(empty_text, "emptyrow"), "row"))

    def segmentation(name: str, mask_values: np.ndarray, image_size=(8, 8), classes: str | None = None) -> list[str]:
        root = work / name
        for i in range(4):
            _png(root / "images" / f"{i}.png", size=image_size)
            _mask(root / "masks" / f"{i}.png", mask_values)
        if classes:
            (root / "classes.txt").write_text(classes)
        return onboard(root, name.replace("-", ""), "--format", "segmentation")

    cases.append(BadInput("image and mask sizes differ", segmentation("seg-size", np.zeros((6, 6)), (8, 8)), "size"))
    cases.append(BadInput("mask label outside the class list",
                          segmentation("seg-label", np.full((8, 8), 7), classes="a\nb\nc\n"), "7"))

    nan_zoo = work / "nan-zoo.yaml"
    nan_weights = work / "nan.safetensors"
    _nan_checkpoint(nan_weights)
    nan_zoo.write_text(f"name: nan\nmodels:\n  - {{name: nan_model, source: 'checkpoint:test_resnet@{nan_weights}'}}\n")
    cases.append(BadInput("NaN features", ["rank", "--zoo", str(nan_zoo), "--dataset", "builtin:digits",
                                           "--max-samples", "100", "--metrics", "face"], "NaN", (1,), False))

    def zoo_file(name: str, body: str) -> str:
        path = work / f"{name}.yaml"
        path.write_text(body)
        return str(path)

    def rank_with(zoo: str) -> list[str]:
        return ["rank", "--zoo", zoo, "--dataset", "builtin:digits", "--max-samples", "100"]

    cases.append(BadInput("zoo: unknown source kind", rank_with(zoo_file(
        "unknown-source", "name: z\nmodels:\n  - {name: m, source: 'nosuch:model'}\n")), "nosuch"))
    cases.append(BadInput("zoo: typo'd key", rank_with(zoo_file(
        "typo", "name: z\nmodels:\n  - {name: m, sorce: 'timm:resnet18'}\n")), "sorce"))
    cases.append(BadInput("zoo: hub model offline", rank_with(zoo_file(
        "offline", f"name: z\nmodels:\n  - {{name: m, source: '{OFFLINE_MODEL}'}}\n")), "offline",
        (1, 2), False))
    cases.append(BadInput("zoo: model name with a path", rank_with(zoo_file(
        "path-name", "name: z\nmodels:\n  - {name: ../../etc, source: 'timm:test_resnet'}\n")), "name"))
    for label, name in [("dataset name with ../", "../escape"), ("dataset name with /", "a/b"),
                        ("dataset name with quotes", "x'\"y"), ("dataset name with SQL", "x'; DROP TABLE jobs; --")]:
        cases.append(BadInput(label, onboard(folder("named", {"cat": 3, "dog": 3}), name), "name"))
    cases.append(BadInput("unregistered dataset name with SQL", ["rank", "--zoo", "demo-image", "--dataset",
                                                                 "x' OR '1'='1"], "unknown dataset"))
    return cases


def _nan_checkpoint(path: Path) -> None:
    """A test_resnet checkpoint whose first convolution is NaN: a model that loads fine and gives NaN features."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("test_resnet", pretrained=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first_conv = next(k for k, v in state.items() if v.ndim == 4)
    state[first_conv][0] = float("nan")
    save_file(state, str(path))


def _error_lines(stderr: str) -> list[str]:
    """What stderr says went wrong: ``error:`` and ``FAILED`` lines and any traceback, not the progress lines
    (``checking …``, ``extracting …``) that precede them."""
    return [line for line in stderr.splitlines()
            if line.startswith(("error:", "FAILED", "Traceback", "  File ")) or re.match(r"\w+(Error|Exception):", line)]


def run_bad_inputs(cases: list[BadInput], home: Path) -> list[Outcome]:
    """Every case through the CLI in one child process (one interpreter and Prefect server for all)."""
    spec, answers = home.parent / "bad-inputs.json", home.parent / "bad-inputs-answers.json"
    spec.write_text(json.dumps([{"argv": c.argv} for c in cases]))
    code, out, err = _cli(home, ["--inputs", str(spec), str(answers)], fault="inputs")
    if code != 0:
        raise RuntimeError(f"the bad-input runner failed ({code}): {err.strip()[-800:]}")
    outcomes = []
    answered = json.loads(answers.read_text())
    for case, answer in zip(cases, answered["cases"], strict=True):
        errors = _error_lines(answer["stderr"])
        message = next((line for line in errors if line.startswith(("error:", "FAILED"))), "")
        before, after = answer["before"], answer["after"]
        checks = {
            "exit non-zero": answer["exit_code"] in case.exit_codes,
            "one line": bool(message) and len(errors) == 1,
            "names the culprit": case.expect.lower() in message.lower(),
            "nothing written half-way": (after["datasets"] == before["datasets"] or not case.bad_dataset)
            and after["features"] == before["features"] and after["running"] == 0,
        }
        outcomes.append(Outcome("input", case.name, all(checks.values()),
                                message[:180] or (answer["stderr"].strip() or answer["stdout"].strip())[-180:], checks,
                                0, answer["seconds"]))
    hub = answered["hub"]
    checks = {"fails in under 2 s": hub["seconds"] < 2.0, "says offline": "offline" in hub["message"]}
    outcomes.append(Outcome("input", f"hub model offline: create_model({OFFLINE_MODEL!r})", all(checks.values()),
                            f"{hub['seconds']:.2f} s: {hub['message'][:150]}", checks, 0, hub["seconds"]))
    return outcomes


def _answer_bad_inputs(home: Path, spec: Path, answers: Path) -> None:
    """In the child: first how long a hub model takes to fail offline (the first probe of this process), then each
    case through typer's runner (exit code and stderr as a user sees them)."""
    from typer.testing import CliRunner

    from facezoo.errors import FaceZooError
    from facezoo.models import create_model
    from flows.cli import app

    started = time.perf_counter()
    try:
        create_model(OFFLINE_MODEL)
        hub = {"message": "created (the hub was reachable?)"}
    except FaceZooError as error:
        hub = {"message": str(error).splitlines()[0]}
    hub["seconds"] = time.perf_counter() - started
    runner, results = CliRunner(), []
    for case in json.loads(spec.read_text()):
        before, started = _snapshot(home), time.perf_counter()
        result = runner.invoke(app, ["--home", str(home), *case["argv"]])
        results.append({"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                        "seconds": time.perf_counter() - started, "before": before, "after": _snapshot(home)})
    answers.write_text(json.dumps({"cases": results, "hub": hub}))


def _snapshot(home: Path) -> dict:
    if not (home / "results.duckdb").exists():
        return {"datasets": 0, "features": 0, "running": 0}
    store = _store(home)
    return {
        "datasets": int(store.query("SELECT count(*) AS n FROM datasets").n[0]),
        "features": len(list((home / "features").rglob("*.parquet"))),
        "running": int(store.query("SELECT count(*) AS n FROM jobs WHERE status = 'running'").n[0]),
    }


# -- the report ------------------------------------------------------------------------------------------------------


def run(work: Path, only: str | None = None, kills: tuple[str, ...] = KILLS) -> list[Outcome]:
    zoo = work / "tiny.yaml"
    zoo.write_text(ZOO)
    outcomes: list[Outcome] = []
    if only in (None, "faults"):
        expected = reference(work, zoo)
        outcomes += [kill_scenario(work, zoo, fault, expected) for fault in kills]
        outcomes.append(faulty_models_scenario(work))
        outcomes.append(concurrent_scenario(work, zoo, expected))
        outcomes.append(disk_full_scenario(work, zoo))
        outcomes += home_scenarios(work, zoo)
    if only in (None, "inputs"):
        outcomes += run_bad_inputs(bad_inputs(work / "inputs"), work / "inputs" / "home")
    return outcomes


def report(outcomes: list[Outcome], seconds: float) -> str:
    faults = [o for o in outcomes if o.kind == "fault"]
    inputs = [o for o in outcomes if o.kind == "input"]
    lines = [
        "# Reliability: faults injected, bad inputs tried", "",
        f"`python benchmarks/reliability.py` on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d')}, {seconds / 60:.1f} min. Every scenario runs the real `facezoo` CLI in a "
        "child process; see the script's docstring for the checks.", "",
        f"- faults injected: **{len(faults)}**, runs recovered (every check held): "
        f"**{sum(o.ok for o in faults)}**",
        f"- score rows lost: **{sum(o.rows_lost for o in faults)}**",
        f"- bad inputs tried: **{len(inputs)}**, rejected cleanly (non-zero exit, one line naming the culprit, "
        f"nothing half-written): **{sum(o.ok for o in inputs)}**", "",
        "| kind | scenario | ok | rows lost | seconds | what happened / the error | failed checks |",
        "| --- | --- | :-: | --: | --: | --- | --- |",
    ]
    for o in outcomes:
        failed = ", ".join(k for k, v in o.checks.items() if not v) or "–"
        detail = o.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {o.kind} | {o.name} | {'yes' if o.ok else '**no**'} | {o.rows_lost} | {o.seconds:.0f} | "
                     f"`{detail}` | {failed} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if "--child" in sys.argv:
        at = sys.argv.index("--child")
        child_main(sys.argv[at + 1], sys.argv[sys.argv.index("--") + 1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reliability.md"))
    parser.add_argument("--only", choices=("faults", "inputs"))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facezoo-reliability-") as work:
        outcomes = run(Path(work), args.only)
    text = report(outcomes, time.perf_counter() - started)
    print(text)
    if not args.only:
        Path(args.out).write_text(text)
    print(json.dumps({"failed": [o.name for o in outcomes if not o.ok]}))


if __name__ == "__main__":
    main()

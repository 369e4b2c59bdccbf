"""``facezoo serve`` and ``facezoo ui`` as a user runs them: real processes, real signals, what really happened read
back from the jobs table (DuckDB) and Prefect's database.

A schedule due every few seconds serves a one-model zoo of a tiny random timm model on a 60-image sample of digits;
a re-evaluation job must complete and be recorded. SIGTERM to the serve process alone (``kill``, a process
supervisor) and SIGINT to its process group with a run in flight (a terminal's Ctrl-C) must each stop serve and every
process it started within 10 s, leaving no job and no Prefect flow run marked running.
"""

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from facezoo.config import Home
from storage.results import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
ZOO = """
name: tiny
models:
  - {name: test_resnet, source: "timm:test_resnet", options: {pretrained: false}}
"""
STOP_SECONDS = 10.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A home with one registered dataset, a tiny zoo and a schedule due every 5 s."""
    from flows.rank import resolve_dataset

    work = tmp_path_factory.mktemp("serve")
    home = Home.resolve(work / "home").ensure()
    (work / "zoo.yaml").write_text(ZOO)
    (work / "schedule.yaml").write_text(f"name: test-reevaluation\ninterval: 5\nzoo: {work / 'zoo.yaml'}\n"
                                        "device: cpu\n")
    resolve_dataset("builtin:digits", ResultsStore(home.results_db), max_samples=60)  # registers digits-s60
    return home, work / "schedule.yaml"


def test_a_schedule_is_a_cron_expression_or_an_interval_not_both(tmp_path):
    from prefect.schedules import Schedule as PrefectSchedule

    from facezoo.errors import FaceZooError
    from flows.reevaluate import load_schedule, prefect_schedule

    path = tmp_path / "s.yaml"
    path.write_text("interval: 30\nzoo: demo-image\n")
    every = load_schedule(path)
    assert isinstance(prefect_schedule(every), PrefectSchedule) and prefect_schedule(every).interval.seconds == 30
    assert "every 30 s" in every.describe()
    path.write_text("cron: '*/5 * * * *'\n")
    assert prefect_schedule(load_schedule(path)).cron == "*/5 * * * *"
    for bad, said in (("cron: '* * * * *'\ninterval: 5\n", "not both"), ("interval: 0\n", "interval")):
        path.write_text(bad)
        with pytest.raises(FaceZooError, match=said):
            load_schedule(path)


def _cli(home: Home, *argv: str, log: Path) -> subprocess.Popen:
    """``facezoo --home HOME ARGV`` in a process group of its own, as a terminal starts it; output to ``log``."""
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "--home", str(home.root), *argv], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(what: str, check, process: subprocess.Popen, log: Path, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert process.poll() is None, f"exited ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout:g} s:\n{log.read_text()[-3000:]}")


def _jobs(home: Home, where: str) -> list[tuple]:
    try:
        table = ResultsStore(home.results_db, lock_timeout=5).query(
            f"SELECT job_id, kind, status FROM jobs WHERE {where}")
    except Exception:  # noqa: BLE001 - the run holds the file for a moment: ask again
        return []
    return list(table.itertuples(index=False))


def _flow_runs(home: Home, states: tuple[str, ...]) -> list[tuple]:
    with sqlite3.connect(home.prefect / "prefect.db", timeout=30) as db:
        marks = ",".join("?" * len(states))
        return db.execute(f"SELECT name, state_type FROM flow_run WHERE state_type IN ({marks})", states).fetchall()


def _stop(process: subprocess.Popen, send) -> tuple[float, list[psutil.Process]]:
    """Signal ``process`` with ``send``; the seconds it took to exit, and which of the processes it had started
    (before or while stopping) are still alive then."""
    tree = {child.pid: child for child in psutil.Process(process.pid).children(recursive=True)}
    assert tree, "serve started no process (the Prefect server, a run)"
    started = time.monotonic()
    send()
    while process.poll() is None and time.monotonic() - started < STOP_SECONDS + 20:
        with contextlib.suppress(psutil.Error):  # a run starting its workers while it is being stopped
            tree.update((child.pid, child) for child in psutil.Process(process.pid).children(recursive=True))
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    took = time.monotonic() - started
    process.wait()
    _, alive = psutil.wait_procs(list(tree.values()), timeout=0.5)
    for leftover in alive:
        leftover.kill()
    return took, alive


def _assert_nothing_left_running(home: Home) -> None:
    assert _jobs(home, "status = 'running'") == []
    assert _flow_runs(home, ("RUNNING", "PENDING", "CANCELLING")) == []


def _assert_stopped_cleanly(serve: subprocess.Popen, took: float, alive: list[psutil.Process], log: Path,
                            home: Home) -> None:
    """Serve exited 0 within the limit, left no process of its tree alive and no job or flow run running."""
    assert took < STOP_SECONDS and not alive, (took, [p.pid for p in alive], log.read_text()[-2000:])
    assert serve.returncode == 0, log.read_text()[-2000:]
    _assert_nothing_left_running(home)


def test_serve_runs_the_schedule_and_records_each_run_then_sigterm_stops_everything(served, tmp_path):
    home, schedule = served
    log = tmp_path / "serve.log"
    serve = _cli(home, "serve", "--schedule", str(schedule), log=log)
    try:
        _wait_for("completed re-evaluation job", lambda: _jobs(home, "kind = 'reevaluate' AND status = 'completed'"),
                  serve, log)
        assert _jobs(home, "kind = 'rank' AND dataset = 'digits-s60' AND status = 'completed'")
        assert _flow_runs(home, ("COMPLETED",))
        assert "next run due 20" in log.read_text()
        took, alive = _stop(serve, lambda: serve.send_signal(signal.SIGTERM))  # to serve alone: kill, a supervisor
    finally:
        if serve.poll() is None:
            serve.kill()
    _assert_stopped_cleanly(serve, took, alive, log, home)


def test_ctrl_c_with_a_run_in_flight_stops_serve_and_the_run_and_closes_its_job(served, tmp_path):
    home, schedule = served
    log = tmp_path / "serve.log"
    before = {job.job_id for job in _jobs(home, "kind = 'reevaluate'")}
    serve = _cli(home, "serve", "--schedule", str(schedule), log=log)
    try:
        in_flight = _wait_for("re-evaluation job in flight", lambda: [
            j for j in _jobs(home, "kind = 'reevaluate' AND status = 'running'") if j.job_id not in before], serve, log)
        took, alive = _stop(serve, lambda: os.killpg(serve.pid, signal.SIGINT))  # Ctrl-C: the whole process group
    finally:
        if serve.poll() is None:
            serve.kill()
    _assert_stopped_cleanly(serve, took, alive, log, home)
    assert _jobs(home, f"job_id = '{in_flight[0].job_id}' AND status = 'interrupted'")


def test_a_second_serve_on_one_home_is_refused_in_one_line(served, tmp_path):
    from storage._process import exclusive

    home, schedule = served
    with exclusive(home.prefect / "serve.lock"):  # what a running serve holds
        second = subprocess.run([sys.executable, "-m", "flows.cli", "--home", str(home.root), "serve", "--schedule",
                                 str(schedule)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().startswith("error: another facezoo serve already serves")
    assert f"process {os.getpid()}" in second.stderr and len(second.stderr.strip().splitlines()) == 1


def test_a_signal_to_facezoo_ui_alone_stops_the_mlflow_server_and_its_workers(served, tmp_path):
    from storage.tracking import Tracker

    home, _ = served
    Tracker(home.tracking_uri, home.artifacts).experiment_for("digits-s60")  # a dataset with runs to link to
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for sig in (signal.SIGINT, signal.SIGTERM):
        log = tmp_path / f"ui-{sig.name}.log"
        ui = _cli(home, "ui", "--port", str(port), log=log)
        try:
            # the MLflow server has started its uvicorn: the tree a signal must bring down (listening or not yet)
            _wait_for("MLflow server and its uvicorn", lambda ui=ui: len(psutil.Process(ui.pid).children(
                recursive=True)) >= 2, ui, log, timeout=120)
            took, alive = _stop(ui, lambda ui=ui, sig=sig: ui.send_signal(sig))  # to facezoo ui alone, as kill does
        finally:
            if ui.poll() is None:
                ui.kill()
        assert took < STOP_SECONDS and not alive, (sig.name, took, [p.pid for p in alive], log.read_text()[-2000:])
        assert "runs?workflowType=machine_learning" in log.read_text()  # each dataset's link opens on its runs

"""``facezoo rank --pool`` end to end: a real Prefect server on loopback (flows.serve.PrefectServer), a process work
pool, the ``extract-features`` deployment, two workers (real processes, ``--limit 1`` each: one model per "GPU"),
and the CLI as a user runs it, on a three-model zoo of tiny random timm models and a 60-image sample of digits.

The ranking must equal the local run's, both workers must take work, every model's features must be written once;
a worker killed mid-run must fail its model only (job ``partial``, exit 3). With the store on a local S3 server
(moto, 127.0.0.1), no reader may ever see a half-written object, and the bucket's versions count the writes.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from facezoo.config import Home
from flows.serve import PrefectServer, stop_processes
from storage.results import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
ZOO = """
name: tiny-pool
models:
  - {name: m-resnet, source: "timm:test_resnet", options: {pretrained: false}}
  - {name: m-effnet, source: "timm:test_efficientnet", options: {pretrained: false}}
  - {name: m-convnext, source: "timm:test_convnext", options: {pretrained: false}}
"""
MODELS = {"m-resnet", "m-effnet", "m-convnext"}
POOL = "test-gpu"
STALE = "20"  # FACEZOO_POOL_STALE_SECONDS: a killed worker's run is declared crashed after this long


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class Pool:
    """The server, the pool with its deployment, and the workers; ``env`` is what a CLI process needs."""

    def __init__(self, work: Path, server: PrefectServer):
        self.work, self.server = work, server
        self.env = {**os.environ, "PREFECT_API_URL": server.api_url, "FACEZOO_POOL_STALE_SECONDS": STALE,
                    "PYTHONUNBUFFERED": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
        self.workers: dict[str, subprocess.Popen] = {}

    def start_worker(self, name: str) -> None:
        home = self.work / f"worker-{name}"
        env = {**self.env, "FACEZOO_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
               "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "0"}
        with open(self.log(name), "ab") as log:
            self.workers[name] = subprocess.Popen(
                [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", POOL, "--name", name,
                 "--type", "process", "--limit", "1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def log(self, name: str) -> Path:
        return self.work / f"worker-{name}.log"

    def took_work(self, name: str) -> set[str]:
        """The flow runs worker ``name`` said it submitted."""
        return set(re.findall(r"submitting flow run '([0-9a-f-]+)'", self.log(name).read_text()))

    def wait_online(self, names: set[str], timeout: float = 120) -> None:
        from prefect.client.orchestration import SyncPrefectClient

        deadline = time.monotonic() + timeout
        with SyncPrefectClient(self.server.api_url) as client:
            while time.monotonic() < deadline:
                online = {w.name for w in client.read_workers_for_work_pool(POOL) if w.status.value == "ONLINE"}
                if names <= online:
                    return
                for name in names:
                    assert self.workers[name].poll() is None, self.log(name).read_text()[-3000:]
                time.sleep(0.5)
        raise AssertionError(f"workers {names} not online within {timeout:g} s")

    def stop(self) -> None:
        for process in self.workers.values():
            stop_processes(lambda pid=process.pid: _tree(pid))
            process.wait()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pool import deploy

    work = tmp_path_factory.mktemp("pool")
    home = Home.resolve(work / "parent").ensure()
    (work / "zoo.yaml").write_text(ZOO)
    with PrefectServer(home) as server:
        running = Pool(work, server)
        try:
            with SyncPrefectClient(server.api_url) as client:
                client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                deploy(POOL)
            running.start_worker("w1")
            running.start_worker("w2")
            running.wait_online({"w1", "w2"})
            yield running
        finally:
            running.stop()


def _rank(pool: Pool, home: Path, *extra: str, env: dict[str, str] | None = None,
          background: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
    argv = [sys.executable, "-m", "flows.cli", "--home", str(home), "rank", "--zoo", str(pool.work / "zoo.yaml"),
            "--dataset", "builtin:digits", "--max-samples", "60", "--device", "cpu", "--backend", "eager",
            "--metrics", "face,logme,hscore", "--json", *extra]
    if background:
        return subprocess.Popen(argv, cwd=ROOT, env={**pool.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, cwd=ROOT, env={**pool.env, **(env or {})}, capture_output=True, text=True,
                          timeout=300)


def _summary(done: subprocess.CompletedProcess) -> dict:
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout)


def _scores(summary: dict) -> dict[tuple[str, str], tuple[float, float]]:
    return {(r["model"], r["metric"]): (r["raw"], r["rank"]) for r in summary["ranking"]}


@pytest.fixture(scope="module")
def local_ranking(pool):
    """The same job without the pool: extraction in the CLI's process (the reference)."""
    done = _rank(pool, pool.work / "local")
    assert done.returncode == 0, done.stderr[-3000:]
    return _scores(_summary(done))


def _extract_runs(pool: Pool) -> list:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with SyncPrefectClient(pool.server.api_url) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["extract-features"])))


def test_rank_on_a_pool_equals_the_local_ranking(pool, local_ranking):
    before = {run.id for run in _extract_runs(pool)}
    store = pool.work / "shared-features"
    done = _rank(pool, pool.work / "pooled", "--pool", POOL, env={"FACEZOO_FEATURES": str(store)})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _summary(done)
    assert summary["status"] == "completed" and not summary["failures"] and not summary["cache_hits"]
    assert _scores(summary).keys() == local_ranking.keys()
    for key, (raw, rank) in _scores(summary).items():
        assert raw == pytest.approx(local_ranking[key][0], rel=1e-5, abs=1e-6), key
        assert rank == local_ranking[key][1], key
    runs = [run for run in _extract_runs(pool) if run.id not in before]
    assert sorted(run.name for run in runs) == sorted(f"extract {m}" for m in MODELS)  # one run per model
    assert {run.state_type.value for run in runs} == {"COMPLETED"}
    ids = {str(run.id) for run in runs}
    assert pool.took_work("w1") & ids and pool.took_work("w2") & ids, "both workers took work"
    written = sorted(store.rglob("*.parquet"))
    assert sorted(p.parent.parent.parent.name for p in written) == sorted(f"model={m}" for m in MODELS)
    assert not list(store.rglob("*.tmp"))
    rows = ResultsStore(Home.resolve(pool.work / "pooled").results_db).query(
        "SELECT model, path FROM feature_sets")
    assert {Path(p) for p in rows["path"]} == set(written)

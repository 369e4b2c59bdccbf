"""``facezoo rank --pool`` end to end: a real Prefect server on loopback (flows.serve.PrefectServer), a process work
pool, the ``extract-features`` deployment, two workers (real processes, ``--limit 1`` each: one model per "GPU"),
and the CLI as a user runs it, on a three-model zoo of tiny random timm models and a 60-image sample of digits.

The ranking must equal the local run's, both workers must take work, every model's features must be written once
(store: a shared folder). A worker killed mid-run (two models, one per worker; the store and MLflow's artifacts on a
local S3 server, moto on 127.0.0.1) must fail its model only (job ``partial``, exit 3) while a reader polling the
bucket never sees a half-written object, and the bucket's versions count one write per model. Each process start
(a run imports torch) costs ~10-20 s on a busy 2-core machine: that, not the extraction, sets these tests' time.
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
from flows.serve import PrefectServer, _tree, stop_processes
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
TWO = "\n".join(line for line in ZOO.splitlines() if "m-convnext" not in line)  # one model per worker
POOL = "test-gpu"
STALE = "30"  # FACEZOO_POOL_STALE_SECONDS: a killed worker's run is declared crashed after this long
BUCKET = "facezoo-pool"


class Pool:
    """The server, the pool with its deployment, and the workers; ``env`` is what a CLI process needs."""

    def __init__(self, work: Path, server: PrefectServer):
        self.work, self.server = work, server
        self.local: subprocess.Popen | None = None
        self.env = {**os.environ, "PREFECT_API_URL": server.api_url, "FACEZOO_POOL_STALE_SECONDS": STALE,
                    "FACEZOO_POOL_START_SECONDS": "600",
                    "PYTHONUNBUFFERED": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
        self.workers: dict[str, subprocess.Popen] = {}

    def start_worker(self, name: str) -> None:
        home = self.work / f"worker-{name}"
        (home / "prefect").mkdir(parents=True, exist_ok=True)
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
        """The flow runs that started under worker ``name`` (their output is in its log; a run two workers both
        tried to submit appears in one only: the server aborts the second's submission)."""
        return set(re.findall(r"/runs/flow-run/([0-9a-f-]+)", self.log(name).read_text()))

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
def s3():
    """A moto S3 server on 127.0.0.1 (a thread of this process) with a versioned bucket; the environment (of this
    process, and so of the workers and CLI runs started after) points pyarrow and boto3 at it."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        server.stop()


@pytest.fixture(scope="module")
def pool(tmp_path_factory, s3):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pool import deploy

    work = tmp_path_factory.mktemp("pool")
    home = Home.resolve(work / "parent").ensure()
    (work / "zoo.yaml").write_text(ZOO)
    (work / "two.yaml").write_text(TWO)
    with PrefectServer(home) as server:
        running = Pool(work, server)
        try:
            with SyncPrefectClient(server.api_url) as client:
                client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            # the reference: the same job without the pool, run while the workers start
            running.local = _rank(running, work / "local", background=True)
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                deploy(POOL)
            running.start_worker("w1")
            running.start_worker("w2")
            running.wait_online({"w1", "w2"})
            yield running
        finally:
            running.stop()
            if running.local is not None and running.local.poll() is None:
                running.local.kill()


def _rank(pool: Pool, home: Path, *extra: str, env: dict[str, str] | None = None, zoo: str = "zoo.yaml",
          background: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
    argv = [sys.executable, "-m", "flows.cli", "--home", str(home), "rank", "--zoo", str(pool.work / zoo),
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
    out, err = pool.local.communicate(timeout=300)
    assert pool.local.returncode == 0, err[-3000:]
    return _scores(json.loads(out))


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


def test_a_pool_needs_a_server_and_an_extract_features_deployment_on_it(pool):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from facezoo.errors import FaceZooError
    from flows.pool import check_pool

    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(FaceZooError, match="PREFECT_API_URL"):
        check_pool(POOL)
    with temporary_settings(updates={PREFECT_API_URL: pool.server.api_url}):
        assert check_pool(POOL) == "extract-features/extract-features"
        with pytest.raises(FaceZooError, match="no extract-features deployment on work pool 'cpu'"):
            check_pool("cpu")


def test_a_parent_that_times_out_or_gets_sigterm_cancels_its_child_runs(pool):
    """On a pool no worker polls the runs stay scheduled: the parent's timeout, and SIGTERM while it waits, cancel
    them (a run started after its deadline, the parent having been SIGKILLed, expires without extracting)."""
    import signal

    import numpy as np  # noqa: F401 - torch and numpy first, as in a CLI run
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from facezoo.errors import FaceZooError
    from facezoo.models.zoo import ZooConfig
    from flows.pool import deploy, extract_model, run_on_pool
    from tasks.datasets import DatasetRef

    specs = list(ZooConfig.from_yaml(pool.work / "two.yaml").models)
    dataset = DatasetRef(name="digits", source="builtin:digits", options={})
    with SyncPrefectClient(pool.server.api_url) as client:
        client.create_work_pool(WorkPoolCreate(name="idle", type="process"))
    with temporary_settings(updates={PREFECT_API_URL: pool.server.api_url}):
        deploy("idle", name="extract-features-idle")
        before = {run.id for run in _extract_runs(pool)}
        timed_out = run_on_pool(specs, dataset, "train", str(pool.work / "unused"), {}, "idle", 1.0, print)
        assert set(timed_out.failures) == {s.name for s in specs} and not timed_out.refs
        assert all("not finished within the job's 1 s timeout" in f for f in timed_out.failures.values())

        def terminate_once_submitted():  # SIGTERM while the parent waits on both children
            while len([run for run in _extract_runs(pool) if run.id not in before]) < 4:
                time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGTERM)

        sender = threading.Thread(target=terminate_once_submitted)
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            run_on_pool(specs, dataset, "train", str(pool.work / "unused"), {}, "idle", 600.0, print)
        sender.join()
    runs = [run for run in _extract_runs(pool) if run.id not in before]
    assert len(runs) == 4 and {run.state_type.value for run in runs} == {"CANCELLED"}
    with pytest.raises(FaceZooError, match="expired"):
        extract_model.fn(specs[0], dataset, "train", str(pool.work / "unused"), {}, deadline=time.time() - 1)


def test_an_s3_store_publishes_whole_objects_and_refuses_credentials_in_its_url(s3):
    import numpy as np

    from facezoo.errors import FaceZooError
    from storage.features import FeatureStore, cache_key

    store = FeatureStore(f"s3://{BUCKET}/unit")
    key = cache_key(test="s3")
    rng = np.random.default_rng(0)
    versions = [rng.standard_normal((40, 6)).astype(np.float32) for _ in range(6)]
    labels = np.arange(40) % 4

    def put(features):
        return store.put("m", "d", "train", key, features=features, labels=labels, sample_ids=np.arange(40).astype(str),
                         logits=None, class_names=list("abcd"), metadata={})

    seen, torn, done = [], [], threading.Event()

    def read():
        while not done.is_set():
            try:
                got = store.get("m", "d", "train", key)
            except Exception as error:  # noqa: BLE001 - what the assertion reports
                torn.append(repr(error))
                continue
            if got is not None:
                match = [i for i, v in enumerate(versions) if np.array_equal(v, got.features)]
                seen.extend(match) if match and got.stats_state is not None else torn.append("a mixed version")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for features in versions:  # the same key rewritten while it is read: every read is one whole version
            put(features)
    finally:
        done.set()
        reader.join()
    assert not torn and seen, (torn, len(seen))
    got = store.get("m", "d", "train", key)
    assert got.path == f"s3://{BUCKET}/unit/model=m/dataset=d/split=train/{key}.parquet"
    assert np.array_equal(got.features, versions[-1]) and [e["cache_key"] for e in store.entries()] == [key]

    # a writer that dies mid-write publishes nothing; its temporary key is never listed as features
    other = cache_key(test="s3-killed")
    with pytest.raises(RuntimeError):
        store.remote.write_atomic(store.path("m", "d", "train", other),
                                  lambda out: (out.write(b"PAR1 half"), (_ for _ in ()).throw(RuntimeError("killed"))))
    assert store.get("m", "d", "train", other) is None and [e["cache_key"] for e in store.entries()] == [key]
    keys = [v["Key"] for v in s3.list_object_versions(Bucket=BUCKET, Prefix="unit/").get("Versions", [])]
    assert not [k for k in keys if k.endswith(f"{other}.parquet")]

    from storage.tracking import Tracker

    for opening in (FeatureStore, lambda url: Tracker("sqlite:///unused.db", url)):
        with pytest.raises(FaceZooError, match="remove the credentials") as said:
            opening(f"s3://AKIAEXAMPLE:hunter2@{BUCKET}/features?region=x")
        assert "hunter2" not in str(said.value)
    with pytest.raises(FaceZooError, match="remove the credentials"):
        FeatureStore(f"s3://{BUCKET}/features?secret_key=hunter2")


def test_a_worker_killed_mid_run_fails_its_model_only_and_the_s3_store_never_shows_half_an_object(
        pool, s3, local_ranking):
    from storage.features import FeatureStore

    before = {run.id for run in _extract_runs(pool)}
    root = f"s3://{BUCKET}/pooled"
    reads, torn, done = [], [], threading.Event()

    def read():  # a reader polling the bucket the whole time: every published object it lists reads whole
        store = FeatureStore(root)
        while not done.is_set():
            for url in store.remote.list(root):
                if re.search(r"/[0-9a-f]{32}\.parquet$", url):
                    try:
                        reads.append(store.read(url).metadata["model"])
                    except Exception as error:  # noqa: BLE001
                        torn.append(f"{url}: {error!r}")
            time.sleep(0.2)

    reader = threading.Thread(target=read)
    reader.start()
    job = _rank(pool, pool.work / "killed", "--pool", POOL, zoo="two.yaml", background=True,
                env={"FACEZOO_FEATURES": root, "FACEZOO_ARTIFACTS": f"s3://{BUCKET}/mlflow"})
    try:
        deadline = time.monotonic() + 180
        victim = None
        while victim is None:  # a run w2 took, once it runs and beats: then w2 and everything it started die
            assert time.monotonic() < deadline and job.poll() is None, "w2 never ran a model"
            ids = pool.took_work("w2")
            victim = next((run for run in _extract_runs(pool) if run.id not in before and str(run.id) in ids
                           and run.state_type.value == "RUNNING" and "facezoo.heartbeat" in run.labels), None)
            time.sleep(0.3)
        for process in _tree(pool.workers["w2"].pid):
            with contextlib.suppress(psutil.Error):
                process.kill()
        out, err = job.communicate(timeout=300)
    finally:
        done.set()
        reader.join()
        if job.poll() is None:
            job.kill()
    model = victim.name.removeprefix("extract ")
    assert job.returncode == 3, err[-3000:]  # partial, as for any model that fails
    summary = json.loads(out)
    assert summary["status"] == "partial" and summary["mlflow_run_id"]
    artifacts = s3.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/").get("Contents", [])
    assert any(a["Key"].endswith(".csv") or a["Key"].endswith(".json") for a in artifacts), artifacts
    assert list(summary["failures"]) == [model]
    assert summary["failures"][model].startswith("extract: crashed: its worker stopped"), summary["failures"]
    survivors = {"m-resnet", "m-effnet"} - {model}
    got = _scores(summary)
    assert {m for m, _ in got} == survivors
    for (m, metric), (raw, _) in got.items():
        if metric != "face":  # face is zoo-normalised: two models score differently from three
            assert raw == pytest.approx(local_ranking[m, metric][0], rel=1e-5, abs=1e-6), (m, metric)
    runs = [run for run in _extract_runs(pool) if run.id not in before]
    assert all(run.state_type.value in ("COMPLETED", "CRASHED") for run in runs), "no child run left unfinished"
    assert [run.state_type.value for run in runs if run.id == victim.id] == ["CRASHED"]
    assert not torn and set(reads) >= survivors, (torn, set(reads))
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="pooled/").get("Versions", [])
    published = [v["Key"] for v in versions if re.search(r"/[0-9a-f]{32}\.parquet$", v["Key"])]
    written = sorted(re.search(r"model=([^/]+)/", k).group(1) for k in published)
    assert written in (sorted(survivors), ["m-effnet", "m-resnet"]), written  # once each (the victim: at most)


def test_a_zoo_names_the_pool_its_models_are_extracted_on(tmp_path):
    """`pool:` in a zoo config sends rank (and so a scheduled re-evaluation) to that pool unless --pool says another;
    without a server that is the same one-line error as --pool gives, before any work."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from facezoo.errors import FaceZooError
    from flows.rank import rank_zoo, resolve_zoo

    path = tmp_path / "pooled.yaml"
    path.write_text(ZOO.replace("name: tiny-pool", "name: pooled\npool: gpu-a", 1))
    assert resolve_zoo(str(path)).pool == "gpu-a"
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(FaceZooError, match="PREFECT_API_URL"):
        rank_zoo(str(path), "builtin:digits", home=str(tmp_path / "home"))
    empty = tmp_path / "empty.yaml"
    empty.write_text(ZOO.replace("name: tiny-pool", "name: empty\npool: ''", 1))
    with pytest.raises(FaceZooError, match="pool"):
        resolve_zoo(str(empty))

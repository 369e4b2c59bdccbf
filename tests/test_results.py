"""The DuckDB results store: schema, round trips, upserts, the leaderboard view, read-only queries, bound parameters,
and concurrent writers (threads of one process, and two real processes on one file)."""

import dataclasses
import multiprocessing
import threading
import time

import duckdb
import numpy as np
import pandas as pd
import pytest

from facezoo.data.arrays import from_arrays
from facezoo.errors import FaceZooError
from facezoo.metrics import rank_zoo
from storage.results import JOB_KINDS, ResultsStore

TABLES = {"correlations", "datasets", "failures", "feature_sets", "finetune", "jobs", "models", "scores"}
HOSTILE = "x'; DROP TABLE scores; --"
# the jobs table as results files written before the process columns (host, pid) have it
OLD_JOBS_TABLE = ("CREATE TABLE jobs (job_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, zoo VARCHAR, dataset VARCHAR, "
                  "status VARCHAR NOT NULL, params VARCHAR, message VARCHAR, mlflow_run_id VARCHAR, "
                  "started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP)")


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "home" / "results.duckdb")


def ranking(models=("resnet", "vit", "convnext"), seed=0, failed=()):
    """Real :func:`rank_zoo` output for two metrics; models in ``failed`` have no scores (NaN)."""
    rng = np.random.default_rng(seed)
    raw = {m: {} if m in failed else {"logme": float(rng.normal()), "hscore": float(rng.normal())} for m in models}
    return rank_zoo(raw, ["logme", "hscore"])


def make_dataset(name="pets", n=10, n_classes=2, seed=0):
    """A tiny image dataset; another ``seed`` changes the pixels, hence the fingerprint."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
    labels = np.arange(n) % n_classes
    splits = ["train"] * (n - 2) + ["test"] * 2
    names = ["cat", "dog", "eel"][:n_classes]
    return from_arrays(images, labels, names, name=name, kind="test", source="arrays", splits=splits)


def simple_scores(models, metrics=("logme", "hscore")):
    """A rank_zoo-shaped table without computing anything (cheap to build in spawned processes)."""
    rows = [(metric, model, float(i), float(i), float(i + 1), 1)
            for metric in metrics for i, model in enumerate(models)]
    return pd.DataFrame(rows, columns=["metric", "model", "raw", "score", "rank", "tied"])


def test_schema_is_created_on_first_use_and_reopening_keeps_the_data(store):
    assert not store.path.exists()
    job = store.start_job("rank", "small", "cifar10", {})
    assert store.path.is_file()
    again = ResultsStore(store.path)  # runs the DDL a second time
    assert again.job(job)["status"] == "running"
    tables = again.query("SELECT table_name FROM duckdb_tables()")["table_name"]
    assert set(tables) == TABLES
    assert list(again.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")["view_name"]) == ["leaderboard"]


def test_dataset_versions_are_keyed_by_fingerprint_and_the_latest_is_returned(store):
    first_version = make_dataset()
    assert store.register_dataset(first_version, "folder:/data/pets", {"size": 4}) is True
    first = store.get_dataset("pets")
    assert store.register_dataset(first_version, "elsewhere", {}, 5) is False  # a no-op
    assert store.get_dataset("pets") == first
    assert (first["source"], first["options"], first["max_samples"]) == ("folder:/data/pets", {"size": 4}, None)
    second_version = make_dataset(n=12, n_classes=3, seed=1)
    assert second_version.fingerprint != first_version.fingerprint
    assert store.register_dataset(second_version, "folder:/data/pets", {"size": 4}, max_samples=12)
    latest = store.get_dataset("pets")
    assert latest["fingerprint"] == second_version.fingerprint and latest["task"] == "image"
    assert (latest["n_samples"], latest["n_classes"], latest["max_samples"]) == (12, 3, 12)
    assert latest["class_names"] == ["cat", "dog", "eel"] and latest["splits"] == {"train": 10, "test": 2}
    store.register_dataset(make_dataset("cars"), "builtin:cars")
    listed = store.list_datasets()
    assert [(d["name"], d["fingerprint"], d["versions"]) for d in listed] == [
        ("cars", make_dataset("cars").fingerprint, 1), ("pets", second_version.fingerprint, 2),
    ]
    assert listed[1]["options"] == {"size": 4} and listed[1]["class_names"] == ["cat", "dog", "eel"]
    assert store.get_dataset("unknown") is None


def test_models_upsert_updates_details_and_keeps_first_seen(store):
    store.upsert_model("resnet", source="timm:resnet18", digest="abc", modality="image", dim=512, num_logits=1000,
                       preprocessing={"size": 224})
    first = store.query("SELECT * FROM models").iloc[0]
    store.upsert_model("resnet", source="timm:resnet18.a1", digest="abc", modality="image", dim=512, num_logits=None,
                       preprocessing={"size": 256})
    rows = store.query("SELECT * FROM models")
    assert len(rows) == 1
    assert rows.loc[0, "source"] == "timm:resnet18.a1" and pd.isna(rows.loc[0, "num_logits"])
    assert rows.loc[0, "preprocessing"] == '{"size": 256}' and rows.loc[0, "first_seen"] == first["first_seen"]


def test_feature_sets_round_trip_and_a_re_extraction_replaces_the_row(store):
    details = dict(model="resnet", dataset="pets", split="train", dataset_fingerprint="fp1", n=100, dim=512)
    store.record_feature_set("k" * 32, path="/f/a.parquet", extraction_seconds=1.5, **details)
    store.record_feature_set("k" * 32, path="/f/b.parquet", extraction_seconds=2.5, **details)
    rows = store.query("SELECT * FROM feature_sets")
    assert len(rows) == 1
    assert rows.loc[0, ["path", "n", "dim", "extraction_seconds"]].tolist() == ["/f/b.parquet", 100, 512, 2.5]


def test_job_lifecycle_and_validation(store):
    job = store.start_job("onboard", "small", "pets", {"metrics": ["face"], "top_k": np.int64(3)})
    record = store.job(job)
    assert record["kind"] == "onboard" and record["status"] == "running" and record["finished_at"] is None
    assert record["params"] == {"metrics": ["face"], "top_k": 3} and len(job) == 36
    store.finish_job(job, "partial", "1 of 3 models failed", mlflow_run_id="run1")
    store.finish_job(job, "completed")  # a re-run finishing again keeps the MLflow run id
    record = store.job(job)
    assert (record["status"], record["message"], record["mlflow_run_id"]) == ("completed", None, "run1")
    assert record["finished_at"] >= record["started_at"]
    assert set(JOB_KINDS) == {"rank", "validate", "onboard", "reevaluate"}
    with pytest.raises(FaceZooError, match="job kind 'train'"):
        store.start_job("train", "small", "pets", {})
    with pytest.raises(FaceZooError, match="not 'running'"):
        store.finish_job(job, "running")
    with pytest.raises(FaceZooError, match="unknown job"):
        store.finish_job("no-such-job", "failed")
    with pytest.raises(FaceZooError, match="unknown job"):
        store.job("no-such-job")


def test_jobs_of_killed_processes_are_closed_as_interrupted_and_no_others(store):
    import socket
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    killed, alive, elsewhere, done = (store.start_job("rank", "small", "pets", {}) for _ in range(4))
    store.finish_job(done, "completed")
    with store._connect() as con:
        con.execute("UPDATE jobs SET pid = ? WHERE job_id IN (?, ?)", [dead, killed, elsewhere])
        con.execute("UPDATE jobs SET host = 'another-host' WHERE job_id = ?", [elsewhere])
    assert store.job(alive)["host"] == socket.gethostname()
    assert store.close_interrupted() == [killed]
    record = store.job(killed)
    assert record["status"] == "interrupted" and f"process {dead}" in record["message"] and record["finished_at"]
    assert [store.job(j)["status"] for j in (alive, elsewhere, done)] == ["running", "running", "completed"]
    assert store.close_interrupted() == []
    store.finish_job(alive, "interrupted")  # a status a job may also be finished with


def test_a_results_file_from_before_the_process_columns_gains_them(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_JOBS_TABLE)
    con.execute("INSERT INTO jobs VALUES ('old', 'rank', 'z', 'd', 'running', '{}', NULL, NULL, now(), NULL)")
    con.close()
    store = ResultsStore(path)
    assert store.close_interrupted() == []  # no pid recorded: it cannot tell, so it leaves the job alone
    assert store.job("old")["pid"] is None and store.job(store.start_job("rank", "z", "d", {}))["pid"] > 0


def test_a_results_file_from_before_ties_were_counted_gains_them_and_the_leaderboard_shows_them(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_JOBS_TABLE)
    con.execute("INSERT INTO jobs VALUES ('old', 'rank', 'z', 'd', 'completed', '{}', NULL, NULL, now(), now())")
    con.execute("CREATE TABLE scores (job_id VARCHAR, model VARCHAR, dataset VARCHAR, metric VARCHAR, raw DOUBLE, "
                "score DOUBLE, rank DOUBLE, seconds DOUBLE, PRIMARY KEY (job_id, model, metric))")
    old = [("a", "sfda", 0.0, 1.0), ("b", "sfda", 0.0, 1.0), ("c", "sfda", -1.0, 3.0), ("d", "sfda", None, None),
           ("a", "logme", 2.0, 1.0), ("b", "logme", 1.0, 2.0), ("c", "logme", 0.0, 3.0), ("d", "logme", None, None)]
    for model, metric, value, rank in old:
        con.execute("INSERT INTO scores VALUES ('old', ?, 'd', ?, ?, ?, ?, NULL)", [model, metric, value, value, rank])
    con.close()
    board = ResultsStore(path).leaderboard("d").set_index(["metric", "model"])["tied"]
    assert board.to_dict() == {("logme", "a"): 1, ("logme", "b"): 1, ("logme", "c"): 1, ("logme", "d"): 0,
                               ("sfda", "a"): 2, ("sfda", "b"): 2, ("sfda", "c"): 1, ("sfda", "d"): 0}


def test_ties_are_stored_as_rank_zoo_counts_them(store):
    job = store.start_job("rank", "small", "pets", {})
    table = rank_zoo({"a": {"sfda": 0.0}, "b": {"sfda": 0.0}, "c": {"sfda": -2.0}, "d": {}}, ["sfda"])
    store.write_scores(job, "pets", table)
    store.finish_job(job, "completed")
    assert store.scores(job).set_index("model")["tied"].to_dict() == {"a": 2, "b": 2, "c": 1, "d": 0}
    assert store.query("SELECT model FROM leaderboard WHERE tied > 1 ORDER BY model")["model"].tolist() == ["a", "b"]


def test_scores_round_trip_nan_as_null_and_rewrites_never_duplicate(store):
    job = store.start_job("rank", "small", "pets", {})
    seconds = {("resnet", "logme"): 0.25, ("vit", "hscore"): 0.5}
    assert store.write_scores(job, "pets", ranking(failed=("vit",)), seconds) == 6
    first = store.scores(job)
    assert first.set_index(["model", "metric"])["seconds"].dropna().to_dict() == seconds
    rewritten = ranking(seed=1, failed=("vit",))  # a re-run of the same job, without timings
    store.write_scores(job, "pets", rewritten)
    stored = store.scores(job)
    assert list(stored.columns) == ["metric", "model", "raw", "score", "rank", "tied", "seconds"] and len(stored) == 6
    expected = rewritten.sort_values(["metric", "rank", "model"], na_position="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(stored.drop(columns="seconds"), expected, check_dtype=False)
    assert stored["seconds"].isna().all()
    assert store.scores("no-such-job").empty
    nulls = store.query("SELECT count(*) - count(score) AS n FROM scores WHERE model = 'vit'")["n"].item()
    assert nulls == 2  # a failed model's NaN is stored as NULL, so SQL aggregates skip it


def test_scores_are_checked_before_anything_is_written(store):
    job = store.start_job("rank", "small", "pets", {})
    with pytest.raises(FaceZooError, match="lacks column"):
        store.write_scores(job, "pets", ranking().drop(columns="rank"))
    with pytest.raises(FaceZooError, match="more than one row"):
        store.write_scores(job, "pets", pd.concat([ranking(), ranking().head(1)]))
    with pytest.raises(FaceZooError, match="unknown job"):
        store.write_scores("no-such-job", "pets", ranking())
    assert store.query("SELECT count(*) AS n FROM scores")["n"].item() == 0


def test_a_failed_transaction_leaves_nothing(store):
    job = store.start_job("rank", "small", "pets", {})
    with pytest.raises(RuntimeError), store._transaction() as con:
        con.execute("DELETE FROM jobs")
        raise RuntimeError("crash half-way")
    assert store.job(job)["status"] == "running"


def test_failures_round_trip_and_a_repeat_replaces_the_error(store):
    job = store.start_job("rank", "small", "pets", {})
    store.record_failure(job, "vit", "extract", "CUDA out of memory")
    store.record_failure(job, "vit", "extract", "CUDA out of memory (retry)")
    store.record_failure(job, "vit", "score", "singular matrix")
    rows = store.query("SELECT stage, error, recorded_at FROM failures ORDER BY stage")
    assert rows[["stage", "error"]].values.tolist() == [["extract", "CUDA out of memory (retry)"],
                                                        ["score", "singular matrix"]]
    assert rows["recorded_at"].notna().all()


def test_finetune_results_are_cached_per_model_data_protocol_and_budget(store):
    key = ("resnet", "fp1", "linear", "b1")
    assert store.get_finetune(*key) is None
    budget = {"epochs": 5, "lr": 0.01}
    store.write_finetune("resnet", "pets", "fp1", "linear", "b1", accuracy=0.8, budget=budget, seconds=3.0, seed=0)
    store.write_finetune("resnet", "pets", "fp1", "linear", "b1", accuracy=0.85, budget=budget)
    store.write_finetune("resnet", "pets", "fp1", "linear", "b2", accuracy=0.9, budget=budget, mean_class_accuracy=0.8)
    row = store.get_finetune(*key)
    assert row["accuracy"] == 0.85 and row["budget"] == budget and row["mean_class_accuracy"] is None
    assert row["seconds"] is None and row["seed"] is None and row["recorded_at"] is not None
    assert store.get_finetune("resnet", "fp1", "linear", "b2")["mean_class_accuracy"] == 0.8
    assert store.query("SELECT count(*) AS n FROM finetune")["n"].item() == 2


def test_correlations_round_trip_with_absent_statistics_as_null(store):
    job = store.start_job("validate", "small", "pets", {})
    table = pd.DataFrame({"metric": ["face", "logme"], "weighted_tau": [0.7, np.nan], "n_models": [5, 5]})
    assert store.write_correlations(job, "pets", "linear", table) == 2
    store.write_correlations(job, "pets", "linear", table.assign(weighted_tau=[0.75, 0.1]))
    store.write_correlations(job, "pets", "full", table)
    rows = store.query("SELECT * FROM correlations WHERE protocol = 'linear' ORDER BY metric")
    assert rows["weighted_tau"].tolist() == [0.75, 0.1] and rows["n_models"].tolist() == [5, 5]
    assert rows[["kendall_tau", "pearson", "spearman", "top1_regret", "ci_low", "ci_high"]].isna().all().all()
    assert set(rows["dataset"]) == {"pets"}
    assert store.query("SELECT count(*) AS n FROM correlations")["n"].item() == 4


def test_leaderboard_shows_the_latest_finished_ranking_per_dataset(store):
    def job(dataset, status, kind="rank", seed=0):
        job_id = store.start_job(kind, "small", dataset, {})
        store.write_scores(job_id, dataset, ranking(seed=seed))
        if status != "running":
            store.finish_job(job_id, status)
        return job_id

    assert store.latest_job("rank") is None
    first_pets = job("pets", "completed", seed=1)
    latest_pets = job("pets", "partial", kind="reevaluate", seed=2)
    job("pets", "running", seed=3)
    job("pets", "failed", seed=4)
    job("pets", "completed", kind="validate", seed=5)
    latest_cars = job("cars", "completed", kind="onboard", seed=6)
    assert store.latest_job("rank", dataset="pets") == first_pets and store.latest_job("rank", zoo="other") is None
    assert store.latest_job("onboard") == latest_cars
    board = store.leaderboard()
    assert board.groupby("dataset")["job_id"].unique().map(list).to_dict() == {
        "cars": [latest_cars], "pets": [latest_pets],
    }
    pets = store.leaderboard("pets")
    assert list(pets.columns) == ["dataset", "model", "metric", "score", "rank", "tied", "raw", "job_id",
                                  "finished_at"]
    expected = ranking(seed=2).sort_values(["metric", "rank", "model"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(pets[["model", "metric", "score", "rank", "raw"]],
                                  expected[["model", "metric", "score", "rank", "raw"]], check_dtype=False)
    assert store.leaderboard("unknown").empty


@pytest.mark.parametrize("sql", [
    "INSERT INTO jobs (job_id, kind, status, started_at) VALUES ('j', 'rank', 'running', now())",
    "DROP TABLE scores",
    "UPDATE jobs SET status = 'failed'",
    "DELETE FROM scores",
    "CREATE TABLE evil (x INT)",
    "DROP VIEW leaderboard",
])
def test_query_runs_read_only(store, sql):
    job = store.start_job("rank", "small", "pets", {})
    store.write_scores(job, "pets", ranking())
    with pytest.raises(FaceZooError, match="read-only") as error:
        store.query(sql)
    assert "\n" not in str(error.value)
    assert store.job(job)["status"] == "running" and len(store.leaderboard()) == 0
    assert store.query("SELECT count(*) AS n FROM scores")["n"].item() == 6


def test_query_binds_parameters_and_reports_errors_in_one_line(store):
    job = store.start_job("rank", "small", "pets", {})
    store.write_scores(job, "pets", ranking())
    rows = store.query("SELECT model, rank FROM scores WHERE metric = ? AND rank <= ? ORDER BY rank", ["logme", 2])
    assert rows["rank"].tolist() == [1.0, 2.0]
    named = store.query("SELECT count(*) AS n FROM scores WHERE metric = $metric", {"metric": "hscore"})
    assert named["n"].item() == 3
    assert store.query("SELECT count(*) AS n FROM scores WHERE metric = ?", [HOSTILE])["n"].item() == 0
    with pytest.raises(FaceZooError, match=r"^query failed: Parser Error") as error:
        store.query("SELEKT 1")
    assert "\n" not in str(error.value)


def test_names_with_sql_fragments_are_stored_verbatim(store):
    """Nothing is formatted into SQL: a hostile string in every text column round-trips unchanged."""
    job = store.start_job("rank", HOSTILE, HOSTILE, {HOSTILE: HOSTILE})
    dataset = make_dataset()
    hostile = dataclasses.replace(dataset, name=HOSTILE, fingerprint=HOSTILE, class_names=(HOSTILE, HOSTILE),
                                  splits=np.full(len(dataset), HOSTILE))
    assert store.register_dataset(hostile, HOSTILE, {HOSTILE: HOSTILE})
    store.write_scores(job, HOSTILE, simple_scores([HOSTILE, "ok"], metrics=[HOSTILE]), {(HOSTILE, HOSTILE): 1.0})
    store.record_failure(job, HOSTILE, HOSTILE, HOSTILE)
    store.finish_job(job, "partial", HOSTILE, HOSTILE)
    record = store.job(job)
    assert [record[k] for k in ("zoo", "dataset", "message", "mlflow_run_id")] == [HOSTILE] * 4
    assert record["params"] == {HOSTILE: HOSTILE}
    stored = store.get_dataset(HOSTILE)
    assert (stored["fingerprint"], stored["source"], stored["options"]) == (HOSTILE, HOSTILE, {HOSTILE: HOSTILE})
    assert stored["class_names"] == [HOSTILE, HOSTILE] and stored["splits"] == {HOSTILE: len(dataset)}
    assert store.scores(job).set_index("model").loc[HOSTILE, "seconds"] == 1.0
    board = store.leaderboard(HOSTILE)
    assert set(board["model"]) == {HOSTILE, "ok"} and set(board["metric"]) == {HOSTILE}
    assert store.query("SELECT error FROM failures")["error"].tolist() == [HOSTILE]
    assert set(store.query("SELECT table_name FROM duckdb_tables()")["table_name"]) == TABLES


def test_threads_of_one_process_share_a_store(store):
    n_threads, n_jobs = 6, 4
    errors = []

    def work(t):
        try:
            for j in range(n_jobs):
                job = store.start_job("rank", "small", f"d{t}", {"j": j})
                store.write_scores(job, f"d{t}", simple_scores([f"m{i}" for i in range(10)]))
                store.finish_job(job, "completed")
                store.query("SELECT count(*) FROM scores")  # a read-only connection between the writes
        except Exception as error:  # collected: an exception in a thread would not fail the test by itself
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.query("SELECT count(*) AS n FROM scores")["n"].item() == n_threads * n_jobs * 20
    assert len(store.leaderboard()) == n_threads * 20


def _write_jobs(path, worker, n_jobs, start):
    """In a spawned process: wait for the start signal, then write ``n_jobs`` jobs of 40 scores each."""
    store = ResultsStore(path, lock_timeout=60)
    start.wait()
    for j in range(n_jobs):
        job = store.start_job("rank", "small", f"data{worker}", {"worker": worker, "j": j})
        store.write_scores(job, f"data{worker}", simple_scores([f"m{i}" for i in range(20)]))
        store.finish_job(job, "completed")


def _hold_lock(path, ready, release):
    con = duckdb.connect(str(path))
    ready.set()
    release.wait(30)
    con.close()


def test_two_processes_writing_to_one_file_queue_instead_of_failing(store):
    """Both writers start while this process holds the file, so both must wait, then they interleave."""
    store.query("SELECT 1")  # create the schema first
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    n_jobs = 10
    workers = [context.Process(target=_write_jobs, args=(store.path, w, n_jobs, start)) for w in range(2)]
    for worker in workers:
        worker.start()
    held = duckdb.connect(str(store.path))  # the lock a running job would hold
    start.set()
    time.sleep(1.0)
    held.close()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    counts = store.query("SELECT dataset, count(*) AS n, count(DISTINCT job_id) AS jobs FROM scores GROUP BY dataset "
                         "ORDER BY dataset")
    assert counts.values.tolist() == [["data0", n_jobs * 40, n_jobs], ["data1", n_jobs * 40, n_jobs]]
    assert set(store.query("SELECT status FROM jobs")["status"]) == {"completed"}


def test_a_lock_held_too_long_is_a_one_line_error(tmp_path):
    store = ResultsStore(tmp_path / "results.duckdb", lock_timeout=0.3)
    store.query("SELECT 1")
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(store.path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        began = time.monotonic()
        with pytest.raises(FaceZooError, match="stayed locked by another process for 0.3 s") as error:
            store.start_job("rank", "small", "pets", {})
        assert 0.2 < time.monotonic() - began < 5 and "\n" not in str(error.value)
    finally:
        release.set()
        holder.join(30)
    store.start_job("rank", "small", "pets", {})  # free again


def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path):
    path = tmp_path / "results.duckdb"
    path.write_text("not a database")
    with pytest.raises(FaceZooError, match="cannot open results database"):
        ResultsStore(path).leaderboard()

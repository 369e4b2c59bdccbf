"""The pipeline end to end on tiny models: Prefect flows (one test harness for the session), DuckDB, MLflow, CLI.

The zoo is three timm test architectures with random weights (tiny, offline) plus one model whose weights do not
exist; the dataset a 240-image sample of scikit-learn's digits.
"""

import json
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from facezoo.config import Home
from facezoo.errors import FaceZooError
from facezoo.evidence import recommendation
from storage.results import ResultsStore

METRICS = ["face", "nc1", "logme", "hscore", "knn", "leep"]
ZOO = """
name: tiny
models:
  - {name: test_resnet, source: "timm:test_resnet", options: {pretrained: false}}
  - {name: test_vit, source: "timm:test_vit", options: {pretrained: false}}
  - {name: test_efficientnet, source: "timm:test_efficientnet", options: {pretrained: false}}
  - {name: broken, source: "checkpoint:resnet18@/nonexistent/weights.pth"}
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "tiny.yaml"
    path.write_text(ZOO)
    return str(path)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return Home.resolve(tmp_path_factory.mktemp("home")).ensure()


@pytest.fixture(scope="module")
def first_run(prefect_harness, zoo, home):
    from flows.rank import rank_zoo

    return rank_zoo(zoo, "builtin:digits", metrics=METRICS, max_samples=300, home=str(home.root))


def test_rank_zoo_stores_ranks_and_logs_every_model(first_run, home):
    assert first_run["status"] == "partial"
    assert set(first_run["failures"]) == {"broken"} and "does not exist" in first_run["failures"]["broken"]
    assert first_run["cache_hits"] == []
    assert first_run["recommendation"] == recommendation("image", set(METRICS)).to_dict()  # an image dataset
    store = ResultsStore(home.results_db)
    scores = store.query("SELECT model, metric, score, rank FROM scores WHERE job_id = ?", [first_run["job_id"]])
    assert set(scores.model) == {"test_resnet", "test_vit", "test_efficientnet"}
    assert set(scores.metric) == set(METRICS)
    face = scores[scores.metric == "face"].sort_values("rank")
    assert len(face) == 3 and face["rank"].min() == 1 and face["score"].is_monotonic_decreasing
    job = store.job(first_run["job_id"])
    assert job["status"] == "partial" and "broken" in job["message"] and job["mlflow_run_id"]
    assert job["params"]["recommended_metric"] == first_run["recommendation"]["metric"]
    failures = store.query("SELECT model, stage FROM failures WHERE job_id = ?", [first_run["job_id"]])
    assert failures.to_dict("records") == [{"model": "broken", "stage": "extract"}]
    assert len(store.query("SELECT * FROM feature_sets")) == 3
    assert store.get_dataset("digits-s300")["n_samples"] == 300
    assert set(store.leaderboard("digits-s300").model) == {"test_resnet", "test_vit", "test_efficientnet"}

    client = MlflowClient(home.tracking_uri)
    parent = client.get_run(job["mlflow_run_id"])
    assert parent.data.params["dataset"] == "digits-s300"
    assert parent.data.params["recommended_metric"] == first_run["recommendation"]["metric"]  # seen in the UI
    assert parent.data.params["recommendation"] == first_run["recommendation"]["statement"]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {run.data.tags["facezoo.model"]: run for run in children}
    assert set(by_name) == {"test_resnet", "test_vit", "test_efficientnet", "broken"}
    for name in ("test_resnet", "test_vit", "test_efficientnet"):
        run = by_name[name]
        assert run.info.status == "FINISHED" and run.data.params["source"] == f"timm:{name}"
        assert {"face", "face_rank", "face_seconds", "logme"} <= set(run.data.metrics)
        assert run.data.tags["facezoo.cache_key"]
    broken = by_name["broken"]
    assert broken.info.status == "FAILED" and "does not exist" in broken.data.tags["facezoo.error"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"ranking.csv", "ranking.md", "face.png"} <= artifacts


def test_a_second_run_reads_every_feature_from_the_cache(first_run, zoo, home):
    from flows.rank import rank_zoo

    again = rank_zoo(zoo, "digits-s300", metrics=METRICS, home=str(home.root))
    assert again["cache_hits"] == ["test_efficientnet", "test_resnet", "test_vit"]
    first = {(r["model"], r["metric"]): r["score"] for r in first_run["ranking"]}
    second = {(r["model"], r["metric"]): r["score"] for r in again["ranking"]}
    assert second == pytest.approx(first)


BUDGET = {"steps": 4, "batch_size": 16, "resolution": 32, "lr_grid": [0.01], "weight_decay_grid": [0.0]}


def test_validate_fine_tunes_and_correlates_then_reuses_ground_truth(first_run, zoo, home, monkeypatch):
    from flows.validate import validate

    checked = validate(zoo, "digits-s300", budget=BUDGET, home=str(home.root))
    assert checked["status"] == "completed" and set(checked["accuracy"]) == {
        "test_resnet", "test_vit", "test_efficientnet"}
    assert set(checked["protocols"].values()) == {"full"} and checked["fallbacks"] == {}
    assert all(0.0 <= a <= 1.0 for a in checked["accuracy"].values())
    store = ResultsStore(home.results_db)
    rows = store.query("SELECT metric, protocol, n_models FROM correlations WHERE job_id = ?", [checked["job_id"]])
    assert set(rows.metric) <= set(METRICS) and (rows.n_models == 3).all() and len(rows) >= 4
    assert set(rows.protocol) == {"full"}
    stored = store.query("SELECT protocol, budget FROM finetune")
    assert len(stored) == 3 and set(stored.protocol) == {"full"}
    assert all(json.loads(b)["steps"] == 4 and "grid" in json.loads(b)["selected"] for b in stored.budget)
    # FaCe's premise: pre-trained NC1 (the rank job's nc1 scores) against the fine-tuned test features' NC1
    nc1_after = {json.loads(b)["selected"]["fine_tuned_collapse"]["nc1"] for b in stored.budget}
    assert len(nc1_after) == 3 and all(np.isfinite(v) and v > 0 for v in nc1_after)
    premise = checked["collapse_premise"]
    assert premise["metric"] == "nc1" and premise["n_models"] == 3 and -1 <= premise["spearman"] <= 1
    again = validate(zoo, "digits-s300", budget=BUDGET, home=str(home.root))
    assert again["accuracy"] == checked["accuracy"]  # the cached ground truth
    assert again["collapse_premise"] == premise  # read back from the stored result
    assert len(store.query("SELECT * FROM finetune")) == 3
    head = validate(zoo, "digits-s300", protocol="frozen_head", home=str(home.root))
    assert set(head["protocols"].values()) == {"frozen_head"} and head["collapse_premise"] is None
    assert set(store.query("SELECT protocol FROM correlations WHERE job_id = ?", [head["job_id"]]).protocol) == {
        "frozen_head"}
    assert len(store.query("SELECT * FROM finetune")) == 6  # one row per (model, protocol, budget)
    # by default the top k follow the metric the held-out evidence recommends for the task: here a file naming knn
    evidence = home.root / "evidence.json"
    evidence.write_text(json.dumps({"budget": "cpu", "groups": {"image": {"tasks": ["a", "b", "c"], "metrics": [
        {"metric": "knn", "weighted_tau": [0.5, 0.2, 0.8], "vs_best": None}]}}}))
    monkeypatch.setattr("facezoo.evidence.EVIDENCE", evidence)
    picked = validate(zoo, "digits-s300", top_k=1, controls=1, budget=BUDGET, home=str(home.root))
    knn_first = next(r["model"] for r in first_run["ranking"] if r["metric"] == "knn" and r["rank"] == 1)
    assert picked["by"] == "knn" and picked["recommendation"]["metric"] == "knn"
    assert knn_first in picked["accuracy"] and len(picked["accuracy"]) == 2
    with pytest.raises(FaceZooError, match="--by 'nope': rank job .* has no such metric"):
        validate(zoo, "digits-s300", by="nope", home=str(home.root))


def test_models_a_metric_could_not_score_are_validated_last_not_dropped():
    import pandas as pd

    from flows.validate import choose_models, ranked_by

    scores = pd.DataFrame({"model": ["a", "b", "c", "a", "b", "c"], "metric": ["leep"] * 3 + ["face"] * 3,
                           "rank": [2.0, float("nan"), 1.0, 1.0, 2.0, 3.0]})  # b has no logits: no leep rank
    assert ranked_by(scores, "leep") == ["c", "a", "b"] and ranked_by(scores, "face") == ["a", "b", "c"]
    assert choose_models(ranked_by(scores, "leep"), None, 2) == ["c", "a", "b"]


def test_collapse_premise_is_the_rank_correlation_of_nc1_before_and_after():
    import pandas as pd

    from flows.validate import collapse_premise
    from tasks.finetune import GroundTruth

    before, after = [0.5, 0.9, 0.2, 0.7, 0.4], [1.0, 3.0, 2.0, 4.0, np.nan]
    scores = pd.DataFrame({"metric": "nc1", "model": list("abcde"), "score": before})
    truth = {m: GroundTruth(model=m, protocol="full", accuracy=0.5, mean_class_accuracy=0.5, budget_key="k",
                            cached=False, ft_nc1=v) for m, v in zip("abcde", after, strict=True)}
    premise = collapse_premise(scores, truth)  # e is dropped: no fine-tuned NC1
    # textbook Spearman on a, b, c, d: ranks (2, 4, 1, 3) vs (1, 3, 2, 4), d² = 1+1+1+1 = 4, 1 - 6·4/(4·15)
    assert premise["n_models"] == 4 and premise["spearman"] == pytest.approx(1 - 6 * 4 / (4 * 15))
    # Kendall τ: 6 pairs, (a,b)+ (a,c)- (a,d)+ (b,c)+ (b,d)- (c,d)+ → (4 - 2) / 6
    assert premise["kendall_tau"] == pytest.approx(2 / 6)
    assert collapse_premise(scores.assign(metric="logme"), truth) is None  # no collapse metric scored
    assert collapse_premise(scores, dict(list(truth.items())[:2])) is None  # fewer than 3 models


def test_mixed_protocols_are_never_correlated_silently():
    import pandas as pd

    from flows.validate import protocol_correlations

    models = ["a", "b", "c", "d", "e"]
    scores = pd.DataFrame({"metric": "face", "model": models, "score": [5.0, 4.0, 3.0, 2.0, 1.0]})
    accuracy = dict(zip(models, [0.9, 0.8, 0.7, 0.6, 0.5]))
    tables = protocol_correlations(scores, accuracy, {"a": "full", "b": "full", "c": "full", "d": "frozen_head",
                                                      "e": "frozen_head"})
    assert set(tables) == {"full", "frozen_head", "mixed:frozen_head+full"}
    assert tables["full"]["n_models"].tolist() == [3] and tables["frozen_head"].empty  # 2 models: no correlation
    assert tables["mixed:frozen_head+full"]["n_models"].tolist() == [5]
    assert set(protocol_correlations(scores, accuracy, dict.fromkeys(models, "full"))) == {"full"}


def test_cli_report_query_and_user_errors(first_run, home):
    from flows.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["--home", str(home.root), "report", "--json"])
    assert out.exit_code == 0, out.output
    assert {r["model"] for r in json.loads(out.output)} == {"test_resnet", "test_vit", "test_efficientnet"}
    out = runner.invoke(app, ["--home", str(home.root), "query", "SELECT count(*) AS n FROM datasets", "--json"])
    assert out.exit_code == 0 and json.loads(out.output) == [{"n": 1}]
    out = runner.invoke(app, ["--home", str(home.root), "query", "DROP TABLE scores"])
    assert out.exit_code == 2 and out.output.startswith("error: ") and "Traceback" not in out.output
    out = runner.invoke(app, ["--home", str(home.root), "rank", "--zoo", "nope", "--dataset", "digits-s300"])
    assert out.exit_code == 2 and "zoo 'nope'" in out.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_mlflow_ui_serves_the_experiment(first_run, home):
    from storage.tracking import Tracker

    port = _free_port()
    server = subprocess.Popen(Tracker(home.tracking_uri, home.artifacts).ui_command(port=port),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=50"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    names = {e["name"] for e in json.load(response)["experiments"]}
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        assert "facezoo/digits-s300" in names
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_rank_zoo_runs_on_a_dask_local_cluster(first_run, zoo, home):
    pytest.importorskip("prefect_dask")
    from prefect_dask import DaskTaskRunner

    from flows.rank import rank_zoo

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 2, "processes": True,
                                            "resources": {"GPU": 1}, "dashboard_address": None})
    out = rank_zoo.with_options(task_runner=runner)(zoo, "digits-s300", metrics=["face", "nc1"], dask_gpu=True,
                                                     home=str(home.root))
    assert out["status"] == "partial" and len({r["model"] for r in out["ranking"]}) == 3


SEGMENTATION_ZOO = """
name: tiny-dense
models:
  - {name: test_resnet, source: "timm:test_resnet", options: {pretrained: false}}
  - {name: test_vit, source: "timm:test_vit", options: {pretrained: false}}
  - {name: test_efficientnet, source: "timm:test_efficientnet", options: {pretrained: false}}
"""


def test_segmentation_ranks_pixel_features_and_validates_with_miou(prefect_harness, tmp_path):
    from flows.rank import SEGMENTATION_METRICS, rank_zoo
    from flows.validate import validate

    zoo = tmp_path / "dense.yaml"
    zoo.write_text(SEGMENTATION_ZOO)
    home = str(Home.resolve(tmp_path / "home").ensure().root)
    with pytest.raises(FaceZooError, match="is a segmentation dataset, not image"):
        rank_zoo(str(zoo), "builtin:mnist-canvas", max_samples=40, task="image", home=home)
    ranked = rank_zoo(str(zoo), "builtin:mnist-canvas", max_samples=40, task="segmentation", home=home)
    assert ranked["status"] == "completed"
    store = ResultsStore(Home.resolve(home).results_db)
    scores = store.scores(ranked["job_id"])
    assert set(scores.metric) == set(SEGMENTATION_METRICS) and set(scores.model) == {
        "test_resnet", "test_vit", "test_efficientnet"}
    assert store.job(ranked["job_id"])["params"]["metric_options"] == {"gbc": {"gaussian": "diagonal"}}
    checked = validate(str(zoo), ranked["dataset"], task="segmentation", budget=BUDGET, home=home)
    assert checked["status"] == "completed" and set(checked["protocols"].values()) == {"full"}
    assert all(0.0 <= v <= 1.0 for v in checked["accuracy"].values())  # mIoU
    stored = store.query("SELECT budget FROM finetune")
    assert all(json.loads(b)["task"] == "segmentation" and "miou" in json.loads(b)["selected"] for b in stored.budget)
    assert {r["protocol"] for r in checked["correlations"]} == {"full"}


def _image_folder(root, classes, per_class, corrupt=False):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((16, 16, 3)) * 60 + 60 * k).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    if corrupt:
        (root / classes[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_onboard_checks_registers_and_ranks_then_reevaluate_reranks_everything(prefect_harness, zoo, tmp_path):
    from flows.onboard import onboard_dataset
    from flows.reevaluate import reevaluate

    home = str(Home.resolve(tmp_path / "home").ensure().root)
    bad = _image_folder(tmp_path / "bad", ["a", "b", "c"], 6, corrupt=True)
    with pytest.raises(FaceZooError, match=r"1 unreadable image\(s\): .*broken.png"):
        onboard_dataset(f"folder:{bad}", "bad", zoo=zoo, home=home)
    lonely = _image_folder(tmp_path / "lonely", ["a"], 6)
    with pytest.raises(FaceZooError, match="class"):
        onboard_dataset(f"folder:{lonely}", "lonely", zoo=zoo, home=home)
    good = _image_folder(tmp_path / "good", ["a", "b", "c"], 8)
    out = onboard_dataset(f"folder:{good}", "shapes", zoo=zoo, home=home)
    assert out["dataset"]["n_classes"] == 3 and out["rank"]["status"] == "partial"  # the zoo's broken model
    store = ResultsStore(Home.resolve(home).results_db)
    assert store.get_dataset("shapes")["n_samples"] == 24 and store.get_dataset("bad") is None
    assert store.latest_job("onboard", dataset="shapes") is not None
    again = reevaluate(zoo, home=home)
    assert again == {"shapes": "partial"}
    ranks = store.query("SELECT job_id FROM jobs WHERE kind = 'rank' AND dataset = 'shapes'")
    assert len(ranks) == 2


def test_the_nightly_schedule_is_a_cron_deployment(tmp_path):
    from flows.reevaluate import SCHEDULE, deployment, load_schedule

    settings = load_schedule(SCHEDULE)
    built = deployment(settings, home=str(tmp_path))
    assert built.name == settings.name and built.parameters["zoo"] == settings.zoo
    assert [s.schedule.cron for s in built.schedules] == [settings.cron]
    broken = tmp_path / "bad.yaml"
    broken.write_text("cron: '0 2 * * *'\nzooo: demo-image\n")
    with pytest.raises(FaceZooError, match="zooo: Extra inputs are not permitted"):
        load_schedule(broken)


def test_scoring_tasks_in_one_process_run_one_at_a_time(tmp_path, monkeypatch):
    """Each model's metrics use every core through BLAS: concurrent scoring tasks would oversubscribe them."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import tasks.score
    from conftest import make_classes
    from facezoo import metrics
    from storage.features import FeatureStore
    from tasks.extract import FeatureRef

    store, refs = FeatureStore(tmp_path), []
    for seed in range(3):
        x, y = make_classes(seed=seed)
        key = f"{seed:032x}"
        store.put(f"m{seed}", "d", "train", key, features=x.astype(np.float32), labels=y,
                  sample_ids=np.arange(len(y)).astype(str), logits=None, class_names=["a", "b", "c", "d"], metadata={})
        refs.append(FeatureRef(model=f"m{seed}", source="test", digest="0", modality="image", dim=x.shape[1],
                               num_logits=None, preprocessing={}, dataset="d", split="train", cache_key=key,
                               backend="eager", path=str(store.path(f"m{seed}", "d", "train", key)), cache_hit=True,
                               n=len(y), extraction_seconds=0.0))
    running, most, lock = [0], [0], threading.Lock()
    original = metrics.score_many_from_stats

    def witness(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(metrics, "score_many_from_stats", witness)
    with ThreadPoolExecutor(3) as pool:
        scored = list(pool.map(lambda ref: tasks.score.score_features.fn(ref, ["nc1", "logme"], {}), refs))
    assert most[0] == 1
    for ref, result in zip(refs, scored, strict=True):
        x, y = make_classes(seed=int(ref.model[1:]))
        assert result.values["nc1"] == pytest.approx(metrics.score("nc1", x.astype(np.float32), y), rel=1e-6)


def test_only_a_metric_that_scored_every_model_can_be_recommended():
    from flows.rank import fully_scored
    from tasks.score import ModelScores

    def scored(**values):
        return ModelScores(model="m", values=values, seconds={}, errors={}, n=10, n_classes=2)

    scores = {"a": scored(face=1.0, leep=0.5, knn=0.3), "b": scored(face=0.5, knn=float("nan")), "c": scored(face=0.2)}
    assert fully_scored(scores, ["face", "leep", "knn"]) == {"face"}  # b has no head (no LEEP), knn failed on b
    assert fully_scored({}, ["face"]) == set()

"""MLflow tracking on a temporary SQLite store: experiments with explicit artifact locations, parent and child runs
of a ranking job, a validation job with plots, and logging failures that end runs FAILED; what the UI shows of
them (the experiment kind, the Dataset and Source columns, the zoo's scores and ties on the parent).

Every job is logged while the working directory is an empty folder, to prove artifacts never land in ``./mlruns``.
One module-scoped store: MLflow migrates a new SQLite database on first use (seconds)."""

import json
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import make_classes

from facezoo.errors import FaceZooError
from facezoo.metrics import rank_zoo, score_many
from storage.tracking import Tracker

# MLflow's own SQLAlchemy store uses a deprecated loader; nothing this project can change.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

DATASET = "pets"
JOB = "0123456789abcdef0123456789abcdef"
SECONDS = {"face": 0.5, "logme": 0.25}
MODELS = [
    {"name": "resnet", "source": "timm:resnet18", "digest": "d1", "dim": 64, "n": 130, "classes": 4,
     "options": {"layer": "head", "pool": "avg"}, "cache_key": "a" * 32, "seconds": SECONDS,
     "extraction_seconds": 2.0},
    {"name": "vit", "source": "timm:vit_tiny", "digest": "d2", "dim": 64, "n": 130, "classes": 4,
     "cache_key": "b" * 32, "seconds": SECONDS, "extraction_seconds": 1.0},
    {"name": "broken", "source": "timm:nope", "digest": "d3"},
]
INFO = {"name": DATASET, "task": "image", "source": "/data/pets", "fingerprint": "0f" * 16, "n_samples": 130,
        "n_classes": 4, "splits": {"train": 104, "test": 26}, "class_counts": {"cat": 30}}


def zoo_ranking():
    """Real score_many + rank_zoo output for two working models (FaCe and LogME) and one failed model."""
    raw = {}
    for model, separation in (("resnet", 3.0), ("vit", 1.0)):
        features, labels = make_classes(dim=8, separation=separation, seed=1)
        raw[model] = score_many(features, labels, ["face", "logme"])
    raw["broken"] = {}
    return rank_zoo(raw, ["face", "logme"])


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    cwd = root / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", root / "mlartifacts")
        ranking = zoo_ranking()
        params = {"zoo": "small", "dataset": DATASET, "fingerprint": "fp1", "metrics": ["face", "logme"],
                  "split": "train", "device": "cpu", "notes": "x" * 7000}
        failures = {"broken": "cannot fetch timm:nope offline\n(HF_HUB_OFFLINE=1)"}
        rank_run = tracker.log_rank_job(DATASET, JOB, params, MODELS, ranking, failures, dataset_info=INFO)
        finetune = pd.DataFrame({"model": ["resnet", "vit"], "protocol": "linear", "accuracy": [0.9, 0.6],
                                 "mean_class_accuracy": [0.88, 0.55], "seconds": [12.0, 9.0]})
        correlations = pd.DataFrame({"metric": ["face", "logme"], "weighted_tau": [1.0, 1.0],  # protocol: finetune's
                                     "top1_regret": [0.0, 0.0], "n_models": [2, 2]})
        curves = {"resnet": [(0, 1.2, 0.5), (1, 0.8, 0.7), (2, 0.5, 0.9)],
                  "vit": [{"C": 0.1, "validation_accuracy": 0.5}, {"C": 1.0, "validation_accuracy": 0.6}]}
        validation_run = tracker.log_validation(
            DATASET, "f" * 32, {"protocol": "linear", "epochs": 3}, finetune, correlations,
            ranking[ranking["model"] != "broken"], curves, dataset_info=INFO,
        )
        yield SimpleNamespace(tracker=tracker, client=tracker.client, root=root, cwd=cwd, ranking=ranking,
                              params=params, failures=failures, rank_run=rank_run, validation_run=validation_run,
                              finetune=finetune, correlations=correlations, curves=curves)


def children(logged, parent):
    experiment = logged.client.get_run(parent).info.experiment_id
    runs = logged.client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
    return {run.info.run_name: run for run in runs}


def artifact_folder(logged, run_id):
    return logged.root / "mlartifacts" / DATASET / run_id / "artifacts"


def test_one_experiment_per_dataset_with_an_explicit_artifact_location(logged):
    experiment = logged.client.get_experiment_by_name(f"facezoo/{DATASET}")
    assert experiment.artifact_location == (logged.root / "mlartifacts" / DATASET).as_uri()
    assert logged.tracker.experiment_for(DATASET) == experiment.experiment_id
    other = logged.tracker.experiment_for("cars")
    logged.client.delete_experiment(other)
    assert logged.tracker.experiment_for("cars") == other  # restored from the trash, not a name clash
    assert logged.client.get_experiment(other).lifecycle_stage == "active"
    with pytest.raises(FaceZooError, match="dataset name '../up'"):
        logged.tracker.experiment_for("../up")


def test_rank_parent_run_has_the_job_tags_params_and_summary(logged):
    run = logged.client.get_run(logged.rank_run)
    assert run.info.status == "FINISHED" and run.info.run_name == f"rank {DATASET} {JOB[:8]}"
    tags = run.data.tags
    assert (tags["facezoo.job_id"], tags["facezoo.kind"], tags["facezoo.status"]) == (JOB, "rank", "partial")
    params = run.data.params
    assert params["zoo"] == "small" and params["metrics"] == '["face", "logme"]' and params["device"] == "cpu"
    assert len(params["notes"]) == 6000 and params["notes"].endswith("…[truncated]")
    scores = {f"{row.metric}/{row.model}": pytest.approx(row.score)
              for row in logged.ranking.itertuples() if row.model != "broken"}
    assert len(scores) == 4 and run.data.metrics == {"n_models": 3.0, "n_failed": 1.0, **scores}
    assert not [key for key in tags if key.startswith("facezoo.ties.")]  # resnet and vit never share a rank


def test_rank_child_runs_carry_each_models_params_scores_and_timings(logged):
    runs = children(logged, logged.rank_run)
    assert set(runs) == {"resnet", "vit", "broken"}
    for model in ("resnet", "vit"):
        run = runs[model]
        assert run.info.status == "FINISHED"
        assert run.data.tags["facezoo.job_id"] == JOB
        rows = logged.ranking[logged.ranking["model"] == model].set_index("metric")
        metrics = run.data.metrics
        for metric in ("face", "logme"):
            assert metrics[metric] == pytest.approx(rows.loc[metric, "score"])
            assert metrics[f"{metric}_rank"] == rows.loc[metric, "rank"]
            assert metrics[f"{metric}_seconds"] == SECONDS[metric]
        assert metrics["face_raw"] == pytest.approx(rows.loc["face", "raw"])  # zoo-normalised: raw differs
        assert "logme_raw" not in metrics
        assert len(metrics) == 8
    resnet = runs["resnet"]
    assert resnet.data.params == {"source": "timm:resnet18", "digest": "d1", "dim": "64", "n": "130", "classes": "4",
                                  "options": '{"layer": "head", "pool": "avg"}'}
    assert resnet.data.metrics["extraction_seconds"] == 2.0
    assert resnet.data.tags["facezoo.cache_key"] == "a" * 32


def test_a_failed_model_gets_a_failed_child_run_with_its_error(logged):
    broken = children(logged, logged.rank_run)["broken"]
    assert broken.info.status == "FAILED"
    assert broken.data.tags["facezoo.error"] == logged.failures["broken"]
    assert broken.data.metrics == {} and broken.data.params == {"source": "timm:nope", "digest": "d3"}
    assert "facezoo.cache_key" not in broken.data.tags


def test_rank_artifacts_land_under_the_explicit_root_not_the_working_directory(logged):
    folder = artifact_folder(logged, logged.rank_run)
    assert logged.client.get_run(logged.rank_run).info.artifact_uri == folder.as_uri()
    assert sorted(p.name for p in folder.iterdir()) == ["face.png", "params.json", "ranking.csv", "ranking.md"]
    assert list(logged.cwd.iterdir()) == []  # no ./mlruns, nothing else
    pd.testing.assert_frame_equal(pd.read_csv(folder / "ranking.csv"), logged.ranking, check_dtype=False)
    assert (folder / "face.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (folder / "ranking.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| model | face | logme |"
    face = logged.ranking[logged.ranking["metric"] == "face"].set_index("model")
    best = face["rank"].idxmin()
    assert table[2].startswith(f"| {best} | 1 (")  # the FaCe winner first
    assert table[-1] == "| broken | failed | failed |"
    assert '"notes": "' + "x" * 7000 in (folder / "params.json").read_text()  # the full value of a truncated param


def test_no_face_chart_without_the_face_metric(logged):
    ranking = logged.ranking[logged.ranking["metric"] == "logme"]
    run = logged.tracker.log_rank_job(DATASET, "e" * 32, {"metrics": ["logme"]}, MODELS[:2], ranking, {})
    names = sorted(p.name for p in artifact_folder(logged, run).iterdir())
    assert names == ["params.json", "ranking.csv", "ranking.md"]
    assert logged.client.get_run(run).data.tags["facezoo.status"] == "completed"


def test_validation_run_has_correlations_accuracies_curves_and_scatter_plots(logged):
    run = logged.client.get_run(logged.validation_run)
    assert run.info.status == "FINISHED" and run.data.tags["facezoo.kind"] == "validate"
    assert run.data.metrics == {
        "weighted_tau/linear/face": 1.0, "weighted_tau/linear/logme": 1.0, "top1_regret/linear/face": 0.0,
        "top1_regret/linear/logme": 0.0, "n_models/linear/face": 2.0, "n_models/linear/logme": 2.0,
    }
    runs = children(logged, logged.validation_run)
    assert set(runs) == {"resnet", "vit"}
    assert runs["vit"].data.metrics == {"linear/accuracy": 0.6, "linear/mean_class_accuracy": 0.55,
                                        "linear/seconds": 9.0, "curve/C": 1.0, "curve/validation_accuracy": 0.6}
    def curve(model, name):
        history = logged.client.get_metric_history(runs[model].info.run_id, f"curve/{name}")
        return [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]

    assert curve("resnet", "loss") == [(0, 1.2), (1, 0.8), (2, 0.5)]
    assert curve("resnet", "accuracy") == [(0, 0.5), (1, 0.7), (2, 0.9)]
    assert curve("vit", "C") == [(0, 0.1), (1, 1.0)] and curve("vit", "validation_accuracy") == [(0, 0.5), (1, 0.6)]
    folder = artifact_folder(logged, logged.validation_run)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.*")) == [
        "correlations.csv", "finetune.csv", "params.json", "scatter/face.png", "scatter/logme.png",
    ]
    assert (folder / "scatter" / "face.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_logging_failure_ends_every_open_run_failed_and_raises_one_line(logged, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("[Errno 28] No space left on device")

    monkeypatch.setattr(logged.tracker.client, "log_artifacts", disk_full)
    job = "c" * 32
    with pytest.raises(FaceZooError, match=f"rank job {job} on {DATASET}: .*No space left on device") as error:
        logged.tracker.log_rank_job(DATASET, job, {}, MODELS, logged.ranking, logged.failures)
    assert "\n" not in str(error.value)
    experiment = logged.tracker.experiment_for(DATASET)
    runs = logged.client.search_runs([experiment], f"tags.`facezoo.job_id` = '{job}'")
    statuses = {run.info.run_name: run.info.status for run in runs}
    assert statuses == {f"rank {DATASET} {job[:8]}": "FAILED", "resnet": "FINISHED", "vit": "FINISHED",
                        "broken": "FAILED"}
    assert not logged.client.search_runs([experiment], "attributes.status = 'RUNNING'")


def test_missing_columns_are_refused_before_any_run_starts(logged):
    with pytest.raises(FaceZooError, match="ranking table lacks column"):
        logged.tracker.log_rank_job(DATASET, "d" * 32, {}, [], logged.ranking.drop(columns="score"), {})
    with pytest.raises(FaceZooError, match="fine-tuning table lacks column"):
        logged.tracker.log_validation(DATASET, "d" * 32, {}, logged.finetune.drop(columns="protocol"),
                                      logged.correlations, logged.ranking)
    two_protocols = logged.finetune.assign(protocol=["linear", "full"])
    with pytest.raises(FaceZooError, match="needs a protocol column: fine-tuning has 2"):
        logged.tracker.log_validation(DATASET, "d" * 32, {}, two_protocols, logged.correlations, logged.ranking)
    experiment = logged.tracker.experiment_for(DATASET)
    assert not logged.client.search_runs([experiment], f"tags.`facezoo.job_id` = '{'d' * 32}'")


def test_ui_command_serves_this_store_on_localhost_by_default(logged):
    argv = logged.tracker.ui_command()
    assert argv[1:4] == ["-m", "mlflow", "server"]
    options = dict(zip(argv[4::2], argv[5::2], strict=True))
    root = (logged.root / "mlartifacts").as_uri()
    assert options == {"--backend-store-uri": logged.tracker.tracking_uri, "--default-artifact-root": root,
                       "--artifacts-destination": root, "--host": "127.0.0.1", "--port": "5000", "--workers": "1"}
    assert logged.tracker.ui_command("0.0.0.0", 8080)[-6:-2] == ["--host", "0.0.0.0", "--port", "8080"]


def test_a_job_where_every_model_failed_is_still_logged(logged):
    empty = pd.DataFrame(columns=["metric", "model", "raw", "score", "rank"])
    run_id = logged.tracker.log_rank_job("nothing", "job-all-failed", {"zoo": "z"}, models=[], ranking=empty,
                                         failures={"m1": "extract: boom", "m2": "score: bad"})
    assert logged.client.get_run(run_id).info.status == "FINISHED"
    assert "ranking.md" in {a.path for a in logged.client.list_artifacts(run_id)}
    assert {run.info.status for run in children(logged, run_id).values()} == {"FAILED"}


# -- what the MLflow UI shows ------------------------------------------------------------------------------------------


def test_experiments_are_marked_model_training_new_and_old(logged):
    kind = "mlflow.experimentKind"
    experiment = logged.client.get_experiment_by_name(f"facezoo/{DATASET}")
    assert experiment.tags[kind] == "custom_model_development"  # else MLflow 3 opens the GenAI overview
    # an experiment of an older home: no tag, or the kind the UI inferred and stored
    for name, tags in (("old", {}), ("inferred", {kind: "genai_development_inferred"})):
        old = logged.client.create_experiment(f"facezoo/{name}", tags=tags)
        assert logged.tracker.experiment_for(name) == old
        assert logged.client.get_experiment(old).tags[kind] == "custom_model_development"


def dataset_inputs(logged, run_id):
    return [(d.dataset.name, d.dataset.digest, d.dataset.source_type, json.loads(d.dataset.source),
             {t.key: t.value for t in d.tags}) for d in logged.client.get_run(run_id).inputs.dataset_inputs]


def test_every_run_has_the_dataset_input_with_the_fingerprint_as_digest(logged):
    for parent, context in ((logged.rank_run, "rank"), (logged.validation_run, "validate")):
        expected = [(DATASET, INFO["fingerprint"], "local", {"uri": "/data/pets"}, {"mlflow.data.context": context})]
        assert dataset_inputs(logged, parent) == expected
        for child in children(logged, parent).values():
            assert dataset_inputs(logged, child.info.run_id) == expected
    dataset = logged.client.get_run(logged.rank_run).inputs.dataset_inputs[0].dataset
    assert json.loads(dataset.profile) == {"task": "image", "n_samples": 130, "n_classes": 4,
                                           "splits": {"train": 104, "test": 26}}


def test_without_a_fingerprint_no_dataset_input_is_invented(logged):
    ranking = logged.ranking[logged.ranking["metric"] == "logme"]
    bare = logged.tracker.log_rank_job(DATASET, "1" * 32, {"metrics": ["logme"]}, MODELS[:1], ranking, {})
    assert dataset_inputs(logged, bare) == []
    from_params = logged.tracker.log_rank_job(DATASET, "2" * 32, {"fingerprint": "ab" * 16}, MODELS[:1], ranking, {})
    assert [d[:2] for d in dataset_inputs(logged, from_params)] == [(DATASET, "ab" * 16)]


def test_source_is_the_facezoo_command_line_or_else_the_flow(logged, monkeypatch):
    for run_id, flow in ((logged.rank_run, "rank-zoo"), (logged.validation_run, "validate-ranking")):
        runs = [logged.client.get_run(run_id), *children(logged, run_id).values()]
        assert {(r.data.tags["mlflow.source.name"], r.data.tags["mlflow.source.type"]) for r in runs} == {
            (flow, "LOCAL")}  # pytest called the tracker, as a flow run from Python would
    monkeypatch.setattr(sys, "argv", ["/venv/bin/facezoo", "--home", "/h", "rank", "--zoo", "my zoo.yaml"])
    ranking = logged.ranking[logged.ranking["metric"] == "logme"]
    run_id = logged.tracker.log_rank_job(DATASET, "3" * 32, {}, MODELS[:1], ranking, {})
    for run in (logged.client.get_run(run_id), *children(logged, run_id).values()):
        assert run.data.tags["mlflow.source.name"] == "facezoo --home /h rank --zoo 'my zoo.yaml'"
        assert run.data.tags["mlflow.source.type"] == "JOB"  # the UI shows a JOB's whole name, a LOCAL's basename


def tied_ranking(with_column):
    """Three models on two metrics: all three share rank 1 on nc1, two share rank 2 on face."""
    table = pd.DataFrame({
        "metric": ["face"] * 3 + ["nc1"] * 3, "model": ["a", "b", "c", "c", "b", "a"],
        "raw": [3.0, 1.0, 1.0, 0.5, 0.5, 0.5], "score": [1.0, 0.0, 0.0, 0.5, 0.5, 0.5],
        "rank": [1.0, 2.0, 2.0, 1.0, 1.0, 1.0],
    })
    return table.assign(tied=[1, 2, 2, 3, 3, 3]) if with_column else table


@pytest.mark.parametrize("with_column", [True, False], ids=["tied-column", "equal-ranks"])
def test_ties_are_tagged_on_the_parent(logged, with_column):
    run_id = logged.tracker.log_rank_job(DATASET, "4" * 32, {}, [], tied_ranking(with_column), {})
    tags = logged.client.get_run(run_id).data.tags
    assert {k: v for k, v in tags.items() if k.startswith("facezoo.ties.")} == {
        "facezoo.ties.face": "rank 2 shared by b, c", "facezoo.ties.nc1": "rank 1 shared by a, b, c"}
    assert logged.client.get_run(run_id).data.metrics["nc1/b"] == 0.5


def test_the_tied_column_decides_over_equal_ranks(logged):
    ranking = tied_ranking(True).assign(tied=1)  # a caller that says nothing is tied (e.g. a tolerance of zero)
    run_id = logged.tracker.log_rank_job(DATASET, "5" * 32, {}, [], ranking, {})
    assert not [k for k in logged.client.get_run(run_id).data.tags if k.startswith("facezoo.ties.")]


def test_ui_urls_open_each_experiment_on_its_runs(logged):
    urls = logged.tracker.ui_urls(port=5001)
    experiment = logged.tracker.experiment_for(DATASET)
    assert urls[DATASET] == f"http://127.0.0.1:5001/#/experiments/{experiment}/runs?workflowType=machine_learning"
    logged.client.create_experiment("not-facezoo")
    assert DATASET in logged.tracker.ui_urls() and "not-facezoo" not in logged.tracker.ui_urls()


def test_the_ui_server_starts_without_mlflows_job_runner():
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is False  # set by storage.tracking; ui_command's server inherits it

"""What ``rank`` and ``validate`` recommend: the held-out evidence file of the ranking benchmark, read by
:mod:`facezoo.evidence` (written by ``benchmarks/ranking_quality.py``: see tests/test_ranking_quality.py)."""

import json

import pytest

from facezoo import FaceZooError
from facezoo.evidence import recommendation


def _group(tasks, rows):
    return {"tasks": tasks, "noise_ceiling": 0.8,
            "metrics": [{"metric": m, "n_tasks": len(tasks), "weighted_tau": tau, "top1_regret": [0.1, 0.0, 0.2],
                         "vs_best": vs} for m, tau, vs in rows]}


@pytest.fixture
def evidence(tmp_path):
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps({"budget": "cpu", "groups": {
        "all": _group(["a", "b", "c", "d", "e"], [("gbc", [0.5, 0.3, 0.7], None),
                                                  ("face", [0.4, 0.2, 0.6], [-0.1, -0.3, 0.1]),
                                                  ("logme", [0.1, -0.1, 0.3], [-0.4, -0.6, -0.2])]),
        "image": _group(["a", "b", "c"], [("logme", [0.6, 0.4, 0.8], None),
                                          ("face", [0.2, 0.0, 0.4], [-0.4, -0.6, -0.2])]),
        "text": _group(["d", "e"], [("face", [0.9, 0.8, 1.0], None)]),
    }}))
    return path


def test_the_best_metric_of_the_tasks_group_is_recommended_with_its_evidence(evidence):
    image = recommendation("image", path=evidence)
    assert image.metric == "logme" and image.group == "image"
    assert image.statement == ("logme: mean weighted τ +0.60 [+0.40, +0.80] over 3 held-out image tasks (budget cpu, "
                               "noise ceiling +0.80); ahead of every other metric, significantly (paired 95 % "
                               "intervals exclude 0)")
    # two held-out text tasks are too few to speak for text: the pooled group does, and says who it does not beat
    text = recommendation("text", path=evidence)
    assert (text.metric, text.group) == ("gbc", "all")
    assert "over 5 held-out tasks" in text.statement and text.statement.endswith("not significantly ahead of face")


def test_a_metric_scored_on_fewer_tasks_is_not_recommended_on_its_mean(tmp_path):
    path = tmp_path / "evidence.json"
    group = _group(["a", "b", "c"], [("leep", [0.9, 0.8, 1.0], None), ("gbc", [0.5, 0.3, 0.7], [-0.4, -0.6, -0.2]),
                                     ("face", [0.4, 0.2, 0.6], [-0.1, -0.3, 0.1])])
    group["metrics"][0]["n_tasks"] = 1  # the one task whose models all have source logits
    path.write_text(json.dumps({"budget": "cpu", "groups": {"all": {**group, "best": "gbc"}}}))
    got = recommendation(None, path=path)
    assert got.metric == "gbc" and got.statement.endswith("not significantly ahead of face")  # the old file format


def test_significance_is_the_writers_verdict(evidence):
    data = json.loads(evidence.read_text())
    data["groups"]["image"]["metrics"][1]["vs_best_significant"] = False  # excludes 0, but over too few tasks
    evidence.write_text(json.dumps(data))
    assert recommendation("image", path=evidence).statement.endswith("not significantly ahead of face")


def test_only_metrics_the_job_scored_can_be_recommended(evidence):
    second = recommendation("image", {"face", "knn"}, path=evidence)
    assert second.metric == "face" and second.statement.endswith("(logme, not scored, ranked higher)")
    assert recommendation("image", {"knn"}, path=evidence).metric == "knn"  # none with evidence: a fallback it has


def test_without_evidence_face_is_the_default_and_says_so(tmp_path, evidence):
    missing = recommendation("image", path=tmp_path / "none.json")
    assert missing.metric == "face" and missing.group is None and "no held-out evidence" in missing.statement
    segmentation = recommendation("segmentation", {"face", "logme"}, path=evidence)
    assert segmentation.metric == "face" and "segmentation" in segmentation.statement  # classification evidence only


def test_a_broken_evidence_file_is_one_line_naming_it(tmp_path):
    broken = tmp_path / "evidence.json"
    broken.write_text("{not json")
    with pytest.raises(FaceZooError, match="evidence.json: not a ranking-quality evidence file"):
        recommendation("image", path=broken)

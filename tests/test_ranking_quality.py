"""The ranking-quality benchmark's machinery (``benchmarks/ranking_quality.py``): the task split, the ground truth
kept as data, and the sentences of its report. Offline and fast: no model is trained here."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ranking_quality as rq  # noqa: E402

from facezoo import FaceZooError  # noqa: E402

V1_REPORT_HALF = {"cifar10", "mnist", "sst2", "mr", "mpqa", "reuters-r8"}  # v1's held-out half, as committed


def test_task_split_v2_meets_issue_14():
    tasks = [t for t in rq.TASKS if t.half in rq.HALVES]
    assert len(tasks) >= 16 and sum(t.classes >= 4 for t in tasks) >= 10
    assert {t.modality for t in tasks} == {"image", "text"}
    assert V1_REPORT_HALF <= {t.name for t in tasks if t.half == "heldout"}
    for half in rq.HALVES:
        assert {t.modality for t in tasks if t.half == half} == {"image", "text"}, half


@pytest.mark.parametrize("name", sorted(rq.BUDGETS))
def test_every_budget_has_three_seeds_and_three_values_to_choose_from(name):
    rq.check_budget(name)


def test_a_budget_with_one_learning_rate_is_refused(monkeypatch):
    monkeypatch.setitem(rq.BUDGETS, "bad", {**rq.BUDGETS["smoke"], "text": {"steps": 5, "lr_grid": [1e-4]}})
    with pytest.raises(FaceZooError, match="text needs at least 3 learning rates"):
        rq.check_budget("bad")


def row(model, stage, seed, accuracy=None, lr=0.01, c=None, **extra):
    return {"task": "digits", "model": model, "stage": stage, "seed": seed, "protocol": "full", "lr": lr,
            "weight_decay": 1e-4, "c": c, "test_accuracy": accuracy, "budget": "smoke",
            "budget_hash": rq.budget_hash(rq.BUDGETS["smoke"], "image"), "dataset_fingerprint": "f", **extra}


def test_ground_truth_file_is_extended_and_the_first_measurement_stands(tmp_path):
    path = tmp_path / "gt" / "smoke.csv"
    rq.append_ground_truth(path, [row("a", "test", 0, 0.5), row("a", "val", 0, lr=0.03, val_score=0.4)])
    table = rq.append_ground_truth(path, [row("a", "test", 0, 0.9), row("a", "test", 1, 0.6)])
    assert len(table) == 3 and not path.with_suffix(".csv.tmp").exists()
    stored = rq.read_ground_truth(path)
    assert stored.columns.tolist() == rq.GT_COLUMNS
    test = stored[stored.stage == "test"].set_index("seed").test_accuracy
    assert test.to_dict() == {0: 0.5, 1: 0.6}  # the re-measured seed 0 did not overwrite the stored one
    # frozen_head rows: C set, lr missing; a second append of the same row (None vs NaN after reading) is a duplicate
    frozen = row("b", "test", 0, 0.7, lr=None, c=1.0, protocol="frozen_head")
    rq.append_ground_truth(path, [frozen])
    assert len(rq.append_ground_truth(path, [frozen])) == 4


def test_counts_stay_integers_when_a_column_has_gaps(tmp_path):
    # text rows have max_length, image rows do not: once read back the column holds NaN, which made 64 into "64.0"
    path = tmp_path / "cpu-lite.csv"
    rq.append_ground_truth(path, [row("a", "test", 0, 0.5, resolution=32, steps=100)])
    rq.append_ground_truth(path, [row("b", "test", 0, 0.6, max_length=64, steps=100)])
    rq.append_ground_truth(path, [row("c", "test", 0, 0.7, max_length=64, steps=100)])
    text = path.read_text()
    assert ".0," not in text and text.count(",64,") == 2 and text.count(",32,") == 1


def test_complete_keeps_models_with_every_seed():
    table = pd.DataFrame([row("a", "test", s, 0.5 + s / 10) for s in (0, 1, 2)] + [row("b", "test", 0, 0.4)]
                         + [row("a", "val", 0, lr=0.03, val_score=0.4)], columns=rq.GT_COLUMNS)
    wide = rq.complete(table, "digits", [0, 1, 2])
    assert wide.index.tolist() == ["a"] and wide.loc["a"].tolist() == pytest.approx([0.5, 0.6, 0.7])


def test_rows_of_another_budget_or_other_data_are_refused(tmp_path):
    data = SimpleNamespace(task="image", fingerprint="f")
    good = pd.DataFrame([row("a", "test", 0, 0.5)], columns=rq.GT_COLUMNS)
    rq.check_rows(good, data, "smoke", tmp_path / "smoke.csv")
    with pytest.raises(FaceZooError, match="another 'smoke' budget"):
        rq.check_rows(good.assign(budget_hash="0000"), data, "smoke", tmp_path / "smoke.csv")
    with pytest.raises(FaceZooError, match="other data"):
        rq.check_rows(good, SimpleNamespace(task="image", fingerprint="g"), "smoke", tmp_path / "smoke.csv")


def test_budget_hash_ignores_seeds_and_follows_the_settings():
    smoke = rq.BUDGETS["smoke"]
    assert rq.budget_hash({**smoke, "seeds": [0, 1, 2, 3]}, "image") == rq.budget_hash(smoke, "image")
    assert rq.budget_hash({**smoke, "max_samples": 301}, "image") != rq.budget_hash(smoke, "image")
    assert rq.budget_hash(rq.BUDGETS["cpu"], "text") != rq.budget_hash(rq.BUDGETS["cpu-lite"], "text")


def test_findings_name_the_significant_differences():
    gen = np.random.default_rng(0)
    hard = gen.uniform(-0.5, 0.5, 8)  # what a task does to every metric
    rows = []
    for i, h in enumerate(hard):
        for metric, edge in (("face", 0.0), ("logme", 0.3), ("knn", 0.02 + 0.05 * (-1) ** i)):
            rows.append({"task": f"t{i}", "metric": metric, "weighted_tau": h + edge, "kendall_tau": h + edge,
                         "top1_regret": 0.1, "half": "heldout", "modality": "image", "classes": 10})
    summary = rq.summarise(pd.DataFrame(rows), [f"t{i}" for i in range(8)])
    assert summary.metric.tolist() == ["logme", "knn", "face"] and summary.best.iloc[0] == "logme"
    words = "\n".join(rq.findings("held-out image tasks", 8, summary, 0.8))
    assert "best mean weighted τ is **logme**" in words and "noise ceiling there is +0.80" in words
    assert "significantly better than face (paired difference in mean τ, 95 % interval): logme (+0.30" in words
    assert "significantly worse than logme: knn" in words and "face (-0.30" in words
    assert "knn" not in words.split("significantly better than face")[1].split("\n")[0]
    assert rq.findings("held-out text tasks", 1, summary.head(0), float("nan"))[0].endswith("no comparison.")


def test_choose_stops_when_no_dev_task_has_a_tau():
    calls = []

    def tau(config):
        calls.append(config)
        if len(calls) > 1000:
            raise AssertionError("choose() keeps stepping on NaN means")
        return float("nan")  # a degenerate or 2-model task: no τ

    chosen, path = rq.choose([SimpleNamespace(half="dev", tau=tau)], log=lambda _line: None)
    assert chosen == rq.C_ALONE and len(path) == 2 and all("stays" in line for line in path)


def _dev_tasks(gain_per_task, between_loss=0.0):
    """Ablations whose τ is 0.5 for every configuration except FaCe with F = worst at λ = 1 (0.5 + its gain, less
    ``between_loss`` in the between-class basis); a held-out ablation that fails the test if the rule reads it."""
    def tau_for(gain):
        return lambda c: 0.5 + (gain - between_loss * (c["basis"] == "between")
                                if c["fairness"] == "worst" and c["fairness_weight"] == 1.0 else 0.0)

    def forbidden(_config):
        raise AssertionError("the selection read a held-out task")

    return [SimpleNamespace(half="dev", tau=tau_for(g)) for g in gain_per_task] + [
        SimpleNamespace(half="heldout", tau=forbidden)]


def test_choose_replaces_c_alone_only_when_the_paired_dev_interval_excludes_zero():
    chosen, path = rq.choose(_dev_tasks([0.2, 0.3, 0.25, 0.2, 0.3, 0.25]), log=lambda _line: None)
    # stage basis: the twin without a Gram is as good on dev, so the cheaper basis is taken
    assert chosen == {**rq.C_ALONE, "fairness": "worst", "fairness_weight": 1.0, "basis": "between"}
    assert "it replaces C only" in path[1] and "the between-class basis replaces the principal one" in path[2]
    # ... unless it is significantly worse there
    chosen, path = rq.choose(_dev_tasks([0.2, 0.3, 0.25, 0.2, 0.3, 0.25], between_loss=0.1), log=lambda _line: None)
    assert chosen == {**rq.C_ALONE, "fairness": "worst", "fairness_weight": 1.0} and path[2].endswith("stays")
    # a higher mean from one task alone (+0.5 there, −0.05 elsewhere): the interval covers 0, so C alone stays
    chosen, path = rq.choose(_dev_tasks([0.5, -0.05, -0.05, -0.05, -0.05, -0.05]), log=lambda _line: None)
    assert chosen == rq.C_ALONE and "C only (face_variance) stays" in path[1]
    # a gain on every task, but too few tasks to call it significant
    chosen, path = rq.choose(_dev_tasks([0.2, 0.3, 0.25, 0.2, 0.3]), log=lambda _line: None)
    assert chosen == rq.C_ALONE and "C only (face_variance) stays" in path[1]


def test_budget_comparison_reads_the_other_budgets_file(tmp_path):
    models = ["a", "b", "c", "d"]
    other = [row(m, "test", s, 0.5 + 0.1 * i + 0.01 * s, seconds=10.0) for i, m in enumerate(models) for s in (0, 1, 2)]
    other = [{**r, "budget": "cpu-lite", "budget_hash": "x"} for r in other]
    rq.append_ground_truth(tmp_path / "cpu-lite.csv", other)
    reversed_order = [row(m, "test", s, 0.9 - 0.1 * i + 0.01 * s, seconds=5.0) for i, m in enumerate(models)
                      for s in (0, 1, 2)]
    rq.append_ground_truth(tmp_path / "cpu.csv", reversed_order + [row("e", "test", 0, 0.99, seconds=50.0)])
    lines = rq.budget_comparison(["digits", "mnist"], "cpu", "cpu-lite", tmp_path)
    assert lines[4] == "| digits | 4 | -1.00 / -1.00 | +1.00 | +1.00 | 60 / 120 |"  # e: one seed, not compared
    assert lines[5] == "| mnist | 0 | fewer than 3 models in both | | | |"


def test_ground_truth_selects_once_then_runs_only_the_missing_seeds_at_the_chosen_rate(tmp_path, monkeypatch):
    calls = []

    def fake_full(model, train, test, budget, **_):
        calls.append((budget.lr_grid, budget.seed))
        grid = [{"lr": lr, "weight_decay": 1e-4, "validation_accuracy": {0.01: 0.8}.get(lr, 0.5), "diverged": False}
                for lr in budget.lr_grid]
        best = max(grid, key=lambda g: g["validation_accuracy"])
        return rq.finetune.FineTuneResult(accuracy=0.6 + budget.seed / 100, mean_class_accuracy=0.5, protocol="full",
                                          budget={}, selected={"lr": best["lr"], "weight_decay": 1e-4, "grid": grid})

    monkeypatch.setattr(rq.finetune, "full", fake_full)
    monkeypatch.setattr(rq.finetune, "resolve_protocol", lambda *a, **k: ("full", None))
    data = SimpleNamespace(task="image", fingerprint="f", name="digits-s300", split_names=("test", "train"),
                           subset=lambda split: [0] * (8 if split == "train" else 2))
    spec = SimpleNamespace(name="m", create=object)
    path = tmp_path / "smoke.csv"
    lines = []
    table = rq.ground_truth(rq.TASKS[0], spec, data, "smoke", path, device="cpu", home=tmp_path, log=lines.append)
    assert calls == [((0.03, 0.01, 0.003), 0), ((0.01,), 1), ((0.01,), 2)]
    val = table[table.stage == "val"]
    assert val.lr.tolist() == [0.003, 0.01, 0.03] and val.chosen.astype(str).tolist() == ["False", "True", "False"]
    assert table[table.stage == "test"].set_index("seed").test_accuracy.to_dict() == {0: 0.6, 1: 0.61, 2: 0.62}
    spent = table[table.stage == "test"][["seconds", "cpu_seconds"]]
    assert spent.notna().all().all() and (spent >= 0).all().all()  # wall and CPU time of every run
    calls.clear()
    rq.ground_truth(rq.TASKS[0], spec, data, "smoke", path, device="cpu", home=tmp_path)
    assert calls == []  # everything stored: nothing recomputed
    monkeypatch.setitem(rq.BUDGETS, "smoke", {**rq.BUDGETS["smoke"], "seeds": [0, 1, 2, 3]})
    rq.ground_truth(rq.TASKS[0], spec, data, "smoke", path, device="cpu", home=tmp_path)
    assert calls == [((0.01,), 3)]  # a new seed reuses the stored choice, read back from the file


def test_heldout_evidence_pairs_the_chosen_configuration_with_c_alone_and_the_best_baseline():
    tasks = ["a", "b", "c", "d", "e", "f"]

    def frame(values, half="heldout"):
        return pd.DataFrame({"task": tasks, "half": half, "weighted_tau": values})

    ablation = {"chosen_taus": frame([0.9, 0.8, 0.7, 0.6, 0.6, 0.6]),
                "c_alone_taus": frame([0.5, 0.4, 0.3, 0.2, 0.2, 0.2])}
    baselines = pd.concat([frame([0.9, 0.8, 0.7, 0.7, 0.6, 0.6]).assign(metric="gbc"),
                           frame([0.1] * 6).assign(metric="logme"),
                           frame([1.0] * 6, half="dev").assign(metric="logme")])
    lines = rq.heldout_evidence(ablation, baselines)
    assert lines[0] == "- Held out, chosen minus C alone: +0.400 [+0.400, +0.400] over 6 tasks (significant)."
    assert lines[1].startswith("- Held out, chosen minus the best baseline (gbc): -0.017 [")
    assert lines[1].endswith("over 6 tasks (not significant).")
    # the same edge over C alone on four tasks: too few to call it significant
    four = {k: v[v.task.isin(tasks[:4])] for k, v in ablation.items()}
    assert rq.heldout_evidence(four, baselines)[0].endswith("over 4 tasks (not significant).")


def test_rows_stored_before_the_fine_tuned_collapse_columns_still_read(tmp_path):
    path = tmp_path / "old.csv"
    old = pd.DataFrame([row("a", "test", 0, 0.5)], columns=rq.GT_COLUMNS).drop(columns=list(rq._OPTIONAL))
    old.to_csv(path, index=False)
    stored = rq.read_ground_truth(path)
    assert stored.columns.tolist() == rq.GT_COLUMNS and stored.ft_nc1.isna().all()


def test_premise_section_correlates_nc1_before_and_after_fine_tuning():
    task = rq.Task("t", "benchmark-image", "builtin:digits", "dev", 10)
    scores = pd.DataFrame({"metric": "nc1", "model": list("abcd"), "score": [0.5, 0.9, 0.2, 0.7]})
    run = {"task": task, "scores": scores, "ft_nc1": {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0},
           "accuracy": {"a": 0.1, "b": 0.5, "c": 0.9, "d": 0.3}}
    lines = rq.premise_section([run])
    # Spearman 1 - 6·4/(4·15) = 0.6; Kendall (4 concordant - 2 discordant) / 6 = 0.33
    assert "| t | dev | 4 | +0.60 | +0.33 |" in lines
    assert rq.premise_section([{**run, "ft_nc1": {"a": 1.0, "b": 3.0}}]) == []  # fewer than 3 models: no row


def test_evidence_is_written_from_the_held_out_half_and_read_by_the_product(tmp_path):
    from facezoo.evidence import recommendation

    rows = []
    for i in range(6):
        half, modality = ("dev", "image") if i == 5 else ("heldout", "image" if i < 3 else "text")
        for metric, edge in (("face", 0.0), ("logme", 0.3 if half == "heldout" else -2.0)):
            rows.append({"task": f"t{i}", "metric": metric, "weighted_tau": 0.1 * i + edge, "kendall_tau": 0.0,
                         "top1_regret": 0.1, "half": half, "modality": modality, "classes": 10})
    ceilings = {f"t{i}": {"weighted_tau": 0.9} for i in range(6)}
    written = rq.evidence(pd.DataFrame(rows), ceilings, "cpu")
    assert set(written["groups"]) == {"all", "image", "text"}  # t5 is dev: in no group
    assert written["groups"]["all"]["tasks"] == ["t0", "t1", "t2", "t3", "t4"]
    best = written["groups"]["all"]["metrics"][0]
    assert best["metric"] == "logme" and best["weighted_tau"][0] == pytest.approx(0.5)
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(written, default=float))
    advice = recommendation("image", {"face", "logme"}, path=path)
    # ahead on each of the 3 image tasks, which are too few to call that significant
    assert advice.metric == "logme" and "over 3 held-out image tasks (budget cpu, noise ceiling +0.90)" in (
        advice.statement) and advice.statement.endswith("not significantly ahead of face")


def test_the_library_default_is_what_the_dev_selection_chose():
    # benchmarks/results/ranking_quality-dev.md, 2026-12-03: neither stage replaced C alone (rule 6 of docs/face.md)
    assert rq.label(rq.library_defaults()) == "C only (face_variance)"
    assert rq.face_scores({"a": {"variance_collapse": 1.0, "class_fairness": 0.0},
                           "b": {"variance_collapse": 2.0, "class_fairness": 5.0}}, rq.library_defaults()) == {
        "a": 0.0, "b": 1.0}
    # F's own options do not tell C-alone configurations apart; they do once F has a weight
    assert rq.label({**rq.C_ALONE, "fairness": "worst", "basis": "between"}) == "C only (face_variance)"
    assert rq.label({**rq.C_ALONE, "fairness_weight": 0.5, "basis": "between"}) == "fairness_weight=0.5, basis=between"

"""Zoo-level normalisation and ranking (``metrics.rank_zoo``)."""

import numpy as np
import pytest

from conftest import make_classes
from facezoo import FaceZooError, metrics


def zoo_scores():
    """Three 'models' of one dataset: the same classes seen with decreasing separation."""
    raw = {}
    for name, separation in [("strong", 4.0), ("medium", 2.0), ("weak", 0.7)]:
        x, y = make_classes(separation=separation, seed=0)
        raw[name] = metrics.score_many(x, y, ["face", "nc1", "ncti", "etran", "hscore"])
    return raw


def test_rank_zoo_follows_each_metrics_direction():
    table = metrics.rank_zoo(zoo_scores())
    assert list(table.columns) == ["metric", "model", "raw", "score", "rank", "tied"]
    for metric in ["nc1", "hscore"]:  # monotone in the class separation
        ranked = table[table.metric == metric].sort_values("rank")
        assert ranked.model.tolist() == ["strong", "medium", "weak"], metric
    for metric in ["face", "ncti", "etran"]:  # ranks follow the zoo score
        ranked = table[table.metric == metric]
        assert ranked["rank"].tolist() == ranked["score"].rank(method="min", ascending=False).tolist(), metric
    nc1 = table[table.metric == "nc1"].set_index("model")
    assert nc1.loc["strong", "raw"] < nc1.loc["weak", "raw"]  # lower NC1 ranks first


def test_face_zoo_score_is_minmax_of_both_terms():
    raw = zoo_scores()
    table = metrics.rank_zoo(raw, ["face"]).set_index("model")
    c = np.array([raw[m]["face:variance_collapse"] for m in raw])
    f = np.array([raw[m]["face:class_fairness"] for m in raw])
    # the default fairness weight is 0: C alone (docs/face.md); the raw value is the single-model one, stored by
    # score_many with its own options
    np.testing.assert_allclose(table.loc[list(raw), "score"], (c - c.min()) / np.ptp(c), rtol=1e-12)
    np.testing.assert_allclose(table.loc[list(raw), "raw"], c, rtol=1e-12)
    weighted = metrics.rank_zoo(raw, ["face"], options={"face": {"fairness_weight": 0.25}}).set_index("model")
    expected = (c - c.min()) / np.ptp(c) + 0.25 * (f - f.min()) / np.ptp(f)
    np.testing.assert_allclose(weighted.loc[list(raw), "score"], expected, rtol=1e-12)

    zs = metrics.rank_zoo(raw, ["face"], options={"face": {"zoo_norm": "zscore", "fairness_weight": 0.5}})
    expected = (c - c.mean()) / c.std() + 0.5 * (f - f.mean()) / f.std()
    np.testing.assert_allclose(zs.set_index("model").loc[list(raw), "score"], expected, rtol=1e-12)


def test_failed_models_rank_last_and_do_not_poison_the_normalisation():
    raw = zoo_scores()
    raw["broken"] = {"face": np.nan, "face:variance_collapse": np.nan, "face:class_fairness": np.nan}
    table = metrics.rank_zoo(raw, ["face", "hscore"])
    face = table[table.metric == "face"]
    assert face.model.tolist()[-1] == "broken" and np.isnan(face["rank"].iloc[-1])
    assert face["score"].iloc[:3].between(0, 2).all()
    assert np.isnan(table[(table.metric == "hscore") & (table.model == "broken")]["score"]).all()


def test_a_term_equal_for_every_model_normalises_to_zero():
    raw = {m: {"face": 1.0, "face:variance_collapse": 2.0, "face:class_fairness": float(i)}
           for i, m in enumerate("abc")}
    table = metrics.rank_zoo(raw, ["face"], options={"face": {"fairness_weight": 0.25}}).set_index("model")
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "score"], [0.0, 0.125, 0.25])  # 0.25 · norm(F)


def test_single_model_zoo_and_ties():
    raw = {"only": metrics.score_many(*make_classes(), ["face", "hscore"])}
    table = metrics.rank_zoo(raw)
    assert (table["rank"] == 1).all()
    tied = metrics.rank_zoo({"a": {"hscore": 1.0}, "b": {"hscore": 1.0}, "c": {"hscore": 0.5}})
    assert tied.set_index("model")["rank"].to_dict() == {"a": 1.0, "b": 1.0, "c": 3.0}


def test_ties_are_counted_and_described_for_each_metric():
    # SFDA's saturation: five models score exactly 0.0 and share rank 1; hscore has a tie below the top
    raw = {m: {"sfda": 0.0, "hscore": h} for m, h in zip("abcde", [3.0, 2.0, 2.0, 1.0, 0.5])}
    raw["f"] = {"sfda": -0.3, "hscore": np.nan}  # failed metric: no rank, ties with nobody
    table = metrics.rank_zoo(raw, ["hscore", "sfda"])
    for metric, rows in table.groupby("metric"):
        naive = [0 if np.isnan(r) else sum(other == r for other in rows["rank"]) for r in rows["rank"]]
        assert rows["tied"].tolist() == naive, metric
    assert table["tied"].dtype.kind == "i"
    assert table.set_index(["metric", "model"]).loc[("sfda", "f"), "tied"] == 1
    lines = ["hscore: 2 models tie at rank 2 (b, c)", "sfda: 5 models tie at rank 1 (a, b, c, d, e)"]
    assert metrics.describe_ties(table) == lines
    assert metrics.describe_ties(table.to_dict("records")) == lines  # what a --json summary carries
    assert metrics.describe_ties(metrics.rank_zoo({"a": {"hscore": 1.0}, "b": {"hscore": 2.0}})) == []


def test_the_printed_ranking_marks_shared_ranks_and_lists_the_ties(capsys):
    from flows.cli import _print_ranking

    raw = {m: {"sfda": 0.0, "hscore": h} for m, h in zip("abcde", [3.0, 2.0, 1.5, 1.0, 0.5])}
    raw["f"] = {"sfda": -0.3, "hscore": 0.1}
    summary = {"dataset": "pets", "job_id": "j", "failures": {}, "status": "completed",
               "ranking": metrics.rank_zoo(raw, ["hscore", "sfda"]).to_dict("records")}
    _print_ranking(summary)
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:1] in "abcdef" and line.strip()}
    assert rows["a"] == ["1", "1="] and rows["e"] == ["5", "1="] and rows["f"] == ["6", "6"]
    assert "sfda: 5 models tie at rank 1 (a, b, c, d, e)" in out and "hscore:" not in out


def test_rank_zoo_errors():
    with pytest.raises(FaceZooError, match="at least one model"):
        metrics.rank_zoo({})
    with pytest.raises(FaceZooError, match="raw terms of 'face'"):
        metrics.rank_zoo({"a": {"face": 1.0}}, ["face"])
    with pytest.raises(FaceZooError, match="no zoo option"):
        metrics.rank_zoo(zoo_scores(), ["face"], options={"face": {"pca_dim": 3}})

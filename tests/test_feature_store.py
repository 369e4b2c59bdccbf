"""The Parquet feature store: round trip, content addressing, atomic writes, DuckDB over the files."""

import json
import os

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from facezoo import FaceZooError, metrics
from storage import features as feature_store
from storage.features import FeatureStore, cache_key


def a_set(n=300, d=24, k=4, seed=0, logits=True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    x = (rng.standard_normal((n, d)) + 2 * np.eye(k, d)[labels]).astype(np.float32)
    return {
        "features": x, "labels": labels, "sample_ids": np.array([f"img/{i:05d}.png" for i in range(n)]),
        "logits": rng.standard_normal((n, 7)).astype(np.float32) if logits else None,
        "class_names": [f"c{i}" for i in range(k)], "metadata": {"model_source": "timm:resnet18", "digest": "ab"},
    }


def test_round_trip_is_exact_and_zero_copy(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(model="m", dataset="fp", split="train")
    data = a_set()
    store.put("resnet18", "cifar10", "train", key, **data)
    got = store.get("resnet18", "cifar10", "train", key)
    np.testing.assert_array_equal(got.features, data["features"])
    np.testing.assert_array_equal(got.logits, data["logits"])
    np.testing.assert_array_equal(got.labels, data["labels"])
    np.testing.assert_array_equal(got.sample_ids, data["sample_ids"])
    assert got.features.dtype == np.float32 and not got.features.flags["OWNDATA"]  # a view of Arrow's buffer
    assert got.class_names == data["class_names"] and got.metadata["model_source"] == "timm:resnet18"
    assert got.path == tmp_path / "model=resnet18" / "dataset=cifar10" / "split=train" / f"{key}.parquet"


def test_file_layout_and_encoding(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(x=1)
    store.put("m", "d", "test", key, **a_set())
    meta = pq.ParquetFile(store.path("m", "d", "test", key)).metadata
    column = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert meta.num_row_groups == 1
    assert column["feature.list.element"].compression == "ZSTD"
    assert "BYTE_STREAM_SPLIT" in column["feature.list.element"].encodings
    feature_type = pq.read_schema(store.path("m", "d", "test", key)).field("feature").type
    assert str(feature_type) == "fixed_size_list<element: float>[24]"
    stored = json.loads(pq.read_schema(store.path("m", "d", "test", key)).metadata[b"facezoo"])
    assert {"cache_key", "class_names", "created_at", "n", "dim"} <= set(stored)


def test_cache_hit_reads_and_miss_returns_none(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(model="m", weights="w1")
    assert store.get("m", "d", "train", key) is None
    store.put("m", "d", "train", key, **a_set())
    assert store.has("m", "d", "train", key)
    assert cache_key(model="m", weights="w2") != key  # new weights: a new key, a miss
    assert store.get("m", "d", "train", cache_key(model="m", weights="w2")) is None
    assert [e["cache_key"] for e in store.entries()] == [key]


def test_stored_statistics_give_the_same_scores_without_a_pass(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(k=1)
    data = a_set(logits=False)
    store.put("m", "d", "train", key, **data)
    got = store.get("m", "d", "train", key)
    assert got.stats_state is not None
    names = ["face", "logme", "hscore", "sfda", "transrate"]
    fresh = metrics.score_many(data["features"], data["labels"], names)
    assert metrics.score_many_from_stats(got.stats(), names) == pytest.approx(fresh, rel=1e-12)


def test_a_crash_mid_write_leaves_no_file_that_looks_finished(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path)
    key = cache_key(k=2)

    def crash(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(feature_store.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put("m", "d", "train", key, **a_set())
    assert store.get("m", "d", "train", key) is None
    folder = store.folder("m", "d", "train")
    assert not [p for p in folder.iterdir() if p.suffix == ".parquet" or p.name.endswith(".tmp")]
    monkeypatch.undo()
    store.put("m", "d", "train", key, **a_set())  # the re-run completes
    assert store.get("m", "d", "train", key).features.shape == (300, 24)


def test_a_killed_process_leaves_only_a_hidden_temporary(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(k=3)
    folder = store.folder("m", "d", "train")
    folder.mkdir(parents=True)
    (folder / f".{key}.parquet.abc123.tmp").write_bytes(b"PAR1 truncated")  # what SIGKILL mid-write leaves
    assert store.get("m", "d", "train", key) is None
    assert list(store.entries()) == []


def test_a_corrupt_file_is_never_used_it_is_moved_aside_as_a_cache_miss(tmp_path, caplog):
    store = FeatureStore(tmp_path)
    key = cache_key(k=4)
    store.put("m", "d", "train", key, **a_set())
    path = store.path("m", "d", "train", key)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])  # a disk fault, a copy cut short
    with pytest.raises(FaceZooError, match="unreadable feature file"):
        store.read(path)
    assert store.get("m", "d", "train", key) is None  # the caller extracts again
    assert "unreadable feature file" in caplog.text
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    assert path.with_suffix(".stats.npz").with_name(path.stem + ".stats.npz.corrupt").exists()
    store.put("m", "d", "train", key, **a_set())
    assert store.get("m", "d", "train", key).features.shape == (300, 24)


def test_unreadable_statistics_are_recomputed_not_fatal(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(k=7)
    store.put("m", "d", "train", key, **a_set())
    store.path("m", "d", "train", key).with_suffix(".stats.npz").write_bytes(b"PK\x03\x04 cut")
    found = store.get("m", "d", "train", key)
    assert found.stats_state is None and found.features.shape == (300, 24)


def test_temporary_files_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    store = FeatureStore(tmp_path)
    folder = store.folder("m", "d", "train")
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".{'a' * 32}.parquet.{int(dead.stdout)}.x1y2.tmp"
    live = folder / f".{'b' * 32}.parquet.{os.getpid()}.z3w4.tmp"  # another write of this process, in flight
    for tmp in (stale, live):
        tmp.write_bytes(b"PAR1 half")
    store.put("m", "d", "train", cache_key(k=8), **a_set())
    assert not stale.exists() and live.exists()


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def no_space(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_store.pq, "write_table", no_space)
    with pytest.raises(FaceZooError, match=r"no space left on the device writing .*MiB free") as caught:
        FeatureStore(tmp_path).put("m", "d", "train", cache_key(k=9), **a_set())
    assert "\n" not in str(caught.value)
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".parquet", ".tmp")]


@pytest.mark.parametrize("bad", ["../etc", "a/b", "it's", "x; DROP TABLE scores", "", ".."])
def test_names_never_reach_a_path(tmp_path, bad):
    with pytest.raises(FaceZooError, match="not allowed"):
        FeatureStore(tmp_path).put(bad, "d", "train", cache_key(k=5), **a_set())


def test_duckdb_queries_the_stored_features(tmp_path):
    store = FeatureStore(tmp_path)
    store.put("m1", "d", "train", cache_key(m=1), **a_set(seed=1))
    store.put("m2", "d", "train", cache_key(m=2), **a_set(seed=2, d=24))
    con = duckdb.connect()
    rows = con.execute(
        "SELECT model, count(*), avg(list_sum(feature::FLOAT[24]::FLOAT[])) "
        "FROM read_parquet(?, hive_partitioning=true) WHERE split = 'train' GROUP BY model ORDER BY model",
        [str(tmp_path / "*" / "*" / "*" / "*.parquet")],
    ).fetchall()
    assert [r[0] for r in rows] == ["m1", "m2"] and all(r[1] == 300 for r in rows)
    m1 = store.get("m1", "d", "train", cache_key(m=1)).features
    assert rows[0][2] == pytest.approx(float(m1.sum(1).mean()), rel=1e-5)


def test_nan_features_are_refused(tmp_path):
    data = a_set()
    data["features"][3, 2] = np.nan
    with pytest.raises(FaceZooError, match=r"NaN or inf features \(first at sample img/00003.png, row 3, column 2\)"):
        FeatureStore(tmp_path).put("m", "d", "train", cache_key(k=6), **data)
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_class_with_a_single_sample_is_stored_and_left_out_of_scoring(tmp_path):
    # a long tail (Reuters-R52's train split has a class with one document) must not stop a ranking: the class has no
    # within-class spread, so scoring drops it, names it, and scores the rest exactly as if it had never been there
    import tasks.score
    from tasks.extract import FeatureRef

    store, key = FeatureStore(tmp_path), cache_key(k="tail")
    data = a_set(k=4)
    data["labels"][np.flatnonzero(data["labels"] == 2)[1:]] = 0  # class c2 keeps one sample
    data["class_names"] = ["c0", "c1", "c2", "c3"]
    store.put("m", "d", "train", key, **data)
    got = store.get("m", "d", "train", key)
    assert got.stats_state is None and len(got.features) == len(data["labels"])  # every sample is kept on disk
    with pytest.raises(FaceZooError, match="single sample"):
        got.stats()
    kept, single = got.scorable()
    assert single == ["c2"] and 2 not in kept.labels and len(kept.labels) == len(data["labels"]) - 1
    assert len(kept.logits) == len(kept.features) == len(kept.sample_ids) == len(kept.labels)
    ref = FeatureRef(model="m", source="test", digest="0", modality="image", dim=24, num_logits=7, preprocessing={},
                     dataset="d", split="train", cache_key=key, backend="eager", path=str(got.path), cache_hit=True,
                     n=len(data["labels"]), extraction_seconds=0.0)
    scored = tasks.score.score_features.fn(ref, ["nc1", "logme", "leep"], {})
    keep = data["labels"] != 2
    expected = metrics.score_many(data["features"][keep], data["labels"][keep], ["nc1", "logme", "leep"],
                                  logits=data["logits"][keep])
    assert scored.errors == {} and scored.unscored_classes == ["c2"] and scored.n_classes == 3
    assert {k: scored.values[k] for k in expected} == pytest.approx(expected, rel=1e-6)
    full = a_set()
    store.put("m2", "d", "train", key, **full)
    whole = store.get("m2", "d", "train", key)
    assert whole.scorable()[0] is whole and whole.scorable()[1] == []  # nothing to drop: the set, statistics and all

"""Analytic cases and invariances of every metric, and the errors bad input gets."""

import numpy as np
import pytest

from conftest import make_classes
from facezoo import FaceZooError, metrics
from facezoo.metrics.face import NC1_MAX, NC1_MIN_FOR_LOG

FEATURE_METRICS = [m for m in metrics.available() if not metrics.info(m).needs_logits]
ALL = metrics.available()


def logits_needed(name, labels, seed=1):
    if not metrics.info(name).needs_logits:
        return {}
    rng = np.random.default_rng(seed)
    return {"logits": rng.standard_normal((len(labels), 5)) + 3 * np.eye(5)[labels % 5]}


def test_registry_lists_every_required_metric_with_its_facts():
    required = {"face", "face_variance", "face_fairness", "nc1", "logme", "leep", "nleep", "nce", "hscore",
                "hscore_shrinkage", "gbc", "transrate", "sfda", "ncti", "etran", "knn", "linear_probe"}
    assert required <= set(metrics.available())
    assert metrics.available() == sorted(metrics.available())
    for name in metrics.available():
        info = metrics.info(name)
        assert info.paper and info.higher_is_better == (name != "nc1")
    assert {m for m in ALL if metrics.info(m).needs_logits} == {"leep", "nce"}
    assert {m for m in ALL if metrics.info(m).zoo_normalised} == {"face", "ncti", "etran"}
    assert metrics.info("face").options["pca_dim"] == 64 and metrics.info("face").options["zoo_norm"] == "minmax"


# ---------------------------------------------------------------------------------------------------- analytic cases
def test_perfectly_collapsed_features_give_zero_nc1_and_the_best_c():
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, 10)) * 3
    y = np.repeat(np.arange(4), 5)
    x = means[y]  # zero within-class spread
    terms = metrics.face_terms(x, y)
    assert 0.0 <= terms["nc1"] < 1e-20  # zero up to the rounding of the class means
    assert terms["variance_collapse"] == pytest.approx(-np.log(NC1_MIN_FOR_LOG))
    assert terms["class_fairness"] == pytest.approx(1.0)  # all classes separated: perfectly fair
    values = metrics.score_many(x, y, [m for m in FEATURE_METRICS if m != "nleep"])
    assert all(np.isfinite(v) for v in values.values()), values


def test_identical_class_distributions_give_the_worst_scores(logits_for):
    rng = np.random.default_rng(0)
    cloud = rng.standard_normal((30, 8))
    x = np.vstack([cloud, cloud, cloud])  # every class is the same point cloud
    y = np.repeat([0, 1, 2], 30)
    logits = np.vstack([rng.standard_normal((30, 5))] * 3)  # and the same source predictions
    worst = metrics.score_many(x, y, logits=logits)
    assert worst["nc1"] == NC1_MAX
    assert worst["face_variance"] == pytest.approx(np.log(NC1_MIN_FOR_LOG))
    assert worst["hscore"] == pytest.approx(0.0, abs=1e-12)
    assert worst["hscore_shrinkage"] == pytest.approx(0.0, abs=1e-12)
    assert worst["gbc"] == pytest.approx(-3 * 2)  # every coefficient is 1
    assert worst["transrate"] == pytest.approx(0.0, abs=1e-9)  # its minimum: R(Z) ≥ Σ π_k R(Z_k)
    assert worst["nce"] == pytest.approx(-np.log(3))  # −H(Y)
    assert worst["leep"] == pytest.approx(np.log(1 / 3))  # P̂(y | z) = π_y
    separable_x, separable_y = make_classes(n_per_class=(30, 30, 30), dim=8, separation=4.0)
    best = metrics.score_many(separable_x, separable_y, logits=logits_for(separable_y))
    for name in ALL:
        if name == "face_fairness":
            continue  # F measures balance: identical classes overlap equally, which is perfectly "fair"
        better = best[name] < worst[name] if name == "nc1" else best[name] > worst[name]
        assert better, (name, best[name], worst[name])


@pytest.mark.parametrize("name", [m for m in ALL if m != "face_fairness"])  # F measures balance, not separation
def test_separable_features_score_above_random_ones(name):
    separable_x, y = make_classes(n_per_class=(40, 40, 40, 40), dim=10, separation=4.0)
    rng = np.random.default_rng(3)
    random_x = rng.standard_normal(separable_x.shape)
    good = metrics.score(name, separable_x, y, **logits_needed(name, y))
    # logits independent of the labels for the random case
    bad = metrics.score(name, random_x, y, **logits_needed(name, rng.permutation(y), seed=5))
    assert (good < bad) if name == "nc1" else (good > bad), (good, bad)


def test_two_classes_are_always_fair():
    x, y = make_classes(n_per_class=(30, 45), separation=1.0)
    for overlap in ("sum", "max", "pooled"):
        assert metrics.score("face_fairness", x, y, overlap=overlap) == pytest.approx(1.0)


# FaCe's candidates pre-registered on 2026-12-03 (docs/face.md): each keeps the invariances of the defaults
FACE_CANDIDATES = [{"fairness": "worst"}, {"fairness": "power_mean", "power": -2.0}, {"fairness": "balance_separation"},
                   {"fairness": "collapse_dispersion"}, {"c_shrinkage": 0.1}, {"between_energy": 0.75},
                   {"basis": "between"}, {"basis": "between", "fairness": "worst"}]
MAGNITUDE_AWARE = ("worst", "power_mean", "balance_separation")


@pytest.mark.parametrize("fairness", MAGNITUDE_AWARE)
def test_magnitude_aware_fairness_tells_separated_classes_from_identical_ones(fairness):
    rng = np.random.default_rng(0)
    cloud = rng.standard_normal((30, 8))
    identical_x, identical_y = np.vstack([cloud, cloud, cloud]), np.repeat([0, 1, 2], 30)
    separable_x, separable_y = make_classes(n_per_class=(30, 30, 30), dim=8, separation=4.0)
    identical = metrics.score("face_fairness", identical_x, identical_y, fairness=fairness)
    assert identical == pytest.approx(0.0, abs=1e-9)  # every class overlaps the rest completely: no separability
    assert metrics.score("face_fairness", separable_x, separable_y, fairness=fairness) > identical + 1.0
    # the literal reconstruction calls the identical classes perfectly fair: the failure these candidates address
    assert metrics.score("face_fairness", identical_x, identical_y) == pytest.approx(1.0)


@pytest.mark.parametrize("fairness", MAGNITUDE_AWARE)
def test_magnitude_aware_fairness_ranks_binary_tasks_too(fairness):
    near_x, y = make_classes(n_per_class=(40, 50), separation=0.5)
    far_x, far_y = make_classes(n_per_class=(40, 50), separation=3.0)
    assert metrics.score("face_fairness", far_x, far_y, fairness=fairness) > metrics.score(
        "face_fairness", near_x, y, fairness=fairness)


def test_f_in_the_between_class_basis_reads_no_gram(monkeypatch):
    """The point of ``basis="between"``: F from the projection C already made, so neither ``score`` nor
    ``score_many`` computes the Gram (the default's principal directions need it)."""
    from facezoo.metrics.stats import FeatureStats

    x, y = make_classes()
    made = []
    gram = FeatureStats.gram.fget
    monkeypatch.setattr(FeatureStats, "gram", property(lambda self: made.append(1) or gram(self)))
    first_pass = FeatureStats._first_pass

    def spied(self, with_gram):
        if with_gram:
            made.append("first pass")
        first_pass(self, with_gram)

    monkeypatch.setattr(FeatureStats, "_first_pass", spied)
    metrics.score("face", x, y)  # the default basis
    metrics.score("face", x, y, basis="between")
    metrics.score_many(x, y, ["face", "nc1"], options={"face": {"basis": "between", "fairness": "worst"}})
    assert made == []
    metrics.score("face", x, y, basis="pca")
    assert made  # the literal reconstruction's PCA does read it


def test_f_in_the_between_class_basis_is_complete_overlap_when_class_means_coincide():
    rng = np.random.default_rng(0)
    cloud = rng.standard_normal((30, 8))
    x, y = np.vstack([cloud, cloud, cloud]), np.repeat([0, 1, 2], 30)  # identical classes: no between direction
    assert metrics.score("face_fairness", x, y, basis="between") == pytest.approx(1.0)  # entropy: equal overlaps
    assert metrics.score("face_fairness", x, y, basis="between", fairness="worst") == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("name", ALL)
def test_scores_do_not_depend_on_sample_order_or_label_names(name):
    x, y = make_classes()
    extra = logits_needed(name, y)
    base = metrics.score(name, x, y, **extra)
    perm = np.random.default_rng(7).permutation(len(y))
    permuted_extra = {k: v[perm] for k, v in extra.items()}
    assert metrics.score(name, x[perm], y[perm], **permuted_extra) == pytest.approx(base, rel=1e-9, abs=1e-12)
    names = np.array(["zebra", "ant", "moth", "bee"])[y]  # strings, sorted differently from the ints
    assert metrics.score(name, x, names, **extra) == pytest.approx(base, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["nc1", "face_variance", "face_fairness", "face", "hscore", "knn"])
@pytest.mark.parametrize("scale", [1e-3, 7.0, 1e4])
def test_global_rescaling_changes_nothing(name, scale):
    x, y = make_classes()
    assert metrics.score(name, x * scale, y) == pytest.approx(metrics.score(name, x, y), rel=1e-8)


@pytest.mark.parametrize("options", FACE_CANDIDATES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_face_candidates_do_not_depend_on_scale_sample_order_or_class_names(options):
    x, y = make_classes()
    base = metrics.face_terms(x, y, **options)
    perm = np.random.default_rng(7).permutation(len(y))
    variants = [metrics.face_terms(x * scale, y, **options) for scale in (1e-3, 7.0, 1e4)]
    variants += [metrics.face_terms(x[perm], y[perm], **options),
                 metrics.face_terms(x, np.array(["zebra", "ant", "moth", "bee"])[y], **options)]
    for other in variants:
        for term in ("variance_collapse", "class_fairness"):
            assert other[term] == pytest.approx(base[term], rel=1e-8, abs=1e-12), term


@pytest.mark.parametrize("name", [m for m in FEATURE_METRICS if metrics.info(m).shift_invariant])
def test_a_large_common_offset_is_not_cancellation(name):
    x, y = make_classes(dim=8)
    shifted = x + 1000.0
    assert metrics.score(name, shifted, y) == pytest.approx(metrics.score(name, x, y), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("offset", [0.0, 1.0, 1e2, 1e3, 1e4])
@pytest.mark.parametrize("per_dimension", [False, True], ids=["constant", "per-dimension"])
def test_float32_features_under_a_common_offset_agree_with_their_float64_value(offset, per_dimension, logits_for):
    # pooled post-ReLU features and unnormalised embeddings have means far from zero: up to 1e4 × the spread, float32
    # statistics must give every metric (and every zoo term) its float64 value on exactly the same array
    x, y = make_classes(n_per_class=(120,) * 5, dim=32, separation=1.0)
    direction = np.random.default_rng(5).uniform(-1, 1, 32) if per_dimension else 1.0
    single = (x + offset * x.std(0) * direction).astype(np.float32)
    logits = logits_for(y)
    got = metrics.score_many(single, y, ALL, logits=logits)
    want = metrics.score_many(single.astype(np.float64), y, ALL, logits=logits)
    assert set(got) == set(want)
    off = {k: (got[k], want[k]) for k in want if not got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-12)}
    assert not off, off


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_float32_features_with_fewer_samples_than_dimensions_agree_with_their_float64_value(offset, logits_for):
    # N < D: a float32 D×D Gram fills the D − N null directions with rounding that TransRate's 1/ε multiplied
    # (5e-4 relative at offset 1e4); the N×N sample Gram has none of them
    x, y = make_classes(n_per_class=(25,) * 4, dim=200, separation=1.0)
    single = (x + offset * x.std(0)).astype(np.float32)
    logits = logits_for(y)
    got = metrics.score_many(single, y, ALL, logits=logits)
    want = metrics.score_many(single.astype(np.float64), y, ALL, logits=logits)
    off = {k: (got[k], want[k]) for k in want if not got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-12)}
    assert not off, off


@pytest.mark.parametrize("name", FEATURE_METRICS)
def test_fewer_samples_than_dimensions_works(name):
    x, y = make_classes(n_per_class=(6, 5, 7), dim=50)
    assert np.isfinite(metrics.score(name, x, y))


def test_float32_and_chunked_passes_agree_with_float64():
    x, y = make_classes(n_per_class=(200, 150, 250), dim=16)
    names = [m for m in FEATURE_METRICS if m not in ("nleep", "linear_probe", "knn")]
    exact = metrics.score_many(x, y, names)
    single = metrics.score_many(x.astype(np.float32), y, names)
    for name in names:
        assert single[name] == pytest.approx(exact[name], rel=1e-4, abs=1e-6), name


def test_score_and_score_many_agree(logits_for):
    x, y = make_classes()
    logits = logits_for(y)
    many = metrics.score_many(x, y, logits=logits)
    assert set(ALL) <= set(many)
    for name in ALL:
        assert many[name] == pytest.approx(metrics.score(name, x, y, logits=logits), rel=1e-12, abs=1e-15), name


def test_score_many_default_skips_metrics_whose_inputs_are_missing():
    x, y = make_classes()
    computed = metrics.score_many(x, y)
    assert not {"leep", "nce"} & set(computed)
    assert set(FEATURE_METRICS) <= set(computed)


@pytest.mark.parametrize("offset", [0.0, 1e4])  # 1e4: the projections take the shifted path
def test_torch_tensors_give_the_numpy_values(offset):
    torch = pytest.importorskip("torch")
    x, y = make_classes(dim=10, offset=offset)
    want = metrics.score_many(x, y, FEATURE_METRICS)  # nleep included: its eigenvectors are a reversed NumPy view
    got = metrics.score_many(torch.from_numpy(x), torch.from_numpy(y), FEATURE_METRICS)
    for name in FEATURE_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name


# ---------------------------------------------------------------------------------------------------- bad input
def test_callers_arrays_are_never_modified(logits_for):
    x, y = make_classes()
    logits = logits_for(y)
    copies = (x.copy(), y.copy(), logits.copy())
    metrics.score_many(x, y, logits=logits)
    for before, after in zip(copies, (x, y, logits)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "features, labels, message",
    [
        (np.ones(5), np.arange(5), "features must be 2-D"),
        (np.zeros((0, 3)), np.zeros(0), "features are empty"),
        (np.ones((4, 3)), np.arange(3), "labels has 3 rows, features has 4"),
        (np.random.default_rng(0).random((6, 3)), np.zeros(6), "need at least 2 classes"),
        (np.random.default_rng(0).random((5, 3)), np.array([0, 0, 1, 1, 2]), "class 2 has a single sample"),
        (np.random.default_rng(0).random((5, 3)), np.array(list("aabbc")), "class 'c' has a single sample"),
        (np.ones((6, 3)), np.array([0, 0, 0, 1, 1, 1]), "features are constant"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]), np.array([0, 0, 1, 1]), "real numbers"),
        (np.random.default_rng(0).random((4, 3)), np.array([0.0, np.nan, 1.0, 1.0]), "labels contain NaN"),
    ],
)
def test_bad_input_gets_one_clear_error(features, labels, message):
    with pytest.raises(FaceZooError, match=message):
        metrics.score("face", features, labels)


def test_nan_and_inf_are_located():
    x, y = make_classes()
    x = x.copy()
    x[17, 3] = np.nan
    with pytest.raises(FaceZooError, match=r"NaN or inf \(row 17, column 3\)"):
        metrics.score("nc1", x, y)
    x[17, 3] = 0.0
    x[5, 0] = -np.inf
    with pytest.raises(FaceZooError, match=r"row 5, column 0"):
        metrics.score_many(x, y)


def test_logits_errors():
    x, y = make_classes()
    with pytest.raises(FaceZooError, match="needs the source model's logits"):
        metrics.score("leep", x, y)
    with pytest.raises(FaceZooError, match="logits has 3 rows"):
        metrics.score("leep", x, y, logits=np.ones((3, 4)))
    with pytest.raises(FaceZooError, match="logits contain NaN"):
        metrics.score("nce", x, y, logits=np.full((len(y), 4), np.nan))


def test_unknown_names_and_options_are_rejected_with_the_valid_ones():
    x, y = make_classes()
    with pytest.raises(FaceZooError, match="unknown metric 'fcae'.*face"):
        metrics.score("fcae", x, y)
    with pytest.raises(FaceZooError, match="no option 'pca_dims'.*pca_dim"):
        metrics.score("face", x, y, pca_dims=3)
    with pytest.raises(FaceZooError, match="fairness must be one of"):
        metrics.score("face", x, y, fairness="gini")
    with pytest.raises(FaceZooError, match="var_floor must be > 0"):
        metrics.score("face_fairness", x, y, var_floor=0.0)
    with pytest.raises(FaceZooError, match="power must be a finite number < 0"):
        metrics.score("face", x, y, fairness="power_mean", power=0.5)
    with pytest.raises(FaceZooError, match="c_shrinkage must be a finite number >= 0"):
        metrics.score("face_variance", x, y, c_shrinkage=-0.1)
    for energy in (0.0, 1.5):
        with pytest.raises(FaceZooError, match="between_energy must be in"):
            metrics.score("face", x, y, between_energy=energy)
    with pytest.raises(FaceZooError, match="c_shrinkage must be a number, got '0.1'"):
        metrics.score("face", x, y, c_shrinkage="0.1")
    with pytest.raises(FaceZooError, match="pca_dim must be a positive integer"):
        metrics.score("gbc", x, y, pca_dim=0)
    with pytest.raises(FaceZooError, match="options given for metrics not requested: gbc"):
        metrics.score_many(x, y, ["face"], options={"gbc": {"pca_dim": 3}})


def test_lda_metrics_survive_float32_features_with_fewer_samples_than_dimensions():
    # real penultimate features with N < D: the float32 Gram's rounding exceeds SFDA's λ = 1e-10 floor
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 30)
    x = (rng.standard_normal((10, 600))[y] * 3 + rng.standard_normal((300, 600)) @ rng.standard_normal((600, 600)))
    x = np.maximum(x, 0).astype(np.float32) * 40  # ReLU-like, large scale: σ_max(S_W) ≫ 1, λ at its floor
    values = metrics.score_many(x, y, ["sfda", "etran", "ncti", "hscore", "hscore_shrinkage", "logme"])
    assert all(np.isfinite(v) for v in values.values()), values


def test_hscore_and_its_shrinkage_share_one_eigen_decomposition(monkeypatch):
    """Features whose covariance is singular to float32 precision (a decaying spectrum plus faint isotropic noise):
    both H-scores take the pseudo-inverse, from Σ_T's one shared decomposition (each used to decompose its own)."""
    gen = np.random.default_rng(0)
    labels = gen.integers(0, 20, 3000)
    means = gen.standard_normal((20, 64)) @ gen.standard_normal((64, 512)) / 8
    mixing = gen.standard_normal((256, 512)) / np.sqrt(1.0 + np.arange(256))[:, None]
    x = (means[labels] + gen.standard_normal((3000, 256)) @ mixing + 0.1 * gen.standard_normal((3000, 512)))
    x = x.astype(np.float32)
    calls = []
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda *a, **k: calls.append(1) or eigh(*a, **k))
    shared = metrics.score_many(x, labels, ["hscore", "hscore_shrinkage"])
    assert len(calls) == 1
    assert shared == {m: pytest.approx(metrics.score(m, x, labels), rel=1e-12) for m in shared}

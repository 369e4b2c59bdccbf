"""Every metric against a naive textbook implementation written here (float64, small sizes, D×D pseudo-inverses,
explicit loops): equal to 1e-8 relative where the maths is exact.

The references take the direct route each paper describes (full SVDs, D×D matrices, pairwise loops, explicit
ConfMix copies, scikit-learn's PCA/LDA/GMM where the authors used them), so they share no code with the library's
one-pass statistics.
"""

import numpy as np
import pytest
import scipy.linalg
from scipy.special import logsumexp, softmax
from sklearn.covariance import ledoit_wolf
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import make_classes
from facezoo import metrics
from facezoo.metrics import FeatureStats
from facezoo.metrics._sampling import stratified_folds

RTOL = 1e-8


def class_split(x, y):
    ks = np.unique(y)
    return ks, [x[y == k] for k in ks]


# ---------------------------------------------------------------------------------------------------- FaCe, NC1
def naive_nc1(x, y, weighting="class", global_mean="sample", c_shrinkage=0.0, between_energy=1.0):
    ks, xs = class_split(x, y)
    mus = np.array([c.mean(0) for c in xs])
    mu_g = x.mean(0) if global_mean == "sample" else mus.mean(0)
    sigma_b = sum(np.outer(m - mu_g, m - mu_g) for m in mus) / len(ks)
    if weighting == "class":
        sigma_w = sum(np.cov(c.T, bias=True) for c in xs) / len(ks)
    else:
        sigma_w = sum((c - c.mean(0)).T @ (c - c.mean(0)) for c in xs) / len(x)
    sigma_w = sigma_w + c_shrinkage * np.trace(np.cov(x.T, bias=True)) / x.shape[1] * np.eye(x.shape[1])
    if between_energy == 1.0:
        return np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / len(ks)
    lam, u = np.linalg.eigh(sigma_b)
    lam, u = lam[::-1], u[:, ::-1]
    lam = lam[lam > 1e-10 * lam[0]]
    m = next(j + 1 for j in range(len(lam)) if lam[: j + 1].sum() >= between_energy * lam.sum())
    pinv = sum(np.outer(u[:, j], u[:, j]) / lam[j] for j in range(m))  # Σ_B⁺ on its top-m directions
    return np.trace(sigma_w @ pinv) / len(ks)


def naive_collapse_dispersion(x, y):
    """−std_k log NC1_k, NC1_k = (1/K) Tr(Σ_k Σ_B⁺) about the sample mean."""
    ks, xs = class_split(x, y)
    mus = np.array([c.mean(0) for c in xs])
    sigma_b = sum(np.outer(m - x.mean(0), m - x.mean(0)) for m in mus) / len(ks)
    nc1_k = np.array([np.trace(np.cov(c.T, bias=True) @ np.linalg.pinv(sigma_b)) / len(ks) for c in xs])
    return -np.log(np.clip(nc1_k, 1e-12, 1e12)).std()


def naive_pca(x, d):
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return vt[:d].T, s[:d] ** 2 / len(x)


def bc_pair(m1, c1, m2, c2):
    """Textbook Bhattacharyya coefficient between N(m1, C1) and N(m2, C2) (full matrices)."""
    avg = (c1 + c2) / 2
    dm = m1 - m2
    db = dm @ np.linalg.inv(avg) @ dm / 8 + 0.5 * np.log(
        np.linalg.det(avg) / np.sqrt(np.linalg.det(c1) * np.linalg.det(c2))
    )
    return np.exp(-db)


def naive_gaussian(z, cov, floor, shrinkage):
    m = z.mean(0)
    c = np.cov(z.T, bias=True)
    if cov == "full":
        c = (1 - shrinkage) * c + shrinkage * np.diag(np.diag(c))
        c[np.diag_indices_from(c)] = np.maximum(np.diag(c), floor)
    elif cov == "diag":
        c = np.diag(np.maximum(np.diag(c), floor))
    else:
        c = np.eye(len(m)) * np.maximum(np.diag(c), floor).mean()
    return m, c


def naive_face(x, y, pca_dim=64, cov="diag", shrinkage=0.1, var_floor=1e-4, overlap="sum", fairness="entropy",
               t=1.0, power=-1.0, weighting="class", global_mean="sample", c_form="neg_log", c_shrinkage=0.0,
               between_energy=1.0, basis="between"):
    nc1 = naive_nc1(x, y, weighting, global_mean, c_shrinkage, between_energy)
    c_term = -np.log(max(nc1, 1e-12)) if c_form == "neg_log" else -nc1
    if basis == "pca":
        d = min(x.shape[1], len(x) - 1) if pca_dim is None else min(pca_dim, x.shape[1], len(x) - 1)
        w, variances = naive_pca(x, d)
    else:  # the directions of the centred class means, each with the total variance along it
        ks = np.unique(y)
        _, sv, vt = np.linalg.svd(np.array([x[y == k].mean(0) for k in ks]) - x.mean(0), full_matrices=False)
        w = vt[sv > 1e-10 * sv[0]].T
        variances = ((x - x.mean(0)) @ w).var(0)
    z = (x - x.mean(0)) @ w
    floor = var_floor * variances.mean()
    ks, zs = class_split(z, y)
    gauss = [naive_gaussian(c, cov, floor, shrinkage) for c in zs]
    k = len(ks)
    if overlap == "pooled":
        o = np.array([bc_pair(*gauss[i], *naive_gaussian(z[y != ks[i]], cov, floor, shrinkage)) for i in range(k)])
    else:
        bc = np.array([[bc_pair(*gauss[i], *gauss[j]) if i != j else 0.0 for j in range(k)] for i in range(k)])
        o = bc.sum(1) if overlap == "sum" else bc.max(1)
    p = (o + 1e-12) / (o + 1e-12).sum()
    balance = -(p * np.log(p)).sum() / np.log(k)
    coefficient = o / (k - 1) if overlap == "sum" else o  # the overlap with the rest as one coefficient in [0, 1]
    s = np.array([-np.log((1 - 1e-12) * min(c, 1.0) + 1e-12) for c in coefficient])  # separability of each class
    if fairness == "entropy":
        f_term = balance
    elif fairness == "softmax_entropy":
        p = softmax(-o / t)
        f_term = -(p * np.log(p)).sum() / np.log(k)
    elif fairness == "neg_cv":
        f_term = -(o + 1e-12).std() / (o + 1e-12).mean()
    elif fairness == "worst":
        f_term = min(s)
    elif fairness == "power_mean":
        f_term = np.mean([v**power for v in s]) ** (1 / power)
    elif fairness == "balance_separation":
        f_term = balance * s.mean()
    else:
        f_term = naive_collapse_dispersion(x, y)
    return {"nc1": nc1, "variance_collapse": c_term, "class_fairness": f_term}


# F in the Gram's principal directions (the literal reconstruction, basis="pca"), then in the between-class basis
# (the default since the selection of 2026-12-03, docs/face.md)
_PCA_OPTIONS = [
    {},
    {"cov": "full"},
    {"cov": "spherical"},
    {"overlap": "max"},
    {"overlap": "pooled"},
    {"overlap": "pooled", "cov": "full"},
    {"fairness": "softmax_entropy", "t": 0.5},
    {"fairness": "neg_cv"},
    {"pca_dim": 5},
    {"pca_dim": None},
    # the candidates pre-registered on 2026-12-03 (docs/face.md)
    {"fairness": "worst"},
    {"fairness": "worst", "overlap": "pooled"},
    {"fairness": "power_mean"},
    {"fairness": "power_mean", "power": -3.0, "overlap": "max"},
    {"fairness": "balance_separation"},
    {"fairness": "balance_separation", "cov": "full"},
]
FACE_OPTIONS = [{"basis": "pca", **o} for o in _PCA_OPTIONS] + [
    {},
    {"weighting": "sample", "global_mean": "class"},
    {"c_form": "neg"},
    {"fairness": "collapse_dispersion"},
    {"c_shrinkage": 0.1},
    {"between_energy": 0.75},  # keeps 2 of the 3 between directions here
    {"between_energy": 0.5, "weighting": "sample", "c_shrinkage": 1.0},
    {"fairness": "worst"},
    {"cov": "spherical", "fairness": "power_mean"},
    {"cov": "full", "overlap": "pooled"},
    {"fairness": "balance_separation", "overlap": "max"},
]


@pytest.mark.parametrize("options", FACE_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_face_terms_match_naive(options):
    x, y = make_classes(dim=12, separation=1.5)
    got = metrics.face_terms(x, y, **options)
    want = naive_face(x, y, **options)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=RTOL), key
    c_options = {k: v for k, v in options.items() if k in metrics.info("face_variance").options}
    assert metrics.score("face_variance", x, y, **c_options) == pytest.approx(want["variance_collapse"], rel=RTOL)
    assert metrics.score("face", x, y, **options) == pytest.approx(want["variance_collapse"], rel=RTOL)  # C alone
    assert metrics.score("face", x, y, fairness_weight=0.25, **options) == pytest.approx(  # C + fairness_weight · F
        want["variance_collapse"] + 0.25 * want["class_fairness"], rel=RTOL)
    assert metrics.score("face", x, y, fairness_weight=1.0, **options) == pytest.approx(
        want["variance_collapse"] + want["class_fairness"], rel=RTOL)


def test_nc1_matches_naive_with_n_below_d():
    x, y = make_classes(n_per_class=(6, 5, 7), dim=40)
    assert metrics.score("nc1", x, y) == pytest.approx(naive_nc1(x, y), rel=RTOL)


def test_face_pca_on_a_wide_feature_set_uses_the_partial_eigensolver():
    # D = 300 > 4 · 64: the partial eigen-decomposition path; its basis must match a full SVD's
    x, y = make_classes(n_per_class=(80, 90, 70), dim=300, separation=1.0)
    got = metrics.score("face_fairness", x, y, basis="pca")
    assert got == pytest.approx(naive_face(x, y, basis="pca")["class_fairness"], rel=1e-7)


def _covariance(spectrum, seed=0):
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((len(spectrum), len(spectrum))))[0]
    return (u * spectrum) @ u.T


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-8)])
@pytest.mark.parametrize("spectrum", ["decaying", "rank 90 of 200", "near-degenerate pairs"])
def test_subspace_iteration_finds_the_top_eigenpairs_of_lapack(dtype, tol, spectrum):
    from facezoo.metrics._eigen import top_eigh

    values = 100.0 / (1.0 + np.arange(200))
    if spectrum == "rank 90 of 200":
        values[90:] = 0.0
    elif spectrum == "near-degenerate pairs":
        values[1::2] = values[::2] * (1 - 1e-3)  # 0.1 % gaps: the eigenvectors of each pair are barely determined
    cov = _covariance(values)
    want_w, want_v = np.linalg.eigh(cov)
    want_w, want_v = want_w[::-1][:30], want_v[:, ::-1][:, :30]
    w, v = top_eigh(cov, 30, dtype)
    assert w == pytest.approx(want_w, rel=tol)
    assert np.abs((v * want_v).sum(0)) == pytest.approx(1.0, abs=tol)  # the same directions, up to sign
    assert np.abs(v.T @ v - np.eye(30)).max() < 1e-12


def test_subspace_iteration_falls_back_to_lapack_when_it_does_not_converge(monkeypatch):
    from facezoo.metrics import _eigen

    monkeypatch.setattr(_eigen, "_MAX_ITERATIONS", 1)
    cov = _covariance(np.linspace(2.0, 1.0, 120))  # flat: one iteration is far from converged
    w, v = _eigen.top_eigh(cov, 10)
    want_w, want_v = np.linalg.eigh(cov)
    assert w == pytest.approx(want_w[::-1][:10], rel=1e-12)
    assert np.abs((v * want_v[:, ::-1][:, :10]).sum(0)) == pytest.approx(1.0, abs=1e-10)


# ---------------------------------------------------------------------------------------------------- H-scores
def class_mean_matrix(x, y):
    out = np.empty_like(x)
    for k in np.unique(y):
        out[y == k] = x[y == k].mean(0)
    return out


def naive_hscore(x, y):
    cov_f = np.cov(x.T, bias=True)
    cov_g = np.cov(class_mean_matrix(x, y).T, bias=True)
    return np.trace(np.linalg.pinv(cov_f) @ cov_g)


def naive_hscore_shrinkage(x, y):
    shrunk, alpha = ledoit_wolf(x)  # scikit-learn's estimator: Σ_α and α
    cov_g = np.cov(class_mean_matrix(x, y).T, bias=True)
    return (1 - alpha) * np.trace(np.linalg.inv(shrunk) @ cov_g)


# ---------------------------------------------------------------------------------------------------- LogME
def naive_logme(f, y):
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s[0] * 1e-7
    u, sigma = u[:, keep], s[keep] ** 2
    evidences = []
    for k in np.unique(y):
        t_vec = (y == k).astype(float)
        x = u.T @ t_vec
        x2 = x**2
        res_x2 = t_vec @ t_vec - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / (1 + sigma / t) ** 2).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        logdet = np.log(alpha + beta * sigma).sum() + (d - len(sigma)) * np.log(alpha)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * logdet - beta / 2 * res2
                    - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi)) / n
        evidences.append(evidence)
    return np.mean(evidences)


# ---------------------------------------------------------------------------------------------------- LEEP, NCE
def naive_leep(logits, y):
    theta = softmax(logits, axis=1)
    ks = np.unique(y)
    joint = np.array([theta[y == k].sum(0) for k in ks]) / len(y)
    cond = joint / joint.sum(0)
    return np.mean([np.log(sum(cond[list(ks).index(y[i]), z] * theta[i, z] for z in range(theta.shape[1])))
                    for i in range(len(y))])


def naive_nce(logits, y):
    z = logits.argmax(1)
    total = 0.0
    for zv in np.unique(z):
        for yv in np.unique(y):
            p_yz = np.mean((y == yv) & (z == zv))
            if p_yz > 0:
                total += p_yz * np.log(p_yz / np.mean(z == zv))
    return total


# ---------------------------------------------------------------------------------------------------- GBC
def naive_gbc(x, y, pca_dim=64, gaussian="spherical", var_floor=1e-4):
    w, _ = naive_pca(x, min(pca_dim, x.shape[1], len(x) - 1))
    z = (x - x.mean(0)) @ w
    ks, zs = class_split(z, y)
    gauss = []
    for c in zs:
        var = np.maximum(c.var(0), var_floor)
        gauss.append((c.mean(0), np.diag(var) if gaussian == "diagonal" else np.eye(len(var)) * var.mean()))
    return -sum(bc_pair(*gauss[i], *gauss[j]) for i in range(len(ks)) for j in range(len(ks)) if i != j)


# ---------------------------------------------------------------------------------------------------- TransRate
def naive_transrate(x, y, eps=1e-4):
    z = x - x.mean(0)
    d = z.shape[1]

    def rate(a):
        return 0.5 * np.linalg.slogdet(np.eye(d) + a.T @ a / (len(a) * eps))[1]

    return rate(z) - sum(np.mean(y == k) * rate(z[y == k]) for k in np.unique(y))


# ---------------------------------------------------------------------------------------------------- SFDA, ETran
def sfda_fit_logits(x, y, lam=None, a=5.0):
    """The authors' SFDA class (fit + decision function), written out: D×D generalised eigenproblem."""
    ks = np.unique(y)
    priors = np.array([np.mean(y == k) for k in ks])
    means = np.array([x[y == k].mean(0) for k in ks])
    sw = sum(p * np.cov(x[y == k].T, bias=True) for p, k in zip(priors, ks))
    st = np.cov(x.T, bias=True)
    if lam is None:
        lam = max(np.exp(-a * np.linalg.eigvalsh(sw).max()), 1e-10)
    d = x.shape[1]
    sw_l = (1 - lam) * sw + lam * np.trace(sw) / d * np.eye(d)
    st_l = (1 - lam) * st + lam * np.trace(st) / d * np.eye(d)
    evals, evecs = scipy.linalg.eigh(st_l - sw_l, sw_l)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return lam, x @ coef.T + intercept


def sfda_fit_predict(x, y, lam=None, a=5.0):
    """The authors' ``predict_proba``."""
    lam, logits = sfda_fit_logits(x, y, lam, a)
    return lam, softmax(logits, axis=1)


def naive_sfda(x, y, log_domain=False):
    """The authors' SFDA with the paper's log; ``log_domain``: ``log p(y | x̂)`` as ``−log(1 + Σ_{j≠y} e^{l_j − l_y})``
    through ``logaddexp``, which keeps a posterior of 1 − 1e-30 at −1e-30 where ``log(softmax)`` rounds it to 0."""
    ks = np.unique(y)
    lam, prob = sfda_fit_predict(x, y)
    means = np.array([x[y == k].mean(0) for k in ks])
    rows, codes = np.arange(len(y)), np.searchsorted(ks, y)
    soft = softmax(prob, axis=1)[rows, codes]
    others = (means.sum(0) - means) / (len(ks) - 1)
    x_hat = x.copy()
    x_hat = soft[:, None] * x_hat + (1 - soft[:, None]) * others[codes]
    _, logits_hat = sfda_fit_logits(x_hat, y, lam=lam)
    if not log_domain:
        return np.mean(np.log(softmax(logits_hat, axis=1)[rows, codes]))
    rel = logits_hat - logits_hat[rows, codes][:, None]
    rel[rows, codes] = -np.inf
    return np.mean(-np.logaddexp(0.0, logsumexp(rel, axis=1)))


def naive_etran_terms(x, y, energy_fraction=0.005):
    e = np.sort(logsumexp(x, axis=1))
    energy = e[: max(1, int(energy_fraction * len(x)))].mean()
    _, prob = sfda_fit_predict(x, y)
    return {"energy": energy, "lda": prob[np.arange(len(y)), np.searchsorted(np.unique(y), y)].mean()}


# ---------------------------------------------------------------------------------------------------- NCTI
def naive_ncti_terms(x, y, pca_dim=64):
    """The authors' code path: scikit-learn PCA, then scikit-learn's LDA (svd solver)."""
    x64 = PCA(n_components=min(pca_dim, x.shape[1])).fit_transform(x)
    lda = LinearDiscriminantAnalysis(solver="svd").fit(x64, y)
    z = lda.transform(x64)
    z = z - z.mean(0)
    post = lda.predict_proba(x64)
    codes = np.searchsorted(lda.classes_, y)
    return {
        "seli": np.linalg.svd(z, compute_uv=False).sum(),
        "ncc": post[np.arange(len(y)), codes].mean(),
        "vc": np.log(sum(np.linalg.svd(post[y == k], compute_uv=False).sum() for k in lda.classes_)),
    }


# ---------------------------------------------------------------------------------------------------- kNN
def naive_knn(x, y, k=5):
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    correct = 0
    for i in range(len(x)):
        order = [j for j in np.argsort(dist[i], kind="stable") if j != i][:k]
        votes = {}
        for rank, j in enumerate(order):
            count, first = votes.get(y[j], (0, rank))
            votes[y[j]] = (count + 1, first)
        predicted = max(votes, key=lambda c: (votes[c][0], -votes[c][1]))
        correct += predicted == y[i]
    return correct / len(x)


# ---------------------------------------------------------------------------------------------------- the table
@pytest.mark.parametrize(
    "name, naive",
    [
        ("nc1", naive_nc1),
        ("hscore", naive_hscore),
        ("hscore_shrinkage", naive_hscore_shrinkage),
        ("logme", naive_logme),
        ("gbc", naive_gbc),
        ("transrate", naive_transrate),
        ("sfda", naive_sfda),
        ("knn", naive_knn),
    ],
)
@pytest.mark.parametrize("shape", [dict(dim=12), dict(n_per_class=(9, 7, 8), dim=30)], ids=["N>D", "N<D"])
def test_metric_matches_naive(name, naive, shape):
    x, y = make_classes(separation=1.2, **shape)
    if name == "sfda" and x.shape[0] < x.shape[1]:
        pytest.skip("SFDA's D×D generalised eigenproblem in the reference is ill-posed for N < D")
    assert metrics.score(name, x, y) == pytest.approx(naive(x, y), rel=RTOL)


def test_sfda_matches_naive_when_the_shrinkage_is_at_its_floor():
    x, y = make_classes(separation=1.2)
    x = x * 10  # σ_max(S_W) > 4.6: λ = 1e-10, decided without an eigensolver
    assert metrics.score("sfda", x, y) == pytest.approx(naive_sfda(x, y), rel=RTOL)


def test_sfda_keeps_the_margin_where_the_posteriors_round_to_one():
    # well separated classes: every p(y | x̂) rounds to 1 in float64, so the authors' score (log of the softmax) is
    # exactly 0 for all three feature sets and ties them; the log-domain posterior keeps them apart
    values = []
    for separation in (1.5, 2.0, 2.5):  # log p(y | x̂) ≈ −1e-40, −1e-80, −1e-133
        x, y = make_classes(separation=separation, noise=0.2)
        assert naive_sfda(x, y) == 0.0
        values.append(metrics.score("sfda", x, y))
        assert values[-1] == pytest.approx(naive_sfda(x, y, log_domain=True), rel=1e-6, abs=0)
    assert values[0] < values[1] < values[2] < 0.0, values


def test_log_softmax_keeps_posteriors_that_round_to_one_and_changes_nothing_else():
    from scipy.special import log_softmax as scipy_log_softmax

    from facezoo.metrics._lda import log_softmax

    logits = np.random.default_rng(0).standard_normal((50, 6)) * 5
    np.testing.assert_allclose(log_softmax(logits.copy()), scipy_log_softmax(logits, axis=1), rtol=1e-14, atol=1e-15)
    saturated = np.array([[0.0, -69.0776, -80.0]])  # e^-69.08 = 1e-30: 1 + 1e-30 == 1 in float64
    assert scipy_log_softmax(saturated, axis=1)[0, 0] == 0.0
    assert log_softmax(saturated.copy())[0, 0] == pytest.approx(-np.exp(-69.0776) - np.exp(-80.0), rel=1e-12, abs=0)


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_gbc_covariance_types_match_naive(gaussian):
    x, y = make_classes(separation=0.8)
    assert metrics.score("gbc", x, y, gaussian=gaussian, pca_dim=6) == pytest.approx(
        naive_gbc(x, y, pca_dim=6, gaussian=gaussian), rel=RTOL)


def test_hscore_singular_covariance_takes_the_pseudo_inverse():
    x, y = make_classes(dim=10)
    x = np.hstack([x, x[:, :3] @ np.ones((3, 2))])  # two exactly collinear columns: Σ_T singular
    assert metrics.score("hscore", x, y) == pytest.approx(naive_hscore(x, y), rel=1e-7)


@pytest.mark.parametrize("name, naive", [("leep", naive_leep), ("nce", naive_nce)])
def test_logit_metric_matches_naive(name, naive, logits_for):
    x, y = make_classes()
    logits = logits_for(y)
    assert metrics.score(name, x, y, logits=logits) == pytest.approx(naive(logits, y), rel=RTOL)


def test_etran_terms_match_naive():
    x, y = make_classes(n_per_class=(120, 100, 90, 110), separation=0.7)
    got = metrics.score_many(x, y, ["etran"])
    want = naive_etran_terms(x, y)
    assert got["etran:energy"] == pytest.approx(want["energy"], rel=RTOL)
    assert got["etran:lda"] == pytest.approx(want["lda"], rel=RTOL)
    assert got["etran"] == pytest.approx(0.15 * want["energy"] + 0.85 * want["lda"], rel=RTOL)


@pytest.mark.parametrize("shape", [dict(n_per_class=(60, 50, 70, 55), dim=20), dict(n_per_class=(9, 7, 8), dim=30)],
                         ids=["N>D", "N<D"])
def test_ncti_terms_match_the_authors_sklearn_path(shape):
    # N < D: 23 principal directions hold a within covariance of rank 21, which scikit-learn's rank cut-off drops
    x, y = make_classes(separation=1.0, noise=3.0, **shape)
    got = metrics.score_many(x, y, ["ncti"])
    want = naive_ncti_terms(x, y, pca_dim=min(64, len(y) - 1))
    for term in ("seli", "ncc", "vc"):
        assert got[f"ncti:{term}"] == pytest.approx(want[term], rel=1e-7), term


def test_linear_probe_matches_sklearn_cross_validation_on_the_same_folds():
    x, y = make_classes(separation=0.6)
    stats = FeatureStats(x, y)
    positions = np.arange(stats.n)
    folds = stratified_folds(stats, positions, 5)
    xs, ys = x[stats.order], y[stats.order]
    predicted = cross_val_predict(
        make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)), xs, ys,
        cv=PredefinedSplit(folds),
    )
    assert metrics.score("linear_probe", x, y) == pytest.approx(np.mean(predicted == ys), abs=1e-12)


def test_nleep_matches_pca_gmm_leep_reference():
    x, y = make_classes(n_per_class=(40, 40, 40), dim=6, separation=2.0)
    order = np.argsort(y, kind="stable")  # class order = input order, so the GMM sees the same rows
    x, y = x[order], y[order]
    z = PCA(n_components=0.8, svd_solver="full").fit_transform(x)
    gmm = GaussianMixture(n_components=15, covariance_type="full", random_state=0).fit(z)
    want = naive_leep(np.log(gmm.predict_proba(z) + 1e-300), y)
    assert metrics.score("nleep", x, y) == pytest.approx(want, rel=1e-5)

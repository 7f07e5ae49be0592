"""The multi-phenotype Cox head: lifelines and scikit-survival agreement, tie handling by hand,
K phenotypes = K separate fits, nonlinear and sequence heads that learn, state, errors."""
import io
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from lifelines.utils import concordance_index as lifelines_concordance
from safetensors.torch import load, save
from sklearn.base import clone
from sksurv.linear_model import CoxPHSurvivalAnalysis

from sleepfm.exceptions import (
    DataWarning,
    InvalidParameterError,
    LabelError,
    NotFittedError,
    SleepFMError,
)
from sleepfm.models.heads.cox import CoxHead, Workspace, cox_log_likelihood, risk_sets


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: tiny models run faster and steadier on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rossi():
    df = load_rossi()
    cols = [c for c in df.columns if c not in ("week", "arrest")]
    return df, cols, df[cols].to_numpy(float), df["week"].to_numpy(float), \
        df["arrest"].to_numpy(float)


def survival(eta, rng, *, resolution=0.05, censor_scale=2.0):
    """Exponential event times with hazard ``exp(eta)``, exponential censoring, times rounded
    to ``resolution`` (ties)."""
    t = rng.exponential(1.0 / np.exp(eta))
    c = rng.exponential(np.median(t) * censor_scale, size=t.shape)
    return np.maximum(np.round(np.minimum(t, c) / resolution), 1) * resolution, \
        (t <= c).astype(float)


# ---- lifelines and scikit-survival ----------------------------------------------------------
def test_linear_matches_lifelines_on_rossi(rossi):
    df, cols, X, week, arrest = rossi
    assert np.unique(week[arrest == 1]).size < (arrest == 1).sum()  # rossi has tied times
    cph = CoxPHFitter().fit(df, "week", "arrest")
    head = CoxHead().fit(X, week, arrest)
    assert head.converged_ and head.coef_.shape == (len(cols), 1)
    assert np.max(np.abs(head.coef_[:, 0] - cph.params_[cols].to_numpy())) < 1e-3
    assert head.log_likelihood_[0] == pytest.approx(cph.log_likelihood_, abs=1e-6)
    assert head.partial_log_likelihood(X, week, arrest)[0] == pytest.approx(cph.log_likelihood_,
                                                                             abs=1e-6)
    risk = head.predict_risk(X)
    assert risk.shape == (len(df), 1)
    assert head.score(X, week, arrest) == lifelines_concordance(week, -risk[:, 0], arrest)
    assert head.score(X, week, arrest) == pytest.approx(cph.concordance_index_, abs=1e-12)
    # Log-hazards relative to the mean input, as lifelines' predict_log_partial_hazard.
    np.testing.assert_allclose(risk[:, 0], cph.predict_log_partial_hazard(df), atol=1e-5)


def test_penalizer_shrinks_and_matches_lifelines(rossi):
    df, cols, X, week, arrest = rossi
    free = CoxHead().fit(X, week, arrest)
    for penalizer in (0.01, 0.1):
        head = CoxHead(penalizer=penalizer).fit(X, week, arrest)
        assert np.linalg.norm(head.coef_ * head.scale_[:, None]) \
            < np.linalg.norm(free.coef_ * free.scale_[:, None])
        cph = CoxPHFitter(penalizer=penalizer).fit(df, "week", "arrest")
        assert np.max(np.abs(head.coef_[:, 0] - cph.params_[cols].to_numpy())) < 1e-4
        # lifelines' log_likelihood_ is penalised: ll - n * penalizer / 2 * ||beta_std||^2.
        beta = head.coef_[:, 0] * head.scale_
        penalised = head.log_likelihood_[0] - len(df) * penalizer / 2 * beta @ beta
        assert penalised == pytest.approx(cph.log_likelihood_, abs=1e-5)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_ties_match_scikit_survival(rossi, ties):
    _, _, X, week, arrest = rossi
    y = np.array(list(zip(arrest.astype(bool), week)), dtype=[("e", bool), ("t", float)])
    ref = CoxPHSurvivalAnalysis(alpha=0.0, ties=ties).fit(X, y)
    head = CoxHead(ties=ties).fit(X, week, arrest)
    np.testing.assert_allclose(head.coef_[:, 0], ref.coef_, atol=1e-5)


def test_float32_path_agrees(rossi):
    _, _, X, week, arrest = rossi
    ref = CoxHead().fit(X, week, arrest)
    head = CoxHead(dtype="float32").fit(X, week, arrest)
    assert head.network_.out.weight.dtype == torch.float32
    assert np.max(np.abs(head.coef_ - ref.coef_)) < 1e-3
    assert head.log_likelihood_[0] == pytest.approx(ref.log_likelihood_[0], abs=1e-3)


# ---- ties by hand ---------------------------------------------------------------------------
TIMES = np.array([1.0, 2, 2, 2, 3, 4, 4, 5, 6, 6])
EVENTS = np.array([1.0, 1, 1, 0, 1, 0, 1, 1, 1, 1])


def hand_log_likelihood(eta, times, events, ties):
    """The textbook formulas, one distinct event time at a time."""
    ll = 0.0
    for t in np.unique(times[events == 1]):
        dead = (times == t) & (events == 1)
        d = dead.sum()
        risk = np.exp(eta[times >= t]).sum()
        tied = np.exp(eta[dead]).sum()
        ll += eta[dead].sum()
        if ties == "breslow":
            ll -= d * math.log(risk)
        else:
            ll -= sum(math.log(risk - l / d * tied) for l in range(d))
    return ll


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_partial_likelihood_equals_hand_computation(ties):
    rng = np.random.default_rng(3)
    eta = rng.normal(size=TIMES.size)
    rs = risk_sets(TIMES[:, None], EVENTS[:, None])
    got = cox_log_likelihood(torch.from_numpy(eta[None]), rs, ties)
    assert got.item() == pytest.approx(hand_log_likelihood(eta, TIMES, EVENTS, ties), abs=1e-12)
    # The same through a fitted head (its log-hazards are X @ coef up to a constant).
    x = rng.normal(size=(TIMES.size, 2))
    head = CoxHead(ties=ties).fit(x, TIMES, EVENTS)
    eta_fit = x @ head.coef_[:, 0]
    assert head.partial_log_likelihood(x, TIMES, EVENTS)[0] == pytest.approx(
        hand_log_likelihood(eta_fit, TIMES, EVENTS, ties), abs=1e-10)
    # ... and the fit maximises the hand formula: zero gradient by central differences.
    for j in range(2):
        step = np.zeros(2)
        step[j] = 1e-5
        up = hand_log_likelihood(x @ (head.coef_[:, 0] + step), TIMES, EVENTS, ties)
        down = hand_log_likelihood(x @ (head.coef_[:, 0] - step), TIMES, EVENTS, ties)
        assert abs(up - down) / 2e-5 < 1e-5


def test_breslow_differs_from_efron_on_ties():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(TIMES.size, 2))
    efron = CoxHead(ties="efron").fit(x, TIMES, EVENTS)
    breslow = CoxHead(ties="breslow").fit(x, TIMES, EVENTS)
    assert np.max(np.abs(efron.coef_ - breslow.coef_)) > 1e-3
    eta = rng.normal(size=TIMES.size)
    rs = risk_sets(TIMES[:, None], EVENTS[:, None])
    lls = [cox_log_likelihood(torch.from_numpy(eta[None]), rs, t).item()
           for t in ("efron", "breslow")]
    assert lls[0] > lls[1] + 1e-3  # Efron's denominators are smaller
    # Without ties the two agree.
    untied = np.arange(1.0, TIMES.size + 1)
    rs = risk_sets(untied[:, None], EVENTS[:, None])
    a, b = (cox_log_likelihood(torch.from_numpy(eta[None]), rs, t).item()
            for t in ("efron", "breslow"))
    assert a == pytest.approx(b, abs=1e-12)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_hand_written_backward_passes_gradcheck(ties):
    rng = np.random.default_rng(0)
    t = rng.integers(1, 5, (12, 3)).astype(float)
    e = (rng.random((12, 3)) < 0.6).astype(float)
    t[0, 1] = np.nan
    e[3, 2] = np.nan
    rs = risk_sets(t, e)
    eta = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: cox_log_likelihood(z, rs, ties), (eta,))


def test_subjects_not_at_risk_are_left_out():
    rng = np.random.default_rng(1)
    eta = rng.normal(size=TIMES.size + 2)
    eta[-2:] = (1000.0, -1000.0)  # extreme log-hazards of two subjects not at risk
    times = np.append(TIMES, [np.nan, 3.0])
    events = np.append(EVENTS, [1.0, np.nan])
    for ties in ("efron", "breslow"):
        got = cox_log_likelihood(torch.from_numpy(eta[None]), risk_sets(times[:, None],
                                                                         events[:, None]), ties)
        assert got.item() == pytest.approx(hand_log_likelihood(eta[:-2], TIMES, EVENTS, ties),
                                           abs=1e-12)


def test_workspace_refuses_a_stale_backward():
    rs = risk_sets(TIMES[:, None], EVENTS[:, None])
    ws = Workspace()
    eta = torch.zeros(1, TIMES.size, dtype=torch.float64, requires_grad=True)
    first = cox_log_likelihood(eta, rs, workspace=ws).sum()
    cox_log_likelihood(eta, rs, workspace=ws)
    with pytest.raises(SleepFMError, match="evaluated again before the backward"):
        first.backward()


# ---- K phenotypes at once -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cohort():
    """300 subjects, 4 features, 3 phenotypes with their own signals, ties and NaN masks."""
    rng = np.random.default_rng(7)
    n = 300
    x = rng.normal(size=(n, 4))
    coef = np.array([[0.8, 0.0, -0.5], [0.0, 0.6, 0.3], [-0.4, 0.3, 0.0], [0.2, -0.7, 0.5]])
    t, e = survival(x @ coef, rng, resolution=0.1)
    for k, frac in enumerate((0.0, 0.1, 0.25)):  # subjects not at risk differ per phenotype
        gone = rng.random(n) < frac
        t[gone, k] = np.nan
        e[gone, k] = np.nan
    e[rng.random(n) < 0.05, 2] = np.nan  # NaN in events alone also means not at risk
    return x, t, e


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_k_phenotypes_equal_k_separate_fits(cohort, ties):
    x, t, e = cohort
    joint = CoxHead(ties=ties).fit(x, t, e)
    assert joint.coef_.shape == (4, 3) and joint.n_phenotypes_ == 3
    for k in range(3):
        keep = np.isfinite(t[:, k]) & np.isfinite(e[:, k])
        alone = CoxHead(ties=ties).fit(x[keep], t[keep, k], e[keep, k])  # NaN rows dropped
        np.testing.assert_allclose(joint.coef_[:, k], alone.coef_[:, 0], atol=1e-6)
        assert joint.log_likelihood_[k] == pytest.approx(alone.log_likelihood_[0], abs=1e-8)
        assert joint.n_at_risk_[k] == keep.sum()
        if ties == "efron":
            df = {f"x{j}": x[keep, j] for j in range(4)} | {"t": t[keep, k], "e": e[keep, k]}
            cph = CoxPHFitter().fit(pd.DataFrame(df), "t", "e")
            np.testing.assert_allclose(joint.coef_[:, k], cph.params_.to_numpy(), atol=1e-5)
            assert joint.log_likelihood_[k] == pytest.approx(cph.log_likelihood_, abs=1e-6)


def test_penalised_k_phenotypes_equal_separate_fits(cohort):
    x, t, e = cohort
    joint = CoxHead(penalizer=0.05).fit(x, t, e)
    for k in range(3):  # NaN kept: the same rows, hence the same standardisation
        alone = CoxHead(penalizer=0.05).fit(x, t[:, k], e[:, k])
        np.testing.assert_allclose(joint.coef_[:, k], alone.coef_[:, 0], atol=1e-6)
        assert joint.log_likelihood_[k] == pytest.approx(alone.log_likelihood_[0], abs=1e-5)


def test_the_loss_is_the_mean_of_per_phenotype_objectives(cohort):
    x, t, e = cohort
    p = 0.05
    head = CoxHead(penalizer=p).fit(x, t, e)
    w = head.coef_ * head.scale_[:, None]  # weights on standardised inputs
    per = -head.log_likelihood_ / head.n_at_risk_ + p / 2 * (w ** 2).sum(axis=0)
    assert head.history_[-1]["loss"] == pytest.approx(per.mean(), rel=1e-10)


def test_phenotypes_without_events_change_nothing(cohort):
    x, t, e = cohort
    base = CoxHead(penalizer=0.02).fit(x, t, e)
    t2 = np.column_stack([t[:, :1], np.full(len(x), 5.0), t[:, 1:]])
    e2 = np.column_stack([e[:, :1], np.zeros(len(x)), e[:, 1:]])
    with pytest.warns(DataWarning, match=r"phenotypes 1 have no events"):
        more = CoxHead(penalizer=0.02).fit(x, t2, e2)
    np.testing.assert_allclose(more.coef_[:, [0, 2, 3]], base.coef_, atol=1e-7)
    np.testing.assert_allclose(more.log_likelihood_[[0, 2, 3]], base.log_likelihood_, atol=1e-9)
    assert np.all(more.coef_[:, 1] == 0) and more.log_likelihood_[1] == 0
    assert more.history_[-1]["loss"] == pytest.approx(base.history_[-1]["loss"], rel=1e-9)
    c = more.concordance(x, t2, e2)
    assert np.isnan(c[1]) and more.score(x, t2, e2) == pytest.approx(np.nanmean(c))


# ---- demographics baseline ------------------------------------------------------------------
def test_demographics_only_baseline_two_ways(cohort):
    x, t, e = cohort
    demo = x[:, :2]
    as_x = CoxHead().fit(demo, t, e)
    empty = CoxHead().fit(np.empty((len(x), 0)), t, e, covariates=demo)
    assert empty.n_features_in_ == 0 and empty.n_covariates_in_ == 2
    np.testing.assert_allclose(as_x.coef_, empty.coef_, atol=1e-10)
    np.testing.assert_allclose(as_x.predict_risk(demo),
                               empty.predict_risk(np.empty((len(x), 0)), covariates=demo),
                               atol=1e-10)
    both = CoxHead().fit(x[:, 2:], t, e, covariates=demo)  # embeddings + covariates
    full = CoxHead().fit(np.column_stack([x[:, 2:], demo]), t, e)
    assert both.coef_.shape == (4, 3)
    np.testing.assert_allclose(both.coef_, full.coef_, atol=1e-8)


# ---- nonlinear and sequence heads -----------------------------------------------------------
def _null(t, e, rng):
    """Targets shuffled across subjects (rows of time and event together): no signal."""
    perm = rng.permutation(len(t))
    return t[perm], e[perm]


def test_mlp_learns_a_nonlinear_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    t, e = survival(1.5 * (x[:, 0] ** 2 - 1) + 1.5 * np.sin(2 * x[:, 1]), rng)
    tr, va, te = slice(0, 400), slice(400, 500), slice(500, 600)
    kw = {"arch": "mlp", "hidden": 32, "lr": 1e-2, "max_iter": 300}
    mlp = CoxHead(**kw).fit(x[tr], t[tr], e[tr], X_val=x[va], durations_val=t[va],
                            events_val=e[va])
    linear = CoxHead().fit(x[tr], t[tr], e[tr])
    null = CoxHead(**kw).fit(x[tr], *_null(t[tr], e[tr], rng), X_val=x[va],
                             durations_val=t[va][::-1], events_val=e[va][::-1])
    c_mlp, c_lin, c_null = (h.score(x[te], t[te], e[te]) for h in (mlp, linear, null))
    assert c_mlp > 0.75 and c_mlp > c_lin + 0.15 and c_mlp > c_null + 0.15
    # Early stopping kept the best validation weights.
    scores = [r["val_c_index"] for r in mlp.history_ if "val_c_index" in r]
    assert mlp.score(x[va], t[va], e[va]) == pytest.approx(max(scores), abs=1e-12)
    assert mlp.converged_ and mlp.n_iter_ < 300 and len(mlp.history_) == mlp.n_iter_
    assert not hasattr(mlp, "coef_")


def ar_nights(n, rng):
    """Nights of 15-29 windows, AR(1) with a per-subject coefficient rho: the risk. Every night
    has mean 0 and variance 1, so only the order of the windows carries the signal."""
    rho = rng.uniform(-0.9, 0.9, n)
    nights = []
    for r in rho:
        z = rng.normal(size=(int(rng.integers(15, 30)), 3))
        x = np.empty_like(z)
        x[0] = z[0]
        for i in range(1, len(z)):
            x[i] = r * x[i - 1] + math.sqrt(1 - r * r) * z[i]
        nights.append(x.astype(np.float32))
    return nights, 3 * rho


def test_lstm_learns_a_sequence_signal():
    rng = np.random.default_rng(0)
    nights, eta = ar_nights(600, rng)
    t, e = survival(eta, rng)
    cov = rng.normal(size=(600, 2))
    tr, va, te = slice(0, 400), slice(400, 500), slice(500, 600)
    kw = {"arch": "lstm", "hidden": 8, "lr": 2e-2, "max_iter": 120, "val_every": 5, "patience": 6}
    val = {"X_val": nights[400:500], "covariates_val": cov[va]}
    lstm = CoxHead(**kw).fit(nights[:400], t[tr], e[tr], covariates=cov[tr],
                             durations_val=t[va], events_val=e[va], **val)
    null = CoxHead(**kw).fit(nights[:400], *_null(t[tr], e[tr], rng), covariates=cov[tr],
                             durations_val=t[va][::-1], events_val=e[va][::-1], **val)
    pooled = np.stack([n.mean(axis=0) for n in nights])
    mean_only = CoxHead().fit(pooled[tr], t[tr], e[tr])
    c_lstm = lstm.score(nights[500:], t[te], e[te], covariates=cov[te])
    c_null = null.score(nights[500:], t[te], e[te], covariates=cov[te])
    c_mean = mean_only.score(pooled[te], t[te], e[te])
    assert c_lstm > 0.68 and c_lstm > c_null + 0.1 and c_lstm > c_mean + 0.1
    # Any night length, in any batch: predictions do not depend on the padding.
    one = lstm.predict_risk(nights[500:501], covariates=cov[500:501])
    np.testing.assert_allclose(one, lstm.predict_risk(nights[500:], covariates=cov[te])[:1],
                               atol=1e-5)


# ---- state ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["linear", "mlp", "lstm"])
def test_state_round_trip(cohort, arch):
    x, t, e = cohort
    rng = np.random.default_rng(1)
    X = [rng.normal(size=(int(rng.integers(3, 9)), 4)) + row for row in x[:60]] \
        if arch == "lstm" else x
    n = len(X)
    head = CoxHead(arch=arch, hidden=8, max_iter=100 if arch == "linear" else 5,
                   penalizer=0.01).fit(
        X, t[:n], e[:n], covariates=x[:n, :2])
    tensors, meta = head.get_state()
    tensors = load(save(tensors))
    meta = json.loads(json.dumps(meta))
    assert meta["head"] == "cox" and set(meta) == {"head", "version", "params", "fitted"}
    back = CoxHead.from_state(tensors, meta)
    assert back.get_params() == head.get_params()
    np.testing.assert_array_equal(back.predict_risk(X, covariates=x[:n, :2]),
                                  head.predict_risk(X, covariates=x[:n, :2]))
    np.testing.assert_array_equal(back.mean_, head.mean_)
    np.testing.assert_array_equal(back.log_likelihood_, head.log_likelihood_)
    if arch == "linear":
        np.testing.assert_array_equal(back.coef_, head.coef_)
    with pytest.raises(InvalidParameterError, match="State is for head 'mlp'"):
        CoxHead.from_state(tensors, {**meta, "head": "mlp"})
    with pytest.raises(InvalidParameterError, match="version 99"):
        CoxHead.from_state(tensors, {**meta, "version": 99})
    io.BytesIO(save(head.get_state()[0]))  # saveable as safetensors


def test_estimator_contract(cohort):
    x, t, e = cohort
    head = CoxHead(arch="mlp", penalizer=0.1)
    assert clone(head).get_params() == head.get_params()
    for method, args in (("predict_risk", (x,)), ("score", (x, t, e)),
                         ("partial_log_likelihood", (x, t, e)), ("get_state", ())):
        with pytest.raises(NotFittedError, match=r"This CoxHead instance is not fitted yet.*fit"):
            getattr(head, method)(*args)
    one = CoxHead().fit(x, t[:, 0], e[:, 0])  # 1-D: one phenotype
    assert one.fit(x, t[:, 0], e[:, 0]) is one and one.predict_risk(x).shape == (len(x), 1)
    assert isinstance(one.score(x, t[:, 0], e[:, 0]), float)
    assert set(one.timings_) >= {"precompute", "loss", "optimizer", "n_evals"}


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("params, match", [
    ({"arch": "transformer"}, "Allowed values are 'linear', 'mlp', 'lstm'"),
    ({"ties": "exact"}, "Allowed values are 'efron', 'breslow'"),
    ({"penalizer": -1.0}, "'penalizer' must be a finite number >= 0"),
    ({"hidden": 0}, "'hidden' must be a positive integer"),
    ({"dtype": "float16"}, "Allowed values are None, 'float32', 'float64'"),
    ({"dropout": 1.0}, r"'dropout' must be in \[0, 1\)"),
])
def test_bad_parameters(cohort, params, match):
    x, t, e = cohort
    with pytest.raises(InvalidParameterError, match=match):
        CoxHead(**params).fit(x, t, e)


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


@pytest.mark.parametrize("case, error, match", [
    ("rows", LabelError, "X has 300 subjects but durations has 299 rows"),
    ("shape", LabelError, "durations has shape .* and events"),
    ("negative", LabelError, "durations has 1 negative values .*subjects 5"),
    ("infinite", LabelError, "durations has 1 infinite values"),
    ("event2", LabelError, "events has 1 not 0, 1 or NaN values .*phenotypes 1"),
    ("nobody", LabelError, "phenotypes 2 have no subject at risk"),
    ("no_events", LabelError, "no phenotype has an event"),
    ("nan_x", InvalidParameterError, "X holds NaN"),
    ("cov_rows", InvalidParameterError, r"covariates has shape \(10, 2\)"),
    ("val", InvalidParameterError, "Pass X_val, durations_val and events_val together"),
    ("val_k", LabelError, "durations_val has 1 phenotypes but the head predicts 3"),
    ("nothing", InvalidParameterError, "X has no columns and no covariates"),
])
def test_bad_data(cohort, case, error, match):
    x, t, e = cohort
    kw = {}
    if case == "rows":
        t, e = t[1:], e[1:]
    elif case == "shape":
        e = e[:, :2]
    elif case == "negative":
        t = _with(t, (5, 0), -1.0)
    elif case == "infinite":
        t = _with(t, (5, 0), np.inf)
    elif case == "event2":
        e = _with(e, (7, 1), 2.0)
    elif case == "nobody":
        t = _with(t, (slice(None), 2), np.nan)
    elif case == "no_events":
        e = np.zeros_like(e)
    elif case == "nan_x":
        x = _with(x, (3, 1), np.nan)
    elif case == "cov_rows":
        kw = {"covariates": x[:10, :2]}
    elif case == "val":
        kw = {"X_val": x}
    elif case == "val_k":
        kw = {"X_val": x, "durations_val": t[:, 0], "events_val": e[:, 0]}
    elif case == "nothing":
        x = np.empty((len(x), 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(error, match=match):
            CoxHead().fit(x, t, e, **kw)


def test_prediction_input_errors(cohort):
    x, t, e = cohort
    head = CoxHead().fit(x[:, :3], t, e, covariates=x[:, 3:])
    with pytest.raises(InvalidParameterError, match="fitted with 1 covariates"):
        head.predict_risk(x[:, :3])
    with pytest.raises(InvalidParameterError, match="X has 4 features but CoxHead was fitted "
                                                    "with 3"):
        head.predict_risk(x, covariates=x[:, 3:])
    with pytest.raises(LabelError, match="durations has 2 phenotypes but the head predicts 3"):
        head.score(x[:, :3], t[:, :2], e[:, :2], covariates=x[:, 3:])
    lstm = CoxHead(arch="lstm")
    with pytest.raises(InvalidParameterError, match="the lstm head takes a non-empty list"):
        lstm.fit(x, t, e)

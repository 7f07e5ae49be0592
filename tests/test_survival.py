"""Survival metrics against lifelines and scikit-survival, and the vectorised bootstrap against
explicit resampling."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index as lifelines_concordance
from lifelines.utils.concordance import naive_concordance_index

from sleepfm.eval.bootstrap import subject_resamples
from sleepfm.eval.survival import (
    benjamini_hochberg,
    bootstrap_p_value,
    bootstrap_survival,
    concordance_index,
    cumulative_dynamic_auc,
    km_by_quartile,
    resample_counts,
    survival_report,
    weighted_survival_metrics,
)
from sleepfm.exceptions import InvalidParameterError

sksurv_metrics = pytest.importorskip("sksurv.metrics")
Surv = pytest.importorskip("sksurv.util").Surv


def cohort(n, seed, *, event_rate=0.5, decimals=1, risk_decimals=1, signal=0.3):
    """Censored outcomes with ties in time (rounded) and in risk (rounded)."""
    rng = np.random.default_rng(seed)
    t = np.round(rng.exponential(5.0, n), decimals) + 0.1
    e = (rng.random(n) < event_rate).astype(float)
    r = np.round(rng.normal(size=n) - signal * np.log(t), risk_decimals)
    return t, e, r


def sk_auc(train_t, train_e, t, e, r, h):
    return sksurv_metrics.cumulative_dynamic_auc(
        Surv.from_arrays(train_e.astype(bool), train_t), Surv.from_arrays(e.astype(bool), t), r,
        [h])[0][0]


# ------------------------------------------------------------------ C-index


def test_cindex_hand_example():
    # pairs: (0,1) concordant, (0,2) tied risk -> 0.5, (0,3) event at the time of a censored
    # subject: comparable and concordant; (1,2) both events at t=2: not comparable; (1,3), (2,3)
    # not comparable (censored at 1 is before 2).
    t = [1.0, 2.0, 2.0, 1.0]
    e = [1, 1, 1, 0]
    r = [3.0, 1.0, 3.0, 0.0]
    assert concordance_index(t, r, e) == pytest.approx((1 + 0.5 + 1) / 3)


@pytest.mark.parametrize("seed", range(6))
def test_cindex_equals_lifelines_with_ties(seed):
    t, e, r = cohort(80, seed)
    assert len(np.unique(t)) < t.size and len(np.unique(r)) < r.size  # ties in time and risk
    naive = naive_concordance_index(t, -r, e)
    assert concordance_index(t, r, e) == lifelines_concordance(t, -r, e)
    assert concordance_index(t, r, e) == pytest.approx(naive, abs=1e-12)


def test_cindex_leaves_out_nan_and_reports_nan_without_pairs():
    t, e, r = cohort(40, 1)
    t2, e2 = t.copy(), e.copy()
    t2[:5], e2[5:8] = np.nan, np.nan
    keep = np.isfinite(t2) & np.isfinite(e2)
    assert concordance_index(t2, r, e2) == lifelines_concordance(t[keep], -r[keep],
                                                                             e[keep])
    assert np.isnan(concordance_index([1.0, 2.0], [1.0, 0.0], [0, 0]))


# ------------------------------------------------------------------ time-dependent AUROC


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("horizon", [1.0, 2.5, 5.0, 8.0])
def test_auc_equals_sksurv_with_separate_training_data(seed, horizon):
    t, e, r = cohort(120, seed)
    tt, te, _ = cohort(200, seed + 100)
    tt[0], te[0] = 100.0, 0  # training follow-up covers every test time
    expected = sk_auc(tt, te, t, e, r, horizon)
    assert cumulative_dynamic_auc(tt, te, t, e, r, horizon) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_sksurv_with_test_as_training_and_horizon_on_a_tied_time(seed):
    t, e, r = cohort(100, seed, decimals=0)
    horizon = float(np.median(t))  # cases and controls at exactly the horizon's time
    assert (t == horizon).sum() > 1
    expected = sk_auc(t, e, t, e, r, horizon)
    assert cumulative_dynamic_auc(t, e, t, e, r, horizon) == pytest.approx(expected, rel=1e-12)


def test_auc_ties_in_risk_use_sksurv_tolerance():
    t, e, r = cohort(60, 3, risk_decimals=4)
    r = r + np.where(np.arange(r.size) % 2, 5e-9, 0.0)  # sub-tolerance jitter: still tied
    expected = sk_auc(t, e, t, e, r, 3.0)
    assert cumulative_dynamic_auc(t, e, t, e, r, 3.0) == pytest.approx(expected, rel=1e-12)
    # exact ties: the ROC trapezoid counts them half
    assert cumulative_dynamic_auc([1, 5], [1, 0], [1, 5], [1, 0], [0.0, 0.0], 2.0) == 0.5


def test_auc_events_after_the_horizon_need_no_training_follow_up():
    t, e, r = cohort(100, 5)
    tt, te = t[t < 6], e[t < 6]
    late = (e == 1) & (t > tt.max())
    assert late.any()
    with pytest.raises(ValueError):  # scikit-survival refuses any event past the training data
        sk_auc(tt, te, t, e, r, 3.0)
    e_cens = np.where(t > 3.0, 0.0, e)  # those events carry no weight at the horizon
    assert cumulative_dynamic_auc(tt, te, t, e, r, 3.0) == pytest.approx(
        sk_auc(tt, te, t, e_cens, r, 3.0), rel=1e-12)


def test_auc_raises_for_a_case_beyond_the_training_follow_up():
    t, e, r = cohort(50, 2)
    t[0], e[0] = 4.9, 1
    with pytest.raises(InvalidParameterError, match="training follow-up"):
        cumulative_dynamic_auc(t[t < 3], e[t < 3], t, e, r, 5.0)


def test_auc_nan_without_case_or_control():
    t, e, r = cohort(30, 0)
    assert np.isnan(cumulative_dynamic_auc(t, e, t, e, r, t.max() + 1))  # no control
    assert np.isnan(cumulative_dynamic_auc(t, e, t, np.zeros_like(e), r, 2.0))  # no case


def test_inputs_are_checked():
    t, e, r = cohort(20, 0)
    with pytest.raises(InvalidParameterError, match="'event' must be 0, 1 or NaN"):
        cumulative_dynamic_auc(t, e, t, e * 2, r, 1.0)
    with pytest.raises(InvalidParameterError, match="negative"):
        cumulative_dynamic_auc(t, e, -t, e, r, 1.0)
    with pytest.raises(InvalidParameterError, match="horizon"):
        cumulative_dynamic_auc(t, e, t, e, r, 0.0)
    with pytest.raises(InvalidParameterError, match="'risk' has 19 values"):
        cumulative_dynamic_auc(t, e, t, e, r[:-1], 1.0)


# ------------------------------------------------------------------ bootstrap engine


def two_phenotypes(n, seed):
    t1, e1, r1 = cohort(n, seed)
    t2, e2, r2 = cohort(n, seed + 1, event_rate=0.3)
    t2[: n // 10] = np.nan  # prevalent: not at risk for phenotype 2
    e2[: n // 10] = np.nan
    return np.c_[t1, t2], np.c_[e1, e2], np.c_[r1, r2]


def test_engine_point_equals_the_metrics():
    t, e, r = two_phenotypes(150, 0)
    groups = np.arange(150)
    boot = bootstrap_survival(t, e, r, groups=groups, horizon=3.0, n_boot=20)
    for k in range(2):
        assert boot.point[k, 0] == concordance_index(t[:, k], r[:, k], e[:, k])
        assert boot.point[k, 1] == cumulative_dynamic_auc(t[:, k], e[:, k], t[:, k], e[:, k],
                                                          r[:, k], 3.0)
        keep = np.isfinite(t[:, k])
        assert boot.point[k, 1] == pytest.approx(
            sk_auc(t[keep, k], e[keep, k], t[keep, k], e[keep, k], r[keep, k], 3.0), rel=1e-12)
    assert list(boot.n) == [150, 135] and boot.n_events[0] == int(e[:, 0].sum())


@pytest.mark.parametrize("with_train", [False, True])
def test_a_resample_equals_the_metrics_on_the_resampled_arrays(with_train):
    n = 160
    t, e, r = two_phenotypes(n, 4)
    groups = np.repeat(np.arange(n // 2), 2)  # two rows (nights) per subject
    train = two_phenotypes(300, 40)[:2] if with_train else (None, None)
    if with_train:
        train[0][0] = 100.0
    boot = bootstrap_survival(t, e, r, groups=groups, horizon=3.0, n_boot=30, seed=7,
                              train_time=train[0], train_event=train[1])
    codes, _, counts = subject_resamples(groups, n_boot=30, seed=7)
    for b in (0, 11, 29):
        idx = np.repeat(np.arange(n), counts[b][codes])
        for k in range(2):
            tk, ek = (train[0][:, k], train[1][:, k]) if with_train else (t[:, k], e[:, k])
            assert boot.values[b, k, 0] == concordance_index(t[idx, k], r[idx, k], e[idx, k])
            assert boot.values[b, k, 1] == pytest.approx(cumulative_dynamic_auc(
                tk, ek, t[idx, k], e[idx, k], r[idx, k], 3.0), rel=1e-12)


def test_weights_are_row_repetitions():
    t, e, r = cohort(40, 9)
    w = np.random.default_rng(0).integers(0, 4, size=(3, 40))
    got = weighted_survival_metrics(t, e, r, w, horizon=3.0)
    for b in range(3):
        idx = np.repeat(np.arange(40), w[b])
        assert got[b, 0] == concordance_index(t[idx], r[idx], e[idx])
        assert got[b, 1] == pytest.approx(cumulative_dynamic_auc(t, e, t[idx], e[idx], r[idx],
                                                                 3.0), rel=1e-12)


def test_stratified_resampling_keeps_strata_sizes():
    groups = np.repeat(np.arange(60), 2)
    strata = np.repeat(np.arange(60) % 4 + (np.arange(60) > 50), 2)  # unequal strata
    _, counts = resample_counts(groups, n_boot=50, seed=3, strata=strata)
    stratum_of_subject = strata[::2]
    for s in np.unique(stratum_of_subject):
        members = stratum_of_subject == s
        assert np.all(counts[:, members].sum(axis=1) == members.sum())
    assert counts.sum(axis=1).tolist() == [60] * 50
    _, counts0 = resample_counts(groups, n_boot=50, seed=3)
    assert np.array_equal(counts0, subject_resamples(groups, n_boot=50, seed=3)[2])
    bad = strata.copy()
    bad[1] = bad[0] + 1
    with pytest.raises(InvalidParameterError, match="several strata"):
        resample_counts(groups, n_boot=5, strata=bad)


def test_intervals_contain_the_point_and_p_values_rank_phenotypes():
    rng = np.random.default_rng(0)
    n = 300
    t = rng.exponential(5.0, (n, 1)) * np.ones((1, 2))
    e = (rng.random((n, 1)) < 0.5) * np.ones((1, 2))
    r = np.c_[-np.log(t[:, 0]) + rng.normal(0, 0.5, n), rng.normal(size=n)]
    rep = survival_report(t, e, r, groups=np.arange(n), phenotypes=["informative", "noise"],
                          horizon=3.0, n_boot=200, strata=np.arange(n) % 3)
    s = rep.summary
    assert list(s.columns) == ["phenotype", "metric", "value", "ci_low", "ci_high", "p_value",
                               "q_value", "n", "n_events"]
    assert list(s.metric) == ["c_index", "auroc"] * 2
    assert np.all((s.ci_low <= s.value) & (s.value <= s.ci_high))
    inf = s[s.phenotype == "informative"]
    assert (inf.p_value == 1 / 201).all() and (inf.value > 0.7).all()
    assert (s[s.phenotype == "noise"].p_value > 0.05).all()
    assert (s.q_value >= s.p_value).all()
    assert s.n.tolist() == [n] * 4 and s.n_events.tolist() == [int(e[:, 0].sum())] * 4


def test_bootstrap_p_value_formula():
    values = np.array([[0.4, np.nan], [0.5, 0.7], [0.6, 0.8], [0.7, 0.9]])
    assert bootstrap_p_value(values).tolist() == [(1 + 2) / 5, (1 + 0) / 4]


def test_benjamini_hochberg_by_hand_and_against_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # sorted 0.01, 0.03, 0.04, 0.20 (m=4): 0.04, 0.06, 0.0533, 0.20 -> running min from the top
    expected = [0.04, 0.16 / 3, 0.16 / 3, 0.20, np.nan]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    p = rng.random(40) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p),
                               rtol=1e-12)
    with pytest.raises(InvalidParameterError):
        benjamini_hochberg([0.5, 1.5])


# ------------------------------------------------------------------ report


def test_report_contract(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    t, e, r = two_phenotypes(120, 2)
    frame = pd.DataFrame(t, columns=["copd", "stroke"])
    rep = survival_report(frame, e, r, groups=np.arange(120), horizon=3.0, n_boot=50)
    assert list(rep.summary.phenotype.unique()) == ["copd", "stroke"]
    assert rep.censoring == "test" and "\n" not in repr(rep) and "SurvivalReport" in repr(rep)
    rep.to_json(tmp_path / "m.json")
    rep.to_csv(tmp_path / "m.csv")
    loaded = json.loads((tmp_path / "m.json").read_text())
    assert loaded["horizon"] == 3.0 and len(loaded["summary"]) == 4
    assert pd.read_csv(tmp_path / "m.csv").shape == (4, 9)
    ax = rep.plot()
    assert len(ax.get_yticklabels()) == 2
    ax = km_by_quartile(t[:, 0], e[:, 0], r[:, 0], horizon=3.0)
    assert len(ax.get_lines()) >= 4
    with pytest.raises(InvalidParameterError, match="phenotype names"):
        survival_report(t, e, r, groups=np.arange(120), phenotypes=["a"], horizon=3.0, n_boot=5)


def test_report_names_the_phenotype_with_a_case_beyond_training():
    t, e, r = two_phenotypes(60, 1)
    t[0, 1], e[0, 1] = 2.0, 1.0
    tt, te = np.full((60, 2), 1.0), np.zeros((60, 2))
    with pytest.raises(InvalidParameterError, match="phenotype b: .*training follow-up"):
        survival_report(t, e, r, groups=np.arange(60), phenotypes=["a", "b"], horizon=3.0,
                        train_time=np.c_[tt[:, 0] * 100, tt[:, 1]], train_event=te, n_boot=5)


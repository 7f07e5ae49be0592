"""Subgroup reports (too-small groups kept, ordering, difference/ratio) and trial enrichment
(perfect, constant and random rankings; eligibility and unknown outcomes counted)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sleepfm.eval.enrichment import (
    _enrichment,
    enrichment_report,
    horizon_outcome,
    inclusion_mask,
    rank_candidates,
)
from sleepfm.eval.fairness import age_bands, subgroup_report
from sleepfm.eval.survival import concordance_index, cumulative_dynamic_auc
from sleepfm.exceptions import DataWarning, InvalidParameterError


def outcomes(n, seed, informative):
    """Exponential event times; the risk follows the log-hazard where ``informative``."""
    rng = np.random.default_rng(seed)
    log_hazard = rng.normal(size=n)
    event_time = rng.exponential(1.0, n) * np.exp(-log_hazard) * 4
    censor = rng.uniform(0.5, 12, n)
    t = np.minimum(event_time, censor)
    e = (event_time <= censor).astype(float)
    risk = np.where(informative, log_hazard, rng.normal(size=n))
    return t, e, risk


# ------------------------------------------------------------------ fairness


def test_age_bands():
    bands = age_bands([17, 18, 39.9, 40, 49, 50, 79, 80, 95, np.nan])
    assert list(bands) == ["<18", "<40", "<40", "40-49", "40-49", "50-59", "70-79", ">=80",
                           ">=80", "unknown"]
    assert list(bands.categories) == ["<18", "<40", "40-49", "50-59", "60-69", "70-79", ">=80",
                                      "unknown"]
    assert age_bands([45, 61]).categories[0] == "<40"
    with pytest.raises(InvalidParameterError):
        age_bands([40], edges=(50, 40))


def make_fairness(seed=0, n=900):
    rng = np.random.default_rng(seed)
    group = np.where(np.arange(n) < n // 2, "informative", "noise")
    t, e, r = outcomes(n, seed, informative=group == "informative")
    site = np.where(np.arange(n) % 3 == 0, "A", "B").astype(object)
    tiny = np.flatnonzero(e == 1)[:3]
    site[tiny] = "tiny"  # 3 subjects, all with events
    site[rng.choice(n, 20, replace=False)] = None
    return t, e, r, group, site


def test_subgroup_report_orders_groups_and_keeps_too_small_ones():
    t, e, r, group, site = make_fairness()
    rep = subgroup_report(t, e, r, attributes={"risk_quality": group, "site": site},
                          groups=np.arange(t.size), horizon=3.0, n_boot=200, min_events=10)
    s = rep.summary
    assert list(s.columns) == ["attribute", "group", "n", "n_events", "metric", "value", "ci_low",
                               "ci_high", "difference", "ratio", "status"]
    tiny = s[s.group == "tiny"]
    assert len(tiny) == 2 and tiny.value.isna().all()
    assert (tiny.status == "too small: 3 events (< 10)").all()
    assert "unknown" in set(s[s.attribute == "site"].group)
    groups = rep.by_group
    c_inf = groups.loc[("risk_quality", "informative"), "c_index"]
    c_noise = groups.loc[("risk_quality", "noise"), "c_index"]
    assert c_inf > rep.overall["c_index"] > c_noise
    assert c_inf > 0.65 and abs(c_noise - 0.5) < 0.08
    assert groups.loc[("risk_quality", "informative"), "auroc"] > groups.loc[
        ("risk_quality", "noise"), "auroc"]
    ok = s[s.status == "ok"]
    assert np.all((ok.ci_low <= ok.value) & (ok.value <= ok.ci_high))
    assert "\n" not in repr(rep)
    json.dumps(rep.to_dict())


def test_group_values_are_the_metrics_on_the_group():
    t, e, r, group, _ = make_fairness(1)
    rep = subgroup_report(t, e, r, attributes={"g": group}, groups=np.arange(t.size),
                          horizon=3.0, n_boot=20)
    for name in ("informative", "noise"):
        m = group == name
        row = rep.by_group.loc[("g", name)]
        assert row.c_index == concordance_index(t[m], r[m], e[m])
        # one censoring distribution, estimated on all subjects at risk
        assert row.auroc == pytest.approx(cumulative_dynamic_auc(t, e, t[m], e[m], r[m], 3.0),
                                          rel=1e-12)
    assert rep.overall["c_index"] == concordance_index(t, r, e)


def test_difference_and_ratio_arithmetic():
    t, e, r, group, site = make_fairness(2)
    rep = subgroup_report(t, e, r, attributes={"g": group, "site": site},
                          groups=np.arange(t.size), horizon=3.0, n_boot=20)
    s, overall = rep.summary, rep.overall
    ref = s.metric.map(overall)
    np.testing.assert_allclose(s.difference, s.value - ref)
    np.testing.assert_allclose(s.ratio, s.value / ref)
    for metric in ("c_index", "auroc"):
        v = rep.by_group.loc["site", metric].dropna()  # the too-small group is left out
        assert len(v) == 3
        assert rep.difference().loc["site", metric] == pytest.approx(v.max() - v.min())
        assert rep.ratio().loc["site", metric] == pytest.approx(v.min() / v.max())
        assert rep.difference("to_overall").loc["site", metric] == pytest.approx(
            np.max(np.abs(v - overall[metric])))
        assert rep.ratio("to_overall").loc["site", metric] == pytest.approx(
            np.min(np.minimum(v / overall[metric], overall[metric] / v)))
    with pytest.raises(InvalidParameterError, match="between_groups"):
        rep.difference("largest")


def test_fairness_plot():
    import matplotlib

    matplotlib.use("Agg")
    t, e, r, group, site = make_fairness(3)
    rep = subgroup_report(t, e, r, attributes={"g": group, "site": site},
                          groups=np.arange(t.size), horizon=3.0, n_boot=20)
    ax = rep.plot(metric="auroc")
    assert any("too small" in label.get_text() for label in ax.get_yticklabels())


# ------------------------------------------------------------------ enrichment


def test_horizon_outcome():
    t = [1.0, 1.0, 5.0, 5.0, 2.0, 3.0, np.nan]
    e = [1, 0, 1, 0, 0, 1, 1]
    y = horizon_outcome(t, e, 3.0)
    np.testing.assert_array_equal(y, [1, np.nan, 0, 0, np.nan, 1, np.nan])


def test_perfect_ranking_gives_one_over_the_rate():
    rng = np.random.default_rng(0)
    n = 1000
    t = np.where(np.arange(n) < 150, rng.uniform(0.1, 2.9, n), rng.uniform(3.5, 9, n))
    e = (np.arange(n) < 150).astype(float)
    risk = -t  # events first
    rep = enrichment_report(risk, t, e, horizon=3.0, quantiles=(0.05, 0.1, 0.15, 0.3, 1.0),
                            n_boot=100)
    s = rep.summary.set_index("quantile")
    assert s.overall_rate.iloc[0] == pytest.approx(0.15)
    np.testing.assert_allclose(s.loc[[0.05, 0.1, 0.15], "enrichment"], 1 / 0.15)
    assert s.loc[0.3, "enrichment"] == pytest.approx(0.5 / 0.15)
    assert s.loc[1.0, "enrichment"] == pytest.approx(1.0)
    assert s.n_selected.tolist() == [50, 100, 150, 300, 1000]
    assert np.all((s.ci_low <= s.enrichment + 1e-12) & (s.enrichment <= s.ci_high + 1e-12))


def test_constant_risk_gives_exactly_one():
    t, e, _ = outcomes(997, 4, informative=True)
    rep = enrichment_report(np.zeros(t.size), t, e, horizon=3.0, n_boot=50)
    np.testing.assert_allclose(rep.summary.enrichment, 1.0, rtol=1e-12)
    np.testing.assert_allclose(rep.summary.ci_low, 1.0, rtol=1e-12)


def test_random_ranking_gives_about_one():
    t, e, _ = outcomes(100_000, 5, informative=True)
    risk = np.random.default_rng(9).normal(size=t.size)
    rep = enrichment_report(risk, t, e, horizon=3.0, quantiles=(0.1, 0.3, 0.5), n_boot=10)
    np.testing.assert_allclose(rep.summary.enrichment, 1.0, atol=0.06)


def test_informative_risk_enriches():
    t, e, r = outcomes(2000, 6, informative=True)
    rep = enrichment_report(r, t, e, horizon=3.0, n_boot=100)
    s = rep.summary.set_index("quantile")
    assert s.loc[0.1, "ci_low"] > 1.3
    assert s.loc[1.0, "enrichment"] == pytest.approx(1.0)


def test_eligibility_and_unknown_outcomes_are_counted():
    t, e, r = outcomes(500, 7, informative=True)
    t[:10] = np.nan  # prevalent
    eligible = np.arange(500) % 5 != 0
    rep = enrichment_report(r, t, e, horizon=3.0, eligible=eligible, n_boot=20)
    y = horizon_outcome(t, e, 3.0)
    prevalent = np.isnan(t)
    assert rep.n_ineligible == 100
    assert rep.n_not_at_risk == int((eligible & prevalent).sum()) == 8
    assert rep.n_unknown == int((eligible & ~prevalent & np.isnan(y)).sum()) > 0
    assert rep.n_evaluable == int((eligible & np.isfinite(y)).sum())
    assert rep.n_total == rep.n_ineligible + rep.n_not_at_risk + rep.n_unknown + rep.n_evaluable
    assert rep.n_events == int(np.nansum(y[eligible]))
    assert (rep.summary.n_excluded == 108).all() and (rep.summary.n_unknown == rep.n_unknown).all()
    assert rep.summary.n_selected.iloc[-1] == rep.n_evaluable


def test_enrichment_resample_equals_the_resampled_arrays():
    rng = np.random.default_rng(8)
    risk = np.round(rng.normal(size=60), 1)  # ties
    y = (rng.random(60) < 0.3).astype(float)
    w = rng.integers(0, 3, size=(4, 60)).astype(float)
    q = np.array([0.1, 0.25, 1.0])
    k, ev, tot, tot_e = _enrichment(risk, y, w, q)
    for b in range(4):
        idx = np.repeat(np.arange(60), w[b].astype(int))
        k1, ev1, tot1, tot_e1 = _enrichment(risk[idx], y[idx], np.ones((1, idx.size)), q)
        np.testing.assert_allclose(ev[b], ev1[0], rtol=1e-12)
        assert np.array_equal(k[b], k1[0]) and tot[b] == tot1[0] and tot_e[b] == tot_e1[0]


def test_enrichment_report_contract(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    t, e, r = outcomes(300, 9, informative=True)
    rep = enrichment_report(r, t, e, horizon=3.0, groups=np.arange(300) // 2, n_boot=50)
    assert list(rep.summary.columns) == ["quantile", "n_selected", "n_events", "event_rate",
                                         "overall_rate", "enrichment", "ci_low", "ci_high",
                                         "n_excluded", "n_unknown"]
    rep.to_json(tmp_path / "e.json")
    rep.to_csv(tmp_path / "e.csv")
    assert json.loads((tmp_path / "e.json").read_text())["n_total"] == 300
    assert rep.plot().get_xlabel().startswith("Fraction")
    assert "\n" not in repr(rep)
    with pytest.raises(InvalidParameterError, match="quantiles"):
        enrichment_report(r, t, e, horizon=3.0, quantiles=(0.0, 0.5), n_boot=5)


def test_inclusion_mask():
    table = pd.DataFrame({"age": [35, 40, 60, 75, 80, np.nan], "gender": list("FMFMFM"),
                          "site": ["a", "b", "a", "c", "a", "a"],
                          "copd": [False, False, True, False, False, False]})
    np.testing.assert_array_equal(inclusion_mask(table, age=(40, 75)),
                                  [False, True, True, True, False, False])
    np.testing.assert_array_equal(inclusion_mask(table, sex="F", site=["a", "c"], exclude="copd"),
                                  [True, False, False, False, True, False])
    np.testing.assert_array_equal(inclusion_mask(table, age=(None, 60)),
                                  [True, True, True, False, False, False])
    with pytest.raises(InvalidParameterError, match="no column 'race'"):
        inclusion_mask(table, exclude="race")
    with pytest.raises(InvalidParameterError, match="no column 'site'"):
        inclusion_mask(table.drop(columns="site"), site="a")
    with pytest.raises(InvalidParameterError, match="do not occur"):
        inclusion_mask(table, site="z")
    with pytest.warns(DataWarning, match="no value"):
        mask = inclusion_mask(table, exclude=[False, None, False, False, False, False])
    assert mask.tolist() == [True, False, True, True, True, True]


def test_rank_candidates():
    risk = np.array([0.2, 0.9, 0.5, 0.9, -1.0, np.nan])
    ids = np.array(["a", "b", "c", "d", "e", "f"])
    eligible = np.array([True, True, True, True, False, True])
    with pytest.warns(DataWarning, match="1 eligible candidates"):
        ranked = rank_candidates(risk, ids=ids, eligible=eligible)
    assert list(ranked.columns) == ["rank", "id", "risk", "percentile"]
    assert ranked.id.tolist() == ["b", "d", "c", "a"] and ranked["rank"].tolist() == [1, 2, 3, 4]
    assert ranked.percentile.tolist() == [100.0, 100.0, 50.0, 25.0]

"""Metrics agree with scikit-learn; subject-level bootstrap intervals behave; reports and AHI."""
import functools
import json
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from sleepfm.eval import (  # noqa: E402
    accuracy,
    auprc,
    auroc,
    binary_f1,
    bootstrap_ci,
    cohen_kappa,
    confusion_matrix,
    event_report,
    macro_f1,
    per_class_f1,
    plot_hypnogram,
    severity_agreement,
    staging_report,
)
from sleepfm.eval.metrics import _event_metrics  # noqa: E402
from sleepfm.exceptions import DataWarning, LabelError  # noqa: E402
from sleepfm.vocab import ahi, ahi_severity, group_stages  # noqa: E402


@pytest.fixture(scope="module")
def staged():
    """Fixed labels with unscored epochs and ~70 % correct predictions."""
    rng = np.random.default_rng(42)
    t = rng.integers(-1, 5, 4000)
    p = np.where(rng.random(4000) < 0.7, np.clip(t, 0, 4), rng.integers(0, 5, 4000))
    return t, p, t >= 0


@pytest.fixture(scope="module")
def events():
    """Binary events (with -1) and tied, rounded scores."""
    rng = np.random.default_rng(7)
    t = rng.integers(0, 2, 3000)
    s = np.round(rng.random(3000) * 0.8 + 0.4 * t, 2)
    t[rng.random(3000) < 0.05] = -1
    return t, s, t >= 0


def subjects_data(n_subjects, n_epochs=200, seed=0):
    """Per-subject accuracy varies, so subject resampling matters."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_subjects), n_epochs)
    skill = np.repeat(rng.uniform(0.4, 0.9, n_subjects), n_epochs)
    t = rng.integers(0, 5, groups.size)
    p = np.where(rng.random(groups.size) < skill, t, rng.integers(0, 5, groups.size))
    return t, p, groups


def test_classification_metrics_match_sklearn(staged):
    t, p, m = staged
    assert accuracy(t, p) == pytest.approx(skm.accuracy_score(t[m], p[m]))
    assert macro_f1(t, p) == pytest.approx(skm.f1_score(t[m], p[m], average="macro"))
    np.testing.assert_allclose(per_class_f1(t, p), skm.f1_score(t[m], p[m], average=None))
    np.testing.assert_array_equal(
        confusion_matrix(t, p), skm.confusion_matrix(t[m], p[m], labels=range(5))
    )
    for weights in (None, "linear", "quadratic"):
        expected = skm.cohen_kappa_score(t[m], p[m], labels=range(5), weights=weights)
        assert cohen_kappa(t, p, weights=weights) == pytest.approx(expected)


def test_metrics_on_nights_equal_flat(staged):
    t, p, _ = staged
    nights_t, nights_p = np.split(t, [1000, 2500]), np.split(p, [1000, 2500])
    assert macro_f1(nights_t, nights_p) == macro_f1(t, p)
    assert cohen_kappa(nights_t, nights_p) == cohen_kappa(t, p)


def test_absent_class_keeps_fixed_shape():
    t = np.array([0, 0, 2, 2, -1, 4])
    p = np.array([0, 2, 2, 2, 1, 4])
    cm = confusion_matrix(t, p)
    assert cm.shape == (5, 5) and cm.sum() == 5  # the unscored epoch is dropped
    f1 = per_class_f1(t, p)
    assert np.isnan(f1[1]) and np.isnan(f1[3])
    # macro-F1 averages the classes present, like scikit-learn without `labels`
    m = t >= 0
    assert macro_f1(t, p) == pytest.approx(skm.f1_score(t[m], p[m], average="macro"))


def test_label_errors_say_what_to_do():
    with pytest.raises(LabelError, match="n_classes"):
        accuracy([0, 5], [0, 1])
    with pytest.raises(LabelError, match="one prediction per epoch"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(LabelError, match="every scored epoch"):
        accuracy([0, 1], [0, -1])


def test_event_metrics_match_sklearn(events):
    t, s, m = events
    assert auroc(t, s) == pytest.approx(skm.roc_auc_score(t[m], s[m]))
    assert auprc(t, s) == pytest.approx(skm.average_precision_score(t[m], s[m]))
    assert binary_f1(t, s, threshold=0.6) == pytest.approx(skm.f1_score(t[m], s[m] >= 0.6))
    assert auroc([0, 0, 1], [0.1, 0.2, 0.4]) == 1.0
    assert np.isnan(auroc([1, 1, -1], [0.1, 0.2, 0.3]))  # one class: undefined, not an error


def test_group_stages():
    y = np.array([0, 1, 2, 3, 4, -1])
    np.testing.assert_array_equal(group_stages(y, "osf4"), [0, 1, 1, 2, 3, -1])
    np.testing.assert_array_equal(group_stages(y), y)
    nights = group_stages([y, y[:2]], scheme="osf4")
    assert len(nights) == 2 and nights[1].tolist() == [0, 1]
    with pytest.raises(LabelError, match="N4 folds"):
        group_stages([5])
    with pytest.raises(ValueError, match="Allowed values"):
        group_stages(y, scheme="osf3")


def test_bootstrap_contains_point_and_matches_full_sample():
    t, p, g = subjects_data(40)
    point, low, high = bootstrap_ci(macro_f1, t, p, groups=g, n_boot=300)
    assert point == pytest.approx(skm.f1_score(t, p, average="macro"))
    assert low < point < high


def test_bootstrap_fast_path_equals_resample_loop():
    t, p, g = subjects_data(25, seed=3)
    for fn in (macro_f1, cohen_kappa, functools.partial(cohen_kappa, weights="quadratic"),
               per_class_f1):
        fast = bootstrap_ci(fn, t, p, groups=g, n_boot=100, seed=5)
        slow = bootstrap_ci(lambda a, b, fn=fn: fn(a, b), t, p, groups=g, n_boot=100, seed=5)
        for x, y in zip(fast, slow):
            np.testing.assert_allclose(x, y)


def test_bootstrap_shrinks_with_more_subjects():
    widths = []
    for n in (10, 160):
        t, p, g = subjects_data(n, n_epochs=100, seed=n)
        _, low, high = bootstrap_ci(cohen_kappa, t, p, groups=g, n_boot=400)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_bootstrap_resamples_subjects_not_epochs():
    # Two subjects with very different accuracy: a subject-level interval must be wide.
    t = np.zeros(2000, dtype=int)
    p = np.r_[np.zeros(1000, dtype=int), np.ones(1000, dtype=int)]
    g = np.repeat(["a", "b"], 1000)
    _, low, high = bootstrap_ci(accuracy, t, p, groups=g, n_boot=200)
    assert low == 0.0 and high == 1.0


def test_bootstrap_is_deterministic_and_fast():
    t, p, g = subjects_data(100, n_epochs=1000, seed=1)
    start = time.perf_counter()
    first = bootstrap_ci(macro_f1, t, p, groups=g, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 5.0  # ~0.02 s on one core
    assert first == bootstrap_ci(macro_f1, t, p, groups=g, n_boot=1000, seed=0)
    assert first != bootstrap_ci(macro_f1, t, p, groups=g, n_boot=1000, seed=1)


def test_bootstrap_skips_undefined_resamples_and_warns():
    # Only one subject has positives: most resamples have a single class (AUROC undefined).
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(10), 50)
    t = np.where(g == 0, rng.integers(0, 2, 500), 0)
    s = rng.random(500)
    with pytest.warns(DataWarning, match="skipped"):
        point, low, high = bootstrap_ci(auroc, t, s, groups=g, n_boot=200)
    assert np.isfinite(point) and np.isfinite(low) and low <= high
    with pytest.warns(DataWarning, match="undefined on the full sample"):
        point, low, high = bootstrap_ci(auroc, np.zeros(500, int), s, groups=g, n_boot=10)
    assert np.isnan(point) and np.isnan(low) and np.isnan(high)


def test_staging_report(tmp_path):
    t, p, g = subjects_data(30, seed=2)
    t[::17] = -1
    report = staging_report(t, p, groups=g, n_boot=200)
    s = report.summary.set_index("metric")
    m = t >= 0
    assert list(report.summary.columns) == ["metric", "value", "ci_low", "ci_high"]
    assert s.loc["accuracy", "value"] == pytest.approx(skm.accuracy_score(t[m], p[m]))
    assert s.loc["kappa", "value"] == pytest.approx(skm.cohen_kappa_score(t[m], p[m]))
    assert s.loc["f1_REM", "value"] == pytest.approx(skm.f1_score(t[m], p[m], average=None)[4])
    assert np.all(s["ci_low"] <= s["value"]) and np.all(s["value"] <= s["ci_high"])
    assert report.n_subjects == 30 and report.n_epochs == int(m.sum())
    assert "StagingReport | 30 subjects" in repr(report)
    report.to_json(tmp_path / "metrics.json")
    back = json.loads((tmp_path / "metrics.json").read_text())
    assert back["summary"]["macro_f1"]["value"] == pytest.approx(s.loc["macro_f1", "value"])
    assert np.array(back["confusion"]).sum() == m.sum()
    ax = report.plot()
    assert len(ax.texts) == 25
    plt.close("all")


def test_staging_report_on_nights_with_per_night_groups():
    t, p, g = subjects_data(12, seed=4)
    nights_t, nights_p = np.split(t, 24), np.split(p, 24)
    per_night = np.repeat(np.arange(12), 2)
    a = staging_report(nights_t, nights_p, groups=per_night, n_boot=50).summary
    b = staging_report(t, p, groups=g, n_boot=50).summary
    np.testing.assert_allclose(a[["value", "ci_low", "ci_high"]], b[["value", "ci_low", "ci_high"]])


def test_event_report_matches_sklearn_and_resample_loop():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(20), 100)
    t = (rng.random(2000) < 0.2).astype(int)
    s = np.round(rng.random(2000) * 0.7 + 0.3 * t, 2)
    t[::50] = -1
    report = event_report(t, s, groups=g, n_boot=100, seed=9, name="apnea")
    m = t >= 0
    summary = report.summary.set_index("metric")
    assert summary.loc["auroc", "value"] == pytest.approx(skm.roc_auc_score(t[m], s[m]))
    assert summary.loc["auprc", "value"] == pytest.approx(skm.average_precision_score(t[m], s[m]))
    assert summary.loc["prevalence", "value"] == pytest.approx(t[m].mean())
    loop = bootstrap_ci(functools.partial(_event_metrics, threshold=0.5), t[m], s[m],
                        groups=g[m], n_boot=100, seed=9)
    np.testing.assert_allclose(summary["ci_low"], loop[1])
    np.testing.assert_allclose(summary["ci_high"], loop[2])
    assert report.to_dict()["name"] == "apnea"
    report.plot()
    plt.close("all")


def test_plot_hypnogram():
    y = np.array([0, 0, 1, 2, 2, 3, 3, 2, 4, 4, -1, 0])
    ax = plot_hypnogram(y, np.roll(y, 1))
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["W", "REM", "N1", "N2", "N3"]
    assert len(ax.lines) == 2
    with pytest.raises(LabelError):
        plot_hypnogram(y, y[:-1])
    plt.close("all")


def test_ahi_and_severity():
    assert ahi(40, 8.0) == 5.0
    np.testing.assert_allclose(ahi([10, 90], [5.0, 6.0]), [2.0, 15.0])
    with pytest.raises(ValueError, match="drop those nights"):
        ahi([1, 2], [7.0, 0.0])
    np.testing.assert_array_equal(
        ahi_severity([0, 4.99, 5, 14.9, 15, 29.9, 30, 80]), [0, 0, 1, 1, 2, 2, 3, 3]
    )
    assert ahi_severity(12.0) == 1
    true = np.array([1.0, 7.0, 20.0, 45.0, 3.0, 16.0])
    pred = np.array([2.0, 4.0, 31.0, 50.0, 6.0, 14.0])
    out = severity_agreement(true, pred)
    gt, gp = ahi_severity(true), ahi_severity(pred)
    assert out["accuracy"] == pytest.approx(np.mean(gt == gp))
    assert out["kappa"] == pytest.approx(
        skm.cohen_kappa_score(gt, gp, labels=range(4), weights="linear"))
    quad = severity_agreement(true, pred, weights="quadratic")["kappa"]
    assert quad == pytest.approx(skm.cohen_kappa_score(gt, gp, labels=range(4),
                                                       weights="quadratic"))
    assert out["n"] == 6

"""Survival metrics: Harrell's C-index and the time-dependent AUROC, with subject-level bootstrap
intervals, significance across phenotypes and Kaplan–Meier curves by risk quartile.

Scores are *risks*: higher means an earlier event (a log-hazard). lifelines' ``concordance_index``
expects the opposite (higher = longer survival), so it is given ``-risk``. Times are in years; NaN
in a time or event marks a subject not at risk (prevalent or unknown), left out of that metric.

The bootstrap is exact and vectorised: drawing subjects with replacement weights each row by its
subject's draw count ``w``, and both metrics are ratios of bilinear forms ``w' A w / w' B w`` over
pair matrices, so all resamples of a phenotype cost one matrix product (chunked). The duplicates of
a drawn subject are never comparable with each other (same time and event), exactly as when the
arrays are resampled explicitly.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index as _lifelines_concordance

from ..exceptions import InvalidParameterError
from ..utils import to_jsonable
from .bootstrap import percentile_interval, subject_resamples
from .plots import _axes
from .reports import Report

logger = logging.getLogger(__name__)

#: Metrics of the bootstrap engine, in the order of its last axis.
METRICS = ("c_index", "auroc")
#: Risks closer than this are tied in the AUROC (scikit-survival's ``tied_tol``).
TIED_TOL = 1e-8
_CHUNK = 1 << 22  # elements of one pair-matrix block / product output


def concordance_index(time, risk, event) -> float:
    """Harrell's C-index of risk scores (``lifelines.utils.concordance_index(time, -risk, event)``).

    Parameters
    ----------
    time : array-like of float
        Time to the event or to censoring; NaN marks a subject not at risk (left out).
    risk : array-like of float
        Higher = earlier event.
    event : array-like of {0, 1}
        1 = the event was observed at ``time``; NaN = not at risk.

    Returns
    -------
    float
        Concordant pairs (ties in risk count half) over comparable pairs: an event before another
        subject's time, or before or at the time of a censored one; NaN without comparable pairs.
    """
    time, risk, event = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (time, risk, event))
    keep = np.isfinite(time) & np.isfinite(event) & np.isfinite(risk)
    if not keep.any() or not event[keep].any():
        return float("nan")
    try:
        return float(_lifelines_concordance(time[keep], -risk[keep], event[keep]))
    except ZeroDivisionError:  # no comparable pair
        return float("nan")


# --------------------------------------------------------------------------- input checks


def _vector(name: str, a, n: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InvalidParameterError(f"{name!r} must be 1-D (one value per subject), got shape "
                                    f"{a.shape}; pass one phenotype's column.")
    if n is not None and a.size != n:
        raise InvalidParameterError(f"{name!r} has {a.size} values but 'time' has {n}; give "
                                    "every array one entry per subject.")
    return a


def _check_outcome(time: np.ndarray, event: np.ndarray, where: str = "") -> None:
    bad = np.isfinite(event) & (event != 0) & (event != 1)
    if bad.any():
        raise InvalidParameterError(f"{where}'event' must be 0, 1 or NaN; {int(bad.sum())} values "
                                    f"are not (e.g. {event[bad][0]!r}).")
    neg = np.isfinite(time) & (time < 0)
    if neg.any():
        raise InvalidParameterError(f"{where}{int(neg.sum())} times are negative (e.g. "
                                    f"{time[neg][0]!r}); times run from the PSG, prevalent "
                                    "subjects should be NaN.")


def _check_horizon(horizon) -> float:
    h = float(horizon)
    if not np.isfinite(h) or h <= 0:
        raise InvalidParameterError(f"'horizon' must be a positive number of years, got {horizon!r}.")
    return h


def _at_risk(time, event, risk=None) -> np.ndarray:
    keep = np.isfinite(time) & np.isfinite(event)
    return keep & np.isfinite(risk) if risk is not None else keep


# --------------------------------------------------------------------------- censoring (IPCW)


def _censoring_km(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan–Meier of the censoring distribution as scikit-survival's
    ``CensoringDistributionEstimator``: events at a time precede censoring at that time."""
    if time.size == 0:
        raise InvalidParameterError("no subject at risk to estimate the censoring distribution "
                                    "from; pass train_time/train_event with finite values.")
    u, inv = np.unique(time, return_inverse=True)
    if np.all(event == 1):
        return u, np.ones(u.size)
    d = np.bincount(inv, weights=event, minlength=u.size)
    total = np.bincount(inv, minlength=u.size)
    at_risk = time.size - np.r_[0, np.cumsum(total)[:-1]] - d
    c = total - d
    ratio = np.divide(c, at_risk, out=np.zeros(u.size), where=c != 0)
    return np.r_[-np.inf, u], np.r_[1.0, np.cumprod(1.0 - ratio)]


def _censoring_at(km, t: np.ndarray) -> np.ndarray:
    """``G(t)``, the censoring survival at ``t`` (step value including ``t``); NaN past the last
    training time when ``G`` has not reached 0 there (scikit-survival raises)."""
    u, p = km
    out = np.zeros(t.shape)
    extends = t > u[-1]
    out[extends] = np.nan if p[-1] > 0 else 0.0
    idx = np.searchsorted(u, t[~extends])
    exact = np.abs(u[idx] - t[~extends]) < np.finfo(np.float64).eps
    idx[~exact] -= 1
    out[~extends] = p[idx]
    return out


def _ipcw(time, event, horizon, km, where: str = "") -> np.ndarray:
    """``1 / G(t_i)`` for the cases (event by ``horizon``), 0 for everyone else."""
    case = (event == 1) & (time <= horizon)
    omega = np.zeros(time.shape)
    g = _censoring_at(km, time[case])
    if np.isnan(g).any():
        raise InvalidParameterError(
            f"{where}{int(np.isnan(g).sum())} events by the horizon (up to "
            f"{time[case][np.isnan(g)].max():g} y) fall after the last training follow-up time "
            f"({km[0][-1]:g} y), where the censoring distribution is unknown. Choose a horizon "
            "within the training follow-up, or pass train_time=None to estimate it on the test set.")
    if (g == 0).any():
        raise InvalidParameterError(
            f"{where}the censoring survival is 0 at {int((g == 0).sum())} events by the horizon "
            f"(up to {time[case][g == 0].max():g} y): no training subject is followed that long "
            f"(training follow-up ends with censoring at {km[0][-1]:g} y). Choose an earlier "
            "horizon, or pass train_time=None to estimate it on the test set.")
    omega[case] = 1.0 / g
    return omega


# --------------------------------------------------------------------------- weighted metrics


def _tie_groups(risk: np.ndarray, tol: float) -> np.ndarray:
    """Group index of every risk, 0 = highest; consecutive sorted risks within ``tol`` chain."""
    order = np.argsort(-risk, kind="stable")
    new = np.r_[True, np.abs(np.diff(risk[order])) > tol]
    gid = np.empty(risk.size, dtype=np.int64)
    gid[order] = np.cumsum(new) - 1
    return gid


def _group_sum(w: np.ndarray, gid: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.zeros((w.shape[0], n_groups))
    if gid.size:
        order = np.argsort(gid, kind="stable")
        g = gid[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        out[:, g[starts]] = np.add.reduceat(w[:, order], starts, axis=1)
    return out


def _weighted_auc(time, event, risk, omega, weights, horizon) -> np.ndarray:
    gid = _tie_groups(risk, TIED_TOL)
    n_groups = int(gid.max()) + 1 if gid.size else 0
    case, ctrl = omega > 0, time > horizon
    cw = _group_sum(weights[:, case] * omega[case], gid[case], n_groups)
    cc = _group_sum(weights[:, ctrl], gid[ctrl], n_groups)
    num = np.sum(cc * (np.cumsum(cw, axis=1) - 0.5 * cw), axis=1)
    den = cw.sum(axis=1) * cc.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_cindex(time, event, risk, weights) -> np.ndarray:
    ev = np.flatnonzero(event == 1)
    n_boot, n = weights.shape
    num, den = np.zeros(n_boot), np.zeros(n_boot)
    if ev.size == 0:
        return np.full(n_boot, np.nan)
    te, re, we = time[ev, None], risk[ev, None], weights[:, ev]
    step = max(1, min(_CHUNK // ev.size, _CHUNK // n_boot))
    for start in range(0, n, step):
        j = slice(start, start + step)
        tj, ej, rj = time[None, j], event[None, j], risk[None, j]
        comparable = (te < tj) | ((te == tj) & (ej == 0))
        concordant = comparable * ((re > rj) + 0.5 * (re == rj))
        prod = we @ np.hstack([concordant, comparable.astype(np.float64)])
        wj, k = weights[:, j], tj.shape[1]
        num += np.sum(prod[:, :k] * wj, axis=1)
        den += np.sum(prod[:, k:] * wj, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _metrics(time, event, risk, omega, weights, horizon) -> np.ndarray:
    """``(n_weightings, 2)``: C-index and AUROC of every row weighting (rows at risk only)."""
    return np.column_stack([_weighted_cindex(time, event, risk, weights),
                            _weighted_auc(time, event, risk, omega, weights, horizon)])


def _prepare(time, event, risk, horizon, train_time, train_event, where=""):
    """Validate one phenotype; return the at-risk mask and the IPCW of its rows."""
    time = _vector("time", time)
    event, risk = _vector("event", event, time.size), _vector("risk", risk, time.size)
    _check_outcome(time, event, where)
    keep = _at_risk(time, event, risk)
    if train_time is None:
        km = _censoring_km(time[keep], event[keep])
    else:
        tt = _vector("train_time", train_time)
        te = _vector("train_event", train_event, tt.size)
        _check_outcome(tt, te, where + "training ")
        ok = _at_risk(tt, te)
        km = _censoring_km(tt[ok], te[ok])
    omega = _ipcw(time[keep], event[keep], horizon, km, where)
    return time, event, risk, keep, omega


def weighted_survival_metrics(time, event, risk, weights, *, horizon: float, train_time=None,
                              train_event=None) -> np.ndarray:
    """C-index and AUROC at ``horizon`` under row weights (e.g. bootstrap draw counts).

    Parameters
    ----------
    time, event, risk : array-like, shape (n,)
        One phenotype; NaN time, event or risk leaves a row out.
    weights : array-like, shape (n_weightings, n) or (n,)
        Non-negative weight of every row; an integer weight ``c`` gives the metric of the arrays
        with that row repeated ``c`` times.
    horizon : float
        Years; see :func:`cumulative_dynamic_auc`.
    train_time, train_event : array-like, optional
        Estimate the censoring distribution (else the unweighted rows at risk do). It is held
        fixed across weightings.

    Returns
    -------
    ndarray, shape (n_weightings, 2)
        Columns ``METRICS`` = (``c_index``, ``auroc``); NaN where undefined.

    Raises
    ------
    InvalidParameterError
        Bad shapes or values, or a case beyond the training follow-up.
    """
    horizon = _check_horizon(horizon)
    time, event, risk, keep, omega = _prepare(time, event, risk, horizon, train_time, train_event)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if weights.shape[1] != time.size or (weights < 0).any():
        raise InvalidParameterError(f"'weights' must be non-negative with {time.size} columns, got "
                                    f"shape {weights.shape}.")
    return _metrics(time[keep], event[keep], risk[keep], omega, weights[:, keep], horizon)


def cumulative_dynamic_auc(train_time, train_event, test_time, test_event, risk,
                           horizon: float) -> float:
    """Time-dependent AUROC at one horizon: cumulative cases, dynamic controls, IPCW.

    Equals ``sksurv.metrics.cumulative_dynamic_auc(y_train, y_test, risk, [horizon])[0][0]``.

    Parameters
    ----------
    train_time, train_event : array-like, shape (n_train,)
        Data the Kaplan–Meier estimate of the censoring distribution ``G`` comes from (pass the
        test arrays to use the test set); NaN rows are left out.
    test_time, test_event, risk : array-like, shape (n,)
        Test outcomes and risks (higher = earlier event); NaN rows are left out.
    horizon : float
        Years.

    Returns
    -------
    float
        ``sum_{i case, j control} w_i [I(r_i > r_j) + I(r_i ~ r_j)/2] / (sum_i w_i * n_controls)``
        with cases ``event = 1, time <= horizon`` (weight ``w_i = 1/G(t_i)``, ``G`` the step value
        including ``t_i``; events precede censoring at tied times) and controls ``time > horizon``;
        risks within ``1e-8`` (chained in sorted order) are tied. NaN without a case or a control.

    Raises
    ------
    InvalidParameterError
        Bad values, or a case lies after the last training time while ``G`` is still positive
        there, or ``G = 0`` at a case (where scikit-survival raises ``ValueError``).

    Notes
    -----
    Differences from scikit-survival, where it raises: a horizon outside the test follow-up or a
    test set without events gives NaN (no case or no control); events *after* the horizon beyond
    the training follow-up are allowed (they carry no weight); an all-censored training set is
    used as is.
    """
    horizon = _check_horizon(horizon)
    t, e, r, keep, omega = _prepare(test_time, test_event, risk, horizon, train_time, train_event)
    return float(_weighted_auc(t[keep], e[keep], r[keep], omega, np.ones((1, int(keep.sum()))),
                               horizon)[0])


# --------------------------------------------------------------------------- bootstrap engine


def resample_counts(groups, *, n_boot: int = 1000, seed: int = 0, strata=None):
    """Subject draw counts of the bootstrap, optionally stratified.

    Parameters
    ----------
    groups : array-like, shape (n,)
        Subject id of every row.
    n_boot : int, default=1000
    seed : int, default=0
    strata : array-like, shape (n,), optional
        Stratum of every row (constant within a subject, e.g. an age decile); subjects are then
        drawn within their stratum, so every resample keeps the strata sizes.

    Returns
    -------
    codes : ndarray of int, shape (n,)
        Subject index of every row (sorted order of the ids).
    counts : ndarray of int, shape (n_boot, n_subjects)
        Draws of every subject; without strata identical to :func:`subject_resamples`.

    Raises
    ------
    InvalidParameterError
        A subject in two strata, or ``strata`` of the wrong length.
    """
    if strata is None:
        codes, _, counts = subject_resamples(groups, n_boot=n_boot, seed=seed)
        return codes, counts
    groups, strata = np.asarray(groups), np.asarray(strata)
    if strata.shape != groups.shape:
        raise InvalidParameterError(f"'strata' needs one value per row like 'groups' "
                                    f"({groups.size}), got shape {strata.shape}.")
    ids, codes = np.unique(groups, return_inverse=True)
    frame = pd.DataFrame({"s": codes, "k": pd.factorize(strata, use_na_sentinel=False)[0]})
    mixed = frame.groupby("s")["k"].nunique()
    if (mixed > 1).any():
        raise InvalidParameterError(f"{int((mixed > 1).sum())} subjects lie in several strata "
                                    f"(e.g. {ids[mixed.index[mixed > 1][0]]!r}); give each subject "
                                    "one stratum.")
    stratum = frame.groupby("s")["k"].first().to_numpy()
    seeds = np.random.SeedSequence(seed).generate_state(int(stratum.max()) + 1)
    counts = np.zeros((n_boot, ids.size), dtype=np.int64)
    for k, s in enumerate(seeds):
        members = np.flatnonzero(stratum == k)
        counts[:, members] = subject_resamples(members, n_boot=n_boot, seed=int(s))[2]
    return codes, counts


def _matrix(name: str, a, n: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    if a.ndim != 2 or (n is not None and a.shape[0] != n):
        raise InvalidParameterError(f"{name!r} must be [n_subjects, n_phenotypes]"
                                    f"{f' with {n} rows' if n else ''}, got shape {a.shape}.")
    return a


@dataclass(repr=False)
class SurvivalBootstrap:
    """Point values and bootstrap resamples of :data:`METRICS` for K phenotypes.

    Attributes
    ----------
    point : ndarray, shape (K, 2)
    values : ndarray, shape (n_boot, K, 2)
        NaN where a resample leaves a metric undefined.
    n, n_events : ndarray of int, shape (K,)
        Rows at risk and their events.
    """

    point: np.ndarray
    values: np.ndarray
    n: np.ndarray
    n_events: np.ndarray

    def __repr__(self) -> str:
        return (f"<SurvivalBootstrap | {self.point.shape[0]} phenotypes x "
                f"{self.values.shape[0]} resamples>")


def bootstrap_survival(time, event, risk, *, groups, horizon: float, train_time=None,
                       train_event=None, n_boot: int = 1000, seed: int = 0,
                       strata=None, phenotypes=None) -> SurvivalBootstrap:
    """C-index and AUROC at ``horizon`` of K phenotypes with subject-level bootstrap resamples.

    Parameters
    ----------
    time, event, risk : array-like, shape (n, K) or (n,)
        NaN time or event = not at risk for that phenotype.
    groups : array-like, shape (n,)
        Subject id per row; all rows of a drawn subject come along.
    horizon : float
        Years.
    train_time, train_event : array-like, shape (n_train, K), optional
        Censoring distribution per phenotype (else the test rows at risk); fixed across resamples.
    n_boot, seed, strata
        See :func:`resample_counts`; all phenotypes share the same draws.
    phenotypes : sequence of str, optional
        Names used in error messages.

    Returns
    -------
    SurvivalBootstrap
        ``point`` equals :func:`concordance_index` and :func:`cumulative_dynamic_auc`; resample
        ``b`` equals them on the arrays resampled with ``counts[b]``.

    Raises
    ------
    InvalidParameterError
        Shapes or values that do not fit (see :func:`cumulative_dynamic_auc`).
    """
    horizon = _check_horizon(horizon)
    time = _matrix("time", time)
    event, risk = _matrix("event", event, time.shape[0]), _matrix("risk", risk, time.shape[0])
    if not event.shape == risk.shape == time.shape:
        raise InvalidParameterError(f"'time' {time.shape}, 'event' {event.shape} and 'risk' "
                                    f"{risk.shape} must have the same shape.")
    if train_time is not None:
        train_time = _matrix("train_time", train_time)
        train_event = _matrix("train_event", train_event, train_time.shape[0])
        if train_time.shape[1] != time.shape[1] or train_event.shape != train_time.shape:
            raise InvalidParameterError(f"'train_time'/'train_event' need {time.shape[1]} "
                                        f"columns like 'time', got {train_time.shape}.")
    groups = np.asarray(groups)
    if groups.shape != (time.shape[0],):
        raise InvalidParameterError(f"'groups' needs one subject id per row ({time.shape[0]}), "
                                    f"got shape {groups.shape}.")
    codes, counts = resample_counts(groups, n_boot=n_boot, seed=seed, strata=strata)
    weights = np.vstack([np.ones((1, codes.size)), counts[:, codes].astype(np.float64)])
    n_pheno = time.shape[1]
    names = list(phenotypes) if phenotypes is not None else [str(k) for k in range(n_pheno)]
    if len(names) != n_pheno:
        raise InvalidParameterError(f"{len(names)} phenotype names for {n_pheno} columns of "
                                    "'time'; give one name per column.")
    out = np.empty((n_boot + 1, n_pheno, 2))
    n, n_ev = np.zeros(n_pheno, dtype=int), np.zeros(n_pheno, dtype=int)
    for k in range(n_pheno):
        tr = (None, None) if train_time is None else (train_time[:, k], train_event[:, k])
        t, e, r, keep, omega = _prepare(time[:, k], event[:, k], risk[:, k], horizon, *tr,
                                        where=f"phenotype {names[k]}: ")
        out[:, k] = _metrics(t[keep], e[keep], r[keep], omega, weights[:, keep], horizon)
        n[k], n_ev[k] = int(keep.sum()), int(e[keep].sum())
    return SurvivalBootstrap(out[0], out[1:], n, n_ev)


def bootstrap_p_value(values, null: float = 0.5) -> np.ndarray:
    """One-sided bootstrap p-value that a metric exceeds ``null``.

    ``(1 + #{b: value_b <= null}) / (1 + n_defined)``, undefined (NaN) resamples left out.

    Parameters
    ----------
    values : array-like, shape (n_boot, ...)
    null : float, default=0.5

    Returns
    -------
    ndarray, shape (...)
        NaN where no resample is defined.
    """
    values = np.asarray(values, dtype=np.float64)
    defined = np.isfinite(values).sum(axis=0)
    below = np.sum(values <= null, axis=0)
    return np.where(defined > 0, (1.0 + below) / (1.0 + defined), np.nan)


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg q-values (adjusted p-values, as ``scipy.stats.false_discovery_control``).

    Parameters
    ----------
    p : array-like of float
        p-values in [0, 1]; NaN entries are left out of the count and get NaN.

    Returns
    -------
    ndarray
        ``q_(i) = min_{j >= i} p_(j) m / j``, capped at 1, in the order of ``p``.

    Raises
    ------
    InvalidParameterError
        A p-value outside [0, 1].
    """
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise InvalidParameterError("p-values must lie in [0, 1].")
    q = np.full(p.shape, np.nan)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        scaled = p[ok][order] * m / np.arange(1, m + 1)
        adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        q_ok = np.empty(m)
        q_ok[order] = adjusted
        q[ok] = q_ok
    return q


# --------------------------------------------------------------------------- report


def _records(frame: pd.DataFrame) -> list:
    return to_jsonable(frame.to_dict(orient="records"))


def _report_dict(report) -> dict:
    """A report's public fields as JSON types, the summary as a list of row records."""
    out = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)
           if not f.name.startswith("_")}
    out["summary"] = _records(report.summary)
    return to_jsonable(out)


@dataclass(repr=False)
class SurvivalReport(Report):
    """Disease prediction of K phenotypes: C-index and AUROC at a horizon with bootstrap CIs.

    Attributes
    ----------
    summary : DataFrame
        One row per phenotype and metric: ``phenotype, metric, value, ci_low, ci_high, p_value,
        q_value, n, n_events``.
    horizon : float
        Years.
    n_subjects, n_boot : int
    alpha : float
    censoring : str
        ``"train"`` or ``"test"``: where the censoring distribution was estimated.
    stratified : bool
    """

    summary: pd.DataFrame
    horizon: float
    n_subjects: int
    n_boot: int
    alpha: float
    censoring: str
    stratified: bool

    def __repr__(self) -> str:
        c = self.summary[self.summary.metric == "c_index"]
        sig = int((c.q_value < self.alpha).sum())
        return (f"<SurvivalReport | {len(c)} phenotypes, {self.n_subjects} subjects, horizon "
                f"{self.horizon:g} y | median C-index {c.value.median():.3f}, {sig} with q < "
                f"{self.alpha:g}>")

    def to_dict(self) -> dict:
        """The fields as JSON types; the summary as a list of row records."""
        return _report_dict(self)

    def plot(self, ax=None, *, metric: str = "c_index"):
        """Forest plot: ``metric`` with its CI per phenotype and a line at 0.5.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        metric : {"c_index", "auroc"}, default="c_index"

        Returns
        -------
        matplotlib Axes
        """
        rows = self.summary[self.summary.metric == metric].iloc[::-1]
        ax = _axes(ax, (5, 0.35 * len(rows) + 1.2))
        y = np.arange(len(rows))
        err = np.abs(np.vstack([rows.value - rows.ci_low, rows.ci_high - rows.value]))
        ax.errorbar(rows.value, y, xerr=np.nan_to_num(err), fmt="o", color="black", capsize=2)
        ax.axvline(0.5, color="grey", linestyle=":")
        ax.set_yticks(y, list(rows.phenotype))
        ax.set_xlabel({"c_index": "C-index", "auroc": f"AUROC at {self.horizon:g} y"}.get(metric,
                                                                                         metric))
        return ax


def survival_report(time, event, risk, *, groups, phenotypes=None, horizon: float,
                    train_time=None, train_event=None, n_boot: int = 1000, alpha: float = 0.05,
                    seed: int = 0, strata=None) -> SurvivalReport:
    """C-index and AUROC at ``horizon`` per phenotype with bootstrap CIs, p- and q-values.

    Parameters
    ----------
    time, event, risk : array-like, shape (n, K) or (n,)
        Years to event or censoring, 1/0 event, risk (higher = earlier). NaN time or event =
        not at risk for that phenotype (left out of its metrics).
    groups : array-like, shape (n,)
        Subject id per row; subjects are resampled with replacement.
    phenotypes : sequence of str, optional
        K names; default the columns of a DataFrame ``time``, else ``phenotype_0``...
    horizon : float
        Years, for the AUROC.
    train_time, train_event : array-like, shape (n_train, K), optional
        Training outcomes for the censoring distribution. Without them the test rows at risk
        estimate it (once; held fixed across resamples).
    n_boot : int, default=1000
    alpha : float, default=0.05
        Two-sided level of the intervals.
    seed : int, default=0
    strata : array-like, shape (n,), optional
        Resample subjects within strata (e.g. age deciles).

    Returns
    -------
    SurvivalReport
        ``p_value``: one-sided bootstrap p that the metric exceeds 0.5 (see
        :func:`bootstrap_p_value`); ``q_value``: Benjamini–Hochberg over phenotypes, per metric.

    Raises
    ------
    InvalidParameterError
        Shapes that do not match, bad values, or cases beyond the training follow-up.
    """
    if phenotypes is None:
        phenotypes = (list(time.columns) if isinstance(time, pd.DataFrame)
                      else [f"phenotype_{k}" for k in range(_matrix("time", time).shape[1])])
    phenotypes = [str(p) for p in phenotypes]
    boot = bootstrap_survival(time, event, risk, groups=groups, horizon=horizon,
                              train_time=train_time, train_event=train_event, n_boot=n_boot,
                              seed=seed, strata=strata, phenotypes=phenotypes)
    low, high = np.full(boot.point.shape, np.nan), np.full(boot.point.shape, np.nan)
    defined = np.isfinite(boot.point)  # no interval (nor warning) for undefined metrics
    if defined.any():
        low[defined], high[defined] = percentile_interval(boot.values[:, defined], alpha=alpha,
                                                          name="survival metrics")
    p = bootstrap_p_value(boot.values)
    q = np.column_stack([benjamini_hochberg(p[:, m]) for m in range(len(METRICS))])
    rows = [{"phenotype": name, "metric": metric, "value": boot.point[k, m], "ci_low": low[k, m],
             "ci_high": high[k, m], "p_value": p[k, m], "q_value": q[k, m], "n": boot.n[k],
             "n_events": boot.n_events[k]}
            for k, name in enumerate(phenotypes) for m, metric in enumerate(METRICS)]
    report = SurvivalReport(pd.DataFrame(rows), float(horizon), int(np.unique(groups).size),
                            int(n_boot), float(alpha), "test" if train_time is None else "train",
                            strata is not None)
    logger.info("%r", report)
    return report


def km_by_quartile(time, event, risk, ax=None, *, horizon: float | None = None):
    """Kaplan–Meier event-free curves of the four risk quartiles of one phenotype.

    Parameters
    ----------
    time, event, risk : array-like, shape (n,)
        NaN rows are left out; quartiles are cut on ranks (ties split by order).
    ax : matplotlib Axes, optional
    horizon : float, optional
        Years; marked with a vertical line.

    Returns
    -------
    matplotlib Axes

    Raises
    ------
    InvalidParameterError
        Fewer than 4 subjects at risk.
    """
    t, e = _vector("time", time), _vector("event", event, np.size(time))
    r = _vector("risk", risk, t.size)
    keep = _at_risk(t, e, r)
    if keep.sum() < 4:
        raise InvalidParameterError(f"{int(keep.sum())} subjects at risk; quartiles need 4.")
    t, e, r = t[keep], e[keep], r[keep]
    quart = pd.qcut(pd.Series(r).rank(method="first"), 4, labels=False).to_numpy()
    ax = _axes(ax, (5, 4))
    for k in range(4):
        m = quart == k
        label = f"Q{k + 1}{' (lowest risk)' if k == 0 else ' (highest risk)' if k == 3 else ''}"
        KaplanMeierFitter().fit(t[m], e[m], label=f"{label}: n={int(m.sum())}, "
                                f"{int(e[m].sum())} events").plot_survival_function(
            ax=ax, ci_show=False)
    if horizon is not None:
        ax.axvline(float(horizon), color="grey", linestyle=":")
    ax.set_xlabel("Years since PSG")
    ax.set_ylabel("Event-free probability")
    return ax

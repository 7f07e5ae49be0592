"""Subgroup (fairness) reports of disease prediction, in the spirit of Fairlearn's ``MetricFrame``.

For one phenotype, the C-index and the AUROC at a horizon are computed overall and within every
group of every attribute (sex, race, age band, site...), with subject-level bootstrap intervals
from one shared set of resamples, and compared to the overall value (difference, ratio) and
between groups. A group too small to score is a row with a reason, never dropped.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import InvalidParameterError
from ..utils import check_option
from .bootstrap import percentile_interval
from .plots import _axes
from .reports import Report
from .survival import (
    METRICS,
    _check_horizon,
    _metrics,
    _prepare,
    _records,
    _report_dict,
    resample_counts,
)

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"


def age_bands(age, edges=(18, 40, 50, 60, 70, 80)) -> pd.Categorical:
    """Age bands as ordered labels: ``"<40"``, ``"40-49"``, ..., ``">=80"``.

    Parameters
    ----------
    age : array-like of float
        Years; NaN becomes ``"unknown"``.
    edges : sequence of float, default=(18, 40, 50, 60, 70, 80)
        Increasing band edges. The first band, ``[edges[0], edges[1])``, is labelled
        ``"<{edges[1]}"`` (adults under 40); ages below ``edges[0]`` are ``"<{edges[0]}"``.

    Returns
    -------
    pandas.Categorical
        Ordered; ``"<18"`` and ``"unknown"`` are categories only when present.

    Raises
    ------
    InvalidParameterError
        Fewer than two edges, or edges not increasing.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InvalidParameterError(f"'edges' must be at least two increasing ages, got {edges}.")
    age = np.asarray(age, dtype=np.float64).reshape(-1)

    def fmt(x):
        return f"{x:g}"

    labels = [f"<{fmt(edges[1])}"] + [f"{fmt(a)}-{fmt(b - 1)}" for a, b in
                                       itertools.pairwise(edges[1:])] + [f">={fmt(edges[-1])}"]
    idx = np.searchsorted(edges, age, side="right") - 1  # -1 below edges[0]
    out = np.empty(age.size, dtype=object)
    finite = np.isfinite(age)
    out[~finite] = UNKNOWN
    below = finite & (idx < 0)
    out[below] = f"<{fmt(edges[0])}"
    rest = finite & (idx >= 0)
    out[rest] = np.asarray(labels, dtype=object)[np.minimum(idx[rest], len(labels) - 1)]
    categories = ([f"<{fmt(edges[0])}"] if below.any() else []) + labels + (
        [UNKNOWN] if (~finite).any() else [])
    return pd.Categorical(out, categories=categories, ordered=True)


def _labels(name: str, values, n: int) -> tuple[np.ndarray, list[str]]:
    """Group label (str) of every row and the groups in display order."""
    if isinstance(values, pd.Series):
        values = values.array if isinstance(values.dtype, pd.CategoricalDtype) else values.to_numpy()
    if isinstance(values, pd.Categorical):
        codes = values.codes
        cats = [str(c) for c in values.categories]
        lab = np.where(codes < 0, UNKNOWN, np.asarray(cats + [UNKNOWN], dtype=object)[codes])
        order = cats + ([UNKNOWN] if (codes < 0).any() and UNKNOWN not in cats else [])
    else:
        values = np.asarray(values, dtype=object).reshape(-1)
        missing = pd.isna(values)
        lab = np.where(missing, UNKNOWN, values.astype(str))
        order = sorted(set(lab[~missing])) + ([UNKNOWN] if missing.any() else [])
    if lab.size != n:
        raise InvalidParameterError(f"attribute {name!r} has {lab.size} values for {n} rows; give "
                                    "one value per row.")
    return lab.astype(str), order


@dataclass(repr=False)
class FairnessReport(Report):
    """C-index and AUROC of one phenotype overall and by group, with bootstrap CIs.

    Attributes
    ----------
    summary : DataFrame
        ``attribute, group, n, n_events, metric, value, ci_low, ci_high, difference, ratio,
        status``; the overall rows have ``attribute = group = "overall"``; ``difference`` and
        ``ratio`` are to the overall value; ``status`` is ``"ok"`` or why the value is NaN;
        ``n`` and ``n_events`` count the rows at risk.
    phenotype : str
    horizon : float
    min_events, n_boot : int
    alpha : float
    """

    summary: pd.DataFrame
    phenotype: str
    horizon: float
    min_events: int
    n_boot: int
    alpha: float

    def __repr__(self) -> str:
        attrs = [a for a in self.summary.attribute.unique() if a != "overall"]
        small = int((self.summary[self.summary.metric == "c_index"].status != "ok").sum())
        o = self.overall
        return (f"<FairnessReport {self.phenotype} | {len(attrs)} attributes "
                f"({', '.join(attrs)}), {small} groups not scored | overall C-index "
                f"{o['c_index']:.3f}, AUROC {o['auroc']:.3f}>")

    @property
    def overall(self) -> pd.Series:
        """Overall value of every metric."""
        s = self.summary[self.summary.attribute == "overall"]
        return pd.Series(s.value.to_numpy(), index=s.metric.to_numpy(), name="overall")

    @property
    def by_group(self) -> pd.DataFrame:
        """Values indexed by ``(attribute, group)``, one column per metric."""
        s = self.summary[self.summary.attribute != "overall"]
        index = pd.MultiIndex.from_frame(s[["attribute", "group"]].drop_duplicates())
        return pd.DataFrame({m: s[s.metric == m].set_index(["attribute", "group"]).value
                             .reindex(index) for m in METRICS}, index=index)

    def _spread(self, method: str, between, to_overall) -> pd.DataFrame:
        check_option("method", method, ("between_groups", "to_overall"))
        overall, rows = self.overall, {}
        for attr, frame in self.by_group.groupby(level="attribute", sort=False):
            row = {}
            for m in METRICS:
                v = frame[m].dropna().to_numpy()
                if method == "between_groups":
                    row[m] = between(v) if v.size >= 2 else np.nan
                else:
                    row[m] = to_overall(v, overall[m]) if v.size else np.nan
            rows[attr] = row
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("attribute")

    def difference(self, method: str = "between_groups") -> pd.DataFrame:
        """Largest difference per attribute and metric, over the groups that were scored.

        Parameters
        ----------
        method : {"between_groups", "to_overall"}, default="between_groups"
            ``max - min`` between groups, or the largest ``|group - overall|``.

        Returns
        -------
        DataFrame
            Index ``attribute``, one column per metric; NaN with fewer than 2 (1) scored groups.
        """
        return self._spread(method, lambda v: v.max() - v.min(),
                            lambda v, o: np.max(np.abs(v - o)))

    def ratio(self, method: str = "between_groups") -> pd.DataFrame:
        """Smallest ratio per attribute and metric (1 = parity), over the groups scored.

        Parameters
        ----------
        method : {"between_groups", "to_overall"}, default="between_groups"
            ``min / max`` between groups, or the smallest ``min(group/overall, overall/group)``.

        Returns
        -------
        DataFrame
            Index ``attribute``, one column per metric.
        """
        return self._spread(method, lambda v: v.min() / v.max(),
                            lambda v, o: np.min(np.minimum(v / o, o / v)))

    def to_dict(self) -> dict:
        """The fields as JSON types, with the summary as row records and the between-group
        ``difference`` and ``ratio`` per attribute."""
        out = _report_dict(self)
        out["difference"] = _records(self.difference().reset_index())
        out["ratio"] = _records(self.ratio().reset_index())
        return out

    def plot(self, ax=None, *, metric: str = "c_index"):
        """Value with CI per group (grouped by attribute), the overall value as a line.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        metric : {"c_index", "auroc"}, default="c_index"

        Returns
        -------
        matplotlib Axes
        """
        check_option("metric", metric, METRICS)
        rows = self.summary[(self.summary.metric == metric)
                            & (self.summary.attribute != "overall")].iloc[::-1]
        ax = _axes(ax, (5.5, 0.32 * len(rows) + 1.2))
        y = np.arange(len(rows))
        err = np.abs(np.vstack([rows.value - rows.ci_low, rows.ci_high - rows.value]))
        ax.errorbar(rows.value, y, xerr=np.nan_to_num(err), fmt="o", color="black", capsize=2)
        ax.axvline(self.overall[metric], color="tab:blue", linestyle="--", label="overall")
        ax.axvline(0.5, color="grey", linestyle=":")
        labels = [f"{a}: {g}" + ("" if s == "ok" else f" ({s})")
                  for a, g, s in zip(rows.attribute, rows.group, rows.status)]
        ax.set_yticks(y, labels)
        ax.set_xlabel({"c_index": "C-index", "auroc": f"AUROC at {self.horizon:g} y"}[metric])
        ax.legend(loc="lower right", fontsize=8)
        return ax


def _status(n_events: int, value: float, metric: str, min_events: int, case: int,
            ctrl: int) -> str:
    if n_events < min_events:
        return f"too small: {n_events} events (< {min_events})"
    if np.isfinite(value):
        return "ok"
    if metric == "c_index":
        return "no comparable pair"
    return "no case by the horizon" if case == 0 else "no control beyond the horizon"


def subgroup_report(time, event, risk, *, attributes: dict, groups, horizon: float,
                    train_time=None, train_event=None, n_boot: int = 1000, min_events: int = 10,
                    alpha: float = 0.05, seed: int = 0,
                    phenotype: str = "outcome") -> FairnessReport:
    """C-index and AUROC at ``horizon`` of one phenotype overall and per subgroup.

    Parameters
    ----------
    time, event, risk : array-like, shape (n,)
        One phenotype; NaN time or event = not at risk (left out everywhere).
    attributes : dict of str to array-like, shape (n,)
        Group of every row per attribute, e.g. ``{"sex": sex, "age": age_bands(age)}``. Missing
        values form the group ``"unknown"``; a ``Categorical`` keeps its category order.
    groups : array-like, shape (n,)
        Subject id per row (bootstrap unit).
    horizon : float
        Years, for the AUROC.
    train_time, train_event : array-like, optional
        Censoring distribution; else all test rows at risk estimate one ``G`` shared by all groups
        (Kaplan–Meier assumes censoring independent of the group).
    n_boot : int, default=1000
        Resamples, shared by the overall value and every group.
    min_events : int, default=10
        Groups with fewer events at risk are reported as too small (NaN metrics).
    alpha : float, default=0.05
    seed : int, default=0
    phenotype : str, default="outcome"
        Name shown in the report.

    Returns
    -------
    FairnessReport

    Raises
    ------
    InvalidParameterError
        No attribute, arrays of different lengths, or bad outcome values.
    """
    horizon = _check_horizon(horizon)
    if not attributes:
        raise InvalidParameterError("'attributes' is empty; pass e.g. {'sex': sex_per_subject}.")
    time, event, risk, keep, omega = _prepare(time, event, risk, horizon, train_time, train_event)
    groups = np.asarray(groups)
    if groups.shape != time.shape:
        raise InvalidParameterError(f"'groups' needs one subject id per row ({time.size}), got "
                                    f"shape {groups.shape}.")
    codes, counts = resample_counts(groups, n_boot=n_boot, seed=seed)
    weights = np.vstack([np.ones((1, time.size)), counts[:, codes].astype(np.float64)])
    w_all = np.zeros(time.size)
    w_all[keep] = omega
    t, e, r = time, event, risk
    rows = []

    def score(attribute, group, mask):
        m = mask & keep
        n_ev = int(e[m].sum())
        case, ctrl = int((w_all[m] > 0).sum()), int((t[m] > horizon).sum())
        if n_ev < min_events:
            values = np.full((n_boot + 1, len(METRICS)), np.nan)
        else:
            values = _metrics(t[m], e[m], r[m], w_all[m], weights[:, m], horizon)
        low, high = np.full(len(METRICS), np.nan), np.full(len(METRICS), np.nan)
        for j in np.flatnonzero(np.isfinite(values[0])):  # no interval for undefined values
            low[j], high[j] = percentile_interval(
                values[1:, j], alpha=alpha, name=f"{phenotype} {METRICS[j]} {attribute}={group}")
        for j, metric in enumerate(METRICS):
            rows.append({"attribute": attribute, "group": group, "n": int(m.sum()),
                         "n_events": n_ev, "metric": metric, "value": values[0, j],
                         "ci_low": low[j], "ci_high": high[j],
                         "status": _status(n_ev, values[0, j], metric, min_events, case, ctrl)})

    score("overall", "overall", np.ones(time.size, dtype=bool))
    for name, values in attributes.items():
        lab, order = _labels(str(name), values, time.size)
        for group in order:
            score(str(name), group, lab == group)
    summary = pd.DataFrame(rows)
    overall = summary[summary.attribute == "overall"].set_index("metric").value
    ref = summary.metric.map(overall).to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        summary["difference"] = summary.value.to_numpy() - ref
        summary["ratio"] = summary.value.to_numpy() / ref
    summary = summary[["attribute", "group", "n", "n_events", "metric", "value", "ci_low",
                       "ci_high", "difference", "ratio", "status"]]
    report = FairnessReport(summary, str(phenotype), horizon, int(min_events), int(n_boot),
                            float(alpha))
    logger.info("%r", report)
    return report

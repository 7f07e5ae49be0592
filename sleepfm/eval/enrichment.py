"""Trial enrichment: how much a risk score concentrates future events among the selected.

Outcome at a horizon: an event observed by the horizon is 1; follow-up beyond the horizon without
an event by then is 0; censoring at or before the horizon without an event is *unknown* and left
out (counted in the report). Among the eligible subjects with a known outcome, ranked by risk,
the enrichment factor ``EF(q)`` is the event rate of the riskiest fraction ``q`` divided by the
event rate of all of them: 1 = no better than random selection, ``1 / rate`` = every selected
subject has the event.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, InvalidParameterError
from .bootstrap import percentile_interval
from .plots import _axes
from .reports import Report
from .survival import _check_horizon, _check_outcome, _report_dict, _vector, resample_counts

logger = logging.getLogger(__name__)

_SUMMARY = ["quantile", "n_selected", "n_events", "event_rate", "overall_rate", "enrichment",
            "ci_low", "ci_high", "n_excluded", "n_unknown"]


def horizon_outcome(time, event, horizon: float) -> np.ndarray:
    """Binary outcome at ``horizon``: 1 event by then, 0 event-free beyond it, NaN unknown.

    Parameters
    ----------
    time, event : array-like, shape (n,)
        Years and 1/0; NaN = not at risk (NaN outcome).
    horizon : float
        Years.

    Returns
    -------
    ndarray of float
        NaN for subjects censored at or before the horizon without an event, and not at risk.
    """
    horizon = _check_horizon(horizon)
    time, event = _vector("time", time), _vector("event", event, np.size(time))
    _check_outcome(time, event)
    out = np.full(time.size, np.nan)
    ok = np.isfinite(time) & np.isfinite(event)
    out[ok & (event == 1) & (time <= horizon)] = 1.0
    out[ok & (time > horizon)] = 0.0
    return out


def _column(table: pd.DataFrame, name: str, *fallbacks: str) -> pd.Series:
    for col in (name, *fallbacks):
        if col in table.columns:
            return table[col]
    also = f" (nor {', '.join(repr(f) for f in fallbacks)})" if fallbacks else ""
    raise InvalidParameterError(f"the table has no column {name!r}{also} for the {name} filter; "
                                f"its columns are {list(table.columns)}. Rename the column or "
                                "drop the filter.")


def _values_filter(table, name, wanted, *fallbacks) -> np.ndarray:
    col = _column(table, name, *fallbacks)
    wanted = [wanted] if isinstance(wanted, (str, int, float)) else list(wanted)
    present = set(col.dropna().unique())
    missing = [w for w in wanted if w not in present]
    if missing:
        raise InvalidParameterError(f"{name} filter: {missing} do not occur in column {col.name!r} "
                                    f"(values: {sorted(map(str, present))}); check the spelling.")
    return col.isin(wanted).to_numpy()


def inclusion_mask(table: pd.DataFrame, *, age=None, sex=None, site=None,
                   exclude=None) -> np.ndarray:
    """Rows of ``table`` that meet a trial's inclusion criteria.

    Parameters
    ----------
    table : DataFrame
        One row per subject.
    age : tuple (min, max), optional
        Inclusive bounds on column ``age`` (years); either may be None. NaN age fails.
    sex : value or list, optional
        Allowed values of column ``sex`` (or ``gender`` when there is no ``sex``).
    site : value or list, optional
        Allowed values of column ``site``.
    exclude : str or array-like of bool, optional
        A column name or a boolean array, True = excluded (e.g. prevalent disease); NaN counts as
        excluded (with a warning).

    Returns
    -------
    ndarray of bool, shape (len(table),)

    Raises
    ------
    InvalidParameterError
        A missing column (named, with the columns there are), a filter value that never occurs,
        or an ``exclude`` of the wrong length.
    """
    mask = np.ones(len(table), dtype=bool)
    if age is not None:
        lo, hi = age
        a = pd.to_numeric(_column(table, "age"), errors="coerce").to_numpy(dtype=float)
        mask &= np.isfinite(a) & (a >= (-np.inf if lo is None else lo)) & (
            a <= (np.inf if hi is None else hi))
    if sex is not None:
        mask &= _values_filter(table, "sex", sex, "gender")
    if site is not None:
        mask &= _values_filter(table, "site", site)
    if exclude is not None:
        x = _column(table, exclude) if isinstance(exclude, str) else pd.Series(exclude)
        if len(x) != len(table):
            raise InvalidParameterError(f"'exclude' has {len(x)} values for {len(table)} rows.")
        unknown = x.isna().to_numpy()
        if unknown.any():
            warnings.warn(f"exclude: {int(unknown.sum())} subjects have no value; they are "
                          "excluded.", DataWarning, stacklevel=2)
        vals = x.to_numpy(dtype=object)
        if not all(v in (True, False) for v in vals[~unknown]):
            raise InvalidParameterError("'exclude' must be boolean (True = excluded, or 1/0), got "
                                        f"values {sorted(set(map(str, vals[~unknown])))[:5]}.")
        vals[unknown] = True
        mask &= ~vals.astype(bool)
    return mask


def _enrichment(risk, y, weights, quantiles):
    """Events among the top ``q`` of every weighting: returns ``(k, events, total, total_events)``
    of shape (n_weightings, n_quantiles) and (n_weightings,). Subjects tied at the cut share the
    remaining places (the expectation over random tie-breaking)."""
    order = np.argsort(-risk, kind="stable")
    rs = risk[order]
    starts = np.flatnonzero(np.r_[True, rs[1:] != rs[:-1]])
    gw = np.add.reduceat(weights[:, order], starts, axis=1)
    ge = np.add.reduceat(weights[:, order] * y[order], starts, axis=1)
    cw, ce = np.cumsum(gw, axis=1), np.cumsum(ge, axis=1)
    total, total_e = cw[:, -1], ce[:, -1]
    k = np.maximum(1.0, np.ceil(np.asarray(quantiles)[None, :] * total[:, None] - 1e-9))
    rows = np.arange(weights.shape[0])[:, None]
    idx = np.minimum((cw[:, None, :] < k[:, :, None]).sum(axis=2), cw.shape[1] - 1)
    prev_w = np.where(idx > 0, cw[rows, idx - 1], 0.0)
    prev_e = np.where(idx > 0, ce[rows, idx - 1], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        events = prev_e + (k - prev_w) * ge[rows, idx] / gw[rows, idx]
    return k, events, total, total_e


@dataclass(repr=False)
class EnrichmentReport(Report):
    """Enrichment factors of a risk score for trial selection, with bootstrap CIs.

    Attributes
    ----------
    summary : DataFrame
        ``quantile, n_selected, n_events, event_rate, overall_rate, enrichment, ci_low, ci_high,
        n_excluded, n_unknown``; ``n_events`` may be fractional where tied risks straddle the cut.
    horizon : float
    n_total, n_ineligible, n_not_at_risk, n_unknown, n_evaluable, n_events : int
        All rows; not eligible; eligible but not at risk (NaN time, event or risk); eligible with an
        unknown outcome; evaluated; events by the horizon among them.
    n_boot : int
    alpha : float
    """

    summary: pd.DataFrame
    horizon: float
    n_total: int
    n_ineligible: int
    n_not_at_risk: int
    n_unknown: int
    n_evaluable: int
    n_events: int
    n_boot: int
    alpha: float

    def __repr__(self) -> str:
        s = self.summary.set_index("quantile")
        q = min(s.index, key=lambda x: abs(x - 0.1))
        return (f"<EnrichmentReport | {self.n_evaluable} evaluable of {self.n_total} "
                f"({self.n_unknown} unknown), {self.n_events} events by {self.horizon:g} y | "
                f"EF({q:g}) {s.loc[q, 'enrichment']:.2f} [{s.loc[q, 'ci_low']:.2f}, "
                f"{s.loc[q, 'ci_high']:.2f}]>")

    def to_dict(self) -> dict:
        """The fields as JSON types, with the summary as row records."""
        return _report_dict(self)

    def plot(self, ax=None):
        """Enrichment factor against the selected fraction, with the CI band and a line at 1.

        Parameters
        ----------
        ax : matplotlib Axes, optional

        Returns
        -------
        matplotlib Axes
        """
        s = self.summary
        ax = _axes(ax, (5, 3.5))
        ax.plot(s["quantile"], s.enrichment, marker="o", color="tab:red")
        ax.fill_between(s["quantile"], s.ci_low, s.ci_high, color="tab:red", alpha=0.2)
        ax.axhline(1.0, color="grey", linestyle=":")
        ax.set_xlabel("Fraction selected (highest risk first)")
        ax.set_ylabel(f"Enrichment factor at {self.horizon:g} y")
        return ax


def enrichment_report(risk, time, event, *, horizon: float,
                      quantiles=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0), eligible=None, groups=None,
                      n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> EnrichmentReport:
    """Enrichment factor ``EF(q)`` of selecting the riskiest fraction ``q`` of eligible subjects.

    Parameters
    ----------
    risk, time, event : array-like, shape (n,)
        One phenotype; see :func:`horizon_outcome` for the outcome.
    horizon : float
        Years.
    quantiles : sequence of float in (0, 1], default=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
        The top ``ceil(q * n)`` (at least 1) are selected; subjects tied at the cut share the
        remaining places fractionally, so a constant risk gives ``EF = 1`` exactly.
    eligible : array-like of bool, shape (n,), optional
        Inclusion criteria (see :func:`inclusion_mask`); default all.
    groups : array-like, shape (n,), optional
        Subject id per row (default: every row its own subject).
    n_boot, alpha, seed
        Bootstrap resamples of subjects (re-ranked in every resample), two-sided level, seed.

    Returns
    -------
    EnrichmentReport

    Raises
    ------
    InvalidParameterError
        Quantiles outside (0, 1], arrays of different lengths, or no evaluable subject.
    """
    horizon = _check_horizon(horizon)
    risk = _vector("risk", risk)
    time, event = _vector("time", time, risk.size), _vector("event", event, risk.size)
    y = horizon_outcome(time, event, horizon)
    q = np.asarray(quantiles, dtype=np.float64).reshape(-1)
    if q.size == 0 or np.any(~(q > 0) | (q > 1)):
        raise InvalidParameterError(f"'quantiles' must lie in (0, 1], got {list(quantiles)}.")
    elig = np.ones(risk.size, bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if elig.shape != risk.shape:
        raise InvalidParameterError(f"'eligible' has shape {elig.shape}; need ({risk.size},).")
    at_risk = np.isfinite(time) & np.isfinite(event) & np.isfinite(risk)
    use = elig & at_risk & np.isfinite(y)
    if not use.any():
        raise InvalidParameterError("no eligible subject has a known outcome at the horizon; "
                                    "check 'eligible' and the horizon.")
    groups = np.arange(risk.size) if groups is None else np.asarray(groups)
    if groups.shape != risk.shape:
        raise InvalidParameterError(f"'groups' has shape {groups.shape}; need ({risk.size},).")
    codes, counts = resample_counts(groups[use], n_boot=n_boot, seed=seed)
    weights = np.vstack([np.ones((1, codes.size)), counts[:, codes].astype(np.float64)])
    ef = np.empty((n_boot + 1, q.size))
    for start in range(0, n_boot + 1, 128):  # chunks bound the (chunk, quantiles, n) work array
        k, ev, tot, tot_e = _enrichment(risk[use], y[use], weights[start:start + 128], q)
        if start == 0:
            k0, ev0, rate0 = k[0], ev[0], tot_e[0] / tot[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            ef[start:start + 128] = np.where(tot_e[:, None] > 0,
                                             (ev / k) / (tot_e / tot)[:, None], np.nan)
    low, high = percentile_interval(ef[1:], alpha=alpha, name="enrichment factor")
    n_unknown = int((elig & at_risk & ~np.isfinite(y)).sum())
    n_excluded = int((~elig).sum() + (elig & ~at_risk).sum())
    summary = pd.DataFrame({"quantile": q, "n_selected": k0.astype(int), "n_events": ev0,
                            "event_rate": ev0 / k0, "overall_rate": rate0, "enrichment": ef[0],
                            "ci_low": low, "ci_high": high, "n_excluded": n_excluded,
                            "n_unknown": n_unknown})[_SUMMARY]
    report = EnrichmentReport(summary, horizon, int(risk.size), int((~elig).sum()),
                              int((elig & ~at_risk).sum()), n_unknown, int(use.sum()),
                              int(y[use].sum()), int(n_boot), float(alpha))
    logger.info("%r", report)
    return report


def rank_candidates(risk, *, ids, eligible=None) -> pd.DataFrame:
    """Eligible candidates ranked by risk, riskiest first.

    Parameters
    ----------
    risk : array-like of float, shape (n,)
    ids : array-like, shape (n,)
        Subject ids.
    eligible : array-like of bool, shape (n,), optional
        Default all. Candidates without a finite risk are left out with a warning.

    Returns
    -------
    DataFrame
        ``rank`` (1 = riskiest; ties in input order), ``id``, ``risk``, ``percentile`` (100 x the
        share of candidates with a risk at or below this one: 100 = riskiest; ties share it).

    Raises
    ------
    InvalidParameterError
        Arrays of different lengths.
    """
    risk = _vector("risk", risk)
    ids = np.asarray(ids)
    elig = np.ones(risk.size, bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if ids.shape != risk.shape or elig.shape != risk.shape:
        raise InvalidParameterError(f"'ids' {ids.shape} and 'eligible' {elig.shape} need the "
                                    f"shape of 'risk' ({risk.size},).")
    missing = elig & ~np.isfinite(risk)
    if missing.any():
        warnings.warn(f"{int(missing.sum())} eligible candidates have no finite risk (e.g. "
                      f"{ids[missing][0]!r}) and are not ranked.", DataWarning, stacklevel=2)
    keep = elig & np.isfinite(risk)
    r, i = risk[keep], ids[keep]
    order = np.argsort(-r, kind="stable")
    pct = 100.0 * np.searchsorted(np.sort(r), r, side="right") / max(r.size, 1)
    return pd.DataFrame({"rank": np.arange(1, r.size + 1), "id": i[order], "risk": r[order],
                         "percentile": pct[order]})

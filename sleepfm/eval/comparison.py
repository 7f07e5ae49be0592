"""Paired comparison of two risk scores on the same subjects: the difference of their C-index and
AUROC at a horizon, with a bootstrap interval over the *same* resamples of subjects (so the
interval reflects the difference, not the spread of each score).

Used for a head against the demographics baseline and for a modality's ablation (the head with
and without it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import percentile_interval
from .survival import METRICS, benjamini_hochberg, bootstrap_p_value, bootstrap_survival


def paired_difference(time, event, risk_a, risk_b, *, groups, horizon: float, train_time=None,
                      train_event=None, phenotypes=None, n_boot: int = 1000, alpha: float = 0.05,
                      seed: int = 0, strata=None) -> pd.DataFrame:
    """C-index and AUROC of ``risk_a`` minus those of ``risk_b``, per phenotype, with CIs.

    Parameters
    ----------
    time, event : array-like, shape (n, K)
        NaN = not at risk for that phenotype.
    risk_a, risk_b : array-like, shape (n, K)
        Two scores of the same rows (higher = earlier event).
    groups : array-like, shape (n,)
        Subject id per row (the bootstrap unit).
    horizon : float
        Years, for the AUROC.
    train_time, train_event : array-like, optional
        Censoring distribution (see :func:`~sleepfm.eval.survival.bootstrap_survival`).
    phenotypes : list of str, optional
    n_boot, alpha, seed, strata
        As :func:`~sleepfm.eval.survival.survival_report`; both scores share the resamples.

    Returns
    -------
    DataFrame
        ``phenotype, metric, value_a, value_b, difference, ci_low, ci_high, p_value, q_value, n,
        n_events``: ``p_value`` is the one-sided bootstrap p that ``a`` is no better than ``b``
        (difference <= 0); ``q_value`` Benjamini–Hochberg over phenotypes, per metric.
    """
    shared = dict(groups=groups, horizon=horizon, train_time=train_time, train_event=train_event,
                  n_boot=n_boot, seed=seed, strata=strata, phenotypes=phenotypes)
    a = bootstrap_survival(time, event, risk_a, **shared)
    b = bootstrap_survival(time, event, risk_b, **shared)
    diff, resampled = a.point - b.point, a.values - b.values
    low, high = np.full(diff.shape, np.nan), np.full(diff.shape, np.nan)
    defined = np.isfinite(diff)
    if defined.any():
        low[defined], high[defined] = percentile_interval(resampled[:, defined], alpha=alpha,
                                                          name="paired difference")
    p = bootstrap_p_value(resampled, null=0.0)
    q = np.column_stack([benjamini_hochberg(p[:, m]) for m in range(len(METRICS))])
    names = list(phenotypes) if phenotypes is not None else [str(k) for k in range(len(diff))]
    return pd.DataFrame([
        {"phenotype": name, "metric": metric, "value_a": a.point[k, m], "value_b": b.point[k, m],
         "difference": diff[k, m], "ci_low": low[k, m], "ci_high": high[k, m],
         "p_value": p[k, m], "q_value": q[k, m], "n": int(a.n[k]), "n_events": int(a.n_events[k])}
        for k, name in enumerate(names) for m, metric in enumerate(METRICS)])

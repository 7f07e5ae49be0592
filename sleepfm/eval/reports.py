"""Reports of staging and event detection with subject-level bootstrap confidence intervals.

A report follows the house contract (:class:`Report`): ``summary`` is a DataFrame with columns
``metric, value, ci_low, ci_high``, ``plot(ax=None)`` draws its figure, ``to_json`` and ``to_csv``
write it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..exceptions import LabelError
from ..utils import to_jsonable, write_json_atomic, write_text_atomic
from .bootstrap import bootstrap_confusion, event_resamples, percentile_interval, subject_resamples
from .metrics import (
    _accuracy_cm,
    _binary,
    _class_names,
    _epoch_groups,
    _event_metrics,
    _flat,
    _kappa_cm,
    _macro_f1_cm,
    _pair,
    _per_class_f1_cm,
)
from .plots import plot_confusion, plot_roc

logger = logging.getLogger(__name__)


def _summary_frame(names, values, lows, highs) -> pd.DataFrame:
    return pd.DataFrame(
        {"metric": list(names), "value": np.asarray(values, dtype=float),
         "ci_low": np.asarray(lows, dtype=float), "ci_high": np.asarray(highs, dtype=float)}
    )


def _summary_dict(summary: pd.DataFrame) -> dict:
    return to_jsonable({row.metric: {"value": row.value, "ci_low": row.ci_low,
                                     "ci_high": row.ci_high}
                        for row in summary.itertuples(index=False)})


class Report:
    """The house contract of results: ``summary`` (a DataFrame with ``metric, value, ci_low,
    ci_high``), ``plot(ax=None)``, ``to_dict``, ``to_json`` and ``to_csv``."""

    summary: pd.DataFrame

    def to_dict(self) -> dict:
        """The report's fields as JSON types: the summary as ``{metric: {value, ci_low,
        ci_high}}``, arrays as lists, NaN as ``None``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if not f.name.startswith("_")}
        out["summary"] = _summary_dict(self.summary)
        return to_jsonable(out)

    def plot(self, ax=None):
        """Draw the report's figure.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw into; a new figure is made when omitted.

        Returns
        -------
        matplotlib Axes
        """
        raise NotImplementedError

    def to_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON (atomically; NaN becomes ``null``)."""
        write_json_atomic(path, self.to_dict())

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write :attr:`summary` to ``path`` as CSV (atomically)."""
        write_text_atomic(path, self.summary.to_csv(index=False))


@dataclass(repr=False)
class StagingReport(Report):
    """Sleep staging results with subject-level bootstrap intervals.

    Attributes
    ----------
    summary : DataFrame
        Columns ``metric, value, ci_low, ci_high``; metrics ``accuracy``, ``macro_f1``,
        ``kappa`` and ``f1_<class>`` per class.
    confusion : ndarray of int, shape (n_classes, n_classes)
        Counts; rows true, columns predicted.
    class_names : tuple of str
        Name of each class.
    n_epochs, n_subjects : int
        Scored epochs and subjects evaluated.
    n_boot : int
        Bootstrap resamples.
    alpha : float
        Two-sided level of the intervals.
    """

    summary: pd.DataFrame
    confusion: np.ndarray
    class_names: tuple[str, ...]
    n_epochs: int
    n_subjects: int
    n_boot: int
    alpha: float

    def __repr__(self) -> str:
        parts = []
        for metric in ("accuracy", "macro_f1", "kappa"):
            row = self.summary.set_index("metric").loc[metric]
            parts.append(f"{metric} {row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
        return (f"<StagingReport | {self.n_subjects} subjects, {self.n_epochs} epochs, "
                f"{len(self.class_names)} classes | " + ", ".join(parts) + ">")

    def plot(self, ax=None):
        """The row-normalised confusion matrix with counts annotated (see :meth:`Report.plot`)."""
        return plot_confusion(self.confusion, self.class_names, ax=ax)


def staging_report(
    y_true,
    y_pred,
    *,
    groups,
    n_classes: int = 5,
    class_names=None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> StagingReport:
    """Accuracy, macro-F1, Cohen's kappa and per-class F1 with subject-level bootstrap CIs.

    Parameters
    ----------
    y_true, y_pred : array-like of int or list of per-night arrays
        True stages (-1 = unscored, ignored) and predicted stages.
    groups : array-like
        Subject id per epoch, or per night when the labels are lists of nights.
    n_classes : int, default=5
        Number of classes (5 = AASM, 4 = OSF grouping, see :func:`group_stages`).
    class_names : sequence of str, optional
        Defaults to the AASM / OSF names for 5 / 4 classes.
    n_boot : int, default=1000
        Bootstrap resamples of subjects.
    alpha : float, default=0.05
        Two-sided level of the intervals.
    seed : int, default=0
        Seed of the resampling.

    Returns
    -------
    StagingReport

    Examples
    --------
    >>> report = staging_report(y_nights, head.predict(X_nights), groups=subject_per_night)
    >>> report.summary
    """
    names = _class_names(n_classes, class_names)
    t = _flat(y_true, "y_true")
    g = _epoch_groups(y_true, groups)
    if g.shape != t.shape:
        raise LabelError(
            f"'groups' needs one subject id per epoch ({t.size}) or per night, got {g.size}."
        )
    _pair(y_true, y_pred, n_classes)
    cm, boot = bootstrap_confusion(
        t, _flat(y_pred, "y_pred"), groups=g, n_classes=n_classes, n_boot=n_boot, seed=seed
    )
    metric_names = ["accuracy", "macro_f1", "kappa"] + [f"f1_{c}" for c in names]
    point = np.r_[_accuracy_cm(cm), _macro_f1_cm(cm), _kappa_cm(cm), _per_class_f1_cm(cm)]
    values = np.column_stack(
        [_accuracy_cm(boot), _macro_f1_cm(boot), _kappa_cm(boot), _per_class_f1_cm(boot)]
    )
    low, high = percentile_interval(values, alpha=alpha, name="staging metrics")
    summary = _summary_frame(metric_names, point, low, high)
    report = StagingReport(summary, cm, names, int(cm.sum()), int(np.unique(g).size), n_boot, alpha)
    logger.info("%r", report)
    return report


@dataclass(repr=False)
class EventReport(Report):
    """Binary event detection results with subject-level bootstrap intervals.

    Attributes
    ----------
    summary : DataFrame
        Columns ``metric, value, ci_low, ci_high``; metrics ``auroc``, ``auprc``, ``f1`` (at
        ``threshold``) and ``prevalence``.
    name : str
        Event name.
    threshold : float
        Decision threshold used for F1.
    n_epochs, n_subjects : int
        Scored epochs and subjects evaluated.
    n_boot : int
        Bootstrap resamples.
    alpha : float
        Two-sided level of the intervals.
    """

    summary: pd.DataFrame
    name: str
    threshold: float
    n_epochs: int
    n_subjects: int
    n_boot: int
    alpha: float
    _truth: np.ndarray = field(repr=False)
    _scores: np.ndarray = field(repr=False)

    def __repr__(self) -> str:
        s = self.summary.set_index("metric")
        return (f"<EventReport {self.name} | {self.n_subjects} subjects, {self.n_epochs} epochs | "
                f"AUROC {s.loc['auroc', 'value']:.3f}, AUPRC {s.loc['auprc', 'value']:.3f}, "
                f"prevalence {s.loc['prevalence', 'value']:.3f}>")

    def plot(self, ax=None):
        """The ROC curve (see :meth:`Report.plot`)."""
        value = self.summary.set_index("metric").loc["auroc", "value"]
        return plot_roc(self._truth, self._scores, ax=ax, label=f"{self.name} (AUROC {value:.3f})")


def event_report(
    y_true,
    scores,
    *,
    groups,
    threshold: float = 0.5,
    name: str = "event",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> EventReport:
    """AUROC, AUPRC, F1 at a threshold and prevalence of a binary event, with bootstrap CIs.

    Parameters
    ----------
    y_true : array-like of {0, 1, -1} or list of per-night arrays
        Event present per epoch; -1 is ignored.
    scores : array-like of float or list of per-night arrays
        Event probability or score per epoch.
    groups : array-like
        Subject id per epoch, or per night when the inputs are lists of nights.
    threshold : float, default=0.5
        Decision threshold for F1.
    name : str, default="event"
        Event name shown in the report.
    n_boot, alpha, seed
        As in :func:`staging_report`.

    Returns
    -------
    EventReport
    """
    t_all = _flat(y_true, "y_true")
    g = _epoch_groups(y_true, groups)
    if g.shape != t_all.shape:
        raise LabelError(
            f"'groups' needs one subject id per epoch ({t_all.size}) or per night, got {g.size}."
        )
    _binary(y_true, scores)
    keep = t_all >= 0
    t, s, g = t_all[keep], _flat(scores, "scores", integer=False)[keep], g[keep]
    if t.size == 0:
        raise LabelError("no scored epochs (all labels are -1); nothing to evaluate.")
    point = _event_metrics(t, s, threshold=threshold)
    codes, _, counts = subject_resamples(g, n_boot=n_boot, seed=seed)
    values = event_resamples(t, s, codes, counts, threshold)
    low, high = percentile_interval(values, alpha=alpha, name=f"{name} metrics")
    summary = _summary_frame(["auroc", "auprc", "f1", "prevalence"], point, low, high)
    report = EventReport(summary, name, float(threshold), int(t.size), int(np.unique(g).size),
                         n_boot, alpha, t, s)
    logger.info("%r", report)
    return report

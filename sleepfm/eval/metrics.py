"""Sleep staging and event metrics, reports with subject-level confidence intervals, AHI helpers.

Every metric follows scikit-learn's definition so numbers can be checked against it; the
docstrings name the matching call. Epochs whose true label is -1 (unscored, movement) are ignored
everywhere. Label arrays may be given flat (one entry per epoch) or as a list of per-night arrays.

Stages are AASM W, N1, N2, N3, REM = 0..4; :func:`group_stages` maps them to the 4-class OSF
grouping W / light (N1+N2) / deep (N3) / REM = 0..3.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..exceptions import LabelError
from ..utils import check_option, write_text_atomic
from .bootstrap import bootstrap_confusion, percentile_interval, subject_resamples

logger = logging.getLogger(__name__)

#: Class names of each staging scheme, in label order.
STAGE_SCHEMES: dict[str, tuple[str, ...]] = {
    "aasm5": ("W", "N1", "N2", "N3", "REM"),
    "osf4": ("W", "Light", "Deep", "REM"),
}
#: AHI severity grades, in order 0..3.
SEVERITY_NAMES: tuple[str, ...] = ("none", "mild", "moderate", "severe")
#: AHI thresholds (events per hour) between severity grades.
SEVERITY_THRESHOLDS: tuple[float, ...] = (5.0, 15.0, 30.0)

_OSF4_MAP = np.array([0, 1, 1, 2, 3])


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def _is_nights(y) -> bool:
    """True when ``y`` is a list/tuple of per-night arrays rather than a flat label list."""
    return isinstance(y, (list, tuple)) and len(y) > 0 and np.ndim(y[0]) >= 1


def _flat(y, name: str, *, integer: bool = True) -> np.ndarray:
    """Flatten per-night lists, check 1-D, and (for labels) check integral values."""
    arr = np.concatenate([np.asarray(a).reshape(-1) for a in y]) if _is_nights(y) else np.asarray(y)
    if arr.ndim != 1:
        raise LabelError(
            f"{name!r} must be 1-D (one value per epoch) or a list of per-night 1-D arrays, got "
            f"shape {arr.shape}."
        )
    if not integer:
        return arr.astype(np.float64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise LabelError(
                f"{name!r} holds non-integer or non-finite values; labels must be whole numbers "
                "(-1 for unscored). Take argmax of probabilities before passing predictions."
            )
    elif arr.dtype.kind not in "iub":
        raise LabelError(f"{name!r} must hold integer labels, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def _pair(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated, scored-only (true, pred) label arrays."""
    t = _flat(y_true, "y_true")
    p = _flat(y_pred, "y_pred")
    if t.shape != p.shape:
        raise LabelError(
            f"y_true has {t.size} epochs but y_pred has {p.size}; pass one prediction per epoch."
        )
    if n_classes < 1:
        raise ValueError(f"'n_classes' must be at least 1, got {n_classes}.")
    bad_t = (t < -1) | (t >= n_classes)
    if np.any(bad_t):
        raise LabelError(
            f"y_true holds labels outside -1..{n_classes - 1} (e.g. {t[bad_t][0]}); pass "
            "n_classes, or map stages first with group_stages()."
        )
    keep = t >= 0
    t, p = t[keep], p[keep]
    bad_p = (p < 0) | (p >= n_classes)
    if np.any(bad_p):
        raise LabelError(
            f"y_pred holds labels outside 0..{n_classes - 1} at scored epochs (e.g. "
            f"{p[bad_p][0]}); every scored epoch needs a predicted class."
        )
    return t, p


def _binary(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validated, scored-only (0/1 truth, float score) arrays."""
    t = _flat(y_true, "y_true")
    s = _flat(scores, "scores", integer=False)
    if t.shape != s.shape:
        raise LabelError(
            f"y_true has {t.size} epochs but scores has {s.size}; pass one score per epoch."
        )
    bad = ~np.isin(t, (-1, 0, 1))
    if np.any(bad):
        raise LabelError(
            f"binary event labels must be 0, 1 or -1 (unscored), found {t[bad][0]}; "
            "binarise the event labels first."
        )
    keep = t >= 0
    t, s = t[keep], s[keep]
    if not np.all(np.isfinite(s)):
        raise LabelError(
            "scores hold NaN or infinite values at scored epochs; fix the model output."
        )
    return t, s


def _epoch_groups(y, groups) -> np.ndarray:
    """Subject id per epoch; per-night ids are repeated over each night's epochs."""
    groups = np.asarray(groups)
    if _is_nights(y) and groups.ndim == 1 and groups.size == len(y):
        return np.repeat(groups, [np.asarray(a).size for a in y])
    return groups


def group_stages(y, scheme: str = "aasm5"):
    """Map AASM stages to a staging scheme.

    Parameters
    ----------
    y : array-like of int or list of arrays
        AASM stages W, N1, N2, N3, REM = 0..4 and -1 for unscored.
    scheme : {"aasm5", "osf4"}, default="aasm5"
        ``"aasm5"`` keeps the five stages; ``"osf4"`` maps to W / light (N1+N2) / deep (N3) /
        REM = 0..3. Unscored stays -1.

    Returns
    -------
    ndarray of int or list of ndarray
        Same structure as ``y``.

    Raises
    ------
    LabelError
        If a stage is outside -1..4.
    """
    check_option("scheme", scheme, STAGE_SCHEMES)
    if _is_nights(y):
        return [group_stages(night, scheme) for night in y]
    arr = _flat(y, "y")
    bad = (arr < -1) | (arr > 4)
    if np.any(bad):
        raise LabelError(
            f"stages must be AASM codes 0..4 or -1 (unscored), found {arr[bad][0]}; N4 folds "
            "into N3 (3) and movement/unknown into -1."
        )
    if scheme == "aasm5":
        return arr.copy()
    return np.where(arr >= 0, _OSF4_MAP[np.clip(arr, 0, 4)], -1)


def _class_names(n_classes: int, class_names) -> tuple[str, ...]:
    if class_names is not None:
        names = tuple(str(c) for c in class_names)
        if len(names) != n_classes:
            raise ValueError(f"'class_names' needs {n_classes} names, got {len(names)}.")
        return names
    for names in STAGE_SCHEMES.values():
        if len(names) == n_classes:
            return names
    return tuple(str(c) for c in range(n_classes))


# --------------------------------------------------------------------------------------------
# confusion-based metrics (batched over leading axes, used by the bootstrap fast path)
# --------------------------------------------------------------------------------------------
def _accuracy_cm(cm: np.ndarray) -> np.ndarray:
    n = cm.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.trace(cm, axis1=-2, axis2=-1) / n, np.nan)


def _per_class_f1_cm(cm: np.ndarray) -> np.ndarray:
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def _macro_f1_cm(cm: np.ndarray) -> np.ndarray:
    f1 = _per_class_f1_cm(cm)
    present = ~np.isnan(f1)
    n = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(present, f1, 0.0).sum(axis=-1) / n, np.nan)


def _kappa_weights(n_classes: int, weights: str | None) -> np.ndarray:
    check_option("weights", weights, (None, "linear", "quadratic"))
    i, j = np.indices((n_classes, n_classes))
    if weights is None:
        return (i != j).astype(np.float64)
    if weights == "linear":
        return np.abs(i - j).astype(np.float64)
    return ((i - j) ** 2).astype(np.float64)


def _kappa_cm(cm: np.ndarray, *, weights: str | None = None) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    w = _kappa_weights(cm.shape[-1], weights)
    n = cm.sum(axis=(-2, -1))
    rows, cols = cm.sum(axis=-1), cm.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = rows[..., :, None] * cols[..., None, :] / n[..., None, None]
        observed = (w * cm).sum(axis=(-2, -1))
        chance = (w * expected).sum(axis=(-2, -1))
        return np.where((n > 0) & (chance > 0), 1.0 - observed / chance, np.nan)


def _confusion_based(from_confusion):
    """Attach the batched confusion-matrix form used by :func:`bootstrap_ci`'s fast path."""

    def decorate(fn):
        fn.from_confusion = from_confusion
        return fn

    return decorate


def confusion_matrix(y_true, y_pred, *, n_classes: int = 5) -> np.ndarray:
    """Confusion matrix with a fixed class list.

    Parameters
    ----------
    y_true, y_pred : array-like of int or list of per-night arrays
        True classes (-1 = unscored, ignored) and predicted classes.
    n_classes : int, default=5
        Classes ``0..n_classes-1`` give the rows (true) and columns (predicted), present or not.

    Returns
    -------
    ndarray of int, shape (n_classes, n_classes)
        Same as ``sklearn.metrics.confusion_matrix(t, p, labels=range(n_classes))`` on the scored
        epochs.
    """
    t, p = _pair(y_true, y_pred, n_classes)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


@_confusion_based(_accuracy_cm)
def accuracy(y_true, y_pred, *, n_classes: int = 5) -> float:
    """Fraction of scored epochs classified correctly (``sklearn.metrics.accuracy_score``).

    Parameters
    ----------
    y_true, y_pred : array-like of int or list of per-night arrays
        True (-1 = unscored, ignored) and predicted classes.
    n_classes : int, default=5
        Number of classes (labels are checked against it).

    Returns
    -------
    float
        NaN when no epoch is scored.
    """
    return float(_accuracy_cm(confusion_matrix(y_true, y_pred, n_classes=n_classes)))


@_confusion_based(_per_class_f1_cm)
def per_class_f1(y_true, y_pred, *, n_classes: int = 5) -> np.ndarray:
    """F1 of each class (``sklearn.metrics.f1_score(..., average=None)``).

    Parameters
    ----------
    y_true, y_pred : array-like of int or list of per-night arrays
        True (-1 = unscored, ignored) and predicted classes.
    n_classes : int, default=5
        Number of classes.

    Returns
    -------
    ndarray, shape (n_classes,)
        NaN for a class that is neither present nor predicted (scikit-learn reports 0 there).
    """
    return _per_class_f1_cm(confusion_matrix(y_true, y_pred, n_classes=n_classes))


@_confusion_based(_macro_f1_cm)
def macro_f1(y_true, y_pred, *, n_classes: int = 5) -> float:
    """Unweighted mean of per-class F1 (``sklearn.metrics.f1_score(..., average="macro")``).

    Parameters
    ----------
    y_true, y_pred : array-like of int or list of per-night arrays
        True (-1 = unscored, ignored) and predicted classes.
    n_classes : int, default=5
        Number of classes.

    Returns
    -------
    float
        Mean over the classes present in ``y_true`` or ``y_pred``, as scikit-learn does without
        ``labels``; NaN when no epoch is scored.
    """
    return float(_macro_f1_cm(confusion_matrix(y_true, y_pred, n_classes=n_classes)))


@_confusion_based(_kappa_cm)
def cohen_kappa(y_true, y_pred, *, n_classes: int = 5, weights: str | None = None) -> float:
    """Cohen's kappa (``sklearn.metrics.cohen_kappa_score(..., labels=range(n_classes))``).

    Parameters
    ----------
    y_true, y_pred : array-like of int or list of per-night arrays
        True (-1 = unscored, ignored) and predicted classes.
    n_classes : int, default=5
        Number of classes; weighted kappa measures distances on ``0..n_classes-1``.
    weights : {None, "linear", "quadratic"}, default=None
        Disagreement weights for ordinal classes (e.g. severity grades).

    Returns
    -------
    float
        NaN when undefined (chance agreement is perfect, e.g. a single class everywhere).
    """
    return float(_kappa_cm(confusion_matrix(y_true, y_pred, n_classes=n_classes), weights=weights))


# --------------------------------------------------------------------------------------------
# binary event metrics
# --------------------------------------------------------------------------------------------
def auroc(y_true, scores) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    Parameters
    ----------
    y_true : array-like of {0, 1, -1} or list of per-night arrays
        Event present (1) or absent (0) per epoch; -1 is ignored.
    scores : array-like of float
        Higher = more likely an event.

    Returns
    -------
    float
        NaN when only one class is present (scikit-learn raises there).
    """
    t, s = _binary(y_true, scores)
    return _auroc(t, s)


def _auroc(t: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(y_true, scores) -> float:
    """Average precision (``sklearn.metrics.average_precision_score``).

    Parameters
    ----------
    y_true : array-like of {0, 1, -1} or list of per-night arrays
        Event present (1) or absent (0) per epoch; -1 is ignored.
    scores : array-like of float
        Higher = more likely an event.

    Returns
    -------
    float
        ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds; NaN without positives.
    """
    t, s = _binary(y_true, scores)
    return _auprc(t, s)


def _auprc(t: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(t_sorted)[last]
    precision = tps / (last + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def binary_f1(y_true, scores, *, threshold: float = 0.5) -> float:
    """F1 of the positive class after thresholding (``sklearn.metrics.f1_score``).

    Parameters
    ----------
    y_true : array-like of {0, 1, -1} or list of per-night arrays
        Event labels; -1 is ignored.
    scores : array-like of float
        Scores or probabilities; ``score >= threshold`` predicts an event.
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float
        NaN when there is neither a true nor a predicted event (scikit-learn reports 0).
    """
    t, s = _binary(y_true, scores)
    return _binary_f1(t, s, threshold)


def _binary_f1(t: np.ndarray, s: np.ndarray, threshold: float) -> float:
    pred = s >= threshold
    tp = int(np.sum(pred & (t == 1)))
    denom = int(pred.sum()) + int(t.sum())
    return 2 * tp / denom if denom else float("nan")


def _event_metrics(t: np.ndarray, s: np.ndarray, *, threshold: float) -> np.ndarray:
    """AUROC, AUPRC, F1 at ``threshold`` and prevalence of scored 0/1 arrays."""
    prevalence = float(t.mean()) if t.size else float("nan")
    return np.array([_auroc(t, s), _auprc(t, s), _binary_f1(t, s, threshold), prevalence])


def _event_boot_values(
    t: np.ndarray, s: np.ndarray, codes: np.ndarray, counts: np.ndarray, threshold: float,
    chunk: int = 32,
) -> np.ndarray:
    """:func:`_event_metrics` of every resample, vectorised.

    A resample weights each epoch by how often its subject was drawn; weighted ROC / PR curves
    are cumulative sums over one global descending sort, evaluated at the distinct scores.
    """
    order = np.argsort(-s, kind="mergesort")
    t_sorted, code_sorted = t[order].astype(np.float64), codes[order]
    last = np.r_[np.flatnonzero(np.diff(s[order])), s.size - 1]
    n_subjects = counts.shape[1]
    pos_s = np.bincount(codes, weights=t, minlength=n_subjects)
    neg_s = np.bincount(codes, weights=1 - t, minlength=n_subjects)
    hit = s >= threshold
    tp_s = np.bincount(codes[hit], weights=t[hit], minlength=n_subjects)
    flagged_s = np.bincount(codes[hit], minlength=n_subjects)
    cf = counts.astype(np.float64)
    pos, neg = cf @ pos_s, cf @ neg_s
    tp, flagged = cf @ tp_s, cf @ flagged_s
    out = np.full((counts.shape[0], 4), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, 2] = np.where(flagged + pos > 0, 2 * tp / (flagged + pos), np.nan)
        out[:, 3] = np.where(pos + neg > 0, pos / (pos + neg), np.nan)
        for start in range(0, counts.shape[0], chunk):
            w = cf[start:start + chunk][:, code_sorted]
            tps = np.cumsum(w * t_sorted, axis=1)[:, last]
            fps = np.cumsum(w * (1 - t_sorted), axis=1)[:, last]
            p, n = pos[start:start + chunk, None], neg[start:start + chunk, None]
            tps0 = np.diff(tps, axis=1, prepend=0.0)
            fps0 = np.diff(fps, axis=1, prepend=0.0)
            area = np.sum(fps0 * (2 * tps - tps0), axis=1) / 2
            out[start:start + chunk, 0] = np.where((p > 0) & (n > 0), area[:, None] / (p * n),
                                                   np.nan)[:, 0]
            precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
            ap = np.sum(tps0 * precision, axis=1)[:, None] / p
            out[start:start + chunk, 1] = np.where(p > 0, ap, np.nan)[:, 0]
    return out


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
def _json_value(x):
    """JSON-safe scalar: NaN becomes None."""
    x = float(x)
    return None if np.isnan(x) else x


def _summary_frame(names, values, lows, highs) -> pd.DataFrame:
    return pd.DataFrame(
        {"metric": list(names), "value": np.asarray(values, dtype=float),
         "ci_low": np.asarray(lows, dtype=float), "ci_high": np.asarray(highs, dtype=float)}
    )


def _summary_dict(summary: pd.DataFrame) -> dict:
    return {
        row.metric: {"value": _json_value(row.value), "ci_low": _json_value(row.ci_low),
                     "ci_high": _json_value(row.ci_high)}
        for row in summary.itertuples(index=False)
    }


@dataclass(repr=False)
class StagingReport:
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

    def to_dict(self) -> dict:
        """JSON-able dict (NaN becomes ``None``)."""
        return {
            "summary": _summary_dict(self.summary),
            "confusion": self.confusion.tolist(),
            "class_names": list(self.class_names),
            "n_epochs": self.n_epochs,
            "n_subjects": self.n_subjects,
            "n_boot": self.n_boot,
            "alpha": self.alpha,
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON (atomically)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    def plot_confusion(self, ax=None):
        """Plot the row-normalised confusion matrix with counts annotated.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw into; a new figure is made when omitted.

        Returns
        -------
        matplotlib Axes
        """
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(4.5, 4))
        counts = self.confusion
        rows = counts.sum(axis=1, keepdims=True)
        norm = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, f"{norm[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center",
                        fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
        ticks = np.arange(len(self.class_names))
        ax.set_xticks(ticks, self.class_names)
        ax.set_yticks(ticks, self.class_names)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title("Confusion matrix (rows normalised)")
        return ax


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
class EventReport:
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

    def to_dict(self) -> dict:
        """JSON-able dict (NaN becomes ``None``)."""
        return {
            "name": self.name,
            "summary": _summary_dict(self.summary),
            "threshold": self.threshold,
            "n_epochs": self.n_epochs,
            "n_subjects": self.n_subjects,
            "n_boot": self.n_boot,
            "alpha": self.alpha,
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON (atomically)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    def plot(self, ax=None):
        """Plot the ROC curve.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw into; a new figure is made when omitted.

        Returns
        -------
        matplotlib Axes
        """
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(4, 4))
        order = np.argsort(-self._scores, kind="mergesort")
        t = self._truth[order]
        n_pos, n_neg = max(int(t.sum()), 1), max(int((1 - t).sum()), 1)
        tpr = np.r_[0.0, np.cumsum(t) / n_pos]
        fpr = np.r_[0.0, np.cumsum(1 - t) / n_neg]
        value = self.summary.set_index("metric").loc["auroc", "value"]
        ax.plot(fpr, tpr, label=f"{self.name} (AUROC {value:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
        ax.legend(loc="lower right")
        return ax


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
    n_boot : int, default=1000
        Bootstrap resamples of subjects.
    alpha : float, default=0.05
        Two-sided level of the intervals.
    seed : int, default=0
        Seed of the resampling.

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
    values = _event_boot_values(t, s, codes, counts, threshold)
    low, high = percentile_interval(values, alpha=alpha, name=f"{name} metrics")
    summary = _summary_frame(["auroc", "auprc", "f1", "prevalence"], point, low, high)
    report = EventReport(summary, name, float(threshold), int(t.size), int(np.unique(g).size),
                         n_boot, alpha, t, s)
    logger.info("%r", report)
    return report


def plot_hypnogram(
    y_true, y_pred=None, ax=None, *, n_classes: int = 5, epoch_sec: float = 30.0, class_names=None
):
    """Plot one night's true (and predicted) hypnogram.

    Parameters
    ----------
    y_true : array-like of int, shape (n_epochs,)
        True stages of one night (-1 = unscored, drawn as a gap).
    y_pred : array-like of int, shape (n_epochs,), optional
        Predicted stages of the same night.
    ax : matplotlib Axes, optional
        Axes to draw into; a new figure is made when omitted.
    n_classes : int, default=5
        Number of stages (5 = AASM, 4 = OSF grouping).
    epoch_sec : float, default=30.0
        Epoch length in seconds (the x axis is in hours).
    class_names : sequence of str, optional
        Stage names; AASM names for 5 classes, OSF names for 4.

    Returns
    -------
    matplotlib Axes
        Wake at the top and REM just below it, then N1, N2, N3 (the usual hypnogram order).
    """
    t = _flat(y_true, "y_true")
    series = [("true", t)]
    if y_pred is not None:
        p = _flat(y_pred, "y_pred")
        if p.shape != t.shape:
            raise LabelError(f"y_true has {t.size} epochs but y_pred has {p.size}.")
        series.append(("predicted", p))
    for label, arr in series:
        if np.any((arr < -1) | (arr >= n_classes)):
            raise LabelError(f"{label} stages fall outside -1..{n_classes - 1}; pass n_classes.")
    names = _class_names(n_classes, class_names)
    if n_classes == 5:
        display = [0, 4, 1, 2, 3]
    elif n_classes == 4:
        display = [0, 3, 1, 2]
    else:
        display = list(range(n_classes))
    level = np.empty(n_classes)
    level[display] = np.arange(n_classes)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(10, 3))
    hours = np.arange(t.size + 1) * epoch_sec / 3600.0
    for (label, arr), style in zip(series, ({"color": "black", "linewidth": 1.2},
                                            {"color": "tab:orange", "linewidth": 1.0,
                                             "alpha": 0.8})):
        y = np.where(arr >= 0, level[np.clip(arr, 0, n_classes - 1)], np.nan)
        ax.step(hours, np.r_[y, y[-1:]], where="post", label=label, **style)
    ax.set_yticks(np.arange(n_classes), [names[c] for c in display])
    ax.set_ylim(n_classes - 0.5, -0.5)
    ax.set_xlabel("Time (h)")
    if y_pred is not None:
        ax.legend(loc="upper right", fontsize=8)
    return ax


# --------------------------------------------------------------------------------------------
# AHI
# --------------------------------------------------------------------------------------------
def ahi(n_events, sleep_hours):
    """Apnea-hypopnea index: events per hour of sleep.

    Parameters
    ----------
    n_events : float or array-like
        Apneas + hypopneas per night.
    sleep_hours : float or array-like
        Total sleep time in hours (> 0).

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        If a sleep time is not positive or an event count is negative.
    """
    events = np.asarray(n_events, dtype=np.float64)
    hours = np.asarray(sleep_hours, dtype=np.float64)
    if np.any(~(hours > 0)):
        raise ValueError(
            f"{int(np.sum(~(hours > 0)))} nights have no positive sleep time; AHI is undefined "
            "there: drop those nights before computing AHI."
        )
    if np.any(events < 0):
        raise ValueError("event counts must be non-negative.")
    out = events / hours
    return float(out) if out.ndim == 0 else out


def ahi_severity(ahi_values):
    """OSA severity grade from AHI: 0 none (< 5), 1 mild (5-15), 2 moderate (15-30), 3 severe.

    Parameters
    ----------
    ahi_values : float or array-like
        AHI in events per hour (>= 0).

    Returns
    -------
    int or ndarray of int
        Grade 0..3 (names in ``SEVERITY_NAMES``); a threshold value belongs to the higher grade.
    """
    values = np.asarray(ahi_values, dtype=np.float64)
    if np.any(~(values >= 0)):
        raise ValueError("AHI values must be finite and non-negative; check the event counts.")
    grade = np.digitize(values, SEVERITY_THRESHOLDS).astype(np.int64)
    return int(grade) if grade.ndim == 0 else grade


def severity_agreement(ahi_true, ahi_pred, *, weights: str | None = "linear") -> dict[str, float]:
    """Agreement of severity grades derived from true and estimated AHI.

    Parameters
    ----------
    ahi_true, ahi_pred : array-like of float
        AHI per night.
    weights : {"linear", "quadratic", None}, default="linear"
        Weights of Cohen's kappa over the ordered grades.

    Returns
    -------
    dict
        ``accuracy`` and ``kappa`` of the grades and ``n`` nights.
    """
    g_true = np.atleast_1d(ahi_severity(ahi_true))
    g_pred = np.atleast_1d(ahi_severity(ahi_pred))
    cm = confusion_matrix(g_true, g_pred, n_classes=len(SEVERITY_NAMES))
    return {"accuracy": float(_accuracy_cm(cm)), "kappa": float(_kappa_cm(cm, weights=weights)),
            "n": int(g_true.size)}

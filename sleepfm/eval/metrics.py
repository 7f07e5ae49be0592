"""Sleep staging and event metrics, following scikit-learn's definitions.

Every metric follows scikit-learn's definition so numbers can be checked against it; the
docstrings name the matching call. Epochs whose true label is -1 (unscored, movement) are ignored
everywhere. Label arrays may be given flat (one entry per epoch) or as a list of per-night arrays.
Stages are AASM W, N1, N2, N3, REM = 0..4 or the classes of another scheme
(:func:`sleepfm.vocab.group_stages`).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ..exceptions import LabelError
from ..utils import check_option
from ..vocab import SCHEMES, SEVERITY_NAMES, ahi_severity


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


def _class_names(n_classes: int, class_names) -> tuple[str, ...]:
    if class_names is not None:
        names = tuple(str(c) for c in class_names)
        if len(names) != n_classes:
            raise ValueError(f"'class_names' needs {n_classes} names, got {len(names)}.")
        return names
    for names in SCHEMES.values():
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
    y_true, y_pred, n_classes
        As in :func:`confusion_matrix`.

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
    y_true, y_pred, n_classes
        As in :func:`confusion_matrix`.

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
    y_true, y_pred, n_classes
        As in :func:`confusion_matrix`.

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
    y_true, y_pred, n_classes
        As in :func:`confusion_matrix`; weighted kappa measures distances on
        ``0..n_classes-1``.
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
    y_true, scores
        As in :func:`auroc`.

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


def _one_vs_rest(y_true, proba, binary_metric) -> float:
    """Mean of ``binary_metric`` over the classes present in ``y_true``, one class against the
    rest; a 2-column ``proba`` of 0/1 labels is scored on its positive column alone."""
    t = _flat(y_true, "y_true")
    p = np.concatenate([np.asarray(a, dtype=np.float64) for a in proba]) if _is_nights(proba) \
        else np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != t.size:
        raise LabelError(f"proba must be [n_epochs, n_classes] with one row per label ({t.size}), "
                         f"got shape {p.shape}.")
    bad = (t < -1) | (t >= p.shape[1])
    if np.any(bad):
        raise LabelError(f"label {t[bad][0]} has no column in proba ({p.shape[1]} classes).")
    keep = t >= 0
    t, p = t[keep], p[keep]
    if not np.all(np.isfinite(p)):
        raise LabelError("proba holds NaN or infinite values at scored epochs; fix the model output.")
    classes = [1] if p.shape[1] == 2 else [c for c in range(p.shape[1]) if np.any(t == c)]
    values = [binary_metric((t == c).astype(np.int64), p[:, c]) for c in classes]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def macro_auroc(y_true, proba) -> float:
    """Macro one-vs-rest AUROC of class probabilities (``sklearn.metrics.roc_auc_score`` with
    ``multi_class="ovr", average="macro"`` over the classes present; the positive class alone for
    two classes).

    Parameters
    ----------
    y_true : array-like of int, or list of per-night arrays
        Classes ``0..C-1``; -1 is ignored.
    proba : array-like [n_epochs, C], or list of per-night arrays
        Class probabilities (or any scores, higher = more likely).

    Returns
    -------
    float
        NaN when no class can be scored (one class only).
    """
    return _one_vs_rest(y_true, proba, _auroc)


def macro_auprc(y_true, proba) -> float:
    """Macro one-vs-rest average precision (``sklearn.metrics.average_precision_score`` per
    class, averaged over the classes present; the positive class alone for two classes).

    Parameters
    ----------
    y_true, proba
        As in :func:`macro_auroc`.
    """
    return _one_vs_rest(y_true, proba, _auprc)


def binary_f1(y_true, scores, *, threshold: float = 0.5) -> float:
    """F1 of the positive class after thresholding (``sklearn.metrics.f1_score``).

    Parameters
    ----------
    y_true, scores
        As in :func:`auroc`; ``score >= threshold`` predicts an event.
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

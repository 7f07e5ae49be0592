"""Subject-level bootstrap confidence intervals.

Epochs of one night, and nights of one subject, are not independent samples, so intervals are
built by resampling *subjects* with replacement: every epoch of a drawn subject comes along, as
many times as the subject is drawn. Intervals are percentile intervals of the resampled metric.

Metrics built on a confusion matrix (``accuracy``, ``macro_f1``, ``per_class_f1``,
``cohen_kappa`` from :mod:`sleepfm.eval.metrics`) take a fast path: one confusion matrix per
subject is computed once, and each resample's confusion matrix is a weighted sum of those (one
matrix product for all resamples). Any other metric is evaluated resample by resample.
"""
from __future__ import annotations

import functools
import inspect
import logging
import warnings
from typing import Callable

import numpy as np

from ..exceptions import DataWarning, LabelError

logger = logging.getLogger(__name__)

#: Warn when more than this fraction of resamples leaves a metric undefined.
SKIP_WARN_FRACTION = 0.05


def subject_resamples(
    groups, *, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw subject-level bootstrap resamples.

    Parameters
    ----------
    groups : array-like, shape (n_samples,)
        Subject id of every sample (any hashable values).
    n_boot : int, default=1000
        Number of resamples.
    seed : int, default=0
        Seed of the random generator; the same seed gives the same resamples.

    Returns
    -------
    codes : ndarray of int, shape (n_samples,)
        Subject index (0..n_subjects-1, in sorted order of the ids) of every sample.
    draws : ndarray of int, shape (n_boot, n_subjects)
        Subject indices drawn with replacement in each resample.
    counts : ndarray of int, shape (n_boot, n_subjects)
        How many times each subject was drawn in each resample.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(
            f"'groups' must be a non-empty 1-D array of subject ids (one per epoch), got shape "
            f"{groups.shape}."
        )
    if n_boot < 1:
        raise ValueError(f"'n_boot' must be at least 1, got {n_boot}.")
    _, codes = np.unique(groups, return_inverse=True)
    n_subjects = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_subjects, size=(n_boot, n_subjects))
    flat = (draws + np.arange(n_boot)[:, None] * n_subjects).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_subjects).reshape(n_boot, n_subjects)
    return codes, draws, counts


def bootstrap_confusion(
    y_true, y_pred, *, groups, n_classes: int, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix of the full sample and of every subject-level resample.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n_samples,)
        True and predicted classes in ``0..n_classes-1``; samples with ``y_true == -1`` are ignored.
    groups : array-like, shape (n_samples,)
        Subject id of every sample.
    n_classes : int
        Number of classes (rows and columns of the matrices).
    n_boot : int, default=1000
        Number of resamples.
    seed : int, default=0
        Seed; the same seed draws the same subjects as :func:`bootstrap_ci`.

    Returns
    -------
    confusion : ndarray of int, shape (n_classes, n_classes)
        Rows are true classes, columns predicted classes.
    boot : ndarray of float, shape (n_boot, n_classes, n_classes)
        Confusion matrix of each resample.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    codes, _, counts = subject_resamples(groups, n_boot=n_boot, seed=seed)
    if not (y_true.shape == y_pred.shape == codes.shape):
        raise LabelError(
            f"y_true, y_pred and groups must have one entry per epoch; got {y_true.shape[0]}, "
            f"{y_pred.shape[0]} and {codes.shape[0]}."
        )
    keep = y_true >= 0
    bad = (y_true >= n_classes) | (keep & ((y_pred < 0) | (y_pred >= n_classes)))
    if np.any(bad):
        raise LabelError(
            f"{int(bad.sum())} epochs have labels outside 0..{n_classes - 1} (first at index "
            f"{int(np.argmax(bad))}); pass the right n_classes or map stages with group_stages."
        )
    n_subjects = counts.shape[1]
    cc = n_classes * n_classes
    flat = codes[keep] * cc + y_true[keep] * n_classes + y_pred[keep]
    per_subject = np.bincount(flat, minlength=n_subjects * cc).reshape(n_subjects, cc)
    boot = counts.astype(np.float64) @ per_subject.astype(np.float64)
    confusion = per_subject.sum(axis=0).reshape(n_classes, n_classes)
    return confusion, boot.reshape(-1, n_classes, n_classes)


def event_resamples(
    t: np.ndarray, s: np.ndarray, codes: np.ndarray, counts: np.ndarray, threshold: float,
    chunk: int = 32,
) -> np.ndarray:
    """AUROC, AUPRC, F1 at ``threshold`` and prevalence of every subject-level resample.

    ``t``, ``s`` are the scored 0/1 truths and scores, ``codes`` and ``counts`` come from
    :func:`subject_resamples`; returns ``[n_boot, 4]``.

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


def percentile_interval(
    values: np.ndarray, *, alpha: float = 0.05, name: str = "metric"
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap values, skipping undefined (NaN) resamples.

    Parameters
    ----------
    values : ndarray, shape (n_boot,) or (n_boot, k)
        Metric value of each resample; NaN marks a resample where the metric is undefined.
    alpha : float, default=0.05
        Two-sided level: the interval spans the ``alpha/2`` and ``1 - alpha/2`` quantiles.
    name : str, default="metric"
        Metric name used in the warning about skipped resamples.

    Returns
    -------
    low, high : ndarray, shape () or (k,)
        Interval bounds; NaN where every resample was undefined.

    Warns
    -----
    DataWarning
        When more than ``SKIP_WARN_FRACTION`` of the resamples were undefined.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"'alpha' must be in (0, 1), got {alpha}.")
    values = np.asarray(values, dtype=np.float64)
    n_boot = values.shape[0]
    skipped = np.isnan(values).sum(axis=0)
    worst = int(np.max(skipped))
    if worst:
        logger.debug("%s: %d of %d resamples undefined and skipped", name, worst, n_boot)
    if worst > SKIP_WARN_FRACTION * n_boot:
        warnings.warn(
            f"{name}: {worst} of {n_boot} bootstrap resamples left the metric undefined (e.g. a "
            "class missing) and were skipped; the interval may be too narrow. Add subjects or "
            "report this metric without an interval.",
            DataWarning,
            stacklevel=3,
        )
    flat = values.reshape(n_boot, -1)
    low = np.full(flat.shape[1], np.nan)
    high = np.full(flat.shape[1], np.nan)
    defined = np.isnan(flat).sum(axis=0) < n_boot
    if np.any(defined):
        q = np.nanpercentile(flat[:, defined], [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        low[defined], high[defined] = q[0], q[1]
    low, high = low.reshape(values.shape[1:]), high.reshape(values.shape[1:])
    return low, high


def _confusion_form(metric_fn: Callable) -> tuple[Callable, int, dict] | None:
    """Return ``(from_confusion, n_classes, keywords)`` for a confusion-based metric, else None."""
    keywords: dict = {}
    fn = metric_fn
    if isinstance(fn, functools.partial):
        if fn.args:
            return None
        keywords = dict(fn.keywords)
        fn = fn.func
    from_confusion = getattr(fn, "from_confusion", None)
    if from_confusion is None:
        return None
    n_classes = keywords.pop("n_classes", inspect.signature(fn).parameters["n_classes"].default)
    return from_confusion, int(n_classes), keywords


def bootstrap_ci(
    metric_fn: Callable,
    *arrays,
    groups,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
):
    """Point estimate and subject-level percentile bootstrap interval of a metric.

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(*arrays) -> float`` (or a 1-D array of values, e.g. per-class F1). Metrics
        of :mod:`sleepfm.eval.metrics` that derive from a confusion matrix, also wrapped in
        ``functools.partial`` with keyword options, take a vectorised fast path.
    *arrays : array-like, shape (n_samples,) each
        Inputs of ``metric_fn``, one entry per epoch (e.g. ``y_true, y_pred``).
    groups : array-like, shape (n_samples,)
        Subject id of every epoch. Subjects are resampled with replacement; all epochs of a
        drawn subject come along.
    n_boot : int, default=1000
        Number of resamples.
    alpha : float, default=0.05
        Two-sided level (0.05 gives a 95 % interval).
    seed : int, default=0
        Seed of the resampling; results are deterministic given the seed.

    Returns
    -------
    point : float or ndarray
        ``metric_fn`` on the full sample.
    low, high : float or ndarray
        Percentile interval bounds.

    Warns
    -----
    DataWarning
        When the metric is undefined on the full sample (all NaN is returned), or undefined in
        more than 5 % of the resamples (those are skipped).

    Notes
    -----
    A resample where ``metric_fn`` returns NaN or raises ``ValueError`` / ``ZeroDivisionError``
    is skipped. Warnings raised by ``metric_fn`` inside resamples are silenced.

    Examples
    --------
    >>> from sleepfm.eval import bootstrap_ci, macro_f1
    >>> point, low, high = bootstrap_ci(macro_f1, y_true, y_pred, groups=subject_of_epoch)
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs the metric's input arrays, e.g. y_true, y_pred.")
    arrays = tuple(np.asarray(a) for a in arrays)
    name = getattr(metric_fn, "__name__", getattr(getattr(metric_fn, "func", None), "__name__",
                                                  "metric"))
    point = np.asarray(metric_fn(*arrays), dtype=np.float64)
    if np.all(np.isnan(point)):
        warnings.warn(
            f"{name} is undefined on the full sample (e.g. only one class present); returning "
            "NaN without an interval.",
            DataWarning,
            stacklevel=2,
        )
        nan = np.full(point.shape, np.nan)
        return _unwrap(point), _unwrap(nan), _unwrap(nan.copy())

    form = _confusion_form(metric_fn)
    if form is not None and len(arrays) == 2:
        from_confusion, n_classes, keywords = form
        _, boot = bootstrap_confusion(
            arrays[0], arrays[1], groups=groups, n_classes=n_classes, n_boot=n_boot, seed=seed
        )
        values = np.asarray(from_confusion(boot, **keywords), dtype=np.float64)
    else:
        values = _resample_loop(metric_fn, arrays, groups, n_boot, seed, point.shape)
    low, high = percentile_interval(values, alpha=alpha, name=name)
    return _unwrap(point), _unwrap(low), _unwrap(high)


def _resample_loop(metric_fn, arrays, groups, n_boot, seed, shape) -> np.ndarray:
    """Evaluate ``metric_fn`` on each subject-level resample (the general, slow path)."""
    codes, draws, _ = subject_resamples(groups, n_boot=n_boot, seed=seed)
    for a in arrays:
        if a.shape[0] != codes.shape[0]:
            raise LabelError(
                f"every input array needs one entry per epoch like 'groups' ({codes.shape[0]}), "
                f"got {a.shape[0]}."
            )
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=draws.shape[1])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    values = np.full((n_boot, *shape), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(n_boot):
            lengths = sizes[draws[b]]
            offsets = np.repeat(starts[draws[b]] - np.cumsum(lengths) + lengths, lengths)
            idx = order[offsets + np.arange(lengths.sum())]
            try:
                values[b] = metric_fn(*(a[idx] for a in arrays))
            except (ValueError, ZeroDivisionError):
                continue
    return values


def _unwrap(x: np.ndarray):
    """Return a Python float for 0-d arrays, else the array."""
    return float(x) if np.ndim(x) == 0 else x

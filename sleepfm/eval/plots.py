"""Figures of the evaluation: confusion matrices, ROC curves and hypnograms.

Every function draws into ``ax`` (a new figure when omitted) and returns the Axes; matplotlib is
imported only when a figure is drawn.
"""
from __future__ import annotations

import numpy as np

from ..exceptions import LabelError
from ..vocab import EPOCH_S
from .metrics import _class_names, _flat


def _axes(ax, figsize):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_confusion(confusion, class_names, ax=None, *,
                   title: str = "Confusion matrix (rows normalised)"):
    """Plot a row-normalised confusion matrix with counts annotated.

    Parameters
    ----------
    confusion : array-like of int, shape (n_classes, n_classes)
        Counts; rows true, columns predicted.
    class_names : sequence of str
        Name of each class.
    ax : matplotlib Axes, optional
        Axes to draw into; a new figure is made when omitted.
    title : str, optional

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax, (4.5, 4))
    counts = np.asarray(confusion)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center",
                    fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, list(class_names))
    ax.set_yticks(ticks, list(class_names))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    return ax


def plot_roc(y_true, scores, ax=None, *, label: str = "ROC"):
    """Plot the ROC curve of a binary event (epochs with ``y_true == -1`` are left out).

    Parameters
    ----------
    y_true : array-like of {0, 1, -1}
        Event present per epoch.
    scores : array-like of float
        Higher = more likely an event.
    ax : matplotlib Axes, optional
        Axes to draw into (several curves may share one); a new figure is made when omitted.
    label : str, default="ROC"
        Legend entry.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax, (4, 4))
    t, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    keep = t >= 0
    t = t[keep][np.argsort(-s[keep], kind="mergesort")]
    tpr = np.r_[0.0, np.cumsum(t) / max(int(t.sum()), 1)]
    fpr = np.r_[0.0, np.cumsum(1 - t) / max(int((1 - t).sum()), 1)]
    ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_hypnogram(
    y_true, y_pred=None, ax=None, *, n_classes: int = 5, epoch_sec: float = EPOCH_S,
    class_names=None
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
    ax = _axes(ax, (10, 3))
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

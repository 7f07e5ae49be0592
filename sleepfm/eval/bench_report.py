"""Scores and tables of the pre-training benchmark (``sleepfm bench``), from arrays only.

Every row of a benchmark table scores one method (an objective's backbone, or a baseline) in one
setting, on one task, with one amount of labels, under one lead condition, on one split:
macro one-vs-rest AUROC and AUPRC from the class probabilities, accuracy, macro-F1 and Cohen's
kappa from the decisions (arg-max; for two classes the threshold that maximised F1 on the
validation nights), and a subject-bootstrap 95 % interval of the AUROC and the macro-F1.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd

from ..exceptions import DataWarning
from .bootstrap import bootstrap_ci
from .metrics import accuracy, cohen_kappa, macro_auprc, macro_auroc, macro_f1

#: Metric columns of a benchmark row.
METRICS: tuple[str, ...] = ("auroc", "auprc", "accuracy", "macro_f1", "kappa")
#: Columns that identify a benchmark row.
KEYS: tuple[str, ...] = ("method", "setting", "task", "labels", "pretrain_fraction", "condition",
                         "split")


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the highest F1 of the positive class (0.5 without positives)."""
    keep = y >= 0
    y, score = y[keep], score[keep]
    if not np.any(y == 1):
        return 0.5
    order = np.argsort(-score, kind="mergesort")
    tp = np.cumsum(y[order] == 1)
    f1 = 2 * tp / (np.arange(1, y.size + 1) + (y == 1).sum())
    return float(score[order][int(np.argmax(f1))])


def decide(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Class decisions: arg-max, or ``proba[:, 1] >= threshold`` for two classes."""
    if proba.shape[1] == 2 and threshold is not None:
        return (proba[:, 1] >= threshold).astype(np.int64)
    return proba.argmax(axis=1)


def score_epochs(y: np.ndarray, proba: np.ndarray, groups: np.ndarray, *,
                 threshold: float | None = None, n_boot: int = 200, seed: int = 0) -> dict:
    """The metrics of one benchmark row.

    Parameters
    ----------
    y : ndarray [n]
        Labels (``-1`` = none, ignored).
    proba : ndarray [n, C]
        Class probabilities.
    groups : ndarray [n]
        Subject of each epoch, for the bootstrap.
    threshold : float, optional
        Decision threshold of a two-class task (see :func:`best_threshold`).
    n_boot : int, default=200
        Bootstrap resamples of the intervals (0: none).
    seed : int, default=0

    Returns
    -------
    dict
        :data:`METRICS`, ``auroc_low/high``, ``macro_f1_low/high``, ``n_epochs``.
    """
    keep = y >= 0
    y, proba, groups = y[keep], proba[keep], np.asarray(groups)[keep]
    n_classes = proba.shape[1]
    pred = decide(proba, threshold)
    out = {"n_epochs": int(y.size)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        out["auroc"] = macro_auroc(y, proba)
        out["auprc"] = macro_auprc(y, proba)
        out["accuracy"] = accuracy(y, pred, n_classes=n_classes)
        out["macro_f1"] = macro_f1(y, pred, n_classes=n_classes)
        out["kappa"] = cohen_kappa(y, pred, n_classes=n_classes)
        for name, fn, arrays in (
                ("auroc", macro_auroc, (y, proba)),
                ("macro_f1", functools.partial(macro_f1, n_classes=n_classes), (y, pred))):
            low = high = float("nan")
            if n_boot and y.size and len(np.unique(groups)) > 1 and np.isfinite(out[name]):
                _, low, high = bootstrap_ci(fn, *arrays, groups=groups, n_boot=n_boot, seed=seed)
            out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def pivot(results: pd.DataFrame, *, columns: str, metric: str = "auroc",
          index=("method", "setting")) -> pd.DataFrame:
    """``metric`` of the rows of ``results`` with methods as rows and ``columns`` as columns."""
    if results.empty:
        return pd.DataFrame()
    table = results.pivot_table(index=list(index), columns=columns, values=metric,
                                aggfunc="first", dropna=False)
    return table.dropna(how="all")


def _markdown(table: pd.DataFrame, digits: int = 3) -> str:
    if table.empty:
        return "_nothing to show_\n"
    table = table.reset_index()
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) and np.isfinite(v) else
                 ("n/a" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _full_data(results: pd.DataFrame) -> pd.Series:
    """Rows trained on every label (or shipped trained) after full pre-training (or none)."""
    return results["labels"].isin(["100%", "shipped"]) & \
        (results["pretrain_fraction"].fillna(1.0) == 1.0)


def bench_markdown(results: pd.DataFrame, *, title: str, notes=()) -> str:
    """The benchmark's markdown report: the main table (all leads, all labels, held-out
    subjects), the new-site split, missing leads, label efficiency and pre-training data."""
    full = results[_full_data(results)]
    main = full[full["condition"] == "all"]
    parts = [f"# {title}\n"]
    for split, name in (("held_out", "Held-out subjects"), ("new_site", "New site")):
        rows = main[main["split"] == split]
        if rows.empty:
            continue
        parts += [f"## {name}: macro AUROC (AUPRC below)\n", _markdown(pivot(rows, columns="task")),
                  "", _markdown(pivot(rows, columns="task", metric="auprc")), "",
                  f"## {name}: macro-F1 and kappa\n",
                  _markdown(pivot(rows, columns="task", metric="macro_f1")), "",
                  _markdown(pivot(rows, columns="task", metric="kappa")), ""]
    held = full[full["split"] == "held_out"]
    for task in held["task"].unique():
        rows = held[(held["task"] == task) & held[list(METRICS)].notna().any(axis=1)]
        if rows["condition"].nunique() > 1:
            parts += [f"## Missing leads at inference, {task}: macro AUROC\n",
                      _markdown(pivot(rows, columns="condition")), ""]
    shots = results[(results["split"] == "held_out") & (results["condition"] == "all")
                    & (results["pretrain_fraction"].fillna(1.0) == 1.0)
                    & results["setting"].isin(["linear", "fewshot", "retrained"])]
    if shots["labels"].nunique() > 1:
        for task in shots["task"].unique():
            parts += [f"## Labels, {task}: macro-F1\n",
                      _markdown(pivot(shots[shots["task"] == task], columns="labels",
                                      metric="macro_f1", index=("method",))), ""]
    scaling = results[(results["setting"] == "linear") & (results["split"] == "held_out")
                      & (results["condition"] == "all") & (results["labels"] == "100%")
                      & (results["pretrain_fraction"] >= 0)]
    if scaling["pretrain_fraction"].nunique() > 1:
        parts += ["## Pre-training data (fraction of the pre-training records): macro AUROC\n",
                  _markdown(pivot(scaling, columns="task", index=("method", "pretrain_fraction"))),
                  ""]
    if notes:
        parts += ["## Notes\n"] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)


def plot_missing_leads(results: pd.DataFrame, *, task: str = "stage5", setting: str = "linear",
                       ax=None):
    """Macro AUROC of each method under each lead condition (held-out subjects) as grouped bars;
    returns the Axes."""
    import matplotlib.pyplot as plt

    rows = results[(results["task"] == task) & (results["split"] == "held_out")
                   & _full_data(results) & results["setting"].isin([setting, "off-the-shelf",
                                                                     "retrained"])]
    table = pivot(rows, columns="condition", index=("method",))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(table), 1), 3.2))
    if table.empty:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center")
        return ax
    width = 0.8 / max(table.shape[1], 1)
    x = np.arange(len(table))
    for k, condition in enumerate(table.columns):
        ax.bar(x + k * width, table[condition].to_numpy(dtype=float), width, label=str(condition))
    ax.set_xticks(x + width * (table.shape[1] - 1) / 2, table.index, rotation=30, ha="right")
    ax.set_ylabel("macro AUROC")
    ax.set_ylim(0.4, 1.0)
    ax.set_title(f"{task}, {setting}: missing leads at inference")
    ax.legend(fontsize=7, ncol=2)
    return ax

"""Staging heads for ``sleepfm finetune``: building them with a training budget that suits the
cohort, and ``mode="auto"``, which picks the head and its input by validation.

Why a budget in optimiser steps
-------------------------------
The heads count training in passes over the data. On a handful of nights a pass is one
optimiser step (six 1-hour nights are one LSTM batch, and fewer epochs than one linear-probe
batch), so the heads' default passes (10 for the LSTM, 20-30 for the others) leave them far from
fitted. With ``epochs`` unset, :func:`build_staging_head` raises the passes so that training
takes at least ``min_steps`` optimiser steps (and the early-stopping patience with them); on a
large cohort a pass is many steps and the heads' own defaults stand.

Choosing the head (``mode="auto"``)
-----------------------------------
Every candidate (a head kind of ``candidates`` on an input of ``features``: embeddings,
spectral features, or both) is scored by its macro-F1 on nights it was not trained on:

- with at least ``min_val_subjects`` validation subjects, on the split's validation nights
  (each candidate trained on the training nights, with early stopping); the best fitted head is
  kept;
- with fewer (a small cohort), by ``cv_folds``-fold cross-validation over the training
  subjects (folds by subject; each fold's held-out nights are predicted by a head trained on
  the others, and macro-F1 is computed over all held-out epochs together); the best candidate
  is then trained on all training nights. The split's few validation nights, if any, are left
  out of training and only report the chosen head's score.

Ties go to the candidate listed first (simpler heads first).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import STAGING_HEADS, FinetuneConfig
from ..eval.metrics import cohen_kappa, macro_f1
from ..exceptions import LabelError
from ..models.heads import BaseHead, LinearProbe, MLPHead, StagingHead
from .task_data import TaskData

logger = logging.getLogger(__name__)

#: Head kinds ``mode="auto"`` can choose from (and explicit modes of the same names).
HEAD_KINDS: tuple[str, ...] = STAGING_HEADS
_CLASSES = {"linear": LinearProbe, "mlp": MLPHead, "lstm": StagingHead}


def steps_per_pass(head: BaseHead, lengths) -> int:
    """Optimiser steps of one training pass of ``head`` over nights of ``lengths`` epochs."""
    lengths = np.asarray(list(lengths))
    if isinstance(head, StagingHead):
        seq = head.seq_len or int(lengths.max())
        return max(1, math.ceil(int(np.ceil(lengths / seq).sum()) / head.batch_nights))
    return max(1, math.ceil(int(lengths.sum()) / head.batch_size))


def build_staging_head(kind: str, config: FinetuneConfig, n_classes: int, lengths) -> BaseHead:
    """An unfitted staging head of ``kind`` with the options ``config`` sets.

    Parameters
    ----------
    kind : {"linear", "mlp", "lstm"}
    config : FinetuneConfig
        ``epochs``, ``lr``, ``hidden`` (MLP and LSTM), ``bidirectional`` (LSTM), ``seed``,
        ``device``; with ``epochs`` unset, ``min_steps``.
    n_classes : int
    lengths : sequence of int
        Epochs of each training night (for the budget).

    Returns
    -------
    BaseHead
    """
    opts = {"n_classes": n_classes, "seed": config.seed, "device": config.device}
    if config.lr:
        opts["lr"] = config.lr
    if config.hidden and kind != "linear":
        opts["hidden"] = config.hidden
    if kind == "lstm":
        opts["bidirectional"] = config.bidirectional
    head = _CLASSES[kind](**opts)
    if config.epochs:
        head.set_params(epochs=config.epochs)
    else:
        passes = max(head.epochs, math.ceil(config.min_steps / steps_per_pass(head, lengths)))
        if passes > head.epochs:
            head.set_params(epochs=passes,
                            patience=math.ceil(head.patience * passes / head.epochs))
    return head


@dataclass
class HeadSelection:
    """What ``mode="auto"`` tried and chose (recorded in the head's info and in ``run.json``).

    Attributes
    ----------
    chosen : str
        ``<head>+<features>`` of the kept candidate, e.g. ``linear+spectral``.
    head, features : str
        Its head kind and input.
    method : {"cv", "validation", "single"}
        Cross-validation over subjects, the split's validation nights, or no choice possible
        (fewer than two subjects: the first candidate).
    folds : int
        Folds of the cross-validation (0 otherwise).
    scores : dict
        Per candidate: ``macro_f1`` and ``kappa`` on the held-out nights, ``fold_macro_f1``
        (cross-validation), ``epochs`` and ``seconds``.
    """

    chosen: str
    head: str
    features: str
    method: str
    folds: int = 0
    scores: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        score = self.scores.get(self.chosen, {}).get("macro_f1")
        what = "" if score is None else f", macro-F1 {score:.3f}"
        return (f"<HeadSelection {self.chosen} | {self.method}"
                f"{f' ({self.folds} folds)' if self.folds else ''}, {len(self.scores)} "
                f"candidates{what}>")

    def to_dict(self) -> dict:
        """The selection as a JSON-able dict (what the head's info records)."""
        return {"chosen": self.chosen, "head": self.head, "features": self.features,
                "method": self.method, "folds": self.folds, "scores": self.scores}

    @property
    def summary(self) -> pd.DataFrame:
        """One row per candidate, best first: ``candidate, macro_f1, kappa, epochs, seconds``."""
        rows = [{"candidate": name, "macro_f1": sc["macro_f1"], "kappa": sc["kappa"],
                 "epochs": sc.get("epochs"), "seconds": sc.get("seconds")}
                for name, sc in sorted(self.scores.items(), key=lambda kv: -_key(kv[1]))]
        return pd.DataFrame(rows, columns=["candidate", "macro_f1", "kappa", "epochs",
                                           "seconds"])


def _key(score: dict) -> float:
    value = score.get("macro_f1")
    return -math.inf if value is None or not math.isfinite(value) else value


def subject_folds(subjects, k: int, seed: int) -> list[np.ndarray]:
    """Positions of ``subjects`` split into ``k`` folds by subject (deterministic in ``seed``)."""
    subjects = np.asarray(subjects)
    unique = np.unique(subjects)
    order = unique[np.random.default_rng(seed).permutation(unique.size)]
    return [np.flatnonzero(np.isin(subjects, part)) for part in np.array_split(order, k)]


def _metrics(y, pred, n_classes) -> tuple[float, float]:
    return (float(macro_f1(y, pred, n_classes=n_classes)),
            float(cohen_kappa(y, pred, n_classes=n_classes)))


def select_staging_head(data: TaskData, train: list[int], val: list[int], config: FinetuneConfig,
                        n_classes: int, feature_sets) -> tuple[BaseHead, HeadSelection, list[int]]:
    """Pick and fit the staging head of ``mode="auto"`` (see the module docstring).

    Parameters
    ----------
    data : TaskData
        Loaded with ``features="both"`` (or the one feature set of ``feature_sets``).
    train, val : list of int
        Positions in ``data`` of the training and validation nights.
    config : FinetuneConfig
        ``candidates``, ``cv_folds``, ``min_val_subjects`` and the head options.
    n_classes : int
    feature_sets : sequence of str
        Inputs to try (``embedding``, ``spectral``, ``both``).

    Returns
    -------
    head : BaseHead
        The chosen head, fitted.
    selection : HeadSelection
    fitted_on : list of int
        Positions of the nights the head was trained on (``train``).

    Raises
    ------
    LabelError
        No training night.
    """
    if not train:
        raise LabelError("no training night to fit a staging head on; add labelled nights.")
    candidates = [(h, f) for f in feature_sets for h in config.candidates]
    subjects = np.asarray(data.subjects)
    val_subjects = set(subjects[val]) if val else set()
    pool = list(train)
    n_pool = len(set(subjects[pool]))
    y_all = data.y
    scores: dict[str, dict] = {}

    if len(val_subjects) >= config.min_val_subjects:
        method, folds, best, kept = "validation", 0, None, {}
        for kind, feats in candidates:
            name, start = f"{kind}+{feats}", time.perf_counter()
            head = build_staging_head(kind, config, n_classes, [len(data.y[i]) for i in train])
            X_val, y_val = data.select(feats, val), [y_all[i] for i in val]
            head.fit(data.select(feats, train), [y_all[i] for i in train], X_val=X_val,
                     y_val=y_val)
            f1, kappa = _metrics(y_val, head.predict(X_val), n_classes)
            scores[name] = {"macro_f1": f1, "kappa": kappa, "epochs": len(head.history_),
                            "seconds": round(time.perf_counter() - start, 2)}
            kept[name] = head
            if best is None or _key(scores[name]) > _key(scores[best]):
                best = name
        kind, feats = best.split("+")
        selection = HeadSelection(best, kind, feats, method, folds, scores)
        logger.info("%r\n%s", selection, selection.summary.to_string(index=False))
        return kept[best], selection, list(train)

    if n_pool < 2:
        kind, feats = candidates[0]
        logger.warning("only %d subject to train on: no head can be chosen by validation; "
                       "using %s on %s", n_pool, kind, feats)
        head = build_staging_head(kind, config, n_classes, [len(data.y[i]) for i in pool])
        head.fit(data.select(feats, pool), [y_all[i] for i in pool])
        return head, HeadSelection(f"{kind}+{feats}", kind, feats, "single"), pool

    k = min(config.cv_folds, n_pool)
    parts = subject_folds(subjects[pool], k, config.seed)
    best = None
    for kind, feats in candidates:
        name, start = f"{kind}+{feats}", time.perf_counter()
        X = data.select(feats, pool)
        y = [y_all[i] for i in pool]
        true, pred, fold_f1, epochs = [], [], [], []
        for held in parts:
            fit = [j for j in range(len(pool)) if j not in set(held)]
            head = build_staging_head(kind, config, n_classes, [len(y[j]) for j in fit])
            head.fit([X[j] for j in fit], [y[j] for j in fit])
            p = head.predict([X[j] for j in held])
            t = [y[j] for j in held]
            fold_f1.append(round(_metrics(t, p, n_classes)[0], 4))
            true += t
            pred += p
            epochs.append(len(head.history_))
        f1, kappa = _metrics(true, pred, n_classes)
        scores[name] = {"macro_f1": f1, "kappa": kappa, "fold_macro_f1": fold_f1,
                        "epochs": int(np.median(epochs)),
                        "seconds": round(time.perf_counter() - start, 2)}
        logger.info("%s: cross-validated macro-F1 %.3f, kappa %.3f", name, f1, kappa)
        if best is None or _key(scores[name]) > _key(scores[best]):
            best = name
    kind, feats = best.split("+")
    selection = HeadSelection(best, kind, feats, "cv", k, scores)
    logger.info("%r\n%s", selection, selection.summary.to_string(index=False))
    head = build_staging_head(kind, config, n_classes, [len(data.y[i]) for i in pool])
    head.fit(data.select(feats, pool), [y_all[i] for i in pool])
    return head, selection, pool

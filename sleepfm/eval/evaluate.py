"""Evaluate a trained head on the held-out test subjects of its split: ``sleepfm evaluate``.

Reads ``RUN_DIR/heads/<task>/`` (head + ``split.json``), predicts the *test* nights only and writes
``RUN_DIR/reports/<task>/``:

- ``metrics.json``: staging: accuracy, macro-F1, Cohen's kappa, per-class F1 and the confusion
  matrix; events: AUROC, AUPRC, F1 and prevalence per event and AHI severity agreement. Every
  metric carries a subject-level bootstrap 95 % interval (``n_boot`` resamples of test subjects).
- ``predictions.csv``: ``record_id, subject_id, epoch, true, pred`` and one probability column per
  class (staging) or ``true_<event>, p_<event>`` (events).
- figures: ``confusion.png`` and ``hypnograms.png`` (true vs predicted, a few nights) for
  staging; ``roc.png`` and ``severity.png`` (severity confusion) for events.

The run's ``run.json`` gets an ``evaluate_<task>`` entry.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import StoreError
from ..runinfo import update_run_json
from ..utils import check_option, write_text_atomic
from .bootstrap import bootstrap_ci
from .metrics import (
    SEVERITY_NAMES,
    _accuracy_cm,
    _kappa_cm,
    ahi_severity,
    confusion_matrix,
    event_report,
    plot_hypnogram,
    severity_agreement,
    staging_report,
)

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Result of :func:`evaluate_run`.

    Attributes
    ----------
    task : str
    metrics : dict
        What ``metrics.json`` holds.
    predictions : DataFrame
        What ``predictions.csv`` holds.
    summary : DataFrame
        ``metric, value, ci_low, ci_high``.
    directory : Path
        ``RUN_DIR/reports/<task>``.
    """

    task: str
    metrics: dict
    predictions: pd.DataFrame
    summary: pd.DataFrame
    directory: Path

    def __repr__(self) -> str:
        m = self.metrics
        if self.task == "staging":
            s = self.summary.set_index("metric")
            what = (f"macro-F1 {s.loc['macro_f1', 'value']:.3f}, kappa {s.loc['kappa', 'value']:.3f}")
        else:
            what = ", ".join(f"{e['name']} AUROC {e['summary']['auroc']['value'] or float('nan'):.3f}"
                             for e in m["events"])
        return (f"<Evaluation {self.task} | {m['n_test_subjects']} test subjects, "
                f"{m['n_test_nights']} nights | {what}>")


def _summary_rows(frame: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    out = frame.copy()
    out["metric"] = prefix + out["metric"]
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def evaluate_run(run_dir, task: str = "staging", *, n_boot: int = 1000, n_hypnograms: int = 4,
                 seed: int = 0, figures: bool = True) -> Evaluation:
    """Score the saved head of ``task`` on its split's test subjects and write the reports.

    Parameters
    ----------
    run_dir : path-like
        Run directory after ``sleepfm finetune``.
    task : {"staging", "events"}, default="staging"
    n_boot : int, default=1000
        Bootstrap resamples of test subjects for the 95 % intervals.
    n_hypnograms : int, default=4
        Test nights drawn in ``hypnograms.png``.
    seed : int, default=0
        Seed of the bootstrap.
    figures : bool, default=True
        Write the PNG figures.

    Returns
    -------
    Evaluation

    Raises
    ------
    StoreError
        No trained head or split for the task.

    Examples
    --------
    >>> ev = evaluate_run("runs/demo", "staging", n_boot=200)
    >>> ev.summary
    """
    from ..train.finetune import (
        SPLIT_NAME,
        check_split,
        load_head,
        load_task_data,
        predict_proba_records,
        read_split,
    )

    check_option("task", task, ("staging", "events"))
    run_dir = Path(run_dir)
    head_dir = run_dir / "heads" / task
    heads, info = load_head(head_dir)
    split = read_split(head_dir / SPLIT_NAME)
    check_split(split)
    test_ids = list(split["test"])
    if not test_ids:
        raise StoreError(f"{head_dir / SPLIT_NAME}: the split has no test records.")
    finetuned = info["mode"] == "finetune"
    data = load_task_data(run_dir, task, embedding=info["embedding"], scheme=info["scheme"],
                          record_ids=test_ids, with_embeddings=not finetuned)
    if not finetuned and info["encoder_checkpoint"].get("id") and data.checkpoint_id and \
            data.checkpoint_id != info["encoder_checkpoint"]["id"]:
        raise StoreError(
            f"{run_dir}/embeddings were made by encoder {data.checkpoint_id}, but the head was "
            f"trained on embeddings of {info['encoder_checkpoint']['id']}; run `sleepfm finetune` "
            "again on the current embeddings."
        )
    out = predict_proba_records(run_dir, heads, info, data.record_ids, X=data.X)
    out_dir = run_dir / "reports" / task
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {"task": task, "mode": info["mode"], "head": str(head_dir), "embedding": info["embedding"],
            "encoder_checkpoint": info["encoder_checkpoint"], "n_boot": n_boot,
            "test_records": data.record_ids, "n_test_nights": len(data),
            "n_test_subjects": len(set(data.subjects)),
            "n_train_records": len(info.get("train_records", []))}
    if task == "staging":
        ev = _evaluate_staging(data, out, info, n_boot, seed, base)
    else:
        ev = _evaluate_events(data, out, info, n_boot, seed, base)
    metrics, predictions, summary = ev
    write_text_atomic(out_dir / "metrics.json", json.dumps(_jsonable(metrics), indent=2))
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    if figures:
        _figures(task, out_dir, data, out, info, metrics, n_hypnograms)
    update_run_json(run_dir, f"evaluate_{task}", {
        "reports": str(out_dir), "n_boot": n_boot, "test_records": data.record_ids,
        "summary": {r.metric: r.value for r in summary.itertuples()}})
    result = Evaluation(task, metrics, predictions, summary, out_dir)
    logger.info("%r", result)
    return result


def _evaluate_staging(data, out, info, n_boot, seed, base):
    classes = info["classes"]
    n_classes = len(classes)
    proba = out["proba"]
    pred = [p.argmax(1) for p in proba]
    report = staging_report(data.y, pred, groups=data.subjects, n_classes=n_classes,
                            class_names=classes, n_boot=n_boot, seed=seed)
    metrics = {**base, **report.to_dict()}
    rows = []
    for rid, sid, t, p, pr in zip(data.record_ids, data.subjects, data.y, pred, proba):
        frame = pd.DataFrame({"record_id": rid, "subject_id": sid, "epoch": np.arange(len(t)),
                              "true": t, "pred": p})
        for k, c in enumerate(classes):
            frame[f"p_{c}"] = pr[:, k].round(5)
        rows.append(frame)
    return metrics, pd.concat(rows, ignore_index=True), report.summary


def _severity_ci(true_ahi, pred_ahi, groups, n_boot, seed):
    def metric(t, p):
        cm = confusion_matrix(ahi_severity(t), ahi_severity(p), n_classes=len(SEVERITY_NAMES))
        return np.array([_accuracy_cm(cm), _kappa_cm(cm, weights="linear")])

    if len(set(groups)) < 2:
        point = metric(true_ahi, pred_ahi)
        return point, np.full(2, np.nan), np.full(2, np.nan)
    return bootstrap_ci(metric, true_ahi, pred_ahi, groups=np.asarray(groups), n_boot=n_boot,
                        seed=seed)


def _evaluate_events(data, out, info, n_boot, seed, base):
    names = info["classes"]
    reports, frames = [], []
    for k, name in enumerate(names):
        truth = [y[:, k] for y in data.y]
        scores = [p[:, k] for p in out["proba"]]
        reports.append(event_report(truth, scores, groups=data.subjects, name=name, n_boot=n_boot,
                                    seed=seed))
    ok = np.isfinite(data.ahi) & np.isfinite(out["ahi"])
    t_ahi, p_ahi = data.ahi[ok], out["ahi"][ok]
    groups = [s for s, k in zip(data.subjects, ok) if k]
    severity = {"n": int(ok.sum())}
    if ok.any():
        agreement = severity_agreement(t_ahi, p_ahi)
        point, low, high = _severity_ci(t_ahi, p_ahi, groups, n_boot, seed)
        severity.update({
            "accuracy": {"value": agreement["accuracy"], "ci_low": low[0], "ci_high": high[0]},
            "kappa_linear": {"value": agreement["kappa"], "ci_low": low[1], "ci_high": high[1]},
            "confusion": confusion_matrix(ahi_severity(t_ahi), ahi_severity(p_ahi),
                                          n_classes=len(SEVERITY_NAMES)).tolist(),
            "grades": list(SEVERITY_NAMES),
            "mae_ahi": float(np.mean(np.abs(t_ahi - p_ahi))),
        })
    nights = [{"record_id": r, "subject_id": s, "ahi_true": a, "ahi_pred": b,
               "grade_true": SEVERITY_NAMES[ahi_severity(a)] if np.isfinite(a) else None,
               "grade_pred": SEVERITY_NAMES[ahi_severity(b)] if np.isfinite(b) else None}
              for r, s, a, b in zip(data.record_ids, data.subjects, data.ahi, out["ahi"])]
    metrics = {**base, "events": [r.to_dict() for r in reports], "severity": severity,
               "nights": nights}
    for rid, sid, y, p, asleep in zip(data.record_ids, data.subjects, data.y, out["proba"],
                                      out["sleep"]):
        frame = pd.DataFrame({"record_id": rid, "subject_id": sid, "epoch": np.arange(len(y)),
                              "pred_asleep": asleep.astype(int)})
        for k, name in enumerate(names):
            frame[f"true_{name}"] = y[:, k]
            frame[f"p_{name}"] = p[:, k].round(5)
        frames.append(frame)
    summary = pd.concat([_summary_rows(r.summary, f"{r.name}/") for r in reports], ignore_index=True)
    if ok.any():
        summary = pd.concat([summary, pd.DataFrame([
            {"metric": "severity/accuracy", **{k: severity["accuracy"][k] for k in
                                               ("value", "ci_low", "ci_high")}},
            {"metric": "severity/kappa_linear", **{k: severity["kappa_linear"][k] for k in
                                                   ("value", "ci_low", "ci_high")}}])],
            ignore_index=True)
    return metrics, pd.concat(frames, ignore_index=True), summary


def _figures(task, out_dir, data, out, info, metrics, n_hypnograms):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if task == "staging":
        from .metrics import StagingReport

        cm = np.asarray(metrics["confusion"])
        rep = StagingReport(pd.DataFrame(), cm, tuple(info["classes"]), int(cm.sum()), 0, 0, 0.05)
        fig, ax = plt.subplots(figsize=(5, 4.5))
        rep.plot_confusion(ax=ax)
        fig.tight_layout()
        fig.savefig(out_dir / "confusion.png", dpi=100)
        plt.close(fig)
        order = np.argsort([-len(y) for y in data.y], kind="stable")[:max(1, n_hypnograms)]
        fig, axes = plt.subplots(len(order), 1, figsize=(10, 2.2 * len(order)), squeeze=False)
        for ax, i in zip(axes[:, 0], order):
            plot_hypnogram(data.y[i], out["proba"][i].argmax(1), ax=ax,
                           n_classes=len(info["classes"]), class_names=info["classes"])
            ax.set_title(f"{data.record_ids[i]} (subject {data.subjects[i]})", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / "hypnograms.png", dpi=100)
        plt.close(fig)
        return
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k, name in enumerate(info["classes"]):
        t = np.concatenate([y[:, k] for y in data.y])
        s = np.concatenate([p[:, k] for p in out["proba"]])
        keep = t >= 0
        if len(set(t[keep])) < 2:
            continue
        order = np.argsort(-s[keep], kind="mergesort")
        tt = t[keep][order]
        tpr = np.r_[0, np.cumsum(tt) / max(tt.sum(), 1)]
        fpr = np.r_[0, np.cumsum(1 - tt) / max((1 - tt).sum(), 1)]
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=100)
    plt.close(fig)
    if "confusion" in metrics["severity"]:
        from .metrics import StagingReport

        cm = np.asarray(metrics["severity"]["confusion"])
        rep = StagingReport(pd.DataFrame(), cm, SEVERITY_NAMES, int(cm.sum()), 0, 0, 0.05)
        fig, ax = plt.subplots(figsize=(5, 4.5))
        rep.plot_confusion(ax=ax)
        ax.set_title("AHI severity (rows: labels)")
        fig.tight_layout()
        fig.savefig(out_dir / "severity.png", dpi=100)
        plt.close(fig)

"""``sleepfm evaluate``: score a trained head on the held-out test subjects of its split.

Reads ``RUN_DIR/heads/<task>/`` (head + ``split.json``), predicts the *test* nights only and writes
``RUN_DIR/reports/<task>/``:

- ``metrics.json``: staging: accuracy, macro-F1, Cohen's kappa, per-class F1 and the confusion
  matrix; events: AUROC, AUPRC, F1 and prevalence per event and AHI severity agreement. Every
  metric carries a subject-level bootstrap 95 % interval (``n_boot`` resamples of test subjects).
- ``summary.csv``: ``metric, value, ci_low, ci_high``.
- ``predictions.csv``: ``record_id, subject_id, epoch, true, pred`` and one probability column per
  class (staging) or ``true_<event>, p_<event>`` (events).
- figures: ``confusion.png`` and ``hypnograms.png`` (true vs predicted, a few nights) for
  staging; ``roc.png`` and ``severity.png`` (severity confusion) for events.

The run's ``run.json`` gets an ``evaluate_<task>`` entry.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import load_heads
from ..checkpoint import artifact_id
from ..config import EvaluateConfig, load_config
from ..eval.bootstrap import bootstrap_ci
from ..eval.metrics import _accuracy_cm, _kappa_cm, confusion_matrix, severity_agreement
from ..eval.plots import plot_confusion, plot_hypnogram, plot_roc
from ..eval.reports import Report, event_report, staging_report
from ..exceptions import StoreError
from ..rundir import RunDir
from ..splits import read_split
from ..utils import check_option, write_text_atomic
from ..vocab import SEVERITY_NAMES, TASKS, ahi_severity
from .evaluate_disease import evaluate_disease
from .inference import check_encoder, check_inputs, head_features, head_outputs, spectral_kinds
from .task_data import TaskData, load_task_data

logger = logging.getLogger(__name__)


@dataclass(repr=False)
class Evaluation(Report):
    """Result of :func:`evaluate` (the house contract of :class:`~sleepfm.eval.Report`).

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
        s = self.summary.set_index("metric")["value"]
        if self.task == "staging":
            what = f"macro-F1 {s['macro_f1']:.3f}, kappa {s['kappa']:.3f}"
        else:
            what = ", ".join(f"{e['name']} AUROC {s[e['name'] + '/auroc']:.3f}" for e in m["events"])
        return (f"<Evaluation {self.task} | {m['n_test_subjects']} test subjects, "
                f"{m['n_test_nights']} nights | {what}>")

    def to_dict(self) -> dict:
        return self.metrics

    def plot(self, ax=None):
        """The confusion matrix (staging) or the ROC curve of every event (events)."""
        if self.task == "staging":
            return plot_confusion(self.metrics["confusion"], self.metrics["class_names"], ax=ax)
        p = self.predictions
        for e in self.metrics["events"]:
            if e["summary"]["auroc"]["value"] is not None:  # both classes present
                ax = plot_roc(p[f"true_{e['name']}"], p[f"p_{e['name']}"], ax=ax, label=e["name"])
        return ax


def evaluate(run_dir, task: str = "staging", config: EvaluateConfig | str | None = None,
             **overrides) -> Evaluation:
    """Score the saved head of ``task`` on its split's test subjects and write the reports.

    ``task="disease"`` is :func:`~sleepfm.stages.evaluate_disease.evaluate_disease` (its config
    is a :class:`~sleepfm.config.DiseaseEvaluateConfig`).

    Parameters
    ----------
    run_dir : path-like or RunDir
        Run directory after ``sleepfm finetune``.
    task : {"staging", "events", "disease"}, default="staging"
    config : EvaluateConfig, dict or YAML path, optional
        Settings (``n_boot``, ``seed``, ``n_hypnograms``, ``figures``); ``**overrides`` replace
        single fields.

    Returns
    -------
    Evaluation

    Raises
    ------
    StoreError
        No trained head or split for the task, or embeddings of another encoder than the head's.

    Examples
    --------
    >>> ev = evaluate("runs/demo", "staging", n_boot=200)
    >>> ev.summary
    """
    check_option("task", task, TASKS)
    if task == "disease":
        return evaluate_disease(run_dir, config, **overrides)
    config = load_config(EvaluateConfig, config, **overrides)
    run = RunDir(run_dir)
    with run.lock(f"evaluate {task}"):
        run.head_record(task)  # a missing head names the stage to run first
        heads, record = load_heads(run.head_dir(task))
        split = read_split(run.split_file(task))
        test_ids = list(split["test"])
        if not test_ids:
            raise StoreError(f"{run.split_file(task)}: the split has no test records.")
        finetuned = record["mode"] == "finetune"
        features = head_features(record)
        data = load_task_data(run, task, embedding=record["embedding"], scheme=record["scheme"],
                              record_ids=test_ids, with_embeddings=not finetuned,
                              features=features, spectral_kinds=spectral_kinds(record))
        if not finetuned and features != "spectral":
            check_encoder(record, data.checkpoint_id, run.embeddings_dir)
        check_inputs(run, record)
        out = head_outputs(heads, record, X=data.X, store=None if not finetuned else run.store(),
                           record_ids=data.record_ids)
        base = {"task": task, "mode": record["mode"], "features": features,
                "head": str(run.head_dir(task)),
                "head_id": artifact_id(record),
                "embedding": record["embedding"], "encoder_checkpoint": record["encoder_checkpoint"],
                "n_boot": config.n_boot, "test_records": data.record_ids, "n_test_nights": len(data),
                "n_test_subjects": len(set(data.subjects)),
                "n_train_records": len(record.get("train_records", []))}
        score = _staging if task == "staging" else _events
        metrics, predictions, summary = score(data, out, record, config, base)
        out_dir = run.report_dir(task)
        with run.writing_report(task) as tmp:
            result = Evaluation(task, metrics, predictions, summary, tmp)
            result.to_json(tmp / "metrics.json")
            result.to_csv(tmp / "summary.csv")
            write_text_atomic(tmp / "predictions.csv", predictions.to_csv(index=False))
            if config.figures:
                _figures(result, data, out, record, config.n_hypnograms)
        result.directory = out_dir
        run.record_stage(f"evaluate_{task}", {
            "reports": str(out_dir), "config": config.to_dict(), "test_records": data.record_ids,
            "summary": {r.metric: r.value for r in summary.itertuples()}})
        logger.info("%r", result)
        return result


def _staging(data: TaskData, out: dict, record: dict, config: EvaluateConfig, base: dict):
    classes = record["classes"]
    proba = out["proba"]
    pred = [p.argmax(1) for p in proba]
    report = staging_report(data.y, pred, groups=data.subjects, n_classes=len(classes),
                            class_names=classes, n_boot=config.n_boot, seed=config.seed)
    rows = []
    for rid, sid, t, p, pr in zip(data.record_ids, data.subjects, data.y, pred, proba):
        frame = pd.DataFrame({"record_id": rid, "subject_id": sid, "epoch": np.arange(len(t)),
                              "true": t, "pred": p})
        for k, c in enumerate(classes):
            frame[f"p_{c}"] = pr[:, k].round(5)
        rows.append(frame)
    return {**base, **report.to_dict()}, pd.concat(rows, ignore_index=True), report.summary


def _severity_ci(true_ahi, pred_ahi, groups, n_boot, seed):
    def metric(t, p):
        cm = confusion_matrix(ahi_severity(t), ahi_severity(p), n_classes=len(SEVERITY_NAMES))
        return np.array([_accuracy_cm(cm), _kappa_cm(cm, weights="linear")])

    if len(set(groups)) < 2:
        return metric(true_ahi, pred_ahi), np.full(2, np.nan), np.full(2, np.nan)
    return bootstrap_ci(metric, true_ahi, pred_ahi, groups=np.asarray(groups), n_boot=n_boot,
                        seed=seed)


def _severity(data: TaskData, out: dict, config: EvaluateConfig) -> tuple[dict, list[dict]]:
    ok = np.isfinite(data.ahi) & np.isfinite(out["ahi"])
    t_ahi, p_ahi = data.ahi[ok], out["ahi"][ok]
    severity = {"n": int(ok.sum())}
    rows = []
    if ok.any():
        agreement = severity_agreement(t_ahi, p_ahi)
        groups = [s for s, k in zip(data.subjects, ok) if k]
        _, low, high = _severity_ci(t_ahi, p_ahi, groups, config.n_boot, config.seed)
        for k, (name, key) in enumerate((("accuracy", "accuracy"), ("kappa_linear", "kappa"))):
            severity[name] = {"value": agreement[key], "ci_low": low[k], "ci_high": high[k]}
            rows.append({"metric": f"severity/{name}", **severity[name]})
        severity.update({
            "confusion": confusion_matrix(ahi_severity(t_ahi), ahi_severity(p_ahi),
                                          n_classes=len(SEVERITY_NAMES)).tolist(),
            "grades": list(SEVERITY_NAMES),
            "mae_ahi": float(np.mean(np.abs(t_ahi - p_ahi))),
        })
    return severity, rows


def _events(data: TaskData, out: dict, record: dict, config: EvaluateConfig, base: dict):
    names = record["classes"]
    reports = [event_report([y[:, k] for y in data.y], [p[:, k] for p in out["proba"]],
                            groups=data.subjects, name=name, n_boot=config.n_boot,
                            seed=config.seed)
               for k, name in enumerate(names)]
    severity, severity_rows = _severity(data, out, config)
    nights = [{"record_id": r, "subject_id": s, "ahi_true": a, "ahi_pred": b,
               "grade_true": SEVERITY_NAMES[ahi_severity(a)] if np.isfinite(a) else None,
               "grade_pred": SEVERITY_NAMES[ahi_severity(b)] if np.isfinite(b) else None}
              for r, s, a, b in zip(data.record_ids, data.subjects, data.ahi, out["ahi"])]
    metrics = {**base, "events": [r.to_dict() for r in reports], "severity": severity,
               "nights": nights}
    frames = []
    for rid, sid, y, p, asleep in zip(data.record_ids, data.subjects, data.y, out["proba"],
                                      out["sleep"]):
        frame = pd.DataFrame({"record_id": rid, "subject_id": sid, "epoch": np.arange(len(y)),
                              "pred_asleep": asleep.astype(int)})
        for k, name in enumerate(names):
            frame[f"true_{name}"] = y[:, k]
            frame[f"p_{name}"] = p[:, k].round(5)
        frames.append(frame)
    summary = pd.concat([r.summary.assign(metric=f"{r.name}/" + r.summary["metric"])
                         for r in reports] + [pd.DataFrame(severity_rows)], ignore_index=True)
    return metrics, pd.concat(frames, ignore_index=True), summary


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figures(result: Evaluation, data: TaskData, out: dict, record: dict,
             n_hypnograms: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5) if result.task == "staging" else (4.5, 4.5))
    result.plot(ax=ax)
    _save(fig, result.directory / ("confusion.png" if result.task == "staging" else "roc.png"))
    if result.task == "staging":
        order = np.argsort([-len(y) for y in data.y], kind="stable")[:max(1, n_hypnograms)]
        fig, axes = plt.subplots(len(order), 1, figsize=(10, 2.2 * len(order)), squeeze=False)
        for ax, i in zip(axes[:, 0], order):
            plot_hypnogram(data.y[i], out["proba"][i].argmax(1), ax=ax,
                           n_classes=len(record["classes"]), class_names=record["classes"])
            ax.set_title(f"{data.record_ids[i]} (subject {data.subjects[i]})", fontsize=9)
        _save(fig, result.directory / "hypnograms.png")
    elif "confusion" in result.metrics["severity"]:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        plot_confusion(result.metrics["severity"]["confusion"], SEVERITY_NAMES, ax=ax,
                       title="AHI severity (rows: labels)")
        _save(fig, result.directory / "severity.png")

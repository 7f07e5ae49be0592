"""Evaluation from arrays: staging and event metrics, subject-level bootstrap intervals, reports,
figures. Nothing here reads or writes a run directory (see :mod:`sleepfm.stages.evaluate`)."""
from .bootstrap import bootstrap_ci, bootstrap_confusion, percentile_interval, subject_resamples
from .metrics import (
    accuracy,
    auprc,
    auroc,
    binary_f1,
    cohen_kappa,
    confusion_matrix,
    macro_f1,
    per_class_f1,
    severity_agreement,
)
from .plots import plot_confusion, plot_hypnogram, plot_roc
from .reports import EventReport, Report, StagingReport, event_report, staging_report

__all__ = [
    "EventReport",
    "Report",
    "StagingReport",
    "accuracy",
    "auprc",
    "auroc",
    "binary_f1",
    "bootstrap_ci",
    "bootstrap_confusion",
    "cohen_kappa",
    "confusion_matrix",
    "event_report",
    "macro_f1",
    "per_class_f1",
    "percentile_interval",
    "plot_confusion",
    "plot_hypnogram",
    "plot_roc",
    "severity_agreement",
    "staging_report",
    "subject_resamples",
]

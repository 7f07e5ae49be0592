"""Evaluation from arrays: staging, event and survival metrics, subject-level bootstrap intervals,
subgroup fairness, trial enrichment, reports, figures. Nothing here reads or writes a run directory
(see :mod:`sleepfm.stages.evaluate`)."""
from .bootstrap import bootstrap_ci, bootstrap_confusion, percentile_interval, subject_resamples
from .comparison import paired_difference
from .enrichment import (
    EnrichmentReport,
    enrichment_report,
    horizon_outcome,
    inclusion_mask,
    rank_candidates,
)
from .fairness import FairnessReport, age_bands, subgroup_report
from .metrics import (
    accuracy,
    auprc,
    auroc,
    binary_f1,
    cohen_kappa,
    confusion_matrix,
    macro_auprc,
    macro_auroc,
    macro_f1,
    per_class_f1,
    severity_agreement,
)
from .plots import plot_confusion, plot_hypnogram, plot_roc
from .reports import EventReport, Report, StagingReport, event_report, staging_report
from .survival import (
    SurvivalReport,
    benjamini_hochberg,
    bootstrap_survival,
    concordance_index,
    cumulative_dynamic_auc,
    km_by_quartile,
    survival_report,
)

__all__ = [
    "EnrichmentReport",
    "EventReport",
    "FairnessReport",
    "Report",
    "StagingReport",
    "SurvivalReport",
    "accuracy",
    "age_bands",
    "auprc",
    "auroc",
    "benjamini_hochberg",
    "binary_f1",
    "bootstrap_ci",
    "bootstrap_confusion",
    "bootstrap_survival",
    "cohen_kappa",
    "concordance_index",
    "confusion_matrix",
    "cumulative_dynamic_auc",
    "enrichment_report",
    "event_report",
    "horizon_outcome",
    "inclusion_mask",
    "km_by_quartile",
    "macro_auprc",
    "macro_auroc",
    "macro_f1",
    "paired_difference",
    "per_class_f1",
    "percentile_interval",
    "plot_confusion",
    "plot_hypnogram",
    "plot_roc",
    "rank_candidates",
    "severity_agreement",
    "staging_report",
    "subgroup_report",
    "subject_resamples",
    "survival_report",
]

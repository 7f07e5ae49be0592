"""sleepfm: sleep foundation models on polysomnography.

The public API, what a notebook needs::

    import sleepfm
    run = sleepfm.RunDir("runs/demo")
    sleepfm.preprocess_directory("data_samples", run)
    sleepfm.pretrain(run, encoder="sleepfm_tiny", max_epochs=2)
    sleepfm.embed(run)
    sleepfm.finetune(run, "staging", mode="lstm")
    sleepfm.evaluate(run, "staging").summary
    sleepfm.finetune(run, "disease", outcomes="outcomes/")   # Cox heads + demographics baseline
    sleepfm.evaluate(run, "disease", horizon=6).summary
    sleepfm.predict("night.edf", run, "night.hypnogram.csv")

Names are loaded on first use, so ``import sleepfm`` (and the command line) starts fast and a
stage imports only what it needs (PyTorch and Lightning load with the first model or trainer).
"""
from __future__ import annotations

import importlib

from ._version import __version__

_API: dict[str, str] = {
    # data in
    "read_edf": "sleepfm.io.edf",
    "write_edf": "sleepfm.io.edf_write",
    "read_stages": "sleepfm.io.labels",
    "read_events": "sleepfm.io.labels",
    "Hypnogram": "sleepfm.io.labels",
    "read_embeddings": "sleepfm.io.embeddings",
    "read_outcomes": "sleepfm.io.outcomes",
    "write_outcomes": "sleepfm.io.outcomes",
    "Outcomes": "sleepfm.io.outcomes",
    "ChannelMap": "sleepfm.channels",
    "DEFAULT_CHANNEL_MAP": "sleepfm.channels",
    "MODALITIES": "sleepfm.channels",
    "OSF_LEADS": "sleepfm.channels",
    "LEAD_CONDITIONS": "sleepfm.channels",
    # the domain's words
    "EPOCH_S": "sleepfm.vocab",
    "STAGE_NAMES": "sleepfm.vocab",
    "SCHEMES": "sleepfm.vocab",
    "EVENT_NAMES": "sleepfm.vocab",
    "group_stages": "sleepfm.vocab",
    # settings and the run directory
    "PreprocessConfig": "sleepfm.config",
    "PretrainConfig": "sleepfm.config",
    "EmbedConfig": "sleepfm.config",
    "FinetuneConfig": "sleepfm.config",
    "EvaluateConfig": "sleepfm.config",
    "DiseaseConfig": "sleepfm.config",
    "DiseaseEvaluateConfig": "sleepfm.config",
    "PredictConfig": "sleepfm.config",
    "DemoConfig": "sleepfm.config",
    "DashboardConfig": "sleepfm.config",
    "BenchConfig": "sleepfm.config",
    "load_config": "sleepfm.config",
    "RunDir": "sleepfm.rundir",
    # signals
    "resample": "sleepfm.preprocess",
    "preprocess_signal": "sleepfm.preprocess",
    "spectral_features": "sleepfm.spectral",
    # stages
    "find_recordings": "sleepfm.stages.preprocess",
    "preprocess_directory": "sleepfm.stages.preprocess",
    "preprocess_record": "sleepfm.stages.preprocess",
    "pretrain": "sleepfm.stages.pretrain",
    "read_pretrain_metrics": "sleepfm.stages.pretrain",
    "embed": "sleepfm.stages.embed",
    "load_task_data": "sleepfm.stages.task_data",
    "load_disease_data": "sleepfm.stages.disease_data",
    "finetune": "sleepfm.stages.finetune",
    "evaluate": "sleepfm.stages.evaluate",
    "predict": "sleepfm.stages.predict",
    "predict_directory": "sleepfm.stages.predict",
    "StagingModel": "sleepfm.stages.staging_model",
    "demo": "sleepfm.stages.demo",
    "bench": "sleepfm.stages.bench",
    "serve_dashboard": "sleepfm.stages.dashboard",
    "dashboard_command": "sleepfm.stages.dashboard",
    # models
    "create_encoder": "sleepfm.models",
    "list_encoders": "sleepfm.models",
    "count_parameters": "sleepfm.models",
    "load_encoder": "sleepfm.artifacts",
    "save_encoder": "sleepfm.artifacts",
    "load_heads": "sleepfm.artifacts",
    "ViT1D": "sleepfm.models",
    "read_osf_checkpoint": "sleepfm.artifacts",
    "import_osf_weights": "sleepfm.artifacts",
    "import_sleepfm_clinical": "sleepfm.artifacts",
    "PUBLISHED_MANIFEST": "sleepfm.artifacts",
    "PUBLISHED_CHANNEL_MAP": "sleepfm.artifacts",
    "list_heads": "sleepfm.models.heads",
    "create_head": "sleepfm.models.heads",
    "CoxHead": "sleepfm.models.heads",
    "list_objectives": "sleepfm.ssl",
    "create_objective": "sleepfm.ssl",
    # evaluation from arrays
    "staging_report": "sleepfm.eval",
    "event_report": "sleepfm.eval",
    "bootstrap_ci": "sleepfm.eval",
    "plot_hypnogram": "sleepfm.eval",
    "concordance_index": "sleepfm.eval",
    "cumulative_dynamic_auc": "sleepfm.eval",
    "survival_report": "sleepfm.eval",
    "km_by_quartile": "sleepfm.eval",
    "paired_difference": "sleepfm.eval",
    "subgroup_report": "sleepfm.eval",
    "age_bands": "sleepfm.eval",
    "enrichment_report": "sleepfm.eval",
    "inclusion_mask": "sleepfm.eval",
    "rank_candidates": "sleepfm.eval",
    "macro_auroc": "sleepfm.eval",
    "macro_auprc": "sleepfm.eval",
    # synthetic data
    "SyntheticConfig": "sleepfm.synthetic",
    "generate_night": "sleepfm.synthetic",
    "generate_cohort": "sleepfm.synthetic",
    "write_night": "sleepfm.synthetic",
    "write_synthetic_cohort": "sleepfm.synthetic_cohort",
    "write_long_tables": "sleepfm.synthetic_cohort",
    "PHENOTYPES": "sleepfm.synthetic_cohort",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'sleepfm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

"""Per-modality ablation of a disease head: what each modality (BAS, ECG, EMG, RESP) adds.

Each modality in turn is left out of the held-out nights' fused embeddings (as re-embedding with
it masked gives, :func:`~sleepfm.stages.disease_data.without_modality`), the head re-scores them,
and the C-index and AUROC with and without it are compared over the same bootstrap resamples:
a positive ΔC-index means the modality helps. Each subject's Δrisk (risk with − risk without)
says how much that modality moved their predicted log-hazard.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..channels import MODALITIES
from ..eval.comparison import paired_difference
from .disease import head_inputs
from .disease_data import DiseaseData, without_modality


def modality_attribution(run, data: DiseaseData, head, record: dict, rows, *, horizon: float,
                         n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, strata=None,
                         train_time=None, train_event=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ΔC-index / ΔAUROC per modality and phenotype, and each subject's Δrisk.

    Parameters
    ----------
    run : RunDir
    data : DiseaseData
        With the fused embeddings the head was trained on.
    head : CoxHead
    record : dict
        The head artefact's ``config.json`` (mode, level, covariates).
    rows : list of int
        The rows of ``data`` to score (the held-out subjects).
    horizon, n_boot, alpha, seed, strata, train_time, train_event
        As :func:`~sleepfm.eval.comparison.paired_difference`.

    Returns
    -------
    summary : DataFrame
        ``modality, n_with_modality`` then the columns of
        :func:`~sleepfm.eval.comparison.paired_difference` (``value_a`` with the modality,
        ``value_b`` without, ``difference`` = ΔC-index or ΔAUROC).
    risks : DataFrame
        ``record_id, subject_id, modality, phenotype, delta_risk``.
    """
    rows = list(rows)
    mode, covariates = record["mode"], bool(record.get("covariates"))
    ids = [data.record_ids[i] for i in rows]
    X, cov = head_inputs(data, rows, mode, demographics=covariates)
    full = head.predict_risk(X, cov)
    time, event = data.time[rows], data.event[rows]
    groups = np.asarray(data.subjects)[rows]
    present = [m for m in MODALITIES if any(m in data.modalities[i] for i in rows)]
    summaries, risks = [], []
    for modality in present:
        ablated = without_modality(data, run, modality, embedding_level=record["level"],
                                   record_ids=ids)
        Xm, cov_m = head_inputs(data, rows, mode, demographics=covariates, X=ablated)
        risk = head.predict_risk(Xm, cov_m)
        table = paired_difference(time, event, full, risk, groups=groups, horizon=horizon,
                                  train_time=train_time, train_event=train_event,
                                  phenotypes=data.phenotypes, n_boot=n_boot, alpha=alpha,
                                  seed=seed, strata=strata)
        table.insert(0, "n_with_modality", sum(modality in data.modalities[i] for i in rows))
        table.insert(0, "modality", modality)
        summaries.append(table)
        delta = pd.DataFrame(full - risk, columns=data.phenotypes)
        delta.insert(0, "subject_id", groups)
        delta.insert(0, "record_id", ids)
        risks.append(delta.melt(["record_id", "subject_id"], var_name="phenotype",
                                value_name="delta_risk").assign(modality=modality))
    columns = ["record_id", "subject_id", "modality", "phenotype", "delta_risk"]
    return (pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(),
            pd.concat(risks, ignore_index=True)[columns] if risks else pd.DataFrame(columns=columns))

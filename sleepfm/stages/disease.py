"""``sleepfm finetune disease``: Cox heads for many phenotypes at once → ``RUN_DIR/heads/disease``.

The outcome tables (``--outcomes DIR``, wide or long, :mod:`sleepfm.io.outcomes`) are checked and
kept in ``RUN/outcomes``; every embedded record with outcomes is split by *subject* (or by site,
``--test-site``), a label fraction of the training subjects is kept, and a
:class:`~sleepfm.models.heads.CoxHead` is fitted over full-cohort risk sets:

``lstm``          SleepFM's recipe: 2-layer bidirectional LSTM over the night's window (or epoch,
                  token) embeddings, mean over steps, with a demographics embedding.
``mlp``, ``linear``  on the night embedding (± age and sex).
``demographics``  the baseline: a linear Cox model of age and sex.

Unless ``--no-baseline``, the demographics baseline is fitted on the same split too, so that
``sleepfm evaluate disease`` compares the two on the same held-out subjects.
"""
from __future__ import annotations

import logging

import numpy as np

from ..artifacts import save_heads
from ..config import DiseaseConfig, load_config
from ..exceptions import LabelError
from ..io.outcomes import read_outcomes, write_outcomes
from ..models.heads import CoxHead
from ..rundir import RunDir
from ..splits import check_split, label_fraction, make_split, read_split, site_split, write_split
from ..utils import verbose_scope
from .disease_data import COVARIATES, DiseaseData, check_covariates, load_disease_data
from .head_result import FinetuneResult

logger = logging.getLogger(__name__)

#: Adam learning rate of the mlp and lstm heads unless set: full-batch steps on a few hundred
#: subjects stop early far from the optimum at CoxHead's 1e-3 (held-out C-index 0.60 against
#: 0.72 at 1e-2 on a synthetic cohort of 500).
NETWORK_LR = 1e-2
#: The architecture of each disease mode's Cox head.
ARCH = {"lstm": "lstm", "mlp": "mlp", "linear": "linear", "demographics": "linear"}


def cox_head(config: DiseaseConfig, mode: str | None = None) -> CoxHead:
    """The unfitted Cox head of ``mode`` (default ``config.mode``) with the config's options."""
    arch = ARCH[mode or config.mode]
    penalizer = config.penalizer if config.penalizer is not None else (
        0.1 if arch == "linear" else 0.01)
    options = {k: getattr(config, k) for k in ("hidden", "max_iter") if getattr(config, k)}
    if arch != "linear":
        options["lr"] = config.lr or NETWORK_LR
    return CoxHead(arch=arch, penalizer=penalizer, ties=config.ties, seed=config.seed,
                   device=config.device, **options)


def head_inputs(data: DiseaseData, rows, mode: str, *, demographics: bool = True, X=None):
    """``(X, covariates)`` of ``rows`` for a head of ``mode``: the night embeddings (or the
    sequences, for the lstm) and age and sex; the baseline's ``X`` is age and sex.

    ``X`` replaces the embeddings (e.g. with a modality left out), one entry per row.
    """
    rows = list(rows)
    covariates = data.covariates[rows] if demographics else None
    if mode == "demographics":
        return data.covariates[rows], None
    if X is None:
        X = [data.steps[i] for i in rows] if mode == "lstm" else data.night[rows]
    elif mode != "lstm":
        X = np.stack(X)
    return X, covariates


def fit_head(data: DiseaseData, train, val, config: DiseaseConfig, mode: str) -> CoxHead:
    """A Cox head of ``mode`` fitted on the ``train`` rows (early stopping on ``val``)."""
    X, cov = head_inputs(data, train, mode, demographics=config.demographics)
    fit_val = {}
    if len(val):
        Xv, cv = head_inputs(data, val, mode, demographics=config.demographics)
        fit_val = {"X_val": Xv, "durations_val": data.time[val], "events_val": data.event[val],
                   "covariates_val": cv}
    return cox_head(config, mode).fit(X, data.time[train], data.event[train], covariates=cov,
                                      **fit_val)


def _outcomes(run: RunDir, config: DiseaseConfig):
    """Read the outcome tables and keep them in ``RUN/outcomes`` (or use the kept ones)."""
    if config.outcomes is None:
        if not run.outcomes_dir.is_dir():
            raise LabelError(f"{run.path}: no outcome tables yet; pass --outcomes DIR (a folder "
                             "with is_event.csv + time_to_event.csv, or subjects.csv + "
                             "diagnoses.csv).")
        return read_outcomes(run.outcomes_dir)
    outcomes = read_outcomes(config.outcomes)
    write_outcomes(outcomes, run.outcomes_dir)
    return outcomes


def make_disease_split(data: DiseaseData, config: DiseaseConfig) -> dict:
    """A subject-level split of the records, or a site-transfer split with ``test_site``."""
    if config.test_site is None:
        return make_split(data.record_ids, data.subjects, test_size=config.test_size,
                          val_size=config.val_size, seed=config.seed)
    if "site" not in data.demographics.columns:
        raise LabelError("--test-site needs a 'site' column in demographics.csv, subjects.csv or "
                         "cohort.csv.")
    return site_split(data.record_ids, data.subjects, data.demographics["site"].fillna(""),
                      config.test_site, val_size=config.val_size, seed=config.seed)


def finetune_disease(run_dir, config: DiseaseConfig | str | None = None, *, split=None,
                     verbose=None, **overrides) -> FinetuneResult:
    """Fit Cox heads of future disease on a run's embeddings; save them to ``RUN_DIR/heads/disease``.

    Parameters
    ----------
    run_dir : path-like or RunDir
        Run directory after ``sleepfm embed``.
    config : DiseaseConfig, dict or YAML path, optional
        Settings (``outcomes``, ``mode``, ...); ``**overrides`` replace single fields.
    split : dict or path-like, optional
        A split to reuse (e.g. another run's ``split.json``).
    verbose : bool, str or int, optional

    Returns
    -------
    FinetuneResult
        ``heads`` holds ``"disease"`` (and ``"baseline"``); ``val_score`` is the head's mean
        validation C-index.

    Raises
    ------
    LabelError
        Bad outcome tables (see :func:`~sleepfm.io.outcomes.read_outcomes`), no record with both
        embeddings and outcomes, unknown ages or sexes, too few subjects.
    StoreError
        No embeddings.

    Examples
    --------
    >>> result = finetune_disease("runs/demo", outcomes="runs/demo-cohort/outcomes")
    >>> result.heads["disease"].n_phenotypes_
    4
    """
    config = load_config(DiseaseConfig, config, **overrides)
    config.validate()
    run = RunDir(run_dir)
    with verbose_scope(verbose), run.lock("finetune disease"):
        outcomes = _outcomes(run, config)
        data = load_disease_data(run, outcomes, embedding=config.embedding,
                                 level=config.level if config.mode == "lstm" else None,
                                 phenotypes=config.phenotypes)
        if split is None:
            split = make_disease_split(data, config)
        elif not isinstance(split, dict):
            split = read_split(split)
        split = {**split, "subjects": dict(zip(data.record_ids, data.subjects))}
        check_split(split)
        train, val = data.index(split["train"]), data.index(split["val"])
        data.index(split["test"])
        if config.label_fraction < 1.0:
            train = list(label_fraction(train, np.asarray(data.subjects), config.label_fraction,
                                        seed=config.seed))
        needs_covariates = config.demographics or config.baseline or config.mode == "demographics"
        if needs_covariates:
            check_covariates(data, train + val + data.index(split["test"]))
        for k, p in enumerate(data.phenotypes):
            if not np.nansum(data.event[train, k]):
                raise LabelError(f"phenotype {p!r} has no event among the {len(train)} training "
                                 "records; leave it out (--phenotypes) or use more subjects.")
        heads = {"disease": fit_head(data, train, val, config, config.mode)}
        if config.baseline and config.mode != "demographics":
            heads["baseline"] = fit_head(data, train, val, config, "demographics")
        val_scores = {}
        if val:
            for name, head in heads.items():
                mode = config.mode if name == "disease" else "demographics"
                X, cov = head_inputs(data, val, mode, demographics=config.demographics)
                val_scores[name] = float(head.score(X, data.time[val], data.event[val],
                                                    covariates=cov))
        info = {
            "task": "disease", "mode": config.mode, "phenotypes": data.phenotypes,
            "names": data.names, "embedding": config.embedding,
            "level": config.level if config.mode == "lstm" else "night",
            "covariates": list(COVARIATES) if config.demographics else [],
            "encoder_checkpoint": {"path": str(run.encoder_dir), "id": data.checkpoint_id},
            "config": config.to_dict(), "outcomes_id": data.outcomes_id,
            "split": {"file": run.split_file("disease").name, "seed": split.get("seed"),
                      "test_site": split.get("test_site"),
                      **{p: len(split[p]) for p in ("train", "val", "test")}},
            "train_records": [data.record_ids[i] for i in train],
            "inputs": {data.record_ids[i]: data.inputs[data.record_ids[i]] for i in train + val},
            "n_train_subjects": len({data.subjects[i] for i in train}),
            "n_events_train": {p: int(np.nansum(data.event[train, k]))
                               for k, p in enumerate(data.phenotypes)},
            "data_report": data.report,
            "val_score": val_scores.get("disease"), "val_scores": val_scores,
        }
        out_dir = run.head_dir("disease")
        save_heads(out_dir, heads, info,
                   extra=lambda tmp: write_split(tmp / run.split_file("disease").name, split))
        run.record_stage("finetune_disease", {
            "head": str(out_dir), "mode": config.mode, "config": config.to_dict(),
            "train_records": info["train_records"], "test_records": split["test"],
            "val_scores": val_scores, "left_out": data.report})
        logger.info("disease head (%s) on %d phenotypes saved to %s", config.mode,
                    len(data.phenotypes), out_dir)
        return FinetuneResult("disease", config.mode, out_dir, heads, split,
                              info["train_records"], val_scores.get("disease"), info)

"""``sleepfm evaluate disease``: a disease head scored on its held-out subjects.

Reads ``RUN_DIR/heads/disease`` (the head, the demographics baseline and ``split.json``) and the
outcome tables kept in ``RUN/outcomes``, and writes ``RUN_DIR/reports/disease/``:

- ``metrics.json`` / ``metrics.csv``: per phenotype, Harrell's C-index and the cumulative/dynamic
  AUROC at ``horizon`` (IPCW) with 1,000-sample subject-bootstrap 95 % intervals, one-sided
  p-values against chance and Benjamini–Hochberg q-values, for the head (``model = head``), the
  baseline (``baseline``) and their paired difference (``head - baseline``).
- ``risks.csv``: ``record_id, subject_id, split, phenotype, risk, baseline_risk, percentile`` for
  *every* record (the percentile is against the training subjects at risk).
- ``fairness.csv``: C-index and AUROC per sex, race, age band and site (where known) with CIs,
  differences and ratios to the overall value; groups too small to score listed as such.
- ``enrichment.csv``: the enrichment factor of the top fractions of eligible subjects (inclusion
  filters of the config), head and baseline; ``candidates.csv``: the eligible held-out subjects
  ranked by the head's risk of one phenotype.
- ``attribution.csv`` / ``attribution_risks.csv``: ΔC-index per modality left out and each
  subject's Δrisk (:mod:`sleepfm.stages.disease_attribution`).
- figures: ``forest.png``, ``km.png`` (Kaplan–Meier by risk quartile), ``enrichment.png``,
  ``fairness.png``, ``attribution.png``.

The censoring distribution of the AUROC is estimated on every record of the split (it does not
involve the scores).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import load_heads
from ..channels import MODALITIES
from ..checkpoint import artifact_id
from ..config import DiseaseEvaluateConfig, load_config
from ..eval.comparison import paired_difference
from ..eval.enrichment import enrichment_report, inclusion_mask, rank_candidates
from ..eval.fairness import age_bands, subgroup_report
from ..eval.reports import Report
from ..eval.survival import km_by_quartile, survival_report
from ..exceptions import InvalidParameterError, StoreError
from ..io.embeddings import embedding_names
from ..rundir import RunDir
from ..splits import read_split
from ..utils import write_text_atomic
from .disease import head_inputs
from .disease_attribution import modality_attribution
from .disease_data import DiseaseData, load_disease_data, run_outcomes
from .inference import check_encoder

logger = logging.getLogger(__name__)

#: Columns of the subgroup attributes, in report order.
FAIRNESS_ATTRIBUTES: tuple[str, ...] = ("sex", "race", "age", "site")


@dataclass(repr=False)
class DiseaseEvaluation(Report):
    """Result of :func:`evaluate_disease` (the house contract of :class:`~sleepfm.eval.Report`).

    Attributes
    ----------
    metrics : dict
        What ``metrics.json`` holds.
    summary : DataFrame
        ``metrics.csv``: ``model, phenotype, metric, value, ci_low, ci_high, p_value, q_value,
        n, n_events``.
    risks, fairness, enrichment, candidates, attribution, attribution_risks : DataFrame
        The other CSV files (empty when not computed).
    directory : Path
    reports : dict
        The array-level reports behind them (``"head"``, ``"baseline"``: SurvivalReport;
        ``"fairness/<phenotype>"``, ``"enrichment/<phenotype>"``), for plotting.
    """

    metrics: dict
    summary: pd.DataFrame
    risks: pd.DataFrame
    fairness: pd.DataFrame
    enrichment: pd.DataFrame
    candidates: pd.DataFrame
    attribution: pd.DataFrame
    attribution_risks: pd.DataFrame
    directory: Path
    reports: dict = field(default_factory=dict)

    def c_index(self, model: str = "head") -> pd.DataFrame:
        """The C-index rows of ``model`` (``head``, ``baseline`` or ``head - baseline``)."""
        s = self.summary
        return s[(s.model == model) & (s.metric == "c_index")].reset_index(drop=True)

    def __repr__(self) -> str:
        head = self.c_index("head").value.mean()
        base = self.c_index("baseline")
        vs = f" (baseline {base.value.mean():.3f})" if len(base) else ""
        return (f"<DiseaseEvaluation | {len(self.metrics['phenotypes'])} phenotypes, "
                f"{self.metrics['n_test_subjects']} test subjects | mean C-index {head:.3f}{vs}>")

    def to_dict(self) -> dict:
        return self.metrics

    def plot(self, ax=None):
        """Forest plot of the head's C-index per phenotype (the baseline's in grey)."""
        ax = self.reports["head"].plot(ax=ax)
        base = self.c_index("baseline")
        if len(base):
            y = np.arange(len(base))[::-1]
            ax.plot(base.value, y, "s", color="grey", label="demographics baseline")
            ax.legend(loc="lower right", fontsize=8)
        return ax


def _strata(data: DiseaseData, rows, stratify):
    if stratify is None:
        return None
    age = data.covariates[rows, 0]
    return pd.qcut(pd.Series(age).rank(method="first"), 10, labels=False).to_numpy()


def _risk_table(data: DiseaseData, split: dict, risks: dict, train_rows) -> pd.DataFrame:
    side = {r: part for part in ("train", "val", "test") for r in split[part]}
    frames = []
    for k, p in enumerate(data.phenotypes):
        risk = risks["head"][:, k]
        ref = np.sort(risk[train_rows][np.isfinite(data.time[train_rows, k])])
        frame = pd.DataFrame({"record_id": data.record_ids, "subject_id": data.subjects,
                              "split": [side[r] for r in data.record_ids], "phenotype": p,
                              "risk": risk.round(6),
                              "percentile": (100.0 * np.searchsorted(ref, risk, side="right")
                                             / max(ref.size, 1)).round(2)})
        if "baseline" in risks:
            frame.insert(5, "baseline_risk", risks["baseline"][:, k].round(6))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _attributes(demo: pd.DataFrame) -> dict:
    out = {}
    for name in FAIRNESS_ATTRIBUTES:
        if name in demo.columns and demo[name].notna().any():
            out[name] = (age_bands(pd.to_numeric(demo[name], errors="coerce")) if name == "age"
                         else demo[name].astype(object).to_numpy())
    return out


def _eligible(demo: pd.DataFrame, config: DiseaseEvaluateConfig) -> np.ndarray:
    age = None if config.min_age is None and config.max_age is None else (config.min_age,
                                                                           config.max_age)
    return inclusion_mask(demo, age=age, sex=config.sex, site=config.site)


def _quantiles(config: DiseaseEvaluateConfig) -> list[float]:
    try:
        return [float(q) for q in config.quantiles]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"quantiles must be numbers in (0, 1], got "
                                    f"{config.quantiles!r}.") from None


def evaluate_disease(run_dir, config: DiseaseEvaluateConfig | str | None = None,
                     **overrides) -> DiseaseEvaluation:
    """Score the saved disease head on its split's test subjects and write the reports.

    Parameters
    ----------
    run_dir : path-like or RunDir
        Run directory after ``sleepfm finetune disease``.
    config : DiseaseEvaluateConfig, dict or YAML path, optional
        Settings (``horizon``, ``n_boot``, inclusion filters, ...); ``**overrides`` replace
        single fields.

    Returns
    -------
    DiseaseEvaluation

    Raises
    ------
    StoreError
        No head, outcome tables or embeddings changed since the head was trained, or embeddings
        of another encoder.

    Examples
    --------
    >>> ev = evaluate_disease("runs/demo", horizon=6, n_boot=200)
    >>> ev.c_index("head - baseline")
    """
    config = load_config(DiseaseEvaluateConfig, config, **overrides)
    run = RunDir(run_dir)
    with run.lock("evaluate disease"):
        run.head_record("disease")
        heads, record = load_heads(run.head_dir("disease"))
        split = read_split(run.split_file("disease"))
        outcomes = run_outcomes(run)
        data = load_disease_data(run, outcomes, embedding=record["embedding"],
                                 level=record["level"] if record["mode"] == "lstm" else None,
                                 phenotypes=record["phenotypes"],
                                 record_ids=split["train"] + split["val"] + split["test"])
        if data.outcomes_id != record.get("outcomes_id"):
            raise StoreError(f"{run.outcomes_dir}: the outcome tables changed since the disease "
                             "head was trained; run `sleepfm finetune disease` again.")
        check_encoder(record, data.checkpoint_id, run.embeddings_dir)
        if config.candidates_phenotype not in (None, *data.phenotypes):
            raise InvalidParameterError(f"candidates_phenotype {config.candidates_phenotype!r} "
                                        f"is not one of {data.phenotypes}.")
        changed = sorted(r for r, fp in record.get("inputs", {}).items() if data.inputs[r] != fp)
        if changed:
            raise StoreError(f"{run.head_dir('disease')}: the head was trained on embeddings that "
                             f"changed since ({len(changed)} nights, e.g. {', '.join(changed[:5])})"
                             "; run `sleepfm finetune disease` again.")
        everyone = list(range(len(data)))
        covariates = bool(record.get("covariates"))
        risks = {}
        for name, head in heads.items():
            mode = record["mode"] if name == "disease" else "demographics"
            X, cov = head_inputs(data, everyone, mode, demographics=covariates)
            risks["head" if name == "disease" else name] = head.predict_risk(X, cov)
        test = data.index(split["test"])
        train = data.index(split["train"])
        shared = dict(groups=np.asarray(data.subjects)[test], horizon=config.horizon,
                      train_time=data.time, train_event=data.event, n_boot=config.n_boot,
                      alpha=config.alpha, seed=config.seed,
                      strata=_strata(data, test, config.stratify))
        time, event = data.time[test], data.event[test]
        reports = {name: survival_report(time, event, risk[test], phenotypes=data.phenotypes,
                                         **shared) for name, risk in risks.items()}
        tables = [r.summary.assign(model=name) for name, r in reports.items()]
        if "baseline" in risks:
            diff = paired_difference(time, event, risks["head"][test], risks["baseline"][test],
                                     phenotypes=data.phenotypes, **shared)
            tables.append(diff.drop(columns=["value_a", "value_b"])
                          .rename(columns={"difference": "value"}).assign(model="head - baseline"))
        columns = ["model", "phenotype", "metric", "value", "ci_low", "ci_high", "p_value",
                   "q_value", "n", "n_events"]
        summary = pd.concat(tables, ignore_index=True)[columns]
        demo = data.demographics.iloc[test]
        fairness, enrichment, candidates = _fairness_enrichment(data, test, risks, demo, config,
                                                                shared, reports)
        attribution = attribution_risks = pd.DataFrame()
        attribution_note = None
        if config.attribution and record["mode"] != "demographics" \
                and record["embedding"] == "fused":
            first = run.embedding_file(data.record_ids[test[0]])
            if set(embedding_names(first)) & set(MODALITIES):
                attribution, attribution_risks = modality_attribution(
                    run, data, heads["disease"], record, test,
                    **{k: v for k, v in shared.items() if k != "groups"})
            else:
                attribution_note = (
                    "no per-modality attribution: the embeddings hold no per-modality part (a "
                    "ViT-1D backbone embeds all leads at once); compare lead conditions with "
                    "`sleepfm bench --conditions` instead")
                logger.warning(attribution_note)
        metrics = {
            "task": "disease", "mode": record["mode"], "head": str(run.head_dir("disease")),
            "attribution_note": attribution_note,
            "head_id": artifact_id(record), "embedding": record["embedding"],
            "level": record["level"], "encoder_checkpoint": record["encoder_checkpoint"],
            "phenotypes": data.phenotypes, "names": data.names, "horizon": config.horizon,
            "n_boot": config.n_boot, "alpha": config.alpha, "stratify": config.stratify,
            "test_site": split.get("test_site"), "test_records": split["test"],
            "n_test_nights": len(test), "n_test_subjects": len(set(shared["groups"])),
            "n_train_records": len(record.get("train_records", [])),
            "models": {name: r.to_dict() for name, r in reports.items()},
            "summary": summary.to_dict(orient="records"), "config": config.to_dict(),
            "synthetic_note": "figures on a synthetic cohort measure recovery of a known hazard, "
                              "not performance on patients",
        }
        out_dir = run.report_dir("disease")
        with run.writing_report("disease") as tmp:
            result = DiseaseEvaluation(metrics, summary, _risk_table(data, split, risks, train),
                                       fairness, enrichment, candidates, attribution,
                                       attribution_risks, tmp, reports)
            result.to_json(tmp / "metrics.json")
            for name in ("summary", "risks", "fairness", "enrichment", "candidates",
                         "attribution", "attribution_risks"):
                table = getattr(result, name)
                if len(table) or name == "summary":
                    file = "metrics.csv" if name == "summary" else f"{name}.csv"
                    write_text_atomic(tmp / file, table.to_csv(index=False))
            if config.figures:
                _figures(result, data, test, risks, config)
        result.directory = out_dir
        run.record_stage("evaluate_disease", {
            "reports": str(out_dir), "config": config.to_dict(), "test_records": split["test"],
            "mean_c_index": {m: float(result.c_index(m).value.mean())
                             for m in summary.model.unique()}})
        logger.info("%r", result)
        return result


def _fairness_enrichment(data, test, risks, demo, config, shared, reports):
    """fairness.csv, enrichment.csv and candidates.csv of the held-out subjects."""
    time, event = data.time[test], data.event[test]
    fairness, enrichment = [], []
    attributes = _attributes(demo) if config.fairness else {}
    eligible = _eligible(demo, config)
    common = dict(horizon=config.horizon, n_boot=config.n_boot, alpha=config.alpha,
                  seed=config.seed)
    for k, p in enumerate(data.phenotypes):
        if attributes:
            rep = subgroup_report(time[:, k], event[:, k], risks["head"][test, k],
                                  attributes=attributes, groups=shared["groups"],
                                  train_time=data.time[:, k], train_event=data.event[:, k],
                                  min_events=config.min_events, phenotype=p, **common)
            reports[f"fairness/{p}"] = rep
            fairness.append(rep.summary.assign(phenotype=p))
        for model, risk in risks.items():
            rep = enrichment_report(risk[test, k], time[:, k], event[:, k],
                                    quantiles=_quantiles(config), eligible=eligible,
                                    groups=shared["groups"], **common)
            if model == "head":
                reports[f"enrichment/{p}"] = rep
            enrichment.append(rep.summary.assign(model=model, phenotype=p))
    which = config.candidates_phenotype or data.phenotypes[0]
    k = data.phenotypes.index(which)
    at_risk = eligible & np.isfinite(time[:, k])  # prevalent cases are not candidates
    ranked = rank_candidates(risks["head"][test, k], ids=np.asarray(data.record_ids)[test],
                             eligible=at_risk).rename(columns={"id": "record_id"})
    extra = demo[[c for c in ("subject_id", "age", "sex", "race", "site") if c in demo.columns]]
    candidates = ranked.merge(extra, left_on="record_id", right_index=True, how="left")
    candidates.insert(1, "phenotype", which)

    def first(frames, *lead):
        if not frames:
            return pd.DataFrame()
        table = pd.concat(frames, ignore_index=True)
        return table[[*lead, *[c for c in table.columns if c not in lead]]]

    return first(fairness, "phenotype"), first(enrichment, "model", "phenotype"), candidates


def _figures(result: DiseaseEvaluation, data: DiseaseData, test, risks, config) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(result.directory / name, dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 0.4 * len(data.phenotypes) + 1.5))
    result.plot(ax=ax)
    save(fig, "forest.png")
    shown = data.phenotypes[:6]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 4), squeeze=False)
    for ax, p in zip(axes[0], shown):
        k = data.phenotypes.index(p)
        km_by_quartile(data.time[test, k], data.event[test, k], risks["head"][test, k], ax=ax,
                       horizon=config.horizon)
        ax.set_title(data.names.get(p, p), fontsize=10)
        ax.legend(fontsize=7)
    save(fig, "km.png")
    first = data.phenotypes[0]
    for key, name in ((f"enrichment/{first}", "enrichment.png"),
                      (f"fairness/{first}", "fairness.png")):
        if key in result.reports:
            fig, ax = plt.subplots(figsize=(5, 4))
            result.reports[key].plot(ax=ax)
            ax.set_title(data.names.get(first, first), fontsize=10)
            save(fig, name)
    a = result.attribution
    if len(a):
        c = a[a.metric == "c_index"].pivot(index="phenotype", columns="modality",
                                           values="difference")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        c.plot.bar(ax=ax)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_ylabel("ΔC-index (with − without)")
        save(fig, "attribution.png")

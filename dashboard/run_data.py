"""What the dashboard reads from a run directory: read-only, through :class:`sleepfm.RunDir`.

Plain functions of a run (and the user's choices) that return tables, so the pages stay thin and
every number on them is testable without Streamlit. Nothing here writes, locks or evaluates text.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sleepfm import RunDir, inclusion_mask, rank_candidates, read_outcomes
from sleepfm.eval.enrichment import enrichment_report
from sleepfm.exceptions import SleepFMError
from sleepfm.io.embeddings import read_embeddings
from sleepfm.io.labels import read_events, read_stages
from sleepfm.io.store import RecordReader
from sleepfm.stages.disease_data import record_demographics
from sleepfm.vocab import STAGE_NAMES

#: The stages of a run, in order: run.json key, what it makes, the command that makes it.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("preprocess", "HDF5 store and labels", "sleepfm preprocess EDF_DIR --out {run}"),
    ("pretrain", "encoder", "sleepfm pretrain --run {run}"),
    ("embed", "embeddings", "sleepfm embed --run {run}"),
    ("finetune_staging", "staging head", "sleepfm finetune staging --run {run}"),
    ("evaluate_staging", "staging report", "sleepfm evaluate staging --run {run}"),
    ("finetune_events", "events head", "sleepfm finetune events --run {run}"),
    ("evaluate_events", "events report", "sleepfm evaluate events --run {run}"),
    ("finetune_disease", "disease heads", "sleepfm finetune disease --run {run} --outcomes DIR"),
    ("evaluate_disease", "disease report", "sleepfm evaluate disease --run {run}"),
)
COMMANDS = {key: command for key, _, command in STAGES}
#: Columns a subject can be coloured or filtered by.
ATTRIBUTES = ("sex", "race", "age", "site")


class RunMissing(SleepFMError):
    """A run directory, or the part of it a page needs, is not there; says what makes it."""


def open_run(path) -> RunDir:
    """The run at ``path``; :class:`RunMissing` naming the command when there is none."""
    if path in (None, ""):
        raise RunMissing("no run directory given; start the dashboard with `sleepfm dashboard "
                         "RUN_DIR` (make one with `sleepfm demo --run RUN_DIR`).")
    run = RunDir(path)
    if not run.path.is_dir():
        raise RunMissing(f"{run.path}: no such run directory; make one with `sleepfm demo --run "
                         f"{run.path}` or `sleepfm preprocess EDF_DIR --out {run.path}`.")
    if not run.run_json.is_file():
        raise RunMissing(f"{run.path}: not a run directory (no run.json); make one with "
                         f"`sleepfm preprocess EDF_DIR --out {run.path}`.")
    return run


def stages(run: RunDir) -> dict:
    """``run.json``'s stages (an unreadable file is a :class:`RunMissing`)."""
    try:
        return run.read_run_json().get("stages", {})
    except (SleepFMError, ValueError) as err:
        raise RunMissing(f"{run.run_json}: unreadable ({err}); re-run the last stage.") from None


def require(run: RunDir, stage: str, what: str) -> None:
    """Raise :class:`RunMissing` saying which command makes ``what`` unless ``stage`` ran."""
    if stage not in stages(run):
        raise RunMissing(f"{run.path} has no {what} yet; make it with "
                         f"`{COMMANDS[stage].format(run=run.path)}`.")


def stage_table(run: RunDir) -> pd.DataFrame:
    """One row per stage: done or not, when, and the command that makes a missing one."""
    done = stages(run)
    rows = []
    for key, makes, command in STAGES:
        info = done.get(key)
        rows.append({"stage": key.replace("_", " "), "makes": makes, "done": info is not None,
                     "time": (info or {}).get("time", ""),
                     "settings": json.dumps((info or {}).get("config", {}), sort_keys=True),
                     "command": "" if info else command.format(run=run.path)})
    return pd.DataFrame(rows)


def overview(run: RunDir) -> dict:
    """Counts of the run: records, subjects, modalities, embeddings."""
    store = sorted(p.stem for p in run.hdf5_dir.glob("*.h5") if p.name != "index.h5") \
        if run.hdf5_dir.is_dir() else []
    embedded = run.embedded_records() if run.embeddings_dir.is_dir() else []
    subjects = set(run.subjects(store).values()) if store else set()
    records = stages(run).get("preprocess", {}).get("records", [])
    modalities = pd.Series([m for r in records if r.get("status") == "ok"
                            for m in r.get("channels", {})], dtype=object).value_counts()
    return {"records": len(store), "subjects": len(subjects), "embedded": len(embedded),
            "modalities": modalities.to_dict(), "last_batch": len(records)}


def encoder_card(run: RunDir) -> dict | None:
    """The encoder's model card from its artefact's ``config.json`` (None before pretrain)."""
    path = run.encoder_dir / "config.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    training = record.get("metadata", {}).get("training", {})
    config = record.get("config", {})
    return {"architecture": record.get("architecture"),
            "parameters": record.get("num_parameters"),
            "modalities": ", ".join(record.get("modalities", [])),
            "embedding dim": config.get("embed_dim"),
            "trained on records": training.get("n_records"),
            "created": record.get("created"), "sleepfm": record.get("sleepfm_version"),
            "torch": record.get("torch_version")}


def headline(run: RunDir) -> pd.DataFrame:
    """Headline held-out metrics with CIs of every report the run has."""
    rows = []
    for task in ("staging", "events"):
        path = run.report_dir(task) / "summary.csv"
        if path.is_file():
            table = pd.read_csv(path).head(3)
            rows += [{"report": task, "model": "head", "phenotype": "", "metric": r.metric,
                      "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}
                     for r in table.itertuples()]
    path = run.report_dir("disease") / "metrics.csv"
    if path.is_file():
        table = pd.read_csv(path)
        table = table[table.metric == "c_index"]
        rows += [{"report": "disease", "model": r.model, "phenotype": r.phenotype,
                  "metric": "c_index", "value": r.value, "ci_low": r.ci_low,
                  "ci_high": r.ci_high} for r in table.itertuples()]
    return pd.DataFrame(rows, columns=["report", "model", "phenotype", "metric", "value",
                                       "ci_low", "ci_high"])


# ---- subjects, risks and outcomes ---------------------------------------------------------
def disease_table(run: RunDir, name: str) -> pd.DataFrame:
    """``RUN/reports/disease/<name>.csv``."""
    require(run, "evaluate_disease", "disease report")
    path = run.report_dir("disease") / f"{name}.csv"
    if not path.is_file():
        raise RunMissing(f"{path}: missing; re-run `{COMMANDS['evaluate_disease'].format(run=run.path)}`.")
    return pd.read_csv(path, dtype={"record_id": str, "subject_id": str, "site": str})


def subjects(run: RunDir) -> pd.DataFrame:
    """One row per record with outcomes: demographics, split, and per phenotype the head's risk,
    its percentile, follow-up ``time_<p>`` (years) and ``event_<p>`` (NaN = not at risk)."""
    risks = disease_table(run, "risks")
    wide = risks.pivot(index="record_id", columns="phenotype", values="risk")
    percent = risks.pivot(index="record_id", columns="phenotype", values="percentile")
    first = risks.drop_duplicates("record_id").set_index("record_id")[["subject_id", "split"]]
    outcomes = read_outcomes(run.outcomes_dir)
    demo = record_demographics(run, outcomes, list(first.index))
    demo["age"] = pd.to_numeric(demo.get("age"), errors="coerce")
    table = first.join(demo[[c for c in ATTRIBUTES if c in demo.columns]])
    for p in wide.columns:
        table[f"risk_{p}"] = wide[p]
        table[f"percentile_{p}"] = percent[p]
        table[f"time_{p}"] = outcomes.time[p].reindex(table.index)
        table[f"event_{p}"] = outcomes.event[p].reindex(table.index)
    return table


def phenotypes(table: pd.DataFrame) -> list[str]:
    """The phenotypes of a :func:`subjects` table."""
    return [c[len("risk_"):] for c in table.columns if c.startswith("risk_")]


def top_modality(attribution_risks: pd.DataFrame, phenotype: str) -> pd.Series:
    """Per record, the modality that raises its risk most relative to the other subjects.

    ``delta_risk`` (risk with the modality − without) shares a common offset across subjects (the
    fused embedding moves when a modality is dropped), so each modality's mean is taken off first.
    """
    part = attribution_risks[attribution_risks.phenotype == phenotype]
    if part.empty:
        return pd.Series(dtype=object)
    wide = part.pivot(index="record_id", columns="modality", values="delta_risk")
    return (wide - wide.mean()).idxmax(axis=1)


def enrichment(table: pd.DataFrame, phenotype: str, *, horizon: float, quantiles,
               age=None, sex=None, site=None, exclude_prevalent: bool = True,
               model: str = "head", n_boot: int = 200, seed: int = 0):
    """Enrichment of recruiting the riskiest ``quantiles`` of the test subjects who pass the
    filters: ``(EnrichmentReport, ranked candidates)``.

    ``exclude_prevalent`` leaves out subjects not at risk (diagnosed before their PSG); with it off
    they are ranked too but have no outcome, so they count in ``n_excluded``.
    """
    test = table[table.split == "test"]
    if test.empty:
        raise RunMissing("the disease report has no test subjects; re-run `sleepfm finetune "
                         "disease` with a test split.")
    risk = test[f"risk_{phenotype}"].to_numpy(dtype=float)
    time = test[f"time_{phenotype}"].to_numpy(dtype=float)
    event = test[f"event_{phenotype}"].to_numpy(dtype=float)
    eligible = inclusion_mask(test, age=age, sex=sex or None, site=site or None)
    ranked_pool = eligible & (np.isfinite(time) if exclude_prevalent else True)
    report = None
    if (eligible & np.isfinite(time)).any():
        report = enrichment_report(risk, time, event, horizon=horizon, quantiles=quantiles,
                                   eligible=eligible, groups=test.subject_id.to_numpy(),
                                   n_boot=n_boot, seed=seed)
    ranked = rank_candidates(risk, ids=test.index.to_numpy(), eligible=ranked_pool)
    ranked = ranked.rename(columns={"id": "record_id"}).merge(
        test[["subject_id", *[c for c in ATTRIBUTES if c in test.columns]]],
        left_on="record_id", right_index=True, how="left")
    return report, ranked


def selected(ranked: pd.DataFrame, q: float) -> pd.DataFrame:
    """The riskiest fraction ``q`` of the ranked candidates (at least one)."""
    return ranked.head(max(1, math.ceil(q * len(ranked)))) if len(ranked) else ranked


def km_curves(table: pd.DataFrame, phenotype: str, chosen) -> pd.DataFrame:
    """Kaplan–Meier survival of the chosen candidates vs the other test subjects at risk:
    ``group, time, survival`` (lifelines)."""
    from lifelines import KaplanMeierFitter

    test = table[(table.split == "test") & table[f"time_{phenotype}"].notna()]
    inside = test.index.isin(list(chosen))
    frames = []
    for label, mask in (("selected", inside), ("not selected", ~inside)):
        if mask.sum() == 0:
            continue
        km = KaplanMeierFitter().fit(test[f"time_{phenotype}"][mask],
                                     test[f"event_{phenotype}"][mask])
        sf = km.survival_function_
        frames.append(pd.DataFrame({"group": f"{label} (n={int(mask.sum())})",
                                    "time": sf.index.to_numpy(), "survival": sf.iloc[:, 0].to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["group", "time", "survival"])


# ---- fairness -----------------------------------------------------------------------------
def fairness(run: RunDir, phenotype: str, metric: str, threshold: float) -> tuple[pd.DataFrame, dict]:
    """The fairness rows of one phenotype and metric, and the largest gap between scored groups
    (flagged when above ``threshold``)."""
    table = disease_table(run, "fairness")
    rows = table[(table.phenotype == phenotype) & (table.metric == metric)].copy()
    groups = rows[(rows.attribute != "overall") & rows.value.notna()]
    gap = {"flagged": False, "gap": float("nan"), "attribute": "", "low": "", "high": ""}
    for attribute, part in groups.groupby("attribute"):
        if len(part) < 2:
            continue
        low, high = part.loc[part.value.idxmin()], part.loc[part.value.idxmax()]
        if not high.value - low.value <= gap["gap"]:  # NaN at first
            gap = {"gap": float(high.value - low.value), "attribute": attribute,
                   "low": str(low.group), "high": str(high.group)}
    gap["flagged"] = bool(gap["gap"] > threshold) if np.isfinite(gap["gap"]) else False
    return rows, gap


# ---- embeddings ---------------------------------------------------------------------------
def night_embeddings(run: RunDir, *, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """Record ids and fused night embeddings ``[n, D]`` of the embedded records."""
    require(run, "embed", "embeddings")
    ids = run.embedded_records()[:limit]
    return ids, np.stack([read_embeddings(run.embedding_file(r), level="night")
                          for r in ids]).astype(np.float32)


def epoch_embeddings(run: RunDir, record_ids) -> pd.DataFrame:
    """Epoch embeddings of ``record_ids`` with their scored stage: ``record_id, epoch, stage``
    and the embedding as an array column ``x``."""
    rows = []
    for rid in record_ids:
        x = read_embeddings(run.embedding_file(rid), level="epoch")
        stage = np.full(len(x), -1)
        if run.stage_labels(rid).is_file():
            s = read_stages(run.stage_labels(rid)).stages[:len(x)]
            stage[:len(s)] = s
        rows.append(pd.DataFrame({"record_id": rid, "epoch": np.arange(len(x)),
                                  "stage": [STAGE_NAMES[s] if 0 <= s < len(STAGE_NAMES)
                                            else "unscored" for s in stage],
                                  "x": list(x.astype(np.float32))}))
    return pd.concat(rows, ignore_index=True)


def project_2d(X: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D map of the rows of ``X``: UMAP when ``umap-learn`` is installed (``auto``), else PCA."""
    X = np.asarray(X, dtype=np.float64)
    if method in ("auto", "umap") and len(X) > 15:
        try:
            import umap
        except ImportError:
            if method == "umap":
                raise RunMissing("UMAP needs `pip install umap-learn`; PCA works without it.") from None
        else:
            return umap.UMAP(random_state=seed).fit_transform(X), "UMAP"
    centred = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    return coords, "PCA"


# ---- one record ---------------------------------------------------------------------------
def record_ids(run: RunDir) -> list[str]:
    """Records of the store."""
    require(run, "preprocess", "HDF5 store")
    return sorted(p.stem for p in run.hdf5_dir.glob("*.h5") if p.name != "index.h5")


def hypnogram(run: RunDir, record_id: str) -> pd.DataFrame:
    """Per epoch: the scored stage and, where the staging report holds the record, the predicted
    stage and the probability of each stage (the hypnodensity)."""
    path = run.report_dir("staging") / "predictions.csv"
    if path.is_file():
        pred = pd.read_csv(path, dtype={"record_id": str})
        pred = pred[pred.record_id == record_id]
        if len(pred):
            return pred.drop(columns=["subject_id"]).reset_index(drop=True)
    if run.stage_labels(record_id).is_file():
        s = read_stages(run.stage_labels(record_id)).stages
        return pd.DataFrame({"record_id": record_id, "epoch": np.arange(len(s)), "true": s})
    return pd.DataFrame(columns=["record_id", "epoch", "true"])


def events(run: RunDir, record_id: str) -> pd.DataFrame:
    """The record's scored events (onset, duration, type), empty when it has none."""
    path = run.event_labels(record_id)
    return read_events(path) if path.is_file() else pd.DataFrame(
        columns=["onset", "duration", "type"])


def signals(run: RunDir, record_id: str, start_s: float, seconds: float) -> tuple[dict, float]:
    """``({modality: {channel: samples}}, sample rate)`` of one window, read lazily."""
    with RecordReader(run.store_file(record_id)) as reader:
        stop = min(start_s + seconds, reader.duration_s)
        window = reader.read(start_s, stop)
        return ({m: dict(zip(reader.channels[m], window[m])) for m in window},
                float(reader.sample_rate))


def record_duration(run: RunDir, record_id: str) -> float:
    """Seconds of the record."""
    with RecordReader(run.store_file(record_id)) as reader:
        return float(reader.duration_s)


def file_signature(*paths: Path) -> tuple:
    """Modification times of ``paths`` (cache keys: a page reloads what changed)."""
    return tuple((str(p), p.stat().st_mtime_ns if p.exists() else 0) for p in paths)

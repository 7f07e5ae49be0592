"""The nights of a disease task: a run's embeddings joined with the outcome tables in ``RUN/outcomes``.

A record is used when it has both an embeddings file and a row of the outcome tables; records with
only one of the two are reported (``DiseaseData.report``) and logged, never silently dropped.
Demographics come from the outcome tables, completed by the run's ``cohort.csv`` (race, site...).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..channels import MODALITIES
from ..exceptions import LabelError, StoreError
from ..io.cohort import read_cohort
from ..io.embeddings import read_embedding_attrs, read_embeddings
from ..io.outcomes import Outcomes, read_outcomes
from ..rundir import RunDir
from ..utils import fingerprint, sha256_file

logger = logging.getLogger(__name__)

#: The demographic covariates of the Cox heads, in column order: age (years) and sex (1 = male).
COVARIATES: tuple[str, ...] = ("age", "male")
_MALE = {"m", "male", "man", "1"}
_FEMALE = {"f", "female", "woman", "0", "2"}


@dataclass
class DiseaseData:
    """Nights with outcomes, aligned: one row per record, sorted by record id.

    Attributes
    ----------
    record_ids, subjects : list of str
    night : ndarray [n, D]
        Night embeddings (``embedding``).
    steps : list of ndarray [T_i, D] or None
        The night's sequence at ``level`` (window, epoch or token embeddings), for the LSTM.
    time, event : ndarray [n, K]
        Years to the event or censoring, 1/0 events; NaN = not at risk for that phenotype.
    phenotypes : list of str
    names : dict
        Phenotype → readable name.
    demographics : DataFrame
        Index ``record_id``: ``age``, ``sex`` and, where known, ``race``, ``site``.
    covariates : ndarray [n, len(COVARIATES)]
        Age and sex coded for the heads (NaN where unknown).
    modalities : list of list of str
        The modalities present in each record's embeddings.
    checkpoint_id : str
        The encoder that made the embeddings.
    inputs : dict
        ``{record_id: fingerprint}`` of each record's embeddings.
    outcomes_id : str
        Checksum of ``RUN/outcomes``.
    report : list of str
        Records left out and why.
    """

    record_ids: list[str]
    subjects: list[str]
    night: np.ndarray
    steps: list[np.ndarray] | None
    time: np.ndarray
    event: np.ndarray
    phenotypes: list[str]
    names: dict
    demographics: pd.DataFrame
    covariates: np.ndarray
    modalities: list[list[str]]
    checkpoint_id: str = ""
    inputs: dict = field(default_factory=dict)
    outcomes_id: str = ""
    report: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.record_ids)

    def __repr__(self) -> str:
        return (f"<DiseaseData | {len(self)} nights, {len(set(self.subjects))} subjects, "
                f"{len(self.phenotypes)} phenotypes, {int(np.nansum(self.event))} events>")

    def index(self, records) -> list[int]:
        """Positions of ``records``; a record without embeddings and outcomes is an error."""
        pos = {r: i for i, r in enumerate(self.record_ids)}
        missing = [r for r in records if r not in pos]
        if missing:
            raise LabelError(f"split names records {missing[:5]} that have no embeddings or no "
                             "outcomes; run `sleepfm finetune disease` again to make a new split.")
        return [pos[r] for r in records]


def sex_code(values) -> np.ndarray:
    """1.0 for male, 0.0 for female, NaN when unknown (M/F, male/female, 1/0; case-insensitive)."""
    text = pd.Series(values, dtype=object).map(lambda v: str(v).strip().lower())
    return np.where(text.isin(_MALE), 1.0, np.where(text.isin(_FEMALE), 0.0, np.nan))


def outcomes_id(run: RunDir) -> str:
    """Checksum of the outcome tables kept in ``RUN/outcomes``."""
    files = sorted(run.outcomes_dir.glob("*.csv"))
    return fingerprint(*[(p.name, sha256_file(p)) for p in files])


def run_outcomes(run: RunDir) -> Outcomes:
    """The outcome tables kept in ``RUN/outcomes`` by ``sleepfm finetune disease``."""
    if not run.outcomes_dir.is_dir():
        raise StoreError(f"{run.outcomes_dir}: no outcome tables; run `sleepfm finetune disease "
                         f"--run {run.path} --outcomes DIR` first.")
    return read_outcomes(run.outcomes_dir)


def record_demographics(run: RunDir, outcomes: Outcomes, record_ids: list[str]) -> pd.DataFrame:
    """Demographics of ``record_ids``: the outcome tables', completed by the run's ``cohort.csv``
    (age, sex, race, site)."""
    demo = outcomes.demographics.reindex(record_ids).copy()
    if run.cohort_file.is_file():
        cohort = read_cohort(run.cohort_file).set_index("record_id").reindex(record_ids)
        for column in ("age", "sex", "race", "site"):
            if column in cohort.columns:
                known = demo[column] if column in demo.columns else pd.Series(index=demo.index)
                demo[column] = known.where(known.notna(), cohort[column])
    return demo


def _sequence(path, level: str, embedding: str) -> np.ndarray:
    try:
        return read_embeddings(path, level=level, name=embedding).astype(np.float32)
    except StoreError:
        if level == "token":
            raise StoreError(f"{path.name}: no token embeddings; run `sleepfm embed --tokens "
                             "--overwrite` to keep them, or use --level window.") from None
        raise


def load_disease_data(run_dir, outcomes: Outcomes | None = None, *, embedding: str = "fused",
                      level: str | None = None, phenotypes=None, record_ids=None) -> DiseaseData:
    """Night embeddings (and sequences at ``level``) of the run's records that have outcomes.

    Parameters
    ----------
    run_dir : path-like or RunDir
        After ``sleepfm embed``.
    outcomes : Outcomes, optional
        Default: ``RUN/outcomes``.
    embedding : str, default="fused"
    level : {"window", "epoch", "token"}, optional
        Also load each night's sequence at this level (the LSTM's input).
    phenotypes : list of str, optional
        Only these phenotypes.
    record_ids : list of str, optional
        Only these records.

    Raises
    ------
    LabelError
        An unknown phenotype, or no record with both embeddings and outcomes.
    StoreError
        No embeddings, embeddings of different encoders, or no token embeddings for
        ``level="token"``.
    """
    run = RunDir(run_dir)
    outcomes = outcomes if outcomes is not None else run_outcomes(run)
    chosen = outcomes.phenotypes if phenotypes is None else [str(p) for p in phenotypes]
    unknown = [p for p in chosen if p not in outcomes.phenotypes]
    if unknown:
        raise LabelError(f"phenotypes {unknown[:5]} are not in the outcome tables (or have no "
                         f"event); they have {outcomes.phenotypes[:10]}.")
    embedded = run.embedded_records()
    with_outcomes = set(outcomes.time.index)
    report = []
    no_outcomes = [r for r in embedded if r not in with_outcomes]
    no_embeddings = sorted(with_outcomes - set(embedded))
    if no_outcomes:
        report.append(f"{len(no_outcomes)} embedded records have no outcomes and are left out "
                      f"({', '.join(no_outcomes[:5])}).")
    if no_embeddings:
        report.append(f"{len(no_embeddings)} records of the outcome tables have no embeddings "
                      f"and are left out ({', '.join(no_embeddings[:5])}); run `sleepfm "
                      "preprocess` and `sleepfm embed` on their recordings.")
    ids = [r for r in embedded if r in with_outcomes]
    if record_ids is not None:
        missing = sorted(set(record_ids) - set(ids))
        if missing:
            raise LabelError(f"records {missing[:5]} have no embeddings or no outcomes.")
        ids = [r for r in ids if r in set(record_ids)]
    if not ids:
        raise LabelError(f"{run.path}: no embedded record has a row in the outcome tables; the "
                         "tables' Study ID / record_id must be the recordings' record ids "
                         f"(e.g. {embedded[0]!r}).")
    for line in report:
        logger.warning("%s", line)
    night, steps, modalities, inputs, encoders = [], [] if level else None, [], {}, set()
    for rid in ids:
        path = run.embedding_file(rid)
        attrs = read_embedding_attrs(path)
        night.append(read_embeddings(path, level="night", name=embedding).astype(np.float32))
        if level:
            steps.append(_sequence(path, level, embedding))
        modalities.append([m for m in MODALITIES if m in attrs.get("modalities", [])])
        inputs[rid] = attrs.get("fingerprint", "")
        encoders.add(str(attrs.get("checkpoint_id", "")))
    if len(encoders) > 1:
        raise StoreError(f"{run.embeddings_dir}: embeddings were made by different encoders "
                         f"({sorted(encoders)}); re-run `sleepfm embed --run {run.path} "
                         "--overwrite`.")
    picked = outcomes.select(ids)
    demo = record_demographics(run, picked, ids)
    covariates = np.column_stack([
        pd.to_numeric(demo["age"], errors="coerce").to_numpy(dtype=float)
        if "age" in demo else np.full(len(ids), np.nan),
        sex_code(demo["sex"]) if "sex" in demo else np.full(len(ids), np.nan)])
    subjects = run.subjects(ids)
    if "subject_id" in demo.columns:  # the outcome tables' subject ids win over the cohort's
        subjects.update({r: str(s) for r, s in demo["subject_id"].items() if pd.notna(s)})
    return DiseaseData(
        ids, [subjects[r] for r in ids], np.stack(night), steps,
        picked.time[chosen].to_numpy(dtype=float), picked.event[chosen].to_numpy(dtype=float),
        chosen, {p: outcomes.names.get(p, p) for p in chosen}, demo, covariates, modalities,
        encoders.pop(), inputs, outcomes_id(run) if run.outcomes_dir.is_dir() else "",
        list(outcomes.report) + report)


def check_covariates(data: DiseaseData, rows) -> None:
    """Raise naming the records whose age or sex is unknown (the heads need both)."""
    bad = [data.record_ids[i] for i in rows if not np.isfinite(data.covariates[i]).all()]
    if bad:
        raise LabelError(f"{len(bad)} records have no age or no recognisable sex (M/F) in the "
                         f"demographics ({', '.join(bad[:5])}); add them to demographics.csv "
                         "(or cohort.csv), or run with --no-demographics and --no-baseline.")


def without_modality(data: DiseaseData, run_dir, modality: str, *, embedding_level: str,
                     record_ids) -> list[np.ndarray]:
    """The fused embeddings of ``record_ids`` at ``embedding_level`` as if ``modality`` had been
    masked out of the recordings before embedding.

    The encoder's modality towers are independent and the fused embedding is the mean of the
    present modalities' (:func:`sleepfm.models.sleepfm.fuse_modalities`), and token, epoch,
    window and night embeddings are means of tokens, so this is the mean of the other present
    modalities' stored embeddings: what re-embedding with the modality masked gives, without
    running the encoder again (checked against a masked re-embedding in the tests). A record
    left with no modality gets zeros, as the encoder gives.
    """
    run = RunDir(run_dir)
    pos = data.index(record_ids)
    out = []
    for rid, i in zip(record_ids, pos):
        path = run.embedding_file(rid)
        others = [m for m in data.modalities[i] if m != modality]
        if modality not in data.modalities[i]:
            out.append(read_embeddings(path, level=embedding_level, name="fused"))
        elif others:
            out.append(np.mean([read_embeddings(path, level=embedding_level, name=m)
                                for m in others], axis=0))
        else:
            out.append(np.zeros_like(read_embeddings(path, level=embedding_level, name="fused")))
    return [x.astype(np.float32) for x in out]

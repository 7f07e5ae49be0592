"""Synthetic cohorts for disease prediction: nights whose subjects' outcomes follow a known hazard of
the properties of those nights (apnea burden, N3 share, heart rate, arousal index) and of age.

Everything here is **synthetic**: generated nights (:mod:`sleepfm.synthetic`) and outcomes drawn
from a proportional-hazards model with the coefficients of :data:`PHENOTYPES`, so a model that
reads the nights well can beat one that knows only age and sex, and a permutation of the
embeddings destroys the signal. Figures computed on these cohorts say how well a method recovers
that model, not how it does on patients.

>>> write_synthetic_cohort("runs/cohort", n_subjects=300, minutes=30, seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import DataWarning
from .io.cohort import COHORT_NAME
from .io.cohort import write_cohort as write_cohort_table
from .io.outcomes import DAYS_PER_YEAR, Outcomes, write_outcomes
from .synthetic import SyntheticConfig, SyntheticNight, generate_cohort, write_night
from .utils import check_option, write_text_atomic
from .vocab import EVENT_GROUPS, sleep_hours

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phenotype:
    """A synthetic phenotype: yearly baseline hazard and log-hazard ratios per standardised fact."""

    name: str
    base: float
    beta: dict


#: The synthetic phenotypes and their hazards (per standard deviation of each fact, see
#: :data:`FACT_SCALES`); age is not the strongest, so a model of the nights beats demographics.
PHENOTYPES: dict[str, Phenotype] = {
    "death": Phenotype("all-cause mortality", 0.045,
                       {"age": 0.6, "apnea": 0.7, "heart_rate": 0.5}),
    "heart_failure": Phenotype("heart failure", 0.045,
                               {"age": 0.4, "heart_rate": 1.0, "apnea": 0.6}),
    "stroke": Phenotype("stroke", 0.035, {"age": 0.4, "apnea": 1.0, "arousal": 0.4}),
    "dementia": Phenotype("dementia", 0.035, {"age": 0.6, "n3": -0.9, "arousal": 0.5}),
}
#: Reference (mean, standard deviation) of each fact, fixed so a subject's hazard does not depend
#: on who else is in the cohort. ``apnea`` is log(1 + events per hour of sleep).
FACT_SCALES: dict[str, tuple[float, float]] = {
    "age": (50.0, 15.0), "apnea": (2.0, 1.0), "heart_rate": (63.0, 6.0), "n3": (0.15, 0.12),
    "arousal": (12.0, 6.0),
}
RACES = ("white", "black", "asian", "other")
SITES = ("A", "B", "C")


def night_facts(night: SyntheticNight) -> dict:
    """What a night shows of its subject: age, sex, apnea burden, N3 share, heart rate, arousals."""
    hours = max(sleep_hours(night.stages), 1e-3)
    resp = night.events["type"].isin(EVENT_GROUPS["apnea_hypopnea"]).sum()
    arousals = (night.events["type"] == "arousal").sum()
    return {"record_id": night.record_id, "subject_id": night.subject["subject_id"],
            "age": night.subject["age"], "sex": night.subject["sex"],
            "apnea": float(np.log1p(resp / hours)), "n3": float(np.mean(night.stages == 3)),
            "heart_rate": night.subject["hr_base"], "arousal": float(arousals / hours)}


def draw_outcomes(facts: pd.DataFrame, *, seed: int = 0, follow_up: tuple = (3.0, 10.0),
                  prevalence: float = 0.03, phenotypes: dict | None = None) -> Outcomes:
    """Times to event from the proportional-hazards model of :data:`PHENOTYPES`.

    Each subject is followed for a uniform ``follow_up`` (years) or until death, whichever comes
    first, and censored then; a fraction ``prevalence`` of them already has each phenotype other
    than death at the PSG (not at risk: NaN). Times are whole days (≥ 1), so the wide and the long
    tables of :func:`write_synthetic_cohort` hold the same outcomes. Draws depend only on
    ``seed`` and the row's position.
    """
    phenotypes = phenotypes or PHENOTYPES
    index = facts["record_id"].to_numpy()
    z = {k: (facts[k].to_numpy(dtype=float) - m) / s for k, (m, s) in FACT_SCALES.items()}

    def onset_days(j: int, p: Phenotype) -> np.ndarray:
        hazard = p.base * np.exp(sum(b * z[k] for k, b in p.beta.items()))
        return np.ceil(np.random.default_rng((seed, j)).exponential(1.0 / hazard) * DAYS_PER_YEAR)

    rng = np.random.default_rng((seed, len(phenotypes)))
    censor = np.floor(rng.uniform(*follow_up, size=len(index)) * DAYS_PER_YEAR)
    onsets = {code: onset_days(j, p) for j, (code, p) in enumerate(phenotypes.items())}
    end = np.minimum(censor, onsets["death"]) if "death" in onsets else censor
    time = pd.DataFrame(index=index, columns=list(phenotypes), dtype=float)
    event = time.copy()
    for code, onset in onsets.items():
        prevalent = (rng.random(len(index)) < prevalence) & (code != "death")
        time[code] = np.where(prevalent, np.nan, np.minimum(onset, end) / DAYS_PER_YEAR)
        event[code] = np.where(prevalent, np.nan, (onset <= end).astype(float))
    demo = facts.set_index("record_id")[["age", "sex", "race", "site", "subject_id"]]
    return Outcomes(time, event, demo, {c: p.name for c, p in phenotypes.items()})


def _days(years) -> pd.TimedeltaIndex:
    return pd.to_timedelta(np.round(np.asarray(years) * DAYS_PER_YEAR), unit="D")


def write_long_tables(outcomes: Outcomes, folder, *, start: str = "2012-01-01",
                      seed: int = 0) -> Path:
    """Write ``outcomes`` in the long format (``subjects.csv`` + ``diagnoses.csv``), with PSG dates
    spread over two years from ``start`` and prevalent cases diagnosed before their PSG."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng((seed, 99))
    demo = outcomes.demographics
    psg = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, 730, len(demo)), unit="D")
    # the censored phenotypes' time is the end of follow-up (all events come before it)
    followup = outcomes.time.max(axis=1).fillna(1 / DAYS_PER_YEAR).to_numpy()
    death = outcomes.event.get("death")
    subjects = pd.DataFrame({
        "subject_id": demo["subject_id"].to_numpy(), "record_id": demo.index,
        "psg_date": psg.date, "age": demo["age"].to_numpy(), "sex": demo["sex"].to_numpy(),
        "race": demo["race"].to_numpy(), "site": demo["site"].to_numpy(),
        "end_of_followup": (psg + _days(followup)).date,
        "death_date": [(d + _days(t)).date() if e == 1 else None for d, t, e in
                       zip(psg, outcomes.time.get("death", np.nan), death)]
        if death is not None else None})
    rows = []
    for code in outcomes.phenotypes:
        if code == "death":
            continue
        for k, (t, e) in enumerate(zip(outcomes.time[code], outcomes.event[code])):
            if e == 1:
                rows.append((subjects.loc[k, "subject_id"], code, (psg[k] + _days(t)).date()))
            elif np.isnan(e):  # prevalent: diagnosed before the PSG
                rows.append((subjects.loc[k, "subject_id"], code,
                             (psg[k] - pd.Timedelta(days=int(rng.integers(30, 2000)))).date()))
    write_text_atomic(folder / "subjects.csv", subjects.to_csv(index=False))
    write_text_atomic(folder / "diagnoses.csv", pd.DataFrame(
        rows, columns=["subject_id", "phenotype", "diagnosis_date"]).to_csv(index=False))
    return folder


def write_synthetic_cohort(folder, n_subjects: int, *, minutes: float = 30.0, seed: int = 0,
                           fmt: str = "wide", config: SyntheticConfig | None = None) -> Outcomes:
    """Write a synthetic cohort the pipeline reads: one night per subject (EDF + stage and event
    labels), ``cohort.csv`` (record, subject, age, sex, race, site) and ``outcomes/``.

    Each night is ``minutes`` cut from 20 minutes after lights-off (most subjects are asleep by
    then, so it shows their breathing, heart rate and sleep depth), of the ``cohort`` montage of
    :data:`sleepfm.synthetic.MONTAGES` (central EEG, EOG, chin EMG and ECG at 100 Hz, airflow
    at 16 Hz, SpO2).

    Parameters
    ----------
    folder : path-like
        Created; its recordings, labels and tables are replaced.
    n_subjects : int
    minutes : float, default=30
    seed : int, default=0
        The cohort is a function of the seed, ``n_subjects`` and ``minutes``.
    fmt : {"wide", "long"}, default="wide"
        The format of ``outcomes/`` (see :mod:`sleepfm.io.outcomes`).

    Returns
    -------
    Outcomes
        What ``outcomes/`` holds.
    """
    check_option("fmt", fmt, ("wide", "long"))
    folder = Path(folder)
    lead_in = 20.0  # minutes of lights-off before the excerpt: most subjects are asleep by then
    config = config or SyntheticConfig(
        duration_h=(lead_in + minutes) / 60, montage="cohort",
        sample_rates={"eeg": 100.0, "eog": 100.0, "emg": 100.0, "ecg": 100.0, "resp": 16.0})
    rng = np.random.default_rng((seed, 7))
    facts = []
    with warnings.catch_warnings():
        # a short night of a severe subject holds fewer events than its AHI asks; the facts
        # (and so the hazards) are computed from the events the night does hold
        warnings.filterwarnings("ignore", "AHI .* asks for", DataWarning)
        for night in generate_cohort(n_subjects, config, seed=seed):
            night = night.crop(lead_in * 60, night.duration_s)
            write_night(night, folder)
            facts.append({**night_facts(night),
                          "race": RACES[int(rng.choice(4, p=(.6, .2, .12, .08)))],
                          "site": SITES[int(rng.integers(len(SITES)))]})
    facts = pd.DataFrame(facts)
    write_cohort_table(facts[["record_id", "subject_id", "age", "sex", "race", "site"]],
                       folder / COHORT_NAME)
    outcomes = draw_outcomes(facts, seed=seed)
    shutil.rmtree(folder / "outcomes", ignore_errors=True)
    if fmt == "wide":
        write_outcomes(outcomes, folder / "outcomes")
    else:
        write_long_tables(outcomes, folder / "outcomes", seed=seed)
    (folder / "truth").mkdir(exist_ok=True)  # beside, not among, the label files
    write_text_atomic(folder / "truth" / "facts.csv", facts.to_csv(index=False))
    logger.info("wrote a synthetic cohort of %d subjects to %s", n_subjects, folder)
    return outcomes

"""Outcome tables: per record and phenotype, the time from the PSG to the event or to censoring.

Two input formats are read (:func:`read_outcomes` tells them apart):

- **SleepFM's wide format**: ``is_event.csv`` and ``time_to_event.csv`` (a ``Study ID`` column —
  the record id — and one column per phenotype, e.g. phecodes ``8.0, 8.5, …``; times in days; an
  empty cell = not at risk, e.g. diagnosed before the PSG), ``demographics.csv`` (``Study ID, age,
  gender``, more columns allowed, e.g. ``race``, ``site``, ``subject_id``) and optionally
  ``label_mapping.csv`` (``label_idx, phecode, phenotype``: the phenotypes' names).
- **A long format**: ``subjects.csv`` (``subject_id, record_id, psg_date, age, sex``, optionally
  ``race, site, end_of_followup, death_date``) and ``diagnoses.csv`` (``subject_id, phenotype,
  diagnosis_date``). A phenotype's time is the years from the PSG to its first diagnosis (event) or
  to the end of follow-up or death (censored); ``death_date`` also gives the phenotype ``death``.
  A subject diagnosed before (or on the day of) the PSG is not at risk for that phenotype.

Ids, dates, times and events are checked: errors name the file, the rows and what to do;
phenotypes without any event are dropped and reported. :func:`write_outcomes` writes the wide
format (what ``sleepfm finetune disease`` keeps in ``RUN/outcomes``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import LabelError
from ..utils import write_text_atomic

logger = logging.getLogger(__name__)

DAYS_PER_YEAR = 365.25
ID = "Study ID"


@dataclass
class Outcomes:
    """Time to event per record and phenotype, with the records' demographics.

    Attributes
    ----------
    time : DataFrame
        Index ``record_id``, one column per phenotype: years from the PSG (NaN = not at risk).
    event : DataFrame
        Same shape: 1 = the event happened at ``time``, 0 = censored, NaN = not at risk.
    demographics : DataFrame
        Index ``record_id``: ``age`` (years), ``sex``, and ``race``, ``site``, ``subject_id``
        where known.
    names : dict
        Phenotype → readable name.
    report : list of str
        What was dropped or left out, one line each.
    """

    time: pd.DataFrame
    event: pd.DataFrame
    demographics: pd.DataFrame
    names: dict = field(default_factory=dict)
    report: list = field(default_factory=list)

    @property
    def phenotypes(self) -> list[str]:
        return list(self.time.columns)

    def __repr__(self) -> str:
        return (f"<Outcomes | {len(self.time)} records, {len(self.phenotypes)} phenotypes, "
                f"{int(np.nansum(self.event.to_numpy()))} events>")

    def select(self, record_ids) -> Outcomes:
        """The rows of ``record_ids``, in that order (a record without outcomes is an error)."""
        record_ids = list(record_ids)
        missing = [r for r in record_ids if r not in self.time.index]
        if missing:
            raise LabelError(f"records {missing[:5]} have no outcomes; add them to the outcome "
                             "tables or leave them out.")
        demo = self.demographics.reindex(record_ids)
        return Outcomes(self.time.loc[record_ids], self.event.loc[record_ids], demo,
                        dict(self.names), list(self.report))


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise LabelError(f"{path}: not found; an outcomes folder needs {path.name}.")
    df = pd.read_csv(path, dtype={ID: str, "record_id": str, "subject_id": str})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LabelError(f"{path.name}: missing columns {missing}; it has {list(df.columns)}.")
    return df


def _rows(mask) -> str:
    """Spreadsheet row numbers (the header is row 1) of a boolean mask, the first few."""
    rows = np.flatnonzero(np.asarray(mask)) + 2
    return ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")


#: Columns of SleepFM's ``label_mapping.csv``: the disease model's outputs, in output order.
LABEL_MAPPING_COLUMNS: tuple[str, ...] = ("label_idx", "phecode", "phenotype")


def read_label_mapping(path: str | os.PathLike) -> dict[str, str]:
    """Phenotype id → readable name of every model output, in output order.

    Parameters
    ----------
    path : path-like
        A ``label_mapping.csv`` (``label_idx,phecode,phenotype``; more columns are ignored).
        Ids are kept as written (``"8.0"``, not ``8``).

    Returns
    -------
    dict of str to str
        ``{phecode: phenotype}`` ordered by ``label_idx``; ``list(mapping)`` are the ids.

    Raises
    ------
    LabelError
        The file is missing or unreadable, lacks a column, has empty cells, duplicate ids, or
        ``label_idx`` values other than 0, 1, … in row order; the message names the file and rows.

    Examples
    --------
    >>> names = read_label_mapping("sleepfm/configs/label_mapping.csv")
    >>> len(names), names["8.0"]
    (1065, 'Intestinal infection')
    """
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such label mapping; pass the label_mapping.csv released with "
                         "the disease model.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise LabelError(f"{path}: not a readable CSV ({err}).") from None
    missing = [c for c in LABEL_MAPPING_COLUMNS if c not in df.columns]
    if missing:
        raise LabelError(f"{path}: missing columns {missing}; it has {list(df.columns)}. A label "
                         f"mapping has the header {','.join(LABEL_MAPPING_COLUMNS)}.")
    df = df[list(LABEL_MAPPING_COLUMNS)].apply(lambda col: col.str.strip())
    empty = (df == "").any(axis=1)
    if empty.any():
        raise LabelError(f"{path}: empty cells in rows {_rows(empty)}; every output needs an "
                         "index, an id and a name.")
    out_of_order = df["label_idx"] != pd.Series(range(len(df))).astype(str)
    if out_of_order.any():
        raise LabelError(f"{path}: label_idx must count 0, 1, 2, … in row order (the model's "
                         f"output order); rows {_rows(out_of_order)} break it.")
    dupes = df["phecode"].duplicated(keep=False)
    if dupes.any():
        raise LabelError(f"{path}: phecodes {sorted(set(df.loc[dupes, 'phecode']))[:5]} occur more "
                         f"than once (rows {_rows(dupes)}); each output needs its own id.")
    return dict(zip(df["phecode"], df["phenotype"]))


def _unique_ids(df: pd.DataFrame, column: str, path: Path) -> None:
    dupes = df[column].duplicated(keep=False)
    if dupes.any():
        raise LabelError(f"{path.name}: {column} {sorted(set(df.loc[dupes, column]))[:5]} occur "
                         f"more than once (rows {_rows(dupes)}); keep one row per id.")


def _drop_eventless(time: pd.DataFrame, event: pd.DataFrame, report: list):
    eventless = [c for c in event.columns if not (event[c] == 1).any()]
    for c in eventless:
        report.append(f"phenotype {c!r} has no event among the records; dropped.")
    keep = [c for c in event.columns if c not in eventless]
    return time[keep], event[keep]


def _read_wide(folder: Path) -> Outcomes:
    events = _read_csv(folder / "is_event.csv", (ID,))
    times = _read_csv(folder / "time_to_event.csv", (ID,))
    for df, name in ((events, "is_event.csv"), (times, "time_to_event.csv")):
        _unique_ids(df, ID, folder / name)
    if list(events.columns) != list(times.columns):
        raise LabelError(f"{folder}: is_event.csv and time_to_event.csv have different phenotype "
                         "columns; write both with the same columns in the same order.")
    if set(events[ID]) != set(times[ID]):
        odd = sorted(set(events[ID]) ^ set(times[ID]))
        raise LabelError(f"{folder}: records {odd[:5]} are in only one of is_event.csv and "
                         "time_to_event.csv; both need the same Study IDs.")
    event = events.set_index(ID).apply(pd.to_numeric, errors="coerce")
    time = times.set_index(ID).loc[event.index].apply(pd.to_numeric, errors="coerce") / DAYS_PER_YEAR
    bad = ~(event.isna() | event.isin([0, 1]))
    if bad.to_numpy().any():
        col = bad.any().idxmax()
        raise LabelError(f"is_event.csv: column {col!r} holds values other than 0, 1 or empty "
                         f"(rows {_rows(bad[col])}).")
    negative = time < 0
    if negative.to_numpy().any():
        col = negative.any().idxmax()
        raise LabelError(f"time_to_event.csv: column {col!r} has negative times (rows "
                         f"{_rows(negative[col])}); an event before the PSG means the record is "
                         "not at risk: leave that cell empty in both tables.")
    gaps = time.isna() != event.isna()
    if gaps.to_numpy().any():
        col = gaps.any().idxmax()
        raise LabelError(f"{folder}: column {col!r} is empty in one table but not in the other "
                         f"(rows {_rows(gaps[col])}); a record not at risk is empty in both.")
    demographics = pd.DataFrame(index=event.index)
    if (folder / "demographics.csv").is_file():
        demo = _read_csv(folder / "demographics.csv", (ID, "age"))
        _unique_ids(demo, ID, folder / "demographics.csv")
        demo = demo.set_index(ID).rename(columns={"gender": "sex"})
        unknown = sorted(set(demo.index) - set(event.index))
        if unknown:
            raise LabelError(f"demographics.csv: Study IDs {unknown[:5]} are not in is_event.csv.")
        demographics = demo.reindex(event.index)
    names = {}
    if (folder / "label_mapping.csv").is_file():
        names = read_label_mapping(folder / "label_mapping.csv")
    report: list[str] = []
    time, event = _drop_eventless(time, event, report)
    return Outcomes(time, event, demographics, {c: names.get(c, c) for c in time.columns}, report)


def _dates(df: pd.DataFrame, column: str, path: Path, *, required: bool) -> pd.Series:
    if column not in df.columns:
        return pd.Series(pd.NaT, index=df.index)
    dates = pd.to_datetime(df[column], errors="coerce")
    bad = dates.isna() & (df[column].notna() if not required else True)
    if bad.any():
        raise LabelError(f"{path.name}: {column} is missing or not a date in rows {_rows(bad)} "
                         "(use YYYY-MM-DD).")
    return dates


def _read_long(folder: Path) -> Outcomes:
    subjects_path, diagnoses_path = folder / "subjects.csv", folder / "diagnoses.csv"
    subjects = _read_csv(subjects_path, ("subject_id", "record_id", "psg_date", "age", "sex"))
    _unique_ids(subjects, "record_id", subjects_path)
    psg = _dates(subjects, "psg_date", subjects_path, required=True)
    end = _dates(subjects, "end_of_followup", subjects_path, required=False)
    death = _dates(subjects, "death_date", subjects_path, required=False)
    for name, dates in (("end_of_followup", end), ("death_date", death)):
        early = dates < psg
        if early.any():
            raise LabelError(f"{subjects_path.name}: {name} is before psg_date in rows "
                             f"{_rows(early)}; fix the dates.")
    last = pd.concat([end, death], axis=1).min(axis=1)
    if last.isna().any():
        raise LabelError(f"{subjects_path.name}: rows {_rows(last.isna())} have neither "
                         "end_of_followup nor death_date, so their censoring time is unknown.")
    diagnoses = (_read_csv(diagnoses_path, ("subject_id", "phenotype", "diagnosis_date"))
                 if diagnoses_path.is_file() else
                 pd.DataFrame(columns=["subject_id", "phenotype", "diagnosis_date"]))
    diagnoses["phenotype"] = diagnoses["phenotype"].astype(str)
    diag_dates = _dates(diagnoses, "diagnosis_date", diagnoses_path, required=True)
    unknown = ~diagnoses["subject_id"].isin(set(subjects["subject_id"]))
    if unknown.any():
        raise LabelError(f"{diagnoses_path.name}: subject_id {sorted(set(diagnoses.loc[unknown, 'subject_id']))[:5]} "
                         f"(rows {_rows(unknown)}) are not in {subjects_path.name}.")
    first = (diagnoses.assign(date=diag_dates).groupby(["subject_id", "phenotype"])["date"].min()
             .unstack("phenotype"))
    phenotypes = list(first.columns) + (["death"] if death.notna().any() else [])
    index = subjects["record_id"].to_numpy()
    time = pd.DataFrame(np.nan, index=index, columns=phenotypes)
    event = time.copy()
    years = (last - psg).dt.days.to_numpy() / DAYS_PER_YEAR
    excluded = {}
    for p in phenotypes:
        if p == "death":
            onset = death
        else:
            onset = subjects["subject_id"].map(first[p]) if p in first else pd.Series(pd.NaT)
        onset = pd.to_datetime(onset)
        prevalent = (onset <= psg).to_numpy()
        happened = (onset.notna() & (onset <= last)).to_numpy() & ~prevalent
        t = np.where(happened, (onset - psg).dt.days.to_numpy() / DAYS_PER_YEAR, years)
        time[p] = np.where(prevalent, np.nan, t)
        event[p] = np.where(prevalent, np.nan, happened.astype(float))
        if prevalent.any():
            excluded[p] = int(prevalent.sum())
    report = [f"phenotype {p!r}: {n} records diagnosed before their PSG are not at risk."
              for p, n in excluded.items()]
    time, event = _drop_eventless(time, event, report)
    demographics = subjects.set_index("record_id")[[c for c in ("age", "sex", "race", "site",
                                                                "subject_id")
                                                    if c in subjects.columns]]
    return Outcomes(time, event, demographics, {p: p for p in time.columns}, report)


def read_outcomes(folder) -> Outcomes:
    """Read an outcomes folder (wide SleepFM tables or long subjects + diagnoses tables).

    Parameters
    ----------
    folder : path-like
        Holds ``is_event.csv`` + ``time_to_event.csv`` (+ ``demographics.csv``,
        ``label_mapping.csv``), or ``subjects.csv`` + ``diagnoses.csv``.

    Returns
    -------
    Outcomes

    Raises
    ------
    LabelError
        A missing table or column, duplicated or unknown ids, dates out of order, negative times,
        events other than 0/1; the message names the file, the rows and what to do.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelError(f"{folder}: outcomes folder not found.")
    if (folder / "is_event.csv").is_file() or (folder / "time_to_event.csv").is_file():
        outcomes = _read_wide(folder)
    elif (folder / "subjects.csv").is_file():
        outcomes = _read_long(folder)
    else:
        raise LabelError(f"{folder}: holds neither is_event.csv + time_to_event.csv (SleepFM's "
                         "wide format) nor subjects.csv + diagnoses.csv (the long format).")
    for line in outcomes.report:
        logger.warning("%s: %s", folder, line)
    for table in (outcomes.time, outcomes.event, outcomes.demographics):
        table.index.name = "record_id"
    if outcomes.time.empty or not len(outcomes.phenotypes):
        raise LabelError(f"{folder}: no phenotype has an event; nothing to predict.")
    return outcomes


def write_outcomes(outcomes: Outcomes, folder) -> Path:
    """Write ``outcomes`` as SleepFM's wide tables (times in days), atomically per file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in (("is_event.csv", outcomes.event),
                        ("time_to_event.csv", outcomes.time * DAYS_PER_YEAR)):
        write_text_atomic(folder / name, table.rename_axis(ID).to_csv())
    write_text_atomic(folder / "demographics.csv", outcomes.demographics.rename_axis(ID)
                      .rename(columns={"sex": "gender"}).to_csv())
    mapping = pd.DataFrame({"label_idx": range(len(outcomes.phenotypes)),
                            "phecode": outcomes.phenotypes,
                            "phenotype": [outcomes.names.get(p, p) for p in outcomes.phenotypes]})
    write_text_atomic(folder / "label_mapping.csv", mapping.to_csv(index=False))
    return folder

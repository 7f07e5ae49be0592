"""The cohort table: one row per record with its subject and subject-level facts.

``cohort.csv`` beside the recordings has a ``record_id`` column, optionally
``subject_id`` (default: each record is its own subject) and any other columns (age, sex, race,
diagnoses…). Preprocessing copies it to ``RUN_DIR/cohort.csv`` (merged with the rows of records
preprocessed from other folders); splits use ``subject_id`` so that a subject's nights never
straddle train and test.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..exceptions import LabelError
from ..utils import write_text_atomic

#: File name of the cohort table, beside the recordings and in the run directory.
COHORT_NAME = "cohort.csv"


def read_cohort(path) -> pd.DataFrame:
    """Read and check a cohort table; ``subject_id`` defaults to ``record_id``."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: cohort table not found.")
    df = pd.read_csv(path, dtype={"record_id": str, "subject_id": str})
    if "record_id" not in df.columns:
        raise LabelError(f"{path.name}: needs a 'record_id' column; it has {list(df.columns)}.")
    dupes = sorted(df.loc[df["record_id"].duplicated(), "record_id"].unique())
    if dupes:
        raise LabelError(f"{path.name}: record ids {dupes[:5]} appear more than once.")
    if "subject_id" not in df.columns:
        df["subject_id"] = df["record_id"]
    missing = df["subject_id"].isna()
    if missing.any():
        raise LabelError(f"{path.name}: rows {list(df.index[missing][:5] + 2)} have no subject_id.")
    return df


def merge_cohorts(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``new``'s rows, then ``old``'s rows of other records (a folder preprocessed into a run that
    holds another folder's records keeps their subjects)."""
    kept = old[~old["record_id"].isin(set(new["record_id"]))]
    return pd.concat([new, kept], ignore_index=True)


def write_cohort(df: pd.DataFrame, path) -> None:
    """Write a cohort table atomically."""
    write_text_atomic(path, df.to_csv(index=False))

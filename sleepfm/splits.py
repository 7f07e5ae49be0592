"""Subject-level data splits: train/val/test, label fractions, few-shot subsets, split files.

Splits are made over *subjects*, never over records or epochs, so that no subject's nights
appear on both sides of a split. All functions are deterministic given ``seed`` and the set of
subject ids (the order of the records does not matter). Returned indices point into the
per-record ``subject_ids`` array and are sorted.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from .exceptions import DataWarning, InvalidParameterError, LabelError, StoreError
from .utils import write_json_atomic

logger = logging.getLogger(__name__)


def _subject_array(subject_ids) -> np.ndarray:
    ids = np.asarray(subject_ids)
    if ids.ndim != 1:
        raise InvalidParameterError(
            f"'subject_ids' must be 1-D (one subject id per record), got shape {ids.shape}."
        )
    if ids.size == 0:
        raise InvalidParameterError(
            "The cohort is empty: 'subject_ids' has no records. Pass one subject id per record."
        )
    return ids


def _round_count(fraction: float, n: int) -> int:
    """``fraction * n`` rounded half up."""
    return int(math.floor(fraction * n + 0.5))


def _shuffled_subjects(ids: np.ndarray, seed: int) -> np.ndarray:
    """Unique subject ids in sorted order, then permuted by ``seed``."""
    unique = np.unique(ids)
    return unique[np.random.default_rng(seed).permutation(unique.size)]


def _records_of(
    ids: np.ndarray, subjects: np.ndarray, within: np.ndarray | None = None
) -> np.ndarray:
    idx = np.flatnonzero(np.isin(ids, subjects))
    return idx if within is None else np.intersect1d(idx, within)


def subject_split(
    subject_ids, *, test_size: float = 0.2, val_size: float = 0.1, seed: int = 0
) -> dict[str, np.ndarray]:
    """Split records into train / val / test by subject.

    Parameters
    ----------
    subject_ids : array-like, shape (n_records,)
        Subject id of every record (a subject may have several nights).
    test_size, val_size : float, default=0.2 and 0.1
        Fractions of *subjects* in the test and validation sets, each in [0, 1). A non-zero
        fraction gets at least one subject; the rest go to training.
    seed : int, default=0
        Seed of the subject shuffle.

    Returns
    -------
    dict of str to ndarray of int
        ``{"train": idx, "val": idx, "test": idx}``: sorted record indices; every subject's
        records are in exactly one set.

    Raises
    ------
    InvalidParameterError
        If the cohort is empty, a size is out of range, or there are too few subjects to give
        every requested set at least one subject.

    Examples
    --------
    >>> split = subject_split(["s1", "s1", "s2", "s3", "s4"], test_size=0.25, val_size=0.25)
    >>> sorted(split)
    ['test', 'train', 'val']
    """
    ids = _subject_array(subject_ids)
    for name, size in (("test_size", test_size), ("val_size", val_size)):
        if not 0.0 <= size < 1.0:
            raise InvalidParameterError(f"{name!r} must be a fraction in [0, 1), got {size}.")
    if test_size + val_size >= 1.0:
        raise InvalidParameterError(
            f"test_size + val_size = {test_size + val_size:g} leaves no training subjects; "
            "make their sum smaller than 1."
        )
    subjects = _shuffled_subjects(ids, seed)
    n = subjects.size
    n_test = max(_round_count(test_size, n), 1) if test_size > 0 else 0
    n_val = max(_round_count(val_size, n), 1) if val_size > 0 else 0
    if n_test + n_val >= n:
        raise InvalidParameterError(
            f"Too few subjects for this split: {n} subjects cannot fill train, val "
            f"({n_val}) and test ({n_test}) with at least one subject each. Add subjects, or set "
            "val_size=0 (and use cross-validation) for a tiny cohort."
        )
    split = {
        "test": _records_of(ids, subjects[:n_test]),
        "val": _records_of(ids, subjects[n_test:n_test + n_val]),
        "train": _records_of(ids, subjects[n_test + n_val:]),
    }
    logger.info(
        "subject split: %d train / %d val / %d test subjects (%d / %d / %d records)",
        n - n_test - n_val, n_val, n_test, split["train"].size, split["val"].size,
        split["test"].size,
    )
    return split


def _train_subjects(train_idx, subject_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = _subject_array(subject_ids)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if train_idx.ndim != 1 or train_idx.size == 0:
        raise InvalidParameterError("'train_idx' is empty; pass the training record indices of subject_split.")
    if train_idx.min() < 0 or train_idx.max() >= ids.size:
        raise InvalidParameterError(
            f"'train_idx' points outside subject_ids (0..{ids.size - 1}); pass indices from "
            "subject_split on the same subject_ids."
        )
    return ids, train_idx, ids[train_idx]


def label_fraction(train_idx, subject_ids, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Keep a fraction of the training subjects (for label-efficiency curves).

    Parameters
    ----------
    train_idx : array-like of int
        Training record indices (e.g. ``subject_split(...)["train"]``).
    subject_ids : array-like, shape (n_records,)
        Subject id of every record.
    fraction : float
        Fraction of training *subjects* to keep, in (0, 1]; rounded half up, at least one.
    seed : int, default=0
        Seed of the subject order. For one seed, subsets are nested: the subjects kept at 10 %
        are also kept at 20 %, and so on.

    Returns
    -------
    ndarray of int
        Sorted record indices (a subset of ``train_idx``) of the kept subjects.

    Raises
    ------
    InvalidParameterError
        If ``fraction`` is not in (0, 1] or ``train_idx`` is empty.
    """
    if not 0.0 < fraction <= 1.0:
        raise InvalidParameterError(f"'fraction' must be in (0, 1], got {fraction}; use 1.0 for all labels.")
    ids, train_idx, train_ids = _train_subjects(train_idx, subject_ids)
    subjects = _shuffled_subjects(train_ids, seed)
    n_keep = max(_round_count(fraction, subjects.size), 1)
    logger.info("label fraction %g: %d of %d training subjects", fraction, n_keep, subjects.size)
    return _records_of(ids, subjects[:n_keep], within=train_idx)


def few_shot(train_idx, subject_ids, k: int, *, seed: int = 0) -> np.ndarray:
    """Pick ``k`` labelled training nights, from as many different subjects as possible.

    Parameters
    ----------
    train_idx : array-like of int
        Training record indices.
    subject_ids : array-like, shape (n_records,)
        Subject id of every record.
    k : int
        Number of nights (>= 1, at most the number of training records).
    seed : int, default=0
        Seed. For one seed, picks are nested: the ``k`` nights are among the ``k + 1`` nights.

    Returns
    -------
    ndarray of int
        Sorted record indices (a subset of ``train_idx``).

    Notes
    -----
    The first night of each subject in a shuffled subject order comes first; subjects give a
    second night only after every subject gave one.
    """
    ids, train_idx, train_ids = _train_subjects(train_idx, subject_ids)
    train_idx = np.unique(train_idx)
    train_ids = ids[train_idx]
    if not 1 <= k <= train_idx.size:
        raise InvalidParameterError(
            f"'k' must be between 1 and the number of training nights ({train_idx.size}), got {k}."
        )
    rng = np.random.default_rng(seed)
    subjects = np.unique(train_ids)
    subject_rank = np.empty(subjects.size, dtype=np.int64)
    subject_rank[rng.permutation(subjects.size)] = np.arange(subjects.size)
    code = np.searchsorted(subjects, train_ids)
    by_subject = np.lexsort((rng.random(train_idx.size), code))
    first = np.searchsorted(code[by_subject], code[by_subject])
    within = np.empty(train_idx.size, dtype=np.int64)
    within[by_subject] = np.arange(train_idx.size) - first  # rank of a night within its subject
    order = np.lexsort((subject_rank[code], within))
    return np.sort(train_idx[order[:k]])


def few_shot_epochs(y, k: int, *, seed: int = 0) -> list[np.ndarray]:
    """Keep ``k`` labelled epochs per class and mark every other epoch unscored (-1).

    The embeddings stay whole, so a sequence head still sees each night's context; only the
    loss is restricted to the kept epochs.

    Parameters
    ----------
    y : list of ndarray of int
        Stage labels of the training nights (-1 = unscored).
    k : int
        Labelled epochs to keep per class, pooled over all nights.
    seed : int, default=0
        Seed. For one seed, picks are nested in ``k``.

    Returns
    -------
    list of ndarray of int
        Copies of ``y`` with all but the kept epochs set to -1.

    Warns
    -----
    DataWarning
        When a class has fewer than ``k`` scored epochs (all of them are kept).
    """
    if k < 1:
        raise InvalidParameterError(f"'k' must be at least 1, got {k}.")
    nights = [np.asarray(n) for n in y]
    if not nights:
        raise LabelError("'y' is empty; pass the label arrays of the training nights.")
    flat = np.concatenate(nights).astype(np.int64)
    rng = np.random.default_rng(seed)
    keep = np.zeros(flat.size, dtype=bool)
    classes = np.unique(flat[flat >= 0])
    for c in classes:
        members = np.flatnonzero(flat == c)
        chosen = members[rng.permutation(members.size)[:k]]
        keep[chosen] = True
        if members.size < k:
            warnings.warn(
                f"class {c} has only {members.size} scored epochs (< k={k}); keeping all of them.",
                DataWarning,
                stacklevel=2,
            )
    masked = np.where(keep, flat, -1)
    bounds = np.cumsum([n.size for n in nights])[:-1]
    return list(np.split(masked, bounds))


def train_val_split(record_ids: list[str], *, val_fraction: float = 0.1, seed: int = 0,
                    groups: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Split records into train/validation by subject (``groups`` maps record → subject; default:
    each record is its own subject). With fewer than 2 subjects everything is training data."""
    groups = groups or {r: r for r in record_ids}
    subjects = [groups[r] for r in record_ids]
    if len(set(subjects)) < 2 or val_fraction <= 0:
        return list(record_ids), []
    split = subject_split(subjects, test_size=0.0, val_size=val_fraction, seed=seed)
    return [record_ids[i] for i in split["train"]], [record_ids[i] for i in split["val"]]


# --------------------------------------------------------------------------------------------
# split files: RUN_DIR/heads/<task>/split.json
# --------------------------------------------------------------------------------------------
PARTS: tuple[str, ...] = ("train", "val", "test")


def make_split(record_ids, subjects, *, test_size: float = 0.2, val_size: float = 0.1,
               seed: int = 0) -> dict:
    """A subject-level train/val/test split as a JSON-able dict of record ids.

    Returns ``{"seed", "test_size", "val_size", "train", "val", "test", "subjects"}`` where
    ``subjects`` maps every record to its subject. With fewer than three subjects there is no
    validation set; with fewer than two, an error.
    """
    n_subjects = len(set(subjects))
    if n_subjects < 2:
        raise LabelError(f"only {n_subjects} subject(s) with labels; a held-out test set needs at "
                         "least two subjects.")
    if n_subjects < 3 and val_size > 0:
        logger.warning("only %d subjects: no validation set", n_subjects)
        val_size = 0.0
    idx = subject_split(list(subjects), test_size=test_size, val_size=val_size, seed=seed)
    split = {part: [record_ids[i] for i in idx[part]] for part in PARTS}
    return {"seed": seed, "test_size": test_size, "val_size": val_size, **split,
            "subjects": {r: s for r, s in zip(record_ids, subjects)}}


def check_split(split: dict) -> None:
    """Raise :class:`LabelError` if a subject's nights are on more than one side of the split."""
    subj = split["subjects"]
    sides = {part: {subj[r] for r in split[part]} for part in PARTS}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        both = sides[a] & sides[b]
        if both:
            raise LabelError(f"subjects {sorted(both)[:5]} are in both {a} and {b}; the split "
                             "must be by subject.")


def read_split(path) -> dict:
    """A split written by :func:`write_split`, or any JSON with ``train``, ``val`` and ``test``
    lists of record ids (checked to be by subject when it maps records to ``subjects``)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no split; run `sleepfm finetune` for this task first.")
    try:
        split = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StoreError(f"{path}: not valid JSON; run `sleepfm finetune` again to rewrite it.") \
            from None
    missing = [part for part in PARTS if part not in split]
    if missing:
        raise StoreError(f"{path}: not a split file (no {missing[0]!r} list).")
    if "subjects" in split:
        check_split(split)
    return split


def write_split(path, split: dict) -> None:
    """Write a split as JSON, atomically."""
    write_json_atomic(path, split)


def site_split(record_ids, subjects, sites, test_site: str, *, val_size: float = 0.1,
               seed: int = 0) -> dict:
    """A site-transfer split: every record of ``test_site`` is tested, the other sites' records
    are split by subject into train and val (:func:`make_split`'s dict, with ``test_site``).

    Raises
    ------
    LabelError
        ``test_site`` has no record, no other site is left to train on, or a subject has
        records at the test site and at another.
    """
    record_ids, subjects = list(record_ids), list(subjects)
    sites = [str(s) for s in sites]
    known = sorted(set(sites))
    if str(test_site) not in known:
        raise LabelError(f"no record is at site {test_site!r}; sites are {known}.")
    test = [i for i, s in enumerate(sites) if s == str(test_site)]
    rest = [i for i, s in enumerate(sites) if s != str(test_site)]
    if not rest:
        raise LabelError(f"every record is at site {test_site!r}; site transfer needs another "
                         "site to train on.")
    both = {subjects[i] for i in test} & {subjects[i] for i in rest}
    if both:
        raise LabelError(f"subjects {sorted(both)[:5]} have records at site {test_site!r} and "
                         "at another; a site split must keep each subject at one site.")
    inner = make_split([record_ids[i] for i in rest], [subjects[i] for i in rest],
                       test_size=0.0, val_size=val_size, seed=seed)
    return {**inner, "test_size": None, "test_site": str(test_site),
            "test": sorted(record_ids[i] for i in test),
            "subjects": {r: s for r, s in zip(record_ids, subjects)}}

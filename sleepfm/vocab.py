"""The words of the domain, defined once: epochs, stages and staging schemes, events, record ids, AHI.

Stages are AASM W, N1, N2, N3, REM = 0–4 per 30 s epoch aligned to the recording start; N4 folds
into N3, movement time and unscored epochs are -1 (ignored by losses and metrics). A *scheme* names
the classes a head predicts: ``aasm5`` (the five AASM stages) or ``osf4`` (W, light = N1+N2,
deep = N3, REM).

Event *types* are what annotations hold (apnea, hypopnea, arousal, desaturation); event *names*
are what the events head predicts per epoch, apneas and hypopneas being one output.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .exceptions import LabelError
from .utils import check_option

#: Length of a scoring epoch, in seconds.
EPOCH_S = 30.0
#: Length of a window (the level of window embeddings; SleepFM's context), in seconds.
WINDOW_S = 300.0
#: Label of an unscored epoch (movement, artefact, not scored).
UNSCORED = -1
#: AASM stage names, in code order 0..4.
STAGE_NAMES: tuple[str, ...] = ("W", "N1", "N2", "N3", "REM")
#: Class names of each staging scheme, in label order.
SCHEMES: dict[str, tuple[str, ...]] = {
    "aasm5": STAGE_NAMES,
    "osf4": ("W", "Light", "Deep", "REM"),
}
_SCHEME_MAPS = {"aasm5": np.arange(5), "osf4": np.array([0, 1, 1, 2, 3])}

#: Event types read from annotations and label files.
EVENT_TYPES: tuple[str, ...] = ("apnea", "hypopnea", "arousal", "desaturation")
#: Event outputs of the events head and the types each one covers.
EVENT_GROUPS: dict[str, tuple[str, ...]] = {
    "apnea_hypopnea": ("apnea", "hypopnea"),
    "arousal": ("arousal",),
    "desaturation": ("desaturation",),
}
EVENT_NAMES: tuple[str, ...] = tuple(EVENT_GROUPS)

#: Heads trained on per-epoch labels of the nights (stages, events).
EPOCH_TASKS: tuple[str, ...] = ("staging", "events")
#: Heads a run can train (``sleepfm finetune TASK``): the epoch tasks and future disease.
TASKS: tuple[str, ...] = (*EPOCH_TASKS, "disease")

#: AHI severity grades, in order 0..3, and the thresholds (events per hour) between them.
SEVERITY_NAMES: tuple[str, ...] = ("none", "mild", "moderate", "severe")
SEVERITY_THRESHOLDS: tuple[float, ...] = (5.0, 15.0, 30.0)

_STAGE_ALIASES = {
    "w": 0, "wake": 0, "sleepstagew": 0, "stagew": 0,
    "n1": 1, "s1": 1, "stage1": 1, "sleepstage1": 1, "nrem1": 1,
    "n2": 2, "s2": 2, "stage2": 2, "sleepstage2": 2, "nrem2": 2,
    "n3": 3, "s3": 3, "stage3": 3, "sleepstage3": 3, "nrem3": 3,
    "n4": 3, "s4": 3, "stage4": 3, "sleepstage4": 3, "nrem4": 3,
    "rem": 4, "r": 4, "sleepstager": 4, "stager": 4, "sleepstagerem": 4,
    "?": -1, "unscored": -1, "unknown": -1, "sleepstage?": -1, "movementtime": -1,
    "movement": -1, "mt": -1, "artifact": -1, "artefact": -1, "nan": -1, "": -1,
}

_EVENT_PATTERNS = [
    (re.compile(r"hypopn"), "hypopnea"),
    (re.compile(r"apn(o)?ea"), "apnea"),
    (re.compile(r"arous"), "arousal"),
    (re.compile(r"desat|spo2.*drop|oxygen"), "desaturation"),
]


def stage_code(text) -> int | None:
    """AASM code (0–4, -1 unscored) of a stage label, or ``None`` if the text is not a stage.

    Numbers are read as AASM codes (0 = W … 4 = REM, -1 unscored), not R&K stage numbers.

    Examples
    --------
    >>> stage_code("Sleep stage 4"), stage_code("REM"), stage_code("Movement time")
    (3, 4, -1)
    """
    text = str(text).strip()
    if re.fullmatch(r"-?\d+(\.0)?", text):  # numbers are AASM codes, as sleepfm writes them
        code = int(float(text))
        return code if -1 <= code <= 4 else None
    return _STAGE_ALIASES.get(re.sub(r"[\s_\-]+", "", text.lower()))


def group_stages(y, scheme: str = "aasm5"):
    """Map AASM stages to a staging scheme.

    Parameters
    ----------
    y : array-like of int or list of arrays
        AASM stages W, N1, N2, N3, REM = 0..4 and -1 for unscored.
    scheme : {"aasm5", "osf4"}, default="aasm5"
        ``"aasm5"`` keeps the five stages; ``"osf4"`` maps to W / light (N1+N2) / deep (N3) /
        REM = 0..3. Unscored stays -1.

    Returns
    -------
    ndarray of int or list of ndarray
        Same structure as ``y``.

    Raises
    ------
    LabelError
        If a stage is not a whole number in -1..4.
    """
    check_option("scheme", scheme, SCHEMES)
    if isinstance(y, (list, tuple)) and len(y) and np.ndim(y[0]) >= 1:
        return [group_stages(night, scheme) for night in y]
    arr = np.asarray(y)
    if arr.ndim != 1 or (arr.dtype.kind == "f" and np.any(arr != np.round(arr))) or \
            arr.dtype.kind not in "iubf":
        raise LabelError(f"stages must be a 1-D array of whole numbers, got {arr.dtype} with "
                         f"shape {arr.shape}.")
    arr = arr.astype(np.int64)
    bad = (arr < -1) | (arr > 4)
    if np.any(bad):
        raise LabelError(
            f"stages must be AASM codes 0..4 or -1 (unscored), found {arr[bad][0]}; N4 folds "
            "into N3 (3) and movement/unknown into -1."
        )
    return np.where(arr >= 0, _SCHEME_MAPS[scheme][np.clip(arr, 0, 4)], UNSCORED)


def event_type(text: str) -> str | None:
    """Event type (one of :data:`EVENT_TYPES`) of an annotation text, or ``None``."""
    low = str(text).lower()
    for pattern, name in _EVENT_PATTERNS:
        if pattern.search(low):
            return name
    return None


def record_id(path) -> str:
    """The record id of a recording file: its stem without a Sleep-EDF ``-PSG`` suffix.

    Examples
    --------
    >>> record_id("data/SC4001E0-PSG.edf"), record_id("night1.bdf")
    ('SC4001E0', 'night1')
    """
    stem = Path(path).stem
    return stem[:-4] if stem.upper().endswith("-PSG") else stem


def sleep_hours(stages, *, epoch_s: float = EPOCH_S) -> float:
    """Hours of scored sleep (N1, N2, N3 and REM epochs) in a night of AASM stages."""
    return float((np.asarray(stages) >= 1).sum() * epoch_s / 3600.0)


def ahi(n_events, sleep_hours):
    """Apnea-hypopnea index: apneas + hypopneas per hour of sleep.

    Parameters
    ----------
    n_events : float or array-like
        Apneas + hypopneas per night.
    sleep_hours : float or array-like
        Total sleep time in hours (> 0).

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        If a sleep time is not positive or an event count is negative.
    """
    events = np.asarray(n_events, dtype=np.float64)
    hours = np.asarray(sleep_hours, dtype=np.float64)
    if np.any(~(hours > 0)):
        raise ValueError(
            f"{int(np.sum(~(hours > 0)))} nights have no positive sleep time; AHI is undefined "
            "there: drop those nights before computing AHI."
        )
    if np.any(events < 0):
        raise ValueError("event counts must be non-negative.")
    out = events / hours
    return float(out) if out.ndim == 0 else out


def ahi_from_events(events, stages, *, epoch_s: float = EPOCH_S) -> float:
    """AHI of a scored night: apneas and hypopneas that start in a sleep epoch, per hour of sleep.

    Parameters
    ----------
    events : DataFrame
        ``onset, duration, type`` (seconds from the recording start; types of :data:`EVENT_TYPES`).
    stages : array-like of int
        AASM stages per epoch (-1 unscored).

    Returns
    -------
    float
        NaN for a night without scored sleep.
    """
    stages = np.asarray(stages)
    hours = sleep_hours(stages, epoch_s=epoch_s)
    if hours <= 0:
        return float("nan")
    resp = events[events["type"].isin(EVENT_GROUPS["apnea_hypopnea"])]
    idx = (resp["onset"].to_numpy() // epoch_s).astype(int)
    idx = idx[(idx >= 0) & (idx < len(stages))]
    return ahi(int((stages[idx] >= 1).sum()), hours)


def ahi_severity(ahi_values):
    """OSA severity grade from AHI: 0 none (< 5), 1 mild (5-15), 2 moderate (15-30), 3 severe.

    Parameters
    ----------
    ahi_values : float or array-like
        AHI in events per hour (>= 0).

    Returns
    -------
    int or ndarray of int
        Grade 0..3 (names in ``SEVERITY_NAMES``); a threshold value belongs to the higher grade.
    """
    values = np.asarray(ahi_values, dtype=np.float64)
    if np.any(~(values >= 0)):
        raise ValueError("AHI values must be finite and non-negative; check the event counts.")
    grade = np.digitize(values, SEVERITY_THRESHOLDS).astype(np.int64)
    return int(grade) if grade.ndim == 0 else grade

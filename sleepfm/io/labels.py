"""Sleep-stage and event labels: read the common formats, normalise to AASM, align to the recording.

Stages are AASM W, N1, N2, N3, REM = 0–4 per 30 s epoch aligned to the recording start; N4 folds into
N3, movement time and unscored epochs become -1 (ignored by losses and metrics).

Readers accept
- EDF+ hypnograms (Sleep-EDF ``Sleep stage W/1/2/3/4/R/?``, ``Movement time``),
- SleepFM's CSV ``Start,Stop,StageName,StageNumber`` (one row per 30 s epoch, or one row per 5 s
  token with an ``EmbeddingNumber`` column),
- plain lists with one stage per line (``.txt``/``.csv`` without header),
- events from annotations or ``onset,duration,type`` CSV.
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, LabelError
from ..utils import check_option, write_text_atomic

logger = logging.getLogger(__name__)

EPOCH_S = 30.0
STAGE_NAMES: tuple[str, ...] = ("W", "N1", "N2", "N3", "REM")
EVENT_TYPES: tuple[str, ...] = ("apnea", "hypopnea", "arousal", "desaturation")

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


def event_type(text: str) -> str | None:
    """Normalised event type (one of :data:`EVENT_TYPES`) of an annotation text, or ``None``."""
    low = str(text).lower()
    for pattern, name in _EVENT_PATTERNS:
        if pattern.search(low):
            return name
    return None


@dataclass
class Hypnogram:
    """Stages per 30 s epoch (AASM 0–4, -1 unscored), aligned to the recording start."""

    stages: np.ndarray
    epoch_s: float = EPOCH_S

    def __post_init__(self):
        self.stages = np.asarray(self.stages, dtype=np.int8)

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        n_unique = len(set(self.stages[self.stages >= 0].tolist()))
        minutes = len(self) * self.epoch_s / 60
        return (f"<Hypnogram | {len(self)} epochs x {self.epoch_s:g}s ({minutes:.2f} minutes), "
                f"{n_unique} unique stages>")

    @property
    def duration_s(self) -> float:
        return len(self) * self.epoch_s

    def to_frame(self) -> pd.DataFrame:
        """SleepFM's CSV layout: ``Start,Stop,StageName,StageNumber`` (unscored: ``?``, -1)."""
        start = np.arange(len(self)) * self.epoch_s
        names = np.array(list(STAGE_NAMES) + ["?"], dtype=object)[self.stages]
        return pd.DataFrame({"Start": start, "Stop": start + self.epoch_s, "StageName": names,
                             "StageNumber": self.stages.astype(int)})

    def to_csv(self, path) -> None:
        """Write SleepFM's CSV atomically."""
        write_text_atomic(path, self.to_frame().to_csv(index=False))


def stages_from_annotations(annotations, *, epoch_s: float = EPOCH_S,
                            source: str = "annotations") -> Hypnogram:
    """Build a hypnogram from ``(onset, duration, text)`` stage annotations.

    Each epoch takes the stage whose interval contains the epoch's midpoint; epochs no stage covers
    are unscored. Non-stage annotations are ignored.
    """
    spans = []
    for a in annotations:
        onset, duration, text = (a.onset, a.duration, a.description) if hasattr(a, "onset") else a
        code = stage_code(text)
        if code is not None:
            spans.append((float(onset), float(duration), code))
    if not spans:
        raise LabelError(f"{source}: holds no sleep-stage annotations "
                         "(expected texts such as 'Sleep stage W' or 'N2').")
    end = max(o + d for o, d, _ in spans)
    n = int(np.floor(end / epoch_s + 1e-6))
    stages = np.full(n, -1, dtype=np.int8)
    mids = (np.arange(n) + 0.5) * epoch_s
    for onset, duration, code in sorted(spans):
        stages[(mids >= onset) & (mids < onset + duration)] = code
    return Hypnogram(stages, epoch_s)


def _stages_from_table(df: pd.DataFrame, source: str, epoch_s: float) -> Hypnogram:
    cols = {c.lower(): c for c in df.columns}
    if "start" in cols and ("stagename" in cols or "stagenumber" in cols):
        start = df[cols["start"]].to_numpy(dtype=float)
        stop = df[cols["stop"]].to_numpy(dtype=float) if "stop" in cols else None
        if "stagename" in cols:
            codes = [stage_code(v) for v in df[cols["stagename"]]]
        else:
            codes = [stage_code(v) if pd.notna(v) else -1 for v in df[cols["stagenumber"]]]
        bad = [(i, v) for i, v in enumerate(codes) if v is None]
        if bad:
            i, _ = bad[0]
            raise LabelError(f"{source}: row {i + 2} has an unknown stage "
                             f"{df.iloc[i].to_dict()}; use W, N1, N2, N3, REM (or ? for unscored).")
        if stop is None:
            stop = start + epoch_s
        return stages_from_annotations(list(zip(start, stop - start, [STAGE_NAMES[c] if c >= 0 else "?"
                                                                      for c in codes])),
                                       epoch_s=epoch_s, source=source)
    raise LabelError(f"{source}: columns {list(df.columns)} are not a stage table; expected "
                     "Start,Stop,StageName,StageNumber (SleepFM CSV) or one stage per line.")


def read_stages(path, *, epoch_s: float = EPOCH_S) -> Hypnogram:
    """Read a hypnogram from an EDF+ file, SleepFM CSV (per epoch or per 5 s token) or plain list.

    Raises
    ------
    LabelError
        Missing file, unknown format or stage names, no stages at all.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: label file not found.")
    if path.suffix.lower() in (".edf", ".bdf"):
        from .edf import read_edf

        return stages_from_annotations(read_edf(path).annotations, epoch_s=epoch_s, source=path.name)
    text = path.read_text().strip()
    if not text:
        raise LabelError(f"{path.name}: the label file is empty.")
    first = text.splitlines()[0]
    if "," in first and any(c.isalpha() for c in first.split(",")[0]):
        return _stages_from_table(pd.read_csv(path), path.name, epoch_s)
    codes = []
    for i, line in enumerate(text.splitlines()):
        code = stage_code(line.split(",")[0])
        if code is None:
            raise LabelError(f"{path.name}: line {i + 1} {line!r} is not a sleep stage; expected one of "
                             "W, N1, N2, N3, REM (or 0–4, ? for unscored) per line.")
        codes.append(code)
    return Hypnogram(np.array(codes, dtype=np.int8), epoch_s)


def align_stages(hyp: Hypnogram, duration_s: float, *, record: str = "",
                 on_mismatch: str = "trim") -> Hypnogram:
    """Fit a hypnogram to a recording of ``duration_s`` seconds (whole 30 s epochs).

    Epochs past the recording's end are trimmed, and missing epochs at the end are padded with
    unscored (-1); either way a :class:`DataWarning` says by how much. With ``on_mismatch="raise"``
    any difference is a :class:`LabelError`. Labels are never shifted.
    """
    check_option("on_mismatch", on_mismatch, ("trim", "raise"))
    n = int(np.floor(duration_s / hyp.epoch_s + 1e-6))
    if len(hyp) == n:
        return hyp
    diff = len(hyp) - n
    what = (f"{record}: hypnogram has {len(hyp)} epochs ({hyp.duration_s:g} s), recording "
            f"{duration_s:g} s ({n} epochs)")
    if on_mismatch == "raise":
        raise LabelError(what + "; fix the label file, or trim it (on_mismatch='trim'; "
                         "preprocessing config: on_label_mismatch: trim).")
    if diff > 0:
        dropped = hyp.stages[n:]
        scored = int((dropped >= 0).sum())
        warnings.warn(f"{what}: trimmed {diff} epochs ({diff * hyp.epoch_s:g} s) past the recording "
                      f"end, {scored} of them scored.", DataWarning, stacklevel=2)
        return Hypnogram(hyp.stages[:n], hyp.epoch_s)
    warnings.warn(f"{what}: padded {-diff} unscored epochs at the end.", DataWarning, stacklevel=2)
    return Hypnogram(np.concatenate([hyp.stages, np.full(-diff, -1, np.int8)]), hyp.epoch_s)


def events_from_annotations(annotations) -> pd.DataFrame:
    """Event table (``onset,duration,type``) from annotations; non-event texts are dropped."""
    rows = []
    for a in annotations:
        onset, duration, text = (a.onset, a.duration, a.description) if hasattr(a, "onset") else a
        kind = event_type(text)
        if kind is not None:
            rows.append((float(onset), float(duration), kind))
    return pd.DataFrame(rows, columns=["onset", "duration", "type"])


def read_events(path) -> pd.DataFrame:
    """Read events from an ``onset,duration,type`` CSV or an EDF+ file's annotations."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: events file not found.")
    if path.suffix.lower() in (".edf", ".bdf"):
        from .edf import read_edf

        return events_from_annotations(read_edf(path).annotations)
    df = pd.read_csv(path)
    missing = {"onset", "duration", "type"} - set(df.columns)
    if missing:
        raise LabelError(f"{path.name}: missing columns {sorted(missing)}; expected onset,duration,type.")
    types = [event_type(t) for t in df["type"]]
    unknown = sorted({str(t) for t, k in zip(df["type"], types) if k is None})
    if unknown:
        raise LabelError(f"{path.name}: unknown event types {unknown}; expected {list(EVENT_TYPES)}.")
    out = pd.DataFrame({"onset": df["onset"].astype(float), "duration": df["duration"].astype(float),
                        "type": types})
    if (out["duration"] < 0).any() or not np.isfinite(out[["onset", "duration"]].to_numpy()).all():
        raise LabelError(f"{path.name}: onsets and durations must be finite and durations >= 0.")
    return out


def align_events(events: pd.DataFrame, duration_s: float, *, record: str = "") -> pd.DataFrame:
    """Drop events that start outside the recording (with a warning that counts them)."""
    inside = (events["onset"] >= 0) & (events["onset"] < duration_s)
    if not inside.all():
        warnings.warn(f"{record}: dropped {int((~inside).sum())} events outside the recording "
                      f"(0–{duration_s:g} s).", DataWarning, stacklevel=2)
    return events[inside].reset_index(drop=True)


def events_to_epochs(events: pd.DataFrame, n_epochs: int, *, epoch_s: float = EPOCH_S,
                     types=EVENT_TYPES) -> np.ndarray:
    """Per-epoch binary targets ``[n_epochs, len(types)]``: 1 where an event overlaps the epoch."""
    out = np.zeros((n_epochs, len(types)), dtype=np.int8)
    for j, kind in enumerate(types):
        for onset, duration in events.loc[events["type"] == kind, ["onset", "duration"]].to_numpy():
            first = int(onset // epoch_s)
            last = int(np.ceil((onset + max(duration, 1e-9)) / epoch_s))
            out[max(first, 0):min(last, n_epochs), j] = 1
    return out


def write_events_csv(path, events: pd.DataFrame) -> None:
    """Write ``onset,duration,type`` atomically."""
    write_text_atomic(path, events[["onset", "duration", "type"]].to_csv(index=False))


def find_label_files(edf_path, record_id: str, label_dirs) -> dict[str, Path]:
    """Find a record's stage and event files: ``<record_id>.csv|.txt``, ``<record_id>.events.csv``,
    or a Sleep-EDF hypnogram pair (same first 6 characters, ``*Hypnogram.edf``)."""
    found: dict[str, Path] = {}
    for d in [Path(d) for d in label_dirs]:
        for suffix in (".csv", ".txt"):
            p = d / f"{record_id}{suffix}"
            if "stages" not in found and p.is_file():
                found["stages"] = p
        p = d / f"{record_id}.events.csv"
        if "events" not in found and p.is_file():
            found["events"] = p
        if "stages" not in found:
            pairs = sorted(d.glob(f"{Path(edf_path).name[:6]}*Hypnogram.edf"))
            if len(pairs) > 1:
                raise LabelError(f"{record_id}: several hypnograms match ({[p.name for p in pairs]}); "
                                 "keep one per recording.")
            if pairs:
                found["stages"] = pairs[0]
    return found

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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, LabelError
from ..utils import check_option, write_text_atomic
from ..vocab import (EPOCH_S, EVENT_GROUPS, EVENT_TYPES, SCHEMES, STAGE_NAMES, event_type,
                     stage_code)
from .edf import read_edf

logger = logging.getLogger(__name__)


@dataclass
class Hypnogram:
    """Stages per 30 s epoch, aligned to the recording start, with the scheme they are coded in.

    Parameters
    ----------
    stages : array-like of int
        One class per epoch in ``scheme`` (AASM 0–4 for ``aasm5``), -1 unscored.
    scheme : {"aasm5", "osf4"}, default="aasm5"
        The label scheme (:data:`sleepfm.vocab.SCHEMES`).
    epoch_s : float, default=30.0
    """

    stages: np.ndarray
    scheme: str = "aasm5"
    epoch_s: float = EPOCH_S

    def __post_init__(self):
        check_option("scheme", self.scheme, SCHEMES)
        self.stages = np.asarray(self.stages, dtype=np.int8)
        bad = (self.stages < -1) | (self.stages >= len(self.classes))
        if np.any(bad):
            raise LabelError(f"stage {self.stages[bad][0]} is outside -1..{len(self.classes) - 1} "
                             f"of the {self.scheme} scheme {list(self.classes)}.")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the scheme, in code order."""
        return SCHEMES[self.scheme]

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
        names = np.array(list(self.classes) + ["?"], dtype=object)[self.stages]
        return pd.DataFrame({"Start": start, "Stop": start + self.epoch_s, "StageName": names,
                             "StageNumber": self.stages.astype(int)})

    def to_csv(self, path) -> None:
        """Write SleepFM's CSV atomically."""
        write_text_atomic(path, self.to_frame().to_csv(index=False))


def _classified(annotations, classify) -> list[tuple[float, float, object]]:
    """``(onset, duration, classify(text))`` of the annotations whose text ``classify`` knows
    (annotations are :class:`~sleepfm.io.edf.Annotation` or ``(onset, duration, text)``)."""
    out = []
    for a in annotations:
        onset, duration, text = (a.onset, a.duration, a.description) if hasattr(a, "onset") else a
        label = classify(text)
        if label is not None:
            out.append((float(onset), float(duration), label))
    return out


def stages_from_annotations(annotations, *, epoch_s: float = EPOCH_S,
                            source: str = "annotations") -> Hypnogram:
    """Build a hypnogram from ``(onset, duration, text)`` stage annotations.

    Each epoch takes the stage whose interval contains the epoch's midpoint; epochs no stage covers
    are unscored. Non-stage annotations are ignored.
    """
    spans = _classified(annotations, stage_code)
    if not spans:
        raise LabelError(f"{source}: holds no sleep-stage annotations "
                         "(expected texts such as 'Sleep stage W' or 'N2').")
    end = max(o + d for o, d, _ in spans)
    n = int(np.floor(end / epoch_s + 1e-6))
    stages = np.full(n, -1, dtype=np.int8)
    mids = (np.arange(n) + 0.5) * epoch_s
    for onset, duration, code in sorted(spans):
        stages[(mids >= onset) & (mids < onset + duration)] = code
    return Hypnogram(stages, epoch_s=epoch_s)


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
    return Hypnogram(np.array(codes, dtype=np.int8), epoch_s=epoch_s)


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
        return Hypnogram(hyp.stages[:n], hyp.scheme, hyp.epoch_s)
    warnings.warn(f"{what}: padded {-diff} unscored epochs at the end.", DataWarning, stacklevel=2)
    return Hypnogram(np.concatenate([hyp.stages, np.full(-diff, -1, np.int8)]), hyp.scheme,
                     hyp.epoch_s)


def events_from_annotations(annotations) -> pd.DataFrame:
    """Event table (``onset,duration,type``) from annotations; non-event texts are dropped."""
    return pd.DataFrame(_classified(annotations, event_type), columns=["onset", "duration", "type"])


def read_events(path) -> pd.DataFrame:
    """Read events from an ``onset,duration,type`` CSV or an EDF+ file's annotations."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: events file not found.")
    if path.suffix.lower() in (".edf", ".bdf"):
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
                     groups: dict[str, tuple[str, ...]] | None = None) -> np.ndarray:
    """Per-epoch binary targets ``[n_epochs, n_groups]``: 1 where an event overlaps the epoch.

    ``groups`` maps each output to the event types it covers (default: one output per type of
    :data:`~sleepfm.vocab.EVENT_TYPES`); :data:`~sleepfm.vocab.EVENT_GROUPS` gives the outputs of
    the events head.
    """
    groups = groups or {t: (t,) for t in EVENT_TYPES}
    out = np.zeros((n_epochs, len(groups)), dtype=np.int8)
    for j, types in enumerate(groups.values()):
        for onset, duration in events.loc[events["type"].isin(types), ["onset", "duration"]].to_numpy():
            first = int(onset // epoch_s)
            last = int(np.ceil((onset + max(duration, 1e-9)) / epoch_s))
            out[max(first, 0):min(last, n_epochs), j] = 1
    return out


def event_targets(events: pd.DataFrame, stages: np.ndarray) -> np.ndarray:
    """The events head's targets ``[n_epochs, len(EVENT_NAMES)]``: 1/0 per epoch, -1 where the
    stage is unscored (unknown)."""
    y = events_to_epochs(events, len(stages), groups=EVENT_GROUPS).astype(np.int64)
    y[np.asarray(stages) < 0] = -1
    return y


def match_length(labels: np.ndarray, n: int, *, record: str, what: str) -> np.ndarray:
    """Labels trimmed or padded (with unscored, -1) to ``n`` epochs.

    A difference of one epoch (a trailing partial epoch) is tolerated; more means the label file
    does not belong to this recording, and is a :class:`LabelError` naming both lengths.
    """
    if abs(len(labels) - n) > 1:
        raise LabelError(
            f"{record}: {what} has {len(labels)} epochs but the recording has {n} (30 s epochs "
            "of the embeddings/store); they differ by more than one epoch, so the label file does "
            "not belong to this recording. Fix or remove the label file and preprocess again."
        )
    if len(labels) >= n:
        return labels[:n]
    pad = np.full((n - len(labels),) + labels.shape[1:], -1, dtype=labels.dtype)
    return np.concatenate([labels, pad])


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

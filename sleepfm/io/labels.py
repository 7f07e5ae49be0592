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
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, LabelError
from ..utils import check_option, write_text_atomic
from ..vocab import (EPOCH_S, EVENT_GROUPS, EVENT_TYPES, STAGE_NAMES, event_type,
                     stage_code)
from .edf import read_edf
from .hypnogram import Hypnogram
from .nsrr import read_scoring_xml

logger = logging.getLogger(__name__)


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
    reversed_ = [(o, d) for o, d, _ in spans if not d >= 0]
    if reversed_:
        onset, duration = reversed_[0]
        raise LabelError(f"{source}: a stage at {onset:g} s has duration {duration:g} s (it ends "
                         "before it starts); fix that row.")
    end = max(o + d for o, d, _ in spans)
    n = int(np.floor(end / epoch_s + 1e-6))
    stages = np.full(n, -1, dtype=np.int8)
    covered = np.zeros(n, dtype=np.int8)
    mids = (np.arange(n) + 0.5) * epoch_s
    for onset, duration, code in sorted(spans):
        inside = (mids >= onset) & (mids < onset + duration)
        covered[inside & (stages != code)] += 1
        stages[inside] = code
    clash = np.flatnonzero(covered > 1)
    if clash.size:
        warnings.warn(f"{source}: {clash.size} epochs are covered by stage rows that disagree (the "
                      f"first at {clash[0] * epoch_s:g} s); the later row was used. Fix the label "
                      "file if that is wrong.", DataWarning, stacklevel=2)
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
        backwards = np.flatnonzero(~(stop >= start))
        if backwards.size:
            i = int(backwards[0])
            raise LabelError(f"{source}: row {i + 2} ends ({stop[i]:g} s) before it starts "
                             f"({start[i]:g} s); fix that row.")
        return stages_from_annotations(list(zip(start, stop - start, [STAGE_NAMES[c] if c >= 0 else "?"
                                                                      for c in codes])),
                                       epoch_s=epoch_s, source=source)
    raise LabelError(f"{source}: columns {list(df.columns)} are not a stage table; expected "
                     "Start,Stop,StageName,StageNumber (SleepFM CSV) or one stage per line.")


def read_stages(path, *, epoch_s: float = EPOCH_S) -> Hypnogram:
    """Read a hypnogram from an EDF+ file, SleepFM CSV (per epoch or per 5 s token), a plain
    list, or NSRR / Compumedics Profusion XML (:mod:`sleepfm.io.nsrr`).

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
    if path.suffix.lower() == ".xml":
        hyp = read_scoring_xml(path).hypnogram
        if hyp is None:
            raise LabelError(f"{path.name}: holds events but no sleep stages; add a stage file "
                             "for this recording.")
        return hyp
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
    """Read events from an ``onset,duration,type[,subtype]`` CSV, an EDF+ file's annotations or
    NSRR / Profusion XML (whose events keep apnea subtypes apart in ``subtype``)."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: events file not found.")
    if path.suffix.lower() in (".edf", ".bdf"):
        return events_from_annotations(read_edf(path).annotations)
    if path.suffix.lower() == ".xml":
        return read_scoring_xml(path).events
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
    if "subtype" in df.columns:
        out["subtype"] = df["subtype"].fillna("").astype(str)
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
    """Write ``onset,duration,type`` (and ``subtype`` when any event has one) atomically."""
    columns = ["onset", "duration", "type"]
    if "subtype" in events.columns and (events["subtype"] != "").any():
        columns.append("subtype")
    write_text_atomic(path, events[columns].to_csv(index=False))


#: NSRR and Compumedics Profusion scoring files (stages and events): ``<record_id>`` + one of these.
SCORING_FILE_SUFFIXES: tuple[str, ...] = ("-nsrr.xml", "-profusion.xml")
#: Stage files of a record, by exact name: ``<record_id>`` + one of these.
STAGE_FILE_SUFFIXES: tuple[str, ...] = (".csv", ".txt", "-Hypnogram.edf", *SCORING_FILE_SUFFIXES)
#: Event files of a record: ``<record_id>`` + one of these.
EVENT_FILE_SUFFIXES: tuple[str, ...] = (".events.csv", *SCORING_FILE_SUFFIXES)
# Sleep-EDF recordings (SC4001E0-PSG.edf) and their hypnograms (SC4001EC-Hypnogram.edf) share the
# study, subject and night digits only.
_SLEEP_EDF = re.compile(r"^(S[CT]\d{4})[A-Z]\d-PSG")


def find_label_files(edf_path, record_id: str, label_dirs) -> dict[str, Path]:
    """Find a record's stage and event files, by exact name.

    A record's stages are ``<record_id>.csv``, ``<record_id>.txt`` or ``<record_id>-Hypnogram.edf``;
    its events ``<record_id>.events.csv``; NSRR or Profusion XML (``<record_id>-nsrr.xml``,
    ``<record_id>-profusion.xml``) hold both. Only Sleep-EDF recordings (``SC``/``ST`` + 4 digits +
    ``E0-PSG``, e.g. ``SC4001E0-PSG.edf``) also pair with the hypnogram of the same subject and
    night (``SC4001EC-Hypnogram.edf``). Directories are searched in order; the first one holding a
    file wins.

    Returns
    -------
    dict
        ``{"stages": path, "events": path}`` for the files found.

    Raises
    ------
    LabelError
        Several stage (or event) files of one directory match the record (the message names
        them).
    """
    found: dict[str, Path] = {}
    sleep_edf = _SLEEP_EDF.match(Path(edf_path).stem)
    for d in [Path(d) for d in label_dirs]:
        stage_files = {d / f"{record_id}{suffix}" for suffix in STAGE_FILE_SUFFIXES}
        if sleep_edf:
            stage_files |= set(d.glob(f"{sleep_edf.group(1)}[A-Z]?-Hypnogram.edf"))
        for kind, names in (("stages", stage_files),
                            ("events", {d / f"{record_id}{s}" for s in EVENT_FILE_SUFFIXES})):
            candidates = sorted(p for p in names if p.is_file())
            if kind in found or not candidates:
                continue
            if len(candidates) > 1:
                what = "hypnograms or stage files" if kind == "stages" else "event files"
                raise LabelError(f"{record_id}: several {what} match in {d} "
                                 f"({', '.join(p.name for p in candidates)}); keep one per "
                                 "recording.")
            found[kind] = candidates[0]
    return found

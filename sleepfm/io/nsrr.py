"""Readers for the two XML scoring formats of the NSRR cohorts (SHHS, MESA, MrOS, CFS, CHAT, ...).

* **NSRR XML** (``<record>-nsrr.xml``): root ``<PSGAnnotation>``; every stage span and event is a
  ``<ScoredEvent>`` with ``<EventType>`` (``Stages|Stages``, ``Respiratory|Respiratory``,
  ``Arousals|Arousals``...), ``<EventConcept>`` (``Stage 2 sleep|2``,
  ``Obstructive apnea|Obstructive Apnea``...), ``<Start>`` and ``<Duration>`` in seconds from the
  recording start.
* **Compumedics Profusion XML** (``<record>-profusion.xml``): root ``<CMPStudyConfig>``; events are
  ``<ScoredEvent>`` with ``<Name>``, ``<Start>``, ``<Duration>``; stages are one ``<SleepStage>``
  per ``<EpochLength>`` epoch in ``<SleepStages>``.

Both give an :class:`NSRRScoring`: AASM stages per 30 s epoch (:data:`~sleepfm.vocab.EPOCH_S`)
and an events table ``onset, duration, type, subtype``.

Stage numbers in both formats are the NSRR/R&K codes (0 wake, 1-4 stages 1-4, 5 REM, 6 movement,
9 unscored), *not* AASM codes, so they are read with :data:`RK_TO_AASM` and never with
:func:`sleepfm.vocab.stage_code` (which reads ``4`` as REM).

Epoch length
------------
The file's ``<EpochLength>`` is read and required. Stages are always returned in 30 s epochs from
the recording start. A file scored in other epochs (e.g. 20 s) or whose stage spans are off the
30 s grid is converted without inventing stages: a 30 s epoch keeps a stage only when all of it
lies in spans of that one stage; an epoch that straddles two stages (or a stage and unscored
time) is unscored (-1), and a :class:`~sleepfm.exceptions.DataWarning` counts those epochs. A
trailing part shorter than 30 s is dropped. Files scored in 30 s epochs on the grid (all NSRR
cohorts) are read exactly.

Security
--------
These files come from outside: a ``<!DOCTYPE`` (the only place entities can be declared) is
refused with a :class:`~sleepfm.exceptions.LabelError` before any entity is read, and external
entities are never fetched.
"""
from __future__ import annotations

import logging
import math
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, LabelError
from ..vocab import EPOCH_S, EVENT_TYPES, UNSCORED
from .hypnogram import Hypnogram

logger = logging.getLogger(__name__)

__all__ = ["EVENT_TABLE", "RK_TO_AASM", "NSRRScoring", "read_nsrr_xml", "read_profusion_xml",
           "read_scoring_xml"]

#: NSRR / R&K stage number (``Stage 2 sleep|2``, ``<SleepStage>2</SleepStage>``) -> AASM code.
#: Stage 4 folds into N3, REM is 5, movement (6) and unscored (9) are -1.
RK_TO_AASM: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: UNSCORED, 9: UNSCORED}

_COLUMNS = ["onset", "duration", "type", "subtype"]
_APNEA, _HYPOPNEA, _AROUSAL, _DESAT = EVENT_TYPES  # "apnea", "hypopnea", "arousal", "desaturation"

#: Known event names -> (type, subtype); names normalised (lower case, single spaces, "apnoea"
#: read as "apnea").
#: Looked up on each side of an NSRR concept ``Obstructive apnea|Obstructive Apnea`` and on a
#: Profusion ``<Name>`` (the right-hand side of the NSRR concept).
EVENT_TABLE: dict[str, tuple[str, str]] = {
    "obstructive apnea": (_APNEA, "obstructive"),
    "central apnea": (_APNEA, "central"),
    "mixed apnea": (_APNEA, "mixed"),
    "apnea": (_APNEA, ""),
    "hypopnea": (_HYPOPNEA, ""),
    "obstructive hypopnea": (_HYPOPNEA, "obstructive"),
    "central hypopnea": (_HYPOPNEA, "central"),
    "mixed hypopnea": (_HYPOPNEA, "mixed"),
    "arousal": (_AROUSAL, ""),
    "arousal ()": (_AROUSAL, ""),
    "asda arousal": (_AROUSAL, ""),
    "arousal (asda)": (_AROUSAL, ""),
    "arousal (standard)": (_AROUSAL, ""),
    "spontaneous arousal": (_AROUSAL, ""),
    "arousal (aro spont)": (_AROUSAL, ""),
    "arousal resulting from respiratory effort": (_AROUSAL, ""),
    "arousal (aro res)": (_AROUSAL, ""),
    "arousal resulting from chin emg": (_AROUSAL, ""),
    "arousal (cheshire)": (_AROUSAL, ""),
    "arousal resulting from limb movement": (_AROUSAL, ""),
    "arousal (aro limb)": (_AROUSAL, ""),
    "external arousal": (_AROUSAL, ""),
    "arousal (external arousal)": (_AROUSAL, ""),
    "spo2 desaturation": (_DESAT, ""),
    "sao2 desaturation": (_DESAT, ""),
    "oxygen desaturation": (_DESAT, ""),
    "desaturation": (_DESAT, ""),
}
# Names that look like a known event but are not one: counted as unknown, never guessed.
# RERAs are respiratory events whose arousal is scored as an arousal event of its own.
_NOT_EVENTS = re.compile(r"artifact|artefact|\brera\b|effort related|unsure")
# Other arousal variants (``Arousal (PLM)``): NSRR files type them ``Arousals|Arousals``.
_AROUSAL_NAME = re.compile(r"^arousal \(.*\)$")
# Metadata, not a scored event: neither read nor counted.
_METADATA = {"recording start time"}
_TOL_S = 1e-3  # seconds: boundaries closer than this are the same instant


@dataclass
class NSRRScoring:
    """The scoring of one night read from an NSRR or Profusion XML file.

    Parameters
    ----------
    hypnogram : Hypnogram or None
        AASM stages (0-4, -1 unscored) per 30 s epoch from the recording start; ``None`` when the
        file holds no stages.
    events : DataFrame
        ``onset, duration`` (seconds from the recording start), ``type`` (one of
        :data:`~sleepfm.vocab.EVENT_TYPES`) and ``subtype`` (``"obstructive"``, ``"central"``,
        ``"mixed"`` or ``""``), sorted by onset; empty when the file holds no known events.
    unknown : dict of str to int
        How many times each concept or name that is neither a stage nor a known event occurs
        (limb movements, SpO2 artifacts, position changes...).
    epoch_s : float, default=30.0
        Epoch length of ``hypnogram`` (always :data:`~sleepfm.vocab.EPOCH_S`).
    scored_epoch_s : float, default=30.0
        The ``<EpochLength>`` the file was scored in.
    record : str, default=""
        Record id (the file name without ``-nsrr.xml`` / ``-profusion.xml``).
    format : {"nsrr", "profusion"}, default="nsrr"
    """

    hypnogram: Hypnogram | None
    events: pd.DataFrame
    unknown: dict[str, int] = field(default_factory=dict)
    epoch_s: float = EPOCH_S
    scored_epoch_s: float = EPOCH_S
    record: str = ""
    format: str = "nsrr"

    def __repr__(self) -> str:
        if self.hypnogram is None:
            stages = "no stages"
        else:
            st = self.hypnogram.stages
            stages = f"{len(st)} epochs, {len(set(st[st >= 0].tolist()))} stages"
        return (f"<NSRRScoring {self.record} | {stages}, {len(self.events)} events, "
                f"{len(self.unknown)} unknown concepts>")


# ---------------------------------------------------------------------------------------------
# XML parsing, guarded


class _RefusedDoctype(Exception):
    pass


class _GuardedBuilder(ET.TreeBuilder):
    """A tree builder that stops the parser at a DOCTYPE, before any entity is declared."""

    def doctype(self, name, pubid, system):
        raise _RefusedDoctype(name)


def _parse(path) -> tuple[ET.Element, str]:
    """Root element (namespaces stripped) and display name of an XML file; DOCTYPE refused."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: scoring file not found.")
    name = path.name
    data = path.read_bytes()
    parser = ET.XMLParser(target=_GuardedBuilder())
    try:
        parser.feed(data)
        root = parser.close()
    except _RefusedDoctype:
        raise LabelError(
            f"{name}: the file declares a DOCTYPE (with possible ENTITY declarations); scoring "
            "files come from outside, so sleepfm does not expand entities. NSRR and Profusion "
            "exports have no DOCTYPE: remove it, or re-download the file from NSRR."
        ) from None
    except ET.ParseError as err:
        raise LabelError(f"{name}: not a well-formed XML file ({err}); check that the download "
                         "is complete and that this is an NSRR or Profusion scoring file."
                         ) from None
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.rsplit("}", 1)[1]
    return root, name


def _record(path) -> str:
    stem = Path(path).stem
    return re.sub(r"-(nsrr|profusion)$", "", stem, flags=re.IGNORECASE)


def _text(el: ET.Element, tag: str) -> str | None:
    child = el.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _epoch_length(root: ET.Element, name: str) -> float:
    text = _text(root, "EpochLength")
    if text is None:
        raise LabelError(f"{name}: no <EpochLength> element; NSRR and Profusion files state the "
                         "scoring epoch (normally <EpochLength>30</EpochLength>): add it if the "
                         "night was scored in 30 s epochs, or re-export the file.")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise LabelError(f"{name}: <EpochLength> is {text!r}, not a positive number of seconds; "
                         "fix it (normally 30).")
    return value


def _seconds(el: ET.Element, tag: str, name: str, what: str) -> float:
    """``<Start>`` or ``<Duration>`` of a ScoredEvent, checked: finite and >= 0."""
    text = _text(el, tag)
    if text is None:
        raise LabelError(f"{name}: {what} has no <{tag}>; every ScoredEvent needs <Start> and "
                         "<Duration> in seconds: fix or remove that element.")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise LabelError(f"{name}: {what} has <{tag}>{text}</{tag}>, not a number of seconds "
                         ">= 0 from the recording start: fix or remove that element.")
    return value


def _span(el: ET.Element, name: str, what: str) -> tuple[float, float]:
    return _seconds(el, "Start", name, what), _seconds(el, "Duration", name, what)


# ---------------------------------------------------------------------------------------------
# Concepts


def _norm(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.replace("apnoea", "apnea")


def _classify(parts: list[str], arousal_group: bool = False) -> tuple[str, str] | None:
    """(type, subtype) of an event name (the sides of an NSRR concept, or a Profusion name)."""
    parts = [_norm(p) for p in parts if p.strip()]
    if not parts or any(_NOT_EVENTS.search(p) for p in parts):
        return None
    known = [EVENT_TABLE[p] for p in parts if p in EVENT_TABLE]
    if len({kind for kind, _ in known}) > 1:
        return None  # the two sides disagree ("Apnea|Hypopnea"): not guessed
    if known:  # the side that states a subtype wins ("Hypopnea|Obstructive Hypopnea")
        return max(known, key=lambda k: k[1] != "")
    if arousal_group or any(_AROUSAL_NAME.match(p) for p in parts):
        return (_AROUSAL, "")
    return None


def _count(unknown: dict[str, int], key: str) -> None:
    unknown[key] = unknown.get(key, 0) + 1


def _rk_code(text: str) -> int | None:
    """AASM code of an NSRR/R&K stage number, or ``None`` for a number the formats do not define."""
    try:
        number = float(text)
    except ValueError:
        return None
    if number != int(number):
        return None
    return RK_TO_AASM.get(int(number))


# ---------------------------------------------------------------------------------------------
# Stages: spans in seconds -> 30 s epochs


def _stages_from_spans(spans: list[tuple[float, float, int, str]], name: str,
                       scored_epoch_s: float, notes: list[str]) -> Hypnogram:
    """Hypnogram in 30 s epochs from ``(onset, duration, aasm_code, element)`` stage spans.

    A 30 s epoch takes a stage where all of it lies in spans of that stage; epochs straddling two
    labels, or lying where spans overlap with different stages, are unscored (-1) and noted.
    """
    spans = [s for s in spans if s[1] > _TOL_S]
    end = max((o + d for o, d, _, _ in spans), default=0.0)
    n = int(np.floor(end / EPOCH_S + 1e-6))
    if n == 0:
        return Hypnogram(np.zeros(0, dtype=np.int8), epoch_s=EPOCH_S)
    # Elementary intervals between every span and epoch boundary.
    cuts = np.concatenate([np.arange(n + 1) * EPOCH_S] +
                          [[o, o + d] for o, d, _, _ in spans])
    cuts = np.unique(np.round(cuts[cuts <= n * EPOCH_S] / _TOL_S) * _TOL_S)
    label = np.full(len(cuts) - 1, UNSCORED, dtype=np.int64)
    covered = np.zeros(len(cuts) - 1, dtype=bool)
    conflict = np.zeros(len(cuts) - 1, dtype=bool)
    clashes: list[str] = []  # the elements that overlap an earlier span of another stage
    for onset, duration, code, element in spans:
        lo = int(np.searchsorted(cuts, onset - _TOL_S / 2))
        hi = int(np.searchsorted(cuts, onset + duration - _TOL_S / 2))
        seg = slice(lo, min(hi, len(label)))
        clash = covered[seg] & (label[seg] != code)
        if clash.any():
            conflict[seg] |= clash
            clashes.append(element)
        label[seg] = np.where(covered[seg], label[seg], code)
        covered[seg] = True
    mids = (cuts[:-1] + cuts[1:]) / 2
    epoch = np.minimum((mids // EPOCH_S).astype(np.int64), n - 1)
    stages = np.full(n, UNSCORED, dtype=np.int8)
    first = np.full(n, -9, dtype=np.int64)
    mixed = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for k, lab, clash in zip(epoch, label, conflict):
        if first[k] == -9:
            first[k] = lab
        elif first[k] != lab:
            mixed[k] = True
        bad[k] |= clash
    ok = ~mixed & ~bad
    stages[ok] = first[ok]
    if bad.any():
        notes.append(
            f"{name}: {len(clashes)} stage events overlap earlier ones of another stage "
            f"({', '.join(clashes[:3])}{', ...' if len(clashes) > 3 else ''}); the "
            f"{int(bad.sum())} epochs there are unscored (-1). Fix the overlapping <ScoredEvent> "
            "elements if those epochs should be scored."
        )
    straddle = int((mixed & ~bad).sum())
    if scored_epoch_s != EPOCH_S:
        notes.append(
            f"{name}: scored in {scored_epoch_s:g} s epochs; converted to {len(stages)} epochs "
            f"of {EPOCH_S:g} s. An epoch keeps a stage only where all of it has that stage: "
            f"{straddle} epochs straddle two stages and are unscored (-1)."
        )
    elif straddle:
        notes.append(
            f"{name}: stage spans are off the {EPOCH_S:g} s grid; {straddle} epochs straddle two "
            "stages and are unscored (-1). Check the stage <Start> times."
        )
    return Hypnogram(stages, epoch_s=EPOCH_S)


# ---------------------------------------------------------------------------------------------
# The two formats


def _frame(rows: list[tuple[float, float, str, str]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=_COLUMNS)
    df = df.astype({"onset": np.float64, "duration": np.float64, "type": object, "subtype": object})
    return df.sort_values("onset", kind="stable").reset_index(drop=True)


def _finish(name: str, path, fmt: str, hyp: Hypnogram | None, rows, unknown: dict[str, int],
            scored_epoch_s: float, notes: list[str]) -> NSRRScoring:
    if hyp is None and not rows:
        found = f" (only unknown concepts: {sorted(unknown)})" if unknown else ""
        raise LabelError(f"{name}: holds neither sleep stages nor known events{found}; known "
                         f"events are {list(EVENT_TYPES)}. Check that this is the scoring file of "
                         "the record.")
    if unknown:
        listed = ", ".join(f"{k!r} x{v}" for k, v in sorted(unknown.items()))
        notes.append(f"{name}: left out {sum(unknown.values())} scored items of {len(unknown)} "
                     f"unknown concepts (neither a sleep stage nor one of {list(EVENT_TYPES)}): "
                     f"{listed}. Unknown stages are unscored (-1); see NSRRScoring.unknown.")
    scoring = NSRRScoring(hyp, _frame(rows), dict(sorted(unknown.items())), EPOCH_S,
                          scored_epoch_s, _record(path), fmt)
    logger.debug("read %r", scoring)
    return scoring


def _check_root(root: ET.Element, name: str, expected: str, fmt: str) -> None:
    if root.tag != expected:
        other = {"PSGAnnotation": "read_nsrr_xml", "CMPStudyConfig": "read_profusion_xml"}
        hint = (f"this is the other format: use {other[root.tag]} or read_scoring_xml"
                if root.tag in other else "expected an NSRR (<PSGAnnotation>) or Profusion "
                "(<CMPStudyConfig>) scoring file")
        raise LabelError(f"{name}: root element is <{root.tag}>, not <{expected}> ({fmt} XML); "
                         f"{hint}.")


def _read_nsrr(path, root: ET.Element, name: str, notes: list[str]) -> NSRRScoring:
    scored_epoch_s = _epoch_length(root, name)
    spans: list[tuple[float, float, int, str]] = []
    rows: list[tuple[float, float, str, str]] = []
    unknown: dict[str, int] = {}
    has_stages = False
    for i, el in enumerate(root.findall("ScoredEvents/ScoredEvent"), start=1):
        concept = _text(el, "EventConcept") or ""
        etype = _norm(_text(el, "EventType") or "")
        what = f"ScoredEvent {i} ({concept or 'no EventConcept'})"
        if _norm(concept) in _METADATA:
            continue
        if etype.startswith("stages"):
            has_stages = True
            label, _, number = concept.rpartition("|")
            code = _rk_code(number)
            if code is None or not label.strip():
                _count(unknown, concept or "(no EventConcept)")
                code = UNSCORED  # its span is unscored, not guessed
            spans.append(_span(el, name, what) + (code, what))
            continue
        kind = _classify(concept.split("|"), arousal_group=etype.startswith("arousals"))
        if kind is None:
            _count(unknown, concept or "(no EventConcept)")
            continue
        rows.append(_span(el, name, what) + kind)
    hyp = _stages_from_spans(spans, name, scored_epoch_s, notes) if has_stages else None
    return _finish(name, path, "nsrr", hyp, rows, unknown, scored_epoch_s, notes)


def _read_profusion(path, root: ET.Element, name: str, notes: list[str]) -> NSRRScoring:
    scored_epoch_s = _epoch_length(root, name)
    rows: list[tuple[float, float, str, str]] = []
    unknown: dict[str, int] = {}
    for i, el in enumerate(root.findall("ScoredEvents/ScoredEvent"), start=1):
        label = _text(el, "Name") or ""
        what = f"ScoredEvent {i} ({label or 'no Name'})"
        kind = _classify([label])
        if kind is None:
            _count(unknown, label or "(no Name)")
            continue
        rows.append(_span(el, name, what) + kind)
    hyp = None
    values = root.findall("SleepStages/SleepStage")
    if values:
        spans = []
        for i, el in enumerate(values):
            text = (el.text or "").strip()
            code = _rk_code(text)
            if code is None:
                _count(unknown, f"SleepStage {text!r}")
                code = UNSCORED
            spans.append((i * scored_epoch_s, scored_epoch_s, code, f"SleepStage {i + 1}"))
        hyp = _stages_from_spans(spans, name, scored_epoch_s, notes)
    return _finish(name, path, "profusion", hyp, rows, unknown, scored_epoch_s, notes)


def read_nsrr_xml(path) -> NSRRScoring:
    """Read an NSRR XML scoring file (``<record>-nsrr.xml``, root ``<PSGAnnotation>``).

    Stage events (``<EventType>Stages|Stages``) give the hypnogram: the number after ``|`` of the
    concept is the NSRR/R&K code (:data:`RK_TO_AASM`: stage 4 -> N3, 5 -> REM, movement 6 and
    unscored 9 -> -1); a stage concept without a known number is unscored and counted in
    ``unknown``. Other events are typed with :data:`EVENT_TABLE` (any concept of the
    ``Arousals`` event type is an arousal); the rest are counted in ``unknown``.
    ``Recording Start Time`` is metadata and skipped.

    Parameters
    ----------
    path : str or Path
        The XML file.

    Returns
    -------
    NSRRScoring
        ``hypnogram`` (AASM stages per 30 s epoch from the recording start, or ``None`` when the
        file has no stage events), ``events`` (``onset, duration, type, subtype``), ``unknown``.

    Raises
    ------
    LabelError
        Missing file, not well-formed XML, a DOCTYPE/ENTITY declaration, another root element,
        no or a bad ``<EpochLength>``, a used ``<ScoredEvent>`` without a numeric ``<Start>`` or
        ``<Duration>`` >= 0, or a file with neither stages nor known events.

    Warns
    -----
    DataWarning
        Once for the unknown concepts (with their counts); when epochs were unscored because
        stage events overlap with different stages, straddle two stages, or the file was scored
        in epochs other than 30 s (see the module notes).

    Examples
    --------
    >>> from sleepfm.io.nsrr import read_nsrr_xml
    >>> scoring = read_nsrr_xml("shhs1-200001-nsrr.xml")  # doctest: +SKIP
    >>> scoring  # doctest: +SKIP
    <NSRRScoring shhs1-200001 | 1084 epochs, 5 stages, 311 events, 4 unknown concepts>
    >>> scoring.events.groupby(["type", "subtype"]).size()  # doctest: +SKIP
    """
    root, name = _parse(path)
    _check_root(root, name, "PSGAnnotation", "NSRR")
    notes: list[str] = []
    scoring = _read_nsrr(path, root, name, notes)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    return scoring


def read_profusion_xml(path) -> NSRRScoring:
    """Read a Compumedics Profusion XML scoring file (``<record>-profusion.xml``, root
    ``<CMPStudyConfig>``).

    ``<SleepStages>`` holds one NSRR/R&K stage number per ``<EpochLength>`` epoch
    (:data:`RK_TO_AASM`); a number outside it is unscored (-1) and counted in ``unknown``.
    ``<ScoredEvent>`` names are typed with :data:`EVENT_TABLE` (``Arousal (...)`` names are
    arousals); the rest are counted in ``unknown``.

    Parameters
    ----------
    path : str or Path
        The XML file.

    Returns
    -------
    NSRRScoring
        ``hypnogram`` (AASM stages per 30 s epoch from the recording start, or ``None`` when the
        file has no ``<SleepStage>``), ``events`` (``onset, duration, type, subtype``),
        ``unknown``.

    Raises
    ------
    LabelError
        Missing file, not well-formed XML, a DOCTYPE/ENTITY declaration, another root element,
        no or a bad ``<EpochLength>``, a used ``<ScoredEvent>`` without a numeric ``<Start>`` or
        ``<Duration>`` >= 0, or a file with neither stages nor known events.

    Warns
    -----
    DataWarning
        Once for the unknown names and stage numbers (with their counts); when the file was
        scored in epochs other than 30 s and epochs straddling two stages were unscored.

    Examples
    --------
    >>> from sleepfm.io.nsrr import read_profusion_xml
    >>> scoring = read_profusion_xml("mesa-sleep-0001-profusion.xml")  # doctest: +SKIP
    >>> scoring.hypnogram.stages[:4]  # doctest: +SKIP
    array([0, 0, 1, 2], dtype=int8)
    """
    root, name = _parse(path)
    _check_root(root, name, "CMPStudyConfig", "Profusion")
    notes: list[str] = []
    scoring = _read_profusion(path, root, name, notes)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    return scoring


def read_scoring_xml(path) -> NSRRScoring:
    """Read an NSRR or a Profusion XML scoring file, choosing the reader by the root element.

    Parameters
    ----------
    path : str or Path
        The XML file: root ``<PSGAnnotation>`` (NSRR XML, :func:`read_nsrr_xml`) or
        ``<CMPStudyConfig>`` (Profusion XML, :func:`read_profusion_xml`).

    Returns
    -------
    NSRRScoring
        Its ``format`` says which one was read.

    Raises
    ------
    LabelError
        Another root element (the message names it), and every error of the two readers.

    Warns
    -----
    DataWarning
        As the two readers.

    Examples
    --------
    >>> from sleepfm.io.nsrr import read_scoring_xml
    >>> read_scoring_xml("chat-baseline-300001-nsrr.xml").format  # doctest: +SKIP
    'nsrr'
    """
    root, name = _parse(path)
    readers = {"PSGAnnotation": _read_nsrr, "CMPStudyConfig": _read_profusion}
    if root.tag not in readers:
        raise LabelError(f"{name}: root element is <{root.tag}>; a scoring XML has root "
                         "<PSGAnnotation> (NSRR XML) or <CMPStudyConfig> (Compumedics Profusion). "
                         "Check that this is the record's scoring file.")
    notes: list[str] = []
    scoring = readers[root.tag](path, root, name, notes)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    return scoring

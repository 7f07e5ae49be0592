"""sleepfm.io.nsrr: NSRR and Compumedics Profusion XML scoring files, written small in each test."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from sleepfm import vocab
from sleepfm.exceptions import DataWarning, LabelError
from sleepfm.io import labels as L
from sleepfm.io import nsrr
from sleepfm.io.nsrr import NSRRScoring, read_nsrr_xml, read_profusion_xml, read_scoring_xml

HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
STAGE_CONCEPTS = {0: "Wake|0", 1: "Stage 1 sleep|1", 2: "Stage 2 sleep|2", 3: "Stage 3 sleep|3",
                  4: "Stage 4 sleep|4", 5: "REM sleep|5", 6: "Movement|6", 9: "Unscored|9"}

# One night, in NSRR/R&K codes per 30 s epoch: W W W S1 S2 S2 S2 S3 S4 S4 REM REM MT ? W.
NIGHT_RK = [0, 0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 5, 6, 9, 0]
NIGHT_AASM = [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4, -1, -1, 0]
# (EventType, NSRR EventConcept, Profusion Name, start, duration)
NIGHT_EVENTS = [
    ("Respiratory|Respiratory", "Obstructive apnea|Obstructive Apnea", "Obstructive Apnea",
     100.0, 15.5),
    ("Respiratory|Respiratory", "Central apnea|Central Apnea", "Central Apnea", 160.0, 12.0),
    ("Respiratory|Respiratory", "Mixed apnea|Mixed Apnea", "Mixed Apnea", 200.0, 20.0),
    ("Respiratory|Respiratory", "Hypopnea|Hypopnea", "Hypopnea", 250.0, 18.0),
    ("Arousals|Arousals", "ASDA arousal|Arousal (ASDA)", "Arousal (ASDA)", 118.0, 5.0),
    ("Arousals|Arousals", "Arousal|Arousal ()", "Arousal ()", 270.0, 4.0),
    ("Respiratory|Respiratory", "SpO2 desaturation|SpO2 desaturation", "SpO2 desaturation",
     120.0, 22.0),
    ("Respiratory|Respiratory", "SpO2 artifact|SpO2 artifact", "SpO2 artifact", 0.0, 30.0),
    ("Respiratory|Respiratory", "SpO2 artifact|SpO2 artifact", "SpO2 artifact", 300.0, 60.0),
    ("Limb Movement|Limb Movement", "Limb movement - left|Limb Movement (Left)",
     "Limb Movement (Left)", 40.0, 2.0),
]
NIGHT_TABLE = pd.DataFrame(
    [(100.0, 15.5, "apnea", "obstructive"), (118.0, 5.0, "arousal", ""),
     (120.0, 22.0, "desaturation", ""), (160.0, 12.0, "apnea", "central"),
     (200.0, 20.0, "apnea", "mixed"), (250.0, 18.0, "hypopnea", ""),
     (270.0, 4.0, "arousal", "")],
    columns=["onset", "duration", "type", "subtype"])
NIGHT_UNKNOWN_NSRR = {"Limb movement - left|Limb Movement (Left)": 1,
                      "SpO2 artifact|SpO2 artifact": 2}


def runs(codes, epoch_s=30.0):
    """``(start, duration, code)`` of the runs of equal codes (multi-epoch stage events)."""
    out, start = [], 0
    for i in range(1, len(codes) + 1):
        if i == len(codes) or codes[i] != codes[start]:
            out.append((start * epoch_s, (i - start) * epoch_s, codes[start]))
            start = i
    return out


def scored_event(etype, concept, start, duration, extra=""):
    parts = [f"<EventType>{etype}</EventType>" if etype is not None else "",
             f"<EventConcept>{concept}</EventConcept>" if concept is not None else "",
             f"<Start>{start}</Start>" if start is not None else "",
             f"<Duration>{duration}</Duration>" if duration is not None else "", extra]
    return "<ScoredEvent>" + "".join(parts) + "</ScoredEvent>\n"


def nsrr_xml(stages=(), events=(), *, epoch="30", raw_events="", start_time=True):
    """An NSRR XML document: ``stages`` are ``(start, duration, rk_code)``, ``events`` are
    ``(EventType, EventConcept, start, duration)``."""
    body = ""
    if start_time:
        body += scored_event(None, "Recording Start Time", 0, 450.0,
                             "<ClockTime>00.00.00 22.15.00</ClockTime>")
    for etype, concept, start, duration in events:
        body += scored_event(etype, concept, start, duration)
    for start, duration, code in stages:
        body += scored_event("Stages|Stages", STAGE_CONCEPTS[code], start, duration)
    epoch_el = f"<EpochLength>{epoch}</EpochLength>\n" if epoch is not None else ""
    return (HEAD + "<PSGAnnotation>\n<SoftwareVersion>Compumedics</SoftwareVersion>\n"
            + epoch_el + "<ScoredEvents>\n" + body + raw_events
            + "</ScoredEvents>\n</PSGAnnotation>\n")


def profusion_xml(stages=(), events=(), *, epoch="30"):
    """A Profusion XML document: ``stages`` are values per epoch, ``events`` ``(Name, start,
    duration)``."""
    ev = "".join(f"<ScoredEvent><LowestSpO2>88</LowestSpO2><Name>{n}</Name><Start>{s}</Start>"
                 f"<Duration>{d}</Duration><Input>SaO2</Input></ScoredEvent>\n"
                 for n, s, d in events)
    st = "".join(f"<SleepStage>{v}</SleepStage>\n" for v in stages)
    epoch_el = f"<EpochLength>{epoch}</EpochLength>\n" if epoch is not None else ""
    return (HEAD + "<CMPStudyConfig>\n" + epoch_el + "<ScoredEvents>\n" + ev
            + "</ScoredEvents>\n<SleepStages>\n" + st + "</SleepStages>\n</CMPStudyConfig>\n")


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def night_nsrr(tmp_path, name="shhs1-200001-nsrr.xml"):
    events = [(t, c, s, d) for t, c, _, s, d in NIGHT_EVENTS]
    return write(tmp_path, name, nsrr_xml(runs(NIGHT_RK), events))


def night_profusion(tmp_path, name="shhs1-200001-profusion.xml"):
    events = [(n, s, d) for _, _, n, s, d in NIGHT_EVENTS]
    return write(tmp_path, name, profusion_xml(NIGHT_RK, events))


def read_quietly(reader, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return reader(path)


# ---------------------------------------------------------------------------------------------
# Stages


def test_nsrr_stages_from_multi_epoch_events(tmp_path):
    path = night_nsrr(tmp_path)
    assert len(runs(NIGHT_RK)) == 9  # W x3, S2 x3, S4 x2 and REM x2 are single multi-epoch events
    scoring = read_quietly(read_nsrr_xml, path)
    assert isinstance(scoring, NSRRScoring)
    np.testing.assert_array_equal(scoring.hypnogram.stages, NIGHT_AASM)
    assert scoring.hypnogram.stages.dtype == np.int8
    assert scoring.hypnogram.epoch_s == vocab.EPOCH_S == scoring.epoch_s == scoring.scored_epoch_s
    assert scoring.hypnogram.scheme == "aasm5"
    assert scoring.record == "shhs1-200001" and scoring.format == "nsrr"
    assert repr(scoring) == ("<NSRRScoring shhs1-200001 | 15 epochs, 5 stages, 7 events, "
                             "2 unknown concepts>")


@pytest.mark.parametrize("rk, aasm", [(0, 0), (1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (6, -1),
                                      (9, -1)])
def test_rk_codes_map_to_aasm_in_both_formats(tmp_path, rk, aasm):
    n = write(tmp_path, "a-nsrr.xml", nsrr_xml([(0.0, 60.0, rk)]))
    p = write(tmp_path, "a-profusion.xml", profusion_xml([rk, rk]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in (n, p):
            np.testing.assert_array_equal(read_scoring_xml(path).hypnogram.stages, [aasm, aasm])
    assert nsrr.RK_TO_AASM[rk] == aasm
    # sleepfm's own stage_code reads numbers as AASM codes: it must not be used for these files.
    assert vocab.stage_code("4") == 4 != nsrr.RK_TO_AASM[4]


def test_nsrr_matches_stages_from_annotations_on_the_grid(tmp_path):
    scoring = read_quietly(read_nsrr_xml, night_nsrr(tmp_path))
    anns = [(s, d, vocab.STAGE_NAMES[nsrr.RK_TO_AASM[c]] if nsrr.RK_TO_AASM[c] >= 0 else "?")
            for s, d, c in runs(NIGHT_RK)]
    np.testing.assert_array_equal(scoring.hypnogram.stages,
                                  L.stages_from_annotations(anns).stages)


def test_gaps_between_stage_events_are_unscored(tmp_path):
    path = write(tmp_path, "gap-nsrr.xml", nsrr_xml([(0.0, 60.0, 2), (120.0, 30.0, 5)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_nsrr_xml(path).hypnogram.stages, [2, 2, -1, -1, 4])


def test_events_only_file_has_no_hypnogram(tmp_path):
    path = write(tmp_path, "ev-nsrr.xml",
                 nsrr_xml(events=[("Respiratory|Respiratory", "Hypopnea|Hypopnea", 10, 12)]))
    scoring = read_nsrr_xml(path)
    assert scoring.hypnogram is None and len(scoring.events) == 1
    assert repr(scoring) == "<NSRRScoring ev | no stages, 1 events, 0 unknown concepts>"


def test_stages_only_file_has_an_empty_events_table(tmp_path):
    scoring = read_profusion_xml(write(tmp_path, "st-profusion.xml", profusion_xml([0, 1, 2])))
    assert list(scoring.events.columns) == ["onset", "duration", "type", "subtype"]
    assert scoring.events.empty and scoring.unknown == {}


def test_profusion_other_stage_values_are_unscored_and_reported(tmp_path):
    path = write(tmp_path, "odd-profusion.xml", profusion_xml([0, 7, 2, "x", 7, 5]))
    with pytest.warns(DataWarning) as record:
        scoring = read_profusion_xml(path)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "odd-profusion.xml" in msg and "\"SleepStage '7'\" x2" in msg and "x1" in msg
    np.testing.assert_array_equal(scoring.hypnogram.stages, [0, -1, 2, -1, -1, 4])
    assert scoring.unknown == {"SleepStage '7'": 2, "SleepStage 'x'": 1}


def test_nsrr_stage_concept_without_a_code_is_unknown(tmp_path):
    raw = scored_event("Stages|Stages", "Wake", 30, 30) + scored_event("Stages|Stages",
                                                                        "Stage 7|7", 60, 30)
    path = write(tmp_path, "nocode-nsrr.xml", nsrr_xml([(0.0, 30.0, 2)], raw_events=raw))
    with pytest.warns(DataWarning, match=r"'Stage 7\|7' x1, 'Wake' x1"):
        scoring = read_nsrr_xml(path)
    np.testing.assert_array_equal(scoring.hypnogram.stages, [2, -1, -1])  # unscored, not guessed
    assert scoring.unknown == {"Stage 7|7": 1, "Wake": 1}


# ---------------------------------------------------------------------------------------------
# Events


def test_events_keep_apnea_subtypes_apart(tmp_path):
    events = read_quietly(read_nsrr_xml, night_nsrr(tmp_path)).events
    pd.testing.assert_frame_equal(events, NIGHT_TABLE)
    assert set(events["type"]) <= set(vocab.EVENT_TYPES)
    apneas = events[events["type"] == "apnea"]
    assert apneas["subtype"].tolist() == ["obstructive", "central", "mixed"]
    assert events["onset"].is_monotonic_increasing


@pytest.mark.parametrize("etype, concept, expected", [
    ("Respiratory|Respiratory", "Apnea|Apnea", ("apnea", "")),
    ("Respiratory|Respiratory", "Obstructive Apnoea|Obstructive Apnoea", ("apnea", "obstructive")),
    ("Respiratory|Respiratory", "Obstructive hypopnea|Obstructive Hypopnea",
     ("hypopnea", "obstructive")),
    ("Respiratory|Respiratory", "Hypopnea|Central Hypopnea", ("hypopnea", "central")),
    ("Respiratory|Respiratory", "SpO2 desaturation|SpO2 desaturation", ("desaturation", "")),
    ("Arousals|Arousals", "Arousal resulting from respiratory effort|Arousal (ARO RES)",
     ("arousal", "")),
    ("Arousals|Arousals", "Spontaneous arousal|Arousal (ARO SPONT)", ("arousal", "")),
    ("Arousals|Arousals", "Arousal (PLM)|Arousal (PLM)", ("arousal", "")),  # by its event type
    ("Respiratory|Respiratory", "SpO2 artifact|SpO2 artifact", None),
    ("Respiratory|Respiratory", "Respiratory effort related arousal|RERA", None),
    ("Respiratory|Respiratory", "Unsure|Unsure", None),
    ("Respiratory|Respiratory", "Periodic breathing|Periodic Breathing", None),
    ("Respiratory|Respiratory", "Apnea|Hypopnea", None),  # sides disagree: not guessed
    ("Position|Position", "Body position change to supine|POSITION - SUPINE", None),
    ("Desaturation|Desaturation", "Oxygen artifact|Oxygen artifact", None),
])
def test_nsrr_concepts(tmp_path, etype, concept, expected):
    path = write(tmp_path, "c-nsrr.xml", nsrr_xml([(0.0, 30.0, 0)], [(etype, concept, 5, 10)]))
    scoring = read_quietly(read_nsrr_xml, path)
    if expected is None:
        assert scoring.events.empty and scoring.unknown == {concept: 1}
    else:
        assert tuple(scoring.events.iloc[0][["type", "subtype"]]) == expected
        assert scoring.unknown == {}


@pytest.mark.parametrize("name, expected", [
    ("Obstructive Apnea", ("apnea", "obstructive")), ("Central Apnea", ("apnea", "central")),
    ("Mixed Apnea", ("apnea", "mixed")), ("Hypopnea", ("hypopnea", "")),
    ("Arousal (ASDA)", ("arousal", "")), ("Arousal (ARO Limb)", ("arousal", "")),
    ("SpO2 desaturation", ("desaturation", "")), ("SpO2 artifact", None),
    ("Limb Movement (Left)", None), ("RERA", None), ("Arousal (RERA)", None),
])
def test_profusion_names(tmp_path, name, expected):
    scoring = read_quietly(read_profusion_xml,
                           write(tmp_path, "n-profusion.xml", profusion_xml([0], [(name, 3, 4)])))
    if expected is None:
        assert scoring.events.empty and scoring.unknown == {name: 1}
    else:
        assert tuple(scoring.events.iloc[0][["type", "subtype"]]) == expected


def test_event_table_agrees_with_vocab():
    # vocab.event_type is right on every name of the table ...
    for name, (kind, subtype) in nsrr.EVENT_TABLE.items():
        assert vocab.event_type(name) == kind, name
        assert kind in vocab.EVENT_TYPES and subtype in ("", "obstructive", "central", "mixed")
    # ... but not on these, which nsrr.py keeps out of the events.
    assert vocab.event_type("Oxygen artifact") == "desaturation"
    assert vocab.event_type("Respiratory effort related arousal") == "arousal"


def test_unknown_concepts_counted_and_warned_once(tmp_path):
    path = night_nsrr(tmp_path)
    with pytest.warns(DataWarning) as record:
        scoring = read_nsrr_xml(path)
    assert len(record) == 1
    msg = str(record[0].message)
    assert msg.startswith("shhs1-200001-nsrr.xml: left out 3 scored items of 2 unknown concepts")
    assert "'SpO2 artifact|SpO2 artifact' x2" in msg
    assert "'Limb movement - left|Limb Movement (Left)' x1" in msg
    assert scoring.unknown == NIGHT_UNKNOWN_NSRR
    assert "Recording Start Time" not in scoring.unknown  # metadata, not an unknown concept
    assert record[0].filename == __file__  # stacklevel points at the caller


def test_clean_file_reads_without_warnings(tmp_path):
    path = write(tmp_path, "clean-nsrr.xml", nsrr_xml(runs(NIGHT_RK), [
        ("Respiratory|Respiratory", "Hypopnea|Hypopnea", 31.5, 10.25)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scoring = read_scoring_xml(path)
    assert scoring.events.to_dict("records") == [
        {"onset": 31.5, "duration": 10.25, "type": "hypopnea", "subtype": ""}]


def test_same_night_in_both_formats(tmp_path):
    a = read_quietly(read_scoring_xml, night_nsrr(tmp_path))
    b = read_quietly(read_scoring_xml, night_profusion(tmp_path))
    assert (a.format, b.format) == ("nsrr", "profusion")
    assert a.record == b.record == "shhs1-200001"
    np.testing.assert_array_equal(a.hypnogram.stages, b.hypnogram.stages)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(b.events, NIGHT_TABLE)
    assert b.unknown == {"Limb Movement (Left)": 1, "SpO2 artifact": 2}
    assert sorted(a.unknown.values()) == sorted(b.unknown.values())


# ---------------------------------------------------------------------------------------------
# Epoch length


def test_profusion_20s_epochs_converted_to_30s(tmp_path):
    # 20 s epochs W W N2 N2 N2 REM REM REM ?: W 0-40 s, N2 40-100 s, REM 100-160 s, ? 160-180 s.
    path = write(tmp_path, "e20-profusion.xml", profusion_xml([0, 0, 2, 2, 2, 5, 5, 5, 9],
                                                              epoch="20"))
    with pytest.warns(DataWarning, match=r"e20-profusion.xml: scored in 20 s epochs; converted to "
                      r"6 epochs of 30 s.*3 epochs straddle two stages and are unscored"):
        scoring = read_profusion_xml(path)
    # [0,30) W; [30,60) W+N2 -> -1; [60,90) N2; [90,120) N2+REM -> -1; [120,150) REM;
    # [150,180) REM+unscored -> -1.
    np.testing.assert_array_equal(scoring.hypnogram.stages, [0, -1, 2, -1, 4, -1])
    assert scoring.scored_epoch_s == 20.0 and scoring.epoch_s == scoring.hypnogram.epoch_s == 30.0


def test_profusion_60s_epochs_split_exactly(tmp_path):
    path = write(tmp_path, "e60-profusion.xml", profusion_xml([0, 4, 5], epoch="60.0"))
    with pytest.warns(DataWarning, match=r"scored in 60 s epochs.*0 epochs straddle"):
        scoring = read_profusion_xml(path)
    np.testing.assert_array_equal(scoring.hypnogram.stages, [0, 0, 3, 3, 4, 4])


def test_nsrr_20s_epochs_use_seconds(tmp_path):
    path = write(tmp_path, "e20-nsrr.xml", nsrr_xml([(0, 60, 0), (60, 40, 2), (100, 20, 5)],
                                                    epoch="20"))
    with pytest.warns(DataWarning, match="scored in 20 s epochs"):
        scoring = read_nsrr_xml(path)
    np.testing.assert_array_equal(scoring.hypnogram.stages, [0, 0, 2, -1])


def test_stage_events_off_the_grid_are_not_guessed(tmp_path):
    path = write(tmp_path, "off-nsrr.xml", nsrr_xml([(0, 45, 0), (45, 75, 2)]))
    with pytest.warns(DataWarning, match=r"off-nsrr.xml: stage spans are off the 30 s grid; 1 "
                      r"epochs straddle"):
        scoring = read_nsrr_xml(path)
    np.testing.assert_array_equal(scoring.hypnogram.stages, [0, -1, 2, 2])


@pytest.mark.parametrize("epoch, match", [
    (None, r"no <EpochLength> element.*add it"),
    ("thirty", r"<EpochLength> is 'thirty', not a positive number"),
    ("0", r"<EpochLength> is '0'"), ("-30", r"<EpochLength> is '-30'"),
    ("nan", r"<EpochLength> is 'nan'"),
])
@pytest.mark.parametrize("fmt", ["nsrr", "profusion"])
def test_bad_epoch_length(tmp_path, epoch, match, fmt):
    text = nsrr_xml([(0, 30, 0)], epoch=epoch) if fmt == "nsrr" else profusion_xml([0], epoch=epoch)
    path = write(tmp_path, f"bad-{fmt}.xml", text)
    with pytest.raises(LabelError, match=f"bad-{fmt}.xml: " + match):
        read_scoring_xml(path)


# ---------------------------------------------------------------------------------------------
# Malformed files


@pytest.mark.parametrize("event, match", [
    (scored_event("Respiratory|Respiratory", "Hypopnea|Hypopnea", None, 10),
     r"has no <Start>; every ScoredEvent needs <Start> and <Duration> in seconds: fix or remove"),
    (scored_event("Stages|Stages", "Wake|0", 0, None), r"has no <Duration>"),
    (scored_event("Respiratory|Respiratory", "Hypopnea|Hypopnea", 10, "ten"),
     r"has <Duration>ten</Duration>, not a number of seconds >= 0.*fix or remove"),
    (scored_event("Respiratory|Respiratory", "Hypopnea|Hypopnea", 10, -4),
     r"has <Duration>-4</Duration>, not a number"),
    (scored_event("Arousals|Arousals", "Arousal|Arousal ()", -3, 4), r"has <Start>-3</Start>"),
    (scored_event("Arousals|Arousals", "Arousal|Arousal ()", "inf", 4), r"has <Start>inf</Start>"),
])
def test_malformed_scored_events(tmp_path, event, match):
    path = write(tmp_path, "m-nsrr.xml", nsrr_xml(raw_events=event))
    concept = re.escape(event.split("<EventConcept>")[1].split("<")[0])
    with pytest.raises(LabelError, match=rf"m-nsrr.xml: ScoredEvent 2 \({concept}\) " + match):
        read_nsrr_xml(path)


def test_malformed_profusion_event(tmp_path):
    path = write(tmp_path, "m-profusion.xml",
                 profusion_xml([0], [("Central Apnea", "12,5", 10)]))
    with pytest.raises(LabelError, match=r"m-profusion.xml: ScoredEvent 1 \(Central Apnea\) has "
                       r"<Start>12,5</Start>"):
        read_profusion_xml(path)


def test_unknown_events_are_counted_not_validated(tmp_path):
    raw = scored_event("Limb Movement|Limb Movement", "Limb movement - left|Limb Movement (Left)",
                       None, None)
    path = write(tmp_path, "u-nsrr.xml", nsrr_xml([(0, 30, 0)], raw_events=raw))
    with pytest.warns(DataWarning, match="x1"):
        assert read_nsrr_xml(path).unknown == {"Limb movement - left|Limb Movement (Left)": 1}


@pytest.mark.parametrize("content, match", [
    (b"0       SC4001E0 ... this is an EDF header", r"not a well-formed XML file \(syntax error"),
    (b"", r"not a well-formed XML file \(no element found"),
    (b"<PSGAnnotation><EpochLength>30</EpochLength><ScoredEvents>", r"not a well-formed XML"),
])
def test_not_xml(tmp_path, content, match):
    path = tmp_path / "x-nsrr.xml"
    path.write_bytes(content)
    with pytest.raises(LabelError, match="x-nsrr.xml: " + match + r".*download is complete"):
        read_scoring_xml(path)


def test_missing_file(tmp_path):
    with pytest.raises(LabelError, match=r"nope-nsrr.xml: scoring file not found"):
        read_nsrr_xml(tmp_path / "nope-nsrr.xml")


def test_overlapping_stage_events_that_disagree(tmp_path):
    path = write(tmp_path, "ov-nsrr.xml", nsrr_xml([(0, 90, 0), (60, 60, 2), (120, 30, 5)]))
    with pytest.warns(DataWarning, match=r"ov-nsrr.xml: 1 stage events overlap earlier ones of "
                      r"another stage \(ScoredEvent 3 \(Stage 2 sleep\|2\)\); the 1 epochs there "
                      r"are unscored \(-1\)\. Fix the overlapping <ScoredEvent>"):
        scoring = read_nsrr_xml(path)
    np.testing.assert_array_equal(scoring.hypnogram.stages, [0, 0, -1, 2, 4])


def test_overlapping_stage_events_that_agree(tmp_path):
    path = write(tmp_path, "dup-nsrr.xml", nsrr_xml([(0, 90, 2), (30, 30, 2), (90, 30, 0)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_nsrr_xml(path).hypnogram.stages, [2, 2, 2, 0])


def test_neither_stages_nor_known_events(tmp_path):
    only_unknown = nsrr_xml(events=[("Respiratory|Respiratory", "SpO2 artifact|SpO2 artifact",
                                     0, 9)])
    with pytest.raises(LabelError, match=r"u-nsrr.xml: holds neither sleep stages nor known events "
                       r"\(only unknown concepts: \['SpO2 artifact\|SpO2 artifact'\]\)"):
        read_nsrr_xml(write(tmp_path, "u-nsrr.xml", only_unknown))
    with pytest.raises(LabelError, match=r"e-profusion.xml: holds neither sleep stages nor known "
                       r"events; known events are \['apnea'"):
        read_profusion_xml(write(tmp_path, "e-profusion.xml", profusion_xml()))


def test_root_element_decides_the_format(tmp_path):
    n = night_nsrr(tmp_path)
    p = night_profusion(tmp_path)
    with pytest.raises(LabelError, match=r"shhs1-200001-profusion.xml: root element is "
                       r"<CMPStudyConfig>, not <PSGAnnotation> \(NSRR XML\); this is the other "
                       r"format: use read_profusion_xml or read_scoring_xml"):
        read_nsrr_xml(p)
    with pytest.raises(LabelError, match=r"not <CMPStudyConfig> \(Profusion XML\); this is the "
                       r"other format: use read_nsrr_xml"):
        read_profusion_xml(n)
    other = write(tmp_path, "edf-annotations.xml", HEAD + "<EDFAnnotations><x/></EDFAnnotations>")
    with pytest.raises(LabelError, match=r"edf-annotations.xml: root element is <EDFAnnotations>; "
                       r"a scoring XML has root <PSGAnnotation> \(NSRR XML\) or <CMPStudyConfig>"):
        read_scoring_xml(other)
    with pytest.raises(LabelError, match=r"root element is <EDFAnnotations>, not <PSGAnnotation>"):
        read_nsrr_xml(other)


def test_namespaced_file(tmp_path):
    text = nsrr_xml([(0, 60, 1)]).replace("<PSGAnnotation>",
                                          '<PSGAnnotation xmlns="http://example.org/nsrr">')
    scoring = read_scoring_xml(write(tmp_path, "ns-nsrr.xml", text))
    np.testing.assert_array_equal(scoring.hypnogram.stages, [1, 1])


# ---------------------------------------------------------------------------------------------
# Security


@pytest.mark.parametrize("prolog", [
    '<!DOCTYPE PSGAnnotation [<!ENTITY ev "Hypopnea|Hypopnea">]>',
    '<!DOCTYPE PSGAnnotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE PSGAnnotation SYSTEM "http://example.org/evil.dtd">',
    ('<!DOCTYPE PSGAnnotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "' + "&a;" * 10 + '">'
     '<!ENTITY c "' + "&b;" * 10 + '"><!ENTITY d "' + "&c;" * 10 + '">]>'),  # billion laughs
])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_doctype_and_entities_refused(tmp_path, prolog, encoding):
    body = nsrr_xml([(0, 30, 0)]).replace(HEAD, "")
    text = f'<?xml version="1.0" encoding="{encoding.upper()}"?>\n' + prolog + "\n" + body
    path = write(tmp_path, "evil-nsrr.xml", text.replace("Wake|0", "&d;Wake|0"), encoding)
    for reader in (read_scoring_xml, read_nsrr_xml, read_profusion_xml):
        with pytest.raises(LabelError, match=r"evil-nsrr.xml: the file declares a DOCTYPE \(with "
                           r"possible ENTITY declarations\).*does not expand entities.*remove it"):
            reader(path)


def test_undeclared_entity_is_a_label_error(tmp_path):
    path = write(tmp_path, "ent-nsrr.xml", nsrr_xml([(0, 30, 0)]).replace("Wake|0", "&xxe;"))
    with pytest.raises(LabelError, match=r"ent-nsrr.xml: not a well-formed XML file \(undefined "
                       r"entity"):
        read_nsrr_xml(path)

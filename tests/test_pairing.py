"""Label files pair with recordings by exact name; cohort tables and label folders that match
nothing, and label rows that overlap or run backwards, are never resolved silently."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import SMALL_CHANNELS
from sleepfm.exceptions import DataWarning, LabelError, SleepFMError
from sleepfm.io import labels as L
from sleepfm.io.edf_write import write_edf
from sleepfm.stages.preprocess import preprocess_directory


def _hypnogram_edf(path, stages):
    """An EDF+ hypnogram (one dummy channel, one stage annotation per 30 s epoch)."""
    names = ["Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage 3", "Sleep stage R"]
    annotations = [(30.0 * i, 30.0, names[s]) for i, s in enumerate(stages)]
    write_edf(path, [np.zeros(30 * len(stages))], [1.0], ["dummy"], annotations=annotations)


def _stages(run, rid):
    path = run / "labels" / f"{rid}.csv"
    return L.read_stages(path).stages.tolist() if path.is_file() else None


def test_night1_and_night10(tmp_path, make_edf):
    data = tmp_path / "in"
    make_edf(data / "night1.edf", SMALL_CHANNELS, duration=60, seed=1)
    make_edf(data / "night10.edf", SMALL_CHANNELS, duration=60, seed=2)
    _hypnogram_edf(data / "night1-Hypnogram.edf", [2, 3])
    batch = preprocess_directory(data, tmp_path / "run")
    assert batch.summary == "2 ok, 0 failed" and batch.unmatched_labels == []
    assert _stages(tmp_path / "run", "night1") == [2, 3]
    assert _stages(tmp_path / "run", "night10") is None


def test_session_2_does_not_take_session_1s_hypnogram(tmp_path, make_edf):
    data = tmp_path / "in"
    make_edf(data / "sub-01_ses-2-PSG.edf", SMALL_CHANNELS, duration=60)
    _hypnogram_edf(data / "sub-01_ses-1-Hypnogram.edf", [1, 2])
    batch = preprocess_directory(data, tmp_path / "run")
    assert _stages(tmp_path / "run", "sub-01_ses-2") is None
    assert [p.endswith("sub-01_ses-1-Hypnogram.edf") for p in batch.unmatched_labels] == [True]


def test_sleep_edf_names_pair_by_subject_and_night_only(tmp_path):
    for name in ("SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf", "SC4011EH-Hypnogram.edf",
                 "XY4001EC-Hypnogram.edf"):
        (tmp_path / name).write_bytes(b"")
    found = L.find_label_files(tmp_path / "SC4001E0-PSG.edf", "SC4001E0", [tmp_path])
    assert found == {"stages": tmp_path / "SC4001EC-Hypnogram.edf"}
    (tmp_path / "SC4001EJ-Hypnogram.edf").write_bytes(b"")
    with pytest.raises(LabelError, match="SC4001EC-Hypnogram.edf, SC4001EJ-Hypnogram.edf"):
        L.find_label_files(tmp_path / "SC4001E0-PSG.edf", "SC4001E0", [tmp_path])
    # Not a Sleep-EDF name: nothing but the exact stem pairs.
    (tmp_path / "SC40.edf").write_bytes(b"")
    assert L.find_label_files(tmp_path / "SC40.edf", "SC40", [tmp_path]) == {}


def test_ambiguous_stage_files_fail_the_record_naming_both(tmp_path, make_edf):
    data = tmp_path / "in"
    make_edf(data / "rec.edf", SMALL_CHANNELS, duration=60)
    make_edf(data / "other.edf", SMALL_CHANNELS, duration=60, seed=3)
    L.Hypnogram([0, 1]).to_csv(data / "rec.csv")
    _hypnogram_edf(data / "rec-Hypnogram.edf", [0, 1])
    batch = preprocess_directory(data, tmp_path / "run")
    (failed,) = batch.failed
    assert failed.record_id == "rec" and "rec-Hypnogram.edf, rec.csv" in failed.reason
    assert batch.summary == "1 ok, 1 failed"


def test_labels_folder_must_exist(tmp_path, make_edf):
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=30)
    with pytest.raises(SleepFMError, match="labelz: labels folder not found"):
        preprocess_directory(tmp_path / "in", tmp_path / "run", labels_dir=tmp_path / "labelz")
    assert not (tmp_path / "run").exists()


def test_cohort_ids_that_match_no_record(tmp_path, make_edf):
    data = tmp_path / "in"
    for rid in ("rec1", "rec2"):
        make_edf(data / f"{rid}.edf", SMALL_CHANNELS, duration=30)
    pd.DataFrame({"record_id": ["REC1", "REC2"], "subject_id": ["s", "s"]}).to_csv(
        data / "cohort.csv", index=False)
    with pytest.raises(LabelError, match=r"cohort.csv: none of its record ids \(REC1, REC2, "
                                         r"...\) is a recording's \(rec1, rec2, ...\)"):
        preprocess_directory(data, tmp_path / "run")
    pd.DataFrame({"record_id": ["rec1", "REC2"], "subject_id": ["s", "s"]}).to_csv(
        data / "cohort.csv", index=False)
    with pytest.warns(DataWarning) as caught:
        preprocess_directory(data, tmp_path / "run")
    messages = [str(w.message) for w in caught]
    assert any("1 record ids match no recording (REC2)" in m for m in messages)
    assert any("1 recordings are not in the table (rec2); each is its own subject" in m
               for m in messages)


def test_overlapping_and_backward_stage_rows(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("Start,Stop,StageName,StageNumber\n0,30,W,0\n30,90,N2,2\n60,90,REM,4\n")
    with pytest.warns(DataWarning, match=r"1 epochs are covered by stage rows that disagree "
                                         r"\(the first at 60 s\); the later row was used"):
        hyp = L.read_stages(p)
    assert hyp.stages.tolist() == [0, 2, 4]
    p.write_text("Start,Stop,StageName,StageNumber\n0,30,W,0\n60,30,N2,2\n")
    with pytest.raises(LabelError, match=r"r.csv: row 3 ends \(30 s\) before it starts \(60 s\)"):
        L.read_stages(p)
    p.write_text("Start,Stop,StageName,StageNumber\n0,30,W,0\n30,60,N1,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert L.read_stages(p).stages.tolist() == [0, 1]  # adjacent rows are not an overlap


NSRR = """<?xml version="1.0" encoding="UTF-8"?>
<PSGAnnotation><SoftwareVersion>Compumedics</SoftwareVersion><EpochLength>30</EpochLength>
<ScoredEvents>
<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>
<Duration>60.0</Duration><ClockTime>00.00.00 23.00.00</ClockTime></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept>
<Start>0</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 2 sleep|2</EventConcept>
<Start>30</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType>
<EventConcept>Central apnea|Central Apnea</EventConcept><Start>35.5</Start><Duration>12</Duration>
</ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType>
<EventConcept>Obstructive apnea|Obstructive Apnea</EventConcept><Start>50</Start>
<Duration>11</Duration></ScoredEvent>
<ScoredEvent><EventType>Limb Movement|Limb Movement</EventType>
<EventConcept>Limb movement - left|Limb Movement (Left)</EventConcept><Start>40</Start>
<Duration>2</Duration></ScoredEvent>
</ScoredEvents></PSGAnnotation>
"""


def test_nsrr_xml_pairs_exactly_and_keeps_apnea_subtypes(tmp_path, make_edf):
    data = tmp_path / "in"
    make_edf(data / "shhs1-200001.edf", SMALL_CHANNELS, duration=60)
    make_edf(data / "shhs1-2000010.edf", SMALL_CHANNELS, duration=60, seed=4)
    (data / "shhs1-200001-nsrr.xml").write_text(NSRR)
    batch = preprocess_directory(data, tmp_path / "run")
    assert batch.summary == "2 ok, 0 failed" and batch.unmatched_labels == []
    (rec,) = [r for r in batch.results if r.record_id == "shhs1-200001"]
    assert any("Limb Movement" in w for w in rec.warnings)  # unknown concepts reported
    assert _stages(tmp_path / "run", "shhs1-200001") == [0, 2]
    assert _stages(tmp_path / "run", "shhs1-2000010") is None
    events = pd.read_csv(tmp_path / "run" / "labels" / "shhs1-200001.events.csv")
    assert events.to_dict("list") == {"onset": [35.5, 50.0], "duration": [12.0, 11.0],
                                      "type": ["apnea", "apnea"],
                                      "subtype": ["central", "obstructive"]}
    assert L.read_events(tmp_path / "run" / "labels" / "shhs1-200001.events.csv")[
        "subtype"].tolist() == ["central", "obstructive"]

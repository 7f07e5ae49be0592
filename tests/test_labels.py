"""sleepfm.io.labels: stage and event labels, AASM codes, alignment to the recording."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import REAL_HYPNOGRAM, REAL_PSG
from sleepfm.exceptions import DataWarning, LabelError
from sleepfm import vocab
from sleepfm.io import labels as L


@pytest.mark.parametrize("text, code", [
    ("Sleep stage W", 0), ("W", 0), ("wake", 0), ("Sleep stage 1", 1), ("N1", 1), ("S1", 1),
    ("Sleep stage 2", 2), ("N2", 2), ("Sleep stage 3", 3), ("Sleep stage 4", 3), ("N3", 3),
    ("Sleep stage R", 4), ("REM", 4), ("R", 4), ("Sleep stage ?", -1), ("?", -1),
    ("Movement time", -1), ("0", 0), ("4", 4), ("-1", -1), ("2.0", 2),
    ("Obstructive Apnea", None), ("5", None), ("Lights off", None),
])
def test_stage_code(text, code):
    assert vocab.stage_code(text) == code


@pytest.mark.parametrize("text, kind", [
    ("Obstructive Apnea", "apnea"), ("Central apnoea", "apnea"), ("Hypopnea", "hypopnea"),
    ("Obstructive hypopnoea", "hypopnea"), ("Arousal", "arousal"), ("RERA arousal", "arousal"),
    ("SpO2 desaturation", "desaturation"), ("Sleep stage W", None), ("Lights off", None),
])
def test_event_type(text, kind):
    assert vocab.event_type(text) == kind


def test_real_hypnogram(real_data):
    hyp = L.read_stages(real_data / REAL_HYPNOGRAM)
    assert len(hyp) == 2880 and hyp.duration_s == 86400
    counts = {int(k): int(v) for k, v in zip(*np.unique(hyp.stages, return_counts=True))}
    # W 1997, S1 58, S2 250, S3 101 + S4 119 -> N3, R 125, ? 230 -> -1.
    assert counts == {0: 1997, 1: 58, 2: 250, 3: 220, 4: 125, -1: 230}
    assert (hyp.stages[:1021] == 0).all()  # 'Sleep stage W' 0–30630 s
    assert (hyp.stages[-230:] == -1).all()  # '?' 79500–86400 s
    assert repr(hyp) == "<Hypnogram | 2880 epochs x 30s (1440.00 minutes), 5 unique stages>"
    # Against the 300 s excerpt: trimmed with a warning that says by how much.
    with pytest.warns(DataWarning, match=r"trimmed 2870 epochs \(86100 s\) past the recording end"):
        short = L.align_stages(hyp, 300.0, record="SC4001E0")
    np.testing.assert_array_equal(short.stages, np.zeros(10))


def test_real_pairing(real_data):
    found = L.find_label_files(real_data / REAL_PSG, "SC4001E0-PSG_first300s", [real_data])
    assert found == {"stages": real_data / REAL_HYPNOGRAM}


def test_stages_from_annotations_midpoint_rule():
    anns = [(0, 45, "W"), (45, 45, "N2"), (100, 20, "Lights on"), (90, 30, "REM")]
    hyp = L.stages_from_annotations(anns)
    np.testing.assert_array_equal(hyp.stages, [0, 2, 2, 4])
    with pytest.raises(LabelError, match="no sleep-stage annotations"):
        L.stages_from_annotations([(0, 30, "Apnea")])


def test_sleepfm_csv_round_trip(tmp_path):
    stages = np.array([0, 0, 1, 2, 2, 3, 4, -1, 4, 0], dtype=np.int8)
    hyp = L.Hypnogram(stages)
    p = tmp_path / "r.csv"
    hyp.to_csv(p)
    df = pd.read_csv(p)
    assert list(df.columns) == ["Start", "Stop", "StageName", "StageNumber"]
    assert df["StageName"].tolist() == ["W", "W", "N1", "N2", "N2", "N3", "REM", "?", "REM", "W"]
    assert df["Start"].tolist() == [30.0 * i for i in range(10)]
    np.testing.assert_array_equal(L.read_stages(p).stages, stages)


def test_per_token_csv(tmp_path):
    # SleepFM's per-token variant: one row per 5 s token, six per epoch.
    names = ["W"] * 6 + ["N2"] * 6 + ["REM"] * 6
    df = pd.DataFrame({"Start": np.arange(18) * 5.0, "Stop": np.arange(1, 19) * 5.0,
                       "StageName": names, "StageNumber": [vocab.stage_code(n) for n in names],
                       "EmbeddingNumber": np.arange(18)})
    p = tmp_path / "tok.csv"
    df.to_csv(p, index=False)
    np.testing.assert_array_equal(L.read_stages(p).stages, [0, 2, 4])


def test_plain_list(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("W\nN1\nN2\n3\nREM\n?\n")
    np.testing.assert_array_equal(L.read_stages(p).stages, [0, 1, 2, 3, 4, -1])
    p.write_text("W\nN1\nDeep\n")
    with pytest.raises(LabelError, match=r"r\.txt: line 3 'Deep'"):
        L.read_stages(p)


def test_unknown_stage_names_row(tmp_path):
    p = tmp_path / "rec.csv"
    p.write_text("Start,Stop,StageName,StageNumber\n0,30,W,0\n30,60,N2,2\n60,90,Stage X,9\n")
    with pytest.raises(LabelError) as info:
        L.read_stages(p)
    msg = str(info.value)
    assert "rec.csv" in msg and "row 4" in msg and "Stage X" in msg


def test_bad_label_files(tmp_path):
    with pytest.raises(LabelError, match="not found"):
        L.read_stages(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LabelError, match="empty"):
        L.read_stages(tmp_path / "empty.csv")
    (tmp_path / "other.csv").write_text("time,label\n0,W\n")
    with pytest.raises(LabelError, match="not a stage table"):
        L.read_stages(tmp_path / "other.csv")


def test_align_trim_pad_raise():
    hyp = L.Hypnogram([0, 1, 2, 2, 3, -1])
    assert L.align_stages(hyp, 180.0) is hyp
    assert len(L.align_stages(hyp, 199.0)) == 6  # a partial last epoch is not an epoch
    with pytest.warns(DataWarning, match=r"rec: hypnogram has 6 epochs.*trimmed 2 epochs \(60 s\).*"
                                         r"1 of them scored"):
        short = L.align_stages(hyp, 120.0, record="rec")
    np.testing.assert_array_equal(short.stages, [0, 1, 2, 2])
    with pytest.warns(DataWarning, match="padded 3 unscored epochs"):
        long = L.align_stages(hyp, 270.0, record="rec")
    np.testing.assert_array_equal(long.stages, [0, 1, 2, 2, 3, -1, -1, -1, -1])
    with pytest.raises(LabelError, match=r"rec: hypnogram has 6 epochs \(180 s\), recording 120 s"):
        L.align_stages(hyp, 120.0, record="rec", on_mismatch="raise")
    with pytest.raises(ValueError, match="on_mismatch"):
        L.align_stages(hyp, 120.0, on_mismatch="shift")


def test_events_csv(tmp_path):
    p = tmp_path / "r.events.csv"
    p.write_text("onset,duration,type\n12.5,10.25,Obstructive Apnea\n40,3,arousal\n70,15,Hypopnea\n")
    ev = L.read_events(p)
    assert ev.to_dict("list") == {"onset": [12.5, 40.0, 70.0], "duration": [10.25, 3.0, 15.0],
                                  "type": ["apnea", "arousal", "hypopnea"]}
    np.testing.assert_array_equal(L.events_to_epochs(ev, 3),
                                  [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]])
    p.write_text("onset,duration,type\n1,2,Snoring\n")
    with pytest.raises(LabelError, match=r"unknown event types \['Snoring'\]"):
        L.read_events(p)
    p.write_text("onset,duration,type\n1,-2,apnea\n")
    with pytest.raises(LabelError, match="durations"):
        L.read_events(p)
    p.write_text("start,type\n1,apnea\n")
    with pytest.raises(LabelError, match=r"missing columns \['duration', 'onset'\]"):
        L.read_events(p)


def test_align_events_drops_outside():
    ev = pd.DataFrame({"onset": [-1.0, 5.0, 59.0, 60.0], "duration": [1.0] * 4, "type": ["apnea"] * 4})
    with pytest.warns(DataWarning, match="dropped 2 events"):
        out = L.align_events(ev, 60.0, record="r")
    assert out["onset"].tolist() == [5.0, 59.0]


def test_find_label_files(tmp_path):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir()
    d2.mkdir()
    (d2 / "rec.csv").write_text("x")
    (d2 / "rec.events.csv").write_text("x")
    (d1 / "rec.txt").write_text("x")
    found = L.find_label_files(tmp_path / "rec.edf", "rec", [d1, d2])
    assert found == {"stages": d1 / "rec.txt", "events": d2 / "rec.events.csv"}
    (d1 / "SC4001EC-Hypnogram.edf").write_text("x")
    (d1 / "SC4001EH-Hypnogram.edf").write_text("x")
    with pytest.raises(LabelError, match="several hypnograms"):
        L.find_label_files(tmp_path / "SC4001E0-PSG.edf", "SC4001E0", [d1])
    assert L.find_label_files(tmp_path / "X.edf", "X", [d1, d2]) == {}

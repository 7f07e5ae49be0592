"""Outcome tables (wide SleepFM tables and long subjects + diagnoses tables) and the synthetic
cohort whose outcomes follow a known hazard of its nights."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sleepfm.exceptions import LabelError
from sleepfm.io.cohort import read_cohort
from sleepfm.io.outcomes import DAYS_PER_YEAR, read_outcomes, write_outcomes
from sleepfm.synthetic_cohort import PHENOTYPES, draw_outcomes, write_synthetic_cohort


def _wide(folder, events, times, demographics=None):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(events).to_csv(folder / "is_event.csv", index=False)
    pd.DataFrame(times).to_csv(folder / "time_to_event.csv", index=False)
    if demographics is not None:
        pd.DataFrame(demographics).to_csv(folder / "demographics.csv", index=False)
    return folder


def _long(folder, subjects, diagnoses):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(subjects).to_csv(folder / "subjects.csv", index=False)
    pd.DataFrame(diagnoses, columns=["subject_id", "phenotype", "diagnosis_date"]).to_csv(
        folder / "diagnoses.csv", index=False)
    return folder


SUBJECTS = {"subject_id": ["S1", "S2", "S3"], "record_id": ["R1", "R2", "R3"],
            "psg_date": ["2010-01-01", "2010-06-01", "2011-01-01"], "age": [50, 60, 70],
            "sex": ["M", "F", "M"], "end_of_followup": ["2015-01-01", "2016-06-01", "2014-01-01"],
            "death_date": [None, "2012-06-01", None]}


def test_wide_tables_read_in_years_with_demographics_and_names(tmp_path):
    folder = _wide(tmp_path / "o", {"Study ID": ["A", "B", "C"], "8.0": [1, 0, ""],
                                    "8.5": [0, 1, 0]},
                   {"Study ID": ["A", "B", "C"], "8.0": [365.25, 730.5, ""],
                    "8.5": [100, 200, 300]},
                   {"Study ID": ["A", "B", "C"], "age": [40, 50, 60], "gender": ["M", "F", "F"]})
    pd.DataFrame({"label_idx": [0, 1], "phecode": ["8.0", "8.5"],
                  "phenotype": ["Intestinal infection", "Bacterial enteritis"]}).to_csv(
        folder / "label_mapping.csv", index=False)
    out = read_outcomes(folder)
    assert out.phenotypes == ["8.0", "8.5"]
    assert out.time.loc["A", "8.0"] == pytest.approx(1.0)
    assert np.isnan(out.time.loc["C", "8.0"]) and np.isnan(out.event.loc["C", "8.0"])
    assert out.demographics.loc["B", "sex"] == "F"
    assert out.names["8.0"] == "Intestinal infection"
    assert "3 records" in repr(out)


def test_long_tables_follow_first_diagnosis_death_and_prevalence(tmp_path):
    folder = _long(tmp_path / "o", SUBJECTS, [
        ("S1", "stroke", "2012-01-01"), ("S1", "stroke", "2011-01-01"),  # first one counts
        ("S2", "stroke", "2009-01-01"),  # before the PSG: not at risk
        ("S3", "stroke", "2020-01-01"),  # after follow-up: censored
        ("S3", "dementia", "2012-01-01")])
    out = read_outcomes(folder)
    t, e = out.time, out.event
    assert e.loc["R1", "stroke"] == 1
    assert t.loc["R1", "stroke"] == pytest.approx(365 / DAYS_PER_YEAR)
    assert np.isnan(t.loc["R2", "stroke"]) and np.isnan(e.loc["R2", "stroke"])
    assert e.loc["R3", "stroke"] == 0
    assert t.loc["R3", "stroke"] == pytest.approx(1096 / DAYS_PER_YEAR)
    # death ends follow-up: R2 dies in 2012, so its censoring time for dementia is its death
    assert e.loc["R2", "death"] == 1 and e.loc["R1", "death"] == 0
    assert t.loc["R2", "dementia"] == pytest.approx(t.loc["R2", "death"])
    assert any("before their PSG" in line for line in out.report)


def test_eventless_phenotypes_are_reported_and_dropped(tmp_path, caplog):
    folder = _wide(tmp_path / "o", {"Study ID": ["A", "B"], "x": [1, 0], "never": [0, 0]},
                   {"Study ID": ["A", "B"], "x": [10, 20], "never": [10, 20]})
    with caplog.at_level("WARNING"):
        out = read_outcomes(folder)
    assert out.phenotypes == ["x"]
    assert "'never' has no event" in caplog.text


@pytest.mark.parametrize("damage, message", [
    (lambda s, d: s.update(end_of_followup=["2009-01-01", "2016-06-01", "2014-01-01"]),
     r"end_of_followup is before psg_date in rows 2"),
    (lambda s, d: s.update(record_id=["R1", "R1", "R3"]), r"record_id \['R1'\] occur more than once"),
    (lambda s, d: d.append(("S9", "stroke", "2012-01-01")), r"subject_id \['S9'\].*not in subjects"),
    (lambda s, d: s.update(psg_date=["2010-01-01", "not a date", "2011-01-01"]),
     r"psg_date is missing or not a date in rows 3"),
    (lambda s, d: s.update(end_of_followup=[None, "2016-06-01", "2014-01-01"]),
     r"rows 2 have neither end_of_followup nor death_date"),
])
def test_bad_long_tables_name_the_rows(tmp_path, damage, message):
    subjects, diagnoses = {k: list(v) for k, v in SUBJECTS.items()}, [("S1", "stroke", "2012-01-01")]
    damage(subjects, diagnoses)
    with pytest.raises(LabelError, match=message):
        read_outcomes(_long(tmp_path / "o", subjects, diagnoses))


@pytest.mark.parametrize("events, times, message", [
    ({"Study ID": ["A", "B"], "x": [1, 0]}, {"Study ID": ["A", "B"], "x": [-5, 20]},
     r"negative times \(rows 2\)"),
    ({"Study ID": ["A", "A"], "x": [1, 0]}, {"Study ID": ["A", "A"], "x": [5, 20]},
     r"Study ID \['A'\] occur more than once"),
    ({"Study ID": ["A", "B"], "x": [1, 2]}, {"Study ID": ["A", "B"], "x": [5, 20]},
     r"values other than 0, 1 or empty \(rows 3\)"),
    ({"Study ID": ["A", "B"], "x": [1, 0]}, {"Study ID": ["A", "C"], "x": [5, 20]},
     r"only one of is_event.csv and time_to_event.csv"),
    ({"Study ID": ["A", "B"], "x": [1, ""]}, {"Study ID": ["A", "B"], "x": [5, 20]},
     r"empty in one table but not in the other"),
    ({"Study ID": ["A", "B"], "x": [0, 0]}, {"Study ID": ["A", "B"], "x": [5, 20]},
     r"no phenotype has an event"),
])
def test_bad_wide_tables_name_the_problem(tmp_path, events, times, message):
    with pytest.raises(LabelError, match=message):
        read_outcomes(_wide(tmp_path / "o", events, times))


def test_unknown_demographics_ids_and_empty_folders_are_errors(tmp_path):
    folder = _wide(tmp_path / "o", {"Study ID": ["A", "B"], "x": [1, 0]},
                   {"Study ID": ["A", "B"], "x": [5, 20]},
                   {"Study ID": ["A", "Z"], "age": [1, 2]})
    with pytest.raises(LabelError, match=r"Study IDs \['Z'\] are not in is_event"):
        read_outcomes(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match="neither is_event.csv"):
        read_outcomes(tmp_path / "empty")
    with pytest.raises(LabelError, match="not found"):
        read_outcomes(tmp_path / "missing")


def test_write_then_read_round_trips(tmp_path):
    facts = pd.DataFrame({"record_id": [f"R{i}" for i in range(60)],
                          "subject_id": [f"S{i}" for i in range(60)],
                          "age": np.linspace(30, 80, 60), "sex": ["M", "F"] * 30,
                          "race": "white", "site": "A", "apnea": 2.0, "n3": 0.15,
                          "heart_rate": 63.0, "arousal": 12.0})
    out = draw_outcomes(facts, seed=3)
    back = read_outcomes(write_outcomes(out, tmp_path / "o"))
    kept = back.phenotypes
    pd.testing.assert_frame_equal(back.time, out.time[kept], check_names=False, atol=1e-9)
    pd.testing.assert_frame_equal(back.event, out.event[kept], check_names=False)
    assert back.names == {p: out.names[p] for p in kept}


def test_synthetic_outcomes_follow_their_hazard():
    """Age and apnea raise the hazard as PHENOTYPES says: the high-risk half has more events."""
    n = 4000
    rng = np.random.default_rng(0)
    facts = pd.DataFrame({"record_id": [f"R{i}" for i in range(n)], "subject_id": "S",
                          "age": rng.normal(50, 15, n), "sex": "M", "race": "white", "site": "A",
                          "apnea": rng.normal(2, 1, n), "n3": rng.normal(0.15, 0.12, n),
                          "heart_rate": rng.normal(63, 6, n), "arousal": rng.normal(12, 6, n)})
    out = draw_outcomes(facts, seed=0)
    high = facts["apnea"].to_numpy() > 2
    for code in ("stroke", "death"):
        rate = out.event[code].groupby(high).mean()
        assert rate[True] > 1.5 * rate[False], (code, rate)
    assert set(out.phenotypes) == set(PHENOTYPES)


def test_synthetic_cohort_writes_both_formats_with_the_same_outcomes(tmp_path):
    wide = write_synthetic_cohort(tmp_path / "w", 12, minutes=10, seed=1)
    write_synthetic_cohort(tmp_path / "l", 12, minutes=10, seed=1, fmt="long")
    a, b = read_outcomes(tmp_path / "w" / "outcomes"), read_outcomes(tmp_path / "l" / "outcomes")
    kept = a.phenotypes
    pd.testing.assert_frame_equal(b.time[kept], a.time, check_names=False, atol=1e-9)
    pd.testing.assert_frame_equal(b.event[kept], a.event, check_names=False)
    pd.testing.assert_frame_equal(a.time, wide.time[kept], check_names=False, atol=1e-9)
    cohort = read_cohort(tmp_path / "w" / "cohort.csv")
    assert len(cohort) == 12 and {"race", "site"} <= set(cohort.columns)
    assert len(list((tmp_path / "w").glob("*.edf"))) == 12
    facts = pd.read_csv(tmp_path / "w" / "truth" / "facts.csv")
    assert {"apnea", "n3", "heart_rate", "arousal"} <= set(facts.columns)

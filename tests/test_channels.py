"""sleepfm.channels: channel name -> kind -> SleepFM modality."""
from __future__ import annotations

import pytest

from conftest import REAL_PSG
from sleepfm.channels import (
    DEFAULT_CHANNEL_MAP,
    MODALITIES,
    ChannelMap,
    channel_group_aliases,
    normalize_name,
)
from sleepfm.exceptions import InvalidParameterError
from sleepfm.io.edf import read_edf

KNOWN = [
    ("EEG Fpz-Cz", "eeg", "BAS"), ("EEG Pz-Oz", "eeg", "BAS"), ("C3-M2", "eeg", "BAS"),
    ("C4-A1", "eeg", "BAS"), ("O2-M1", "eeg", "BAS"), ("F4", "eeg", "BAS"), ("Cz", "eeg", "BAS"),
    ("E1", "eog", "BAS"), ("E2-M1", "eog", "BAS"), ("LOC", "eog", "BAS"), ("ROC-A1", "eog", "BAS"),
    ("EOG horizontal", "eog", "BAS"),
    ("EMG chin", "emg", "EMG"), ("Chin1-Chin2", "emg", "EMG"), ("EMG submental", "emg", "EMG"),
    ("Leg L", "emg", "EMG"), ("LAT", "emg", "EMG"),
    ("ECG", "ecg", "ECG"), ("EKG", "ecg", "ECG"), ("ECG II", "ecg", "ECG"),
    ("Airflow", "resp", "RESP"), ("Nasal Pressure", "resp", "RESP"), ("Thor", "resp", "RESP"),
    ("Abdo", "resp", "RESP"), ("Resp oro-nasal", "resp", "RESP"), ("SpO2", "spo2", "RESP"),
    ("SaO2", "spo2", "RESP"), ("Snore", "snore", "RESP"), ("Pleth", "ppg", "RESP"),
    ("Pulse", "hr", "RESP"),
]


@pytest.mark.parametrize("name, kind, modality", KNOWN)
def test_known_names(name, kind, modality):
    cmap = ChannelMap()
    assert cmap.kind(name) == kind
    assert cmap.modality(name) == modality


@pytest.mark.parametrize("name, kind, modality", KNOWN)
def test_case_spacing_separator_insensitive(name, kind, modality):
    cmap = ChannelMap()
    for variant in (name.upper(), name.lower(), name.replace(" ", "_"), name.replace("-", " "),
                    name.replace(" ", "").replace("-", "."), f"  {name}  "):
        assert cmap.modality(variant) == modality, variant


def test_normalize_name():
    assert normalize_name("EEG Fpz-Cz") == normalize_name("eeg_fpz_cz") == "eegfpzcz"
    assert normalize_name("FPZ CZ") == normalize_name("Fpz-Cz") == "fpzcz"
    assert normalize_name(" Nasal  Pressure ") == "nasalpressure"


@pytest.mark.parametrize("name", ["Position", "Light", "Temp rectal", "Event marker", "DC1", "DC 3",
                                  "Body position", "Lux", "Marker", "Activity", "Temp", "", "  ",
                                  "Elevation", "Accel X"])
def test_unknown_names_unplaced(name):
    assert DEFAULT_CHANNEL_MAP.kind(name) is None
    assert DEFAULT_CHANNEL_MAP.modality(name) is None
    a = DEFAULT_CHANNEL_MAP.assign([name, "C3-M2"])
    assert a.unplaced == [name]
    assert a.placed == {"C3-M2": "BAS"}


def test_assign_groups_by_modality_in_order():
    names = ["Airflow", "C3-M2", "Position", "ECG", "EMG chin", "E1", "SpO2", "Light"]
    a = DEFAULT_CHANNEL_MAP.assign(names)
    assert a.unplaced == ["Position", "Light"]
    assert a.by_modality() == {"BAS": ["C3-M2", "E1"], "ECG": ["ECG"], "EMG": ["EMG chin"],
                               "RESP": ["Airflow", "SpO2"]}
    assert list(a.by_modality()) == [m for m in MODALITIES if m in a.by_modality()]
    assert a.kinds["E1"] == "eog" and a.kinds["SpO2"] == "spo2"


def test_real_sleep_edf_channels(real_data):
    rec = read_edf(real_data / REAL_PSG)
    a = DEFAULT_CHANNEL_MAP.assign(rec.channel_names)
    assert a.placed == {"EEG Fpz-Cz": "BAS", "EEG Pz-Oz": "BAS", "EOG horizontal": "BAS",
                        "Resp oro-nasal": "RESP", "EMG submental": "EMG"}
    assert a.unplaced == ["Temp rectal", "Event marker"]


def test_user_aliases_and_ignore(tmp_path):
    p = tmp_path / "map.yaml"
    p.write_text("aliases:\n  Kanal 7: eog\n  Fluss: RESP\n  Temp rectal: ecg\n"
                 "ignore:\n  - EEG Pz-Oz\n  - SpO2\n")
    cmap = ChannelMap.from_yaml(p)
    assert cmap.modality("kanal_7") == "BAS" and cmap.kind("KANAL-7") == "eog"
    assert cmap.modality("Fluss") == "RESP"
    assert cmap.kind("Temp rectal") == "ecg"  # user entries take precedence
    assert cmap.modality("EEG Pz-Oz") is None and cmap.modality("spo2") is None
    assert cmap.modality("EEG Fpz-Cz") == "BAS"  # built-in table still there
    # The default map is not changed by a user map.
    assert DEFAULT_CHANNEL_MAP.modality("Kanal 7") is None
    assert DEFAULT_CHANNEL_MAP.modality("EEG Pz-Oz") == "BAS"


def test_empty_yaml_is_default(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    cmap = ChannelMap.from_yaml(p)
    assert cmap.modality("C3-M2") == "BAS" and cmap.modality("Position") is None


def test_yaml_unknown_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("alias:\n  X: eeg\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown keys \['alias'\]"):
        ChannelMap.from_yaml(p)


def test_yaml_unknown_kind(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("aliases:\n  X: brainwaves\n")
    with pytest.raises(ValueError, match="'X'.*brainwaves"):
        ChannelMap.from_yaml(p)


def test_channel_group_aliases_place_names_as_the_foreign_table_does():
    groups = {"BAS": ["C3-M2", "F3:M1+M2", "E1 (LEOG)"], "EKG": ["ECG"], "EMG": ["Pleth"],
              "RESP": ["RIP Thorax"]}
    imported = channel_group_aliases(groups)
    assert imported.known == 2  # C3-M2 and ECG are placed alike already
    assert imported.aliases == {"F3:M1+M2": "BAS", "E1 (LEOG)": "BAS", "Pleth": "EMG",
                                "RIP Thorax": "RESP"}
    assert imported.disagreements == {"Pleth": ("EMG", "RESP")}
    cmap = ChannelMap(imported.aliases)
    for group, names in groups.items():
        for name in names:
            want = "ECG" if group == "EKG" else group
            assert cmap.modality(name) == want
            assert cmap.modality(name.lower().replace(" ", "_")) == want  # still insensitive


@pytest.mark.parametrize("groups, match", [
    ({"EEG": ["C3"]}, "modality"),
    ({"BAS": "C3"}, "list of names"),
    ({"BAS": ["X1"], "EMG": ["x-1"]}, "both BAS and EMG"),
])
def test_channel_group_aliases_refuse_a_bad_table(groups, match):
    with pytest.raises(InvalidParameterError, match=match):
        channel_group_aliases(groups)

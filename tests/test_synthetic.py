"""Tests of the synthetic PSG generator: determinism, hypnogram, events, physiology, files."""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import signal as sps

from sleepfm.channels import DEFAULT_CHANNEL_MAP
from sleepfm.exceptions import SignalError
from sleepfm.synthetic import (
    MONTAGES,
    SyntheticConfig,
    SyntheticNight,
    generate_cohort,
    generate_night,
    write_night,
)
from sleepfm.vocab import EVENT_TYPES, STAGE_NAMES

W, N1, N2, N3, REM = range(5)
LOW_RATES = {"eeg": 128, "eog": 128, "emg": 128, "ecg": 128}


@pytest.fixture(scope="module")
def night() -> SyntheticNight:
    """A full 8-h clinical night (128 Hz electrophysiology to keep the test fast)."""
    return generate_night(SyntheticConfig(duration_h=8.0, ahi=20.0, sample_rates=LOW_RATES), seed=7)


def _epochs(night: SyntheticNight, channel: str) -> np.ndarray:
    fs = night.sample_rates[channel]
    return night.signals[channel].reshape(len(night.stages), int(30 * fs))


def _band_power(night: SyntheticNight, channel: str, lo: float, hi: float) -> np.ndarray:
    """Absolute power (uV^2) in [lo, hi) Hz per epoch (Welch, 4 s windows)."""
    fs = night.sample_rates[channel]
    freqs, psd = sps.welch(_epochs(night, channel), fs, nperseg=int(4 * fs), axis=1)
    band = (freqs >= lo) & (freqs < hi)
    return psd[:, band].sum(axis=1) * (freqs[1] - freqs[0])


def _stage_median(values: np.ndarray, stages: np.ndarray, stage: int) -> float:
    return float(np.median(values[stages == stage]))


# --- structure and determinism ---------------------------------------------------------------
def test_shapes_rates_units_kinds():
    cfg = SyntheticConfig(duration_h=0.5, sample_rates={"eeg": 200, "resp": 25})
    night = generate_night(cfg, seed=1)
    assert night.duration_s == 1800.0
    assert night.stages.dtype == np.int8 and night.stages.shape == (60,)
    assert set(np.unique(night.stages)) <= set(range(5))
    assert night.channel_names == [name for name, _ in MONTAGES["clinical"]]
    for name, kind in MONTAGES["clinical"]:
        x = night.signals[name]
        assert x.dtype == np.float64 and np.isfinite(x).all()
        assert len(x) == round(night.duration_s * night.sample_rates[name])
        assert night.kinds[name] == kind
    assert night.sample_rates["C4-M1"] == 200 and night.sample_rates["Thorax"] == 25
    assert night.sample_rates["E1-M2"] == 256 and night.sample_rates["SpO2"] == 1
    assert night.units["C4-M1"] == "uV" and night.units["SpO2"] == "%"
    assert "SYN0001" in repr(night) and "17 ch" in repr(night)


@pytest.mark.parametrize("montage", sorted(MONTAGES))
def test_montage_channel_kinds_agree_with_channel_map(montage):
    for name, kind in MONTAGES[montage]:
        assert DEFAULT_CHANNEL_MAP.kind(name) == kind, name


def test_same_seed_identical_different_seed_differs():
    cfg = SyntheticConfig(duration_h=0.5, artefact_rate=20.0)
    a, b = generate_night(cfg, seed=3), generate_night(cfg, seed=3)
    c = generate_night(cfg, seed=4)
    for name in a.signals:
        assert np.array_equal(a.signals[name], b.signals[name]), name
    assert np.array_equal(a.stages, b.stages)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.artefacts, b.artefacts)
    assert a.subject == b.subject
    assert not np.array_equal(a.signals["C4-M1"], c.signals["C4-M1"])
    assert a.subject != c.subject


def test_channel_does_not_depend_on_montage():
    small = generate_night(SyntheticConfig(duration_h=0.5, montage="staging"), seed=5)
    full = generate_night(SyntheticConfig(duration_h=0.5), seed=5)
    for name in small.signals:
        assert np.array_equal(small.signals[name], full.signals[name]), name


def test_cohort_is_lazy_and_consistent():
    cfg = SyntheticConfig(duration_h=0.5, montage="staging")
    cohort = generate_cohort(2, cfg, seed=9, nights_per_subject=2)
    assert not isinstance(cohort, list)
    nights = list(cohort)
    assert [n.record_id for n in nights] == ["SYN0000_N1", "SYN0000_N2", "SYN0001_N1", "SYN0001_N2"]
    assert nights[0].subject["age"] == nights[1].subject["age"]
    assert nights[0].subject["subject_id"] == nights[1].subject["subject_id"] == "SYN0000"
    assert not np.array_equal(nights[0].signals["C4-M1"], nights[1].signals["C4-M1"])
    single = generate_night(cfg, seed=9)
    assert np.array_equal(single.signals["C4-M1"], nights[0].signals["C4-M1"])


def test_nap_and_fixed_subject_fields():
    nap = generate_night(SyntheticConfig(duration_h=0.5, montage="eeg", age=30, sex="F", ahi=0.0),
                         seed=2)
    assert nap.stages[0] == W and (nap.stages != W).any()
    assert nap.subject["age"] == 30 and nap.subject["sex"] == "F"
    assert nap.subject["severity"] == "none"
    assert not nap.events["type"].isin(["apnea", "hypopnea", "desaturation"]).any()


@pytest.mark.parametrize("kwargs, error", [
    (dict(duration_h=0.01), SignalError),
    (dict(duration_h=0.0), SignalError),
    (dict(montage="nope"), ValueError),
    (dict(ahi=-1.0), ValueError),
    (dict(severity="extreme"), ValueError),
    (dict(artefact_rate=-1.0), ValueError),
    (dict(sample_rates={"eeg": 10}), SignalError),
    (dict(sample_rates={"eeg": 100.01}), SignalError),
    (dict(sample_rates={"brain": 100}), ValueError),
    (dict(sex="X"), ValueError),
])
def test_invalid_config(kwargs, error):
    with pytest.raises(error):
        generate_night(SyntheticConfig(**kwargs))


def test_invalid_seed():
    with pytest.raises(ValueError, match="seed"):
        generate_night(SyntheticConfig(duration_h=0.5), seed=-1)


def test_artefacts_are_added_and_listed():
    base = SyntheticConfig(duration_h=1.0, montage="staging")
    clean = generate_night(base, seed=11)
    dirty = generate_night(SyntheticConfig(duration_h=1.0, montage="staging", artefact_rate=30.0),
                           seed=11)
    assert clean.artefacts.empty and len(dirty.artefacts) > 0
    assert set(dirty.artefacts["type"]) <= {"movement", "pop", "sweat", "line"}
    assert np.array_equal(clean.stages, dirty.stages)
    assert not np.array_equal(clean.signals["C4-M1"], dirty.signals["C4-M1"])


# --- hypnogram and events ----------------------------------------------------------------------
def test_stage_proportions_and_structure(night):
    share = np.bincount(night.stages, minlength=5) / len(night.stages)
    assert 0.04 <= share[W] <= 0.25
    assert 0.02 <= share[N1] <= 0.15
    assert 0.35 <= share[N2] <= 0.65
    assert 0.08 <= share[N3] <= 0.30
    assert 0.12 <= share[REM] <= 0.30
    assert night.stages[0] == W  # sleep-onset latency
    half = len(night.stages) // 2
    n3 = night.stages == N3
    rem = night.stages == REM
    assert n3[:half].sum() > n3[half:].sum()  # N3 early
    assert rem[half:].sum() > rem[:half].sum()  # REM late


def test_events_table(night):
    ev = night.events
    assert list(ev.columns) == ["onset", "duration", "type"]
    assert set(ev["type"]) <= set(EVENT_TYPES)
    assert (ev["onset"] >= 0).all() and (ev["duration"] > 0).all()
    assert (ev["onset"] + ev["duration"] <= night.duration_s + 1e-6).all()
    assert ev["onset"].is_monotonic_increasing
    resp = ev[ev["type"].isin(["apnea", "hypopnea"])]
    assert (resp["duration"] >= 10).all()
    tst_h = (night.stages != W).sum() * 30 / 3600
    assert len(resp) == round(night.subject["ahi"] * tst_h)
    assert night.subject["ahi_generated"] == pytest.approx(20.0, abs=0.2)
    epochs = (resp["onset"] // 30).astype(int)
    assert (night.stages[epochs] != W).all()  # respiratory events happen in sleep
    arousals = ev[ev["type"] == "arousal"]
    assert ((arousals["duration"] >= 3) & (arousals["duration"] < 15)).all()


def test_apnea_airflow_and_desaturation(night):
    ev = night.events
    flow, fs = night.signals["Airflow"], night.sample_rates["Airflow"]
    apneas = ev[ev["type"] == "apnea"]
    reduced = []
    for onset, dur in zip(apneas["onset"], apneas["duration"]):
        during = flow[int((onset + 3) * fs):int((onset + dur - 1) * fs)]
        before = flow[int((onset - 40) * fs):int((onset - 10) * fs)]
        reduced.append(np.std(during) < 0.2 * np.std(before))
    assert np.mean(reduced) > 0.9  # airflow ~0 during apnea (overlapping recoveries aside)
    spo2 = night.signals["SpO2"]
    desats = ev[ev["type"] == "desaturation"]
    assert len(desats) > 0
    drops = []
    for onset, dur in zip(desats["onset"], desats["duration"]):
        base = spo2[max(int(onset) - 5, 0):int(onset) + 1].max()
        drops.append(base - spo2[int(onset):int(onset + dur) + 1].min())
    assert np.median(drops) >= 3.0
    # Each desaturation starts 20-30 s after the onset of an apnea or hypopnea.
    resp_onsets = ev.loc[ev["type"].isin(["apnea", "hypopnea"]), "onset"].to_numpy()
    lags = [np.min(np.where(o - resp_onsets >= 0, o - resp_onsets, np.inf)) for o in desats["onset"]]
    assert np.all((np.array(lags) >= 19.9) & (np.array(lags) <= 30.1))


# --- physiology ----------------------------------------------------------------------------------
def test_delta_larger_in_n3_than_wake(night):
    delta = _band_power(night, "C4-M1", 0.5, 4.0)
    assert _stage_median(delta, night.stages, N3) > 5 * _stage_median(delta, night.stages, W)


def test_occipital_alpha_larger_in_wake_than_n3(night):
    for channel in ("O1-M2", "O2-M1"):
        alpha = _band_power(night, channel, 8.0, 12.0)
        rel = alpha / _band_power(night, channel, 0.5, 30.0)
        assert _stage_median(alpha, night.stages, W) > _stage_median(alpha, night.stages, N3)
        assert _stage_median(rel, night.stages, W) > 4 * _stage_median(rel, night.stages, N3)
    occipital = _stage_median(_band_power(night, "O1-M2", 8, 12), night.stages, W)
    assert occipital > _stage_median(_band_power(night, "F3-M2", 8, 12), night.stages, W)


def test_chin_atonia_in_rem(night):
    rms = np.sqrt((_epochs(night, "Chin") ** 2).mean(axis=1))
    rem, wake = _stage_median(rms, night.stages, REM), _stage_median(rms, night.stages, W)
    n2 = _stage_median(rms, night.stages, N2)
    assert rem < 0.5 * n2 < 0.5 * wake


def test_spindle_band_higher_in_n2(night):
    sigma = _band_power(night, "C4-M1", 11.0, 16.0)
    # Spindles make a peak above the 1/f background: sigma vs. its neighbouring bands.
    peak = sigma / (_band_power(night, "C4-M1", 8.0, 10.0) + _band_power(night, "C4-M1", 17.0, 22.0))
    for other in (N1, REM):
        assert _stage_median(sigma, night.stages, N2) > 1.5 * _stage_median(sigma, night.stages, other)
        assert _stage_median(peak, night.stages, N2) > _stage_median(peak, night.stages, other)


def test_slow_waves_cover_n3_epochs(night):
    """AASM N3: >= 20 % of the epoch in 0.5-2 Hz waves over 75 uV peak-to-peak (frontal)."""
    fs = night.sample_rates["F3-M2"]
    sos = sps.butter(2, [0.5, 2.0], "bandpass", fs=fs, output="sos")
    slow = sps.sosfiltfilt(sos, night.signals["F3-M2"]).reshape(len(night.stages), -1)
    # A half-wave counts when its local peak-to-peak amplitude exceeds 75 uV.
    envelope = np.abs(sps.hilbert(slow, axis=1))
    coverage = (2 * envelope > 75).mean(axis=1)
    assert np.median(coverage[night.stages == N3]) >= 0.2
    assert np.median(coverage[night.stages == W]) < 0.05


def test_rapid_eye_movements_anticorrelated(night):
    fs = night.sample_rates["E1-M2"]
    sos = sps.butter(2, [0.3, 5.0], "bandpass", fs=fs, output="sos")
    e1 = sps.sosfiltfilt(sos, night.signals["E1-M2"]).reshape(len(night.stages), -1)
    e2 = sps.sosfiltfilt(sos, night.signals["E2-M1"]).reshape(len(night.stages), -1)
    rem = night.stages == REM
    assert np.corrcoef(e1[rem].ravel(), e2[rem].ravel())[0, 1] < -0.3
    # Eye movements are the differential part; EEG leak is mostly common to both leads.
    moves = ((e1 - e2) / 2).var(axis=1)
    assert moves[rem].mean() > 3 * moves[night.stages == N2].mean()
    assert moves[night.stages == W].mean() > 3 * moves[night.stages == N2].mean()


def test_heart_rate_lower_in_n3(night):
    fs = night.sample_rates["ECG"]
    ecg = night.signals["ECG"]
    peaks, _ = sps.find_peaks(ecg, height=0.5 * np.percentile(ecg, 99.9), distance=int(0.33 * fs))
    rr = np.diff(peaks) / fs
    assert 0.5 < np.median(rr) < 1.5
    epoch = (peaks[1:] / fs // 30).astype(int)
    hr = 60 / rr
    assert np.median(hr[night.stages[epoch] == N3]) < np.median(hr[night.stages[epoch] == W])


# --- staging realism --------------------------------------------------------------------------
@pytest.mark.slow
def test_yasa_stages_synthetic_nights():
    yasa = pytest.importorskip("yasa")
    from sklearn.metrics import accuracy_score

    truth, predicted = [], []
    cfg = SyntheticConfig(duration_h=3.0, montage="staging")
    for night in generate_cohort(3, cfg, seed=2024):
        raw = night.to_mne(["C4-M1", "E1-M2", "Chin"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            staging = yasa.SleepStaging(
                raw, eeg_name="C4-M1", eog_name="E1-M2", emg_name="Chin",
                metadata={"age": night.subject["age"], "male": night.subject["sex"] == "M"})
            predicted.append(staging.predict().as_int().to_numpy())
        truth.append(night.stages)
    accuracy = accuracy_score(np.concatenate(truth), np.concatenate(predicted))
    assert accuracy >= 0.70


# --- files --------------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("sleepfm.io.edf") is None, reason="no sleepfm.io.edf")
@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_write_night_round_trip(tmp_path, fmt):
    from sleepfm.io.edf import read_edf

    night = generate_night(SyntheticConfig(duration_h=0.5, ahi=40.0, sample_rates={"eeg": 100}),
                           seed=8)
    paths = write_night(night, tmp_path, fmt=fmt)
    assert set(paths) == {"edf", "stages", "events"}
    assert paths["edf"].name == f"{night.record_id}.{fmt}"
    assert paths["stages"].name == f"{night.record_id}.csv"
    assert paths["events"].name == f"{night.record_id}.events.csv"

    stages = pd.read_csv(paths["stages"])
    assert list(stages.columns) == ["Start", "Stop", "StageName", "StageNumber"]
    assert np.array_equal(stages["StageNumber"].to_numpy(), night.stages)
    assert list(stages["StageName"]) == [STAGE_NAMES[s] for s in night.stages]
    assert np.array_equal(stages["Start"].to_numpy(), np.arange(len(night.stages)) * 30.0)
    assert (stages["Stop"] - stages["Start"] == 30).all()
    events = pd.read_csv(paths["events"])
    pd.testing.assert_frame_equal(events, night.events, check_dtype=False)

    rec = read_edf(paths["edf"])
    assert rec.channel_names == night.channel_names
    assert rec.duration_s == night.duration_s
    for name in night.channel_names:
        assert rec.sample_rate(name) == night.sample_rates[name]
        x, y = night.signals[name], rec.get_data(name, dtype=np.float64)
        assert len(y) == len(x)
        step = (x.max() - x.min()) / (2 ** (16 if fmt == "edf" else 24) - 1)
        assert np.max(np.abs(x - y)) <= 2 * step + 1e-3 * max(np.abs(x).max(), 1e-9)


def test_pick_and_crop_keep_ground_truth_aligned():
    night = generate_night(SyntheticConfig(duration_h=1.0, montage="staging"), seed=5)
    part = night.pick(["C4-M1", "Chin"]).crop(600, 1800)
    assert part.channel_names == ["C4-M1", "Chin"]
    assert part.duration_s == 1200
    np.testing.assert_array_equal(part.stages, night.stages[20:60])
    fs = night.sample_rates["C4-M1"]
    np.testing.assert_array_equal(part.signals["C4-M1"], night.signals["C4-M1"][int(600 * fs):int(1800 * fs)])
    inside = night.events[(night.events.onset >= 600) & (night.events.onset < 1800)]
    np.testing.assert_allclose(part.events["onset"].to_numpy(), inside["onset"].to_numpy() - 600)
    with pytest.raises(ValueError, match="whole epochs"):
        night.crop(10, 100)
    with pytest.raises(KeyError, match="no channel"):
        night.pick(["Fz-Cz"])

"""sleepfm.preprocess (filter, resample, z-score, records and folders) and sleepfm.io.store."""
from __future__ import annotations

import json
import os
import pickle
import re
import sys
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import signal

import sleepfm.stages.preprocess as P
from conftest import DEFAULT_CHANNELS, REAL_HYPNOGRAM, REAL_PSG, SMALL_CHANNELS, build_bad_batch
from sleepfm.exceptions import LabelError, SignalError, SleepFMError, StoreError
from sleepfm.io import labels as L
from sleepfm.io.edf import Annotation, read_edf
from sleepfm.config import PreprocessConfig
from sleepfm.io.store import RecordReader, Store, build_index, file_is_complete
from sleepfm.preprocess import preprocess_signal, resample, robust_zscore, zero_phase_lowpass
from sleepfm.rundir import RunDir
from sleepfm.stages.preprocess import preprocess_directory, preprocess_record
from sleepfm.utils import sha256_file

FS_OUT = 128


# --- filter and resampling ----------------------------------------------------------------------

def _tone_fit(y: np.ndarray, f: float, fs: float, sl: slice) -> tuple[float, float]:
    """Amplitude and phase (degrees) of a sine of frequency ``f`` in ``y[sl]`` (least squares)."""
    t = np.arange(len(y))[sl] / fs
    a = np.c_[np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t), np.ones_like(t)]
    c = np.linalg.lstsq(a, y[sl].astype(np.float64), rcond=None)[0]
    return float(np.hypot(c[0], c[1])), float(np.degrees(np.arctan2(c[1], c[0])))


MIDDLE = slice(5 * FS_OUT, -5 * FS_OUT)  # away from the edges


@pytest.mark.parametrize("fs", [256, 512, 200, 1000])
@pytest.mark.parametrize("f", [66.0, 80.0])
def test_tone_above_new_nyquist_is_removed(fs, f):
    t = np.arange(int(fs * 60)) / fs
    y = resample(np.sin(2 * np.pi * f * t), fs)
    assert len(y) == 60 * FS_OUT
    # Whatever frequency the tone would alias to, its power must be gone (>= 40 dB down).
    amplitude = np.sqrt(2 * np.mean(y[MIDDLE].astype(np.float64) ** 2))
    assert 20 * np.log10(amplitude) <= -40, amplitude


def test_naive_decimation_would_alias():
    # The check above is meaningful: without the filter, 80 Hz at 256 Hz aliases to 48 Hz at full
    # amplitude.
    t = np.arange(256 * 10) / 256
    naive = np.sin(2 * np.pi * 80 * t)[::2]
    amp, _ = _tone_fit(naive, 48.0, FS_OUT, slice(None))
    assert amp > 0.99


@pytest.mark.parametrize("fs", [256, 200, 100, 512, 250])
def test_passband_tone_keeps_amplitude_and_phase(fs):
    t = np.arange(int(fs * 60)) / fs
    y = resample(np.sin(2 * np.pi * 10 * t + 0.3), fs)
    assert y.dtype == np.float32 and len(y) == 60 * FS_OUT
    amp, phase = _tone_fit(y, 10.0, FS_OUT, MIDDLE)
    _, phase_in = _tone_fit(np.sin(2 * np.pi * 10 * t + 0.3), 10.0, fs, slice(None))
    assert abs(amp - 1) < 0.01
    assert abs(phase - phase_in) < 1.0  # degrees


@pytest.mark.parametrize("fs", [256, 200, 100])
def test_zero_phase_broadband(fs):
    # A band-limited multi-tone signal known at every instant: the resampled signal must match it
    # at the output sample times, with the cross-correlation peak at lag 0.
    rng = np.random.default_rng(1)
    freqs = rng.uniform(0.3, 30, 25)
    phases = rng.uniform(0, 2 * np.pi, 25)

    def s(t):
        return np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]).sum(0)

    x = s(np.arange(fs * 60) / fs)
    y = resample(x, fs).astype(np.float64)
    ref = s(np.arange(60 * FS_OUT) / FS_OUT)
    ym, rm = y[MIDDLE], ref[MIDDLE]
    lags = np.arange(-5, 6)
    xc = [np.dot(ym[10:-10], rm[10 + k:len(rm) - 10 + k]) for k in lags]
    assert lags[int(np.argmax(xc))] == 0
    assert np.max(np.abs(ym - rm)) < 0.02 * np.max(np.abs(rm))


def test_upsampling_slow_channel_exact_length():
    for duration in (300, 37, 2):
        x = 95 + np.sin(2 * np.pi * np.arange(duration) / 40.0)
        y = resample(x, 1.0)
        assert len(y) == duration * FS_OUT
    # And the values follow the slow trace.
    t_in = np.arange(300.0)
    y = resample(95 + np.sin(2 * np.pi * t_in / 40), 1.0)
    t_out = np.arange(300 * FS_OUT) / FS_OUT
    ref = 95 + np.sin(2 * np.pi * t_out / 40)
    assert np.max(np.abs(y - ref)[5 * FS_OUT:-5 * FS_OUT]) < 0.1


@pytest.mark.parametrize("fs, n_in", [(256, 256 * 30), (200, 200 * 30 + 1), (100, 3001), (1, 31)])
def test_resample_honours_n_out(fs, n_in):
    y = resample(np.random.default_rng(0).standard_normal(n_in), fs, n_out=30 * FS_OUT)
    assert len(y) == 30 * FS_OUT


def test_resample_rejects_bad_input():
    with pytest.raises(SignalError):
        resample(np.zeros((2, 10)), 100)
    with pytest.raises(SignalError):
        resample(np.zeros(0), 100)
    with pytest.raises(SignalError, match="sampling rate"):
        resample(np.zeros(100), 0)
    with pytest.raises(SignalError, match="sampling rate"):
        resample(np.zeros(100), float("nan"))


def _sos(fs):
    return signal.butter(8, 0.7 * 64, btype="low", fs=fs, output="sos")


def test_blocked_lowpass_equals_sosfiltfilt_long():
    rng = np.random.default_rng(2)
    x = (30 * rng.standard_normal(1_500_000)).astype(np.float32)  # ~1.6 h at 256 Hz
    sos = _sos(256)
    ref = signal.sosfiltfilt(sos, x.astype(np.float64))
    y = zero_phase_lowpass(x, sos)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - ref)) < 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("n", [30, 4096, 4097, 10_001])
@pytest.mark.parametrize("block", [1000, 4096])
@pytest.mark.parametrize("step", [1, 2, 4, 3])
def test_blocked_lowpass_block_edges_and_step(n, block, step):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    sos = _sos(512)
    ref = signal.sosfiltfilt(sos, x.astype(np.float64))[::step]
    y = zero_phase_lowpass(x, sos, block=block, step=step)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-5 * np.max(np.abs(ref)), rtol=0)


# --- robust z-score -----------------------------------------------------------------------------

def test_robust_zscore_ignores_spikes():
    rng = np.random.default_rng(3)
    x = 10 + 4 * rng.standard_normal(20_000)
    z0, c0, s0 = robust_zscore(x.copy())
    spiky = x.copy()
    spiky[rng.choice(len(x), 6, replace=False)] = 1e5
    z1, c1, s1 = robust_zscore(spiky.copy())
    assert abs(c0 - 10) < 0.1 and abs(s0 - 4) < 0.1
    assert abs(c1 - c0) < 0.01 and abs(s1 / s0 - 1) < 0.01
    # Mean and standard deviation would have moved a lot.
    assert abs(spiky.mean() - x.mean()) > 20 and spiky.std() / x.std() > 10
    assert z1.dtype == np.float32 and np.max(np.abs(z1)) == 20.0  # spikes clipped
    np.testing.assert_allclose(np.median(z0), 0, atol=1e-3)
    np.testing.assert_allclose(np.subtract(*np.percentile(z0, [75, 25])), 1.349, rtol=1e-4)


def test_robust_zscore_clip_option():
    x = np.r_[np.random.default_rng(0).standard_normal(1000), 1e4]
    z, _, _ = robust_zscore(x, clip=None)
    assert z.max() > 1000
    z, _, _ = robust_zscore(x, clip=5)
    assert z.max() == 5


def test_robust_zscore_flat_and_nonfinite():
    with pytest.raises(SignalError, match="flat"):
        robust_zscore(np.full(1000, 3.5))
    with pytest.raises(SignalError, match="flat"):
        robust_zscore(np.zeros(1000, dtype=np.float32))
    x = np.random.default_rng(0).standard_normal(1000)
    x[10] = np.nan
    with pytest.raises(SignalError, match="1 non-finite"):
        robust_zscore(x)
    x[10], x[20] = np.inf, -np.inf
    with pytest.raises(SignalError, match="2 non-finite"):
        robust_zscore(x)
    x[20] = np.nan
    with pytest.raises(SignalError, match="non-finite"):
        preprocess_signal(x, 256)


def test_robust_zscore_mostly_flat_with_events_uses_spread():
    # IQR 0 (most samples equal) but the signal is not flat: fall back to the standard deviation.
    x = np.zeros(1000)
    x[:100] = 1.0
    z, c, s = robust_zscore(x)
    assert c == 0 and s == pytest.approx(np.std(x))


# --- real Sleep-EDF ----------------------------------------------------------------------------

def test_real_preprocess(real_data, tmp_path):
    run = tmp_path / "run"
    batch = preprocess_directory(real_data, run)
    assert batch.summary == "1 ok, 0 failed"
    (res,) = batch.results
    rid = "SC4001E0-PSG_first300s"
    assert res.record_id == rid and res.status == "ok"
    assert res.channels == {"BAS": ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"],
                            "RESP": ["Resp oro-nasal"], "EMG": ["EMG submental"]}
    assert res.unplaced == ["Temp rectal", "Event marker"]
    assert res.dropped == {}
    (warning,) = [w for w in res.warnings if "hypnogram" in w]
    assert "2880 epochs" in warning and "trimmed 2870 epochs (86100 s)" in warning

    reader = RunDir(run).store().open(rid)
    assert reader.sample_rate == 128.0
    assert reader.n_samples == 38400 and reader.duration_s == 300.0
    assert reader.channels == {"BAS": sorted(["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"]),
                               "EMG": ["EMG submental"], "RESP": ["Resp oro-nasal"]}
    assert reader.attrs["unplaced_channels"] == ["Temp rectal", "Event marker"]
    with h5py.File(run / "hdf5" / f"{rid}.h5", "r") as f:
        for mod, names in reader.channels.items():
            for name in names:
                ds = f[rid][mod][name]
                assert ds.shape == (38400,)
                assert ds.attrs["sample_rate"] == 128.0
                expected = 1.0 if mod in ("EMG", "RESP") else 100.0
                assert ds.attrs["original_sample_rate"] == expected

    df = pd.read_csv(run / "labels" / f"{rid}.csv")
    assert list(df.columns) == ["Start", "Stop", "StageName", "StageNumber"]
    assert len(df) == 10
    assert df["Start"].tolist() == [30.0 * i for i in range(10)]
    assert df["Stop"].tolist() == [30.0 * (i + 1) for i in range(10)]
    assert set(df["StageName"]) == {"W"} and set(df["StageNumber"]) == {0}
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["stages"]["preprocess"]["summary"] == "1 ok, 0 failed"


def test_real_stored_eeg_matches_independent_resampling(real_data, tmp_path):
    preprocess_record(real_data / REAL_PSG, tmp_path)
    reader = RecordReader(tmp_path / "hdf5" / "SC4001E0-PSG_first300s.h5")
    stored = reader.read(channels={"BAS": ["EEG Fpz-Cz"]})["BAS"][0].astype(np.float64)
    x = read_edf(real_data / REAL_PSG).get_data("EEG Fpz-Cz", dtype=np.float64)
    ref = signal.resample(x, 38400)  # FFT resampling: an independent method
    q1, med, q3 = np.percentile(ref, [25, 50, 75])
    ref = np.clip((ref - med) / ((q3 - q1) / 1.349), -20, 20)
    mid = slice(1000, -1000)
    assert np.corrcoef(stored[mid], ref[mid])[0, 1] > 0.999
    assert np.median(np.abs(stored[mid] - ref[mid])) < 0.02


def test_real_label_mismatch_raise(real_data, tmp_path):
    config = PreprocessConfig(on_label_mismatch="raise")
    with pytest.raises(LabelError) as info:
        preprocess_record(real_data / REAL_PSG, tmp_path, config=config,
                          label_files={"stages": real_data / REAL_HYPNOGRAM})
    msg = str(info.value)
    assert "SC4001E0-PSG_first300s" in msg and "2880 epochs" in msg and "300 s" in msg
    assert not list(tmp_path.rglob("*.h5")) and not list(tmp_path.rglob("*.csv"))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    batch = preprocess_directory(real_data, tmp_path / "run", config=config)
    assert batch.summary == "0 ok, 1 failed"
    assert "2880 epochs" in batch.results[0].reason


# --- labels through preprocessing ---------------------------------------------------------------

def test_labels_and_events_csv_survive(tmp_path, make_edf):
    data, lab = tmp_path / "in", tmp_path / "labels"
    make_edf(data / "rec.edf", SMALL_CHANNELS, duration=150)
    stages = L.Hypnogram([0, 1, 2, 3, 4])
    lab.mkdir()
    stages.to_csv(lab / "rec.csv")
    events = pd.DataFrame({"onset": [12.5, 40.0, 99.75], "duration": [10.25, 3.0, 15.0],
                           "type": ["apnea", "arousal", "hypopnea"]})
    events.to_csv(lab / "rec.events.csv", index=False)
    batch = preprocess_directory(data, tmp_path / "run", labels_dir=lab)
    assert batch.summary == "1 ok, 0 failed" and batch.results[0].warnings == []
    out = tmp_path / "run" / "labels"
    assert (out / "rec.csv").read_bytes() == (lab / "rec.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(out / "rec.events.csv"), events)
    np.testing.assert_array_equal(L.read_stages(out / "rec.csv").stages, stages.stages)


def test_labels_beside_recordings_are_found(tmp_path, make_edf):
    make_edf(tmp_path / "in" / "rec-PSG.edf", SMALL_CHANNELS, duration=60)
    (tmp_path / "in" / "rec.txt").write_text("N2\nREM\n")
    batch = preprocess_directory(tmp_path / "in", tmp_path / "run")
    assert [r.record_id for r in batch.results] == ["rec"]
    out = pd.read_csv(tmp_path / "run" / "labels" / "rec.csv")
    assert out["StageName"].tolist() == ["N2", "REM"]


def test_edf_plus_annotations_survive(tmp_path, make_edf):
    anns = [Annotation(0, 30, "Sleep stage W"), Annotation(30, 60, "Sleep stage 2"),
            Annotation(90, 30, "Sleep stage R"), Annotation(12.5, 10.25, "Obstructive Apnea"),
            Annotation(47.0, 3.5, "Arousal"), Annotation(70.0, 0.0, "Lights on"),
            Annotation(100.0, 12.0, "Hypopnea")]
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=120, annotations=anns)
    batch = preprocess_directory(tmp_path / "in", tmp_path / "run")
    assert batch.summary == "1 ok, 0 failed"
    out = tmp_path / "run" / "labels"
    st = pd.read_csv(out / "rec.csv")
    assert st["StageName"].tolist() == ["W", "N2", "N2", "REM"]
    assert st["StageNumber"].tolist() == [0, 2, 2, 4]
    ev = pd.read_csv(out / "rec.events.csv")
    assert ev.to_dict("list") == {"onset": [12.5, 47.0, 100.0], "duration": [10.25, 3.5, 12.0],
                                  "type": ["apnea", "arousal", "hypopnea"]}


@pytest.mark.parametrize("n_epochs, word, final", [(7, "trimmed 2 epochs (60 s)", [0, 1, 2, 3, 4]),
                                                   (3, "padded 2 unscored", [0, 1, 2, -1, -1])])
def test_mismatched_label_file_trim_pad(tmp_path, make_edf, n_epochs, word, final):
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=150)
    L.Hypnogram(([0, 1, 2, 3, 4, 4, 4])[:n_epochs]).to_csv(tmp_path / "in" / "rec.csv")
    batch = preprocess_directory(tmp_path / "in", tmp_path / "run")
    (res,) = batch.results
    assert res.status == "ok"
    assert any(word in w and "rec" in w for w in res.warnings), res.warnings
    out = L.read_stages(tmp_path / "run" / "labels" / "rec.csv")
    np.testing.assert_array_equal(out.stages, final)


# --- bad inputs in a batch ----------------------------------------------------------------------

def _by_file(batch):
    return {Path(r.source).name if r.source else r.record_id: r for r in batch.results}


def test_bad_inputs_reported_batch_goes_on(tmp_path, make_edf, temporaries):
    data, lab = tmp_path / "in", tmp_path / "labels"
    expect = build_bad_batch(data)
    lab.mkdir()
    # Label problems.
    make_edf(data / "badlabel.edf", SMALL_CHANNELS, duration=60, seed=11)
    (lab / "badlabel.csv").write_text("Start,Stop,StageName,StageNumber\n0,30,W,0\n30,60,Deep,7\n")
    expect["badlabel.edf"] = "row 3"
    # A duplicate record id (recursive search finds both).
    make_edf(data / "sub" / "good1.edf", SMALL_CHANNELS, duration=30, seed=12)
    expect["sub/good1.edf"] = "already used by"
    # One flat channel among good ones: dropped and reported, record ok.
    n = 60 * 256
    make_edf(data / "oneflat.edf", SMALL_CHANNELS, duration=60, seed=13,
             signals={"EOG E1-M2": np.full(n, 0.0)})
    expect["oneflat.edf"] = ""

    batch = preprocess_directory(data, tmp_path / "run", labels_dir=lab)
    results = {Path(r.source).relative_to(data).as_posix(): r for r in batch.results}
    assert set(results) == set(expect)
    for name, why in expect.items():
        r = results[name]
        if why:
            assert r.status == "failed", name
            # The file at fault is named: the label file for label errors, else the recording.
            named = "badlabel.csv" if name == "badlabel.edf" else Path(name).name
            assert named in r.reason, (name, r.reason)
            assert r.source == str(data / name)
            assert why in r.reason, (name, r.reason)
        else:
            assert r.status == "ok", (name, r.reason)
    n_bad = sum(bool(v) for v in expect.values())
    assert batch.summary == f"{len(expect) - n_bad} ok, {n_bad} failed"

    # Specific messages.
    assert "--allow-truncated" in results["truncated.edf"].reason
    assert "Deep" in results["badlabel.edf"].reason and "badlabel.csv" in results["badlabel.edf"].reason
    flat = results["oneflat.edf"]
    assert list(flat.dropped) == ["EOG E1-M2"] and "flat" in flat.dropped["EOG E1-M2"]
    assert flat.channels == {"BAS": ["EEG C3-M2"], "RESP": ["Airflow", "SpO2"]}
    assert RecordReader(tmp_path / "run" / "hdf5" / "oneflat.h5").attrs["dropped_channels"] == \
        flat.dropped

    # Nothing half-written: only good records have outputs, no temporaries anywhere.
    assert temporaries(tmp_path / "run") == []
    h5 = sorted(p.name for p in (tmp_path / "run" / "hdf5").iterdir())
    assert h5 == ["good1.h5", "good2.h5", "index.h5", "oneflat.h5"]
    for p in (tmp_path / "run" / "hdf5").glob("*.h5"):
        assert p.name == "index.h5" or file_is_complete(p)
    assert not (tmp_path / "run" / "labels" / "badlabel.csv").exists()
    with h5py.File(tmp_path / "run" / "hdf5" / "index.h5", "r") as f:
        assert sorted(f) == ["good1", "good2", "oneflat"]
    info = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]["preprocess"]
    assert info["summary"] == batch.summary
    assert {Path(r["source"]).name for r in info["records"] if r["status"] == "failed"} >= {
        "truncated.edf", "notes.edf", "empty.edf"}


@pytest.mark.parametrize("name, error", [
    ("truncated.edf", "EDFError"), ("header_cut.edf", "EDFError"), ("corrupt_header.edf", "EDFError"),
    ("notes.edf", "EDFError"), ("empty.edf", "EDFError"), ("discontinuous.edf", "EDFError"),
    ("unknown_channels.edf", "ChannelError"), ("all_flat.edf", "SignalError"),
])
def test_bad_record_error_types(tmp_path, name, error, temporaries):
    import sleepfm.exceptions as E

    expect = build_bad_batch(tmp_path / "in")
    with pytest.raises(getattr(E, error), match=re.escape(expect[name])) as info:
        preprocess_record(tmp_path / "in" / name, tmp_path / "run")
    assert name in str(info.value)
    assert not list(tmp_path.glob("run/hdf5/*.h5")) and temporaries(tmp_path / "run") == []


def test_bad_label_row_error_type(tmp_path, make_edf):
    p, _ = make_edf(tmp_path / "rec.edf", SMALL_CHANNELS, duration=60)
    (tmp_path / "rec.csv").write_text("Start,Stop,StageName,StageNumber\n0,30,W,0\n30,60,Deep,7\n")
    with pytest.raises(LabelError, match=r"rec\.csv: row 3 .*Deep"):
        preprocess_record(p, tmp_path / "run", label_files={"stages": tmp_path / "rec.csv"})
    assert not (tmp_path / "run" / "hdf5" / "rec.h5").exists()


def test_truncated_allowed_succeeds_with_warning(tmp_path, make_edf, edf_damage):
    p, data = make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=30)
    ns = len(SMALL_CHANNELS)
    record_bytes = 2 * sum(int(fs) for _, fs in SMALL_CHANNELS)
    edf_damage.cut(p, 256 * (ns + 1) + 10 * record_bytes + record_bytes // 2)
    batch = preprocess_directory(tmp_path / "in", tmp_path / "run",
                                 config=PreprocessConfig(on_truncated="warn"))
    (res,) = batch.results
    assert res.status == "ok"
    assert any("truncated" in w and "using 10" in w for w in res.warnings), res.warnings
    reader = RecordReader(tmp_path / "run" / "hdf5" / "rec.h5")
    assert reader.n_samples == 10 * FS_OUT


def test_preprocess_record_raises_named_errors(tmp_path, make_edf):
    p, _ = make_edf(tmp_path / "only_unknown.edf", [("Position", 1), ("Light", 1)], duration=10)
    from sleepfm.exceptions import ChannelError

    with pytest.raises(ChannelError, match=r"only_unknown\.edf.*no channel could be placed.*"
                                           r"Position.*--channel-map"):
        preprocess_record(p, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").rglob("*.h5"))


def test_no_recordings_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(SleepFMError, match="no EDF/BDF files"):
        preprocess_directory(tmp_path / "in", tmp_path / "run")
    with pytest.raises(SleepFMError, match="not found"):
        preprocess_directory(tmp_path / "absent", tmp_path / "run")


@pytest.mark.parametrize("fs, value", [(256, 0.0), (256, 12.5), (512, -3.0)])
def test_flat_channel_dropped(tmp_path, make_edf, fs, value):
    chans = [("EEG C3-M2", 256), ("EOG E1-M2", fs)]
    make_edf(tmp_path / "in" / "rec.edf", chans, duration=30,
             signals={"EOG E1-M2": np.full(30 * fs, value)})
    (res,) = preprocess_directory(tmp_path / "in", tmp_path / "run").results
    assert res.status == "ok"
    assert list(res.dropped) == ["EOG E1-M2"]
    assert res.channels == {"BAS": ["EEG C3-M2"]}


@pytest.mark.parametrize("name, fs, value", [("EOG E1-M2", 100, 37.2), ("SpO2", 1, 95.0),
                                             ("Airflow", 200, -50.3)])
def test_flat_channel_dropped_any_rate(tmp_path, make_edf, name, fs, value):
    chans = [("EEG C3-M2", 256), (name, fs)]
    make_edf(tmp_path / "in" / "rec.edf", chans, duration=30,
             signals={name: np.full(int(30 * fs), value)})
    (res,) = preprocess_directory(tmp_path / "in", tmp_path / "run").results
    assert res.status == "ok"
    assert list(res.dropped) == [name]


@pytest.mark.parametrize("threads", [2, 3])
def test_channels_in_flight_keep_order_and_values(tmp_path, make_edf, threads):
    """Workers pick the next channel as soon as they are free; the channels still come out in
    order, each as one thread computes it, the unusable one as its error."""
    chans = [("EEG C3-M2", 256), ("SpO2", 1), ("EOG E1-M2", 200), ("EMG Chin", 512),
             ("Airflow", 32), ("ECG", 256)]
    path, _ = make_edf(tmp_path / "rec.edf", chans, duration=60,
                    signals={"EMG Chin": np.full(60 * 512, 4.0)})
    config = PreprocessConfig()
    rec, _, n_out = P.open_recording(path, config, P.channel_map_of(config))
    names = [n for n, _ in chans]
    alone = list(P.preprocess_channels(rec, names, config, n_out, threads=1))
    pooled = list(P.preprocess_channels(rec, names, config, n_out, threads=threads))
    assert [n for n, _ in pooled] == [n for n, _ in alone] == names
    for (name, a), (_, b) in zip(alone, pooled):
        if name == "EMG Chin":
            assert isinstance(a, SignalError) and isinstance(b, SignalError)
        else:
            np.testing.assert_array_equal(a, b)


# --- resume -------------------------------------------------------------------------------------

def _four_records(folder, make_edf):
    for i in range(4):
        make_edf(folder / f"r{i}.edf", SMALL_CHANNELS, duration=60, seed=100 + i)
        L.Hypnogram([i % 5, (i + 1) % 5]).to_csv(folder / f"r{i}.csv")


@pytest.fixture
def four(tmp_path, make_edf):
    data = tmp_path / "in"
    _four_records(data, make_edf)
    ref = tmp_path / "reference"
    assert preprocess_directory(data, ref).summary == "4 ok, 0 failed"
    return data, ref


def test_resume_after_interrupt(four, tmp_path, monkeypatch, snapshot, temporaries):
    data, ref = four
    run = tmp_path / "run"
    calls = {"n": 0}
    real = P.preprocess_signal
    per_record = len(SMALL_CHANNELS)

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * per_record + 2:  # in the middle of the third record
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "preprocess_signal", interrupting)
    with pytest.raises(KeyboardInterrupt):
        preprocess_directory(data, run)
    monkeypatch.setattr(P, "preprocess_signal", real)
    assert sorted(p.name for p in (run / "hdf5").iterdir()) == ["r0.h5", "r1.h5"]
    assert temporaries(run) == []

    batch = preprocess_directory(data, run)
    assert {r.record_id: r.status for r in batch.results} == {
        "r0": "skipped", "r1": "skipped", "r2": "ok", "r3": "ok"}
    assert batch.summary == "4 ok (2 already done), 0 failed"
    assert snapshot(run) == snapshot(ref)


def test_resume_removes_stale_temporaries(four, tmp_path, snapshot, temporaries):
    data, ref = four
    run = tmp_path / "run"
    preprocess_directory(data, run)
    (run / "hdf5" / "r1.h5").unlink()
    (run / "hdf5" / ".r1.h5.k3j2x9.tmp").write_bytes(b"\x89HDF\r\n half a file")
    (run / "labels" / ".r3.csv.abcd.tmp").write_text("Start,Stop\n")
    (run / "hdf5" / "r2.h5").write_bytes((run / "hdf5" / "r2.h5").read_bytes()[:2000])  # damaged
    batch = preprocess_directory(data, run)
    assert {r.record_id: r.status for r in batch.results} == {
        "r0": "skipped", "r1": "ok", "r2": "ok", "r3": "skipped"}
    assert temporaries(run) == []
    assert snapshot(run) == snapshot(ref)


def test_changed_config_or_input_reprocesses(four, tmp_path, make_edf):
    data, ref = four
    batch = preprocess_directory(data, ref, config=PreprocessConfig(dtype="float32"))
    assert [r.status for r in batch.results] == ["ok"] * 4
    reader = RecordReader(ref / "hdf5" / "r0.h5")
    assert reader.attrs["config"]["dtype"] == "float32"
    with h5py.File(ref / "hdf5" / "r0.h5", "r") as f:
        assert f["r0/BAS/EEG C3-M2"].dtype == np.float32
    # Same settings again: nothing to do.
    batch = preprocess_directory(data, ref, config=PreprocessConfig(dtype="float32"))
    assert [r.status for r in batch.results] == ["skipped"] * 4
    # A changed recording is redone.
    make_edf(data / "r2.edf", SMALL_CHANNELS, duration=60, seed=999)
    batch = preprocess_directory(data, ref, config=PreprocessConfig(dtype="float32"))
    assert [r.status for r in batch.results] == ["skipped", "skipped", "ok", "skipped"]


def test_resume_after_interrupt_while_writing_labels(four, tmp_path, monkeypatch, snapshot):
    data, ref = four
    run = tmp_path / "run"
    real = P._write_labels

    def interrupting(run_dir, record_id, hyp, events):
        if record_id == "r1":
            raise KeyboardInterrupt
        return real(run_dir, record_id, hyp, events)

    monkeypatch.setattr(P, "_write_labels", interrupting)
    with pytest.raises(KeyboardInterrupt):
        preprocess_directory(data, run)
    monkeypatch.setattr(P, "_write_labels", real)
    preprocess_directory(data, run)
    assert (run / "labels" / "r1.csv").is_file()
    assert snapshot(run) == snapshot(ref)


def test_changed_label_file_is_picked_up(four):
    data, ref = four
    L.Hypnogram([4, 4]).to_csv(data / "r0.csv")
    preprocess_directory(data, ref)
    np.testing.assert_array_equal(L.read_stages(ref / "labels" / "r0.csv").stages, [4, 4])


def test_orphan_label_file_reported(tmp_path, make_edf, caplog):
    make_edf(tmp_path / "in" / "rec.edf", SMALL_CHANNELS, duration=30)
    (tmp_path / "labels").mkdir()
    L.Hypnogram([0]).to_csv(tmp_path / "labels" / "rec_typo.csv")
    with caplog.at_level("WARNING", logger="sleepfm"):
        batch = preprocess_directory(tmp_path / "in", tmp_path / "run", labels_dir=tmp_path / "labels")
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    run_json["stages"]["preprocess"].pop("command", None)  # the test's own command line
    reported = caplog.text + json.dumps([r.__dict__ for r in batch.results]) + json.dumps(run_json)
    assert "rec_typo.csv" in reported


# --- de-identification ---------------------------------------------------------------------------

SECRETS = [b"John", b"Doe", b"PAT123", b"01-JAN-1970", b"1970", b"01.01.70"]


def test_deidentified_outputs(tmp_path, make_edf):
    data = tmp_path / "in"
    anns = [(0.0, 30.0, "Sleep stage W"), (30.0, 30.0, "Sleep stage 2"), (40.0, 10.0, "Apnea")]
    for i, fmt in enumerate(["edf", "bdf"]):
        p, _ = make_edf(data / f"rec{i}.{fmt}", SMALL_CHANNELS, duration=60, seed=i, fmt=fmt,
                        patient_id="PAT123 M 01-JAN-1970 John_Doe", annotations=anns,
                        start=datetime(1970, 1, 1, 23, 15, 0))
        head = p.read_bytes()[:256]
        assert b"John_Doe" in head and b"01-JAN-1970" in head  # the input does hold them
    batch = preprocess_directory(data, tmp_path / "run")
    assert batch.summary == "2 ok, 0 failed"
    assert RecordReader(tmp_path / "run" / "hdf5" / "rec0.h5").attrs["start_time"] == "23:15:00"
    digests = [sha256_file(p) for p in sorted(data.iterdir())]
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != ".lock"]
    assert {p.suffix for p in files} == {".h5", ".csv", ".json"}
    for p in files:
        raw = p.read_bytes()
        # Paths and the command line are the test's own, not the patient's.
        # (and checksums are hex digests of the inputs, not text from them).
        for own in (str(tmp_path), " ".join(sys.argv), *digests):
            raw = raw.replace(own.encode(), b"")
        for secret in SECRETS:
            assert secret not in raw, (p.name, secret)
    rec = read_edf(data / "rec0.edf")
    assert not any(s.decode() in repr(vars(rec)) for s in SECRETS)


# --- the store ----------------------------------------------------------------------------------

@pytest.fixture
def stored(tmp_path, make_edf):
    chans = DEFAULT_CHANNELS + [("C3/M2", 256), ("Position", 1)]
    p, data = make_edf(tmp_path / "in" / "rec.edf", chans, duration=120)
    run = tmp_path / "run"
    res = preprocess_record(p, run)
    build_index(run / "hdf5")
    return run, res, p


def test_record_contents(stored):
    run, res, edf = stored
    assert res.unplaced == ["Position"]
    reader = RunDir(run).store().open("rec")
    assert reader.record_id == "rec"
    assert reader.channels == {"BAS": ["C3/M2", "EEG C3-M2", "EOG E1-M2"], "ECG": ["ECG"],
                               "EMG": ["EMG chin"], "RESP": ["Airflow", "SpO2"]}
    assert reader.n_samples == 120 * FS_OUT and reader.duration_s == 120
    assert reader.attrs["source_file"] == "rec.edf"
    assert reader.attrs["unplaced_channels"] == ["Position"]
    assert reader.attrs["config"] == json.loads(PreprocessConfig().key())
    a = reader.channel_attrs[("RESP", "SpO2")]
    assert a["original_sample_rate"] == 1.0 and a["kind"] == "spo2" and a["sample_rate"] == 128.0
    assert repr(reader) == "<RecordReader rec | 0.03 h, BAS 3, ECG 1, EMG 1, RESP 2>"
    # Stored values are the pipeline's output, within float16 precision.
    rec = read_edf(edf)
    full = reader.read()
    for name in ("EEG C3-M2", "SpO2"):
        mod = "BAS" if name.startswith("EEG") else "RESP"
        expected = preprocess_signal(rec.get_data(name), rec.sample_rate(name), n_out=120 * FS_OUT)
        got = full[mod][reader.channels[mod].index(name)]
        np.testing.assert_allclose(got, expected, atol=2e-2, rtol=2e-3)


@pytest.mark.parametrize("start, stop", [(0, 120), (0, 30), (10.5, 42.25), (119, None), (60, 60.5)])
def test_read_window_matches_full_read(stored, start, stop):
    run, _, _ = stored
    reader = RecordReader(run / "hdf5" / "rec.h5")
    full = reader.read()
    win = reader.read(start, stop)
    a = int(round(start * FS_OUT))
    b = full["BAS"].shape[1] if stop is None else int(round(stop * FS_OUT))
    assert list(win) == list(full) == ["BAS", "ECG", "EMG", "RESP"]
    for mod in full:
        assert win[mod].dtype == np.float32
        np.testing.assert_array_equal(win[mod], full[mod][:, a:b])
    sub = reader.read(start, stop, modalities=["RESP", "EMG"])
    assert sorted(sub) == ["EMG", "RESP"]
    np.testing.assert_array_equal(sub["RESP"], full["RESP"][:, a:b])
    pick = reader.read(start, stop, channels={"BAS": ["EOG E1-M2", "C3/M2"]})
    assert list(pick) == ["BAS"]
    order = reader.channels["BAS"]
    np.testing.assert_array_equal(pick["BAS"][0], full["BAS"][order.index("EOG E1-M2"), a:b])
    np.testing.assert_array_equal(pick["BAS"][1], full["BAS"][order.index("C3/M2"), a:b])
    reader.close()


@pytest.mark.parametrize("start, stop", [(-1, 10), (0, 121), (50, 50), (60, 30), (120, None),
                                         (200, None)])
def test_read_window_out_of_range(stored, start, stop):
    run, _, _ = stored
    with RecordReader(run / "hdf5" / "rec.h5") as reader:
        with pytest.raises(StoreError, match=r"rec: window .* outside the record \(0–120 s\)"):
            reader.read(start, stop)


def test_reader_pickles(stored):
    run, _, _ = stored
    reader = RecordReader(run / "hdf5" / "rec.h5")
    before = reader.read(5, 15)  # opens the file
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._file is None and clone.channels == reader.channels
    after = clone.read(5, 15)
    for mod in before:
        np.testing.assert_array_equal(after[mod], before[mod])
    clone.close()
    reader.close()


def test_index_links_resolve_from_anywhere(tmp_path, make_edf, monkeypatch):
    data = tmp_path / "in"
    for i in range(3):
        make_edf(data / f"r{i}.edf", SMALL_CHANNELS, duration=30, seed=i)
    run = tmp_path / "run"
    preprocess_directory(data, run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with h5py.File(run / "hdf5" / "index.h5", "r") as f:
        assert sorted(f) == ["r0", "r1", "r2"]
        for rid in ("r0", "r1", "r2"):
            with h5py.File(run / "hdf5" / f"{rid}.h5", "r") as g:
                np.testing.assert_array_equal(f[rid]["BAS"]["EEG C3-M2"][()],
                                              g[rid]["BAS"]["EEG C3-M2"][()])
                assert f[rid].attrs["n_samples"] == 30 * FS_OUT


def test_store_errors(tmp_path):
    with pytest.raises(StoreError, match="sleepfm preprocess"):
        RunDir(tmp_path / "nothing").store()
    with pytest.raises(StoreError, match="sleepfm preprocess"):
        Store(tmp_path / "nothing" / "hdf5")
    with pytest.raises(StoreError, match="not found"):
        RecordReader(tmp_path / "nothing.h5")


def test_store_lists_records(tmp_path, make_edf):
    for i in range(2):
        make_edf(tmp_path / "in" / f"r{i}.edf", SMALL_CHANNELS, duration=30, seed=i)
    preprocess_directory(tmp_path / "in", tmp_path / "run")
    store = RunDir(tmp_path / "run").store()
    assert store.record_ids == ["r0", "r1"] and len(store) == 2
    assert [r.record_id for r in store] == ["r0", "r1"]
    assert os.fspath(store.root) == os.fspath(tmp_path / "run" / "hdf5")


# --- channel names in the store: one dataset per name, whatever the name holds -------------------

def test_dataset_names_are_injective():
    from sleepfm.io.store import dataset_name

    names = ["C3/M2", "C3_M2", "C3%2FM2", "C3%M2", "C3%252FM2", ".", "..", "%2E", "%", "/", "//",
             "a\x00b", "a%00b", "EEG\tC3", "EEG C3", "é中"]
    mapped = [dataset_name(n) for n in names]
    assert len(set(mapped)) == len(names)
    assert not any("/" in m or "\x00" in m or m in ("", ".") for m in mapped)
    # Ordinary names keep their dataset name (stores written before stay readable as they are).
    for name in ("EEG Fpz-Cz", "C3_M2", "SpO2", "EOG E1-M2", "..", "é中"):
        assert dataset_name(name) == name
    assert dataset_name("C3/M2") == "C3%2FM2" and dataset_name("50%") == "50%25"
    with pytest.raises(StoreError, match="channel name is empty"):
        dataset_name("")


def test_slash_and_underscore_channels_stored_apart(tmp_path, make_edf):
    # "C3/M2" used to be stored as "C3_M2": with both in one record the write failed with an HDF5
    # error and the record was lost. "EEG C3%2FM2" would collide with a naive percent-escape of
    # "EEG C3/M2".
    names = ["C3/M2", "C3_M2", "EEG C3/M2", "EEG C3%2FM2"]
    p, _ = make_edf(tmp_path / "in" / "slash.edf", [(n, 256) for n in names] + [("SpO2", 1)],
                       duration=60, seed=11)
    run = tmp_path / "run"
    res = preprocess_record(p, run)
    assert res.channels == {"BAS": names, "RESP": ["SpO2"]}
    reader = RunDir(run).store().open("slash")
    assert sorted(reader.channels["BAS"]) == sorted(names)
    rec = read_edf(p)
    order = names[::-1]
    picked = reader.read(channels={"BAS": order})["BAS"]
    for row, name in zip(picked, order):
        expected = preprocess_signal(rec.get_data(name), 256.0, n_out=60 * FS_OUT)
        np.testing.assert_allclose(row, expected, atol=2e-2, rtol=2e-3, err_msg=name)
    for a in range(len(names)):  # four different signals, not one read four times
        for b in range(a):
            assert not np.allclose(picked[a], picked[b], atol=0.1)
    full = reader.read()["BAS"]
    for name in names:
        np.testing.assert_array_equal(full[reader.channels["BAS"].index(name)],
                                      picked[order.index(name)])
    reader.close()
    with h5py.File(run / "hdf5" / "slash.h5", "r") as f:
        assert sorted(f["slash/BAS"]) == sorted(["C3%2FM2", "C3_M2", "EEG C3%2FM2",
                                                 "EEG C3%252FM2"])
        assert f["slash/BAS/C3%2FM2"].attrs["channel_name"] == "C3/M2"
        assert f["slash/BAS/EEG C3%252FM2"].attrs["channel_name"] == "EEG C3%2FM2"


def test_store_written_with_old_dataset_names_still_reads(stored):
    # Before names were escaped, "C3/M2" was stored as "C3_M2"; the reader finds datasets by their
    # channel_name attribute, not by recomputing the name.
    run, _, _ = stored
    path = run / "hdf5" / "rec.h5"
    before = RecordReader(path).read(channels={"BAS": ["C3/M2"]})["BAS"]
    with h5py.File(path, "a") as f:
        f["rec/BAS"].move("C3%2FM2", "C3_M2")
    reader = RecordReader(path)
    assert "C3/M2" in reader.channels["BAS"]
    np.testing.assert_array_equal(reader.read(channels={"BAS": ["C3/M2"]})["BAS"], before)
    reader.close()


def test_nul_byte_in_label_preprocesses(tmp_path, make_edf, edf_damage):
    from sleepfm.exceptions import DataWarning

    chans = [("EEG C3-M2", 256), ("EOG E1-M2", 256), ("SpO2", 1)]
    p, _ = make_edf(tmp_path / "in" / "nul.edf", chans, duration=60, seed=12)
    edf_damage.patch(p, edf_damage.signal_offset(len(chans), edf_damage.SIG_LABEL, 0),
                     "EEG\x00C3-M2", 16)
    run = tmp_path / "run"
    res = preprocess_record(p, run)
    assert res.channels == {"BAS": ["EEGC3-M2", "EOG E1-M2"], "RESP": ["SpO2"]}
    assert any("signal 1 ('EEG\\x00C3-M2') holds unprintable characters; renamed to 'EEGC3-M2'" in w
               for w in res.warnings)
    reader = RunDir(run).store().open("nul")
    assert "EEGC3-M2" in reader.channels["BAS"]
    with pytest.warns(DataWarning, match="renamed to 'EEGC3-M2'"):
        rec = read_edf(p)
    got = reader.read(channels={"BAS": ["EEGC3-M2"]})["BAS"][0]
    expected = preprocess_signal(rec.get_data("EEGC3-M2"), 256.0, n_out=60 * FS_OUT)
    np.testing.assert_allclose(got, expected, atol=2e-2, rtol=2e-3)
    reader.close()
    with h5py.File(run / "hdf5" / "nul.h5", "r") as f:
        assert "EEGC3-M2" in f["nul/BAS"]

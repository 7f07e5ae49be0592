"""YASA baselines: channel picks under missing-lead conditions, YASA's feature table and shipped
model on synthetic EDFs, the retrained YASA-features + LightGBM estimator, and length fitting."""
from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

yasa = pytest.importorskip("yasa")
pytest.importorskip("lightgbm")

from sklearn.base import clone  # noqa: E402
from sklearn.metrics import cohen_kappa_score  # noqa: E402

from sleepfm.exceptions import (ChannelError, DataWarning, InvalidParameterError,  # noqa: E402
                                LabelError, NotFittedError)
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night  # noqa: E402
from sleepfm.vocab import group_stages  # noqa: E402
from sleepfm.yasa_baseline import (YasaLightGBM, fit_length, pick_yasa_channels,  # noqa: E402
                                   yasa_features, yasa_predict_proba)

ROOT = Path(__file__).resolve().parents[1]
# 1-h clinical-montage nights: the first 4 train the LightGBM, the last 2 test both models.
SEEDS = (10, 11, 12, 13, 14, 15)
N_TRAIN = 4
# Measured on these nights (YASA 0.8.1): shipped model accuracy 0.77, kappa 0.67, against a
# majority-class rate of 0.35; 1-h nights hold little N3 and no REM, so YASA's within-night
# normalisation works from less than on a full night (accuracy ~0.9 on long nights).
SHIPPED_MIN_ACCURACY, SHIPPED_MIN_KAPPA = 0.65, 0.5
# Retrained: accuracy 0.99 on these nights; the margin covers LightGBM/platform differences.
RETRAINED_MIN_ACCURACY, RETRAINED_MIN_KAPPA = 0.85, 0.75


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """``[(night, edf_path)]`` of six 1-h synthetic nights written as EDF."""
    folder = tmp_path_factory.mktemp("yasa_nights")
    out = []
    for seed in SEEDS:
        night = generate_night(SyntheticConfig(duration_h=1.0, montage="clinical"), seed=seed)
        out.append((night, write_night(night, folder)["edf"]))
    return out


@pytest.fixture(scope="module")
def features(nights):
    return [yasa_features(edf) for _, edf in nights]


@pytest.fixture(scope="module")
def stages(nights):
    return [night.stages for night, _ in nights]


@pytest.fixture(scope="module")
def arousals(nights):
    """Binary per-epoch target: an arousal overlaps the epoch."""
    out = []
    for night, _ in nights:
        y = np.zeros(len(night.stages), dtype=np.int64)
        events = night.events[night.events["type"] == "arousal"]
        for onset, duration in zip(events["onset"], events["duration"]):
            y[int(onset // 30):int((onset + duration) // 30) + 1] = 1
        out.append(y[:len(night.stages)])
    return out


# --- channels ---------------------------------------------------------------------------------
CLINICAL = ["F4-M1", "C3-M2", "O1-M2", "C4-M1", "E1-M2", "E2-M1", "Leg L", "Chin", "ECG",
            "Airflow", "SpO2"]


def test_pick_prefers_c4_then_c3_then_any_eeg():
    assert pick_yasa_channels(CLINICAL) == {"eeg": "C4-M1", "eog": "E1-M2", "emg": "Chin"}
    assert pick_yasa_channels(["F4-M1", "C3-M2", "E2-M1"])["eeg"] == "C3-M2"
    assert pick_yasa_channels(["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "EMG submental"]) == {
        "eeg": "EEG Fpz-Cz", "eog": "EOG horizontal", "emg": "EMG submental"}


def test_pick_uses_chin_emg_never_leg_emg():
    assert pick_yasa_channels(["C4-M1", "Leg L", "Chin"])["emg"] == "Chin"
    assert pick_yasa_channels(["C4-M1", "Leg L", "Leg R"])["emg"] is None
    assert pick_yasa_channels(["C4-M1", "EMG"])["emg"] == "EMG"


def test_no_eeg_raises_channel_error_naming_the_record():
    with pytest.raises(ChannelError, match=r"night7\.edf: no EEG channel.*excluded.*not applicable"):
        pick_yasa_channels(CLINICAL, exclude_kinds=("eeg",), record="night7.edf")
    with pytest.raises(ChannelError, match="recognised as EEG"):
        pick_yasa_channels(["E1-M2", "Chin", "ECG"])


def test_no_eeg_on_an_edf_names_the_file(nights):
    night, edf = nights[0]
    with pytest.raises(ChannelError, match=f"{night.record_id}.edf: no EEG channel"):
        yasa_features(edf, exclude_kinds=("eeg",))
    with pytest.raises(ChannelError, match=f"{night.record_id}.edf"):
        yasa_predict_proba(edf, exclude_kinds="eeg")


def test_conditions_yasa_does_not_read_leave_its_input_unchanged():
    full = pick_yasa_channels(CLINICAL)
    assert pick_yasa_channels(CLINICAL, exclude_kinds=("ecg",)) == full
    assert pick_yasa_channels(CLINICAL, exclude_kinds=("resp", "spo2")) == full
    eeg_eog = pick_yasa_channels(CLINICAL, exclude_kinds=("emg", "ecg", "resp", "spo2"))
    assert eeg_eog == {"eeg": "C4-M1", "eog": "E1-M2", "emg": None}


def test_unknown_kind_is_refused():
    with pytest.raises(InvalidParameterError, match="'exclude_kinds'.*'eeg'"):
        pick_yasa_channels(CLINICAL, exclude_kinds=("brain",))


# --- YASA on EDF files ------------------------------------------------------------------------
def test_features_one_row_per_epoch_and_no_identity(nights, features):
    for (night, _), table in zip(nights, features):
        assert len(table) == len(night.stages)
        assert table.index.name == "epoch"
        assert table.attrs == {"record_id": night.record_id,
                               "yasa_channels": {"eeg": "C4-M1", "eog": "E1-M2", "emg": "Chin"}}
        assert {c.split("_")[0] for c in table.columns} >= {"eeg", "eog", "emg"}
        # The EDF header's identity (write_night puts one there) goes nowhere.
        text = repr(table.attrs) + " ".join(table.columns)
        assert "Synthetic" not in text and "1970" not in text
        assert not {"age", "male"} & set(table.columns)


def test_eeg_eog_only_drops_emg_features_and_still_stages(nights, features):
    _, edf = nights[-1]
    table = yasa_features(edf, exclude_kinds=("emg", "ecg", "resp"))
    assert table.attrs["yasa_channels"]["emg"] is None
    assert not any(c.startswith("emg_") for c in table.columns)
    assert len(table) == len(features[-1])
    proba = yasa_predict_proba(edf, exclude_kinds=("emg",))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def shipped(nights):
    return [yasa_predict_proba(edf) for _, edf in nights]


def test_shipped_model_probabilities(nights, shipped, stages):
    for (night, _), proba in zip(nights, shipped):
        assert proba.shape == (len(night.stages), 5)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        assert np.all(proba >= 0)
    truth = np.concatenate(stages[N_TRAIN:])
    pred = np.concatenate([p.argmax(axis=1) for p in shipped[N_TRAIN:]])
    majority = np.bincount(truth).max() / len(truth)
    accuracy = np.mean(pred == truth)
    assert accuracy >= SHIPPED_MIN_ACCURACY > majority + 0.2
    assert cohen_kappa_score(truth, pred) >= SHIPPED_MIN_KAPPA


def test_shipped_columns_are_in_aasm_order(nights, shipped):
    """The argmax of the reordered columns is YASA's own predicted stage (AASM codes)."""
    import mne

    _, edf = nights[N_TRAIN]
    raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hyp = yasa.SleepStaging(raw, eeg_name="C4-M1", eog_name="E1-M2", emg_name="Chin").predict()
    np.testing.assert_array_equal(shipped[N_TRAIN].argmax(axis=1), np.asarray(hyp.as_int()))


def test_shipped_model_fits_the_callers_epoch_count(nights, shipped):
    _, edf = nights[0]
    n = len(shipped[0])
    longer = yasa_predict_proba(edf, n_epochs=n + 1)
    assert longer.shape == (n + 1, 5)
    np.testing.assert_allclose(longer[:n], shipped[0])
    np.testing.assert_allclose(longer[n], 0.2)
    np.testing.assert_allclose(yasa_predict_proba(edf, n_epochs=n - 1), shipped[0][:n - 1])


def _benchmark_function(name: str):
    """One function of benchmarks/staging_compare.py, without importing the whole script."""
    path = ROOT / "benchmarks" / "staging_compare.py"
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": np, "Path": Path}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def test_benchmark_yasa_stages_uses_this_module(nights, shipped):
    yasa_stages = _benchmark_function("yasa_stages")
    _, edf = nights[0]
    n = len(shipped[0])
    out = yasa_stages(edf, n + 1)
    np.testing.assert_array_equal(out[:n], shipped[0].argmax(axis=1))
    assert out[n] == 2  # epochs past YASA's end are called N2, as before
    with pytest.warns(DataWarning, match="trimmed"):
        np.testing.assert_array_equal(yasa_stages(edf, n - 3), shipped[0].argmax(axis=1)[:n - 3])


# --- retrained: YASA features + LightGBM ---------------------------------------------------------
def test_retrained_model_beats_chance_on_held_out_nights(features, stages):
    model = YasaLightGBM(n_estimators=200, n_jobs=1).fit(features[:N_TRAIN], stages[:N_TRAIN])
    assert model is not None and model.n_features_in_ == features[0].shape[1]
    proba = model.predict_proba(features[N_TRAIN:])
    assert isinstance(proba, list) and len(proba) == len(SEEDS) - N_TRAIN
    for p, y in zip(proba, stages[N_TRAIN:]):
        assert p.shape == (len(y), 5)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    truth = np.concatenate(stages[N_TRAIN:])
    pred = np.concatenate(model.predict(features[N_TRAIN:]))
    assert np.mean(pred == truth) >= RETRAINED_MIN_ACCURACY
    assert cohen_kappa_score(truth, pred) >= RETRAINED_MIN_KAPPA
    assert model.score(features[N_TRAIN:], stages[N_TRAIN:]) == pytest.approx(np.mean(pred == truth))
    # One night in, one array out.
    single = model.predict_proba(features[-1])
    np.testing.assert_allclose(single, proba[-1])


def test_retrained_four_classes(features, stages):
    y4 = group_stages(list(stages), "osf4")
    model = YasaLightGBM(n_classes=4, n_estimators=100, n_jobs=1).fit(features[:N_TRAIN],
                                                                      y4[:N_TRAIN])
    proba = model.predict_proba(features[N_TRAIN:])
    assert all(p.shape[1] == 4 for p in proba)
    truth, pred = np.concatenate(y4[N_TRAIN:]), np.concatenate(model.predict(features[N_TRAIN:]))
    assert cohen_kappa_score(truth, pred) >= RETRAINED_MIN_KAPPA
    with pytest.raises(LabelError, match="outside 0..3.*osf4"):
        YasaLightGBM(n_classes=4).fit(features[0], stages[0] * 0 + 4)


def test_retrained_binary_event_target(features, arousals):
    from sklearn.metrics import roc_auc_score

    model = YasaLightGBM(n_classes=2, n_estimators=100, n_jobs=1).fit(features[:N_TRAIN],
                                                                      arousals[:N_TRAIN])
    proba = np.concatenate([p[:, 1] for p in model.predict_proba(features[N_TRAIN:])])
    truth = np.concatenate(arousals[N_TRAIN:])
    assert 0 < truth.mean() < 0.5
    assert roc_auc_score(truth, proba) > 0.6


def test_absent_classes_get_zero_probability(features, stages, caplog):
    # 1-h nights hold no REM; drop N3 too: classes 3 and 4 are absent.
    y = [np.where(s == 3, -1, s) for s in stages[:N_TRAIN]]
    model = YasaLightGBM(n_estimators=50, n_jobs=1).fit(features[:N_TRAIN], y)
    assert "absent" in caplog.text
    assert model.present_classes_.tolist() == [0, 1, 2]
    proba = model.predict_proba(features[-1])
    assert proba.shape == (len(features[-1]), 5)
    np.testing.assert_array_equal(proba[:, 3:], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_single_class_training_predicts_that_class(features):
    y = np.full(len(features[0]), 1)
    with pytest.warns(DataWarning, match="only class 1"):
        model = YasaLightGBM(n_classes=2).fit(features[0], y)
    np.testing.assert_array_equal(model.predict(features[1]), 1)


def test_unscored_epochs_are_ignored(features, stages):
    y = stages[0].copy()
    y[:50] = -1
    model = YasaLightGBM(n_estimators=20, n_jobs=1).fit(features[0], y)
    assert model.n_epochs_fit_ == len(y) - 50


def test_estimator_contract_and_errors(features, stages):
    model = YasaLightGBM(n_estimators=20, seed=3)
    for method in ("predict_proba", "predict"):
        with pytest.raises(NotFittedError, match=f"YasaLightGBM instance is not fitted.*'{method}'"):
            getattr(model, method)(features[0])
    assert clone(model).get_params() == model.get_params()
    assert model.get_params()["class_weight"] == "balanced"
    with pytest.raises(TypeError):
        YasaLightGBM(20)  # keyword-only
    with pytest.raises(InvalidParameterError, match="'n_classes'"):
        YasaLightGBM(n_classes=1).fit(features[0], stages[0])
    with pytest.raises(InvalidParameterError, match="'learning_rate'"):
        YasaLightGBM(learning_rate=0).fit(features[0], stages[0])
    with pytest.raises(LabelError, match="night 0: .* labels for .* fit_length"):
        model.fit(features[0], stages[0][:-2])
    with pytest.raises(LabelError, match="2 nights of features but 1"):
        model.fit(features[:2], stages[:1])
    with pytest.raises(LabelError, match="none of the"):
        model.fit(features[0], np.full(len(features[0]), -1))
    fitted = model.fit(features[0], stages[0])
    assert fitted is model and not hasattr(YasaLightGBM(), "classes_")
    no_emg = features[1].drop(columns=[c for c in features[1].columns if c.startswith("emg_")])
    with pytest.raises(InvalidParameterError, match="missing .*emg_.*same channels"):
        model.predict(no_emg)


# --- lengths ---------------------------------------------------------------------------------
def test_fit_length_pads_and_trims_at_the_end():
    y = np.array([0, 2, 2, 3])
    np.testing.assert_array_equal(fit_length(y, 5), [0, 2, 2, 3, -1])
    np.testing.assert_array_equal(fit_length(y, 3), [0, 2, 2])
    np.testing.assert_array_equal(fit_length(y, 4), y)
    np.testing.assert_array_equal(fit_length(y, 5, fill=2), [0, 2, 2, 3, 2])
    proba = np.full((3, 5), 0.2)
    out = fit_length(proba, 4)
    assert out.shape == (4, 5) and np.isnan(out[3]).all()
    np.testing.assert_allclose(fit_length(proba, 4, fill=[1, 0, 0, 0, 0])[3], [1, 0, 0, 0, 0])
    table = pd.DataFrame({"a": [1.0, 2.0]}, index=pd.RangeIndex(2, name="epoch"))
    table.attrs = {"record_id": "X"}
    padded = fit_length(table, 3)
    assert len(padded) == 3 and np.isnan(padded["a"].iloc[2]) and padded.attrs == table.attrs
    assert len(fit_length(table, 1)) == 1


def test_fit_length_warns_when_more_than_one_epoch_differs():
    with pytest.warns(DataWarning, match="rec.edf: 4 epochs padded at the end to 7"):
        assert len(fit_length(np.zeros(4), 7, record="rec.edf")) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_length(np.zeros(4), 5)
    with pytest.raises(InvalidParameterError, match="'n_epochs'"):
        fit_length(np.zeros(4), -1)

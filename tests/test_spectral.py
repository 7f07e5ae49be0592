"""Spectral features (:mod:`sleepfm.spectral`), heads on them beside or instead of embeddings,
the head chosen by validation (``mode="auto"``), and the step budget of small cohorts."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from sleepfm.artifacts import load_heads, save_encoder
from sleepfm.cli import main
from sleepfm.config import FinetuneConfig
from sleepfm.exceptions import ChannelError, InvalidParameterError, SignalError, StoreError
from sleepfm.models import create_encoder
from sleepfm.models.heads import LinearProbe, MLPHead, StagingHead
from sleepfm.spectral import (BANDS, SPECTRAL_KINDS, band_powers, feature_names,
                              spectral_features)
from sleepfm.stages.embed import embed
from sleepfm.stages.evaluate import evaluate
from sleepfm.stages.finetune import finetune
from sleepfm.stages.head_select import build_staging_head, select_staging_head
from sleepfm.stages.inference import head_outputs
from sleepfm.stages.predict import predict
from sleepfm.stages.preprocess import preprocess_directory
from sleepfm.stages.task_data import TaskData, load_task_data
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

torch.set_num_threads(1)
FS = 128.0


def _sine(freq, amplitude=1.0, epochs=4, fs=FS):
    t = np.arange(int(epochs * 30 * fs)) / fs
    return amplitude * np.sin(2 * np.pi * freq * t)


# ---- the features ----------------------------------------------------------------------------
@pytest.mark.parametrize("freq,band", [(2.0, "delta"), (10.0, "alpha"), (13.5, "sigma"),
                                       (20.0, "beta")])
def test_band_power_of_a_sine(freq, band):
    power = band_powers(_sine(freq, amplitude=3.0), FS)
    assert power.shape == (4, len(BANDS))
    k = list(BANDS).index(band)
    np.testing.assert_allclose(power[:, k], 3.0 ** 2 / 2, rtol=0.02)  # A^2 / 2
    assert np.all(np.delete(power, k, axis=1) < 1e-3 * power[:, [k]])
    values, names = spectral_features({"eeg": _sine(freq)}, FS, kinds=("eeg",), context=False,
                                      normalise=False)
    assert values[:, names.index(f"eeg_rel_{band}")] == pytest.approx(1.0, abs=0.01)


def test_shapes_names_and_finite_values():
    rng = np.random.default_rng(0)
    n = int(20 * 30 * FS)
    signals = {"eeg": rng.normal(size=(2, n)), "eog": rng.normal(size=n),
               "emg": rng.normal(size=(1, n + 100))}
    values, names = spectral_features(signals, FS)
    assert values.shape == (20, len(names)) and values.dtype == np.float32
    assert names == feature_names(SPECTRAL_KINDS) and len(set(names)) == len(names)
    assert np.all(np.isfinite(values))
    base = len(feature_names(("eeg",), context=False, normalise=False))
    assert len(names) == 3 * base * 3 * 2  # kinds x (plain, centred, past) x (raw, night-z)
    assert spectral_features(signals, FS, n_epochs=5)[0].shape == (5, len(names))


def test_invariant_to_gain_offset_and_number_of_leads():
    rng = np.random.default_rng(1)
    eeg = rng.normal(size=(2, int(10 * 30 * FS))) + _sine(10.0, 0.5, epochs=10)
    emg = rng.normal(size=(1, eeg.shape[1]))
    ref, _ = spectral_features({"eeg": eeg, "emg": emg}, FS, kinds=("eeg", "emg"))
    scaled, _ = spectral_features({"eeg": eeg * np.array([[40.0], [0.2]]) + 7.0,
                                   "emg": 1e-3 * emg - 2.0}, FS, kinds=("eeg", "emg"))
    np.testing.assert_allclose(scaled, ref, rtol=1e-4, atol=1e-4)
    doubled, _ = spectral_features({"eeg": np.vstack([eeg[:1], eeg[:1]]), "emg": emg}, FS,
                                   kinds=("eeg", "emg"))
    single, _ = spectral_features({"eeg": eeg[:1], "emg": emg}, FS, kinds=("eeg", "emg"))
    np.testing.assert_allclose(doubled, single, rtol=1e-5, atol=1e-5)


def test_feature_errors_say_what_to_do():
    x = _sine(10.0)
    with pytest.raises(InvalidParameterError, match="no eog signal"):
        spectral_features({"eeg": x}, FS, kinds=("eeg", "eog"))
    with pytest.raises(InvalidParameterError, match="kind"):
        spectral_features({"ecg": x}, FS, kinds=("ecg",))
    with pytest.raises(SignalError, match="too slow"):
        spectral_features({"eeg": x}, 50.0, kinds=("eeg",))
    with pytest.raises(SignalError, match="less than one"):
        spectral_features({"eeg": x[:100]}, FS, kinds=("eeg",))
    with pytest.raises(SignalError, match="flat"):
        spectral_features({"eeg": np.zeros(int(60 * FS))}, FS, kinds=("eeg",))
    with pytest.raises(SignalError, match="NaN"):
        spectral_features({"eeg": np.r_[x, np.nan]}, FS, kinds=("eeg",))


# ---- the step budget and the choice of head --------------------------------------------------
def test_small_cohorts_get_at_least_min_steps():
    config = FinetuneConfig()
    lstm = build_staging_head("lstm", config, 5, [120] * 6)
    assert lstm.epochs == 200 and lstm.patience == 60  # 6 one-hour nights: 1 step a pass
    assert build_staging_head("linear", config, 5, [120] * 6).epochs == 200
    big = build_staging_head("lstm", config, 5, [960] * 400)  # 100 steps a pass
    assert big.epochs == StagingHead().epochs and big.patience == StagingHead().patience
    fixed = build_staging_head("mlp", FinetuneConfig(epochs=7, hidden=32), 5, [120] * 6)
    assert isinstance(fixed, MLPHead) and fixed.epochs == 7 and fixed.hidden == 32
    old = build_staging_head("linear", FinetuneConfig(min_steps=1), 5, [120] * 6)
    assert isinstance(old, LinearProbe) and old.epochs == LinearProbe().epochs


def _constructed(informative: str, n_nights=6, n_epochs=80, seed=0) -> TaskData:
    """Nights whose embeddings (8 columns) or spectral part (6 columns) carry the stages."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    protos = rng.normal(size=(5, 8)) * 3
    for _ in range(n_nights):
        stages = np.repeat(rng.integers(0, 5, n_epochs // 8), 8)
        stages[:5] = np.arange(5)
        emb = rng.normal(size=(n_epochs, 8))
        spec = rng.normal(size=(n_epochs, 6))
        if informative == "embedding":
            emb += protos[stages]
        else:
            spec += protos[stages][:, :6]
        X.append(np.hstack([emb, spec]).astype(np.float32))
        y.append(stages)
    return TaskData([f"R{i}" for i in range(n_nights)], [f"S{i}" for i in range(n_nights)], X, y,
                    y, features="both", n_embedding=8, spectral_kinds=("eeg",))


@pytest.mark.parametrize("informative", ["embedding", "spectral"])
def test_auto_picks_the_candidate_that_generalises(informative):
    data = _constructed(informative)
    config = FinetuneConfig(candidates=("linear",), epochs=40, cv_folds=3)
    head, selection, fitted_on = select_staging_head(data, list(range(6)), [], config, 5,
                                                     ["embedding", "spectral"])
    scores = {k: v["macro_f1"] for k, v in selection.scores.items()}
    assert set(scores) == {"linear+embedding", "linear+spectral"}
    assert selection.chosen == f"linear+{informative}" == max(scores, key=scores.get)
    other = "spectral" if informative == "embedding" else "embedding"
    assert scores[selection.chosen] > 0.7 and scores[f"linear+{other}"] < 0.4
    assert selection.method == "cv" and selection.folds == 3 and fitted_on == list(range(6))
    assert head.n_features_in_ == (8 if informative == "embedding" else 6)
    assert all(len(s["fold_macro_f1"]) == 3 for s in selection.scores.values())
    assert "linear+" in repr(selection) and selection.to_dict()["chosen"] == selection.chosen


def test_auto_with_one_training_subject_takes_the_first_candidate():
    data = _constructed("spectral", n_nights=2, n_epochs=40)
    config = FinetuneConfig(candidates=("linear", "mlp"), epochs=5)
    head, selection, fitted_on = select_staging_head(data, [0], [], config, 5, ["spectral"])
    assert selection.method == "single" and selection.chosen == "linear+spectral"
    assert isinstance(head, LinearProbe) and fitted_on == [0] and selection.summary.empty


def test_auto_uses_the_validation_nights_of_a_large_split():
    data = _constructed("spectral", n_nights=8, n_epochs=40)
    config = FinetuneConfig(candidates=("linear", "mlp"), epochs=20, min_val_subjects=2)
    _, selection, fitted_on = select_staging_head(data, list(range(6)), [6, 7], config, 5,
                                                     ["embedding", "spectral"])
    assert selection.method == "validation" and selection.features == "spectral"
    assert fitted_on == list(range(6)) and len(selection.scores) == 4
    table = selection.summary
    assert list(table.columns[:3]) == ["candidate", "macro_f1", "kappa"] and len(table) == 4
    assert table["macro_f1"].is_monotonic_decreasing and table["candidate"][0] == selection.chosen


# ---- heads on spectral features in the stages ------------------------------------------------
@pytest.fixture(scope="module")
def store_run(tmp_path_factory):
    """Six 10-minute synthetic nights (C4, E1, chin at 100 Hz), preprocessed; no encoder."""
    root = tmp_path_factory.mktemp("spectral")
    config = SyntheticConfig(duration_h=10 / 60, montage="staging",
                             sample_rates={"eeg": 100.0, "eog": 100.0, "emg": 100.0})
    for seed in range(6):
        write_night(generate_night(config, seed=seed, record_id=f"Q{seed:02d}"), root / "edf")
    run = root / "run"
    assert not preprocess_directory(root / "edf", run).failed
    return run


def test_spectral_head_needs_no_encoder(store_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(store_run, run)
    result = finetune(run, "staging", mode="linear", features="spectral", test_size=0.35)
    heads, info = load_heads(run / "heads" / "staging")
    assert info["features"] == "spectral" and info["spectral"]["kinds"] == ["eeg", "eog", "emg"]
    assert info["n_features"] == len(info["spectral"]["names"]) == heads["staging"].n_features_in_
    assert result.heads["staging"].epochs == 200  # a few nights: the step budget
    ev = evaluate(run, "staging", n_boot=20, figures=False)
    assert ev.metrics["features"] == "spectral" and ev.metrics["n_test_nights"] == 2
    frame = predict(store_run.parent / "edf" / "Q00.edf", run)
    assert len(frame) == 20 and set(frame["StageNumber"]) <= {0, 1, 2, 3, 4}


def test_auto_default_records_its_choice(store_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(store_run, run)
    result = finetune(run, "staging", epochs=5, candidates=("linear", "mlp"), cv_folds=2)
    sel = result.info["selection"]
    assert result.info["mode"] == "auto" and sel["method"] == "cv" and sel["folds"] == 2
    assert set(sel["scores"]) == {"linear+spectral", "mlp+spectral"}  # no embeddings here
    assert sel["chosen"] == max(sel["scores"], key=lambda k: sel["scores"][k]["macro_f1"])
    stage = json.loads((run / "run.json").read_text())["stages"]["finetune_staging"]
    assert stage["selection"]["chosen"] == sel["chosen"] and stage["features"] == "spectral"
    assert set(stage["selection"]["macro_f1"]) == set(sel["scores"])


@pytest.fixture(scope="module")
def both_run(store_run, tmp_path_factory):
    """The store run with a random tiny encoder's embeddings and a linear head on both inputs."""
    run = tmp_path_factory.mktemp("both") / "run"
    shutil.copytree(store_run, run)
    torch.manual_seed(0)
    save_encoder(create_encoder("sleepfm_tiny"), run / "checkpoints" / "encoder")
    embed(run)
    finetune(run, "staging", mode="linear", features="both", epochs=5, test_size=0.35)
    return run


def test_head_on_both_inputs_evaluates_and_predicts(both_run, store_run):
    _, info = load_heads(both_run / "heads" / "staging")
    data = load_task_data(both_run, "staging", features="both")
    assert info["n_features"] == data.n_embedding + len(info["spectral"]["names"])
    assert data.select("spectral")[0].shape[1] == len(info["spectral"]["names"])
    assert evaluate(both_run, "staging", n_boot=20, figures=False).metrics["features"] == "both"
    assert len(predict(store_run.parent / "edf" / "Q01.edf", both_run)) == 20


def test_head_never_takes_inputs_without_its_spectral_features(both_run, tmp_path, make_edf):
    heads, info = load_heads(both_run / "heads" / "staging")
    embeddings = load_task_data(both_run, "staging", features="embedding")
    with pytest.raises(StoreError, match=r"spectral features of EEG/EOG/EMG.*features='both'"):
        head_outputs(heads, info, X=embeddings.X)
    # a recording without EOG and EMG: the head cannot be used, and says which record and kind
    edf, _ = make_edf(tmp_path / "eeg_only.edf", [("EEG C3-M2", 256)], duration=300.0)
    with pytest.raises(ChannelError, match=r"eeg_only: no EOG/EMG channel.*--features embedding"):
        predict(edf, both_run)
    # no store to compute them from
    moved = tmp_path / "run"
    shutil.copytree(both_run, moved)
    shutil.rmtree(moved / "hdf5")
    with pytest.raises(StoreError, match="no HDF5 store.*spectral features"):
        evaluate(moved, "staging", n_boot=20, figures=False)


def test_spectral_head_is_out_of_date_when_its_store_record_changes(both_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(both_run, run)
    _, info = load_heads(run / "heads" / "staging")
    rid = info["train_records"][0]
    with h5py.File(run / "hdf5" / f"{rid}.h5", "a") as f:
        f[rid].attrs["fingerprint"] = "another-recording"
    with h5py.File(run / "embeddings" / f"{rid}.h5", "a") as f:
        f.attrs["store_fingerprint"] = "another-recording"  # embeddings still match the store
    with pytest.raises(StoreError, match=f"changed since.*{rid}"):
        evaluate(run, "staging", n_boot=20, figures=False)


def test_cli_features_and_candidates(store_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(store_run, run)
    assert main(["finetune", "staging", "--run", str(run), "--candidates", "linear",
                 "--cv-folds", "2", "--epochs", "3", "--test-size", "0.35"]) == 0
    out = capsys.readouterr().out
    assert "auto: linear+spectral" in out
    assert main(["finetune", "staging", "--run", str(run), "--mode", "mlp", "--features",
                 "spectral", "--epochs", "3"]) == 0
    assert "(mlp, spectral)" in capsys.readouterr().out
    assert main(["finetune", "staging", "--run", str(run), "--features", "bands"]) == 2
    assert "'bands'" in capsys.readouterr().err
    assert main(["finetune", "staging", "--run", str(run), "--mode", "finetune", "--features",
                 "spectral"]) == 2
    assert "end to end" in capsys.readouterr().err
    with pytest.raises(InvalidParameterError, match="candidates"):
        FinetuneConfig(candidates=("forest",)).validate("staging")

"""Pre-training (Lightning) and the embedding job on a small synthetic store."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sleepfm.artifacts import load_encoder, save_encoder
from sleepfm.config import PretrainConfig
from sleepfm.data import plan_windows
from sleepfm.exceptions import ConvergenceWarning, SleepFMError
from sleepfm.io.embeddings import read_embeddings
from sleepfm.models import create_encoder
from sleepfm.stages.embed import embed
from sleepfm.stages.preprocess import preprocess_directory
from sleepfm.stages.pretrain import pretrain, read_pretrain_metrics
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

TINY = {"encoder": "sleepfm_tiny", "batch_size": 8, "num_workers": 0, "val_fraction": 0.25,
        "patience": 0, "lr": 3e-3, "warmup_fraction": 0.1}


def _write(directory: Path, record_id: str, minutes: float, channels: list[str] | None, seed: int,
           offset_min: float = 0.0):
    """A synthetic recording of ``minutes`` cut from a night ``offset_min`` after lights-off."""
    rates = {"eeg": 128.0, "eog": 128.0, "emg": 128.0, "ecg": 128.0, "resp": 16.0, "spo2": 1.0}
    night = generate_night(SyntheticConfig(duration_h=(offset_min + minutes) / 60, sample_rates=rates),
                           seed=seed, record_id=record_id)
    night = night.pick(channels) if channels is not None else night
    write_night(night.crop(offset_min * 60, (offset_min + minutes) * 60), directory)


def _linked_run(run: Path, store_run: Path, pattern: str) -> Path:
    """A run directory whose store links to the records of ``store_run`` matching ``pattern``."""
    (run / "hdf5").mkdir(parents=True)
    for p in (store_run / "hdf5").glob(f"{pattern}.h5"):
        (run / "hdf5" / p.name).symlink_to(p)
    return run


@pytest.fixture(scope="module")
def store_run(tmp_path_factory):
    """Sixteen 10-minute excerpts from different parts of different nights (mixed montages), a
    45-minute night, a 30-minute nap and a 3-minute snippet; preprocessed."""
    root = tmp_path_factory.mktemp("pretrain")
    src = root / "edf"
    src.mkdir()
    full = ["C4-M1", "O2-M1", "E1-M2", "Chin", "ECG", "Airflow", "Thorax", "SpO2"]
    for i in range(16):
        channels = full if i % 2 == 0 else ["C3-M2", "E2-M1", "Chin", "Airflow"]
        _write(src, f"N{i:02d}", 10, channels, seed=i, offset_min=5 * (i % 12))
    _write(src, "LONG", 45, full, seed=20)
    _write(src, "NAP", 30, full, seed=21)
    _write(src, "SNIP", 3, ["C4-M1", "Chin"], seed=22)
    run = root / "run"
    batch = preprocess_directory(src, run)
    assert not batch.failed
    return run


@pytest.fixture(scope="module")
def trained_run(store_run):
    config = PretrainConfig(max_epochs=3, seed=0, **TINY)
    encoder_dir = pretrain(store_run, config, progress=False)
    return store_run, encoder_dir


def test_pretraining_lowers_validation_loss(trained_run):
    run, encoder_dir = trained_run
    info = json.loads((run / "run.json").read_text())["stages"]["pretrain"]
    assert info["best_val_loss"] < info["initial_val_loss"] - 0.05, info
    metrics = read_pretrain_metrics(run)
    assert metrics["train/loss"].notna().sum() >= 3
    assert (encoder_dir / "model.safetensors").is_file()
    assert set(info["val_records"]).isdisjoint(info["train_records"])


def test_embedding_shapes_long_nap_and_short(trained_run):
    run, _ = trained_run
    status = embed(run, batch_size=5)
    assert all(v == "ok" for v in status.values()), status
    for rid, minutes in [("LONG", 45), ("NAP", 30), ("SNIP", 3)]:
        path = run / "embeddings" / f"{rid}.h5"
        epochs = read_embeddings(path, level="epoch", name="fused")
        assert epochs.shape[0] == int(minutes * 2)
        assert np.isfinite(epochs).all()
        with h5py.File(path) as f:
            assert f["window/fused"].shape[0] == -(-minutes * 60 // 300)
            assert f["night/fused"].shape == (epochs.shape[1],)
    with h5py.File(run / "embeddings" / "N01.h5") as f:  # a montage without ECG
        mods = json.loads(f.attrs["modalities"])
        assert "ECG" not in mods and "BAS" in mods and "epoch/ECG" not in f
    # Resumable: nothing left to do on a second call.
    assert set(embed(run, batch_size=5).values()) == {"skipped"}


def test_plan_windows_covers_every_token_once():
    plan = plan_windows(40 * 60 + 35, 300, 5)  # 487 tokens: 8 full windows + an end-aligned one
    covered = np.zeros(487, int)
    for start, keep in plan:
        first = int(start // 5)
        covered[first + keep:first + 60] += 1
    assert (covered == 1).all()
    assert plan_windows(200, 300, 5) == [(0.0, 0)]


def test_record_embedding_independent_of_batch_partners(trained_run, tmp_path):
    run, encoder_dir = trained_run
    alone = _linked_run(tmp_path / "alone", run, "LONG")
    embed(alone, checkpoint=encoder_dir, batch_size=1)
    # Batches of 7 windows: LONG's windows share batches with other montages' (N01, NAP, ...).
    embed(run, checkpoint=encoder_dir, batch_size=7, overwrite=True)
    a = read_embeddings(alone / "embeddings" / "LONG.h5")
    b = read_embeddings(run / "embeddings" / "LONG.h5")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_checkpoint_round_trip_embeds_bit_for_bit(trained_run, tmp_path):
    run, encoder_dir = trained_run
    model, meta = load_encoder(encoder_dir)
    copy = save_encoder(model, tmp_path / "copy", metadata=meta.get("metadata"))
    embed(run, checkpoint=encoder_dir, batch_size=4, overwrite=True)
    first = read_embeddings(run / "embeddings" / "NAP.h5")
    embed(run, checkpoint=copy, batch_size=4, overwrite=True)
    second = read_embeddings(run / "embeddings" / "NAP.h5")
    assert np.array_equal(first, second)


def test_record_without_encoder_modalities_is_reported(store_run, tmp_path):
    enc = create_encoder("sleepfm_tiny", modalities=("ECG",))
    ckpt = save_encoder(enc, tmp_path / "ecg_only")
    run = _linked_run(tmp_path / "run", store_run, "N0[01]")
    status = embed(run, checkpoint=ckpt)
    assert status["N00"] == "ok"
    assert "no channel of the encoder's modalities" in status["N01"]
    assert not (run / "embeddings" / "N01.h5").exists()


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "sleepfm.cli", *args]


def _config_file(path: Path, **extra) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


@pytest.mark.slow
def test_killed_pretraining_resumes(store_run, tmp_path):
    run = _linked_run(tmp_path / "run", store_run, "N*")
    cfg = _config_file(tmp_path / "cfg.yaml", max_epochs=5)
    proc = subprocess.Popen(_cli("pretrain", "--run", str(run), "--config", str(cfg), "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "lightning" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), "no checkpoint was written before the deadline"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(_cli("pretrain", "--run", str(run), "--config", str(cfg), "--quiet"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    metrics = read_pretrain_metrics(run)
    # The resumed invocation logged into a version of its own, starting after the killed one's
    # checkpoint (epoch >= 1) and going on to the last epoch; earlier curves are kept.
    resumed = metrics[metrics["version"] == metrics["version"].max()]
    assert metrics["version"].nunique() == 2
    assert resumed["epoch"].min() >= 1 and resumed["epoch"].max() == 4
    info = json.loads((run / "run.json").read_text())["stages"]["pretrain"]
    assert info["epochs"] == 5
    assert info["initial_val_loss"] is not None  # the untrained baseline survives the resume


def _kill_after_first_checkpoint(cmd, last: Path, extra_s: float) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert last.exists(), "no checkpoint was written before the deadline"
    time.sleep(extra_s)  # into the next epoch, at no particular moment
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("extra_s", [0.0, 0.7])
def test_killed_and_resumed_pretraining_equals_an_uninterrupted_run(store_run, tmp_path, extra_s):
    """Same final weights, the same best encoder, and one loss log with every step once."""
    cfg = _config_file(tmp_path / "cfg.yaml", max_epochs=4)
    runs = {name: _linked_run(tmp_path / name, store_run, "N*") for name in ("whole", "killed")}
    args = ["--config", str(cfg), "--quiet"]
    assert subprocess.run(_cli("pretrain", "--run", str(runs["whole"]), *args),
                          capture_output=True, timeout=600).returncode == 0
    last = runs["killed"] / "checkpoints" / "lightning" / "last.ckpt"
    _kill_after_first_checkpoint(_cli("pretrain", "--run", str(runs["killed"]), *args), last,
                                 extra_s)
    done = subprocess.run(_cli("pretrain", "--run", str(runs["killed"]), *args),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    whole, _ = load_encoder(runs["whole"] / "checkpoints" / "encoder")
    resumed, record = load_encoder(runs["killed"] / "checkpoints" / "encoder")
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    states = [torch.load(run / "checkpoints" / "lightning" / "last.ckpt", weights_only=True)
              for run in runs.values()]
    for name, tensor in states[0]["state_dict"].items():
        assert torch.equal(tensor, states[1]["state_dict"][name]), name
    a, b = (read_pretrain_metrics(run) for run in runs.values())
    for frame in (a, b):
        train = frame.dropna(subset=["train/loss"])
        assert not train["step"].duplicated().any()
    cols = ["step", "epoch", "train/loss"]
    pd.testing.assert_frame_equal(a.dropna(subset=["train/loss"])[cols].reset_index(drop=True),
                                  b.dropna(subset=["train/loss"])[cols].reset_index(drop=True))
    info = {n: json.loads((run / "run.json").read_text())["stages"]["pretrain"]
            for n, run in runs.items()}
    for key in ("best_val_loss", "initial_val_loss", "exported", "steps"):
        assert info["whole"][key] == info["killed"][key], key


@pytest.mark.slow
def test_ddp_two_cpu_processes(store_run, tmp_path):
    run = _linked_run(tmp_path / "run", store_run, "N*")
    cfg = _config_file(tmp_path / "cfg.yaml", max_epochs=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(_cli("pretrain", "--run", str(run), "--config", str(cfg), "--quiet",
                               "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"),
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "checkpoints" / "encoder" / "model.safetensors").is_file()
    info = json.loads((run / "run.json").read_text())["stages"]["pretrain"]
    assert info["steps"] >= 1
    assert "distributed_backend=gloo" in done.stderr or "world_size: 2" in done.stderr.lower() \
        or "MEMBER: 2/2" in done.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_on_data_samples(demo_run):
    run, done = demo_run
    assert "embedded 45 records" in done.stdout
    embeddings = sorted(p.stem for p in (run / "embeddings").glob("*.h5"))
    assert [e for e in embeddings if not e.endswith("_N1")] == [
        "SC4001E0-PSG_first300s", "SYN0001", "SYN0002", "SYN0003", "SYN0004"]  # data_samples/
    assert len(embeddings) == 45  # and the 40 nights of the generated cohort
    real = read_embeddings(run / "embeddings" / "SC4001E0-PSG_first300s.h5")
    assert real.shape[0] == 10  # the real 5-minute excerpt: one context window, ten epochs
    assert "disease on 12 held-out subjects of the SYNTHETIC cohort" in done.stdout
    for phenotype in ("death", "heart_failure", "stroke", "dementia"):
        assert f"  {phenotype} " in done.stdout
    reports = run / "reports" / "disease"
    for name in ("metrics.csv", "risks.csv", "fairness.csv", "enrichment.csv", "attribution.csv"):
        assert (reports / name).is_file(), name


def test_untrained_encoder_is_never_exported(store_run, tmp_path, monkeypatch):
    """The validation before training is the baseline, not a candidate: when no epoch beats it
    (simulated: every validation of the fit reports a loss of 99), the run says so instead of
    exporting the initialisation as 'best', and exports a trained encoder."""
    from sleepfm.train import PretrainModule

    real = PretrainModule.validation_step

    def worse(module, batch, batch_idx):
        if module.trainer.state.fn != "fit":
            return real(module, batch, batch_idx)
        module.log("val/loss", torch.tensor(99.0), batch_size=len(batch["record_id"]))

    run = _linked_run(tmp_path / "run", store_run, "N0[0-5]")
    with monkeypatch.context() as patch:
        patch.setattr(PretrainModule, "validation_step", worse)
        with pytest.warns(ConvergenceWarning, match="did not beat the untrained encoder"):
            pretrain(run, PretrainConfig(max_epochs=2, **TINY), progress=False)
    info = json.loads((run / "run.json").read_text())["stages"]["pretrain"]
    assert info["beat_untrained"] is False and info["exported"]["step"] > 0
    _, record = load_encoder(run / "checkpoints" / "encoder")
    assert record["metadata"]["step"] == info["exported"]["step"] > 0
    assert record["metadata"]["epoch"] == info["exported"]["epoch"] == 0
    assert info["best_val_loss"] == 99.0 > info["initial_val_loss"]
    # A run that learns beats its baseline and records the epoch it exported.
    run = _linked_run(tmp_path / "learns", store_run, "N*")
    pretrain(run, PretrainConfig(max_epochs=3, **TINY), progress=False)
    info = json.loads((run / "run.json").read_text())["stages"]["pretrain"]
    assert info["beat_untrained"] is True and info["best_val_loss"] < info["initial_val_loss"]
    assert load_encoder(run / "checkpoints" / "encoder")[1]["metadata"]["step"] == \
        info["exported"]["step"]


def test_bf16_training_falls_back_where_bf16_is_wrong(store_run, tmp_path, monkeypatch):
    from sleepfm.models import precision

    monkeypatch.setattr(precision, "_RELIABLE", {})
    monkeypatch.setattr(precision, "probe_errors", lambda device: {"conv1d(in=8)": 1.0})
    run = _linked_run(tmp_path / "run", store_run, "N0[0-3]")
    with pytest.warns(RuntimeWarning, match="computing in fp32 instead"):
        pretrain(run, PretrainConfig(max_epochs=1, **{**TINY, "precision": "bf16-mixed"}),
                 progress=False)
    info = json.loads((run / "run.json").read_text())["stages"]["pretrain"]
    assert info["precision"] == "32-true" and info["config"]["precision"] == "bf16-mixed"


def test_resume_under_other_settings_is_refused(store_run, tmp_path):
    run = _linked_run(tmp_path / "run", store_run, "N0[0-3]")
    pretrain(run, PretrainConfig(max_epochs=1, **TINY), progress=False)
    with pytest.raises(SleepFMError, match="other settings.*encoder_config.*--restart"):
        pretrain(run, PretrainConfig(max_epochs=2, **{**TINY, "encoder": "sleepfm_base"}),
                 progress=False)
    # Starting again explicitly works.
    pretrain(run, PretrainConfig(max_epochs=1, **TINY), resume=False, progress=False)


def test_rerun_keeps_earlier_loss_curves(store_run, tmp_path):
    run = _linked_run(tmp_path / "run", store_run, "N0[0-3]")
    pretrain(run, PretrainConfig(max_epochs=1, **TINY), progress=False)
    first = read_pretrain_metrics(run)
    pretrain(run, PretrainConfig(max_epochs=2, **TINY), progress=False)  # resumes for one epoch
    both = read_pretrain_metrics(run)
    assert sorted(both["version"].unique()) == [0, 1]
    assert both[both["version"] == 0].drop(columns="version").equals(first.drop(columns="version"))
    assert both.loc[both["version"] == 1, "epoch"].dropna().min() == 1


def test_a_run_stopped_by_max_steps_within_the_first_epoch_validates_and_reruns_idle(
        store_run, tmp_path):
    """``max_steps`` shorter than an epoch (the demo's budget): the run validates where it stops,
    exports that encoder as beating the untrained one, and a rerun re-exports nothing."""
    from sleepfm.stages.pretrain import stop_within_first_epoch

    assert stop_within_first_epoch(12, 3, 1) == 3 and stop_within_first_epoch(12, 3, 2) == 6
    assert stop_within_first_epoch(12, 12, 1) is None and stop_within_first_epoch(12, -1, 1) is None
    run = _linked_run(tmp_path / "run", store_run, "N*")
    config = PretrainConfig(max_epochs=1, max_steps=2, **TINY)
    pretrain(run, config, progress=False)
    info = json.loads((run / "run.json").read_text())["stages"]["pretrain"]
    assert info["steps"] == 2 and info["best_val_loss"] is not None
    assert info["exported"]["step"] == 2 and info["beat_untrained"] is not None
    weights = run / "checkpoints" / "encoder" / "model.safetensors"
    before = (weights.read_bytes(), (weights.parent / "config.json").read_text())
    pretrain(run, config, progress=False)
    assert (weights.read_bytes(), (weights.parent / "config.json").read_text()) == before

"""Staging and events heads on a run's embeddings: data loading, subject split, label fraction,
few-shot, saving, learning on structured embeddings and chance on shuffled labels, CLI."""
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sleepfm.cli import main
from sleepfm.exceptions import LabelError, StoreError
from sleepfm.artifacts import load_heads
from sleepfm.config import FinetuneConfig
from sleepfm.io.labels import Hypnogram
from sleepfm.stages.evaluate import evaluate
from sleepfm.stages.finetune import finetune
from sleepfm.stages.task_data import load_task_data

torch.set_num_threads(1)
DIM = 16


def _stages(rng, n_epochs):
    """A night of stage blocks (5-20 epochs each) with every stage present."""
    out = []
    while len(out) < n_epochs:
        out += [int(rng.integers(0, 5))] * int(rng.integers(5, 20))
    stages = np.array(out[:n_epochs])
    stages[:5] = np.arange(5)  # every class in every night
    return stages


def make_embedding_run(root, *, n_subjects=10, nights=1, n_epochs=120, seed=0, signal=1.0,
                       events=True, checkpoint_id="ckpt0000") -> Path:
    """A run directory with embeddings (stage prototype + subject offset + noise), stage labels,
    event labels (apneas where an embedding feature says so) and a cohort table."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(5, DIM)) * 2.0
    (root / "embeddings").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = []
    for s in range(n_subjects):
        offset = rng.normal(size=DIM) * 0.5
        for k in range(nights):
            rid = f"S{s:02d}_N{k + 1}"
            stages = _stages(rng, n_epochs)
            apnea = (rng.random(n_epochs) < (0.05 + 0.25 * (s % 4) / 3)) & (stages >= 1)
            x = signal * protos[stages] + offset + rng.normal(size=(n_epochs, DIM))
            x[:, 0] += 4.0 * apnea
            with h5py.File(root / "embeddings" / f"{rid}.h5", "w") as f:
                f.create_dataset("epoch/fused", data=x.astype(np.float32))
                f.create_dataset("epoch/BAS", data=x[:, ::-1].astype(np.float32).copy())
                f.attrs["checkpoint_id"] = checkpoint_id
            Hypnogram(stages).to_csv(root / "labels" / f"{rid}.csv")
            if events:
                onset = np.flatnonzero(apnea) * 30.0 + 5.0
                pd.DataFrame({"onset": onset, "duration": 15.0, "type": "apnea"}).to_csv(
                    root / "labels" / f"{rid}.events.csv", index=False)
            rows.append({"record_id": rid, "subject_id": f"S{s:02d}"})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    return root


FAST = dict(epochs=6, hidden=32)


def test_split_is_by_subject_saved_and_reused(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=10, nights=2)
    result = finetune(run, "staging", FinetuneConfig(**FAST))
    split = json.loads((run / "heads" / "staging" / "split.json").read_text())
    subj = split["subjects"]
    train = {subj[r] for r in split["train"]}
    test = {subj[r] for r in split["test"]}
    val = {subj[r] for r in split["val"]}
    assert train and test and val
    assert not train & test and not train & val and not val & test
    # both nights of a test subject are in test
    assert all(f"{s}_N1" in split["test"] and f"{s}_N2" in split["test"] for s in test)
    assert set(result.train_records) == set(split["train"])
    # The same split is used by evaluate.
    ev = evaluate(run, "staging", n_boot=50, figures=False)
    assert ev.metrics["test_records"] == sorted(split["test"])


def test_label_fraction_uses_ten_percent_of_training_subjects(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=30, nights=2, n_epochs=40)
    result = finetune(run, "staging", FinetuneConfig(mode="linear", label_fraction=0.1,
                                                         epochs=2))
    split = result.split
    n_train_subjects = len({split["subjects"][r] for r in split["train"]})
    assert n_train_subjects == 21  # 30 - 6 test - 3 val
    used = {split["subjects"][r] for r in result.train_records}
    assert len(used) == 2 == result.info["n_train_subjects"]  # round(0.1 * 21)
    assert set(result.train_records) <= set(split["train"])
    assert len(result.train_records) == 4  # both nights of each kept subject


def test_fewshot_nights_and_epochs(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=8, n_epochs=60)
    r = finetune(run, "staging", FinetuneConfig(mode="fewshot", shots=2, **FAST))
    assert len(r.train_records) == 2 and r.info["mode"] == "fewshot"
    r = finetune(run, "staging", FinetuneConfig(mode="fewshot", shots=3, shot_unit="epochs",
                                                    **FAST))
    assert len(r.train_records) == len(r.split["train"])
    with pytest.raises(ValueError, match="shots"):
        FinetuneConfig(mode="fewshot").validate("staging")


def test_structured_embeddings_learnt_and_shuffled_labels_at_chance(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=12, n_epochs=150, signal=0.8)
    finetune(run, "staging", FinetuneConfig(epochs=15, hidden=32))
    good = evaluate(run, "staging", n_boot=50, figures=False).summary.set_index("metric")
    assert good.loc["macro_f1", "value"] > 0.75, good
    assert good.loc["kappa", "value"] > 0.7

    # Shuffle the training labels across all training epochs (a permutation within each night
    # would keep each night's stage mix, which an LSTM can still match to its embeddings).
    rng = np.random.default_rng(1)
    split = json.loads((run / "heads" / "staging" / "split.json").read_text())
    paths = [run / "labels" / f"{rid}.csv" for rid in split["train"] + split["val"]]
    frames = [pd.read_csv(p) for p in paths]
    cols = ["StageName", "StageNumber"]
    pooled = pd.concat(frames)[cols].to_numpy()[rng.permutation(sum(map(len, frames)))]
    start = 0
    for path, frame in zip(paths, frames):
        frame[cols] = pooled[start:start + len(frame)]
        start += len(frame)
        frame.to_csv(path, index=False)
    finetune(run, "staging", FinetuneConfig(epochs=15, hidden=32),
                 split=run / "heads" / "staging" / "split.json")
    bad = evaluate(run, "staging", n_boot=50, figures=False).summary.set_index("metric")
    assert bad.loc["kappa", "value"] < 0.15, bad
    assert bad.loc["macro_f1", "value"] < 0.4


def test_missing_label_file_names_the_record(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=6)
    (run / "labels" / "S03_N1.csv").unlink()
    with pytest.raises(LabelError, match="S03_N1") as err:
        load_task_data(run, "staging")
    assert "--skip-unlabelled" in str(err.value)
    data = load_task_data(run, "staging", skip_unlabelled=True)
    assert "S03_N1" not in data.record_ids and "S03_N1" in data.skipped
    assert len(data) == 5
    # events task: a missing events file
    Hypnogram(np.zeros(120, dtype=int)).to_csv(run / "labels" / "S03_N1.csv")
    (run / "labels" / "S04_N1.events.csv").unlink()
    with pytest.raises(LabelError, match="S04_N1.*event label file"):
        finetune(run, "events", FinetuneConfig(**FAST, skip_unlabelled=False))


def test_mismatched_label_length_names_record_and_lengths(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=6, n_epochs=100)
    Hypnogram(np.zeros(90, dtype=int)).to_csv(run / "labels" / "S02_N1.csv")
    with pytest.raises(LabelError, match=r"S02_N1.*90 epochs.*100"):
        load_task_data(run, "staging")
    # One epoch apart (a trailing partial epoch) is tolerated: padded with unscored.
    Hypnogram(np.zeros(99, dtype=int)).to_csv(run / "labels" / "S02_N1.csv")
    data = load_task_data(run, "staging")
    y = data.y[data.record_ids.index("S02_N1")]
    assert len(y) == 100 and y[-1] == -1


def test_head_saved_as_safetensors_and_json_and_reloads(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=6)
    result = finetune(run, "staging", FinetuneConfig(mode="lstm", scheme="osf4", embedding="BAS",
                                                         bidirectional=True, **FAST))
    head_dir = run / "heads" / "staging"
    assert sorted(p.name for p in head_dir.iterdir()) == ["config.json", "model.safetensors",
                                                          "split.json"]
    heads, info = load_heads(head_dir)
    assert info["classes"] == ["W", "Light", "Deep", "REM"] and info["embedding"] == "BAS"
    assert info["encoder_checkpoint"]["id"] == "ckpt0000" and info["mode"] == "lstm"
    assert len(info["training_curve"]) >= 1 and "loss" in info["training_curve"][0]
    data = load_task_data(run, "staging", embedding="BAS", scheme="osf4")
    np.testing.assert_allclose(heads["staging"].predict_proba(data.X),
                               result.heads["staging"].predict_proba(data.X), atol=1e-6)
    assert heads["staging"].bidirectional is True
    info_run = json.loads((run / "run.json").read_text())["stages"]["finetune_staging"]
    assert info_run["mode"] == "lstm"


def test_events_head_and_ahi(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=10, n_epochs=120)
    result = finetune(run, "events", FinetuneConfig(mode="linear", epochs=40))
    assert set(result.heads) == {"events", "sleep", "ahi"}
    heads, info = load_heads(run / "heads" / "events")
    assert info["classes"] == ["apnea_hypopnea", "arousal", "desaturation"]
    ev = evaluate(run, "events", n_boot=50)
    apnea = ev.metrics["events"][0]
    assert apnea["name"] == "apnea_hypopnea" and apnea["summary"]["auroc"]["value"] > 0.8
    sev = ev.metrics["severity"]
    assert sev["n"] == 2 and "kappa_linear" in sev and len(ev.metrics["nights"]) == 2
    for name in ("metrics.json", "predictions.csv", "roc.png", "severity.png"):
        assert (ev.directory / name).is_file()


def test_embeddings_of_different_encoders_rejected(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=4)
    with h5py.File(run / "embeddings" / "S01_N1.h5", "a") as f:
        f.attrs["checkpoint_id"] = "other"
    with pytest.raises(StoreError, match="different encoders"):
        load_task_data(run, "staging")


def test_cli_finetune_exit_codes(tmp_path, capsys):
    run = make_embedding_run(tmp_path / "run", n_subjects=6)
    assert main(["finetune", "staging", "--run", str(run), "--mode", "linear", "--epochs", "2"]) == 0
    assert "saved to" in capsys.readouterr().out
    assert main(["finetune", "staging", "--run", str(tmp_path / "nothing")]) == 2
    assert "no embeddings" in capsys.readouterr().err
    assert main(["finetune", "staging", "--run", str(run), "--mode", "fewshot"]) == 2
    assert "--shots" in capsys.readouterr().err
    (run / "labels" / "S01_N1.csv").unlink()
    assert main(["finetune", "staging", "--run", str(run)]) == 2
    assert "S01_N1" in capsys.readouterr().err
    assert main(["finetune", "staging", "--run", str(run), "--skip-unlabelled", "--epochs", "2",
                 "--mode", "linear"]) == 0
    assert "SKIPPED S01_N1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "sleepiness", "--run", str(run)])
    assert exc.value.code == 2

"""``sleepfm predict``: a new EDF → a SleepFM hypnogram CSV with one row per 30 s epoch; and the
end-to-end fine-tuning mode (encoder unfrozen) on a small store."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from sleepfm.artifacts import load_encoder, load_heads, save_encoder
from sleepfm.cli import main
from sleepfm.config import FinetuneConfig
from sleepfm.io.labels import read_stages
from sleepfm.models import create_encoder
from sleepfm.stages.embed import embed
from sleepfm.stages.evaluate import evaluate
from sleepfm.stages.finetune import finetune
from sleepfm.stages.predict import predict
from sleepfm.stages.preprocess import preprocess_directory
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Six 10-minute synthetic nights (EEG/EOG/chin at 100 Hz), preprocessed, embedded with a
    randomly initialised tiny encoder, and an LSTM staging head."""
    root = tmp_path_factory.mktemp("predict")
    config = SyntheticConfig(duration_h=10 / 60, montage="staging",
                             sample_rates={"eeg": 100.0, "eog": 100.0, "emg": 100.0})
    for seed in range(6):
        write_night(generate_night(config, seed=seed, record_id=f"P{seed:02d}"), root / "edf")
    run = root / "run"
    assert not preprocess_directory(root / "edf", run).failed
    torch.manual_seed(0)
    save_encoder(create_encoder("sleepfm_tiny"), run / "checkpoints" / "encoder")
    embed(run)
    finetune(run, "staging", FinetuneConfig(epochs=3, hidden=16))
    return run


def test_predict_writes_one_row_per_epoch(small_run, tmp_path, make_edf):
    edf, _ = make_edf(tmp_path / "new.edf", [("EEG C3-M2", 256), ("EOG E1-M2", 256),
                                             ("EMG chin", 256)], duration=465.0)
    out = tmp_path / "hyp.csv"
    frame = predict(edf, small_run, out)
    assert len(frame) == 15  # 465 s: 15 whole 30 s epochs
    written = pd.read_csv(out)
    assert list(written.columns[:4]) == ["Start", "Stop", "StageName", "StageNumber"]
    assert [f"P_{c}" for c in ("W", "N1", "N2", "N3", "REM")] == list(written.columns[4:])
    np.testing.assert_allclose(written["Start"], np.arange(15) * 30.0)
    np.testing.assert_allclose(written["Stop"] - written["Start"], 30.0)
    hyp = read_stages(out)  # a valid SleepFM CSV
    assert len(hyp) == 15 and set(hyp.stages) <= {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(hyp.stages, written["StageNumber"])
    np.testing.assert_allclose(written.filter(like="P_").sum(1), 1.0, atol=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp.csv", "new.edf"]  # nothing else


def test_predict_cli(small_run, tmp_path, capsys):
    src = small_run.parent / "edf" / "P00.edf"
    out = tmp_path / "p00.csv"
    assert main(["predict", str(src), "--run", str(small_run), "--out", str(out)]) == 0
    assert "20 epochs staged" in capsys.readouterr().out
    assert len(read_stages(out)) == 20
    assert main(["predict", str(tmp_path / "missing.edf"), "--run", str(small_run),
                 "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["predict", str(src), "--run", str(tmp_path), "--out", str(out)]) == 2


def test_end_to_end_finetuning_mode(small_run, tmp_path):
    result = finetune(small_run, "staging", FinetuneConfig(mode="finetune", epochs=1,
                                                               batch_size=4, hidden=16))
    head_dir = small_run / "heads" / "staging"
    assert (head_dir / "encoder" / "model.safetensors").is_file()
    heads, info = load_heads(head_dir)
    assert info["mode"] == "finetune" and set(heads) == {"window"}
    # The encoder was trained: its weights moved away from the run's encoder.
    start, _ = load_encoder(small_run / "checkpoints" / "encoder")
    tuned = heads["window"].encoder.state_dict()
    moved = [k for k, v in start.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, tuned[k])]
    assert moved
    ev = evaluate(small_run, "staging", n_boot=20, figures=False)
    assert ev.metrics["mode"] == "finetune" and ev.metrics["test_records"] == result.split["test"]
    frame = predict(small_run.parent / "edf" / "P01.edf", small_run)
    assert len(frame) == 20
    info_run = json.loads((small_run / "run.json").read_text())["stages"]["finetune_staging"]
    assert info_run["mode"] == "finetune"


def test_the_released_encoder_is_fine_tuned_end_to_end(small_run, tmp_path):
    """``--mode finetune`` trains the released SleepFM architecture (here a small one with random
    weights, as an import of the published encoder would be) end to end; predict uses it."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    torch.manual_seed(0)
    save_encoder(create_encoder("sleepfm_reference", embed_dim=32, num_heads=4, num_layers=1,
                                pooling_heads=4, ffn_dim=48, conv_channels=(4, 4, 8, 8, 16, 16)),
                 run / "checkpoints" / "encoder")
    finetune(run, "staging", FinetuneConfig(mode="finetune", epochs=1, batch_size=4, hidden=16))
    heads, info = load_heads(run / "heads" / "staging")
    tuned = heads["window"].encoder
    assert info["mode"] == "finetune" and type(tuned).__name__ == "SleepFMReference"
    start, _ = load_encoder(run / "checkpoints" / "encoder")
    assert any(not torch.equal(v, tuned.state_dict()[k])
               for k, v in start.state_dict().items() if v.is_floating_point())
    assert len(predict(small_run.parent / "edf" / "P01.edf", run)) == 20


def test_predict_uses_the_runs_channel_map_and_offers_its_options(small_run, tmp_path, make_edf,
                                                                    capsys):
    """A run preprocessed with a channel map stages a recording whose leads only that map
    places; the options predict's errors suggest exist (--allow-truncated, --channel-map)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    kanal, _ = make_edf(tmp_path / "kanal.edf", [("Kanal 0", 100), ("Kanal 1", 100),
                                                 ("Kanal 2", 100)], duration=600)
    out = tmp_path / "h.csv"
    assert main(["predict", str(kanal), "--run", str(run), "--out", str(out)]) == 2
    assert "--channel-map" in capsys.readouterr().err
    (run / "channel_map.yaml").write_text("aliases:\n  Kanal 0: eeg\n  Kanal 1: eog\n"
                                          "  Kanal 2: emg\n")  # as preprocess keeps it
    assert len(predict(kanal, run)) == 20
    # Truncated: the error names --allow-truncated, and predict has that option.
    cut = tmp_path / "cut.edf"
    cut.write_bytes(kanal.read_bytes()[:-1000])
    assert main(["predict", str(cut), "--run", str(run), "--out", str(out)]) == 2
    assert "--allow-truncated" in capsys.readouterr().err
    assert main(["predict", str(cut), "--run", str(run), "--out", str(out),
                 "--allow-truncated"]) == 0
    # Other lead names: --channel-map for this recording.
    other, _ = make_edf(tmp_path / "other.edf", [("Lead A", 256), ("Lead B", 256)], duration=600)
    (tmp_path / "other.yaml").write_text("aliases:\n  Lead A: eeg\n  Lead B: eog\n")
    assert main(["predict", str(other), "--run", str(run), "--out", str(out),
                 "--channel-map", str(tmp_path / "other.yaml")]) == 0
    capsys.readouterr()


def test_preprocess_keeps_the_channel_map_with_the_run(tmp_path, make_edf):
    make_edf(tmp_path / "in" / "rec.edf", [("Kanal 1", 256)], duration=30)
    cmap = tmp_path / "map.yaml"
    cmap.write_text("aliases:\n  Kanal 1: eeg\n")
    assert not preprocess_directory(tmp_path / "in", tmp_path / "run",
                                    channel_map=str(cmap)).failed
    assert (tmp_path / "run" / "channel_map.yaml").read_text() == cmap.read_text()

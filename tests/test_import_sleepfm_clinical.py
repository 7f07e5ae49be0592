"""`sleepfm import-weights sleepfm-clinical`: SleepFM's released models into the project's formats.

The release is written from this project's implementations in the reference's layout and key names
(exactness against the reference code itself is checked outside the suite).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SAMPLES_DIR, write_sleepfm_clinical
from sleepfm.artifacts import load_encoder, load_heads
from sleepfm.channels import ChannelMap
from sleepfm.cli import main
from sleepfm.io.weights import read_sleepfm_clinical
from sleepfm.models.heads.reference import phenotype_risks
from sleepfm.stages.staging_model import StagingModel


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "sleepfm"
    models = write_sleepfm_clinical(root)
    out = root.parent / "weights"
    assert main(["import-weights", "sleepfm-clinical", str(root / "checkpoints"),
                 "--out", str(out)]) == 0
    return root, out, models


def test_the_encoder_round_trips_exactly(imported):
    _, out, models = imported
    encoder, record = load_encoder(out / "encoder")
    assert record["metadata"]["source"]["format"] == "sleepfm-clinical"
    g = torch.Generator().manual_seed(0)
    x = {"BAS": torch.randn(1, 2, 6 * 640, generator=g), "ECG": torch.randn(1, 1, 6 * 640,
                                                                           generator=g)}
    with torch.no_grad():
        want, got = models["encoder"](x), encoder(x)
        assert torch.equal(want.fused, got.fused)
        torch.testing.assert_close(models["encoder"].forward_windows(x),
                                   encoder.forward_windows(x), rtol=0, atol=0)


def test_the_heads_round_trip_exactly_with_names(imported):
    _, out, models = imported
    tokens = torch.randn(1, 4, 18, 128)
    present = torch.tensor([[True, True, False, True]])
    staging, record = load_heads(out / "staging")
    assert record["encoder_id"] == json.loads((out / "weights.json").read_text())[
        "models"]["encoder"]["id"]
    diagnosis, _ = load_heads(out / "diagnosis")
    with torch.no_grad():
        assert torch.equal(models["staging"](tokens, present),
                           staging["staging"](tokens, present))
        demo = torch.tensor([[0.5, 1.0]])
        assert torch.equal(models["diagnosis"](tokens, present, demo),
                           diagnosis["diagnosis"](tokens, present, demo))
    assert diagnosis["diagnosis"].phenotypes == {"0.0": "phenotype 0", "1.0": "phenotype 1",
                                                 "2.0": "phenotype 2"}


def test_the_channel_table_joins_the_aliases_and_the_manifest_says_what_came_from_where(imported):
    root, out, _ = imported
    cmap = ChannelMap.from_yaml(out / "channel_map.yaml")
    assert cmap.modality("f3_m1+m2") == "BAS" and cmap.modality("rip thorax") == "RESP"
    assert cmap.modality("Pleth") == "EMG"  # the reference's placement wins, and is reported
    manifest = json.loads((out / "weights.json").read_text())
    assert manifest["channel_table"]["disagreements"] == {"Pleth": ["EMG", "RESP"]}
    release = read_sleepfm_clinical(root / "checkpoints")
    assert manifest["models"]["staging"]["sha256"] == release.models["staging"].sha256
    assert "MIT" in manifest["licence"]


def test_keys_that_do_not_fit_are_listed_and_nothing_is_written(tmp_path, capsys):
    root = tmp_path / "sleepfm"
    write_sleepfm_clinical(root)
    path = root / "checkpoints" / "model_sleep_staging" / "best.pth"
    state = torch.load(path, weights_only=True)
    state["module.extra.weight"] = state.pop("module.fc.weight")
    torch.save(state, path)
    out = tmp_path / "weights"
    assert main(["import-weights", "sleepfm-clinical", str(root / "checkpoints"),
                 "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "1 missing (fc.weight)" in err and "1 unexpected (extra.weight)" in err
    assert "Traceback" not in err
    assert not (out / "encoder").exists() and not (out / "weights.json").exists()


def test_heads_alone_need_the_released_encoder(tmp_path, capsys):
    root = tmp_path / "sleepfm"
    write_sleepfm_clinical(root)
    assert main(["import-weights", "sleepfm-clinical",
                 str(root / "checkpoints" / "model_sleep_staging"),
                 "--out", str(tmp_path / "weights")]) != 0
    assert "not the encoder they read" in capsys.readouterr().err


def test_predict_with_the_published_weights_stages_data_samples(imported, tmp_path, capsys):
    _, out, _ = imported
    hyp = tmp_path / "hyp"
    code = main(["predict", str(SAMPLES_DIR), "--weights", str(out), "--out", str(hyp), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    csvs = sorted(p.name for p in hyp.glob("*.csv"))
    assert "SC4001E0-PSG_first300s.csv" in csvs and len(csvs) == 5
    frame = pd.read_csv(hyp / "SYN0001.csv")
    assert list(frame.columns[:4]) == ["Start", "Stop", "StageName", "StageNumber"]
    np.testing.assert_allclose(frame.filter(like="P_").sum(axis=1), 1.0, atol=1e-3)
    assert "5 staged, 0 failed" in printed


def test_predict_with_age_and_sex_writes_the_phenotype_risks(imported, tmp_path, capsys):
    _, out, models = imported
    hyp = tmp_path / "night.csv"
    edf = SAMPLES_DIR / "SYN0001.edf"
    assert main(["predict", str(edf), "--weights", str(out), "--out", str(hyp),
                 "--age", "61", "--sex", "F"]) == 0
    assert "highest phenotype risks" in capsys.readouterr().out
    risks = pd.read_csv(tmp_path / "night.risks.csv", dtype={"phecode": str})
    assert list(risks["phecode"]) == ["0.0", "1.0", "2.0"]
    assert sorted(risks["rank"]) == [1, 2, 3]
    model = StagingModel.from_weights(out)  # the same risks from the arrays
    tokens = model.night_tokens(edf)
    want = phenotype_risks(models["diagnosis"], tokens, age=0.61, sex=0.0)
    np.testing.assert_allclose(risks["log_hazard"], want, atol=1e-5)


def test_predict_refuses_bad_demographics_before_reading(imported, tmp_path, capsys):
    _, out, _ = imported
    edf = str(SAMPLES_DIR / "SYN0001.edf")
    assert main(["predict", edf, "--weights", str(out), "--out", str(tmp_path / "a.csv"),
                 "--age", "61", "--sex", "X"]) != 0
    assert "not one of M/F" in capsys.readouterr().err
    demo = tmp_path / "demo.csv"
    demo.write_text("Study ID,age,gender\nSYN0001,61,F\nSYN0002,abc,M\n")
    assert main(["predict", str(SAMPLES_DIR), "--weights", str(out), "--out",
                 str(tmp_path / "o"), "--demographics", str(demo)]) != 0
    assert "row 3" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists()

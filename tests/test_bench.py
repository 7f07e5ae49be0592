"""``sleepfm bench`` on a tiny budget: a complete table (every objective × setting × task, both
splits, the lead conditions, the baselines), cells reused on a rerun and redone when their
settings change, and clear errors for a wrong backbone or setting."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sleepfm import RunDir, bench, preprocess_directory
from sleepfm.cli import main
from sleepfm.exceptions import InvalidParameterError
from sleepfm.ssl import list_objectives
from sleepfm.synthetic_sites import write_site_cohort

pytest.importorskip("yasa")

TINY = {"width": 16, "depth": 1, "heads": 1, "dim_head": 16, "mlp_dim": 32}
FAST = dict(encoder_overrides=TINY, steps=2, batch_size=16, probe_epochs=2, finetune_steps=2,
            n_boot=0, shots=[2], shot_nights=[1], test_size=0.3, val_size=0.2, seed=0)
OBJECTIVES = ["loo_contrastive", "simclr", "dino", "mae", "vqvae", "ar"]
TASKS = {"stage5", "stage4", "arousal", "hypopnea", "desaturation"}


@pytest.fixture(scope="module")
def site_run(tmp_path_factory):
    """Eight half-hour nights of site A and two of site B, preprocessed."""
    root = tmp_path_factory.mktemp("bench")
    write_site_cohort(root / "edf", 8, site="A", hours=0.5, seed=3)
    write_site_cohort(root / "edf", 2, site="B", hours=0.5, seed=4)
    batch = preprocess_directory(root / "edf", root / "run", progress=False)
    assert not batch.failed
    return root / "run"


@pytest.fixture(scope="module")
def result(site_run):
    return bench(site_run, objectives=OBJECTIVES, conditions=["all", "no_eeg", "eeg_eog_only"],
                 scaling=[0.0, 0.5], test_site="B", **FAST)


def test_complete_table(result, site_run):
    table = result.table
    for objective in OBJECTIVES:
        for setting in ("linear", "finetune", "fewshot"):
            rows = table[(table["method"] == objective) & (table["setting"] == setting)]
            assert set(rows["task"]) == TASKS, (objective, setting)
            assert set(rows["split"]) == {"held_out", "new_site"}
            assert set(rows["condition"]) == {"all", "no_eeg", "eeg_eog_only"}
    main_rows = table[(table["condition"] == "all") & (table["task"] == "stage5")
                      & (table["labels"].isin(["100%", "shipped"]))
                      & (table["pretrain_fraction"].fillna(1.0) == 1.0)]
    assert {"scratch", "yasa", "yasa_lgbm"} <= set(main_rows["method"])
    assert np.isfinite(main_rows["auroc"]).all() and (main_rows["n_epochs"] > 0).all()
    assert ((main_rows["auroc"] >= 0) & (main_rows["auroc"] <= 1)).all()
    # the few-shot and label columns, and the data-scaling study of DINO
    assert {"2/class", "1 night"} <= set(table.loc[table["setting"] == "fewshot", "labels"])
    scaling = table[(table["method"] == "dino") & (table["setting"] == "linear")]
    assert set(scaling["pretrain_fraction"]) == {0.0, 0.5, 1.0}
    # YASA without EEG does not apply, and says so
    no_eeg = table[(table["method"] == "yasa") & (table["condition"] == "no_eeg")]
    assert len(no_eeg) and no_eeg["auroc"].isna().all()
    assert no_eeg["note"].str.contains("not applicable").all()
    report = RunDir(site_run).report_dir("bench")
    for name in ("results.csv", "results.md", "missing_leads.png", "metrics.json"):
        assert (report / name).is_file(), name
    saved = pd.read_csv(report / "results.csv")
    assert len(saved) == len(table)
    text = (report / "results.md").read_text()
    assert "## Held-out subjects" in text and "## New site" in text and "Missing leads" in text
    split = json.loads((site_run / "bench" / "split.json").read_text())
    assert split["new_site"] and all(r.startswith("SITEB") for r in split["new_site"])
    assert not set(split["pretrain"]) & (set(split["test"]) | set(split["new_site"]))


def test_rerun_reuses_every_cell_and_redoes_changed_ones(result, site_run):
    cells = site_run / "bench" / "cells"
    before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    encoders = {p: p.stat().st_mtime_ns for p in (site_run / "bench" / "encoders").glob("*/cell.json")}
    again = bench(site_run, objectives=OBJECTIVES, conditions=["all", "no_eeg", "eeg_eog_only"],
                  scaling=[0.0, 0.5], test_site="B", **FAST)
    assert {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")} == before
    pd.testing.assert_frame_equal(again.table, result.table)
    changed = bench(site_run, objectives=["mae"], settings=["linear"], conditions=["all"], test_site="B",
                    scaling=[], baselines=[], **{**FAST, "probe_epochs": 3})
    redone = [p.name for p in cells.glob("*.json") if p.stat().st_mtime_ns != before.get(p.name)]
    assert redone and all(name.startswith("mae-linear") for name in redone)
    assert {p: p.stat().st_mtime_ns for p in encoders} == encoders  # no encoder trained again
    assert set(changed.table["method"]) == {"mae"}
    # a pre-training that did not finish (killed) is taken up again, the others are kept
    marker = site_run / "bench" / "encoders" / "mae" / "cell.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "done": False}))
    bench(site_run, objectives=["mae"], settings=["linear"], conditions=["all"], test_site="B",
          scaling=[], baselines=[], **FAST)
    assert json.loads(marker.read_text())["done"] is True
    assert {p: p.stat().st_mtime_ns for p in encoders if p != marker} == \
        {p: t for p, t in encoders.items() if p != marker}


def test_mistakes(site_run, capsys):
    with pytest.raises(InvalidParameterError, match="ViT-1D"):
        bench(site_run, **{**FAST, "encoder": "sleepfm_tiny", "encoder_overrides": {}})
    with pytest.raises(InvalidParameterError, match="settings"):
        bench(site_run, settings=["linear", "zero-shot"], **FAST)
    assert main(["bench", "--run", str(site_run), "--tasks", "sleepiness"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sleepiness" in err[0] and "stage" in err[0]
    assert set(OBJECTIVES) <= set(list_objectives())

"""``sleepfm evaluate``: held-out test subjects only, metrics equal scikit-learn's on the written
predictions, reports and figures written, run.json updated, CLI exit codes."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from sleepfm.cli import main
from sleepfm.config import FinetuneConfig
from sleepfm.exceptions import StoreError
from sleepfm.stages.evaluate import evaluate
from sleepfm.stages.finetune import finetune

from test_finetune import make_embedding_run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory):
    run = make_embedding_run(tmp_path_factory.mktemp("eval") / "run", n_subjects=12, n_epochs=100,
                             signal=0.5)
    finetune(run, "staging", FinetuneConfig(epochs=8, hidden=32))
    return run


def test_metrics_agree_with_scikit_learn(staged_run):
    ev = evaluate(staged_run, "staging", n_boot=200)
    pred = pd.read_csv(staged_run / "reports" / "staging" / "predictions.csv")
    scored = pred[pred["true"] >= 0]
    t, p = scored["true"].to_numpy(), scored["pred"].to_numpy()
    m = json.loads((staged_run / "reports" / "staging" / "metrics.json").read_text())["summary"]
    assert m["accuracy"]["value"] == pytest.approx(skm.accuracy_score(t, p))
    assert m["macro_f1"]["value"] == pytest.approx(skm.f1_score(t, p, average="macro"))
    assert m["kappa"]["value"] == pytest.approx(skm.cohen_kappa_score(t, p))
    per_class = skm.f1_score(t, p, average=None, labels=range(5))
    for k, name in enumerate(["W", "N1", "N2", "N3", "REM"]):
        assert m[f"f1_{name}"]["value"] == pytest.approx(per_class[k])
        assert m[f"f1_{name}"]["ci_low"] <= m[f"f1_{name}"]["value"] <= m[f"f1_{name}"]["ci_high"]
    np.testing.assert_array_equal(ev.metrics["confusion"],
                                  skm.confusion_matrix(t, p, labels=range(5)))
    # probabilities are per epoch and the prediction is their argmax
    probs = pred[[f"p_{c}" for c in ["W", "N1", "N2", "N3", "REM"]]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-3)
    np.testing.assert_array_equal(probs.argmax(1), pred["pred"])
    assert m["macro_f1"]["ci_low"] <= m["macro_f1"]["value"] <= m["macro_f1"]["ci_high"]
    assert m["macro_f1"]["ci_low"] < m["macro_f1"]["ci_high"]


def test_only_test_subjects_and_reports_written(staged_run):
    ev = evaluate(staged_run, "staging", n_boot=100)
    split = json.loads((staged_run / "heads" / "staging" / "split.json").read_text())
    pred = pd.read_csv(ev.directory / "predictions.csv")
    assert sorted(pred["record_id"].unique()) == sorted(split["test"])
    assert not set(pred["subject_id"]) & {split["subjects"][r] for r in split["train"]}
    assert list(pred.columns[:5]) == ["record_id", "subject_id", "epoch", "true", "pred"]
    assert pred.groupby("record_id")["epoch"].max().eq(99).all()
    for name in ("metrics.json", "predictions.csv", "confusion.png", "hypnograms.png"):
        path = ev.directory / name
        assert path.is_file() and path.stat().st_size > 0
    assert (ev.directory / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((ev.directory / "metrics.json").read_text())
    assert metrics["n_boot"] == 100 and metrics["n_test_subjects"] == len(split["test"])
    stages = json.loads((staged_run / "run.json").read_text())["stages"]
    assert "evaluate_staging" in stages and "finetune_staging" in stages
    assert stages["evaluate_staging"]["test_records"] == sorted(split["test"])


def test_event_metrics_agree_with_scikit_learn(tmp_path):
    run = make_embedding_run(tmp_path / "run", n_subjects=10, n_epochs=80)
    finetune(run, "events", FinetuneConfig(mode="linear", epochs=10))
    ev = evaluate(run, "events", n_boot=100)
    pred = pd.read_csv(ev.directory / "predictions.csv")
    scored = pred[pred["true_apnea_hypopnea"] >= 0]
    apnea = ev.metrics["events"][0]["summary"]
    assert apnea["auroc"]["value"] == pytest.approx(
        skm.roc_auc_score(scored["true_apnea_hypopnea"], scored["p_apnea_hypopnea"]), abs=1e-4)
    assert apnea["auprc"]["value"] == pytest.approx(
        skm.average_precision_score(scored["true_apnea_hypopnea"], scored["p_apnea_hypopnea"]),
        abs=1e-3)
    nights = pd.DataFrame(ev.metrics["nights"])
    assert set(nights["record_id"]) == set(pred["record_id"])
    sev = ev.metrics["severity"]
    grades = ["none", "mild", "moderate", "severe"]
    t = nights["grade_true"].map(grades.index)
    p = nights["grade_pred"].map(grades.index)
    assert sev["accuracy"]["value"] == pytest.approx(skm.accuracy_score(t, p))


def test_evaluate_without_head_and_cli_exit_codes(tmp_path, staged_run, capsys):
    bare = make_embedding_run(tmp_path / "bare", n_subjects=4)
    with pytest.raises(StoreError, match="sleepfm finetune"):
        evaluate(bare, "staging")
    assert main(["evaluate", "staging", "--run", str(bare)]) == 2
    assert "no trained head" in capsys.readouterr().err
    assert main(["evaluate", "staging", "--run", str(staged_run), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "macro_f1" in out and "reports written to" in out

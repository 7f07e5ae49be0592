"""Disease prediction end to end on a small synthetic cohort: outcome tables → embeddings → Cox
heads (and the demographics baseline) → survival metrics, risks of every subject, fairness,
enrichment and per-modality attribution; site transfer, label fraction, stale inputs, CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sleepfm.artifacts import load_encoder
from sleepfm.cli import main
from sleepfm.config import EmbedConfig
from sleepfm.exceptions import LabelError, StoreError
from sleepfm.io.embeddings import read_embeddings
from sleepfm.rundir import RunDir
from sleepfm.stages.disease import fit_head, head_inputs
from sleepfm.stages.disease_data import load_disease_data, without_modality
from sleepfm.stages.embed import embed, embed_records
from sleepfm.stages.evaluate import evaluate
from sleepfm.stages.finetune import finetune
from sleepfm.stages.preprocess import preprocess_directory
from sleepfm.stages.pretrain import pretrain
from sleepfm.eval.survival import concordance_index
from sleepfm.synthetic_cohort import write_synthetic_cohort

torch.set_num_threads(1)
N_SUBJECTS = 200


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    """A run of a synthetic cohort (10-minute nights), preprocessed, pre-trained briefly and
    embedded; its outcomes in both formats beside it."""
    root = tmp_path_factory.mktemp("disease")
    write_synthetic_cohort(root / "cohort", N_SUBJECTS, minutes=10, seed=0)
    write_synthetic_cohort(root / "long", 4, minutes=10, seed=0, fmt="long")  # outcomes only are used
    run = root / "run"
    preprocess_directory(root / "cohort", run, workers=2)
    pretrain(run, encoder="sleepfm_tiny", max_epochs=1, max_steps=25, batch_size=16,
             val_fraction=0.1, patience=0, progress=False)
    embed(run, progress=False)
    return root


def _fresh(cohort_run, tmp_path):
    """A copy of the embedded run without heads or reports."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cohort_run / "run", run, ignore=shutil.ignore_patterns("heads", "reports",
                                                                           "outcomes"))
    return run


def test_finetune_and_evaluate_write_every_report(cohort_run, tmp_path):
    run = _fresh(cohort_run, tmp_path)
    result = finetune(run, "disease", outcomes=str(cohort_run / "cohort" / "outcomes"),
                      mode="linear", test_size=0.3)
    assert set(result.heads) == {"disease", "baseline"}
    assert result.heads["disease"].n_phenotypes_ == 4
    ev = evaluate(run, "disease", n_boot=100)
    out = RunDir(run).report_dir("disease")
    for name in ("metrics.json", "metrics.csv", "risks.csv", "fairness.csv", "enrichment.csv",
                 "candidates.csv", "attribution.csv", "attribution_risks.csv", "forest.png",
                 "km.png", "enrichment.png", "attribution.png"):
        assert (out / name).is_file(), name
    s = ev.summary
    assert set(s.model) == {"head", "baseline", "head - baseline"}
    assert set(s.metric) == {"c_index", "auroc"} and len(s) == 3 * 4 * 2
    # risks of every record, with the split it belongs to
    risks = pd.read_csv(out / "risks.csv")
    assert risks.record_id.nunique() == N_SUBJECTS
    assert set(risks.split) == {"train", "val", "test"}
    test = set(risks.loc[risks.split == "test", "record_id"])
    assert test == set(result.split["test"])
    # the head's reported C-index is the C-index of its risks on the test subjects
    data = load_disease_data(run)
    rows = data.index(result.split["test"])
    k = data.phenotypes.index("stroke")
    r = risks[(risks.phenotype == "stroke")].set_index("record_id").loc[result.split["test"]]
    expected = concordance_index(data.time[rows, k], r.risk.to_numpy(), data.event[rows, k])
    got = s[(s.model == "head") & (s.phenotype == "stroke") & (s.metric == "c_index")].value
    assert got.iloc[0] == pytest.approx(expected, abs=1e-5)
    # fairness: every attribute, groups too small listed with a reason
    fair = ev.fairness
    assert {"overall", "sex", "race", "age", "site"} <= set(fair.attribute)
    assert (fair.status != "ok").any() and fair.loc[fair.status != "ok", "value"].isna().all()
    # enrichment for head and baseline; candidates ranked, eligible test subjects only
    assert set(ev.enrichment.model) == {"head", "baseline"}
    cand = ev.candidates
    assert list(cand["rank"]) == list(range(1, len(cand) + 1))
    assert set(cand.record_id) <= test and cand.risk.is_monotonic_decreasing
    # attribution: every modality of the cohort, Δrisk for every test subject
    assert set(ev.attribution.modality) == {"BAS", "ECG", "EMG", "RESP"}
    assert len(ev.attribution_risks) == len(test) * 4 * 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test_subjects"] == len(test) and "synthetic" in metrics["synthetic_note"]
    # a second evaluation replaces the report as a whole: nothing of the first one survives
    again = evaluate(run, "disease", n_boot=20, fairness=False, attribution=False, figures=False)
    assert again.directory == out
    assert sorted(p.name for p in out.iterdir()) == [
        "candidates.csv", "enrichment.csv", "metrics.csv", "metrics.json", "risks.csv"]


def test_head_beats_the_baseline_and_permuted_embeddings_do_not(cohort_run, tmp_path):
    """Held-out subjects (5 folds by subject, every subject tested once): the nights carry the
    hazard, so a head on their embeddings ranks better than age and sex alone; the same head on
    embeddings permuted across subjects does not."""
    from sleepfm.config import DiseaseConfig

    run = _fresh(cohort_run, tmp_path)
    finetune(run, "disease", outcomes=str(cohort_run / "cohort" / "outcomes"), mode="demographics")
    data = load_disease_data(run)
    config = DiseaseConfig(mode="linear")
    subjects = np.unique(data.subjects)
    fold_of = dict(zip(subjects, np.random.default_rng(0).permutation(len(subjects)) % 5))
    folds = np.array([fold_of[s] for s in data.subjects])

    def held_out_c(mode, night):
        data.night = night
        scores = []
        for f in range(5):
            train, test = list(np.flatnonzero(folds != f)), list(np.flatnonzero(folds == f))
            risk = fit_head(data, train, [], config, mode).predict_risk(
                *head_inputs(data, test, mode))
            scores += [concordance_index(data.time[test, k], risk[:, k], data.event[test, k])
                       for k in range(len(data.phenotypes))]
        return np.nanmean(scores)

    night = data.night.copy()
    head = held_out_c("linear", night)
    baseline = held_out_c("demographics", night)
    permuted = np.mean([held_out_c("linear", night[np.random.default_rng(s).permutation(len(night))])
                        for s in range(3)])
    assert head > baseline + 0.03, (head, baseline)
    assert permuted < baseline + 0.01, (permuted, baseline)


def test_attribution_equals_a_masked_re_embedding(cohort_run, tmp_path):
    """Leaving a modality out of the stored embeddings gives what the encoder gives when the
    recording has no channel of that modality."""
    run = RunDir(cohort_run / "run")
    finetune_run = _fresh(cohort_run, tmp_path)
    finetune(finetune_run, "disease", outcomes=str(cohort_run / "cohort" / "outcomes"),
             mode="linear")
    data = load_disease_data(finetune_run)
    encoder, record = load_encoder(run.encoder_dir)
    rid = data.record_ids[3]
    reader = run.store().open(rid)

    class Without:  # the record as if it had no RESP channel
        def __init__(self, inner, modality):
            self._inner = inner
            self.channels = {m: c for m, c in inner.channels.items() if m != modality}

        def __getattr__(self, name):
            return getattr(self._inner, name)

    other = RunDir(tmp_path / "masked")
    other.embeddings_dir.mkdir(parents=True)
    attrs = {"checkpoint": str(run.encoder_dir), "checkpoint_id": "x"}
    list(embed_records(other, [Without(reader, "RESP")], encoder, EmbedConfig(), attrs))
    for level in ("night", "window"):
        masked = read_embeddings(other.embedding_file(rid), level=level)
        ours = without_modality(data, finetune_run, "RESP", embedding_level=level,
                                record_ids=[rid])[0]
        np.testing.assert_allclose(ours, masked, atol=1e-5)
        full = read_embeddings(run.embedding_file(rid), level=level)
        assert np.abs(full - masked).max() > 1e-3  # leaving RESP out changes the embedding


def test_lstm_site_transfer_and_label_fraction(cohort_run, tmp_path):
    run = _fresh(cohort_run, tmp_path)
    outcomes = str(cohort_run / "cohort" / "outcomes")
    result = finetune(run, "disease", outcomes=outcomes, mode="lstm", test_site="C",
                      max_iter=30, hidden=16)
    cohort = pd.read_csv(cohort_run / "cohort" / "cohort.csv").set_index("record_id")
    assert set(cohort.loc[result.split["test"], "site"]) == {"C"}
    assert "C" not in set(cohort.loc[result.split["train"] + result.split["val"], "site"])
    assert result.info["level"] == "window" and result.split["test_site"] == "C"
    ev = evaluate(run, "disease", n_boot=50, attribution=False, fairness=False)
    assert ev.metrics["test_site"] == "C" and ev.attribution.empty
    full = len(result.train_records)
    part = finetune(run, "disease", mode="linear", label_fraction=0.25)  # outcomes kept in RUN
    assert 0 < len(part.train_records) < 0.4 * full + 5
    with pytest.raises(LabelError, match="no record is at site 'Z'"):
        finetune(run, "disease", mode="linear", test_site="Z")


def test_long_outcome_tables_and_stale_inputs(cohort_run, tmp_path):
    run = _fresh(cohort_run, tmp_path)
    # the long tables cover 4 records only: the others are reported as left out
    result = finetune(run, "disease", outcomes=str(cohort_run / "long" / "outcomes"),
                      mode="demographics", test_size=0.25, val_size=0.0)
    assert any("no outcomes" in line for line in result.info["data_report"])
    finetune(run, "disease", outcomes=str(cohort_run / "cohort" / "outcomes"), mode="linear")
    # changed outcome tables: the head is out of date
    table = RunDir(run).outcomes_dir / "time_to_event.csv"
    frame = pd.read_csv(table)
    frame.iloc[0, 1] = frame.iloc[0, 1] + 1
    frame.to_csv(table, index=False)
    with pytest.raises(StoreError, match="outcome tables changed"):
        evaluate(run, "disease", n_boot=20)


def test_cli_finetune_and_evaluate_disease(cohort_run, tmp_path, capsys):
    run = _fresh(cohort_run, tmp_path)
    outcomes = str(cohort_run / "cohort" / "outcomes")
    assert main(["finetune", "disease", "--run", str(run), "--outcomes", outcomes, "--mode",
                 "linear", "--phenotypes", "stroke,death"]) == 0
    assert "on 2 phenotypes" in capsys.readouterr().out
    assert main(["evaluate", "disease", "--run", str(run), "--n-boot", "50", "--horizon", "5",
                 "--no-attribution", "--quantiles", "0.1,0.5"]) == 0
    out = capsys.readouterr().out
    assert "horizon 5 y" in out and "stroke" in out and "head - baseline" in out
    # a user's mistakes: one line, exit 2
    assert main(["finetune", "disease", "--run", str(run), "--phenotypes", "gout"]) == 2
    assert "not in the outcome tables" in capsys.readouterr().err
    assert main(["finetune", "disease", "--run", str(tmp_path / "empty"), "--outcomes",
                 outcomes]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert main(["evaluate", "disease", "--run", str(run), "--candidates-phenotype", "gout"]) == 2
    err = capsys.readouterr().err
    assert "candidates_phenotype 'gout' is not one of ['stroke', 'death']" in err

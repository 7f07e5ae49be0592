"""Fresh artefacts: every artefact records what it was made from, a stage redoes exactly what is
out of date, and a stale result is never used."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sleepfm.artifacts import save_encoder
from sleepfm.cli import main
from sleepfm.exceptions import StoreError
from sleepfm.io.embeddings import read_embedding_attrs
from sleepfm.io.labels import Hypnogram
from sleepfm.models import create_encoder
from sleepfm.rundir import RunDir
from sleepfm.stages.embed import embed
from sleepfm.stages.evaluate import evaluate
from sleepfm.stages.finetune import finetune
from sleepfm.stages.preprocess import preprocess_directory
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

torch.set_num_threads(1)
CONFIG = SyntheticConfig(duration_h=10 / 60, montage="staging",
                         sample_rates={"eeg": 100.0, "eog": 100.0, "emg": 100.0})


def _write(folder, seed, record_id):
    write_night(generate_night(CONFIG, seed=seed, record_id=record_id), folder)


@pytest.fixture
def run(tmp_path):
    for seed in range(5):
        _write(tmp_path / "edf", seed, f"F{seed:02d}")
    run = RunDir(tmp_path / "run")
    assert not preprocess_directory(tmp_path / "edf", run).failed
    torch.manual_seed(0)
    save_encoder(create_encoder("sleepfm_tiny"), run.encoder_dir)
    assert set(embed(run).values()) == {"ok"}
    return run


def test_embed_redoes_exactly_the_records_whose_store_changed(run, tmp_path, capsys):
    _write(tmp_path / "edf", 42, "F01")  # another night under the same name
    batch = preprocess_directory(tmp_path / "edf", run)
    assert batch.summary == "5 ok (4 already done), 0 failed" and batch.redone == ["F01"]
    store_fp = run.store().open("F01").fingerprint
    assert main(["embed", "--run", str(run.path), "--quiet"]) == 0
    assert "1 embedded (1 of them out of date), 4 already done" in capsys.readouterr().out
    assert run.stage_info("embed")["records"]["F01"] == "updated"
    assert read_embedding_attrs(run.embedding_file("F01"))["store_fingerprint"] == store_fp
    assert set(embed(run).values()) == {"skipped"}
    # A new encoder makes every record out of date.
    torch.manual_seed(1)
    save_encoder(create_encoder("sleepfm_tiny"), run.encoder_dir)
    assert set(embed(run).values()) == {"updated"}


def test_stale_embeddings_are_never_paired_with_new_labels(run, tmp_path):
    _write(tmp_path / "edf", 42, "F02")
    preprocess_directory(tmp_path / "edf", run)  # the store changed; embed was not run again
    with pytest.raises(StoreError, match=r"embeddings of 1 records are older than their store "
                                         r"records \(F02\); run `sleepfm embed"):
        finetune(run, "staging", epochs=1, hidden=8)
    embed(run)
    assert finetune(run, "staging", epochs=1, hidden=8).directory == run.head_dir("staging")


def test_a_head_trained_on_data_that_changed_is_not_evaluated(run):
    result = finetune(run, "staging", epochs=1, hidden=8, test_size=0.2, val_size=0.0)
    record = json.loads((run.head_dir("staging") / "config.json").read_text())
    assert set(record["inputs"]) == set(result.split["train"] + result.split["val"])
    ev = evaluate(run, "staging", n_boot=20, figures=False)
    assert ev.metrics["head_id"] == record["weights_sha256"][:16]
    rid = result.split["train"][0]
    Hypnogram(np.full(20, 2)).to_csv(run.stage_labels(rid))  # relabelled since (all N2)
    with pytest.raises(StoreError, match=rf"trained on data that changed since \(1 nights, e.g. "
                                         rf"{rid}.*sleepfm finetune staging"):
        evaluate(run, "staging", n_boot=20, figures=False)
    finetune(run, "staging", epochs=1, hidden=8, split=run.split_file("staging"))
    evaluate(run, "staging", n_boot=20, figures=False)

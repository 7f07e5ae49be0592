"""RunDir: the one owner of a run directory's layout, run.json and artefact ids."""
from __future__ import annotations

import json

import pytest
import torch

from sleepfm import RunDir
from sleepfm.artifacts import save_encoder
from sleepfm.exceptions import InvalidParameterError, StoreError
from sleepfm.models import create_encoder
from sleepfm.utils import sha256_file


def test_layout(tmp_path):
    run = RunDir(tmp_path / "run")
    assert RunDir(run) == run and hash(RunDir(run)) == hash(run)
    assert run.store_file("r1") == tmp_path / "run" / "hdf5" / "r1.h5"
    assert run.stage_labels("r1").name == "r1.csv" and run.event_labels("r1").name == "r1.events.csv"
    assert run.embedding_file("r1") == tmp_path / "run" / "embeddings" / "r1.h5"
    assert run.encoder_dir == tmp_path / "run" / "checkpoints" / "encoder"
    assert run.last_checkpoint == tmp_path / "run" / "checkpoints" / "lightning" / "last.ckpt"
    assert run.split_file("staging") == tmp_path / "run" / "heads" / "staging" / "split.json"
    assert run.report_dir("events") == tmp_path / "run" / "reports" / "events"
    assert run.log_dir("pretrain") == tmp_path / "run" / "logs" / "pretrain"
    assert run / "cohort.csv" == run.cohort_file
    with pytest.raises(InvalidParameterError, match="'task' parameter"):
        run.head_dir("sleepiness")


def test_run_json_records_each_stage(tmp_path):
    run = RunDir(tmp_path / "run").prepare()
    assert run.read_run_json() == {} and run.stage_info("embed") == {}
    run.record_stage("embed", {"config": {"batch_size": 4}, "loss": float("nan")})
    run.record_stage("pretrain", {"epochs": 2})
    info = json.loads(run.run_json.read_text())
    assert list(info["stages"]) == ["embed", "pretrain"]
    assert run.stage_info("embed")["config"] == {"batch_size": 4}
    assert run.stage_info("embed")["loss"] is None  # NaN is written as null
    assert {"sleepfm_version", "python", "time", "command"} <= set(info["stages"]["pretrain"])
    assert "embed, pretrain" in repr(run)
    run.run_json.write_text("{oops")
    with pytest.raises(StoreError, match="run.json is not valid JSON"):
        run.read_run_json()


def test_artefact_ids_come_from_the_recorded_checksum(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    with pytest.raises(StoreError, match="no encoder; run `sleepfm pretrain"):
        run.encoder_id()
    save_encoder(create_encoder("sleepfm_tiny"), run.encoder_dir)
    torch.manual_seed(1)
    other = save_encoder(create_encoder("sleepfm_tiny"), tmp_path / "other")
    expected = sha256_file(run.encoder_dir / "model.safetensors")[:16]
    monkeypatch.setattr("sleepfm.checkpoint.sha256_file", lambda *_: pytest.fail("re-hashed"))
    assert run.encoder_id() == expected
    assert run.encoder_id(other) != expected
    with pytest.raises(StoreError, match="no trained head; run `sleepfm finetune staging"):
        run.head_record("staging")


def test_stages_out_of_order_name_the_command(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(StoreError, match="no HDF5 store; run `sleepfm preprocess"):
        run.store()
    with pytest.raises(StoreError, match="no embeddings; run `sleepfm embed"):
        run.embedded_records()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file; pass a directory"):
        RunDir(tmp_path / "file").prepare()


def test_subjects_from_the_cohort_table(tmp_path):
    run = RunDir(tmp_path / "run").prepare()
    assert run.subjects(["a", "b"]) == {"a": "a", "b": "b"}
    run.cohort_file.write_text("record_id,subject_id\na,S1\nb,S1\n")
    assert run.subjects(["a", "b", "c"]) == {"a": "S1", "b": "S1", "c": "c"}

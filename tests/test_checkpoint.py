"""Checkpoints: bit-exact round trip, atomic writes, no pickle, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

import sleepfm.checkpoint as ckpt
from sleepfm.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint
from sleepfm.exceptions import StoreError
from sleepfm.models import SleepFMEncoder, count_parameters, create_encoder


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"BAS": torch.randn(2, 3, 6 * 640, generator=g),
            "RESP": torch.randn(2, 2, 6 * 640, generator=g)}


@pytest.fixture
def model() -> SleepFMEncoder:
    torch.manual_seed(0)
    m = create_encoder("sleepfm_tiny", modalities=("BAS", "RESP"))
    m.train()
    m(inputs(1))  # move the BatchNorm running statistics away from their defaults
    return m.eval()


def embed(m: SleepFMEncoder) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return m.forward_features(inputs())


def test_round_trip_is_bit_exact(model, tmp_path):
    meta = {"training_data": {"records": 12, "cohorts": ["synthetic"]}, "objective": "loo_contrastive"}
    path = save_checkpoint(model, tmp_path / "ckpt", metadata=meta)
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded, record = load_checkpoint(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert record["metadata"] == meta
    assert record["modalities"] == ["BAS", "RESP"]
    assert record["num_parameters"] == count_parameters(model)
    assert record["architecture"] == "SleepFMEncoder" and record["created"] and record["sleepfm_version"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    before, after = embed(model), embed(loaded)
    for m in before:
        assert torch.equal(before[m], after[m])


def test_pretrained_methods_and_overwrite(model, tmp_path):
    path = tmp_path / "enc"
    create_encoder("sleepfm_tiny", modalities=("BAS", "RESP")).save_pretrained(path)
    model.save_pretrained(path, metadata={"epoch": 3})  # replaces the first checkpoint
    loaded = SleepFMEncoder.from_pretrained(path)
    assert torch.equal(embed(loaded)["BAS"], embed(model)["BAS"])
    assert json.loads((path / CONFIG_NAME).read_text())["metadata"] == {"epoch": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]  # no temporaries left behind


def test_loading_never_unpickles(model, tmp_path, monkeypatch):
    save_checkpoint(model, tmp_path / "c")

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    load_checkpoint(tmp_path / "c")


def test_failed_save_leaves_the_old_checkpoint(model, tmp_path, monkeypatch):
    path = save_checkpoint(model, tmp_path / "c", metadata={"v": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(create_encoder("sleepfm_tiny"), path, metadata={"v": 2})
    _, record = load_checkpoint(path)
    assert record["metadata"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_corrupt_weights_give_a_clear_error(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "c")
    weights = path / WEIGHTS_NAME
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StoreError, match="checksum"):
        load_checkpoint(path)
    # Without a recorded checksum the safetensors reader itself must fail cleanly.
    record = json.loads((path / CONFIG_NAME).read_text())
    del record["weights_sha256"]
    (path / CONFIG_NAME).write_text(json.dumps(record))
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StoreError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_missing_and_corrupt_files(model, tmp_path):
    with pytest.raises(StoreError, match="No checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="has no config.json"):
        load_checkpoint(tmp_path / "empty")
    path = save_checkpoint(model, tmp_path / "c")
    (path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        load_checkpoint(path)
    path = save_checkpoint(model, tmp_path / "d")
    (path / WEIGHTS_NAME).unlink()
    with pytest.raises(StoreError, match="incomplete"):
        load_checkpoint(path)


def test_config_and_weights_mismatch(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "c")
    record = json.loads((path / CONFIG_NAME).read_text())
    record["config"]["ffn_dim"] = 2 * record["config"]["ffn_dim"]
    (path / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(StoreError, match="do not match the config"):
        load_checkpoint(path)
    record["config"]["modalities"] = ["BAS", "RESP", "ECG"]
    (path / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(StoreError, match="missing"):
        load_checkpoint(path)
    record["config"]["unknown_field"] = 1
    (path / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(StoreError, match="invalid config"):
        load_checkpoint(path)


def test_save_refuses_foreign_directories_and_bad_metadata(model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="notes.txt"):
        save_checkpoint(model, tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(model, tmp_path / "c", metadata={"when": object()})
    with pytest.raises(TypeError, match="SleepFMEncoder"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "d")

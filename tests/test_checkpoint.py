"""Checkpoints: bit-exact round trip, atomic writes, no pickle, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

import safetensors.torch

from sleepfm.artifacts import load_encoder, save_encoder
from sleepfm.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from sleepfm.exceptions import StoreError
from sleepfm.utils import sha256_file
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
    path = save_encoder(model, tmp_path / "ckpt", metadata=meta)
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded, record = load_encoder(path)
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


def test_save_over_an_encoder_replaces_it(model, tmp_path):
    path = tmp_path / "enc"
    save_encoder(create_encoder("sleepfm_tiny", modalities=("BAS", "RESP")), path)
    save_encoder(model, path, metadata={"epoch": 3})  # replaces the first checkpoint
    loaded, _ = load_encoder(path)
    assert torch.equal(embed(loaded)["BAS"], embed(model)["BAS"])
    assert json.loads((path / CONFIG_NAME).read_text())["metadata"] == {"epoch": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]  # no temporaries left behind


def test_loading_never_unpickles(model, tmp_path, monkeypatch):
    save_encoder(model, tmp_path / "c")

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    load_encoder(tmp_path / "c")


def test_failed_save_leaves_the_old_checkpoint(model, tmp_path, monkeypatch):
    path = save_encoder(model, tmp_path / "c", metadata={"v": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_encoder(create_encoder("sleepfm_tiny"), path, metadata={"v": 2})
    _, record = load_encoder(path)
    assert record["metadata"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_corrupt_weights_give_a_clear_error(model, tmp_path):
    path = save_encoder(model, tmp_path / "c")
    weights = path / WEIGHTS_NAME
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StoreError, match="checksum"):
        load_encoder(path)
    # Without a recorded checksum the safetensors reader itself must fail cleanly.
    record = json.loads((path / CONFIG_NAME).read_text())
    del record["weights_sha256"]
    (path / CONFIG_NAME).write_text(json.dumps(record))
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StoreError, match="not a readable safetensors file"):
        load_encoder(path)


def test_missing_and_corrupt_files(model, tmp_path):
    with pytest.raises(StoreError, match="No checkpoint directory"):
        load_encoder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="has no config.json"):
        load_encoder(tmp_path / "empty")
    path = save_encoder(model, tmp_path / "c")
    (path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        load_encoder(path)
    path = save_encoder(model, tmp_path / "d")
    (path / WEIGHTS_NAME).unlink()
    with pytest.raises(StoreError, match="incomplete"):
        load_encoder(path)


def test_config_and_weights_mismatch(model, tmp_path):
    path = save_encoder(model, tmp_path / "c")
    record = json.loads((path / CONFIG_NAME).read_text())
    record["config"]["ffn_dim"] = 2 * record["config"]["ffn_dim"]
    (path / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(StoreError, match="do not match the config"):
        load_encoder(path)
    record["config"]["modalities"] = ["BAS", "RESP", "ECG"]
    (path / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(StoreError, match="missing"):
        load_encoder(path)
    record["config"]["unknown_field"] = 1
    (path / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(StoreError, match="invalid config"):
        load_encoder(path)


def test_save_refuses_foreign_directories_and_bad_metadata(model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="notes.txt"):
        save_encoder(model, tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        save_encoder(model, tmp_path / "c", metadata={"when": object()})
    with pytest.raises(TypeError, match="SleepFMEncoder"):
        save_encoder(torch.nn.Linear(2, 2), tmp_path / "d")


def _rewrite(path, **changes):
    record = json.loads((path / CONFIG_NAME).read_text())
    record.update(changes)
    (path / CONFIG_NAME).write_text(json.dumps(record))


def test_a_pickle_inside_is_never_unpickled(model, tmp_path):
    """A pickle put where the safetensors file belongs is refused, even with a matching checksum,
    and the message does not suggest unpickling it."""
    import io
    import pickle

    path = save_encoder(model, tmp_path / "c")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    (path / WEIGHTS_NAME).write_bytes(buffer.getvalue())
    _rewrite(path, weights_sha256=sha256_file(path / WEIGHTS_NAME))
    with pytest.raises(StoreError, match="not a readable safetensors file") as err:
        load_encoder(path)
    assert "weights_only" not in str(err.value) and str(path) in str(err.value)
    (path / WEIGHTS_NAME).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(StoreError, match="checksum"):
        load_encoder(path)


def test_format_version_kind_and_architecture_are_checked(model, tmp_path):
    path = save_encoder(model, tmp_path / "c")
    assert json.loads((path / CONFIG_NAME).read_text())["kind"] == "encoder"
    _rewrite(path, format_version=99)
    with pytest.raises(StoreError, match="format version 99.*Upgrade sleepfm"):
        load_encoder(path)
    _rewrite(path, format_version=1, kind="head")
    with pytest.raises(StoreError, match="kind 'head' where one of kind 'encoder'"):
        load_encoder(path)
    _rewrite(path, kind="encoder", architecture="Nope")
    with pytest.raises(StoreError, match="architecture 'Nope'.*SleepFMEncoder"):
        load_encoder(path)
    _rewrite(path, format="something-else")
    with pytest.raises(StoreError, match="not a sleepfm checkpoint config"):
        load_encoder(path)


def test_heads_round_trip_and_unknown_component(tmp_path):
    import numpy as np

    from sleepfm.artifacts import load_heads, save_heads
    from sleepfm.models.heads import LinearProbe

    rng = np.random.default_rng(0)
    X, y = [rng.normal(size=(40, 8)).astype(np.float32)], [rng.integers(0, 5, 40)]
    head = LinearProbe(epochs=2).fit(X, y)
    path = save_heads(tmp_path / "h", {"staging": head}, {"task": "staging", "mode": "linear"},
                      extra=lambda tmp: (tmp / "split.json").write_text("{}"))
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME, "split.json"]
    heads, record = load_heads(path)
    np.testing.assert_array_equal(heads["staging"].predict_proba(X), head.predict_proba(X))
    assert record["kind"] == "head" and record["components"]["staging"]["head"] == "linear_probe"
    with pytest.raises(StoreError, match="kind 'head' where one of kind 'encoder'"):
        load_encoder(path)
    components = record["components"]
    components["staging"]["head"] = "nope"
    _rewrite(path, components=components)
    with pytest.raises(StoreError, match=r"component 'staging' cannot be rebuilt.*Unknown head "
                                         r"'nope'.*train the head again"):
        load_heads(path)

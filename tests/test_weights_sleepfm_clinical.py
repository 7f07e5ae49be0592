"""sleepfm.io.weights.read_sleepfm_clinical: the released SleepFM folders, read without unpickling."""
from __future__ import annotations

import json

import pytest
import torch

from sleepfm.exceptions import StoreError
from sleepfm.io.weights import read_sleepfm_clinical


def _model(folder, model, file, payload):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": model}))
    torch.save(payload, folder / file)


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "sleepfm"
    state = {"module.w": torch.arange(3.0)}
    _model(root / "checkpoints" / "model_base", "SetTransformer", "best.pt",
           {"epoch": 3, "temperature": 0.1, "state_dict": state})
    _model(root / "checkpoints" / "model_sleep_staging", "SleepEventLSTMClassifier", "best.pth",
           {"head.w": torch.ones(2)})
    (root / "configs").mkdir()
    (root / "configs" / "channel_groups.json").write_text(json.dumps({"BAS": ["C3"]}))
    (root / "configs" / "label_mapping.csv").write_text("label_idx,phecode,phenotype\n")
    return root


def test_reads_every_model_and_the_tables_beside(release):
    found = read_sleepfm_clinical(release / "checkpoints")
    assert set(found.models) == {"encoder", "staging"}
    torch.testing.assert_close(found.models["encoder"].state_dict, {"w": torch.arange(3.0)})
    assert found.models["staging"].state_dict.keys() == {"head.w"}
    assert found.models["encoder"].config["model"] == "SetTransformer"
    assert len(found.models["encoder"].sha256) == 64
    assert found.channel_groups == release / "configs" / "channel_groups.json"
    assert found.label_mapping == release / "configs" / "label_mapping.csv"


def test_one_model_folder(release):
    found = read_sleepfm_clinical(release / "checkpoints" / "model_sleep_staging")
    assert set(found.models) == {"staging"}
    assert found.channel_groups is not None  # ../../configs


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_a_pickled_object_is_refused_not_run(tmp_path, capsys):
    _model(tmp_path / "m", "SetTransformer", "best.pt", {"state_dict": {"w": _Evil()}})
    with pytest.raises(StoreError, match="pickled Python object"):
        read_sleepfm_clinical(tmp_path / "m")
    assert "unpickled" not in capsys.readouterr().out


@pytest.mark.parametrize("case, match", [
    ("unknown", "names model 'Other'"),
    ("missing", "checkpoint not found"),
    ("empty", "no released SleepFM model"),
    ("not_state", "holds no state dict"),
])
def test_clear_errors(tmp_path, case, match):
    folder = tmp_path / "m"
    if case == "unknown":
        _model(folder, "Other", "best.pt", {})
    elif case == "missing":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model": "SleepEventLSTMClassifier"}))
    elif case == "not_state":
        _model(folder, "SleepEventLSTMClassifier", "best.pth", [1, 2])
    else:
        folder.mkdir()
    with pytest.raises(StoreError, match=match):
        read_sleepfm_clinical(folder)

"""The OSF ViT-1D backbone and the import of OSF's released weights: shapes, sizes, masked leads,
outputs of the reference implementation reproduced from payloads in its format, refused payloads,
the artefact round trip and ``sleepfm import-weights osf``."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sleepfm import import_osf_weights, load_encoder, read_osf_checkpoint
from sleepfm.channels import OSF_LEADS, osf_lead_slots
from sleepfm.cli import main
from sleepfm.exceptions import InvalidParameterError, StoreError
from sleepfm.models import (
    ViT1D,
    ViT1DConfig,
    count_parameters,
    create_encoder,
    list_encoders,
)
from sleepfm.models.vit1d import OSF_KEY_MAP
from sleepfm.utils import sha256_file

DATA = Path(__file__).parent / "data" / "osf"
GOLDEN = ["tiny_lead_wise1", "tiny_lead_wise0"]
SMALL = {"width": 32, "depth": 1, "heads": 2, "mlp_dim": 64}


@pytest.fixture(scope="module")
def expected():
    with np.load(DATA / "expected.npz") as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


@pytest.fixture(scope="module")
def x(expected):
    return expected["x"].float()  # stored as float16; the reference ran on these float32 values


def _payload(name: str = "tiny_lead_wise1") -> dict:
    return torch.load(DATA / f"{name}.pth", map_location="cpu", weights_only=True)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------------------------
# the backbone
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, sizes", [
    ("osf_nano", (128, 6, 4, 512)), ("osf_tiny", (192, 12, 3, 768)),
    ("osf_small", (384, 12, 6, 1536)), ("osf_base", (768, 12, 12, 3072))])
def test_registered_sizes(name, sizes):
    assert name in list_encoders("osf_*")
    with torch.device("meta"):  # sizes and parameter counts without allocating the weights
        model = create_encoder(name)
    c = model.config
    assert isinstance(model, ViT1D) and (c.width, c.depth, c.heads, c.mlp_dim) == sizes
    assert (c.num_leads, c.seq_len, c.patch_size_time, c.patch_size_ch, c.lead_wise,
            c.dim_head) == (12, 1920, 64, 4, 1, 64)
    if name == "osf_base":
        # The reference's 85,325,568 (its demo: 85.33 M) include the unused lead_emb (3 x 768).
        assert count_parameters(model) == 85_325_568 - 3 * 768


@pytest.mark.parametrize("lead_wise, tokens", [(1, 90), (0, 30)])
def test_shapes(lead_wise, tokens):
    torch.manual_seed(0)
    model = create_encoder("osf_nano", lead_wise=lead_wise, **SMALL).eval()
    x = torch.randn(3, 12, 1920)
    with torch.no_grad():
        cls, patches = model.forward_encoding(x)
        seq = model.forward_features(x)
        out = model(x)
    assert cls.shape == (3, 32) and patches.shape == (3, tokens, 32)
    assert seq.shape == (3, tokens + 1, 32) and model.config.num_patches == tokens
    assert torch.equal(seq[:, 0], cls) and torch.equal(seq[:, 1:], patches)
    assert torch.equal(out, cls) and model.pos_embed.shape == (1, tokens + 1, 32)


def test_masked_leads_do_not_reach_the_output():
    torch.manual_seed(0)
    model = create_encoder("osf_nano", **SMALL).eval()
    x = torch.randn(2, 12, 1920)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, [0, 5, 11]] = False  # ECG, thorax, C4 missing in the first record
    mask[1, :8] = False          # only EOG and EEG in the second
    other = x.clone()
    other[~mask] = 1e4 * torch.randn(int((~mask).sum()), 1920)
    other[0, 5, :10] = float("nan")
    other[1, 2, :10] = float("inf")
    with torch.no_grad():
        a = model.forward_encoding(x, mask)
        b = model.forward_encoding(other, mask)
        zeroed = model.forward_encoding(torch.where(mask[:, :, None], x, 0.0))
        full = model.forward_encoding(x, torch.ones_like(mask))
        plain = model.forward_encoding(x)
    for u, v, w in zip(a, b, zeroed):
        assert torch.equal(u, v) and torch.equal(u, w) and torch.isfinite(u).all()
    assert all(torch.equal(u, v) for u, v in zip(full, plain))
    assert not torch.allclose(a[0], plain[0])  # the mask does something


def test_bad_inputs_and_configs():
    model = create_encoder("osf_nano", **SMALL).eval()
    with pytest.raises(ValueError, match=r"\[batch, 12 leads, 1920 samples\] \(30 s at 64 Hz\)"):
        model.forward_encoding(torch.randn(2, 12, 3840))
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        model.forward_encoding(torch.randn(2, 12, 1920), torch.ones(2, 12))
    with pytest.raises(InvalidParameterError, match="multiple of patch_size_ch"):
        ViT1DConfig(num_leads=10)
    with pytest.raises(InvalidParameterError, match="Unknown ViT1DConfig field"):
        create_encoder("osf_nano", patch_size=64)
    with pytest.raises(TypeError, match="ViT1DConfig"):
        ViT1D({"width": 32})
    assert ViT1DConfig(num_leads=10, lead_wise=0).num_patches == 30


def test_osf_lead_slots():
    assert osf_lead_slots(OSF_LEADS) == OSF_LEADS
    names = ["EEG C4-A1", "C3-M2", "E2-M1", "EOG(L)", "Leg R", "LAT", "Abdo", "Snore",
             "CPAP pressure", "EKG", "Chin1-Chin2", "Thor", "Position"]
    assert osf_lead_slots(names) == ("EKG", "Chin1-Chin2", "LAT", "Leg R", "Abdo", "Thor", None,
                                     "Snore", "EOG(L)", "E2-M1", "C3-M2", "EEG C4-A1")
    assert osf_lead_slots([]) == (None,) * 12


# --------------------------------------------------------------------------------------------
# OSF's weights
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GOLDEN)
def test_reproduces_the_reference_implementation(name, x, expected):
    model = read_osf_checkpoint(DATA / f"{name}.pth")
    assert not model.training
    with torch.no_grad():
        cls, patches = model.forward_encoding(x)
    torch.testing.assert_close(cls, expected[f"{name}_cls"], atol=1e-4, rtol=0)
    torch.testing.assert_close(patches, expected[f"{name}_patches"], atol=1e-4, rtol=0)


def test_key_map_covers_the_reference_names():
    payload = _payload()
    model = read_osf_checkpoint(DATA / "tiny_lead_wise1.pth")
    c = model.config
    assert (c.width, c.depth, c.heads, c.mlp_dim, c.lead_wise) == (64, 2, 2, 128, 1)
    assert "lead_emb.weight" in payload["state_dict"] and OSF_KEY_MAP["lead_emb.weight"] is None
    assert len(model.state_dict()) == len(payload["state_dict"]) - 1
    # What 1e-4 on these outputs cannot tell apart from the reference's LayerNorm (eps 1e-5).
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
    one_head = read_osf_checkpoint(DATA / "tiny_lead_wise0.pth")  # heads 1, dim_head == width
    assert isinstance(one_head.blocks[0].attn.proj, torch.nn.Identity)


class _StateDict(collections.OrderedDict):
    """A dict subclass: pickled as a class reference, so weights_only refuses it."""


class _Note:
    def __init__(self):
        self.text = "hello"


@pytest.mark.parametrize("where", ["state_dict", "metadata"])
def test_pickled_objects_are_refused(tmp_path, where):
    payload = _payload()
    if where == "state_dict":
        payload["state_dict"] = _StateDict(payload["state_dict"])
    else:
        payload["metadata"]["note"] = _Note()
    path = tmp_path / "osf_backbone.pth"
    torch.save(payload, path)
    with pytest.raises(StoreError, match="holds a pickled Python object") as err:
        read_osf_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "only plain tensors, dicts" in message
    assert ("_StateDict" if where == "state_dict" else "_Note") in message


@pytest.mark.parametrize("change, words", [
    ("missing", ["1 missing", "block1.ff.fn.net.3.bias"]),
    ("shape", ["of another shape",
               "block1.attn.fn.to_out.0.weight: file (64, 64), backbone (64, 128)"]),
    ("unexpected", ["1 unexpected", "head.weight"]),
    ("metadata", ["lacks 'lead_wise'"]),
    ("structure", ["expected a dict with 'metadata' and 'state_dict'"]),
    ("garbage", ["cannot be read as a PyTorch payload"]),
])
def test_payloads_that_do_not_fit_are_refused(tmp_path, change, words):
    path = tmp_path / "osf_backbone.pth"
    payload = _payload()
    state = payload["state_dict"]
    if change == "missing":
        del state["block1.ff.fn.net.3.bias"]
    elif change == "shape":
        state["block1.attn.fn.to_out.0.weight"] = torch.zeros(64, 64)
    elif change == "unexpected":
        state["head.weight"] = torch.zeros(1, 64)
    elif change == "metadata":
        del payload["metadata"]["lead_wise"]
    elif change == "structure":
        payload = state
    if change == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save(payload, path)
    with pytest.raises(StoreError) as err:
        read_osf_checkpoint(path)
    for word in [str(path), *words]:
        assert word in str(err.value), (word, str(err.value))
    with pytest.raises(StoreError, match="payload not found"):
        read_osf_checkpoint(tmp_path / "absent.pth")


def test_imported_artefact_round_trips(tmp_path, x):
    source = DATA / "tiny_lead_wise1.pth"
    directory = import_osf_weights(source, tmp_path / "encoder")
    model, record = load_encoder(directory)
    assert isinstance(model, ViT1D) and record["architecture"] == "ViT1D"
    meta = record["metadata"]["source"]
    assert meta["sha256"] == sha256_file(source) and meta["file"] == source.name
    assert meta["format"] == "osf" and meta["metadata"]["lead_wise"] == 1
    assert record["modalities"] == ["BAS", "ECG", "EMG", "RESP"]
    reference = read_osf_checkpoint(source)
    with torch.no_grad():
        for a, b in zip(model.forward_encoding(x), reference.forward_encoding(x)):
            assert torch.equal(a, b)
    assert json.loads((directory / "config.json").read_text())["config"]["lead_wise"] == 1


def test_cli_import_weights(tmp_path, capsys):
    out = tmp_path / "encoder"
    assert main(["import-weights", "osf", str(DATA / "tiny_lead_wise0.pth"), "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "OSF backbone" in printed and "lead_wise=0" in printed and str(out) in printed
    assert load_encoder(out)[1]["config"]["lead_wise"] == 0

    bad = tmp_path / "bad.pth"
    payload = _payload()
    payload["state_dict"] = _StateDict(payload["state_dict"])
    torch.save(payload, bad)
    for argv, word in [([str(bad), "--out", str(tmp_path / "e2")], "pickled Python object"),
                       ([str(tmp_path / "none.pth"), "--out", str(tmp_path / "e3")],
                        "payload not found"),
                       ([str(DATA / "tiny_lead_wise1.pth"), "--out", str(bad)], "is a file")]:
        assert main(["import-weights", "osf", *argv]) == 2
        err = capsys.readouterr().err
        (line,) = _error_lines(err)
        assert word in line and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "e2").exists()
    with pytest.raises(SystemExit) as exc:  # no --out: a usage error
        main(["import-weights", "osf", str(bad)])
    assert exc.value.code == 2

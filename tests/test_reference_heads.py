"""SleepFM's released staging and disease heads (``models.heads.reference``): the reference's key
names and file format, refused state dicts, the artefact round trip, masking, epochs from tokens,
long nights, and the release's ``label_mapping.csv`` reader.

Outputs were checked against the reference implementation itself (identical to float32 rounding);
these tests pin the conventions that check relies on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sleepfm.artifacts import load_heads, save_heads
from sleepfm.exceptions import (
    DataWarning,
    InvalidParameterError,
    LabelError,
    StoreError,
)
from sleepfm.io.outcomes import read_label_mapping
from sleepfm.models.heads import head_from_state
from sleepfm.models.heads.reference import (
    MODALITY_ORDER,
    ReferenceDiagnosisConfig,
    ReferenceDiagnosisNet,
    ReferenceStagingConfig,
    ReferenceStagingNet,
    checkpoint_filter_fn,
    epoch_probabilities,
    phenotype_risks,
    stage_probabilities,
    token_stage_probabilities,
)
from sleepfm.vocab import STAGE_NAMES

D = 128
# The released configs' model_params, as sleepfm/checkpoints/model_*/config.json hold them.
STAGING_PARAMS = {"embed_dim": 128, "num_heads": 4, "num_layers": 1, "num_classes": 5,
                  "pooling_head": 4, "dropout": 0.3, "max_seq_length": 8196}
DIAGNOSIS_PARAMS = {"embed_dim": 128, "num_heads": 8, "num_layers": 2, "num_classes": 1065,
                    "pooling_head": 8, "dropout": 0.3, "max_seq_length": 6480}


def _randomised(net):
    """Perturb every weight (layer norms included) so that no parameter is at a neutral value."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.fixture(scope="module")
def staging():
    torch.manual_seed(0)
    return _randomised(ReferenceStagingNet(ReferenceStagingConfig.from_dict(STAGING_PARAMS)))


@pytest.fixture(scope="module")
def diagnosis():
    torch.manual_seed(1)
    names = {f"{i}.0": f"phenotype {i}" for i in range(1065)}
    return _randomised(ReferenceDiagnosisNet(ReferenceDiagnosisConfig.from_dict(DIAGNOSIS_PARAMS),
                                             phenotypes=names))


def _night(n_tokens, seed=0, modalities=MODALITY_ORDER):
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((n_tokens, D)).astype(np.float32) for m in modalities}


def _outputs(net, tokens, present, lengths=None):
    demographics = torch.tensor([[0.4, 1.0]] * len(tokens))
    with torch.no_grad():
        if isinstance(net, ReferenceDiagnosisNet):
            return net(tokens, present, demographics, lengths)
        return net(tokens, present, lengths)


# ---- the reference's state dicts -----------------------------------------------------------
def test_released_configs_and_reference_keys(staging, diagnosis):
    """The defaults are the released models'; the keys are those of the reference's classes."""
    assert ReferenceStagingConfig().to_dict() == STAGING_PARAMS
    assert ReferenceDiagnosisConfig().to_dict() == DIAGNOSIS_PARAMS
    ref = staging.reference_state_dict()
    assert len(ref) == 37 and ref["positional_encoding.pe"].shape == (1, 8196, D)
    assert {"spatial_pooling.transformer_layer.self_attn.in_proj_weight", "layer_norm.weight",
            "transformer_encoder.layers.0.linear1.weight", "lstm.weight_hh_l0_reverse",
            "fc.weight"} <= set(ref)
    ref = diagnosis.reference_state_dict()
    assert len(ref) == 35 and ref["disease_heads.weight"].shape == (1065, D + D // 4)
    assert {"demo_embedding.0.weight", "lstm.weight_ih_l1_reverse", "layer_norm.bias",
            "positional_encoding.pe"} <= set(ref)
    with pytest.raises(InvalidParameterError, match="Valid fields"):
        ReferenceStagingConfig.from_dict({**STAGING_PARAMS, "heads": 2})
    with pytest.raises(InvalidParameterError, match="num_classes must be 5"):
        ReferenceStagingConfig(num_classes=3)


@pytest.mark.parametrize("name", ["staging", "diagnosis"])
def test_reference_file_round_trip(name, request, tmp_path):
    """``torch.save(model.state_dict())`` under DataParallel (``module.`` keys), read with
    ``weights_only=True``, loads into an identical net."""
    net = request.getfixturevalue(name)
    path = tmp_path / "best.pth"
    torch.save({f"module.{k}": v for k, v in net.reference_state_dict().items()}, path)
    state = torch.load(path, weights_only=True)
    loaded = type(net).from_reference_state_dict(state, net.config)
    assert not loaded.training
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 4, 18, D)
    present = torch.tensor([[True] * 4, [True, False, True, False]])
    torch.testing.assert_close(_outputs(loaded, x, present), _outputs(net, x, present),
                               rtol=0, atol=0)


def test_refused_state_dicts_list_the_keys(staging, diagnosis):
    state = staging.reference_state_dict()
    state.pop("fc.bias")
    state["lstm.weight_ih_l1"] = torch.zeros(256, 128)
    state["layer_norm.weight"] = torch.ones(64)
    with pytest.raises(StoreError) as err:
        checkpoint_filter_fn(state, staging, source="best.pth")
    message = str(err.value)
    assert "best.pth" in message and "1 missing (fc.bias)" in message
    assert "1 unexpected (lstm.weight_ih_l1)" in message
    assert "layer_norm.weight: file (64,), model (128,)" in message
    # the disease model's weights are not a staging model's
    with pytest.raises(StoreError, match="missing"):
        ReferenceStagingNet.from_reference_state_dict(diagnosis.reference_state_dict())


# ---- the artefact format -------------------------------------------------------------------
def test_artifact_round_trip(staging, diagnosis, tmp_path):
    save_heads(tmp_path / "heads", {"staging": staging, "disease": diagnosis},
               {"task": "reference"})
    assert not list((tmp_path / "heads").glob("*.p*"))  # safetensors + JSON only
    heads, record = load_heads(tmp_path / "heads")
    assert record["components"]["staging"]["config"] == STAGING_PARAMS
    assert heads["disease"].phenotypes == diagnosis.phenotypes
    for name, net in (("staging", staging), ("disease", diagnosis)):
        loaded = heads[name]
        assert type(loaded) is type(net) and not loaded.training
        for key, value in net.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    tensors, meta = staging.get_state()
    with pytest.raises(StoreError, match="version"):
        head_from_state(tensors, {**meta, "version": 99})


# ---- masks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["staging", "diagnosis"])
def test_masked_values_do_not_matter(name, request):
    """Absent modalities and padded tokens are ignored whatever they hold (even NaN)."""
    net = request.getfixturevalue(name)
    torch.manual_seed(2)
    x = torch.randn(2, 4, 20, D)
    present = torch.tensor([[True, False, True, True], [False, True, True, False]])
    lengths = torch.tensor([20, 13])
    noisy = x.clone()
    noisy[0, 1] = float("nan")
    noisy[1, [0, 3]] = 1e4 * torch.randn(2, 20, D)
    noisy[1, :, 13:] = float("nan")
    clean = _outputs(net, x, present, lengths)
    assert torch.isfinite(clean).all()
    torch.testing.assert_close(_outputs(net, noisy, present, lengths), clean, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["staging", "diagnosis"])
def test_modality_slots_are_unordered(name, request):
    """The pooling has no slot positions: the reference's loaders stack modalities in name
    order (staging) or shuffled (disease) and a permutation changes nothing but rounding."""
    net = request.getfixturevalue(name)
    x = torch.randn(1, 4, 12, D)
    present = torch.tensor([[True, True, False, True]])
    order = [3, 2, 0, 1]
    torch.testing.assert_close(_outputs(net, x[:, order], present[:, order]),
                               _outputs(net, x, present), rtol=1e-5, atol=1e-5)


def test_dict_and_array_inputs_agree(staging, diagnosis):
    night = _night(24, modalities=("BAS", "EMG", "RESP"))
    stacked = np.stack([night.get(m, np.zeros((24, D), np.float32)) for m in MODALITY_ORDER])
    present = [m in night for m in MODALITY_ORDER]
    np.testing.assert_array_equal(token_stage_probabilities(staging, night),
                                  token_stage_probabilities(staging, stacked, present))
    risks = phenotype_risks(diagnosis, night, age=0.5, sex=0.0)
    assert risks.shape == (1065,) and np.isfinite(risks).all()
    np.testing.assert_array_equal(risks, phenotype_risks(diagnosis, stacked, present, age=0.5,
                                                         sex=0.0))
    assert not np.array_equal(risks, phenotype_risks(diagnosis, night, age=0.5, sex=1.0))


def test_bad_inputs_are_refused(staging, diagnosis):
    with pytest.raises(InvalidParameterError, match="EKG"):
        token_stage_probabilities(staging, {"EKG": np.zeros((12, D))})
    with pytest.raises(InvalidParameterError, match="same n_tokens"):
        token_stage_probabilities(staging, {"BAS": np.zeros((12, D)), "ECG": np.zeros((6, D))})
    with pytest.raises(InvalidParameterError, match="no modality"):
        token_stage_probabilities(staging, np.zeros((4, 12, D)), [False] * 4)
    with pytest.raises(InvalidParameterError, match="ReferenceStagingNet"):
        stage_probabilities(diagnosis, _night(12))
    with pytest.raises(InvalidParameterError, match="finite"):
        phenotype_risks(diagnosis, _night(12), age=float("nan"), sex=1.0)


# ---- tokens to epochs, long nights ---------------------------------------------------------
def test_epoch_probabilities_average_six_tokens():
    tokens = np.zeros((15, 5))
    tokens[:6, 0] = 1.0                          # epoch 0: all W
    tokens[6:12] = np.eye(5)[[2, 2, 2, 4, 4, 1]]  # epoch 1: half N2, a third REM, one N1
    tokens[12:] = np.eye(5)[3]                   # a part-epoch: dropped
    expected = np.array([[1, 0, 0, 0, 0], [0, 1 / 6, 1 / 2, 0, 1 / 3]])
    np.testing.assert_allclose(epoch_probabilities(tokens), expected)


def test_stage_probabilities_per_epoch(staging):
    night = _night(20)
    tokens = token_stage_probabilities(staging, night)
    epochs = stage_probabilities(staging, night)
    assert tokens.shape == (20, len(STAGE_NAMES)) and epochs.shape == (3, len(STAGE_NAMES))
    np.testing.assert_allclose(epochs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(epochs[1], tokens[6:12].mean(axis=0), rtol=1e-6)


def test_long_nights_are_cut_to_max_seq_length():
    torch.manual_seed(3)
    net = ReferenceStagingNet(ReferenceStagingConfig(max_seq_length=12)).eval()
    night = _night(20)
    with pytest.warns(DataWarning, match="first 12"):
        long = token_stage_probabilities(net, night)
    short = token_stage_probabilities(net, {m: v[:12] for m, v in night.items()})
    np.testing.assert_array_equal(long, short)


# ---- label_mapping.csv ---------------------------------------------------------------------
def test_read_label_mapping(tmp_path):
    path = tmp_path / "label_mapping.csv"
    path.write_text("label_idx,phecode,phenotype\n0,8.0,Intestinal infection\n"
                    "1,401.0,Hypertension\n2,Hypertension,Hypertension\n")
    assert read_label_mapping(path) == {"8.0": "Intestinal infection", "401.0": "Hypertension",
                                        "Hypertension": "Hypertension"}
    bad = {
        "label_idx,phecode\n0,8.0\n": "missing columns",
        "label_idx,phecode,phenotype\n0,8.0,A\n2,8.5,B\n": "rows 3",
        "label_idx,phecode,phenotype\n0,8.0,A\n1,8.0,B\n": "occur more than once",
        "label_idx,phecode,phenotype\n0,8.0,A\n1,,B\n": "empty cells",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(LabelError, match=message) as err:
            read_label_mapping(path)
        assert str(path) in str(err.value)
    with pytest.raises(LabelError, match="no such label mapping"):
        read_label_mapping(tmp_path / "missing.csv")

"""The released SleepFM architecture: reference checkpoint format, masking, artefacts, embed stage.

Exactness against the reference implementation itself is checked outside the test suite (it needs
the reference's code); here the reference's checkpoint format is written from this implementation.
"""
import json

import h5py
import numpy as np
import pytest
import torch
from conftest import reference_encoder_payload

from sleepfm.artifacts import load_encoder, save_encoder
from sleepfm.cli import main
from sleepfm.exceptions import StoreError
from sleepfm.models import (
    SleepFMReference,
    SleepFMReferenceConfig,
    create_encoder,
    list_encoders,
)
from sleepfm.models.sleepfm_reference import (
    checkpoint_filter_fn,
    config_from_reference,
    reference_names,
)
from sleepfm.rundir import RunDir
from sleepfm.stages.embed import embed
from sleepfm.stages.preprocess import preprocess_directory
from sleepfm.synthetic import SyntheticConfig, generate_night, write_night

#: A small architecture of the same family (default tokenizer input: 5 s at 128 Hz).
SMALL = {"embed_dim": 32, "conv_channels": (4, 4, 8, 8, 16, 16), "num_heads": 4,
         "num_layers": 2, "pooling_heads": 4, "ffn_dim": 48}
SPT = 640

#: The released model_base's config.json (architecture fields).
RELEASED = {"model": "SetTransformer", "in_channels": 1, "embed_dim": 128, "num_heads": 8,
            "num_layers": 6, "pooling_head": 8, "dropout": 0.3, "sampling_freq": 128,
            "patch_size": 640, "modality_types": ["BAS", "RESP", "EKG", "EMG"]}


def _model(seed: int = 0, **overrides) -> SleepFMReference:
    """A small encoder with random weights and BatchNorm statistics that matter, in eval mode."""
    torch.manual_seed(seed)
    model = SleepFMReference(SleepFMReferenceConfig(**{**SMALL, **overrides}))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.2, 2.0)
    return model.eval()


def _inputs(b: int = 2, tokens: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = {"BAS": torch.randn(b, 3, tokens * SPT, generator=g),
         "ECG": torch.randn(b, 2, tokens * SPT, generator=g),
         "RESP": torch.randn(b, 1, tokens * SPT, generator=g)}
    mask = {"BAS": torch.tensor([[True, True, False], [True, False, False]]),
            "ECG": torch.tensor([[True, True], [False, False]])}
    return x, mask


def _outputs(model, x, mask):
    with torch.no_grad():
        out = model(x, mask)
        return out, model.forward_windows(x, mask)


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a) and set(a) == set(b)


def test_reference_names_follow_the_released_layout():
    names = reference_names(SleepFMReference())
    assert len(names) + 1 == 155  # + positional_encoding.pe: the reference's 155 tensors
    assert {"patch_embedding.tokenizer.0.weight", "patch_embedding.tokenizer.1.running_var",
            "patch_embedding.tokenizer.23.bias", "patch_embedding.tokenizer.26.weight",
            "spatial_pooling.transformer_layer.self_attn.in_proj_weight",
            "transformer_encoder.layers.5.linear2.bias", "layer_norm.weight",
            "temporal_pooling.transformer_layer.norm2.weight"} <= set(names)


def test_reference_checkpoint_round_trips_exactly(tmp_path):
    model = _model()
    path = tmp_path / "best.pt"
    torch.save(reference_encoder_payload(model), path)
    payload = torch.load(path, weights_only=True)
    fresh = SleepFMReference(model.config).eval()
    fresh.load_state_dict(checkpoint_filter_fn(payload["state_dict"], fresh, source=path.name))
    x, mask = _inputs()
    (out_a, win_a), (out_b, win_b) = _outputs(model, x, mask), _outputs(fresh, x, mask)
    assert _same(out_a.tokens, out_b.tokens) and torch.equal(out_a.fused, out_b.fused)
    assert _same(win_a, win_b)


@pytest.mark.parametrize("change, expected", [
    ("drop", "1 missing (transformer_encoder.layers.1.linear1.bias)"),
    ("extra", "1 unexpected (temperature_scale)"),
    ("shape", "1 of another shape (layer_norm.weight: file (7,), model (32,))"),
])
def test_checkpoint_keys_that_do_not_fit_are_listed(change, expected):
    model = _model()
    state = dict(reference_encoder_payload(model)["state_dict"])
    if change == "drop":
        del state["module.transformer_encoder.layers.1.linear1.bias"]
    elif change == "extra":
        state["module.temperature_scale"] = torch.zeros(1)
    else:
        state["module.layer_norm.weight"] = torch.ones(7)
    with pytest.raises(StoreError, match="best.pt") as err:
        checkpoint_filter_fn(state, model, source="best.pt")
    assert expected in str(err.value)


def test_other_positions_are_refused():
    model = _model()
    state = reference_encoder_payload(model)["state_dict"]
    state["module.positional_encoding.pe"] = torch.randn(1, 128, model.embed_dim)
    with pytest.raises(StoreError, match="sinusoidal"):
        checkpoint_filter_fn(state, model)


def test_released_config_reads_as_the_default():
    assert config_from_reference(RELEASED) == SleepFMReferenceConfig()
    with pytest.raises(StoreError, match="lacks"):
        config_from_reference({k: v for k, v in RELEASED.items() if k != "pooling_head"})


def test_masked_channels_do_not_matter():
    model = _model()
    x, mask = _inputs()
    noisy = {k: v.clone() for k, v in x.items()}
    for name, m in mask.items():
        noisy[name][~m] = float("nan")
    noisy["BAS"][1, 1] = 1e6
    (out_a, win_a), (out_b, win_b) = _outputs(model, x, mask), _outputs(model, noisy, mask)
    assert _same(out_a.tokens, out_b.tokens) and _same(win_a, win_b)


def test_single_channel_slot_skips_the_channel_layer():
    model = _model()
    x = {"EMG": torch.randn(2, 1, 3 * SPT)}
    with torch.no_grad():
        before = model(x).tokens["EMG"]
        padded = model({"EMG": torch.cat([x["EMG"], x["EMG"]], 1)},
                       {"EMG": torch.tensor([[True, False]] * 2)}).tokens["EMG"]
        model.channel_pool.transformer_layer.linear2.bias.add_(1.0)
        after = model(x).tokens["EMG"]
    assert torch.equal(before, after)  # one slot: the layer is not run, as in the reference
    assert not torch.allclose(before, padded)  # one of two slots: it is


def test_missing_modality_gives_zero_tokens_and_absence():
    model = _model()
    x, mask = _inputs()
    out, windows = _outputs(model, x, mask)
    assert out.present["ECG"].tolist() == [True, False]
    assert out.tokens["ECG"][1].abs().max() == 0 and windows["ECG"][1].abs().max() == 0
    assert out.tokens["ECG"][0].abs().max() > 0 and out.present["RESP"].all()
    assert torch.allclose(out.fused[1], (out.tokens["BAS"][1] + out.tokens["RESP"][1]) / 2)
    first = {k: v[:1] for k, v in x.items()}, {k: v[:1] for k, v in mask.items()}
    alone, _ = _outputs(model, *first)
    assert torch.allclose(alone.fused[0], out.fused[0], atol=1e-5)  # rows are independent


def test_eval_is_deterministic_and_chunking_changes_nothing():
    model = _model()
    x, mask = _inputs()
    first, again = _outputs(model, x, mask)[0], _outputs(model, x, mask)[0]
    model.tokenizer.chunk = 5
    chunked = _outputs(model, x, mask)[0]
    assert _same(first.tokens, again.tokens)
    assert all(torch.allclose(first.tokens[k], chunked.tokens[k], atol=1e-5) for k in x)


def test_inputs_longer_than_the_reference_table_run():
    model = _model()
    with torch.no_grad():
        out = model({"BAS": torch.randn(1, 1, 150 * SPT)})
    assert out.fused.shape == (1, 150, 32) and torch.isfinite(out.fused).all()


def test_registry_builds_the_released_size():
    assert "sleepfm_reference" in list_encoders()
    model = create_encoder("sleepfm_reference")
    assert isinstance(model, SleepFMReference) and model.config == SleepFMReferenceConfig()
    assert sum(p.numel() for p in model.parameters()) == 4_831_656
    assert create_encoder("sleepfm_reference", num_layers=1).config.num_layers == 1


def test_bad_inputs_are_refused():
    model = _model()
    with pytest.raises(ValueError, match="whole number of 640-sample tokens"):
        model({"BAS": torch.randn(1, 2, 700)})
    with pytest.raises(ValueError, match="not one this encoder accepts"):
        model({"EKG": torch.randn(1, 2, SPT)})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        model({"BAS": torch.randn(1, 2, SPT)}, {"BAS": torch.ones(1, 2)})


def test_encoder_artefact_round_trip(tmp_path):
    model = _model()
    loaded, record = load_encoder(save_encoder(model, tmp_path / "encoder"))
    assert record["architecture"] == "SleepFMReference" and loaded.config == model.config
    x, mask = _inputs()
    assert _same(_outputs(model, x, mask)[1], _outputs(loaded, x, mask)[1])


def test_embed_stage_with_the_reference_family(tmp_path):
    rates = {"eeg": 128.0, "eog": 128.0, "emg": 128.0, "ecg": 128.0, "resp": 16.0, "spo2": 1.0}
    src = tmp_path / "edf"
    src.mkdir()
    for rid, minutes, channels in [("LONG", 12, ["C4-M1", "E1-M2", "Chin", "ECG", "Airflow"]),
                                   ("NOECG", 6, ["C4-M1", "Chin"])]:
        night = generate_night(SyntheticConfig(duration_h=minutes / 60, sample_rates=rates),
                               seed=3, record_id=rid)
        write_night(night.pick(channels), src)
    run = tmp_path / "run"
    assert not preprocess_directory(src, run).failed
    ckpt = save_encoder(_model(), tmp_path / "encoder")
    assert main(["embed", "--run", str(run), "--checkpoint", str(ckpt), "--tokens",
                 "--quiet"]) == 0
    with h5py.File(run / "embeddings" / "LONG.h5") as f:
        assert f["token/fused"].shape == (144, 32) and f["window/ECG"].shape == (3, 32)
        assert np.isfinite(f["token/fused"][:]).all()
        windows = {m: f[f"window/{m}"][:] for m in ("BAS", "EMG", "ECG", "RESP", "fused")}
    # The stored windows are the model's own 5-minute embeddings, not means of tokens.
    first = RunDir(run).store().open("LONG").read(0, 300)
    with torch.no_grad():
        want = _model().forward_windows({m: torch.from_numpy(x)[None] for m, x in first.items()})
    for m, w in want.items():
        np.testing.assert_allclose(windows[m][0], w[0].numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(windows["fused"], np.mean([windows[m] for m in want], axis=0),
                               rtol=0, atol=1e-6)
    with h5py.File(run / "embeddings" / "NOECG.h5") as f:
        assert json.loads(f.attrs["modalities"]) == ["BAS", "EMG"] and "epoch/ECG" not in f
    # A file whose windows were made another way (token means) is stale: embedded again.
    with h5py.File(run / "embeddings" / "LONG.h5", "r+") as f:
        assert f.attrs["windows"] == "attention pool"
        f.attrs["windows"] = "token mean"
    assert embed(run, checkpoint=ckpt) == {"LONG": "updated", "NOECG": "skipped"}

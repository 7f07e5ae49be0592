"""SleepFM encoder: shapes, channel masking and permutation invariance, any length, registry."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sleepfm.models import (
    ChannelAttentionPool,
    SleepFMConfig,
    SleepFMEncoder,
    count_parameters,
    create_encoder,
    fuse_modalities,
    list_encoders,
    pool_epochs,
    pool_windows,
    precision,
)
from sleepfm.models.precision import bf16_autocast

SPT = 640  # samples per 5 s token at 128 Hz
ATOL = 1e-5


def signals(batch: int, channels: dict[str, int], tokens: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, c, tokens * SPT, generator=g) for m, c in channels.items()}


@pytest.fixture(scope="module")
def tiny() -> SleepFMEncoder:
    torch.manual_seed(0)
    model = create_encoder("sleepfm_tiny")
    # Non-trivial BatchNorm statistics, so eval-mode folding is exercised.
    model.train()
    model(signals(4, {"BAS": 3, "ECG": 1, "EMG": 2, "RESP": 2}, tokens=6, seed=1))
    return model.eval()


def test_base_parameter_count_and_shapes():
    model = create_encoder("sleepfm_base")
    n = count_parameters(model)
    assert 4.0e6 <= n <= 4.6e6, n
    assert model.modalities == ("BAS", "ECG", "EMG", "RESP")
    per_modality = {m: count_parameters(e) for m, e in model.encoders.items()}
    assert len(set(per_modality.values())) == 1 and sum(per_modality.values()) == n
    assert count_parameters(model, trainable_only=True) == n
    model.eval()
    with torch.inference_mode():
        out = model(signals(1, {"BAS": 2, "RESP": 1}, tokens=6))
    assert out.tokens["BAS"].shape == (1, 6, 128) and out.fused.shape == (1, 6, 128)


def test_forward_shapes_and_pooling(tiny):
    x = signals(2, {"BAS": 3, "ECG": 1, "EMG": 2, "RESP": 4}, tokens=60)
    with torch.inference_mode():
        feats = tiny.forward_features(x)
        out = tiny(x)
    assert set(feats) == set(x)
    for m in x:
        assert feats[m].shape == (2, 60, 32)
        torch.testing.assert_close(feats[m], out.tokens[m])
        assert out.present[m].tolist() == [True, True]
    torch.testing.assert_close(out.fused, torch.stack(list(feats.values())).mean(0))
    epochs = pool_epochs(out.fused)
    assert epochs.shape == (2, 10, 32)
    torch.testing.assert_close(epochs[:, 1], out.fused[:, 6:12].mean(1))
    assert pool_windows(out.fused).shape == (2, 1, 32)
    with pytest.raises(ValueError, match="multiple of 7"):
        pool_epochs(out.fused, tokens_per_epoch=7)


def test_channel_order_does_not_matter(tiny):
    x = signals(2, {"BAS": 4, "RESP": 3})
    perm = {"BAS": torch.tensor([2, 0, 3, 1]), "RESP": torch.tensor([1, 2, 0])}
    shuffled = {m: x[m][:, perm[m]] for m in x}
    with torch.inference_mode():
        a, b = tiny.forward_features(x), tiny.forward_features(shuffled)
    for m in x:
        torch.testing.assert_close(a[m], b[m], atol=ATOL, rtol=0)


def test_dropping_a_channel_changes_the_embedding_and_masking_equals_removal(tiny):
    x = signals(2, {"BAS": 4})
    fewer = {"BAS": x["BAS"][:, [0, 1, 3]]}
    mask = {"BAS": torch.tensor([[True, True, False, True]] * 2)}
    with torch.inference_mode():
        full = tiny.forward_features(x)["BAS"]
        dropped = tiny.forward_features(fewer)["BAS"]
        masked = tiny.forward_features(x, mask)["BAS"]
    assert torch.isfinite(dropped).all()
    assert (full - dropped).abs().max() > 1e-3
    torch.testing.assert_close(masked, dropped, atol=ATOL, rtol=0)


def test_single_channel_record_is_independent_of_its_batch(tiny):
    a = signals(1, {"BAS": 1, "ECG": 1}, seed=3)
    b = signals(1, {"BAS": 5, "ECG": 2}, seed=4)
    batch = {
        "BAS": torch.cat([F.pad(a["BAS"], (0, 0, 0, 4), value=float("nan")), b["BAS"]]),
        "ECG": torch.cat([F.pad(a["ECG"], (0, 0, 0, 1)), b["ECG"]]),
    }
    mask = {
        "BAS": torch.tensor([[True, False, False, False, False], [True] * 5]),
        "ECG": torch.tensor([[True, False], [True, True]]),
    }
    with torch.inference_mode():
        alone = tiny(a)
        together = tiny(batch, mask)
    for m in a:
        assert torch.isfinite(together.tokens[m]).all()
        torch.testing.assert_close(together.tokens[m][:1], alone.tokens[m], atol=ATOL, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_channel_pool_is_multihead_attention_with_a_learned_query(channels):
    torch.manual_seed(0)
    dim, heads = 32, 4
    pool = ChannelAttentionPool(dim, heads).eval()
    mha = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.eye(dim), pool.k_proj.weight, pool.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([torch.zeros(2 * dim), pool.v_proj.bias]))
        mha.out_proj.weight.copy_(pool.out_proj.weight)
        mha.out_proj.bias.copy_(pool.out_proj.bias)
    b, t = 3, 5
    tokens = torch.randn(b, channels, t, dim)
    mask = torch.ones(b, channels, dtype=torch.bool)
    mask[0, 1:] = False
    with torch.no_grad():
        got = pool(tokens, mask)
        kv = tokens.permute(0, 2, 1, 3).reshape(b * t, channels, dim)
        query = pool.query.expand(b * t, 1, dim)
        ref, _ = mha(query, kv, kv, key_padding_mask=~mask.repeat_interleave(t, dim=0))
        ref = pool.norm(ref.view(b, t, dim))
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    # One channel still goes through attention (value and output projections), not a shortcut.
    assert (got[0] - tokens[0, 0]).abs().max() > 1e-2


def test_absent_modalities(tiny):
    x = signals(3, {"BAS": 2, "ECG": 1, "RESP": 2})
    mask = {"ECG": torch.tensor([[True], [False], [True]])}
    with torch.inference_mode():
        out = tiny(x, mask)
        without_ecg = tiny({m: v for m, v in x.items() if m != "ECG"})
    assert "EMG" not in out.tokens
    assert out.present["ECG"].tolist() == [True, False, True]
    assert (out.tokens["ECG"][1] == 0).all()
    # Record 1 lacks ECG: its fused tokens are the mean over BAS and RESP only.
    torch.testing.assert_close(out.fused[1], without_ecg.fused[1], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.tokens["BAS"], without_ecg.tokens["BAS"], atol=ATOL, rtol=0)
    nobody = fuse_modalities({"ECG": out.tokens["ECG"]}, {"ECG": torch.zeros(3, dtype=torch.bool)})
    assert (nobody == 0).all()


@pytest.mark.parametrize("tokens", [180, 360])  # 3 x the 60-token training context; a 30 min nap
def test_inputs_longer_than_the_training_context(tiny, tokens):
    x = signals(1, {"BAS": 2, "RESP": 1}, tokens=tokens)
    with torch.inference_mode():
        out = tiny(x)
    assert out.fused.shape == (1, tokens, 32)
    assert torch.isfinite(out.fused).all()
    assert pool_windows(out.fused).shape == (1, tokens // 60, 32)


def test_input_errors_say_what_to_do(tiny):
    with pytest.raises(ValueError, match="multiple"):
        tiny({"BAS": torch.randn(1, 2, 1000)})
    with pytest.raises(ValueError, match="BAS, ECG, EMG, RESP"):
        tiny({"EEG": torch.randn(1, 2, SPT)})
    with pytest.raises(ValueError, match=r"shape \(1, 2\)"):
        tiny({"BAS": torch.randn(1, 2, SPT)}, {"BAS": torch.ones(1, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="share batch size"):
        tiny({"BAS": torch.randn(1, 2, SPT), "ECG": torch.randn(2, 1, SPT)})


def test_cpu_chunking_does_not_change_tokens(tiny):
    x = signals(2, {"BAS": 3}, tokens=6)
    tok = tiny.encoders["BAS"].tokenizer
    with torch.inference_mode():
        whole = tiny.forward_features(x)["BAS"]
        old = tok.cpu_chunk
        try:
            tok.cpu_chunk = 5
            chunked = tiny.forward_features(x)["BAS"]
        finally:
            tok.cpu_chunk = old
    torch.testing.assert_close(chunked, whole, atol=ATOL, rtol=0)


def test_folded_batchnorm_matches_conv_bn_elu(tiny):
    layer = tiny.encoders["BAS"].tokenizer.layers[1]
    x = torch.randn(7, layer.weight.shape[1], 80)
    with torch.no_grad():
        got = layer(x, torch.ones(7, dtype=torch.bool))
        y = F.conv1d(x, layer.weight, stride=layer.stride, padding=layer.padding)
        ref = F.elu(F.batch_norm(y, layer.running_mean, layer.running_var, layer.bn_weight,
                                 layer.bn_bias, training=False, eps=layer.eps))
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("rate", [128.0, 256.0])  # last two layers matrix products, or not
def test_tokenizer_inference_layout_matches_its_layers(rate):
    """Inference (channels-last, matrix products where a kernel spans its input, chunks) computes
    what the folded layers compute one by one."""
    torch.manual_seed(0)
    tok = create_encoder("sleepfm_tiny", sampling_rate=rate).encoders["BAS"].tokenizer
    x = torch.randn(40, tok.samples_per_token)
    valid = torch.ones(40, dtype=torch.bool)
    tok.train()(x, valid)  # non-trivial BatchNorm statistics
    tok.eval()
    tok.cpu_chunk = 16
    with torch.inference_mode():
        h = x.unsqueeze(1)
        for layer in tok.layers:
            h = layer(h, valid)
        torch.testing.assert_close(tok(x, valid), tok.norm(h.mean(dim=-1)), atol=ATOL, rtol=1e-5)


def test_training_ignores_padding_in_batchnorm_and_gradients():
    x = signals(3, {"BAS": 2}, tokens=2, seed=5)
    padded = {"BAS": F.pad(x["BAS"], (0, 0, 0, 2), value=float("nan"))}
    mask = {"BAS": torch.tensor([[True, True, False, False]] * 3)}
    models = []
    for inputs, m in ((x, None), (padded, mask)):
        torch.manual_seed(0)
        model = create_encoder("sleepfm_tiny", modalities=("BAS",), dropout=0.0).train()
        model(inputs, m).fused.square().mean().backward()
        models.append(model)
    clean, pad = models
    for (name, a), b in zip(clean.named_buffers(), pad.buffers()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    for (name, a), b in zip(clean.named_parameters(), pad.parameters()):
        assert torch.isfinite(b.grad).all(), name
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_autocast_runs(tiny):
    """The project's bf16 path never returns wrong numbers: on a CPU whose bf16 kernels are wrong
    it computes in fp32 instead (see test_bf16_guard_falls_back_to_fp32)."""
    x = signals(2, {"BAS": 2, "ECG": 1}, tokens=6)
    with torch.inference_mode():
        ref = tiny(x).fused
        with bf16_autocast("cpu"):
            out = tiny(x).fused
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05


def test_bf16_guard_falls_back_to_fp32(tiny, monkeypatch):
    """Where a bf16 kernel is wrong (simulated: the probe reports a 100 % error, as torch 2.13's
    CPU conv1d does on AVX512-BF16 machines), bf16 is not used, with a warning naming the probe."""
    monkeypatch.setattr(precision, "_RELIABLE", {})
    monkeypatch.setattr(precision, "probe_errors",
                        lambda device: {"conv1d(in=8, kernel=8, stride=4)": 1.0, "matmul": 0.01})
    x = signals(2, {"BAS": 2, "ECG": 1}, tokens=6)
    with torch.inference_mode():
        ref = tiny(x).fused
        with pytest.warns(RuntimeWarning, match=r"in=8, kernel=8, stride=4\): relative error 100%"):
            with bf16_autocast("cpu") as used:
                out = tiny(x).fused
    assert used is False and out.dtype == torch.float32 and torch.equal(out, ref)
    assert precision.checked_precision("bf16-mixed", "cpu") == "32-true"
    assert precision.checked_precision("16-mixed", "cpu") == "16-mixed"


def test_bf16_probe_covers_the_reported_shape():
    """The probe runs the shape of the reported bug, and a correct kernel passes it."""
    errors = precision.probe_errors("cpu")
    assert "conv1d(in=8, kernel=8, stride=4)" in errors and "matmul" in errors
    assert min(errors.values()) < precision.TOLERANCE


def test_config_round_trip_and_validation():
    cfg = SleepFMConfig(modalities=("BAS", "RESP"), ffn_dim=256)
    again = SleepFMConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    a, b = SleepFMEncoder(cfg), SleepFMEncoder(again)
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (a, b)]
    assert shapes[0] == shapes[1]
    with pytest.raises(ValueError, match="Valid fields are"):
        SleepFMConfig.from_dict({"embed_dimension": 64})
    with pytest.raises(ValueError, match="divisible"):
        SleepFMConfig(num_heads=5)
    with pytest.raises(ValueError, match="embed_dim=128"):
        SleepFMConfig(conv_channels=(16, 32, 64, 64, 128, 64))
    with pytest.raises(ValueError, match="modalities"):
        SleepFMConfig(modalities=("EEG",))


def test_registry():
    assert {"sleepfm_base", "sleepfm_tiny"} <= set(list_encoders())
    assert list_encoders("*tiny") == ["osf_tiny", "sleepfm_tiny"]
    model = create_encoder("sleepfm_tiny", modalities=("BAS", "ECG"))
    assert set(model.encoders) == {"BAS", "ECG"}
    with pytest.raises(ValueError, match="sleepfm_base"):
        create_encoder("sleepfm_huge")
    with pytest.raises(ValueError, match="Valid fields"):
        create_encoder("sleepfm_tiny", hidden=3)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_traces_as_one_graph(mode):
    # fullgraph=True fails on any graph break; the "eager" backend skips code generation.
    torch.manual_seed(0)
    model = getattr(create_encoder("sleepfm_tiny", dropout=0.0), mode)()
    for encoder in model.encoders.values():
        encoder.tokenizer.cpu_chunk = 8  # several chunks in eval mode on CPU
    eager = copy.deepcopy(model)
    x = signals(2, {"BAS": 3, "ECG": 1}, tokens=6)
    mask = {"BAS": torch.tensor([[True, True, False], [True, False, False]])}
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, mask).fused, eager(x, mask).fused, atol=ATOL, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_guard():
    assert precision.bf16_is_reliable("cuda"), precision.probe_errors("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_matches_fp32(tiny):
    model = create_encoder("sleepfm_tiny").cuda().eval()
    model.load_state_dict(tiny.state_dict())
    x = {m: v.cuda() for m, v in signals(2, {"BAS": 3, "ECG": 1}, tokens=60).items()}
    with torch.inference_mode():
        ref = model(x).fused
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x).fused
    assert (out.float() - ref).abs().mean() < 0.05

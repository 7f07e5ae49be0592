"""Pre-training objectives that train the OSF ViT-1D: a contract run over every one of them
(the loss goes down, gradients reach the encoder, masked leads are ignored), then what each
objective promises: DINO's teacher, centre and schedules; MAE's hidden patches; the causality of
next-patch prediction; VQ-VAE's codes and restarts; bind's refusals."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from sleepfm.exceptions import InvalidParameterError
from sleepfm.models import create_encoder
from sleepfm.ssl import create_objective, list_objectives
from sleepfm.ssl.augment import make_view
from sleepfm.ssl.base import OBJECTIVES

SMALL = {"width": 32, "depth": 2, "heads": 2, "dim_head": 16, "mlp_dim": 64}
#: Small heads and decoders so that the whole module runs in seconds.
OPTIONS = {
    "dino": {"out_dim": 64, "hidden_dim": 64, "bottleneck_dim": 16},
    "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
    "vqvae": {"codebook_size": 64, "code_dim": 16, "decoder_dim": 32, "decoder_depth": 1,
              "decoder_heads": 2},
}
VIT_OBJECTIVES = [n for n in list_objectives() if "ViT1D" in OBJECTIVES[n].architectures]
VIT_ONLY = [n for n in VIT_OBJECTIVES if "SleepFMEncoder" not in OBJECTIVES[n].architectures]
#: Encoder parameters that get no training signal by design. Under causal attention no patch
#: token attends to the CLS token, and AR's loss reads patch tokens only.
NO_SIGNAL = {"ar": {"cls_token"}}
NT, PT, PC = 30, 64, 4  # time patches, samples per patch, leads per patch (osf_nano's patching)


def make(name: str, seed: int = 0, encoder_overrides=None, **options):
    """A tiny ViT-1D with the objective's requirements and the objective bound to it."""
    torch.manual_seed(seed)
    encoder = create_encoder("osf_nano", **SMALL, **OBJECTIVES[name].encoder_requirements,
                             **(encoder_overrides or {})).train()
    objective = create_objective(name, **{**OPTIONS.get(name, {}), **options})
    objective.bind(encoder)
    return encoder, objective.train()


def epochs(n: int = 8, seed: int = 0, fill: float = 0.0):
    """Sines of random frequency and phase plus noise, ``[n, 12, 1920]``, with absent leads
    (whose samples are ``fill``)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(1920) / 64.0
    freq = 0.5 + 3 * torch.rand(n, 12, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 12, 1, generator=g)
    x = torch.sin(2 * math.pi * freq * t + phase) + 0.1 * torch.randn(n, 12, 1920, generator=g)
    mask = torch.ones(n, 12, dtype=torch.bool)
    mask[1, 4:8] = False           # a whole lead group
    mask[3, [0, 5, 9]] = False     # single leads of every group
    mask[5, 8:] = False
    return torch.where(mask[:, :, None], x, fill), mask


def train(encoder, objective, x, mask, steps: int, lr: float = 3e-3, seed: int = 1):
    """``steps`` AdamW steps on one batch; the same random draws (views, hidden tokens) at every
    step, so the loss is one fixed function of the weights (bar DINO's teacher and centre)."""
    params = [p for p in [*encoder.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses, terms = [], {}
    for _ in range(steps):
        torch.manual_seed(seed)
        loss, terms = objective.loss(encoder, x, mask, progress=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        objective.after_step(encoder, progress=0.0)
        losses.append(loss.item())
    return losses, terms


# --------------------------------------------------------------------------------------------
# The contract, over every objective that trains a ViT-1D
# --------------------------------------------------------------------------------------------
def test_every_objective_is_covered():
    assert {"ar", "dino", "loo_contrastive", "mae", "pairwise_contrastive", "simclr",
            "vqvae"} <= set(VIT_OBJECTIVES)
    assert {"ar", "dino", "mae", "simclr", "vqvae"} <= set(VIT_ONLY)


@pytest.mark.parametrize("name", VIT_OBJECTIVES)
def test_loss_decreases(name):
    # lr 3e-3: DINO's first step overshoots with these small heads (its bottleneck vector has a
    # norm of ~3e-3 before normalisation, so the loss is sharp) and needs the later steps to
    # come back; every objective is well below its first loss by the end.
    encoder, objective = make(name)
    x, mask = epochs()
    losses, _ = train(encoder, objective, x, mask, steps=8)
    assert all(math.isfinite(v) for v in losses), losses
    assert sum(losses[-3:]) / 3 < 0.95 * losses[0], losses


@pytest.mark.parametrize("name", VIT_OBJECTIVES)
def test_gradients_terms_and_masked_leads(name):
    encoder, objective = make(name)
    state = copy.deepcopy(objective.state_dict())
    x, mask = epochs(fill=float("nan"))
    torch.manual_seed(3)
    loss, terms = objective.loss(encoder, x, mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert terms and all(not t.requires_grad and torch.isfinite(t).all() for t in terms.values())
    loss.backward()
    params = dict(encoder.named_parameters())
    bad = [n for n, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, bad
    silent = {n for n, p in params.items() if not p.grad.abs().sum() > 0}
    assert silent == NO_SIGNAL.get(name, set())

    # What a masked lead holds (NaN, huge values, zeros) never changes the loss; the same seed
    # gives the same random draws, and the objective's state is restored before each call.
    losses = []
    for fill in (0.0, float("nan"), 1e6, -3.0):
        objective.load_state_dict(state)
        torch.manual_seed(3)
        losses.append(objective.loss(encoder, epochs(fill=fill)[0], mask)[0].detach())
    for value in losses[1:]:
        torch.testing.assert_close(value, losses[0], rtol=0, atol=0)
    torch.testing.assert_close(losses[0], loss.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", VIT_ONLY)
def test_bind_refuses_a_sleepfm_encoder(name):
    objective = create_objective(name, **OPTIONS.get(name, {}))
    with pytest.raises(InvalidParameterError, match="ViT1D"):
        objective.bind(create_encoder("sleepfm_tiny"))


@pytest.mark.parametrize("name, field, wrong", [
    ("ar", "causal", False), ("ar", "pool", "cls"), ("mae", "pool", "cls"),
    ("vqvae", "pool", "cls"), ("mae", "causal", True)])
def test_bind_refuses_a_vit_without_the_required_config(name, field, wrong):
    encoder = create_encoder("osf_nano", **{**SMALL, **OBJECTIVES[name].encoder_requirements,
                                            field: wrong})
    with pytest.raises(InvalidParameterError, match=field):
        create_objective(name, **OPTIONS.get(name, {})).bind(encoder)


@pytest.mark.parametrize("name, options, match", [
    ("mae", {"mask_ratio": 0.0}, r"mask_ratio must be in \(0, 1\)"),
    ("mae", {"mask_ratio": 1.0}, r"mask_ratio must be in \(0, 1\)"),
    ("mae", {"decoder_depth": 0}, "decoder_depth must be an integer >= 1"),
    ("mae", {"decoder_dim": 30, "decoder_heads": 4}, "must divide decoder_dim=30"),
    ("mae", {"norm_target": "yes"}, "norm_target must be true or false"),
    ("vqvae", {"codebook_size": 1}, "codebook_size must be an integer >= 2"),
    ("vqvae", {"code_dim": 2.5}, "code_dim must be an integer >= 1"),
    ("vqvae", {"beta": -0.1}, "beta must be a number >= 0"),
    ("vqvae", {"dead_after": -1}, "dead_after must be an integer >= 0"),
    ("vqvae", {"decoder_heads": 0}, "decoder_heads must be an integer >= 1"),
])
def test_options_are_checked(name, options, match):
    with pytest.raises(InvalidParameterError, match=match):
        create_objective(name, **options)


# --------------------------------------------------------------------------------------------
# DINO
# --------------------------------------------------------------------------------------------
def test_dino_schedules():
    dino = create_objective("dino")
    assert dino.teacher_momentum(0.0) == pytest.approx(0.996)
    assert dino.teacher_momentum(0.5) == pytest.approx(0.998)
    assert dino.teacher_momentum(1.0) == pytest.approx(1.0)
    grid = [i / 20 for i in range(21)]
    for p in grid:
        expected = 1 - 0.004 * (math.cos(math.pi * p) + 1) / 2
        assert dino.teacher_momentum(p) == pytest.approx(expected)
    momenta = [dino.teacher_momentum(p) for p in grid]
    assert momenta == sorted(momenta)
    for p, temp in [(0.0, 0.04), (0.025, 0.0475), (0.05, 0.055), (0.1, 0.07), (0.5, 0.07),
                    (1.0, 0.07)]:
        assert dino.teacher_temperature(p) == pytest.approx(temp)


def test_dino_teacher_is_an_ema_of_the_student():
    encoder, dino = make("dino")
    with torch.no_grad():  # move the student away from the teacher (a copy at bind)
        for p in [*encoder.parameters(), *dino.head.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    pairs = [(encoder, dino.teacher), (dino.head, dino.teacher_head)]
    old = [[p.clone() for p in teacher.parameters()] for _, teacher in pairs]
    progress = 0.3
    m = dino.teacher_momentum(progress)
    dino.after_step(encoder, progress=progress)
    for (student, teacher), before in zip(pairs, old):
        for s, t, b in zip(student.parameters(), teacher.parameters(), before, strict=True):
            torch.testing.assert_close(t, m * b + (1 - m) * s)


def test_dino_centre_moves_in_training_only():
    encoder, dino = make("dino")
    x, mask = epochs()
    with torch.no_grad():
        dino.center.copy_(0.05 * torch.randn_like(dino.center))
    old = dino.center.clone()
    torch.manual_seed(7)
    dino.loss(encoder, x, mask)
    # The teacher's scores of the global views, drawn with the same seed as the loss draws them.
    torch.manual_seed(7)
    views = [make_view(x, mask, p_drop=dino.lead_drop, span=dino.span)
             for _ in range(dino.n_global + dino.n_local)][:dino.n_global]
    with torch.no_grad():
        scores = dino.teacher_head(dino.teacher(torch.cat([v.x for v in views]),
                                                torch.cat([v.mask for v in views])))
    torch.testing.assert_close(dino.center, 0.9 * old + 0.1 * scores.mean(dim=0, keepdim=True))

    dino.eval()
    before = dino.center.clone()
    dino.loss(encoder, x, mask)
    torch.testing.assert_close(dino.center, before, rtol=0, atol=0)


def test_dino_teacher_gets_no_gradient_and_is_exported():
    encoder, dino = make("dino")
    assert not dino.teacher.training and not dino.teacher_head.training
    x, mask = epochs()
    loss, _ = dino.loss(encoder, x, mask)
    loss.backward()
    for p in [*dino.teacher.parameters(), *dino.teacher_head.parameters()]:
        assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in dino.head.parameters())
    assert dino.export(encoder) is dino.teacher


# --------------------------------------------------------------------------------------------
# MAE
# --------------------------------------------------------------------------------------------
def test_mae_hides_the_given_fraction_of_tokens():
    encoder, mae = make("mae")
    n = encoder.config.num_patches
    x, mask = epochs()
    out = mae.reconstruct(encoder, x, mask)
    assert out.hidden.shape == (8, n) and out.prediction.shape == out.target.shape == (8, n, 256)
    assert (out.hidden.sum(dim=1) == n - int(n * 0.25)).all()       # 68 of 90 tokens
    assert abs(out.hidden.float().mean().item() - 0.75) <= 1 / n
    assert len({tuple(h.tolist()) for h in out.hidden}) == 8         # drawn per sample
    half = create_objective("mae", mask_ratio=0.5, **OPTIONS["mae"])
    half.bind(encoder)
    assert (half.reconstruct(encoder, x, mask).hidden.sum(dim=1) == n // 2).all()


def test_mae_loss_is_the_mse_over_hidden_present_samples():
    encoder, mae = make("mae")
    x, mask = epochs()
    torch.manual_seed(11)
    out = mae.reconstruct(encoder, x, mask)
    torch.manual_seed(11)
    loss, terms = mae.loss(encoder, x, mask)
    counted = out.hidden[:, :, None] & out.present
    sq = (out.prediction.double() - out.target.double()) ** 2
    assert loss.item() == pytest.approx(sq[counted].mean().item(), rel=1e-5)
    assert terms["masked_fraction"].item() == pytest.approx(out.hidden.float().mean().item())
    assert not counted[1].view(3, NT, 256)[1].any()                  # the absent group of record 1


def test_mae_predictions_of_visible_patches_do_not_count(monkeypatch):
    encoder, mae = make("mae")
    x, mask = epochs()
    torch.manual_seed(11)
    reference, _ = mae.loss(encoder, x, mask)
    decode = mae.decoder.forward

    def spoiled(tokens, index):  # NaN wherever the patch was visible to the encoder
        out = decode(tokens, index)
        return out.scatter(1, index[:, :, None].expand(-1, -1, out.shape[-1]), float("nan"))

    monkeypatch.setattr(mae.decoder, "forward", spoiled)
    torch.manual_seed(11)
    loss, _ = mae.loss(encoder, x, mask)
    torch.testing.assert_close(loss, reference, rtol=0, atol=0)


def _token_region(j: int):
    """Leads and samples under patch token ``j`` (lead group major order)."""
    g, t = divmod(j, NT)
    return slice(g * PC, (g + 1) * PC), slice(t * PT, (t + 1) * PT)


def test_mae_encoder_never_sees_hidden_patches():
    encoder, mae = make("mae")
    x, mask = epochs()
    torch.manual_seed(5)
    ref = mae.reconstruct(encoder, x, mask)
    hidden = ref.hidden[0].nonzero().flatten().tolist()
    visible = (~ref.hidden[0]).nonzero().flatten().tolist()
    for j, seen in ((hidden[3], False), (visible[2], True)):
        leads, times = _token_region(j)
        x2 = x.clone()
        x2[0, leads, times] += 3.0
        torch.manual_seed(5)
        out = mae.reconstruct(encoder, x2, mask)
        changed = (out.target != ref.target).any(dim=-1)
        assert changed[0, j] and changed.sum() == 1                  # the region is token j's
        if seen:
            assert not torch.equal(out.prediction, ref.prediction)
        else:  # a hidden patch's content reaches the loss through its target only
            torch.testing.assert_close(out.prediction, ref.prediction, rtol=0, atol=0)


def test_mae_norm_target_standardises_each_patch():
    encoder, mae = make("mae", norm_target=True)
    x, mask = epochs()
    out = mae.reconstruct(encoder, x, mask)
    values, present = encoder.patch_values(x, mask)
    for b in range(values.shape[0]):
        for j in range(values.shape[1]):
            keep = present[b, j]
            if not keep.any():
                assert (out.target[b, j] == 0).all()
                continue
            v = values[b, j][keep].double()
            expected = (v - v.mean()) / (v.var(unbiased=False) + 1e-6).sqrt()
            torch.testing.assert_close(out.target[b, j][keep].double(), expected,
                                       rtol=1e-4, atol=1e-4)
            assert (out.target[b, j][~keep] == 0).all()


# --------------------------------------------------------------------------------------------
# Next-patch prediction
# --------------------------------------------------------------------------------------------
def test_ar_predictions_never_see_their_targets():
    encoder, ar = make("ar")
    x, mask = epochs()
    ref = ar.predict(encoder, x, mask)
    assert ref.prediction.shape == ref.target.shape == (8, 3, NT - 1, 256)
    for t in (0, 12, NT - 3):
        x2 = x.clone()
        x2[:, :, (t + 1) * PT:] = 5 * torch.randn_like(x2[:, :, (t + 1) * PT:])
        out = ar.predict(encoder, x2, mask)
        # the tokens of time patches <= t (predicting t + 1 at most) do not move ...
        torch.testing.assert_close(out.prediction[:, :, :t + 1], ref.prediction[:, :, :t + 1],
                                   rtol=1e-5, atol=1e-5)
        # ... the later ones, and the targets, do
        assert not torch.allclose(out.prediction[:, :, t + 1:], ref.prediction[:, :, t + 1:])
        assert not torch.allclose(out.target[:, :, t:], ref.target[:, :, t:])


def test_ar_loss_is_the_mse_against_the_next_patch():
    encoder, ar = make("ar")
    x, mask = epochs()
    out = ar.predict(encoder, x, mask)
    for g in range(3):
        for t in (0, 7, NT - 2):
            leads = slice(g * PC, (g + 1) * PC)
            times = slice((t + 1) * PT, (t + 2) * PT)
            expected = torch.where(mask[:, leads, None], x[:, leads, times], 0.0)
            torch.testing.assert_close(out.target[:, g, t], expected.flatten(1))
            torch.testing.assert_close(out.present[:, g, t],
                                       mask[:, leads, None].expand(-1, -1, PT).flatten(1))
    loss, terms = ar.loss(encoder, x, mask)
    sq = (out.prediction.double() - out.target.double()) ** 2
    assert loss.item() == pytest.approx(sq[out.present].mean().item(), rel=1e-5)
    assert terms["target_fraction"].item() == pytest.approx(out.present.float().mean().item())


# --------------------------------------------------------------------------------------------
# VQ-VAE
# --------------------------------------------------------------------------------------------
def test_vqvae_quantises_to_the_nearest_code():
    encoder, vq = make("vqvae")
    x, mask = epochs()
    out = vq.quantize(encoder, x, mask)
    codes = vq.codes().detach()
    torch.testing.assert_close(out.z_q, codes[out.index], rtol=0, atol=0)
    torch.testing.assert_close(out.z_q.norm(dim=-1), torch.ones(out.index.shape))
    torch.testing.assert_close(out.z_e.norm(dim=-1), torch.ones(out.index.shape))
    dist = torch.cdist(out.z_e.detach().reshape(-1, codes.shape[1]), codes)
    chosen = dist.gather(1, out.index.reshape(-1, 1)).squeeze(1)
    assert (chosen <= dist.min(dim=1).values + 1e-6).all()
    assert (out.valid == out.present.any(dim=-1)).all() and not out.valid[1, 30:60].any()


def test_vqvae_logs_usage_and_uses_several_codes():
    encoder, vq = make("vqvae")
    x, mask = epochs()
    _, terms = train(encoder, vq, x, mask, steps=3)
    assert {"recon", "codebook", "commitment", "perplexity", "codes_used"} <= set(terms)
    assert terms["perplexity"].item() > 1.0
    assert 2 <= terms["codes_used"].item() <= 64
    assert terms["perplexity"].item() <= terms["codes_used"].item() + 1e-4


def test_vqvae_restarts_unused_codes_from_recent_outputs():
    runs = []
    for _ in range(2):
        encoder, vq = make("vqvae", dead_after=1)
        assert {"usage", "idle", "recent", "recent_count", "restarts"} <= set(vq.state_dict())
        x, mask = epochs()
        torch.manual_seed(2)
        out = vq.quantize(encoder, x, mask)
        used = set(out.index[out.valid].tolist())
        torch.manual_seed(2)
        vq.loss(encoder, x, mask)
        before = vq.codebook.detach().clone()
        vq.after_step(encoder, progress=0.0)
        dead = [k for k in range(64) if k not in used]
        assert dead and vq.restarts.item() == len(dead)
        assert (vq.idle == 0).all() and (vq.usage == 0).all()
        kept = sorted(used)
        torch.testing.assert_close(vq.codebook[kept], before[kept], rtol=0, atol=0)
        recent = vq.recent[:int(vq.recent_count)]
        assert int(vq.recent_count) == min(64, int(out.valid.sum()))
        gap = (vq.codebook[dead].detach()[:, None] - recent[None]).abs().amax(dim=-1)
        assert (gap.min(dim=1).values == 0).all()                    # each one a recent z_e
        runs.append(vq.codebook.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)   # deterministic given the seed


def test_dino_diagnoses_its_collapses():
    dino = create_objective("dino", out_dim=64, hidden_dim=32, bottleneck_dim=8)
    top = math.log(64)
    assert "uniform" in dino.diagnose({"epoch_entropy": 0.99 * top, "teacher_entropy": top})
    assert "uniform" in dino.diagnose({"loss": top})  # logs without the per-epoch entropy
    assert "few prototypes" in dino.diagnose({"epoch_entropy": 0.1, "teacher_entropy": 0.01})
    assert dino.diagnose({"epoch_entropy": 0.5 * top, "teacher_entropy": 0.9 * top}) is None
    assert create_objective("mae").diagnose({"loss": 9.0}) is None

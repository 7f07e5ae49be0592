"""Pre-training objectives: loss values against loop computations, masking, registry contract."""
from __future__ import annotations

import math

import pytest
import torch

from sleepfm.models import create_encoder
from sleepfm.ssl import ModalityObjective, Objective, create_objective, list_objectives
from sleepfm.ssl.base import OBJECTIVES

#: Objectives over one embedding per modality (the ModalityObjective contract: compute, pool,
#: objective(embeddings, present)); the ViT-1D objectives are tested in test_ssl_vit.py.
MODALITY_OBJECTIVES = [n for n in list_objectives() if issubclass(OBJECTIVES[n], ModalityObjective)]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def loo_by_hand(emb, present, tau=0.1, symmetric=False) -> float:
    """Leave-one-out InfoNCE, written out with loops over modalities and records (float64)."""
    names = list(emb)
    n = len(next(iter(emb.values())))
    z = {m: [_unit(emb[m][k].double()) for k in range(n)] for m in names}
    count = [sum(bool(present[m][k]) for m in names) for k in range(n)]

    def others(i, k):
        return _unit(sum(z[j][k] for j in names if j != i and present[j][k]))

    terms = []
    for i in names:
        rows = [k for k in range(n) if present[i][k] and count[k] >= 2]
        for k in rows:
            den = sum(math.exp(float(z[i][k] @ others(i, m)) / tau) for m in rows)
            terms.append(-(float(z[i][k] @ others(i, k)) / tau - math.log(den)))
            if symmetric:
                den = sum(math.exp(float(others(i, k) @ z[i][m]) / tau) for m in rows)
                terms.append(-(float(others(i, k) @ z[i][k]) / tau - math.log(den)))
    return sum(terms) / len(terms) if terms else 0.0


def pairwise_by_hand(emb, present, tau=0.1) -> float:
    """CLIP loss over every modality pair, written out with loops (float64)."""
    names = list(emb)
    n = len(next(iter(emb.values())))
    z = {m: [_unit(emb[m][k].double()) for k in range(n)] for m in names}
    terms = []
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            rows = [k for k in range(n) if present[a][k] and present[b][k]]
            for x, y in ((a, b), (b, a)):
                for k in rows:
                    den = sum(math.exp(float(z[x][k] @ z[y][m]) / tau) for m in rows)
                    terms.append(-(float(z[x][k] @ z[y][k]) / tau - math.log(den)))
    return sum(terms) / len(terms) if terms else 0.0


def batch(n=6, dim=5, names=("BAS", "ECG", "EMG", "RESP"), seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = {m: torch.randn(n, dim, generator=g) for m in names}
    present = {m: torch.ones(n, dtype=torch.bool) for m in names}
    return emb, present


# A tiny example with numbers one can follow: 3 records, 3 modalities, 2-D embeddings.
HAND_EMB = {
    "BAS": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
    "ECG": torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]]),
    "RESP": torch.tensor([[1.0, -0.2], [-0.1, 1.0], [0.7, 0.9]]),
}
HAND_PRESENT = {m: torch.ones(3, dtype=torch.bool) for m in HAND_EMB}


@pytest.mark.parametrize("symmetric", [False, True])
def test_loo_equals_loop_computation(symmetric):
    obj = create_objective("loo_contrastive", symmetric=symmetric)
    got = obj(HAND_EMB, HAND_PRESENT)
    expected = loo_by_hand(HAND_EMB, HAND_PRESENT, symmetric=symmetric)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    emb, present = batch()
    present["EMG"][[1, 4]] = False
    present["ECG"][4] = False
    got = obj(emb, present)
    assert got.item() == pytest.approx(loo_by_hand(emb, present, symmetric=symmetric), rel=1e-5)


def test_loo_hand_example_first_term():
    # BAS of record 0 is (1, 0); the mean of its other modalities is the mean of the normalised
    # ECG and RESP rows. Check the objective's per-modality BAS term against that arithmetic.
    _, terms = create_objective("loo_contrastive").compute(HAND_EMB, HAND_PRESENT)
    z = {m: torch.nn.functional.normalize(v.double(), dim=1) for m, v in HAND_EMB.items()}
    others = torch.nn.functional.normalize(z["ECG"] + z["RESP"], dim=1)
    logits = z["BAS"] @ others.T / 0.1
    expected = (logits.logsumexp(1) - logits.diag()).mean().item()
    assert terms["loss_BAS"].item() == pytest.approx(expected, rel=1e-5)


def test_pairwise_equals_loop_computation():
    obj = create_objective("pairwise_contrastive")
    expected = pairwise_by_hand(HAND_EMB, HAND_PRESENT)
    assert obj(HAND_EMB, HAND_PRESENT).item() == pytest.approx(expected, rel=1e-5)
    emb, present = batch(seed=1)
    present["RESP"][[0, 2]] = False
    present["BAS"][2] = False
    assert obj(emb, present).item() == pytest.approx(pairwise_by_hand(emb, present), rel=1e-5)


@pytest.mark.parametrize("name", ["loo_contrastive", "pairwise_contrastive"])
def test_masking_a_modality_equals_leaving_it_out(name):
    obj = create_objective(name)
    emb, present = batch(seed=2)
    masked_emb = dict(emb, ECG=torch.full_like(emb["ECG"], float("nan")))
    masked_present = dict(present, ECG=torch.zeros(6, dtype=torch.bool))
    without = {m: v for m, v in emb.items() if m != "ECG"}
    without_present = {m: v for m, v in present.items() if m != "ECG"}
    torch.testing.assert_close(obj(masked_emb, masked_present), obj(without, without_present))


@pytest.mark.parametrize("name", ["loo_contrastive", "pairwise_contrastive"])
def test_records_with_one_modality_contribute_nothing(name):
    obj = create_objective(name)
    emb, present = batch(n=5, seed=3)
    extra_emb = {m: torch.cat([v, torch.randn(1, 5)]) for m, v in emb.items()}
    extra_present = {m: torch.cat([v, torch.tensor([m == "BAS"])]) for m, v in present.items()}
    torch.testing.assert_close(obj(extra_emb, extra_present), obj(emb, present))


@pytest.mark.parametrize("name", MODALITY_OBJECTIVES)
def test_objective_contract(name):
    obj = create_objective(name)
    assert isinstance(obj, Objective) and obj.name == name
    emb, present = batch(n=8, seed=4)
    present["EMG"][[0, 3]] = False
    present["RESP"][5] = False
    emb = {m: v.requires_grad_() for m, v in emb.items()}

    loss, terms = obj.compute(emb, present)
    assert loss.ndim == 0 and torch.isfinite(loss)
    torch.testing.assert_close(obj(emb, present), loss)
    assert all(not t.requires_grad and torch.isfinite(t).all() for t in terms.values())
    loss.backward()
    for m, v in emb.items():
        assert torch.isfinite(v.grad).all()
        assert (v.grad[~present[m]] == 0).all(), m
        assert v.grad[present[m]].abs().sum() > 0, m

    # Whatever absent rows hold (NaN included) does not change the loss.
    poisoned = {m: torch.where(present[m][:, None], v.detach(), float("nan")) for m, v in emb.items()}
    torch.testing.assert_close(obj(poisoned, present), loss.detach())

    # Nothing to contrast: a zero loss that still back-propagates.
    lonely = {m: torch.arange(8) % 4 == i for i, m in enumerate(emb)}
    empty = obj(emb, lonely)
    assert empty.item() == 0.0
    empty.backward()

    # Default pooling: mean over time.
    tokens = {m: torch.randn(2, 6, 5) for m in ("BAS", "ECG")}
    pooled = obj.pool(tokens)
    torch.testing.assert_close(pooled["BAS"], tokens["BAS"].mean(1))


def test_registry_and_options():
    assert list_objectives() == ["ar", "dino", "loo_contrastive", "mae", "pairwise_contrastive",
                                 "simclr", "vqvae"]
    assert list_objectives("pair*") == ["pairwise_contrastive"]
    assert list_objectives("*contrastive") == ["loo_contrastive", "pairwise_contrastive"]
    assert MODALITY_OBJECTIVES == ["loo_contrastive", "pairwise_contrastive"]
    with pytest.raises(ValueError, match="ar, dino, loo_contrastive, mae, .*vqvae"):
        create_objective("simclr_v9")
    with pytest.raises(ValueError, match="mask_ratio"):
        create_objective("mae", mask_ratio=1.5)
    with pytest.raises(ValueError, match="invalid options"):
        create_objective("ar", temperature=0.1)
    with pytest.raises(ValueError, match="temperature"):
        create_objective("loo_contrastive", temperature=0)
    emb, present = batch()
    with pytest.raises(ValueError, match="same modalities"):
        create_objective("loo_contrastive")(emb, {"BAS": present["BAS"]})


@pytest.mark.parametrize("name", MODALITY_OBJECTIVES)
def test_every_encoder_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    encoder = create_encoder("sleepfm_tiny").train()
    obj = create_objective(name)
    g = torch.Generator().manual_seed(0)
    montage = {"BAS": 3, "ECG": 1, "EMG": 2, "RESP": 2}
    x = {m: torch.randn(4, c, 2 * 640, generator=g) for m, c in montage.items()}
    mask = {"EMG": torch.tensor([[True, True], [True, False], [False, False], [True, True]])}
    out = encoder(x, mask)
    loss = obj(obj.pool(out.tokens), out.present)
    loss.backward()
    bad = [n for n, p in encoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad

"""Heads on epoch embeddings: the estimator contract over the registry, learning, state."""
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load, save
from sklearn.base import clone

from sleepfm.exceptions import LabelError, NotFittedError
from sleepfm.models.heads import (
    HEADS,
    AHIRegressor,
    EventHead,
    LSTMStagingNet,
    LinearProbe,
    MLPHead,
    StagingHead,
    create_head,
    expected_event_rate,
    head_from_state,
    list_heads,
)

DIM = 16
SMALL = {
    "linear_probe": {"epochs": 3, "batch_size": 256},
    "mlp": {"epochs": 3, "hidden": 16, "batch_size": 256},
    "staging_lstm": {"epochs": 2, "hidden": 16, "seq_len": 32, "batch_nights": 4},
    "events": {"epochs": 2, "hidden": 16, "seq_len": 32, "batch_nights": 4},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: tiny models run faster and steadier on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def markov_nights(n_nights, n_epochs, *, sep=0.5, stay=0.95, seed=0, n_classes=5):
    """Embeddings = weakly separated class means + noise; stages follow a sticky Markov chain.

    Per-epoch separation is weak, so a model that uses the night's context (the LSTM) can do
    much better than one that looks at epochs alone.
    """
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(123).normal(size=(n_classes, DIM)) * sep
    X, Y = [], []
    for _ in range(n_nights):
        n = n_epochs + int(rng.integers(-n_epochs // 10, n_epochs // 10 + 1))
        y = np.empty(n, dtype=np.int64)
        y[0] = 0
        switch = rng.random(n) >= stay
        fresh = rng.integers(0, n_classes, n)
        for t in range(1, n):
            y[t] = fresh[t] if switch[t] else y[t - 1]
        X.append((means[y] + rng.normal(size=(n, DIM))).astype(np.float32))
        y[rng.random(n) < 0.03] = -1
        Y.append(y)
    return X, Y


def event_labels(Y, seed=0):
    """Three binary events tied to the stages (so they are learnable from the embeddings)."""
    rng = np.random.default_rng(seed)
    out = []
    for y in Y:
        ev = np.stack([(y == 2) | (y == 4), y == 1, (y == 3) & (rng.random(y.size) < 0.7)], 1)
        ev = ev.astype(np.float32)
        ev[y < 0] = -1
        out.append(ev)
    return out


@pytest.fixture(scope="module")
def nights():
    X, Y = markov_nights(10, 80, seed=1)
    return X, Y, event_labels(Y)


def targets_for(name, nights):
    X, Y, E = nights
    return E if name == "events" else Y


# ---- contract over the registry --------------------------------------------------------------
def test_registry():
    assert list_heads() == sorted(HEADS) == ["events", "linear_probe", "mlp", "staging_lstm"]
    assert list_heads("*lstm") == ["staging_lstm"]
    assert isinstance(create_head("mlp", hidden=8), MLPHead)
    with pytest.raises(ValueError, match="Known heads: events, linear_probe"):
        create_head("transformer")


@pytest.mark.parametrize("name", list_heads())
def test_head_contract(name, nights):
    X, _, _ = nights
    y = targets_for(name, nights)
    head = create_head(name, **SMALL[name])
    for method in ("predict", "predict_proba"):
        with pytest.raises(NotFittedError, match=rf"This {type(head).__name__} .*Call 'fit'"):
            getattr(head, method)(X)
    with pytest.raises(NotFittedError):
        head.get_state()
    assert head.fit(X, y) is head
    assert head.n_features_in_ == DIM and len(head.history_) == SMALL[name]["epochs"]

    proba = head.predict_proba(X)
    pred = head.predict(X)
    n_out = 3 if name == "events" else 5
    assert isinstance(proba, list) and len(proba) == len(X)
    for p, lab, x in zip(proba, pred, X):
        assert p.shape == (x.shape[0], n_out)
        assert lab.shape == ((x.shape[0], 3) if name == "events" else (x.shape[0],))
        assert np.all((p >= 0) & (p <= 1))
        if name != "events":
            np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
            np.testing.assert_array_equal(lab, p.argmax(axis=1))
    single = head.predict_proba(X[0])
    assert isinstance(single, np.ndarray)
    np.testing.assert_allclose(single, proba[0], atol=1e-6)
    assert np.isfinite(head.score(X, y))

    # state round trip through safetensors bytes + JSON gives identical predictions
    tensors, meta = head.get_state()
    restored = head_from_state(load(save(tensors)), json.loads(json.dumps(meta)))
    assert type(restored) is type(head)
    for a, b in zip(proba, restored.predict_proba(X)):
        np.testing.assert_array_equal(a, b)

    # deterministic given the seed; clone keeps the options
    again = clone(head).fit(X, y)
    for a, b in zip(proba, again.predict_proba(X)):
        np.testing.assert_array_equal(a, b)
    assert clone(head).get_params() == head.get_params()

    with pytest.raises(ValueError, match="features"):
        head.predict([np.zeros((5, DIM + 1), np.float32)])


def test_input_errors_say_what_to_do(nights):
    X, Y, _ = nights
    head = LinearProbe(epochs=1)
    with pytest.raises(LabelError, match="night 1: .* trim or pad"):
        head.fit(X[:2], [Y[0], Y[1][:-1]])
    with pytest.raises(LabelError, match="outside -1..4"):
        head.fit(X[:1], [np.full(X[0].shape[0], 7)])
    with pytest.raises(LabelError, match="X has 2 nights but y has 1"):
        head.fit(X[:2], Y[:1])
    with pytest.raises(ValueError, match="list"):
        head.fit(np.stack([X[0][:10], X[1][:10]]), Y[:2])
    with pytest.raises(ValueError, match="'epochs' must be a positive integer"):
        LinearProbe(epochs=0).fit(X, Y)
    bad = [x.copy() for x in X[:1]]
    bad[0][3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        head.fit(bad, Y[:1])


# ---- learning -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def staging_data():
    X, Y = markov_nights(40, 240, seed=2)
    return X[:32], Y[:32], X[32:], Y[32:]


STAGING_FAST = {"hidden": 32, "epochs": 8, "seq_len": 64, "batch_nights": 8}


def test_staging_head_learns_with_context(staging_data):
    Xtr, Ytr, Xte, Yte = staging_data
    lstm = StagingHead(**STAGING_FAST).fit(Xtr, Ytr)
    probe = LinearProbe(epochs=10, batch_size=512).fit(Xtr, Ytr)
    lstm_f1, probe_f1 = lstm.score(Xte, Yte), probe.score(Xte, Yte)
    assert lstm_f1 > 0.7  # chance is 0.2
    assert lstm_f1 > probe_f1 + 0.1  # uses the night's context, not just each epoch


def test_staging_head_with_shuffled_labels_is_at_chance(staging_data):
    Xtr, Ytr, Xte, Yte = staging_data
    flat = np.random.default_rng(0).permutation(np.concatenate(Ytr))
    shuffled = np.split(flat, np.cumsum([y.size for y in Ytr])[:-1])
    head = StagingHead(**STAGING_FAST).fit(Xtr, shuffled)
    assert head.score(Xte, Yte) < 0.35  # chance level: about 0.2


def test_unscored_epochs_are_ignored(staging_data):
    Xtr, Ytr, _, _ = staging_data
    flat = np.concatenate(Ytr)
    head = LinearProbe(epochs=1).fit(Xtr, Ytr)
    counts = np.bincount(flat[flat >= 0], minlength=5)
    np.testing.assert_allclose(head.class_weight_, counts.sum() / (5 * counts), rtol=1e-5)
    # the loss is cross-entropy over scored epochs only
    logits = torch.randn(1, 6, 5)
    target = torch.tensor([[0, -1, 3, 4, -1, 1]])
    weight = torch.tensor(head.class_weight_)
    keep = target[0] >= 0
    expected = torch.nn.functional.cross_entropy(logits[0, keep], target[0, keep], weight=weight)
    torch.testing.assert_close(head._loss(logits, target, weight), expected)
    # a night labelled only -1 contributes nothing to the loss
    c = LinearProbe(epochs=2, batch_size=10**6).fit(
        Xtr + [Xtr[0]], Ytr + [np.full(Ytr[0].size, -1)]).history_
    assert np.isfinite(c[-1]["loss"])


def test_early_stopping_keeps_best_epoch(staging_data):
    Xtr, Ytr, Xte, Yte = staging_data
    head = StagingHead(**{**STAGING_FAST, "epochs": 6, "patience": 2}).fit(
        Xtr[:12], Ytr[:12], X_val=Xte, y_val=Yte)
    scores = [r["val_score"] for r in head.history_]
    assert head.best_epoch_ == int(np.argmax(scores))
    assert head.score(Xte, Yte) == pytest.approx(max(scores))
    assert len(scores) == 6 or len(scores) - 1 - head.best_epoch_ == 2


def test_whole_night_prediction_beyond_crop_length(staging_data):
    Xtr, Ytr, _, _ = staging_data
    head = StagingHead(hidden=8, epochs=1, seq_len=16, batch_nights=4, bidirectional=True)
    head.fit(Xtr[:4], Ytr[:4])
    long_night = np.concatenate(Xtr[:3])
    alone = head.predict_proba(long_night)
    batched = head.predict_proba([Xtr[5], long_night, Xtr[6][:7]])[1]
    assert alone.shape[0] == long_night.shape[0] > 16
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_lstm_padding_mask_does_not_change_outputs():
    torch.manual_seed(0)
    net = LSTMStagingNet(DIM, 5, hidden=8, bidirectional=True).eval()
    x = torch.randn(2, 30, DIM)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    out = net(x, mask)
    np.testing.assert_allclose(out[1, :20].detach(), net(x[1:2, :20])[0].detach(), atol=1e-5)
    assert out.shape == (2, 30, 5)


def test_mlp_soft_targets_and_distillation(staging_data):
    Xtr, Ytr, Xte, Yte = staging_data
    teacher = StagingHead(**STAGING_FAST).fit(Xtr, Ytr)
    student = MLPHead(hidden=32, epochs=8, batch_size=512).distill(teacher, Xtr)
    same = np.concatenate(student.predict(Xte)) == np.concatenate(teacher.predict(Xte))
    assert same.mean() > 0.5
    soft = teacher.predict_proba(Xtr)
    soft[0][:5] = np.nan  # unscored rows
    MLPHead(hidden=8, epochs=1).fit(Xtr, soft)
    with pytest.raises(LabelError, match="non-negative"):
        MLPHead(epochs=1).fit(Xtr[:1], [-soft[1][: Xtr[0].shape[0]]])


@pytest.mark.parametrize("name", ["mlp", "staging_lstm"])
def test_one_hot_soft_targets_train_exactly_like_hard_labels(name, nights):
    X, Y, _ = nights
    soft = [np.where((y < 0)[:, None], np.nan, np.eye(5)[np.clip(y, 0, 4)]) for y in Y]
    hard = create_head(name, **SMALL[name]).fit(X, Y)
    from_soft = create_head(name, **SMALL[name]).fit(X, soft)
    assert [r["loss"] for r in hard.history_] == pytest.approx(
        [r["loss"] for r in from_soft.history_], rel=1e-5)
    np.testing.assert_allclose(np.concatenate(hard.predict_proba(X)),
                               np.concatenate(from_soft.predict_proba(X)), atol=1e-5)


def test_event_head_and_ahi(staging_data):
    Xtr, Ytr, Xte, Yte = staging_data
    head = EventHead(hidden=16, epochs=6, seq_len=64, batch_nights=8).fit(Xtr, event_labels(Ytr))
    assert head.score(Xte, event_labels(Yte)) > 0.8
    assert head.pos_weight_.shape == (3,)

    rng = np.random.default_rng(0)
    proba = [rng.random(960) * r for r in np.linspace(0.05, 0.9, 12)]
    stages = [np.full(960, 2) for _ in proba]
    rate = expected_event_rate(proba, stages=stages)
    true_ahi = 1.5 * rate + 2.0
    reg = AHIRegressor()
    with pytest.raises(NotFittedError, match="AHIRegressor"):
        reg.predict(proba)
    reg.fit(proba, true_ahi, stages=stages)
    np.testing.assert_allclose(reg.coef_, [1.5, 2.0], atol=1e-6)
    np.testing.assert_allclose(reg.predict(proba, stages=stages), true_ahi, atol=1e-6)
    assert set(reg.predict_severity(proba, stages=stages)) <= {0, 1, 2, 3}
    assert reg.score(proba, true_ahi, stages=stages) == pytest.approx(1.0)
    tensors, meta = reg.get_state()
    back = head_from_state(tensors, json.loads(json.dumps(meta)))
    np.testing.assert_array_equal(back.predict(proba), reg.predict(proba))
    wake = [np.r_[np.zeros(480), np.full(480, 2)]]
    # only sleep epochs count: half the night awake halves the hours
    assert expected_event_rate([np.ones(960)], stages=wake)[0] == pytest.approx(120.0)


def test_state_is_plain_tensors_and_json(nights):
    X, Y, _ = nights
    tensors, meta = StagingHead(**SMALL["staging_lstm"]).fit(X, Y).get_state()
    assert all(isinstance(v, torch.Tensor) and v.is_contiguous() for v in tensors.values())
    json.dumps(meta)
    buffer = io.BytesIO(save(tensors))
    assert set(load(buffer.getvalue())) == set(tensors)
    with pytest.raises(ValueError, match="head_from_state"):
        LinearProbe.from_state(tensors, meta)

"""Event detection on frozen epoch embeddings: several binary events per epoch (multi-label)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...eval.metrics import auroc
from ...exceptions import InvalidParameterError, LabelError
from ...utils import check_option
from ...vocab import EVENT_NAMES
from .base import BaseHead, _check_positive, register_head
from .nets import EpochMLP, LSTMStagingNet


@register_head("events")
class EventHead(BaseHead):
    """Per-epoch detection of several binary events (multi-label) from epoch embeddings.

    ``y`` per night is ``[n_epochs, n_events]`` (or ``[n_epochs]`` for one event) with 1 = the
    event occurs in the epoch, 0 = it does not, -1 = unknown (ignored). Values in (0, 1) are
    taken as soft targets.

    Parameters
    ----------
    events : sequence of str, default=("apnea_hypopnea", "arousal", "desaturation")
        Event names, one output each.
    arch : {"lstm", "mlp"}, default="lstm"
        :class:`LSTMStagingNet` over the night, or :class:`EpochMLP` per epoch.
    hidden : int, default=64
        Hidden size.
    num_layers : int, default=2
        LSTM layers (``arch="lstm"``).
    bidirectional : bool, default=False
        Bidirectional LSTM.
    dropout : float, default=0.2
        Dropout.
    epochs : int, default=10
        Training epochs (crops as in :class:`StagingHead`).
    lr : float, default=2e-3
        AdamW learning rate.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    pos_weight : "balanced" or None, default="balanced"
        "balanced" weighs positives by ``n_negative / n_positive`` per event.
    threshold : float, default=0.5
        Probability at or above which :meth:`predict` flags an event.
    batch_nights : int, default=16
        Crops per training step, nights per prediction batch.
    seq_len : int or None, default=256
        Training crop length in epochs; None trains on whole nights.
    patience : int, default=3
        Early-stopping patience (mean validation AUROC).
    device : str, default="cpu"
        Torch device.
    seed : int, default=0
        Seed; fitting is deterministic given the seed.

    Attributes
    ----------
    network_ : LSTMStagingNet or EpochMLP
        The fitted network.
    pos_weight_ : ndarray or None
        Positive-class weight per event.
    n_features_in_, mean_, scale_, history_, best_epoch_
        As in :class:`StagingHead`.
    """

    def __init__(
        self,
        *,
        events=EVENT_NAMES,
        arch: str = "lstm",
        hidden: int = 64,
        num_layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.2,
        epochs: int = 10,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        pos_weight="balanced",
        threshold: float = 0.5,
        batch_nights: int = 16,
        seq_len: int | None = 256,
        patience: int = 3,
        device: str = "cpu",
        seed: int = 0,
    ):
        self._set_params(locals())

    def _n_outputs(self) -> int:
        return len(self.events)

    def _validate_params(self) -> None:
        super()._validate_params()
        if isinstance(self.events, str) or len(self.events) == 0:
            raise InvalidParameterError(f"'events' must be a non-empty sequence of event names, got "
                             f"{self.events!r}.")
        check_option("arch", self.arch, ("lstm", "mlp"))
        check_option("pos_weight", self.pos_weight, ("balanced", None))
        _check_positive("hidden", self.hidden)
        _check_positive("num_layers", self.num_layers)
        if not 0.0 < self.threshold < 1.0:
            raise InvalidParameterError(f"'threshold' must be in (0, 1), got {self.threshold!r}.")

    def _build_network(self, n_features: int) -> nn.Module:
        if self.arch == "mlp":
            return EpochMLP(n_features, self._n_outputs(), hidden=self.hidden, dropout=self.dropout)
        return LSTMStagingNet(
            n_features, self._n_outputs(), hidden=self.hidden, num_layers=self.num_layers,
            bidirectional=bool(self.bidirectional), dropout=self.dropout,
        )

    def _check_targets(self, y, lengths, single) -> list[np.ndarray]:
        n_events = self._n_outputs()
        nights = [y] if single else list(y)
        if len(nights) != len(lengths):
            raise LabelError(f"X has {len(lengths)} nights but y has {len(nights)}; pass one "
                             "label array per night.")
        out = []
        for i, (labels, n) in enumerate(zip(nights, lengths)):
            arr = np.asarray(labels, dtype=np.float32)
            if arr.ndim == 1 and n_events == 1:
                arr = arr[:, None]
            if arr.shape != (n, n_events):
                raise LabelError(
                    f"night {i}: event labels have shape {arr.shape}, expected ({n}, {n_events}) "
                    f"for events {list(self.events)} (-1 for unknown)."
                )
            bad = ~((arr == -1) | ((arr >= 0) & (arr <= 1)))
            if np.any(bad):
                raise LabelError(f"night {i}: event labels must be 0, 1 (or a probability) or "
                                 f"-1 for unknown, found {arr[bad][0]}.")
            out.append(arr)
        return out

    def _loss_weights(self, targets: np.ndarray) -> torch.Tensor | None:
        if self.pos_weight is None:
            self.pos_weight_ = None
            return None
        valid = targets >= 0
        pos = np.where(valid, targets, 0).sum(axis=0)
        neg = np.where(valid, 1 - targets, 0).sum(axis=0)
        weights = np.where(pos > 0, neg / np.maximum(pos, 1e-9), 1.0).astype(np.float32)
        self.pos_weight_ = weights
        return torch.from_numpy(weights)

    def _loss(self, logits, targets, weights):
        valid = targets >= 0
        if not bool(valid.any()):
            return None
        losses = F.binary_cross_entropy_with_logits(
            logits, targets.clamp(min=0), pos_weight=weights, reduction="none"
        )
        return losses[valid].mean()

    def _proba(self, logits):
        return torch.sigmoid(logits)

    def _score_proba(self, proba, targets) -> float:
        p = np.concatenate(proba)
        t = np.concatenate(targets)
        hard = np.where(t < 0, -1, t >= 0.5).astype(np.int64)
        scores = np.array([auroc(hard[:, k], p[:, k]) for k in range(t.shape[1])])
        return float(np.nanmean(scores)) if np.any(~np.isnan(scores)) else float("nan")

    def _fitted_meta(self) -> dict:
        return {**super()._fitted_meta(), "pos_weight": self.pos_weight_}

    def _restore_fitted(self, fitted, tensors) -> None:
        pw = fitted.get("pos_weight")
        self.pos_weight_ = None if pw is None else np.asarray(pw, dtype=np.float32)

    def _decide(self, proba: np.ndarray) -> np.ndarray:
        return (proba >= self.threshold).astype(np.int64)

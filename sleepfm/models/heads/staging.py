"""Sleep staging heads on frozen epoch embeddings: a linear probe, an MLP (also the distilled
student of a sequence head) and SleepFM's LSTM over the night.

Stage labels are AASM W, N1, N2, N3, REM = 0..4 (or any ``0..n_classes-1``, e.g. the OSF
grouping); -1 marks an unscored epoch and is ignored by the loss and by the class weights.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...eval.metrics import macro_auroc, macro_f1
from ...exceptions import InvalidParameterError, LabelError
from ...utils import check_option
from .base import BaseHead, _check_positive, balanced_class_weights, register_head
from .nets import EpochMLP, LSTMStagingNet


class _StageClassifier(BaseHead):
    """Hard-label (``[T]``, -1 ignored) or soft-target (``[T, C]``) multi-class heads."""

    def _validate_params(self) -> None:
        super()._validate_params()
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, (int, np.integer)) \
                or self.n_classes < 2:
            raise InvalidParameterError(f"'n_classes' must be an integer >= 2, got {self.n_classes!r}.")
        cw = self.class_weight
        if cw is not None and cw != "balanced":
            if np.ndim(cw) != 1 or len(cw) != self.n_classes or np.any(np.asarray(cw) < 0):
                raise InvalidParameterError(
                    f"'class_weight' must be 'balanced', None or {self.n_classes} non-negative "
                    f"weights, got {cw!r}."
                )

    def _check_targets(self, y, lengths, single) -> list[np.ndarray]:
        nights = [y] if single else list(y)
        if len(nights) != len(lengths):
            raise LabelError(
                f"X has {len(lengths)} nights but y has {len(nights)}; pass one label array per "
                "night."
            )
        out, kinds = [], set()
        for i, (labels, n) in enumerate(zip(nights, lengths)):
            arr = np.asarray(labels)
            if arr.shape[0] != n:
                raise LabelError(
                    f"night {i}: {n} embeddings but {arr.shape[0]} labels; trim or pad the labels "
                    "to the epochs of the embeddings (-1 for unscored)."
                )
            if arr.ndim == 2:
                out.append(self._check_soft(arr, i))
                kinds.add("soft")
            elif arr.ndim == 1:
                out.append(self._check_hard(arr, i))
                kinds.add("hard")
            else:
                raise LabelError(f"night {i}: labels must be [n_epochs] or [n_epochs, "
                                 f"{self.n_classes}], got shape {arr.shape}.")
        if len(kinds) > 1:
            raise LabelError("y mixes hard labels and soft targets; pass one kind for all nights.")
        return out

    def _check_hard(self, arr: np.ndarray, i: int) -> np.ndarray:
        if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
            raise LabelError(f"night {i}: labels must be whole numbers (-1 for unscored).")
        arr = arr.astype(np.int64)
        bad = (arr < -1) | (arr >= self.n_classes)
        if np.any(bad):
            raise LabelError(
                f"night {i}: label {arr[bad][0]} is outside -1..{self.n_classes - 1}; set "
                "n_classes or map stages with sleepfm.eval.group_stages."
            )
        return arr

    def _check_soft(self, arr: np.ndarray, i: int) -> np.ndarray:
        if arr.shape[1] != self.n_classes:
            raise LabelError(f"night {i}: soft targets have {arr.shape[1]} columns, expected "
                             f"n_classes={self.n_classes}.")
        arr = arr.astype(np.float32)
        valid = ~np.isnan(arr).any(axis=1)
        sums = arr[valid].sum(axis=1, keepdims=True)
        if np.any(arr[valid] < 0) or np.any(sums <= 0):
            raise LabelError(f"night {i}: soft targets must be non-negative with a positive sum "
                             "per epoch (a NaN row marks an unscored epoch).")
        arr[valid] = arr[valid] / sums
        return arr

    def _loss_weights(self, targets: np.ndarray) -> torch.Tensor | None:
        if self.class_weight is None:
            weights = None
        elif self.class_weight == "balanced":
            if targets.ndim == 1:
                counts = np.bincount(targets[targets >= 0], minlength=self.n_classes).astype(float)
            else:
                counts = np.nansum(targets, axis=0).astype(float)
            weights = balanced_class_weights(counts)
        else:
            weights = np.asarray(self.class_weight, dtype=float)
        self.class_weight_ = None if weights is None else weights.astype(np.float32)
        return None if weights is None else torch.tensor(weights, dtype=torch.float32)

    def _loss(self, logits, targets, weights):
        logits = logits.reshape(-1, self.n_classes)
        if targets.is_floating_point():
            targets = targets.reshape(-1, self.n_classes)
            valid = ~torch.isnan(targets).any(dim=1)
            if not bool(valid.any()):
                return None
            q = targets[valid]
            wq = q if weights is None else q * weights
            return -(wq * F.log_softmax(logits[valid], dim=1)).sum() / wq.sum()
        targets = targets.reshape(-1)
        if not bool((targets >= 0).any()):
            return None
        return F.cross_entropy(logits, targets, weight=weights, ignore_index=-1)

    def _pad_target(self, targets: torch.Tensor) -> float:
        return float("nan") if targets.is_floating_point() else -1

    def _proba(self, logits):
        return torch.softmax(logits, dim=-1)

    def _score_proba(self, proba, targets) -> float:
        y = [t if t.ndim == 1 else
             np.where(np.isnan(t).any(axis=1), -1, np.nan_to_num(t).argmax(axis=1))
             for t in targets]
        return self._validation_metric(y, proba)

    def _validation_metric(self, y: list[np.ndarray], proba: list[np.ndarray]) -> float:
        """The validation score that picks the epoch to keep: macro-F1."""
        return macro_f1(y, [p.argmax(axis=1) for p in proba], n_classes=self.n_classes)

    def _fitted_meta(self) -> dict:
        return {**super()._fitted_meta(), "class_weight": self.class_weight_}

    def _restore_fitted(self, fitted, tensors) -> None:
        cw = fitted.get("class_weight")
        self.class_weight_ = None if cw is None else np.asarray(cw, dtype=np.float32)

    @property
    def classes_(self) -> np.ndarray:
        """Class labels ``0..n_classes-1`` (fitted heads only)."""
        self._check_fitted("classes_")
        return np.arange(self.n_classes)

    def _decide(self, proba: np.ndarray) -> np.ndarray:
        return proba.argmax(axis=1)


@register_head("linear_probe")
class LinearProbe(_StageClassifier):
    """Multinomial logistic regression on each epoch's embedding (the standard linear probe).

    ``y`` per night is ``[n_epochs]`` stages (-1 = unscored, ignored) or soft targets
    ``[n_epochs, n_classes]`` (a NaN row is ignored).

    Parameters
    ----------
    n_classes : int, default=5
        Classes (5 AASM stages, 4 for the OSF grouping).
    epochs : int, default=30
        Passes over the training epochs.
    lr : float, default=1e-2
        AdamW learning rate.
    weight_decay : float, default=1e-4
        L2 penalty.
    batch_size : int, default=2048
        Epochs per gradient step.
    class_weight : "balanced", None or sequence of float, default="balanced"
        Loss weight per class; "balanced" uses ``n / (n_present_classes * n_c)`` over scored
        training epochs.
    patience : int, default=5
        Early-stopping patience (epochs) when validation data are given.
    schedule : {"constant", "cosine"}, default="constant"
        Learning rate: constant, or linear warm-up over the first ``warmup`` of the steps then
        cosine decay to 0.
    warmup : float, default=0.1
        Warm-up fraction of the steps (``schedule="cosine"``).
    select_by : {"macro_f1", "auroc"}, default="macro_f1"
        Validation score that picks the epoch to keep: macro-F1, or macro one-vs-rest AUROC
        (:func:`sleepfm.eval.macro_auroc`). OSF's linear-probing recipe is ``schedule="cosine",
        select_by="auroc"``.
    device : str, default="cpu"
        Torch device.
    seed : int, default=0
        Seed of initialisation and batch order; fitting is deterministic given the seed.

    Attributes
    ----------
    network_ : EpochMLP
        The fitted linear layer.
    n_features_in_ : int
        Embedding size seen in ``fit``.
    mean_, scale_ : ndarray
        Input standardisation learnt on the training epochs.
    class_weight_ : ndarray or None
        Loss weight used per class.
    history_ : list of dict
        Per-epoch training loss (and ``val_score``, macro-F1).
    best_epoch_ : int
        Epoch whose weights were kept.

    Examples
    --------
    >>> probe = LinearProbe().fit(train_embeddings, train_stages)
    >>> probe.score(test_embeddings, test_stages)
    """

    _crops = False

    def __init__(
        self,
        *,
        n_classes: int = 5,
        epochs: int = 30,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        batch_size: int = 2048,
        class_weight="balanced",
        patience: int = 5,
        schedule: str = "constant",
        warmup: float = 0.1,
        select_by: str = "macro_f1",
        device: str = "cpu",
        seed: int = 0,
    ):
        self._set_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        check_option("schedule", self.schedule, ("constant", "cosine"))
        check_option("select_by", self.select_by, ("macro_f1", "auroc"))
        if not 0.0 <= self.warmup < 1.0:
            raise InvalidParameterError(f"'warmup' must be in [0, 1), got {self.warmup!r}.")

    def _build_network(self, n_features: int) -> nn.Module:
        return EpochMLP(n_features, self.n_classes, hidden=None)

    def _validation_metric(self, y, proba) -> float:
        if self.select_by == "auroc":
            score = macro_auroc(y, proba)
            return score if math.isfinite(score) else -math.inf
        return super()._validation_metric(y, proba)

    def _lr_schedule(self, optimizer, n_samples: int):
        if self.schedule == "constant":
            return None
        total = self.epochs * math.ceil(n_samples / self.batch_size)
        warm = max(1, int(self.warmup * total))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min((step - warm) / max(total - warm, 1), 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@register_head("mlp")
class MLPHead(_StageClassifier):
    """Two-layer MLP on each epoch's embedding; also the distilled student of a sequence head.

    ``fit`` takes hard labels ``[n_epochs]`` (-1 ignored) or soft targets
    ``[n_epochs, n_classes]`` (rows of probabilities; a NaN row is ignored), so a teacher's
    ``predict_proba`` output can be used directly (see :meth:`distill`).

    Parameters
    ----------
    n_classes : int, default=5
        Classes.
    hidden : int, default=256
        Hidden width.
    dropout : float, default=0.2
        Dropout after the hidden layer.
    epochs : int, default=20
        Passes over the training epochs.
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    batch_size : int, default=1024
        Epochs per gradient step.
    class_weight : "balanced", None or sequence of float, default="balanced"
        Loss weight per class (from hard labels, or the summed soft targets).
    patience : int, default=5
        Early-stopping patience when validation data are given.
    device : str, default="cpu"
        Torch device.
    seed : int, default=0
        Seed; fitting is deterministic given the seed.

    Attributes
    ----------
    network_ : EpochMLP
        The fitted network.
    n_features_in_, mean_, scale_, class_weight_, history_, best_epoch_
        As in :class:`LinearProbe`.
    """

    _crops = False

    def __init__(
        self,
        *,
        n_classes: int = 5,
        hidden: int = 256,
        dropout: float = 0.2,
        epochs: int = 20,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 1024,
        class_weight="balanced",
        patience: int = 5,
        device: str = "cpu",
        seed: int = 0,
    ):
        self._set_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        _check_positive("hidden", self.hidden)

    def _build_network(self, n_features: int) -> nn.Module:
        return EpochMLP(n_features, self.n_classes, hidden=self.hidden, dropout=self.dropout)

    def distill(self, teacher: BaseHead, X, *, X_val=None, y_val=None, verbose=None) -> "MLPHead":
        """Fit on a fitted teacher's probabilities (knowledge distillation).

        Parameters
        ----------
        teacher : fitted head with ``predict_proba``
            E.g. a :class:`StagingHead`; must have the same ``n_classes``.
        X : list of ndarray, or one array
            Epoch embeddings the teacher labels (unlabelled nights are fine).
        X_val, y_val : optional
            Validation nights and their *true* labels, for early stopping.
        verbose : bool, str or int, optional
            Logging level for this call.

        Returns
        -------
        self
        """
        if getattr(teacher, "n_classes", self.n_classes) != self.n_classes:
            raise InvalidParameterError(f"teacher has n_classes={teacher.n_classes} but this MLPHead has "
                             f"{self.n_classes}; set n_classes to match.")
        return self.fit(X, teacher.predict_proba(X), X_val=X_val, y_val=y_val, verbose=verbose)


@register_head("staging_lstm")
class StagingHead(_StageClassifier):
    """Sleep staging with SleepFM's LSTM over the sequence of a night's epoch embeddings.

    ``y`` per night is ``[n_epochs]`` stages (-1 = unscored: ignored by the loss and the class
    weights, though the epoch's embedding still feeds the sequence) or soft targets
    ``[n_epochs, n_classes]``.

    Parameters
    ----------
    n_classes : int, default=5
        Classes (5 AASM stages, 4 for the OSF grouping).
    hidden : int, default=128
        LSTM hidden size per direction.
    num_layers : int, default=2
        LSTM layers.
    bidirectional : bool, default=False
        Use future context as well (offline staging).
    dropout : float, default=0.2
        Dropout on inputs, between layers and before the classifier.
    epochs : int, default=10
        Training epochs; each samples ``ceil(n_epochs_i / seq_len)`` random crops per night,
        about one pass over the data.
    lr : float, default=2e-3
        AdamW learning rate.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    class_weight : "balanced", None or sequence of float, default="balanced"
        Loss weight per class, from scored training epochs only.
    batch_nights : int, default=16
        Crops per training step, and nights per prediction batch.
    seq_len : int or None, default=256
        Crop length in epochs for training (256 = 2 h 8 min); None trains on whole nights.
        Prediction always runs on whole nights in one pass.
    patience : int, default=3
        Early-stopping patience (epochs without a better validation macro-F1).
    device : str, default="cpu"
        Torch device.
    seed : int, default=0
        Seed of initialisation, crops and dropout; fitting is deterministic given the seed.

    Attributes
    ----------
    network_ : LSTMStagingNet
        The fitted network.
    n_features_in_, mean_, scale_, class_weight_, history_, best_epoch_
        As in :class:`LinearProbe`.
    fit_time_ : float
        Seconds spent training.

    Notes
    -----
    Memory in prediction is bounded by ``batch_nights`` x the longest night x ``hidden``.

    Examples
    --------
    >>> head = StagingHead(bidirectional=True).fit(X_train, y_train, X_val=X_val, y_val=y_val)
    >>> stages = head.predict(X_test)  # list of [n_epochs_i] arrays
    """

    def __init__(
        self,
        *,
        n_classes: int = 5,
        hidden: int = 128,
        num_layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.2,
        epochs: int = 10,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        class_weight="balanced",
        batch_nights: int = 16,
        seq_len: int | None = 256,
        patience: int = 3,
        device: str = "cpu",
        seed: int = 0,
    ):
        self._set_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        _check_positive("hidden", self.hidden)
        _check_positive("num_layers", self.num_layers)

    def _build_network(self, n_features: int) -> nn.Module:
        return LSTMStagingNet(
            n_features, self.n_classes, hidden=self.hidden, num_layers=self.num_layers,
            bidirectional=bool(self.bidirectional), dropout=self.dropout,
        )

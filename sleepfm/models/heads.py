"""Heads trained on frozen 30 s epoch embeddings: staging, event detection, AHI.

Every head takes one night as an array ``[n_epochs, n_features]`` of epoch embeddings, or a list
of such nights, and follows the scikit-learn estimator contract: options in ``__init__``,
``fit(X, y) -> self``, ``predict``, ``predict_proba``, ``score``; fitted attributes end in ``_``.
A list in gives a list out; a single 2-D array in gives a single array out.

- :class:`LinearProbe` and :class:`MLPHead` classify each epoch on its own (``MLPHead`` is also
  the distilled student: ``fit`` accepts soft targets ``[n_epochs, n_classes]``).
- :class:`StagingHead` is SleepFM's 2-layer LSTM over the sequence of a night's epochs
  (:class:`LSTMStagingNet`); it trains on random crops of nights and predicts whole nights.
- :class:`EventHead` detects several binary events per epoch (apnea/hypopnea, arousal,
  desaturation); :class:`AHIRegressor` turns its apnea/hypopnea probabilities into an AHI.

Stage labels are AASM W, N1, N2, N3, REM = 0..4 (or any ``0..n_classes-1``); -1 marks an unscored
epoch and is ignored by the loss and by the class weights. Weights and options are saved with
:meth:`BaseHead.get_state` (tensors for safetensors + a JSON-able dict) and restored with
:meth:`BaseHead.from_state` or :func:`head_from_state`; never pickle.

Heads are registered by name: :func:`list_heads`, :func:`create_head`.
"""
from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..eval.metrics import SEVERITY_NAMES, ahi_severity, auroc, cohen_kappa, macro_f1
from ..exceptions import ConvergenceWarning, LabelError, NotFittedError, SleepFMError
from ..registry import Registry
from ..utils import check_option, verbose_scope

logger = logging.getLogger(__name__)

#: Version of the layout written by ``get_state``.
STATE_VERSION = 1

HEADS = Registry("head", attribute="head_name")
register_head = HEADS.register
list_heads = HEADS.names


def create_head(name: str, **params) -> "BaseHead":
    """Build a registered head by name.

    Parameters
    ----------
    name : str
        One of :func:`list_heads`.
    **params
        Keyword options of the head class.

    Returns
    -------
    BaseHead
        An unfitted head.
    """
    return HEADS.create(name, **params)


def head_from_state(tensors: dict[str, torch.Tensor], meta: dict) -> "BaseHead | AHIRegressor":
    """Rebuild a fitted head from :meth:`BaseHead.get_state` output, dispatching on its name."""
    name = meta.get("head")
    cls = AHIRegressor if name == AHIRegressor.head_name else HEADS[name]
    return cls.from_state(tensors, meta)


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------
class LSTMStagingNet(nn.Module):
    """LSTM over the sequence of 30 s epoch embeddings of a night, then a linear classifier.

    Parameters
    ----------
    n_features : int
        Embedding size ``D``.
    n_classes : int, default=5
        Outputs per epoch.
    hidden : int, default=128
        LSTM hidden size (per direction).
    num_layers : int, default=2
        Stacked LSTM layers.
    bidirectional : bool, default=False
        Also read the night backwards (uses future context; whole nights are needed at once).
    dropout : float, default=0.2
        Dropout on the inputs, between LSTM layers and before the classifier.

    Notes
    -----
    Input ``x`` is ``[B, T, D]``; ``mask`` ``[B, T]`` is True on valid epochs and must be a
    prefix of each row (right padding). Padded positions do not affect valid outputs.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int = 5,
        *,
        hidden: int = 128,
        num_layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            n_features,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(hidden * (2 if bidirectional else 1), n_classes)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-epoch LSTM outputs ``[B, T, hidden * directions]`` (zeros at padding)."""
        x = self.dropout(x)
        if mask is None or bool(mask.all()):
            return self.lstm(x)[0]
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                     total_length=x.shape[1])
        return out

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, n_classes]`` from :meth:`forward_features` output."""
        return self.classifier(self.dropout(features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, n_classes]``."""
        return self.forward_head(self.forward_features(x, mask))


class EpochMLP(nn.Module):
    """Per-epoch classifier: linear, or a 2-layer MLP when ``hidden`` is given.

    Parameters
    ----------
    n_features : int
        Embedding size ``D``.
    n_outputs : int
        Outputs per epoch.
    hidden : int or None, default=256
        Hidden width; ``None`` gives a single linear layer (logistic regression).
    dropout : float, default=0.2
        Dropout after the hidden layer.

    Notes
    -----
    Accepts ``[..., D]`` inputs (e.g. ``[B, T, D]``); the ``mask`` argument is accepted for a
    uniform interface with :class:`LSTMStagingNet` and unused, as epochs are independent.
    """

    def __init__(self, n_features: int, n_outputs: int, *, hidden: int | None = 256,
                 dropout: float = 0.2):
        super().__init__()
        if hidden is None:
            self.net = nn.Linear(n_features, n_outputs)
        else:
            self.net = nn.Sequential(
                nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout),
                nn.Linear(hidden, n_outputs),
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[..., n_outputs]``."""
        return self.net(x)


# --------------------------------------------------------------------------------------------
# shared estimator machinery
# --------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Params as JSON types: tuples and arrays become lists, numpy scalars Python scalars."""
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_positive(name: str, value, *, integer: bool = True, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        what = "a positive integer" if integer else "a positive number"
        or_none = " or None" if allow_none else ""
        raise ValueError(f"{name!r} must be {what}{or_none}, got {value!r}.")


class BaseHead(BaseEstimator):
    """Common machinery of the heads: input checks, the training loop, prediction, state.

    Subclasses define the network (``_build_network``), the targets (``_check_targets``), the
    loss (``_loss``) and the validation score (``_score_proba``).
    """

    head_name: ClassVar[str]
    #: True: train on random crops of nights (sequence models); False: on pooled epochs.
    _crops: ClassVar[bool] = True

    # ---- subclass hooks ---------------------------------------------------------------------
    def _build_network(self, n_features: int) -> nn.Module:
        raise NotImplementedError

    def _check_targets(self, y, lengths: list[int], single: bool) -> list[np.ndarray]:
        raise NotImplementedError

    def _pad_target(self, targets: torch.Tensor) -> float:
        """Value marking an ignored target in padded batches."""
        return -1

    def _loss_weights(self, targets: np.ndarray) -> torch.Tensor | None:
        raise NotImplementedError

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor,
              weights: torch.Tensor | None) -> torch.Tensor | None:
        raise NotImplementedError

    def _proba(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score_proba(self, proba: list[np.ndarray], targets: list[np.ndarray]) -> float:
        raise NotImplementedError

    def _validate_params(self) -> None:
        for name in ("epochs", "patience"):
            _check_positive(name, getattr(self, name))
        _check_positive("lr", self.lr, integer=False)
        if not self.weight_decay >= 0:
            raise ValueError(f"'weight_decay' must be >= 0, got {self.weight_decay!r}.")
        if self._crops:
            _check_positive("batch_nights", self.batch_nights)
            _check_positive("seq_len", self.seq_len, allow_none=True)
        else:
            _check_positive("batch_size", self.batch_size)
        if hasattr(self, "dropout") and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1), got {self.dropout!r}.")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"'device' must name a torch device like 'cpu' or 'cuda', "
                             f"got {self.device!r}.") from err

    # ---- checks -----------------------------------------------------------------------------
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"training data before using '{method}', or load one with from_state()."
            )

    def _check_X(self, X, *, fitting: bool = False) -> tuple[list[np.ndarray], bool]:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        single = isinstance(X, np.ndarray)
        if single and X.ndim != 2:
            raise ValueError(
                f"X is a {X.ndim}-D array; pass one night as [n_epochs, n_features] or a list of "
                "such nights (list(X) for a stacked [n_nights, n_epochs, n_features] array)."
            )
        nights = [X] if single else list(X)
        if not nights:
            raise ValueError("X is empty; pass a list of per-night [n_epochs, n_features] arrays.")
        out = []
        expected = None if fitting else self.n_features_in_
        for i, night in enumerate(nights):
            arr = np.asarray(night.detach().cpu() if isinstance(night, torch.Tensor) else night,
                             dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] == 0:
                raise ValueError(
                    f"night {i} of X has shape {arr.shape}; each night must be a non-empty "
                    "[n_epochs, n_features] array."
                )
            if expected is None:
                expected = arr.shape[1]
            if arr.shape[1] != expected:
                where = "the others" if fitting else f"{type(self).__name__} was fitted"
                raise ValueError(
                    f"night {i} of X has {arr.shape[1]} features but {where} with {expected}; "
                    "use embeddings from the same encoder."
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(
                    f"night {i} of X holds NaN or infinite values; re-run the embedding stage or "
                    "drop that night."
                )
            out.append(arr)
        return out, single

    # ---- training ---------------------------------------------------------------------------
    def fit(self, X, y, *, X_val=None, y_val=None, verbose=None) -> "BaseHead":
        """Train the head.

        Parameters
        ----------
        X : list of ndarray [n_epochs_i, n_features], or one such array
            Epoch embeddings per night.
        y : list of ndarray, or one array
            Targets per night, aligned with ``X`` (see the class docstring).
        X_val, y_val : same types as X, y, optional
            Validation nights; when given, training keeps the epoch with the best validation
            score and stops after ``patience`` epochs without improvement.
        verbose : bool, str or int, optional
            Logging level for this call.

        Returns
        -------
        self
        """
        with verbose_scope(verbose):
            self._validate_params()
            for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
                delattr(self, attr)  # a refit starts from scratch
            nights, single = self._check_X(X, fitting=True)
            lengths = [n.shape[0] for n in nights]
            targets = self._check_targets(y, lengths, single)
            val = None
            if (X_val is None) != (y_val is None):
                raise ValueError("Pass both X_val and y_val, or neither.")
            flat_x = np.concatenate(nights)
            mean = flat_x.mean(axis=0)
            scale = flat_x.std(axis=0)
            scale[scale < 1e-6] = 1.0
            self.n_features_in_ = int(flat_x.shape[1])
            self.mean_, self.scale_ = mean.astype(np.float32), scale.astype(np.float32)
            if X_val is not None:
                val_nights, val_single = self._check_X(X_val)
                val = (val_nights, self._check_targets(
                    y_val, [n.shape[0] for n in val_nights], val_single))
            self._train(nights, targets, val)
        return self

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_

    def _train(self, nights, targets, val) -> None:
        device = torch.device(self.device)
        rng = np.random.default_rng(self.seed)
        x_all = torch.from_numpy(self._standardize(np.concatenate(nights))).to(device)
        y_np = np.concatenate(targets)
        y_all = torch.from_numpy(y_np).to(device)
        weights = self._loss_weights(y_np)
        weights = None if weights is None else weights.to(device)
        lengths = np.array([n.shape[0] for n in nights])
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        fork = [device.index or 0] if device.type == "cuda" else []
        start_time = time.perf_counter()
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(self.seed)
            network = self._build_network(self.n_features_in_).to(device)
            optimizer = torch.optim.AdamW(network.parameters(), lr=self.lr,
                                          weight_decay=self.weight_decay)
            history, best, best_state, best_epoch, stale = [], -math.inf, None, 0, 0
            for epoch in range(self.epochs):
                network.train()
                total, n_batches = 0.0, 0
                for xb, yb, mask in self._batches(x_all, y_all, lengths, starts, rng):
                    loss = self._loss(network(xb, mask), yb, weights)
                    if loss is None:
                        continue
                    if not torch.isfinite(loss):
                        raise SleepFMError(
                            f"{type(self).__name__} training diverged at epoch {epoch} (loss "
                            f"{loss.item()}); lower lr (now {self.lr}) or check the embeddings."
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                    optimizer.step()
                    total += loss.item()
                    n_batches += 1
                record = {"epoch": epoch, "loss": total / max(n_batches, 1)}
                if val is not None:
                    record["val_score"] = self._score_proba(
                        self._predict_nights(val[0], network), val[1])
                    if record["val_score"] > best:
                        best, best_epoch, stale = record["val_score"], epoch, 0
                        best_state = copy.deepcopy(network.state_dict())
                    else:
                        stale += 1
                history.append(record)
                logger.debug("%s epoch %d: %s", type(self).__name__, epoch, record)
                if val is not None and stale >= self.patience:
                    break
        if best_state is not None:
            network.load_state_dict(best_state)
            if best_epoch == self.epochs - 1:
                warnings.warn(
                    f"{type(self).__name__}: the validation score was still improving at the "
                    f"last epoch ({self.epochs}); raise 'epochs' for a better model.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        else:
            best_epoch = len(history) - 1
        self.network_ = network.eval()
        self.history_ = history
        self.best_epoch_ = int(best_epoch)
        self.fit_time_ = time.perf_counter() - start_time
        logger.info(
            "%s fitted: %d epochs in %.1f s (best epoch %d%s)", type(self).__name__,
            len(history), self.fit_time_, best_epoch,
            f", val score {best:.3f}" if val is not None else "",
        )

    def _batches(self, x_all, y_all, lengths, starts, rng):
        """Yield ``(x [B, T, D], targets [B, T(, K)], mask [B, T] or None)`` for one epoch."""
        if not self._crops:
            order = torch.from_numpy(rng.permutation(x_all.shape[0])).to(x_all.device)
            for chunk in torch.split(order, self.batch_size):
                yield x_all[chunk][None], y_all[chunk][None], None
            return
        seq_len = self.seq_len or int(lengths.max())
        crop_len = np.minimum(lengths, seq_len)
        n_crops = np.ceil(lengths / seq_len).astype(int)
        night = np.repeat(np.arange(lengths.size), n_crops)
        offset = np.floor(rng.random(night.size) * (lengths[night] - crop_len[night] + 1))
        crop_start = starts[night] + offset.astype(np.int64)
        order = rng.permutation(night.size)
        device = x_all.device
        for i in range(0, order.size, self.batch_nights):
            sel = order[i:i + self.batch_nights]
            crop = torch.from_numpy(crop_len[night[sel]]).to(device)
            steps = torch.arange(int(crop.max()), device=device)
            mask = steps[None, :] < crop[:, None]
            pos = torch.from_numpy(crop_start[sel]).to(device)[:, None] + steps[None, :]
            pos = torch.where(mask, pos, torch.zeros_like(pos))
            xb = x_all[pos] * mask[..., None]
            yb = y_all[pos]
            pad = mask if yb.ndim == 2 else mask[..., None]
            yb = torch.where(pad, yb, torch.full_like(yb, self._pad_target(yb)))
            yield xb, yb, (None if bool(mask.all()) else mask)

    # ---- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def _predict_nights(self, nights: list[np.ndarray],
                        network: nn.Module | None = None) -> list[np.ndarray]:
        """Output probabilities per night (network in eval mode, batches of whole nights)."""
        network = self.network_ if network is None else network
        was_training = network.training
        network.eval()
        device = next(network.parameters()).device
        out: list[np.ndarray | None] = [None] * len(nights)
        if self._crops:
            order = np.argsort([-n.shape[0] for n in nights], kind="stable")
            for i in range(0, len(nights), self.batch_nights):
                sel = order[i:i + self.batch_nights]
                lengths = [nights[j].shape[0] for j in sel]
                xb = np.zeros((len(sel), max(lengths), self.n_features_in_), dtype=np.float32)
                for row, j in enumerate(sel):
                    xb[row, :lengths[row]] = self._standardize(nights[j])
                mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
                proba = self._proba(network(torch.from_numpy(xb).to(device),
                                            mask.to(device))).cpu().numpy()
                for row, j in enumerate(sel):
                    out[j] = proba[row, :lengths[row]]
        else:
            flat = self._standardize(np.concatenate(nights))
            parts = [self._proba(network(torch.from_numpy(chunk).to(device))).cpu().numpy()
                     for chunk in np.array_split(flat, max(1, math.ceil(len(flat) / 65536)))]
            out = np.split(np.concatenate(parts), np.cumsum([n.shape[0] for n in nights])[:-1])
        network.train(was_training)
        return list(out)

    def predict_proba(self, X):
        """Per-epoch probabilities.

        Parameters
        ----------
        X : list of ndarray [n_epochs_i, n_features], or one such array
            Epoch embeddings per night.

        Returns
        -------
        list of ndarray [n_epochs_i, n_outputs], or one such array
            Class probabilities (rows sum to 1) for classifiers, independent event
            probabilities for :class:`EventHead`.
        """
        self._check_fitted("predict_proba")
        nights, single = self._check_X(X)
        proba = self._predict_nights(nights)
        return proba[0] if single else proba

    # ---- state ------------------------------------------------------------------------------
    def _fitted_meta(self) -> dict:
        return {"n_features_in": self.n_features_in_, "best_epoch": self.best_epoch_,
                "history": self.history_}

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Fitted weights and options, to save with safetensors + JSON.

        Returns
        -------
        tensors : dict of str to Tensor
            Contiguous CPU tensors: ``network.*`` weights, ``mean`` and ``scale`` of the input
            standardisation.
        meta : dict
            JSON-able: ``head`` (registry name), ``params`` (constructor options), ``fitted``
            (feature count, training history) and ``version``.
        """
        self._check_fitted("get_state")
        tensors = {f"network.{k}": v.detach().cpu().contiguous().clone()
                   for k, v in self.network_.state_dict().items()}
        tensors["mean"] = torch.from_numpy(self.mean_.copy())
        tensors["scale"] = torch.from_numpy(self.scale_.copy())
        meta = {"head": self.head_name, "version": STATE_VERSION,
                "params": _jsonable(self.get_params()), "fitted": _jsonable(self._fitted_meta())}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> "BaseHead":
        """Rebuild a fitted head from :meth:`get_state` output.

        Parameters
        ----------
        tensors : dict of str to Tensor
            As returned by ``get_state`` (or read back by ``safetensors.torch.load_file``).
        meta : dict
            As returned by ``get_state`` (or read back from JSON).

        Returns
        -------
        BaseHead
            A fitted head that predicts exactly like the saved one.
        """
        if meta.get("head") != cls.head_name:
            raise ValueError(
                f"State is for head {meta.get('head')!r}, not {cls.head_name!r}; use "
                "head_from_state() to dispatch on the saved name."
            )
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"State version {meta.get('version')!r} is not supported "
                             f"(expected {STATE_VERSION}); re-save the head with this sleepfm.")
        head = cls(**meta["params"])
        fitted = meta["fitted"]
        head.n_features_in_ = int(fitted["n_features_in"])
        head.best_epoch_ = int(fitted["best_epoch"])
        head.history_ = list(fitted["history"])
        head.mean_ = tensors["mean"].numpy().astype(np.float32)
        head.scale_ = tensors["scale"].numpy().astype(np.float32)
        network = head._build_network(head.n_features_in_)
        weights = {k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")}
        network.load_state_dict(weights)
        head.network_ = network.to(torch.device(head.device)).eval()
        head._restore_fitted(fitted, tensors)
        return head

    def _restore_fitted(self, fitted: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Set subclass-specific fitted attributes from saved state."""


# --------------------------------------------------------------------------------------------
# stage classifiers
# --------------------------------------------------------------------------------------------
class _StageClassifier(BaseHead):
    """Hard-label (``[T]``, -1 ignored) or soft-target (``[T, C]``) multi-class heads."""

    def _validate_params(self) -> None:
        super()._validate_params()
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, (int, np.integer)) \
                or self.n_classes < 2:
            raise ValueError(f"'n_classes' must be an integer >= 2, got {self.n_classes!r}.")
        cw = self.class_weight
        if cw is not None and cw != "balanced":
            if np.ndim(cw) != 1 or len(cw) != self.n_classes or np.any(np.asarray(cw) < 0):
                raise ValueError(
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
            present = counts > 0
            weights = np.zeros(self.n_classes)
            weights[present] = counts.sum() / (present.sum() * counts[present])
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

    def predict(self, X):
        """Most probable class per epoch.

        Parameters
        ----------
        X : list of ndarray [n_epochs_i, n_features], or one such array
            Epoch embeddings per night.

        Returns
        -------
        list of ndarray of int [n_epochs_i], or one such array
        """
        self._check_fitted("predict")
        proba = self.predict_proba(X)
        if isinstance(proba, np.ndarray):
            return proba.argmax(axis=1)
        return [p.argmax(axis=1) for p in proba]

    def score(self, X, y) -> float:
        """Macro-F1 over scored epochs (see :func:`sleepfm.eval.macro_f1`).

        Parameters
        ----------
        X : list of ndarray, or one array
            Epoch embeddings per night.
        y : list of ndarray, or one array
            Labels per night (-1 ignored); soft targets are scored by their argmax.

        Returns
        -------
        float
        """
        self._check_fitted("score")
        nights, single = self._check_X(X)
        targets = self._check_targets(y, [n.shape[0] for n in nights], single)
        return self._score_proba(self._predict_nights(nights), targets)


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
        device: str = "cpu",
        seed: int = 0,
    ):
        self.n_classes = n_classes
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.patience = patience
        self.device = device
        self.seed = seed

    def _build_network(self, n_features: int) -> nn.Module:
        return EpochMLP(n_features, self.n_classes, hidden=None)


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
        self.n_classes = n_classes
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.patience = patience
        self.device = device
        self.seed = seed

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
            raise ValueError(f"teacher has n_classes={teacher.n_classes} but this MLPHead has "
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
        self.n_classes = n_classes
        self.hidden = hidden
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_weight = class_weight
        self.batch_nights = batch_nights
        self.seq_len = seq_len
        self.patience = patience
        self.device = device
        self.seed = seed

    def _validate_params(self) -> None:
        super()._validate_params()
        _check_positive("hidden", self.hidden)
        _check_positive("num_layers", self.num_layers)

    def _build_network(self, n_features: int) -> nn.Module:
        return LSTMStagingNet(
            n_features, self.n_classes, hidden=self.hidden, num_layers=self.num_layers,
            bidirectional=bool(self.bidirectional), dropout=self.dropout,
        )


# --------------------------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------------------------
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
        events=("apnea_hypopnea", "arousal", "desaturation"),
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
        self.events = events
        self.arch = arch
        self.hidden = hidden
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.pos_weight = pos_weight
        self.threshold = threshold
        self.batch_nights = batch_nights
        self.seq_len = seq_len
        self.patience = patience
        self.device = device
        self.seed = seed

    def _n_outputs(self) -> int:
        return len(self.events)

    def _validate_params(self) -> None:
        super()._validate_params()
        if isinstance(self.events, str) or len(self.events) == 0:
            raise ValueError(f"'events' must be a non-empty sequence of event names, got "
                             f"{self.events!r}.")
        check_option("arch", self.arch, ("lstm", "mlp"))
        check_option("pos_weight", self.pos_weight, ("balanced", None))
        _check_positive("hidden", self.hidden)
        _check_positive("num_layers", self.num_layers)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"'threshold' must be in (0, 1), got {self.threshold!r}.")

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

    def predict(self, X):
        """Event flags per epoch (``probability >= threshold``).

        Parameters
        ----------
        X : list of ndarray [n_epochs_i, n_features], or one such array

        Returns
        -------
        list of ndarray of int [n_epochs_i, n_events], or one such array
        """
        self._check_fitted("predict")
        proba = self.predict_proba(X)
        if isinstance(proba, np.ndarray):
            return (proba >= self.threshold).astype(np.int64)
        return [(p >= self.threshold).astype(np.int64) for p in proba]

    def score(self, X, y) -> float:
        """Mean AUROC over events (events without both classes are left out).

        Parameters
        ----------
        X : list of ndarray, or one array
            Epoch embeddings per night.
        y : list of ndarray, or one array
            Event labels per night (-1 ignored).

        Returns
        -------
        float
        """
        self._check_fitted("score")
        nights, single = self._check_X(X)
        targets = self._check_targets(y, [n.shape[0] for n in nights], single)
        return self._score_proba(self._predict_nights(nights), targets)


def expected_event_rate(proba, *, stages=None, column: int = 0,
                        epoch_sec: float = 30.0) -> np.ndarray:
    """Expected event epochs per hour of sleep, per night.

    Parameters
    ----------
    proba : list of ndarray [n_epochs_i] or [n_epochs_i, n_events]
        Per-epoch event probabilities (e.g. :meth:`EventHead.predict_proba`).
    stages : list of ndarray [n_epochs_i], optional
        Stages per night (AASM 0..4, -1 unscored); only N1, N2, N3 and REM epochs count as
        sleep. Without stages every epoch counts as sleep.
    column : int, default=0
        Column of ``proba`` holding apnea/hypopnea (for 2-D inputs).
    epoch_sec : float, default=30.0
        Epoch length in seconds.

    Returns
    -------
    ndarray of float, shape (n_nights,)
        ``sum(p over sleep epochs) / sleep hours``; NaN for a night without sleep.
    """
    if isinstance(proba, np.ndarray) and proba.ndim <= 2 and proba.dtype != object:
        proba = [proba]
    rates = np.full(len(proba), np.nan)
    if stages is not None and len(stages) != len(proba):
        raise LabelError(f"got {len(proba)} nights of probabilities but {len(stages)} of stages.")
    for i, p in enumerate(proba):
        p = np.asarray(p, dtype=np.float64)
        p = p[:, column] if p.ndim == 2 else p
        asleep = np.ones(p.shape[0], dtype=bool)
        if stages is not None:
            s = np.asarray(stages[i])
            if s.shape[0] != p.shape[0]:
                raise LabelError(f"night {i}: {p.shape[0]} probabilities but {s.shape[0]} stages.")
            asleep = s >= 1
        hours = asleep.sum() * epoch_sec / 3600.0
        if hours > 0:
            rates[i] = p[asleep].sum() / hours
    return rates


class AHIRegressor(BaseEstimator):
    """AHI per night from per-epoch apnea/hypopnea probabilities, with a severity grade.

    The raw index is the expected number of event epochs per hour of sleep
    (:func:`expected_event_rate`); ``fit`` calibrates it to the true AHI with a least-squares
    line (events are shorter or longer than an epoch, and probabilities are not calibrated),
    and predictions are clipped at 0.

    Parameters
    ----------
    column : int, default=0
        Column of the probability arrays holding apnea/hypopnea.
    epoch_sec : float, default=30.0
        Epoch length in seconds.

    Attributes
    ----------
    coef_ : ndarray, shape (2,)
        Slope and intercept of the calibration line.
    n_nights_ : int
        Nights used in ``fit``.

    Examples
    --------
    >>> proba = event_head.predict_proba(X_train)
    >>> reg = AHIRegressor().fit(proba, ahi_train, stages=stages_train)
    >>> reg.predict_severity(event_head.predict_proba(X_test), stages=stages_test)
    """

    head_name: ClassVar[str] = "ahi_regressor"

    def __init__(self, *, column: int = 0, epoch_sec: float = 30.0):
        self.column = column
        self.epoch_sec = epoch_sec

    def _rates(self, proba, stages) -> np.ndarray:
        return expected_event_rate(proba, stages=stages, column=self.column,
                                   epoch_sec=self.epoch_sec)

    def fit(self, proba, ahi, *, stages=None) -> "AHIRegressor":
        """Calibrate the raw event rate to the true AHI.

        Parameters
        ----------
        proba : list of ndarray
            Per-epoch event probabilities per night.
        ahi : array-like of float, shape (n_nights,)
            True AHI per night.
        stages : list of ndarray, optional
            Stages per night, to count sleep time.

        Returns
        -------
        self
        """
        rates = self._rates(proba, stages)
        target = np.asarray(ahi, dtype=np.float64).reshape(-1)
        if target.size != rates.size:
            raise LabelError(
                f"got {rates.size} nights of probabilities but {target.size} AHI values."
            )
        keep = ~np.isnan(rates) & np.isfinite(target)
        if keep.sum() < 2 or np.ptp(rates[keep]) == 0:
            raise ValueError(
                "AHIRegressor needs at least 2 nights with sleep and differing event rates to fit "
                "a calibration line; add nights."
            )
        self.coef_ = np.polyfit(rates[keep], target[keep], 1)
        self.n_nights_ = int(keep.sum())
        return self

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                f"This AHIRegressor instance is not fitted yet. Call 'fit' with probabilities and "
                f"true AHI before using '{method}'."
            )

    def predict(self, proba, *, stages=None) -> np.ndarray:
        """Estimated AHI per night (events per hour of sleep; NaN without sleep)."""
        self._check_fitted("predict")
        return np.clip(np.polyval(self.coef_, self._rates(proba, stages)), 0.0, None)

    def predict_severity(self, proba, *, stages=None) -> np.ndarray:
        """Severity grade per night, 0..3 = none, mild, moderate, severe (-1 without sleep)."""
        self._check_fitted("predict_severity")
        estimate = self.predict(proba, stages=stages)
        grade = np.full(estimate.shape, -1, dtype=np.int64)
        ok = ~np.isnan(estimate)
        grade[ok] = ahi_severity(estimate[ok])
        return grade

    def score(self, proba, ahi, *, stages=None) -> float:
        """Linearly weighted Cohen's kappa of severity grades (estimated vs true AHI)."""
        self._check_fitted("score")
        pred = self.predict_severity(proba, stages=stages)
        true = np.atleast_1d(ahi_severity(np.asarray(ahi, dtype=np.float64)))
        keep = pred >= 0
        return cohen_kappa(true[keep], pred[keep], n_classes=len(SEVERITY_NAMES), weights="linear")

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Calibration line and options (tensors + JSON-able dict), as for the other heads."""
        self._check_fitted("get_state")
        return ({"coef": torch.from_numpy(self.coef_.copy())},
                {"head": self.head_name, "version": STATE_VERSION,
                 "params": _jsonable(self.get_params()), "fitted": {"n_nights": self.n_nights_}})

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> "AHIRegressor":
        """Rebuild a fitted regressor from :meth:`get_state` output."""
        if meta.get("head") != cls.head_name:
            raise ValueError(f"State is for head {meta.get('head')!r}, not {cls.head_name!r}.")
        reg = cls(**meta["params"])
        reg.coef_ = tensors["coef"].numpy().astype(np.float64)
        reg.n_nights_ = int(meta["fitted"]["n_nights"])
        return reg

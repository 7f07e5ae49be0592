"""The estimator machinery shared by the heads: parameter checks, the training loop on epoch
embeddings, prediction, and state for saving (tensors + a JSON-able dict).

Every head takes one night as an array ``[n_epochs, n_features]`` of epoch embeddings, or a list
of such nights, and follows the scikit-learn estimator contract: options in ``__init__``,
``fit(X, y) -> self``, ``predict``, ``predict_proba``, ``score``; fitted attributes end in ``_``.
A list in gives a list out; a single 2-D array in gives a single array out. Heads are registered
by name: :func:`list_heads`, :func:`create_head`.
"""
from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from ...exceptions import ConvergenceWarning, InvalidParameterError, NotFittedError, SleepFMError
from ...registry import Registry
from ...utils import to_jsonable, verbose_scope

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


def balanced_class_weights(counts) -> np.ndarray:
    """Loss weight per class from its count of labelled epochs: ``n / (n_present * n_c)``, 0 for
    a class without any (scikit-learn's "balanced" over the classes present)."""
    counts = np.asarray(counts, dtype=float)
    present = counts > 0
    weights = np.zeros(counts.shape)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def check_device(device) -> None:
    """Raise unless ``device`` names a torch device ('cpu', 'cuda', 'cuda:1', ...)."""
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidParameterError(f"'device' must name a torch device like 'cpu' or 'cuda', "
                                    f"got {device!r}.") from err


def _check_positive(name: str, value, *, integer: bool = True, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        what = "a positive integer" if integer else "a positive number"
        or_none = " or None" if allow_none else ""
        raise InvalidParameterError(f"{name!r} must be {what}{or_none}, got {value!r}.")


class BaseHead(BaseEstimator):
    """Common machinery of the heads: input checks, the training loop, prediction, state.

    Subclasses define the network (``_build_network``), the targets (``_check_targets``), the
    loss (``_loss``) and the validation score (``_score_proba``).
    """

    head_name: ClassVar[str]
    #: True: train on random crops of nights (sequence models); False: on pooled epochs.
    _crops: ClassVar[bool] = True

    def _set_params(self, params: dict) -> None:
        """Store the constructor's arguments (its ``locals()``) as attributes, scikit-learn
        style: ``get_params`` reads them back by the names of the signature."""
        for name, value in params.items():
            if name != "self":
                setattr(self, name, value)

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

    def _lr_schedule(self, optimizer: torch.optim.Optimizer, n_samples: int):
        """A scheduler stepped after every optimiser step, or None for a constant rate;
        ``n_samples`` is the number of training epochs (rows)."""
        return None

    def _decide(self, proba: np.ndarray) -> np.ndarray:
        """Predictions of one night from its probabilities."""
        raise NotImplementedError

    def _validate_params(self) -> None:
        for name in ("epochs", "patience"):
            _check_positive(name, getattr(self, name))
        _check_positive("lr", self.lr, integer=False)
        if not self.weight_decay >= 0:
            raise InvalidParameterError(f"'weight_decay' must be >= 0, got {self.weight_decay!r}.")
        if self._crops:
            _check_positive("batch_nights", self.batch_nights)
            _check_positive("seq_len", self.seq_len, allow_none=True)
        else:
            _check_positive("batch_size", self.batch_size)
        if hasattr(self, "dropout") and not 0.0 <= self.dropout < 1.0:
            raise InvalidParameterError(f"'dropout' must be in [0, 1), got {self.dropout!r}.")
        check_device(self.device)

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
            raise InvalidParameterError(
                f"X is a {X.ndim}-D array; pass one night as [n_epochs, n_features] or a list of "
                "such nights (list(X) for a stacked [n_nights, n_epochs, n_features] array)."
            )
        nights = [X] if single else list(X)
        if not nights:
            raise InvalidParameterError("X is empty; pass a list of per-night [n_epochs, n_features] arrays.")
        out = []
        expected = None if fitting else self.n_features_in_
        for i, night in enumerate(nights):
            arr = np.asarray(night.detach().cpu() if isinstance(night, torch.Tensor) else night,
                             dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] == 0:
                raise InvalidParameterError(
                    f"night {i} of X has shape {arr.shape}; each night must be a non-empty "
                    "[n_epochs, n_features] array."
                )
            if expected is None:
                expected = arr.shape[1]
            if arr.shape[1] != expected:
                where = "the others" if fitting else f"{type(self).__name__} was fitted"
                raise InvalidParameterError(
                    f"night {i} of X has {arr.shape[1]} features but {where} with {expected}; "
                    "use embeddings from the same encoder."
                )
            if not np.all(np.isfinite(arr)):
                raise InvalidParameterError(
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
                raise InvalidParameterError("Pass both X_val and y_val, or neither.")
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
            scheduler = self._lr_schedule(optimizer, int(x_all.shape[0]))
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
                    if scheduler is not None:
                        scheduler.step()
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

    def predict(self, X):
        """Per-epoch predictions: the most probable class (staging heads) or event flags
        (``probability >= threshold``, :class:`EventHead`).

        Parameters
        ----------
        X : list of ndarray [n_epochs_i, n_features], or one such array
            Epoch embeddings per night.

        Returns
        -------
        list of ndarray of int [n_epochs_i] (or [n_epochs_i, n_events]), or one such array
        """
        self._check_fitted("predict")
        proba = self.predict_proba(X)
        return self._decide(proba) if isinstance(proba, np.ndarray) else [self._decide(p)
                                                                          for p in proba]

    def score(self, X, y) -> float:
        """The head's validation score on labelled nights: macro-F1 over scored epochs (staging
        heads; soft targets by their argmax) or the mean AUROC over events (:class:`EventHead`,
        events without both classes left out).

        Parameters
        ----------
        X : list of ndarray, or one array
            Epoch embeddings per night.
        y : list of ndarray, or one array
            Labels per night (-1 ignored).

        Returns
        -------
        float
        """
        self._check_fitted("score")
        nights, single = self._check_X(X)
        targets = self._check_targets(y, [n.shape[0] for n in nights], single)
        return self._score_proba(self._predict_nights(nights), targets)

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
                "params": to_jsonable(self.get_params()), "fitted": to_jsonable(self._fitted_meta())}
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
            raise InvalidParameterError(
                f"State is for head {meta.get('head')!r}, not {cls.head_name!r}; use "
                "head_from_state() to dispatch on the saved name."
            )
        if meta.get("version") != STATE_VERSION:
            raise InvalidParameterError(f"State version {meta.get('version')!r} is not supported "
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

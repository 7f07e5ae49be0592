"""Multi-phenotype Cox proportional-hazards head: future disease from a night's embeddings.

:class:`CoxHead` predicts ``K`` log-hazards per subject (one per phenotype) from a night
embedding (``arch="linear"`` or ``"mlp"``) or from the night's sequence of 5-minute window
embeddings (``arch="lstm"``, SleepFM's disease model), optionally with demographic covariates.
It maximises the Cox partial likelihood (Efron or Breslow ties) over full-cohort risk sets, for
all phenotypes at once; a subject whose time or event is NaN for a phenotype is not at risk for
it (e.g. the disease was present before the night). The linear head is lifelines'
``CoxPHFitter`` per phenotype, fitted jointly (checked on ``lifelines.datasets.load_rossi``).
"""
from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...eval.survival import concordance_index
from ...exceptions import (
    ConvergenceWarning,
    DataWarning,
    InvalidParameterError,
    LabelError,
    NotFittedError,
    SleepFMError,
)
from ...utils import check_option, to_jsonable
from .base import STATE_VERSION, _check_positive, check_device

logger = logging.getLogger(__name__)

ARCHS = ("linear", "mlp", "lstm")
TIES = ("efron", "breslow")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PREDICT_CHUNK = 4096  # subjects per forward pass at prediction time (bounds LSTM memory)


# ---- risk sets ------------------------------------------------------------------------------
@dataclass
class RiskSets:
    """The risk-set structure of ``K`` phenotypes over ``n`` subjects, built once per fit.

    Subjects are laid out per phenotype in decreasing time (the sorted layout ``[K, n]``, those
    not at risk last), so a risk-set sum of ``exp(eta)`` is a cumulative sum read at the last
    position of a tie of times. Events and tie groups (the events of one phenotype at one time)
    are listed phenotype by phenotype; positions are flat indices into the sorted layout.
    ``order``: the index into ``eta_t.reshape(-1)`` of each position; per event ``ev_pos`` (its
    position), ``ev_end`` (the last position of its tie of times: its risk-set sum),
    ``ev_group``, ``ev_pheno`` and ``ev_frac`` (Efron's ``l / d``); ``pos_group``: the first
    group whose risk set holds each position (``n_groups`` if none); ``group_slot``: the slot of
    each group in a ``[K, max_groups]`` table of each phenotype's groups in reverse order.
    """

    order: torch.Tensor
    not_at_risk: torch.Tensor | None
    ev_pos: torch.Tensor
    ev_end: torch.Tensor
    ev_group: torch.Tensor
    ev_frac: torch.Tensor
    ev_pheno: torch.Tensor
    pos_group: torch.Tensor
    group_slot: torch.Tensor
    n_groups: int
    max_groups: int
    n_at_risk: np.ndarray
    n_events: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.n_at_risk), self.order.numel() // max(len(self.n_at_risk), 1)

    @property
    def has_ties(self) -> bool:
        return self.n_groups < self.ev_pos.numel()


def risk_sets(durations: np.ndarray, events: np.ndarray, *, device="cpu") -> RiskSets:
    """The :class:`RiskSets` of checked ``[n, K]`` durations (>= 0) and events (0/1); NaN in
    either marks a subject not at risk."""
    n, k = durations.shape
    at_risk = np.isfinite(durations) & np.isfinite(events)
    key = np.where(at_risk, durations, -np.inf).T  # [K, n]; not at risk sorts last
    order = np.argsort(-key, axis=1, kind="stable")
    t_sorted = np.take_along_axis(key, order, axis=1)
    del key
    risk_sorted = np.take_along_axis(at_risk.T, order, axis=1)
    ev_sorted = np.take_along_axis(np.where(at_risk, events, 0.0).T, order, axis=1) == 1
    order += (np.arange(k) * n)[:, None]
    is_end = np.ones((k, n), dtype=bool)
    is_end[:, :-1] = t_sorted[:, 1:] != t_sorted[:, :-1]
    del t_sorted
    end = np.minimum.accumulate(np.where(is_end, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
    pheno, pos = np.nonzero(ev_sorted)  # row-major: phenotype by phenotype, increasing position
    ev_end = pheno * n + end[pheno, pos]
    del end, is_end, ev_sorted
    m = ev_end.size
    new = np.ones(m, dtype=bool)
    new[1:] = ev_end[1:] != ev_end[:-1]
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    n_groups = int(starts.size)
    frac = (np.arange(m) - starts[group]) / np.diff(np.append(starts, m))[group]
    # A sorted position is in the risk sets of the groups ending at or after it.
    g_pheno = pheno[starts]
    pos_group = np.full(k * n, n_groups, dtype=np.int64)
    pos_group[ev_end[starts]] = np.arange(n_groups)
    pos_group = np.minimum.accumulate(pos_group.reshape(k, n)[:, ::-1], axis=1)[:, ::-1]
    per_pheno = np.bincount(g_pheno, minlength=k)
    first = np.cumsum(per_pheno) - per_pheno
    max_groups = int(per_pheno.max(initial=0))
    slot = g_pheno * max_groups + per_pheno[g_pheno] - 1 - (np.arange(n_groups) - first[g_pheno])

    def t(a, dt=torch.int64):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)

    return RiskSets(order=t(order.reshape(-1)),
                    not_at_risk=None if risk_sorted.all() else t(~risk_sorted, torch.bool),
                    ev_pos=t(pheno * n + pos), ev_end=t(ev_end), ev_group=t(group),
                    ev_frac=t(frac, torch.float64), ev_pheno=t(pheno),
                    pos_group=t(pos_group.reshape(-1), torch.int32), group_slot=t(slot),
                    n_groups=n_groups, max_groups=max_groups, n_at_risk=at_risk.sum(axis=0),
                    n_events=np.bincount(pheno, minlength=k))


class Workspace:
    """Two ``[K * n]`` buffers reused by every loss evaluation of a fit (fresh allocations of
    that size on each pass cost page faults that would dominate the time)."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}
        self.generation = 0

    def get(self, name: str, like: torch.Tensor, numel: int) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or (buf.numel(), buf.dtype, buf.device) != (numel, like.dtype, like.device):
            buf = self._buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf


class _PartialLikelihood(torch.autograd.Function):
    """Cox partial log-likelihood per phenotype, with a hand-written backward pass."""

    @staticmethod
    def forward(ctx, eta_t, rs: RiskSets, efron: bool, ws: Workspace | None):
        k, n = rs.shape
        ws = Workspace() if ws is None else ws
        ws.generation += 1
        e = torch.index_select(eta_t.reshape(-1), 0, rs.order, out=ws.get("e", eta_t, k * n))
        if rs.not_at_risk is not None:
            e.view(k, n).masked_fill_(rs.not_at_risk, -math.inf)
        # Shift each phenotype by its max (the likelihood does not change): stable exponentials.
        e.view(k, n).sub_(e.view(k, n).amax(dim=1, keepdim=True))
        z_ev = e.index_select(0, rs.ev_pos)
        e.exp_()
        cum = ws.get("s", eta_t, k * n)
        torch.cumsum(e.view(k, n), dim=1, out=cum.view(k, n))
        denom = cum.index_select(0, rs.ev_end)
        e_ev = torch.exp(z_ev)
        frac = None
        if efron and rs.has_ties:
            frac = rs.ev_frac.to(eta_t.dtype)
            tied = eta_t.new_zeros(rs.n_groups).index_add_(0, rs.ev_group, e_ev)
            denom.sub_(frac * tied.index_select(0, rs.ev_group))
        # Summed in float64 whatever the dtype: a float32 sum stalls L-BFGS's line search.
        terms = (z_ev - torch.log(denom)).to(torch.float64)
        ll = terms.new_zeros(k).index_add_(0, rs.ev_pheno, terms)
        ctx.rs, ctx.ws, ctx.generation, ctx.shape = rs, ws, ws.generation, eta_t.shape
        ctx.e, ctx.e_ev, ctx.denom, ctx.frac = e, e_ev, denom, frac
        return ll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ll):
        rs, ws = ctx.rs, ctx.ws
        if ws.generation != ctx.generation:
            raise SleepFMError("the Cox loss was evaluated again before the backward pass of "
                               "an earlier evaluation; call backward() after each forward pass.")
        k, n = rs.shape
        grad_ll = grad_ll.to(ctx.e.dtype)
        g_ev = grad_ll.index_select(0, rs.ev_pheno)
        a = g_ev / ctx.denom
        # d ll / d eta_p = [p is an event] - e_p * (sum of 1 / denom_l over the events l whose
        # risk set holds p) + e_p * (sum of frac_l / denom_l over the events tied with p, Efron).
        per_group = grad_ll.new_zeros(rs.n_groups).index_add_(0, rs.ev_group, a)
        table = grad_ll.new_zeros(k * rs.max_groups).index_copy_(0, rs.group_slot, per_group)
        later = torch.cumsum(table.view(k, rs.max_groups), dim=1).view(-1)
        later = torch.cat([later.index_select(0, rs.group_slot), grad_ll.new_zeros(1)])
        grad = torch.index_select(later, 0, rs.pos_group, out=ws.get("s", grad_ll, k * n))
        grad.mul_(ctx.e).neg_()
        direct = g_ev
        if ctx.frac is not None:
            tied = grad_ll.new_zeros(rs.n_groups).index_add_(0, rs.ev_group, ctx.frac * a)
            direct = direct + ctx.e_ev * tied.index_select(0, rs.ev_group)
        grad.index_add_(0, rs.ev_pos, direct)
        grad_eta = torch.empty(k * n, dtype=grad.dtype, device=grad.device)
        grad_eta.index_copy_(0, rs.order, grad)
        return grad_eta.view(ctx.shape), None, None, None


def cox_log_likelihood(eta_t: torch.Tensor, rs: RiskSets, ties: str = "efron", *,
                       workspace: Workspace | None = None) -> torch.Tensor:
    """Cox partial log-likelihood of each phenotype, float64 ``[K]``, differentiable in
    ``eta_t`` (log-hazards ``[K, n]``, phenotype-major) over the risk sets ``rs``.

    Breslow: ``sum over events i of eta_i - log(sum_{j at risk at t_i} exp(eta_j))``; Efron
    subtracts ``l/d * sum_{tied events} exp(eta)`` in the denominator of the ``l``-th of ``d``
    tied events; 0 for a phenotype without events. A pass is a gather into the sorted layout, a
    per-phenotype max shift, one cumulative sum, gathers at the events and segment sums; the
    backward pass reverses it. A ``workspace`` reuses buffers across the passes of a fit (each
    pass's backward must run before the next pass).
    """
    k, n = rs.shape
    if tuple(eta_t.shape) != (k, n):
        raise InvalidParameterError(f"eta_t has shape {tuple(eta_t.shape)}; the risk sets are "
                                    f"for [{k}, {n}] (phenotypes, subjects).")
    return _PartialLikelihood.apply(eta_t, rs, ties == "efron", workspace)


# ---- networks: log-hazards phenotype-major, [K, n] = W @ features.T (the loss's layout) -------
class FeedForwardCoxNet(nn.Module):
    """``x`` (embeddings and covariates, concatenated) to ``K`` log-hazards without output bias
    (Cox has none): one linear map from zero (``hidden=None``, lifelines' start), or one hidden
    layer (GELU, dropout) first."""

    def __init__(self, n_in: int, n_out: int, *, hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.hidden = nn.Identity() if hidden is None else nn.Sequential(
            nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(n_in if hidden is None else hidden, n_out, bias=False)
        if hidden is None:
            nn.init.zeros_(self.out.weight)

    def forward(self, x, covariates=None, lengths=None):
        return self.out.weight @ self.hidden(x).T


class LSTMCoxNet(nn.Module):
    """SleepFM's disease model: a bidirectional LSTM over the night's window embeddings, the mean
    of its outputs over valid steps, concatenated with an embedding of the covariates (linear,
    ReLU, dropout), then one log-hazard per phenotype."""

    def __init__(self, n_features: int, n_covariates: int, n_out: int, *, hidden: int,
                 num_layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        n_embed = max(1, hidden // 2) if n_covariates else 0
        self.covariates = (nn.Sequential(nn.Linear(n_covariates, n_embed), nn.ReLU(),
                                         nn.Dropout(dropout)) if n_covariates else None)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden + n_embed, n_out, bias=False)

    def forward(self, x, covariates=None, lengths=None):
        """``x`` ``[B, T, D]`` right-padded, ``lengths`` ``[B]`` valid steps per row."""
        if lengths is not None and bool((lengths < x.shape[1]).any()):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out = pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                      total_length=x.shape[1])[0]
            pooled = out.sum(dim=1) / lengths.to(out.dtype)[:, None]
        else:
            pooled = self.lstm(x)[0].mean(dim=1)
        if self.covariates is not None:
            pooled = torch.cat([pooled, self.covariates(covariates)], dim=1)
        return self.out.weight @ self.dropout(pooled).T


# ---- the head -------------------------------------------------------------------------------
class CoxHead(BaseEstimator):
    """Cox proportional-hazards head for ``K`` phenotypes at once (future disease risk).

    Parameters
    ----------
    arch : {"linear", "mlp", "lstm"}, default="linear"
        ``"linear"``: ``[X, covariates] @ coef`` (lifelines' Cox model per phenotype);
        ``"mlp"``: one hidden layer (GELU, dropout); ``"lstm"``: a bidirectional LSTM over the
        window embeddings, averaged over valid steps, with an embedding of the covariates.
    hidden, num_layers, dropout : int, int, float, default=64, 2, 0.1
        Hidden width (mlp) or LSTM units per direction, LSTM layers, and dropout (mlp, lstm);
        unused by the linear head.
    penalizer : float, default=0.0
        Ridge penalty, with lifelines' meaning per phenotype (see Notes).
    ties : {"efron", "breslow"}, default="efron"
        Handling of tied event times.
    max_iter, lr : int, float, default=500, 1e-3
        L-BFGS iterations (linear; strong-Wolfe line search), or full-batch Adam steps and
        learning rate (mlp, lstm).
    patience, val_every : int, default=20, 1
        mlp, lstm with validation data: stop after ``patience`` checks, one per ``val_every``
        steps, without a better mean C-index, keeping the best weights.
    dtype : {"float64", "float32"} or None, default=None
        Network and loss precision; None: float64 for the linear head, float32 for the others.
    device, seed : str, int, default="cpu", 0
        Torch device of the fit; seed of the initial weights and dropout.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features_in_ + n_covariates_in_, n_phenotypes_)
        Linear head only: coefficients in the original units of ``X`` then ``covariates``
        (lifelines' ``params_``; ``exp(coef_)`` are hazard ratios per unit).
    n_features_in_, n_covariates_in_, n_phenotypes_ : int
        Columns of ``X`` (may be 0) and of ``covariates`` (0 without); ``K``.
    mean_, scale_ : ndarray of shape (n_features_in_ + n_covariates_in_,)
        Standardisation learnt in ``fit``: means and ``ddof=1`` standard deviations, like
        lifelines (1 for constant columns); over all windows of all nights for the lstm.
    log_likelihood_, n_at_risk_, n_events_ : ndarray of shape (n_phenotypes_,)
        Unpenalised partial log-likelihood, subjects at risk, events of the training data.
    n_iter_, converged_, fit_time_ : int, bool, float
        L-BFGS iterations or Adam steps; whether L-BFGS met its tolerance (linear) or training
        stopped early on validation (mlp, lstm); seconds in ``fit``.
    history_ : list of dict
        ``{"step", "loss"}`` per loss evaluation, with ``"val_c_index"`` where scored.
    timings_ : dict
        Seconds in ``precompute`` (checks, standardisation, risk sets), ``loss`` (``n_evals``
        forward and backward passes), ``validation`` and ``optimizer`` (the rest).

    Notes
    -----
    The loss is the mean over the ``K_e`` phenotypes with events of lifelines' objective
    ``J_k = -l_k / n_k + penalizer / 2 * ||theta_k||^2``: ``l_k`` the partial log-likelihood over
    full-cohort risk sets (never mini-batch ones), ``n_k`` the subjects at risk, ``theta_k`` the
    weights (not biases, on standardised inputs) of its log-hazard: the shared layers and its
    output column. So ``loss = mean_k(-l_k / n_k) + penalizer / 2 * (||shared||^2 +
    ||output||^2 / K_e)``; phenotypes without events add nothing and do not dilute it. lifelines
    maximises ``l - n * penalizer / 2 * ||beta||^2`` on inputs scaled by their ``ddof=1``
    deviation, so each ``coef_`` column is ``CoxPHFitter(penalizer=penalizer)`` on that
    phenotype (exactly when all subjects are at risk: the scaling is over all of them), and a
    ``K``-phenotype fit equals ``K`` separate fits. The linear head runs full-batch L-BFGS from
    zero to convergence; mlp and lstm heads full-batch Adam, stopping early on the validation
    mean C-index. A **demographics-only baseline** is the linear head on the covariates as
    ``X``: ``CoxHead().fit(demographics, durations, events)`` (recommended; ``X`` with 0 columns
    and ``covariates=demographics`` is the same model).

    Examples
    --------
    >>> head = CoxHead(penalizer=0.01).fit(emb, time, event, covariates=demo)
    >>> risk = head.predict_risk(emb_test, covariates=demo_test)  # [n, K], higher = earlier
    >>> head.score(emb_test, time_test, event_test, covariates=demo_test)  # mean C-index
    """

    head_name: ClassVar[str] = "cox"

    def __init__(self, *, arch: str = "linear", hidden: int = 64, num_layers: int = 2,
                 dropout: float = 0.1, penalizer: float = 0.0, ties: str = "efron",
                 max_iter: int = 500, lr: float = 1e-3, patience: int = 20, val_every: int = 1,
                 dtype: str | None = None, device: str = "cpu", seed: int = 0):
        for name, value in list(locals().items()):  # stored as given (scikit-learn contract)
            if name != "self":
                setattr(self, name, value)

    # ---- checks -----------------------------------------------------------------------------
    def _validate_params(self) -> None:
        for name, allowed in (("arch", ARCHS), ("ties", TIES), ("dtype", [None, *DTYPES])):
            check_option(name, getattr(self, name), allowed)
        for name in ("hidden", "num_layers", "max_iter", "patience", "val_every"):
            _check_positive(name, getattr(self, name))
        _check_positive("lr", self.lr, integer=False)
        if not (isinstance(p := self.penalizer, (int, float, np.number)) and not isinstance(
                p, bool) and math.isfinite(p) and p >= 0):
            raise InvalidParameterError(f"'penalizer' must be a finite number >= 0, got {p!r}.")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise InvalidParameterError(f"'dropout' must be in [0, 1), got {self.dropout!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InvalidParameterError(f"'seed' must be an integer, got {self.seed!r}.")
        check_device(self.device)

    @property
    def _torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype or ("float64" if self.arch == "linear" else "float32")]

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call "
                                 f"'fit' with embeddings, durations and events before using "
                                 f"'{method}', or load one with from_state().")

    def _check_X(self, X, *, fitting: bool, name: str = "X"):
        """``[n, D]`` float64 (linear, mlp) or a list of ``[T_i, D]`` (lstm, float32 if it is)."""
        expected = None if fitting else self.n_features_in_
        lstm = self.arch == "lstm"
        dtype = np.float32 if lstm and self._torch_dtype == torch.float32 else np.float64
        if lstm and isinstance(X, (np.ndarray, torch.Tensor)) and X.ndim == 3:
            X = list(X)
        if lstm and (isinstance(X, (np.ndarray, torch.Tensor)) or not len(X)):
            raise InvalidParameterError(
                f"{name}: the lstm head takes a non-empty list of [n_windows_i, n_features] "
                "arrays (a night per subject) or an [n_subjects, n_windows, n_features] array.")
        out = []
        for i, part in enumerate(X if lstm else [X]):
            where = f"subject {i} of {name}" if lstm else name
            arr = np.asarray(part.detach().cpu() if isinstance(part, torch.Tensor) else part,
                             dtype=dtype)
            if arr.ndim != 2 or (lstm and min(arr.shape) == 0):
                raise InvalidParameterError(f"{where} has shape {arr.shape}; " + (
                    "each night must be a non-empty [n_windows, n_features] array." if lstm else
                    "pass one night embedding per subject, [n_subjects, n_features]."))
            if expected is None:
                expected = arr.shape[1]
            if arr.shape[1] != expected:
                fitted = "the others" if fitting else f"{type(self).__name__} was fitted"
                raise InvalidParameterError(f"{where} has {arr.shape[1]} features but {fitted} "
                                            f"with {expected}; use embeddings of one encoder.")
            if not np.all(np.isfinite(arr)):
                bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
                rows = "" if lstm else f" (subjects {_first(bad)})"
                raise InvalidParameterError(f"{where} holds NaN or infinite values{rows}; re-run "
                                            "the embedding stage or drop those subjects.")
            out.append(arr)
        return out if lstm else out[0]

    def _check_covariates(self, covariates, n: int, *, fitting: bool, name: str = "covariates"):
        expected = None if fitting else self.n_covariates_in_
        if covariates is None:
            if expected:
                raise InvalidParameterError(
                    f"{type(self).__name__} was fitted with {expected} covariates; pass "
                    f"{name}=[n_subjects, {expected}] (the same columns as in fit).")
            return None
        cov = np.asarray(covariates, dtype=np.float64)
        cov = cov.reshape(-1, 1) if cov.ndim == 1 else cov
        if cov.ndim != 2 or cov.shape[0] != n:
            raise InvalidParameterError(f"{name} has shape {np.shape(covariates)}; expected "
                                        f"[{n}, n_covariates], one row per subject of X.")
        if expected is not None and cov.shape[1] != expected:
            raise InvalidParameterError(
                f"{name} has {cov.shape[1]} columns but {type(self).__name__} was fitted with "
                f"{expected or 'none'}; pass the same covariates as in fit.")
        if not np.all(np.isfinite(cov)):
            rows = np.flatnonzero(~np.isfinite(cov).all(axis=1))
            raise InvalidParameterError(f"{name} holds NaN or infinite values (subjects "
                                        f"{_first(rows)}); impute or drop those subjects.")
        return cov if cov.shape[1] else None

    def _check_targets(self, durations, events, n: int, *, suffix: str = "",
                       fitted: bool = False) -> tuple[np.ndarray, np.ndarray]:
        t, e = (np.asarray(a, dtype=np.float64) for a in (durations, events))
        t, e = (a.reshape(-1, 1) if a.ndim == 1 else a for a in (t, e))
        d_name, e_name = f"durations{suffix}", f"events{suffix}"
        if t.ndim != 2 or t.shape != e.shape:
            raise LabelError(f"{d_name} has shape {np.shape(durations)} and {e_name} "
                             f"{np.shape(events)}; both must be [n_subjects, n_phenotypes] "
                             "(or [n_subjects] for one phenotype).")
        if t.shape[0] != n:
            raise LabelError(f"X{suffix} has {n} subjects but {d_name} has {t.shape[0]} rows; "
                             "pass one row per subject.")
        if fitted and t.shape[1] != self.n_phenotypes_:
            raise LabelError(f"{d_name} has {t.shape[1]} phenotypes but the head predicts "
                             f"{self.n_phenotypes_}.")
        for bad, name, what, fix in (
            (np.isinf(t), d_name, "infinite", "use NaN for a subject not at risk"),
            (t < 0, d_name, "negative", "check the dates of the night and of the diagnosis"),
            (~np.isnan(e) & (e != 0) & (e != 1), e_name, "not 0, 1 or NaN",
             "mark events 1, censoring 0, not at risk NaN"),
        ):
            if np.any(bad):
                rows, cols = np.nonzero(bad)
                raise LabelError(f"{name} has {bad.sum()} {what} values (subjects "
                                 f"{_first(rows)}; phenotypes {_first(np.unique(cols))}); {fix}.")
        return t, e

    def _tensors(self, X, cov, device, dtype):
        """Standardised network inputs ``(x, covariates, lengths)``; for linear and mlp heads
        ``x`` holds the covariates too."""
        d, mean, scale = self.n_features_in_, self.mean_, self.scale_
        c = None if cov is None else torch.from_numpy((cov - mean[d:]) / scale[d:]).to(device,
                                                                                     dtype)
        if self.arch != "lstm":
            x = torch.from_numpy((X - mean[:d]) / scale[:d]).to(device, dtype)
            return (x if c is None else torch.cat([x, c], dim=1)), None, None
        lengths = np.array([a.shape[0] for a in X])
        x = np.zeros((len(X), int(lengths.max()), d), dtype=X[0].dtype)
        for i, a in enumerate(X):
            x[i, :a.shape[0]] = (a - mean[:d]) / scale[:d]
        return torch.from_numpy(x).to(device, dtype), c, torch.from_numpy(lengths).to(device)

    def _build_network(self) -> nn.Module:
        d, c, k = self.n_features_in_, self.n_covariates_in_, self.n_phenotypes_
        if self.arch == "lstm":
            return LSTMCoxNet(d, c, k, hidden=self.hidden, num_layers=self.num_layers,
                              dropout=self.dropout)
        return FeedForwardCoxNet(d + c, k, hidden=self.hidden if self.arch == "mlp" else None,
                                 dropout=self.dropout)

    def fit(self, X, durations, events, *, covariates=None, X_val=None, durations_val=None,
            events_val=None, covariates_val=None) -> CoxHead:
        """Fit the head by maximising the Cox partial likelihood of all phenotypes.

        Parameters
        ----------
        X : ndarray (n_subjects, n_features), or list of ndarray (n_windows_i, n_features)
            Night embeddings (linear, mlp; 0 columns allowed with covariates), or each night's
            window embeddings, any number of windows (lstm).
        durations, events : ndarray of shape (n_subjects, K) or (n_subjects,)
            Time from the night to the event or censoring (any unit, >= 0); 1 = event, 0 =
            censored. NaN in either = not at risk for that phenotype.
        covariates : ndarray of shape (n_subjects, n_covariates), optional
            Demographics (age, sex, ...), numeric and finite.
        X_val, durations_val, events_val, covariates_val : optional
            Validation subjects: mlp and lstm heads stop early on their mean C-index.

        Returns
        -------
        self

        Raises
        ------
        LabelError
            Mismatched shapes, negative or infinite durations, events not in {0, 1, NaN}, a
            phenotype with no subject at risk, or no event at all.
        InvalidParameterError
            A bad option, non-finite embeddings or covariates, partial validation data.
        """
        start = time.perf_counter()
        self._validate_params()
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # a refit starts from scratch
        X = self._check_X(X, fitting=True)
        n, d = len(X), (X[0] if self.arch == "lstm" else X).shape[1]
        cov = self._check_covariates(covariates, n, fitting=True)
        t, e = self._check_targets(durations, events, n)
        if d == 0 and cov is None:
            raise InvalidParameterError("X has no columns and no covariates were given; pass "
                                        "embeddings, covariates, or both.")
        at_risk = np.isfinite(t) & np.isfinite(e)
        if (empty := np.flatnonzero(~at_risk.any(axis=0))).size:
            raise LabelError(f"phenotypes {_first(empty)} have no subject at risk (all NaN); "
                             "drop those columns.")
        n_events = np.where(at_risk, e, 0).sum(axis=0)
        if not n_events.any():
            raise LabelError("no phenotype has an event; nothing to fit.")
        if not n_events.all():
            warnings.warn(f"{type(self).__name__}: phenotypes "
                          f"{_first(np.flatnonzero(n_events == 0))} have no events; they add "
                          "nothing to the loss and their risks carry no information.",
                          DataWarning, stacklevel=2)
        val_given = [a is not None for a in (X_val, durations_val, events_val)]
        if any(val_given) and not all(val_given):
            raise InvalidParameterError("Pass X_val, durations_val and events_val together "
                                        "(and covariates_val if covariates), or none of them.")
        columns = [np.concatenate(X) if self.arch == "lstm" else X] + ([cov] * (cov is not None))
        self.mean_ = np.concatenate([a.mean(axis=0, dtype=np.float64) for a in columns])
        self.scale_ = scale = np.concatenate([a.std(axis=0, ddof=1, dtype=np.float64) if len(a) > 1
                                              else np.ones(a.shape[1]) for a in columns])
        scale[~np.isfinite(scale) | (scale < 1e-12)] = 1.0
        self.n_features_in_ = int(d)
        self.n_covariates_in_ = 0 if cov is None else int(cov.shape[1])
        self.n_phenotypes_ = int(t.shape[1])
        val = None
        if all(val_given):
            xv = self._check_X(X_val, fitting=False, name="X_val")
            cv = self._check_covariates(covariates_val, len(xv), fitting=False,
                                        name="covariates_val")
            val = (xv, cv, *self._check_targets(durations_val, events_val, len(xv),
                                                suffix="_val", fitted=True))
        device, dtype = torch.device(self.device), self._torch_dtype
        inputs = self._tensors(X, cov, device, dtype)
        rs = risk_sets(t, e, device=device)
        self.n_at_risk_, self.n_events_ = rs.n_at_risk.astype(np.int64), rs.n_events
        timings = {"precompute": time.perf_counter() - start, "loss": 0.0, "n_evals": 0,
                   "validation": 0.0}
        fork = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(int(self.seed))
            network = self._build_network().to(device=device, dtype=dtype)
            optimise = self._fit_lbfgs if self.arch == "linear" else self._fit_adam
            self.history_ = optimise(network, inputs, rs, val, timings)
        self.network_ = network.eval()
        del inputs
        with torch.no_grad():  # in float64, from the predictions
            eta_t = torch.from_numpy(self._predict(X, cov).T.copy()).to(device)
            self.log_likelihood_ = cox_log_likelihood(eta_t, rs, self.ties).cpu().numpy()
        self._set_coef()
        self.fit_time_ = time.perf_counter() - start
        spent = timings["precompute"] + timings["loss"] + timings["validation"]
        self.timings_ = {**timings, "optimizer": max(0.0, self.fit_time_ - spent),
                         "total": self.fit_time_}
        logger.info("%s(%s) fitted: %d phenotypes, %d subjects, %d steps in %.1f s",
                    type(self).__name__, self.arch, self.n_phenotypes_, n, self.n_iter_,
                    self.fit_time_)
        return self

    def _set_coef(self) -> None:
        if self.arch == "linear":
            weight = self.network_.out.weight.detach().cpu().to(torch.float64).numpy().T
            self.coef_ = weight / self.scale_[:, None]

    def _loss_fn(self, network, inputs, rs, timings, k_e: int):
        """The loss of the Notes as a closure: forward, then backward of ``scale * loss``."""
        has_events = rs.n_events > 0
        weight = torch.from_numpy(np.where(has_events, 1.0 / (np.maximum(rs.n_at_risk, 1) * k_e),
                                           0.0)).to(inputs[0].device, torch.float64)
        shared = [p for name, p in network.named_parameters()
                  if "weight" in name and not name.startswith("out.")]
        p, workspace = float(self.penalizer), Workspace()

        def loss_fn(scale: float = 1.0):
            tic = time.perf_counter()
            ll = cox_log_likelihood(network(*inputs), rs, self.ties, workspace=workspace)
            loss = -(ll * weight).sum()
            if p > 0:
                loss = loss + 0.5 * p * (sum((w ** 2).sum() for w in shared)
                                         + (network.out.weight ** 2).sum() / k_e)
            if not torch.isfinite(loss):
                raise SleepFMError(f"{type(self).__name__} training diverged (loss "
                                   f"{loss.item()}); lower lr (now {self.lr}), raise penalizer "
                                   "or check the embeddings.")
            (loss * scale).backward()
            timings["loss"] += time.perf_counter() - tic
            timings["n_evals"] += 1
            return loss

        return loss_fn

    def _fit_lbfgs(self, network, inputs, rs, val, timings) -> list[dict]:
        k_e = int((rs.n_events > 0).sum())
        loss_fn = self._loss_fn(network, inputs, rs, timings, k_e)
        f64 = network.out.weight.dtype == torch.float64
        # L-BFGS sees the sum of the per-phenotype objectives (K_e * loss): the same minimum,
        # with gradients that do not shrink as phenotypes are added.
        optimizer = torch.optim.LBFGS(network.parameters(), lr=1.0, max_iter=self.max_iter,
                                      max_eval=self.max_iter * 2, history_size=20,
                                      tolerance_grad=1e-9 if f64 else 1e-5,
                                      tolerance_change=1e-14 if f64 else 1e-8,
                                      line_search_fn="strong_wolfe")
        history = []

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(k_e)
            history.append({"step": len(history), "loss": float(loss.item())})
            return loss * k_e

        network.train()
        optimizer.step(closure)
        state = optimizer.state[next(iter(network.parameters()))]
        self.n_iter_ = int(state.get("n_iter", 0))
        grad = max(float(p.grad.abs().max()) for p in network.parameters() if p.grad is not None)
        self.converged_ = bool(grad <= optimizer.defaults["tolerance_grad"] or (
            self.n_iter_ < self.max_iter and state.get("func_evals", 0) < self.max_iter * 2))
        if not self.converged_:
            warnings.warn(f"{type(self).__name__}: L-BFGS stopped after max_iter={self.max_iter} "
                          f"iterations (max |gradient| {grad:.2e}); raise max_iter or penalizer.",
                          ConvergenceWarning, stacklevel=3)
        if val is not None:
            history[-1]["val_c_index"] = self._val_score(network, val, timings)
        return history

    def _fit_adam(self, network, inputs, rs, val, timings) -> list[dict]:
        loss_fn = self._loss_fn(network, inputs, rs, timings, int((rs.n_events > 0).sum()))
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)
        history, best, best_state, best_step, stale, step = [], -math.inf, None, 0, 0, -1
        self.converged_ = False
        for step in range(self.max_iter):
            network.train()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn()
            optimizer.step()
            history.append({"step": step, "loss": float(loss.item())})
            if val is not None and ((step + 1) % self.val_every == 0 or step + 1 == self.max_iter):
                history[-1]["val_c_index"] = score = self._val_score(network, val, timings)
                if score > best:
                    best, best_step, stale = score, step, 0
                    best_state = copy.deepcopy(network.state_dict())
                elif (stale := stale + 1) >= self.patience:
                    self.converged_ = True
                    break
        self.n_iter_ = step + 1
        if best_state is not None:
            network.load_state_dict(best_state)
            if best_step == self.max_iter - 1:
                warnings.warn(f"{type(self).__name__}: the validation C-index was still "
                              f"improving at the last step ({self.max_iter}); raise max_iter.",
                              ConvergenceWarning, stacklevel=3)
        return history

    def _val_score(self, network, val, timings) -> float:
        tic, (xv, cv, tv, ev) = time.perf_counter(), val
        score = _mean_c(_c_indices(tv, self._predict(xv, cv, network), ev))
        timings["validation"] += time.perf_counter() - tic
        return score

    # ---- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, X, cov, network=None) -> np.ndarray:
        network = self.network_ if network is None else network
        was_training = network.training
        network.eval()
        param = next(network.parameters())
        out = [network(*self._tensors(X[lo:lo + _PREDICT_CHUNK],
                                      None if cov is None else cov[lo:lo + _PREDICT_CHUNK],
                                      param.device, param.dtype)).T.to(torch.float64).cpu().numpy()
               for lo in range(0, len(X), _PREDICT_CHUNK)]
        network.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.n_phenotypes_))

    def _inputs(self, X, covariates, method):
        self._check_fitted(method)
        X = self._check_X(X, fitting=False)
        return X, self._check_covariates(covariates, len(X), fitting=False)

    def predict_risk(self, X, covariates=None) -> np.ndarray:
        """Log-hazards ``[n_subjects, n_phenotypes_]`` (higher = earlier event), relative to
        the training mean input (lifelines' ``predict_log_partial_hazard``); ``X`` and
        ``covariates`` (required if fitted with them) as in :meth:`fit`."""
        X, cov = self._inputs(X, covariates, "predict_risk")
        return self._predict(X, cov)

    def concordance(self, X, durations, events, covariates=None) -> np.ndarray:
        """Harrell's C-index per phenotype (:func:`sleepfm.eval.survival.concordance_index`),
        NaN for a phenotype without comparable pairs; arguments as in :meth:`fit`."""
        X, cov = self._inputs(X, covariates, "concordance")
        t, e = self._check_targets(durations, events, len(X), fitted=True)
        return _c_indices(t, self._predict(X, cov), e)

    def score(self, X, durations, events, covariates=None) -> float:
        """Mean C-index over the phenotypes that can be scored (NaN ones left out; NaN if none);
        arguments as in :meth:`fit`."""
        return _mean_c(self.concordance(X, durations, events, covariates))

    def partial_log_likelihood(self, X, durations, events, covariates=None) -> np.ndarray:
        """Cox partial log-likelihood per phenotype ``[K]`` of the given subjects (their own
        risk sets, the head's ``ties``): the unnormalised, unpenalised sum over events
        (lifelines' ``log_likelihood_`` convention); 0 for a phenotype without events."""
        X, cov = self._inputs(X, covariates, "partial_log_likelihood")
        t, e = self._check_targets(durations, events, len(X), fitted=True)
        eta_t = torch.from_numpy(self._predict(X, cov).T.copy())
        with torch.no_grad():
            return cox_log_likelihood(eta_t, risk_sets(t, e), self.ties).numpy()

    # ---- state ------------------------------------------------------------------------------
    _FITTED: ClassVar[dict] = {
        "n_features_in": int, "n_covariates_in": int, "n_phenotypes": int, "n_iter": int,
        "converged": bool, "fit_time": float, "history": list, "n_at_risk": np.int64,
        "n_events": np.int64, "log_likelihood": np.float64}

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Fitted weights and options, to save with safetensors + JSON: tensors ``network.*``,
        ``mean`` and ``scale``; a JSON-able dict with ``head`` ("cox"), ``version``, ``params``
        and ``fitted`` (sizes, counts, log-likelihoods, history)."""
        self._check_fitted("get_state")
        tensors = {f"network.{k}": v.detach().cpu().contiguous().clone()
                   for k, v in self.network_.state_dict().items()}
        tensors["mean"] = torch.from_numpy(self.mean_.copy())
        tensors["scale"] = torch.from_numpy(self.scale_.copy())
        fitted = {name: getattr(self, f"{name}_") for name in self._FITTED}
        return tensors, {"head": self.head_name, "version": STATE_VERSION,
                         "params": to_jsonable(self.get_params()), "fitted": to_jsonable(fitted)}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> CoxHead:
        """Rebuild a fitted head from :meth:`get_state` output; it predicts exactly like the
        saved one. A state of another head or version is an :class:`InvalidParameterError`."""
        if meta.get("head") != cls.head_name:
            raise InvalidParameterError(f"State is for head {meta.get('head')!r}, not "
                                        f"{cls.head_name!r}.")
        if meta.get("version") != STATE_VERSION:
            raise InvalidParameterError(f"State version {meta.get('version')!r} is not "
                                        f"supported (expected {STATE_VERSION}); re-save the head.")
        head = cls(**meta["params"])
        for name, kind in cls._FITTED.items():
            value = meta["fitted"][name]
            setattr(head, f"{name}_", np.asarray(value, kind) if kind in (np.int64, np.float64)
                    else kind(value))
        head.mean_ = tensors["mean"].numpy().astype(np.float64)
        head.scale_ = tensors["scale"].numpy().astype(np.float64)
        network = head._build_network().to(dtype=head._torch_dtype)
        network.load_state_dict({k[len("network."):]: v for k, v in tensors.items()
                                 if k.startswith("network.")})
        head.network_ = network.to(torch.device(head.device)).eval()
        head._set_coef()
        return head


def _c_indices(durations: np.ndarray, risk: np.ndarray, events: np.ndarray) -> np.ndarray:
    return np.array([concordance_index(durations[:, k], risk[:, k], events[:, k])
                     for k in range(risk.shape[1])])


def _mean_c(c: np.ndarray) -> float:
    return float(np.nanmean(c)) if np.isfinite(c).any() else float("nan")


def _first(values, limit: int = 5) -> str:
    values = [int(v) for v in np.asarray(values).reshape(-1)]
    more = f", … ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(map(str, values[:limit])) + more

"""The apnea-hypopnea index from per-epoch event probabilities: the expected event rate per hour
of sleep, calibrated to the true AHI, and its severity grade (:mod:`sleepfm.vocab` defines both)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ...eval.metrics import cohen_kappa
from ...exceptions import InvalidParameterError, LabelError, NotFittedError
from ...utils import to_jsonable
from ...vocab import EPOCH_S, SEVERITY_NAMES, ahi, ahi_severity, sleep_hours
from .base import STATE_VERSION


def expected_event_rate(proba, *, stages=None, column: int = 0,
                        epoch_sec: float = EPOCH_S) -> np.ndarray:
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
        s = np.full(p.shape[0], 2) if stages is None else np.asarray(stages[i])
        if s.shape[0] != p.shape[0]:
            raise LabelError(f"night {i}: {p.shape[0]} probabilities but {s.shape[0]} stages.")
        hours = sleep_hours(s, epoch_s=epoch_sec)
        if hours > 0:
            rates[i] = ahi(p[s >= 1].sum(), hours)
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

    def __init__(self, *, column: int = 0, epoch_sec: float = EPOCH_S):
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
            raise InvalidParameterError(
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
                 "params": to_jsonable(self.get_params()), "fitted": {"n_nights": self.n_nights_}})

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> "AHIRegressor":
        """Rebuild a fitted regressor from :meth:`get_state` output."""
        if meta.get("head") != cls.head_name:
            raise InvalidParameterError(f"State is for head {meta.get('head')!r}, not {cls.head_name!r}.")
        reg = cls(**meta["params"])
        reg.coef_ = tensors["coef"].numpy().astype(np.float64)
        reg.n_nights_ = int(meta["fitted"]["n_nights"])
        return reg

"""YASA as a baseline: its shipped sleep-staging model, and its features with a retrained LightGBM.

What a user would run instead of a sleep foundation model, on the same EDF recordings:

* :func:`yasa_predict_proba` — YASA's pre-trained ``SleepStaging`` classifier off the shelf
  (Vallat & Walker, 2021, *eLife* 10:e70092), per-epoch probabilities of W, N1, N2, N3, REM;
* :func:`yasa_features` + :class:`YasaLightGBM` — YASA's per-epoch feature table and a LightGBM
  classifier trained on the benchmark's own training subjects, for 5 stages, 4 stage groups or a
  binary per-epoch target (arousal, hypopnea, desaturation);
* :func:`pick_yasa_channels` — the one EEG, EOG and EMG lead YASA reads, under a missing-lead
  condition (``exclude_kinds``);
* :func:`fit_length` — outputs padded or trimmed to the number of epochs the caller asks for.

YASA reads one EEG (required), one EOG and one EMG channel and nothing else: removing ECG or
respiration leaves its input unchanged, and removing EEG makes it inapplicable
(:class:`~sleepfm.exceptions.ChannelError`) — report that, never fill the cell silently.

``yasa``, ``mne`` and ``lightgbm`` are imported by the functions that use them (the ``compare``
extra installs them: ``pip install "sleepfm[compare]"``).
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from .channels import DEFAULT_CHANNEL_MAP, KIND_TO_MODALITY, ChannelMap, normalize_name
from .exceptions import (ChannelError, DataWarning, EDFError, InvalidParameterError, LabelError,
                         NotFittedError, SignalError)
from .utils import verbose_scope
from .vocab import EPOCH_S, STAGE_NAMES, UNSCORED, record_id, stage_code

logger = logging.getLogger(__name__)

#: The signal kinds YASA reads, in the order of ``SleepStaging``'s arguments.
YASA_KINDS: tuple[str, ...] = ("eeg", "eog", "emg")

# Preferences over normalised channel names (see sleepfm.channels.normalize_name).
_EEG_PREFERRED = (re.compile(r"^(?:eeg)?c4"), re.compile(r"^(?:eeg)?c3"))
_CHIN = re.compile(r"chin|submental|menton")
_LEG = re.compile(r"leg|tib|plm|^(?:emg)?[lr]at$")
# YASA resamples to 100 Hz and needs more than 80 Hz to start from.
_YASA_MIN_RATE = 80.0


# --------------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------------
def _check_exclude_kinds(exclude_kinds) -> tuple[str, ...]:
    if isinstance(exclude_kinds, str):
        exclude_kinds = (exclude_kinds,)
    kinds = tuple(str(k).lower() for k in exclude_kinds)
    unknown = [k for k in kinds if k not in KIND_TO_MODALITY]
    if unknown:
        raise InvalidParameterError(
            f"Invalid value for the 'exclude_kinds' parameter: {unknown} are not signal kinds. "
            f"Allowed kinds are {', '.join(repr(k) for k in KIND_TO_MODALITY)}."
        )
    return kinds


def pick_yasa_channels(channel_names, *, channel_map: ChannelMap | None = None,
                       exclude_kinds=(), record: str | None = None) -> dict[str, str | None]:
    """The EEG, EOG and EMG channel YASA should read from a recording.

    Parameters
    ----------
    channel_names : iterable of str
        The recording's channel names, in file order.
    channel_map : ChannelMap, optional
        Name → kind table (default :data:`~sleepfm.channels.DEFAULT_CHANNEL_MAP`).
    exclude_kinds : iterable of str, default=()
        Kinds treated as absent (a missing-lead condition), e.g. ``("eeg",)`` or
        ``("emg", "ecg", "resp")``; any kind of :data:`~sleepfm.channels.KIND_TO_MODALITY`. A
        single kind may be given as a string.
    record : str, optional
        File or record name used in error messages.

    Returns
    -------
    dict
        ``{"eeg": name, "eog": name or None, "emg": name or None}``: the keyword arguments
        ``eeg_name``, ``eog_name``, ``emg_name`` of ``yasa.SleepStaging``.

    Raises
    ------
    ChannelError
        If no EEG channel is left: YASA cannot run on this recording under this condition.
    InvalidParameterError
        If ``exclude_kinds`` names something that is not a signal kind.

    Notes
    -----
    EEG: a central lead, C4 first, then C3 (YASA's model was trained on central EEG), else the first
    EEG channel. EOG: the first EOG channel. EMG: a chin (submental) lead, else the first EMG channel
    that is not a leg lead; leg EMG is never used, since YASA's EMG features describe chin tone.
    Kinds YASA does not read (ECG, respiration, SpO2, ...) never change the result, so a condition
    that removes only those leaves YASA's input, and its output, as it was.

    Examples
    --------
    >>> pick_yasa_channels(["F4-M1", "C3-M2", "C4-M1", "E1-M2", "Leg L", "Chin", "ECG"])
    {'eeg': 'C4-M1', 'eog': 'E1-M2', 'emg': 'Chin'}
    >>> pick_yasa_channels(["C4-M1", "E1-M2", "Chin"], exclude_kinds=("emg",))
    {'eeg': 'C4-M1', 'eog': 'E1-M2', 'emg': None}
    """
    cmap = channel_map if channel_map is not None else DEFAULT_CHANNEL_MAP
    excluded = _check_exclude_kinds(exclude_kinds)
    names = [str(n) for n in channel_names]
    by_kind: dict[str, list[str]] = {k: [] for k in YASA_KINDS}
    for name in names:
        kind = cmap.kind(name)
        if kind in by_kind and kind not in excluded:
            by_kind[kind].append(name)
    where = f"{record}: " if record else ""
    if not by_kind["eeg"]:
        why = ("EEG is excluded by this missing-lead condition (exclude_kinds="
               f"{list(excluded)})" if "eeg" in excluded else
               f"none of its channels {names} is recognised as EEG")
        raise ChannelError(
            f"{where}no EEG channel for YASA: {why}. YASA's sleep staging needs one EEG lead, so "
            "it is not applicable here: report the result as not applicable, or, if an EEG "
            "channel has an unusual name, map it to 'eeg' with a channel map "
            "(ChannelMap({'name': 'eeg'}))."
        )
    eeg = next((n for pattern in _EEG_PREFERRED for n in by_kind["eeg"]
                if pattern.match(normalize_name(n))), by_kind["eeg"][0])
    eog = by_kind["eog"][0] if by_kind["eog"] else None
    chin = [n for n in by_kind["emg"] if _CHIN.search(normalize_name(n))]
    other = [n for n in by_kind["emg"] if not _LEG.search(normalize_name(n))]
    emg = (chin or other or [None])[0]
    if emg is None and by_kind["emg"]:
        logger.info("%sleg EMG %s not used by YASA (it needs chin EMG)", where, by_kind["emg"])
    return {"eeg": eeg, "eog": eog, "emg": emg}


# --------------------------------------------------------------------------------------------------
# Running YASA on an EDF
# --------------------------------------------------------------------------------------------------
def _sleep_staging(edf_path, channel_map, exclude_kinds):
    """A ``yasa.SleepStaging`` on the picked channels of an EDF whose header identity is erased."""
    import mne
    import yasa

    path = Path(edf_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recording; check the path.")
    reader = mne.io.read_raw_bdf if path.suffix.lower() == ".bdf" else mne.io.read_raw_edf
    try:
        raw = reader(path, preload=False, verbose="error")
    except Exception as err:  # MNE raises many types for a broken file
        raise EDFError(f"{path.name}: MNE cannot read it as EDF/BDF ({type(err).__name__}: "
                       f"{err}); check the file, or convert it to EDF.") from err
    # Patient identity and the recording date of the header go no further than this object.
    raw.anonymize(verbose="error")
    picks = pick_yasa_channels(raw.ch_names, channel_map=channel_map,
                               exclude_kinds=exclude_kinds, record=path.name)
    raw.pick([name for name in picks.values() if name is not None])
    if not raw.info["sfreq"] > _YASA_MIN_RATE:
        raise SignalError(f"{path.name}: channels {picks} are sampled at {raw.info['sfreq']:g} Hz; "
                          f"YASA needs more than {_YASA_MIN_RATE:g} Hz, so it cannot stage this "
                          "recording.")
    if raw.n_times < EPOCH_S * raw.info["sfreq"]:
        raise SignalError(f"{path.name}: {raw.n_times / raw.info['sfreq']:.1f} s of signal; YASA "
                          f"needs at least one {EPOCH_S:g}-s epoch.")
    raw.load_data(verbose="error")
    logger.info("%s: YASA reads EEG=%s, EOG=%s, EMG=%s", path.name, picks["eeg"], picks["eog"],
                picks["emg"])
    staging = yasa.SleepStaging(raw, eeg_name=picks["eeg"], eog_name=picks["eog"],
                                emg_name=picks["emg"])
    return staging, picks, path


def yasa_features(edf_path, *, channel_map: ChannelMap | None = None, exclude_kinds=(),
                  verbose=None) -> pd.DataFrame:
    """YASA's feature table of one recording: one row per full 30-s epoch from its start.

    Parameters
    ----------
    edf_path : path-like
        An EDF/BDF recording in physical units (µV for EEG, EOG and EMG), unfiltered.
    channel_map : ChannelMap, optional
        Name → kind table (default :data:`~sleepfm.channels.DEFAULT_CHANNEL_MAP`).
    exclude_kinds : iterable of str, default=()
        Kinds treated as absent (a missing-lead condition); see :func:`pick_yasa_channels`.
    verbose : bool, str or int, optional
        Logging level of ``sleepfm`` for this call.

    Returns
    -------
    DataFrame
        ``yasa.SleepStaging(...).get_features()``: index ``epoch`` 0..n-1 (n = whole 30-s epochs
        of the recording, a trailing partial epoch dropped), columns sorted by name, prefixed by
        the kind of the lead (``eeg_``, ``eog_``, ``emg_``), plus ``time_hour`` and ``time_norm``.
        ``attrs`` holds ``record_id`` (from the file name) and ``yasa_channels`` (the picks).
        Nothing of the EDF header's patient identity is read into it.

    Raises
    ------
    FileNotFoundError
        If ``edf_path`` does not exist.
    EDFError
        If MNE cannot read the file.
    ChannelError
        If no EEG channel is left (YASA is not applicable).
    SignalError
        If the picked channels are sampled at 80 Hz or less, or hold less than one epoch.

    Notes
    -----
    Without EOG or EMG the table has no ``eog_*`` or ``emg_*`` columns; train and predict with
    features computed under the same condition. No age or sex is passed to YASA.

    Examples
    --------
    >>> features = yasa_features("data_samples/SYN0001.edf")  # doctest: +SKIP
    >>> features.shape  # doctest: +SKIP
    (960, 149)
    """
    with verbose_scope(verbose):
        staging, picks, path = _sleep_staging(edf_path, channel_map, exclude_kinds)
        features = staging.get_features()
    features.attrs = {"record_id": record_id(path), "yasa_channels": dict(picks)}
    return features


def yasa_predict_proba(edf_path, *, n_epochs: int | None = None,
                       channel_map: ChannelMap | None = None, exclude_kinds=(),
                       verbose=None) -> np.ndarray:
    """Per-epoch stage probabilities from YASA's shipped (pre-trained) staging model.

    Parameters
    ----------
    edf_path : path-like
        An EDF/BDF recording in physical units, unfiltered.
    n_epochs : int, optional
        Number of rows to return (the caller's epoch count); YASA's rows are padded at the end
        with uniform rows (0.2 each: no information) or trimmed at the end. ``None`` keeps YASA's
        rows, one per whole 30-s epoch.
    channel_map : ChannelMap, optional
        Name → kind table (default :data:`~sleepfm.channels.DEFAULT_CHANNEL_MAP`).
    exclude_kinds : iterable of str, default=()
        Kinds treated as absent (a missing-lead condition); see :func:`pick_yasa_channels`.
    verbose : bool, str or int, optional
        Logging level of ``sleepfm`` for this call.

    Returns
    -------
    ndarray of float, shape (n_epochs, 5)
        Probabilities of W, N1, N2, N3, REM (AASM codes 0-4, :data:`~sleepfm.vocab.STAGE_NAMES`
        order); rows sum to 1. The argmax is YASA's predicted stage.

    Raises
    ------
    FileNotFoundError, EDFError, ChannelError, SignalError
        As :func:`yasa_features`.

    Notes
    -----
    YASA picks its classifier from the leads it gets (EEG, EEG+EOG, EEG+EMG or EEG+EOG+EMG), so a
    missing EOG or EMG runs the matching shipped model. Its classifiers were trained with
    scikit-learn 0.24; the warning about unpickling them with a newer version is silenced.

    Examples
    --------
    >>> proba = yasa_predict_proba("data_samples/SYN0001.edf")  # doctest: +SKIP
    >>> stages = proba.argmax(axis=1)  # doctest: +SKIP
    """
    with verbose_scope(verbose):
        staging, _, path = _sleep_staging(edf_path, channel_map, exclude_kinds)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Trying to unpickle estimator")
            if hasattr(staging, "predict_proba"):  # YASA < 0.8
                table = staging.predict_proba()
            else:  # YASA >= 0.8: the Hypnogram carries the probabilities
                table = staging.predict().proba
    codes = [stage_code(c) for c in table.columns]
    if sorted(c for c in codes if c is not None) != list(range(len(STAGE_NAMES))):
        raise SignalError(f"{path.name}: YASA returned probability columns {list(table.columns)}; "
                          f"expected the five stages {list(STAGE_NAMES)}. Check the YASA version.")
    proba = np.zeros((len(table), len(STAGE_NAMES)), dtype=np.float64)
    for column, code in zip(table.columns, codes):
        proba[:, code] = table[column].to_numpy(dtype=np.float64)
    if n_epochs is None:
        return proba
    return fit_length(proba, n_epochs, fill=1.0 / len(STAGE_NAMES), record=path.name)


# --------------------------------------------------------------------------------------------------
# Lengths
# --------------------------------------------------------------------------------------------------
def fit_length(values, n_epochs: int, *, fill=None, record: str | None = None):
    """Pad or trim per-epoch values at the end to exactly ``n_epochs`` rows.

    YASA's tables have one row per whole 30-s epoch from the recording start; a caller's labels or
    stored epochs may count a trailing partial epoch, or be cut elsewhere. Epoch ``i`` stays epoch
    ``i``: rows are only added or removed at the end.

    Parameters
    ----------
    values : ndarray or DataFrame
        Per-epoch values, epochs along the first axis.
    n_epochs : int
        Number of rows wanted (>= 0).
    fill : scalar or array-like, optional
        Value of added rows (broadcast to a row). Default: -1 (unscored) for integer arrays, NaN
        for float arrays and DataFrames.
    record : str, optional
        File or record name used in the warning.

    Returns
    -------
    ndarray or DataFrame
        Same type, dtype and columns; a DataFrame gets the index 0..n_epochs-1 named ``epoch``.

    Raises
    ------
    InvalidParameterError
        If ``n_epochs`` is not a non-negative integer.

    Warns
    -----
    DataWarning
        When more than one epoch is added or removed: the two sides may not describe the same
        recording, or one of them was cut short.

    Examples
    --------
    >>> fit_length(np.array([0, 2, 2]), 4)
    array([ 0,  2,  2, -1])
    >>> fit_length(np.array([0, 2, 2]), 2)
    array([0, 2])
    """
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, (int, np.integer)) or n_epochs < 0:
        raise InvalidParameterError(f"'n_epochs' must be a non-negative integer, got {n_epochs!r}.")
    n_epochs = int(n_epochs)
    n = len(values)
    if abs(n - n_epochs) > 1:
        where = f"{record}: " if record else ""
        action = "padded" if n < n_epochs else "trimmed"
        warnings.warn(f"{where}{n} epochs {action} at the end to {n_epochs}; more than one epoch "
                      "differs, so check that both describe the same recording.", DataWarning,
                      stacklevel=2)
    if isinstance(values, pd.DataFrame):
        out = values.iloc[:n_epochs].reset_index(drop=True)
        out = out.reindex(pd.RangeIndex(n_epochs, name="epoch"),
                          fill_value=np.nan if fill is None else fill)
        out.attrs = dict(values.attrs)
        return out
    values = np.asarray(values)
    if n >= n_epochs:
        return values[:n_epochs].copy()
    if fill is None:
        fill = UNSCORED if values.dtype.kind in "iu" else np.nan
    pad = np.empty((n_epochs - n,) + values.shape[1:], dtype=values.dtype)
    pad[...] = fill
    return np.concatenate([values, pad])


# --------------------------------------------------------------------------------------------------
# YASA features + LightGBM, retrained
# --------------------------------------------------------------------------------------------------
def _check_number(name, value, *, integer, minimum, strict=True):
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and np.isfinite(value) and (
        value > minimum if strict else value >= minimum)
    if not ok:
        what = "an integer" if integer else "a number"
        raise InvalidParameterError(f"{name!r} must be {what} {'>' if strict else '>='} {minimum}, "
                                    f"got {value!r}.")


class YasaLightGBM(BaseEstimator):
    """YASA's features with a LightGBM classifier trained on your own nights.

    The retrained counterpart of YASA's shipped model: the same per-epoch features
    (:func:`yasa_features`), a gradient-boosted tree classifier fitted to the labels of the
    training subjects — AASM stages, 4 stage groups, or a binary per-epoch event target.

    Parameters
    ----------
    n_classes : int, default=5
        Number of classes; labels are 0..n_classes-1 (5: W, N1, N2, N3, REM; 4: W, light, deep,
        REM from :func:`sleepfm.vocab.group_stages` with ``"osf4"``; 2: a binary event target).
    n_estimators : int, default=300
        Boosting rounds.
    learning_rate : float, default=0.05
        Shrinkage of each tree.
    num_leaves : int, default=31
        Leaves per tree.
    class_weight : {"balanced"}, dict or None, default="balanced"
        ``"balanced"`` weights classes inversely to their frequency in the training labels (N1
        and REM are rare); a dict maps class → weight; ``None`` weights every epoch alike.
    seed : int, default=0
        Random seed of LightGBM.
    n_jobs : int, optional
        LightGBM threads; ``None`` uses LightGBM's default (all cores).

    Attributes
    ----------
    classes_ : ndarray of int
        ``0..n_classes-1``: the columns of :meth:`predict_proba`.
    present_classes_ : ndarray of int
        Classes seen in the training labels; the others get probability 0.
    feature_names_in_ : ndarray of str
        Feature columns used, in order.
    n_features_in_ : int
    n_epochs_fit_ : int
        Scored training epochs.
    model_ : lightgbm.LGBMClassifier or None
        The fitted classifier; ``None`` when the labels held a single class (predicted always).

    Notes
    -----
    Epochs labelled -1 (unscored) are left out of training. Each night's features keep YASA's
    within-night normalisation, so nights of different lengths and amplifiers can be pooled.

    Examples
    --------
    >>> model = YasaLightGBM(n_estimators=100).fit(train_features, train_stages)  # doctest: +SKIP
    >>> proba = model.predict_proba(test_features)  # list of [n_epochs, 5] # doctest: +SKIP
    """

    def __init__(self, *, n_classes: int = 5, n_estimators: int = 300, learning_rate: float = 0.05,
                 num_leaves: int = 31, class_weight="balanced", seed: int = 0,
                 n_jobs: int | None = None):
        self.n_classes = n_classes
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.class_weight = class_weight
        self.seed = seed
        self.n_jobs = n_jobs

    # ---- checks -----------------------------------------------------------------------------
    def _validate_params(self) -> None:
        _check_number("n_classes", self.n_classes, integer=True, minimum=2, strict=False)
        _check_number("n_estimators", self.n_estimators, integer=True, minimum=0)
        _check_number("learning_rate", self.learning_rate, integer=False, minimum=0)
        _check_number("num_leaves", self.num_leaves, integer=True, minimum=2, strict=False)
        if not (self.class_weight is None or self.class_weight == "balanced"
                or isinstance(self.class_weight, dict)):
            raise InvalidParameterError(f"'class_weight' must be 'balanced', a dict or None, got "
                                        f"{self.class_weight!r}.")
        _check_number("seed", self.seed, integer=True, minimum=0, strict=False)

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with YASA "
                f"features and labels of training nights before using '{method}'."
            )

    @staticmethod
    def _as_nights(features) -> tuple[list[pd.DataFrame], bool]:
        single = isinstance(features, (pd.DataFrame, np.ndarray))
        nights = [features] if single else list(features)
        if not nights:
            raise InvalidParameterError("no nights given; pass a DataFrame of YASA features or a "
                                        "list of them (one per night).")
        out = []
        for i, night in enumerate(nights):
            if isinstance(night, np.ndarray) and night.ndim == 2:
                night = pd.DataFrame(night, columns=[f"x{j}" for j in range(night.shape[1])])
            if not isinstance(night, pd.DataFrame):
                raise TypeError(f"night {i}: features must be a DataFrame (yasa_features) or a 2-D "
                                f"array, got {type(night).__name__}.")
            out.append(night)
        return out, single

    def _check_labels(self, labels, lengths: list[int], single: bool) -> list[np.ndarray]:
        if single:
            labels = [labels]
        labels = list(labels)
        if len(labels) != len(lengths):
            raise LabelError(f"{len(lengths)} nights of features but {len(labels)} label arrays; "
                             "pass one label array per night, in the same order.")
        out = []
        for i, (y, n) in enumerate(zip(labels, lengths)):
            y = np.asarray(y)
            if y.ndim != 1 or y.dtype.kind not in "iubf" or (
                    y.dtype.kind == "f" and not np.all(y == np.round(y))):
                raise LabelError(f"night {i}: labels must be a 1-D array of whole numbers, got "
                                 f"{y.dtype} with shape {y.shape}.")
            y = y.astype(np.int64)
            if len(y) != n:
                raise LabelError(
                    f"night {i}: {len(y)} labels for {n} epochs of features; align them first, "
                    "e.g. fit_length(labels, len(features)) (YASA drops a trailing partial epoch)."
                )
            bad = (y < UNSCORED) | (y >= self.n_classes)
            if np.any(bad):
                hint = (" Group AASM stages with sleepfm.vocab.group_stages(y, 'osf4') for 4 "
                        "classes, or set n_classes." if self.n_classes < 5 else "")
                raise LabelError(f"night {i}: label {y[bad][0]} is outside 0..{self.n_classes - 1} "
                                 f"and -1 (unscored) for n_classes={self.n_classes}.{hint}")
            out.append(y)
        return out

    def _frame(self, nights: list[pd.DataFrame], *, fitting: bool) -> pd.DataFrame:
        columns = list(nights[0].columns) if fitting else list(self.feature_names_in_)
        for i, night in enumerate(nights):
            missing = [c for c in columns if c not in night.columns]
            extra = [c for c in night.columns if c not in columns]
            if missing or (fitting and extra):
                raise InvalidParameterError(
                    f"night {i}: features differ from {'night 0' if fitting else 'training'} "
                    f"(missing {missing[:5]}, extra {extra[:5]}); compute every night's features "
                    "with the same channels and exclude_kinds."
                )
        frame = pd.concat([night[columns] for night in nights], ignore_index=True)
        return frame.astype(np.float32)

    # ---- estimator --------------------------------------------------------------------------
    def fit(self, features, labels) -> "YasaLightGBM":
        """Train on labelled nights.

        Parameters
        ----------
        features : DataFrame or list of DataFrame
            YASA features per night (:func:`yasa_features`), all with the same columns.
        labels : array-like of int, or list of them
            Per-epoch labels per night, 0..n_classes-1, -1 unscored (left out); same length as
            the night's features (see :func:`fit_length`).

        Returns
        -------
        self

        Raises
        ------
        InvalidParameterError
            A bad option, or nights whose feature columns differ.
        LabelError
            Labels of the wrong length or outside 0..n_classes-1, or no scored epoch at all.
        """
        import lightgbm

        self._validate_params()
        nights, single = self._as_nights(features)
        y = np.concatenate(self._check_labels(labels, [len(n) for n in nights], single))
        X = self._frame(nights, fitting=True)
        scored = y != UNSCORED
        if not scored.any():
            raise LabelError(f"none of the {len(y)} training epochs is scored (all -1); pass "
                             "labelled nights.")
        X, y = X[scored], y[scored]
        present = np.unique(y)
        absent = sorted(set(range(self.n_classes)) - set(present.tolist()))
        if absent:
            logger.warning("classes %s are absent from the %d training epochs; their "
                           "probability will be 0", absent, len(y))
        model = None
        if len(present) > 1:
            model = lightgbm.LGBMClassifier(
                n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                num_leaves=self.num_leaves, class_weight=self.class_weight,
                random_state=self.seed, n_jobs=self.n_jobs, verbose=-1)
            model.fit(X, y)
        else:
            warnings.warn(f"the training labels hold only class {present[0]}; the model predicts "
                          "it for every epoch.", DataWarning, stacklevel=2)
        self.model_ = model
        self.classes_ = np.arange(self.n_classes)
        self.present_classes_ = present
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.n_epochs_fit_ = int(len(y))
        logger.info("YasaLightGBM fitted on %d epochs of %d nights, %d features, classes %s",
                    len(y), len(nights), X.shape[1], present.tolist())
        return self

    def predict_proba(self, features):
        """Class probabilities per epoch.

        Parameters
        ----------
        features : DataFrame or list of DataFrame
            YASA features per night, with the training columns (extra columns are ignored).

        Returns
        -------
        ndarray of shape (n_epochs, n_classes), or a list of them
            One array per night (a single array for a single DataFrame); column ``k`` is class
            ``k``; classes absent from training are 0.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        InvalidParameterError
            If a night lacks a training feature column.
        """
        self._check_fitted("predict_proba")
        nights, single = self._as_nights(features)
        X = self._frame(nights, fitting=False)
        proba = np.zeros((len(X), self.n_classes), dtype=np.float64)
        if self.model_ is None:
            proba[:, self.present_classes_[0]] = 1.0
        elif len(X):
            proba[:, self.model_.classes_] = self.model_.predict_proba(X)
        out = np.split(proba, np.cumsum([len(n) for n in nights])[:-1])
        return out[0] if single else out

    def predict(self, features):
        """Most probable class per epoch.

        Parameters
        ----------
        features : DataFrame or list of DataFrame
            YASA features per night.

        Returns
        -------
        ndarray of int, or a list of them
            One array per night (a single array for a single DataFrame).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        self._check_fitted("predict")
        proba = self.predict_proba(features)
        if isinstance(proba, np.ndarray):
            return proba.argmax(axis=1)
        return [p.argmax(axis=1) for p in proba]

    def score(self, features, labels) -> float:
        """Accuracy over the scored epochs (labels != -1) of labelled nights.

        Parameters
        ----------
        features : DataFrame or list of DataFrame
        labels : array-like of int, or list of them

        Returns
        -------
        float
        """
        self._check_fitted("score")
        nights, single = self._as_nights(features)
        y = np.concatenate(self._check_labels(labels, [len(n) for n in nights], single))
        pred = self.predict(nights)
        pred = np.concatenate(pred)
        scored = y != UNSCORED
        return float(np.mean(pred[scored] == y[scored])) if scored.any() else float("nan")

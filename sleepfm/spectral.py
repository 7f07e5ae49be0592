"""Per-epoch spectral and time-domain features of EEG, EOG and EMG: what YASA-style staging uses.

For every 30 s epoch and every channel: log absolute and relative power in the classic bands
(:data:`BANDS`: delta, theta, alpha, sigma, beta), log power above beta, and time-domain
statistics (log standard deviation, skewness, log kurtosis, zero-crossing rate, Hjorth mobility
and complexity). Channels of one kind (EEG, EOG, EMG) are averaged, so a night gives a fixed
vector per epoch whatever its montage. Optionally (``context=True``) each feature also comes
smoothed over the neighbouring epochs (a centred triangular window of 7.5 min and the mean of
the past 2 min, as in YASA; Vallat & Walker, 2021), and (``normalise=True``) each feature is
also given robustly standardised within the night.

These functions take arrays and return arrays; :mod:`sleepfm.stages.features` computes them
from the records of a run's store.

Gains
-----
Each channel is first divided by its robust spread over the night (IQR / 1.349), so every
feature is invariant to the amplifier gain and to a constant offset of a channel. The store is
already standardised this way per channel (:func:`sleepfm.preprocess.robust_zscore`); what
survives that standardisation, and what these features describe, is the *shape* of the signal
and how its power moves from epoch to epoch relative to the night's typical amplitude.

Examples
--------
>>> import numpy as np
>>> fs = 128.0
>>> t = np.arange(int(4 * 30 * fs)) / fs
>>> eeg = np.sin(2 * np.pi * 10 * t)[None]          # one channel, 4 epochs of 10 Hz alpha
>>> values, names = spectral_features({"eeg": eeg}, fs, kinds=("eeg",), context=False,
...                                   normalise=False)
>>> values.shape, names[:2]
((4, 17), ['eeg_abs_delta', 'eeg_abs_theta'])
>>> round(float(values[0, names.index("eeg_rel_alpha")]), 2)
1.0
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import signal

from .exceptions import InvalidParameterError, SignalError
from .utils import check_option
from .vocab import EPOCH_S

#: Frequency bands in Hz (low inclusive, high exclusive).
BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0), "sigma": (12.0, 16.0),
    "beta": (16.0, 30.0),
}
#: Above beta, up to the store's anti-alias corner (EMG tone, arousals, movement).
HIGH_BAND: tuple[float, float] = (30.0, 45.0)
#: The channel kinds features are computed for, in this order.
SPECTRAL_KINDS: tuple[str, ...] = ("eeg", "eog", "emg")
#: Time-domain statistics per channel.
TIME_FEATURES: tuple[str, ...] = ("logstd", "skew", "logkurt", "zcr", "hmob", "hcomp")
#: Version of the feature definitions; heads record it, so a change makes them out of date.
SPECTRAL_VERSION = 1
#: Welch segment length in seconds (4 s: 0.25 Hz resolution; 2 s at most for short inputs).
WELCH_S = 4.0
#: Context windows in epochs: centred triangular (15 epochs = 7.5 min) and past mean (4 = 2 min).
CENTRED_EPOCHS, PAST_EPOCHS = 15, 4


def _channel_base_names() -> list[str]:
    return ([f"abs_{b}" for b in BANDS] + ["abs_high"] + [f"rel_{b}" for b in BANDS]
            + list(TIME_FEATURES))


def feature_names(kinds=SPECTRAL_KINDS, *, context: bool = True,
                  normalise: bool = True) -> list[str]:
    """Names of the columns :func:`spectral_features` returns, in order.

    Parameters
    ----------
    kinds : sequence of str, default=SPECTRAL_KINDS
    context, normalise : bool, default=True
        As in :func:`spectral_features`.

    Returns
    -------
    list of str
        ``<kind>_<feature>`` (e.g. ``eeg_rel_delta``), then the same with ``_c`` (centred
        context) and ``_p`` (past context) when ``context``, then all of those with ``_nz``
        (within-night standardised) when ``normalise``.
    """
    base = [f"{k}_{f}" for k in kinds for f in _channel_base_names()]
    if context:
        base = base + [f"{n}_c" for n in base] + [f"{n}_p" for n in base]
    if normalise:
        base = base + [f"{n}_nz" for n in base]
    return base


def _epochs(x: np.ndarray, fs: float, n_epochs: int | None) -> np.ndarray:
    """``[n_channels, n_epochs, samples_per_epoch]`` view of whole 30 s epochs."""
    per = round(EPOCH_S * fs)
    available = x.shape[-1] // per
    n = available if n_epochs is None else int(n_epochs)
    if n > available:
        raise SignalError(f"{x.shape[-1] / fs:.1f} s of signal hold {available} whole 30 s "
                          f"epochs, but {n} were asked for.")
    return x[:, :n * per].reshape(x.shape[0], n, per)


def band_powers(x, fs: float, *, bands: Mapping[str, tuple[float, float]] | None = None,
                n_epochs: int | None = None) -> np.ndarray:
    """Absolute power per 30 s epoch and band (Welch periodogram, Hann windows of 4 s, 50 %
    overlap, integrated over the band).

    Parameters
    ----------
    x : array-like, shape (n_samples,) or (n_channels, n_samples)
        Signal in its own units (e.g. µV).
    fs : float
        Sampling rate in Hz.
    bands : mapping of str to (low, high), optional
        Bands in Hz (default :data:`BANDS`); ``high`` must be below the Nyquist frequency.
    n_epochs : int, optional
        Epochs to return (default: every whole 30 s epoch; a trailing partial one is dropped).

    Returns
    -------
    ndarray, shape (n_epochs, n_bands) or (n_channels, n_epochs, n_bands)
        Power in squared signal units: a sine of amplitude ``A`` inside a band gives ``A² / 2``.

    Raises
    ------
    SignalError
        A band beyond the Nyquist frequency, or fewer samples than the epochs asked for.
    """
    bands = dict(BANDS if bands is None else bands)
    arr = np.asarray(x, dtype=np.float64)
    single = arr.ndim == 1
    arr = arr[None] if single else arr
    if arr.ndim != 2:
        raise SignalError(f"expected [n_samples] or [n_channels, n_samples], got shape "
                          f"{np.shape(x)}.")
    freqs, psd = _epoch_psd(_epochs(arr, fs, n_epochs), fs)
    out = np.stack([_integrate(freqs, psd, lo, hi, fs) for lo, hi in bands.values()], axis=-1)
    return out[0] if single else out


def _epoch_psd(epochs: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    nperseg = min(round(WELCH_S * fs), epochs.shape[-1])
    return signal.welch(epochs, fs=fs, window="hann", nperseg=nperseg, noverlap=nperseg // 2,
                        detrend="constant", axis=-1)


def _integrate(freqs, psd, lo: float, hi: float, fs: float) -> np.ndarray:
    if hi > fs / 2 + 1e-9:
        raise SignalError(f"band {lo:g}-{hi:g} Hz reaches beyond the Nyquist frequency "
                          f"({fs / 2:g} Hz) of a {fs:g} Hz signal.")
    sel = (freqs >= lo) & (freqs < hi)
    return psd[..., sel].sum(axis=-1) * (freqs[1] - freqs[0])


def _robust_scale(x: np.ndarray) -> np.ndarray:
    """Each channel divided by its spread over the night (IQR / 1.349, else its SD)."""
    q1, q3 = np.percentile(x, [25, 75], axis=-1, keepdims=True)
    scale = (q3 - q1) / 1.349
    sd = x.std(axis=-1, keepdims=True)
    scale = np.where(scale > 0, scale, sd)
    if np.any(scale <= 1e-12):
        raise SignalError("a channel is flat (no variation), so its features are undefined; "
                          "leave it out.")
    return (x - np.median(x, axis=-1, keepdims=True)) / scale


def _channel_features(epochs: np.ndarray, fs: float) -> np.ndarray:
    """``[n_channels, n_epochs, F]`` features of robustly scaled epochs."""
    eps = 1e-10
    freqs, psd = _epoch_psd(epochs, fs)
    top = min(HIGH_BAND[1], fs / 2)
    powers = np.stack([_integrate(freqs, psd, lo, hi, fs) for lo, hi in BANDS.values()], -1)
    high = _integrate(freqs, psd, HIGH_BAND[0], top, fs)[..., None]
    rel = powers / (powers.sum(axis=-1, keepdims=True) + eps)
    # Time-domain moments in float32 (the signals are standardised: values of order 1).
    centred = (epochs - epochs.mean(axis=-1, keepdims=True)).astype(np.float32)
    sq = centred * centred
    var = sq.mean(axis=-1, dtype=np.float64) + eps
    skew = (sq * centred).mean(axis=-1, dtype=np.float64) / var ** 1.5
    kurt = (sq * sq).mean(axis=-1, dtype=np.float64) / var ** 2
    signs = np.signbit(centred)
    zcr = (signs[..., 1:] != signs[..., :-1]).mean(axis=-1)
    d1 = np.diff(centred, axis=-1)
    d2 = np.diff(d1, axis=-1)
    v1 = d1.var(axis=-1, dtype=np.float64)
    mob = np.sqrt(v1 / var)
    comp = np.sqrt(d2.var(axis=-1, dtype=np.float64) / (v1 + eps)) / (mob + eps)
    time = np.stack([0.5 * np.log10(var), skew, np.log10(kurt), zcr, mob, comp], -1)
    return np.concatenate([np.log10(powers + eps), np.log10(high + eps), rel, time], axis=-1)


def _smooth(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred triangular and past rolling means over epochs (edges use what exists)."""
    n = values.shape[0]
    half = CENTRED_EPOCHS // 2
    tri = np.bartlett(CENTRED_EPOCHS + 2)[1:-1]
    centred = np.empty_like(values)
    past = np.empty_like(values)
    csum = np.cumsum(np.vstack([np.zeros((1, values.shape[1])), values]), axis=0)
    for i in range(n):
        a, b = max(0, i - half), min(n, i + half + 1)
        w = tri[a - i + half:b - i + half]
        centred[i] = w @ values[a:b] / w.sum()
        p = max(0, i - PAST_EPOCHS + 1)
        past[i] = (csum[i + 1] - csum[p]) / (i + 1 - p)
    return centred, past


def _night_standardise(values: np.ndarray) -> np.ndarray:
    q1, med, q3 = np.percentile(values, [25, 50, 75], axis=0)
    scale = (q3 - q1) / 1.349
    sd = values.std(axis=0)
    scale = np.where(scale > 1e-9, scale, np.where(sd > 1e-9, sd, 1.0))
    return (values - med) / scale


def spectral_features(signals: Mapping[str, np.ndarray], fs: float, *, kinds=SPECTRAL_KINDS,
                      n_epochs: int | None = None, context: bool = True,
                      normalise: bool = True) -> tuple[np.ndarray, list[str]]:
    """Per-epoch spectral and time-domain features of a night, per channel kind.

    Parameters
    ----------
    signals : mapping of str to array-like
        ``{kind: [n_channels, n_samples]}`` (or ``[n_samples]`` for one channel), all at ``fs``
        and starting at the same time; kinds are ``eeg``, ``eog`` and ``emg``.
    fs : float
        Sampling rate in Hz (at least 60 Hz, for the bands up to 30 Hz).
    kinds : sequence of str, default=SPECTRAL_KINDS
        Kinds to describe, in this order; each must be in ``signals``.
    n_epochs : int, optional
        Epochs to describe (default: every whole 30 s epoch of the shortest kind).
    context : bool, default=True
        Also give each feature averaged over neighbouring epochs (centred triangular window of
        15 epochs, and the mean of the current and 3 previous epochs).
    normalise : bool, default=True
        Also give every feature robustly standardised within the night (minus its median,
        over its IQR / 1.349).

    Returns
    -------
    values : ndarray of float32, shape (n_epochs, n_features)
        Finite values; columns as :func:`feature_names`.
    names : list of str

    Raises
    ------
    InvalidParameterError
        A kind outside :data:`SPECTRAL_KINDS`, or a kind asked for but not given.
    SignalError
        Too low a sampling rate, signals shorter than one epoch (or than ``n_epochs``), a flat
        channel, or non-finite samples.

    Notes
    -----
    Every feature is invariant to a positive gain and a constant offset of any channel (each
    channel is robustly standardised over the night first). Channels of a kind are averaged
    (log powers: a geometric mean), so the features do not depend on how many leads a montage
    has.
    """
    kinds = tuple(kinds)
    for kind in kinds:
        check_option("kind", kind, SPECTRAL_KINDS)
    missing = [k for k in kinds if k not in signals]
    if missing:
        raise InvalidParameterError(f"no {', '.join(missing)} signal given; features of "
                                    f"{list(kinds)} need a channel of each.")
    if not fs >= 2 * BANDS["beta"][1]:
        raise SignalError(f"{fs:g} Hz is too slow for the bands up to {BANDS['beta'][1]:g} Hz; "
                          f"resample to at least {2 * BANDS['beta'][1]:g} Hz.")
    arrays = {}
    for kind in kinds:
        arr = np.asarray(signals[kind], dtype=np.float64)
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise SignalError(f"{kind}: expected [n_channels, n_samples], got shape "
                              f"{np.shape(signals[kind])}.")
        if not np.all(np.isfinite(arr)):
            raise SignalError(f"{kind}: {int((~np.isfinite(arr)).sum())} samples are NaN or "
                              "infinite.")
        arrays[kind] = arr
    per = round(EPOCH_S * fs)
    if n_epochs is None:
        n_epochs = min(a.shape[-1] for a in arrays.values()) // per
    if n_epochs < 1:
        raise SignalError(f"less than one {EPOCH_S:g} s epoch of signal.")
    blocks = [_channel_features(_epochs(_robust_scale(arrays[k]), fs, n_epochs), fs).mean(axis=0)
              for k in kinds]
    values = np.concatenate(blocks, axis=1)
    if context:
        centred, past = _smooth(values)
        values = np.concatenate([values, centred, past], axis=1)
    if normalise:
        values = np.concatenate([values, _night_standardise(values)], axis=1)
    return values.astype(np.float32), feature_names(kinds, context=context, normalise=normalise)

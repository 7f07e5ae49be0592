"""Signal preprocessing: zero-phase anti-alias filter, resampling to 128 Hz, robust z-score.

Per channel: a zero-phase Butterworth low-pass (forward-backward, so no phase shift) below the new
Nyquist frequency is applied before any down-sampling; integer ratios are then decimated by taking
every q-th sample, other ratios go through a polyphase resampler; slow channels (SpO2, belts) are
up-sampled by polyphase interpolation. Each channel is then centred on its median and scaled by its
inter-quartile range (a z-score that artefact spikes do not inflate) and clipped.

These functions take arrays and a :class:`~sleepfm.config.PreprocessConfig` and return arrays;
:mod:`sleepfm.stages.preprocess` applies them to files. The filter works in overlapping blocks, so
memory stays bounded by a few copies of one channel.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal

from .config import PreprocessConfig
from .exceptions import SignalError

MAX_POLYPHASE_UP = 8
BLOCK = 1 << 18  # samples filtered or interpolated at a time


def _lowpass_sos(fs: float, config: PreprocessConfig) -> np.ndarray:
    cutoff = config.cutoff_ratio * config.sample_rate / 2
    return signal.butter(config.filter_order, cutoff, btype="low", fs=fs, output="sos")


def _padlen(sos: np.ndarray) -> int:
    # The edge padding scipy.signal.sosfiltfilt uses by default.
    n_zeros = min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * (2 * len(sos) + 1 - n_zeros)


def zero_phase_lowpass(x: np.ndarray, sos: np.ndarray, *, step: int = 1, block: int = BLOCK,
                       overwrite_x: bool = False) -> np.ndarray:
    """Forward-backward SOS filter in blocks, keeping every ``step``-th output sample.

    Equivalent to ``scipy.signal.sosfiltfilt(sos, x)[::step]`` (same odd-extension edge padding
    and initial conditions) but streams both passes block by block with the filter state carried
    across, so no float64 copy of the whole signal is made; with ``overwrite_x`` the forward pass
    is stored in ``x`` itself (float32), so the only new full-length array is the output.
    """
    n = len(x)
    pad = min(_padlen(sos), n - 1)
    zi0 = signal.sosfilt_zi(sos)
    head = 2 * x[0] - x[pad:0:-1]
    tail = 2 * x[-1] - x[-2:-pad - 2:-1]
    # Forward pass over [odd extension | x | odd extension]; only its state matters for the head.
    _, zi = signal.sosfilt(sos, head, zi=zi0 * head[0])
    fwd = x if overwrite_x and x.dtype == np.float32 else np.empty(n, dtype=np.float32)
    for a in range(0, n, block):
        fwd[a:a + block], zi = signal.sosfilt(sos, x[a:a + block], zi=zi)
    fwd_tail, _ = signal.sosfilt(sos, tail, zi=zi)
    # Backward pass from the end of the tail, keeping the samples that survive decimation.
    _, zi = signal.sosfilt(sos, fwd_tail[::-1], zi=zi0 * fwd_tail[-1])
    out = np.empty(-(-n // step), dtype=np.float32)
    end = n
    while end > 0:
        start = max(end - block, 0)
        seg, zi = signal.sosfilt(sos, fwd[end - 1:start - 1 if start > 0 else None:-1], zi=zi)
        seg = seg[::-1]  # samples start..end-1 in time order
        first = -(-start // step) * step  # first kept index >= start
        out[first // step:(end - 1) // step + 1] = seg[first - start::step]
        end = start
    return out


def resample(x: np.ndarray, fs: float, config: PreprocessConfig | None = None,
             *, n_out: int | None = None, overwrite_x: bool = False) -> np.ndarray:
    """Bring one channel from ``fs`` to ``config.sample_rate`` (float32).

    Down-sampling applies :func:`zero_phase_lowpass` first (integer ratios keep every q-th
    filtered sample; other ratios then go through a polyphase resampler); up-sampling uses
    polyphase interpolation, or linear interpolation beyond a ratio of ``MAX_POLYPHASE_UP``. The
    output has exactly ``n_out`` samples (default ``round(len(x) * new / fs)``), the last sample
    repeated if the resampler comes up short.
    ``overwrite_x`` lets the filter use ``x`` (float32) as scratch space.
    """
    config = config or PreprocessConfig()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or len(x) < 2:
        raise SignalError(f"expected a 1-D signal of at least 2 samples, got shape {x.shape}.")
    if not np.isfinite(fs) or fs <= 0:
        raise SignalError(f"sampling rate {fs!r} Hz is not a positive number.")
    new = config.sample_rate
    n_out = int(round(len(x) * new / fs)) if n_out is None else n_out
    ratio = Fraction(new / fs).limit_denominator(1000)
    if ratio == 1:
        y = x
    elif fs > new and ratio.numerator == 1:
        y = zero_phase_lowpass(x, _lowpass_sos(fs, config), step=ratio.denominator,
                               overwrite_x=overwrite_x)
    elif new / fs > MAX_POLYPHASE_UP:
        # Slow channels (SpO2, heart rate at 1 Hz) are step-like: linear interpolation keeps their
        # values, where a polyphase interpolator would ring around every step. In blocks, so no
        # float64 copy of the whole output is made.
        y = np.empty(n_out, dtype=np.float32)
        xp = np.arange(len(x))
        for a in range(0, n_out, BLOCK):
            y[a:a + BLOCK] = np.interp(np.arange(a, min(a + BLOCK, n_out)) * (fs / new), xp, x)
    else:
        if fs > new:
            x = zero_phase_lowpass(x, _lowpass_sos(fs, config), overwrite_x=overwrite_x)
        y = signal.resample_poly(x, ratio.numerator, ratio.denominator, padtype="line")
    if len(y) < n_out:
        y = np.concatenate([y, np.full(n_out - len(y), y[-1], dtype=y.dtype)])
    return np.ascontiguousarray(y[:n_out], dtype=np.float32)


def robust_zscore(x: np.ndarray, *, clip: float | None = 20.0,
                  overwrite_x: bool = False) -> tuple[np.ndarray, float, float]:
    """Centre on the median, scale by IQR/1.349 (the SD of a Gaussian), clip to ±``clip``
    (``overwrite_x``: a float32 ``x`` is standardised in place, with the same result).

    Returns
    -------
    z, center, scale

    Raises
    ------
    SignalError
        Non-finite values, or a flat signal (no spread to scale by).
    """
    if not np.all(np.isfinite(x)):
        raise SignalError(f"signal holds {int((~np.isfinite(x)).sum())} non-finite values (NaN/inf).")
    q1, center, q3 = np.percentile(x, [25, 50, 75])
    scale = (q3 - q1) / 1.349
    if not scale > 0:
        scale = float(np.std(x))
    if not scale > 1e-12:
        raise SignalError("signal is flat (no variation), so it cannot be standardised.")
    if overwrite_x and x.dtype == np.float32:
        z = x
        z -= np.float32(center)
    else:
        z = x - np.float32(center)
    z *= np.float32(1 / scale)
    if clip is not None:
        np.clip(z, -clip, clip, out=z)
    return z.astype(np.float32, copy=False), float(center), float(scale)


def preprocess_signal(x: np.ndarray, fs: float, config: PreprocessConfig | None = None,
                      *, n_out: int | None = None, overwrite_x: bool = False) -> np.ndarray:
    """Filter, resample to ``config.sample_rate`` and robustly standardise one channel
    (``overwrite_x``: ``x`` may be used as scratch space)."""
    config = config or PreprocessConfig()
    if not np.all(np.isfinite(x)):
        raise SignalError(f"signal holds {int((~np.isfinite(x)).sum())} non-finite values (NaN/inf).")
    if len(x) and np.ptp(x) == 0:  # before resampling, whose edge ripple would look like signal
        raise SignalError("signal is flat (no variation), so it cannot be standardised.")
    y = resample(x, fs, config, n_out=n_out, overwrite_x=overwrite_x)
    own = overwrite_x or not np.may_share_memory(x, y)
    del x  # the native-rate signal is not needed any more: freed before standardising
    return robust_zscore(y, clip=config.clip, overwrite_x=own)[0]

"""Synthetic polysomnography with known sleep stages and respiratory events.

:func:`generate_night` builds one night (or nap) of multi-channel PSG whose signals depend on the
sleep stage the way real recordings do, so that staging models trained on real data recognise the
stages. Everything is derived from a seed: the same seed gives bit-identical arrays.

What is modelled, per 30 s epoch and stage (W, N1, N2, N3, REM coded 0-4):

- EEG: an aperiodic 1/f^beta background whose exponent and power grow from W to N3, synthesised in
  4 s overlap-added frames so the spectrum follows the stage smoothly; occipital alpha while the
  eyes are closed in W; theta in N1/REM; vertex waves in N1; spindles and K-complexes in N2;
  trains of large 0.5-2 Hz slow waves in N3 (more early in the night); sawtooth waves in REM;
  alpha/beta bursts during arousals; muscle activity leaking into W. Leads share sources
  (global, hemisphere, region) so they are correlated, with region-specific weights.
- EOG: frontal EEG leaking into both leads, slow rolling eye movements at sleep onset, rapid eye
  movements (opposite polarity in E1 and E2) in REM and W, blinks in W.
- EMG: chin tone high in W, lower in NREM, atonic in REM with phasic twitches; leg EMG with
  periodic limb movements in subjects who have them.
- ECG: PQRST morphology with stage-dependent heart rate, respiratory sinus arrhythmia, slower
  heart-rate variability and event-related changes.
- Respiration: thermistor airflow, nasal pressure, thorax and abdomen belts, SpO2; obstructive
  and central apneas, hypopneas, arousals after events and lagged desaturations.

Sampling rates are set per channel kind; all values are float64 in physical units (uV for
electrical signals, % for SpO2, arbitrary units for respiration). Stages, subject facts (age, sex,
AHI, alpha frequency, spindle density, ...), events and per-epoch scoring evidence (slow-wave
amount, spindles, arousals...: :data:`EVIDENCE_COLUMNS`) are returned with the signals.

Realism is measured, not assumed: YASA's pre-trained staging model (``yasa.SleepStaging`` on
C4-M1, E1-M2 and Chin, trained on real PSG) reaches about 0.93 accuracy and Cohen's kappa 0.90 on
20 generated 8-h nights (``tests/test_synthetic.py`` checks >= 0.70 on three 3-h nights). Cost:
an 8-h clinical-montage night takes about 5 s on one CPU core and ~0.7 GB as float64.

Examples
--------
>>> from sleepfm.synthetic import SyntheticConfig, generate_night
>>> night = generate_night(SyntheticConfig(duration_h=0.5, montage="staging"), seed=1)
>>> night.channel_names, len(night.stages)
(['C4-M1', 'E1-M2', 'Chin'], 60)
"""
from __future__ import annotations

import logging
import math
import re
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import fft
from scipy import signal as sps
from scipy import special

from .channels import normalize_name
from .exceptions import DataWarning, SignalError
from .io.edf_write import write_edf
from .io.labels import Hypnogram, write_events_csv
from .utils import check_option, check_type
from .vocab import EPOCH_S, SEVERITY_NAMES, SEVERITY_THRESHOLDS, ahi, sleep_hours

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("eeg", "eog", "emg", "ecg", "resp", "spo2")
DEFAULT_SAMPLE_RATES: dict[str, float] = {
    "eeg": 256.0, "eog": 256.0, "emg": 256.0, "ecg": 256.0, "resp": 32.0, "spo2": 1.0,
}
UNITS: dict[str, str] = {
    "eeg": "uV", "eog": "uV", "emg": "uV", "ecg": "uV", "resp": "a.u.", "spo2": "%",
}
#: AHI range drawn from for each severity grade (the most severe grade capped at 60 events/h).
SEVERITY_RANGES: dict[str, tuple[float, float]] = dict(zip(
    SEVERITY_NAMES, zip((0.0, *SEVERITY_THRESHOLDS), (*SEVERITY_THRESHOLDS, 60.0))))

_W, _N1, _N2, _N3, _REM = range(5)
_MIN_RATES = {"eeg": 50.0, "eog": 50.0, "emg": 50.0, "ecg": 50.0, "resp": 1.0, "spo2": 0.1}
_CTRL_FS = 10.0  # rate of the slow control signals (stage curves, phases, envelopes)

_CLINICAL = [
    ("C3-M2", "eeg"), ("C4-M1", "eeg"), ("F3-M2", "eeg"), ("F4-M1", "eeg"),
    ("O1-M2", "eeg"), ("O2-M1", "eeg"),
    ("E1-M2", "eog"), ("E2-M1", "eog"),
    ("Chin", "emg"), ("Leg L", "emg"), ("Leg R", "emg"),
    ("ECG", "ecg"),
    ("Airflow", "resp"), ("Nasal Pressure", "resp"), ("Thorax", "resp"), ("Abdomen", "resp"),
    ("SpO2", "spo2"),
]
MONTAGES: dict[str, list[tuple[str, str]]] = {
    "clinical": _CLINICAL,
    "eeg": _CLINICAL[:6],
    "staging": [("C4-M1", "eeg"), ("E1-M2", "eog"), ("Chin", "emg")],
    "cohort": [("C4-M1", "eeg"), ("E1-M2", "eog"), ("Chin", "emg"), ("ECG", "ecg"),
               ("Airflow", "resp"), ("SpO2", "spo2")],
    "sleep_edf": [("EEG Fpz-Cz", "eeg"), ("EEG Pz-Oz", "eeg"), ("EOG horizontal", "eog"),
                  ("EMG submental", "emg")],
}
"""Montage name -> ``[(channel name, kind), ...]``; kinds are those of :data:`KINDS`."""

#: Columns of :attr:`SyntheticNight.evidence`, one row per 30 s epoch, for simulated scorers
#: (:mod:`sleepfm.synthetic_sites`); taken from the generator's plan and, for slow waves, from a
#: frontal lead synthesised for the purpose (not from the recorded channels):
#:
#: - ``so_fraction``: fraction of the epoch in which the 0.5-2 Hz activity of a frontal lead
#:   (F4-M1 model, slow-wave trains and background delta) swings >= 75 uV peak to peak: the
#:   quantity of the AASM 20 % rule for N3;
#: - ``spindles``, ``kcomplexes``: sleep spindles and K-complexes centred in the epoch;
#: - ``arousal``: fraction of the epoch inside an arousal;
#: - ``eyes_closed``: fraction of the epoch with the eyes closed (matters in W: alpha);
#: - ``rem_bursts``: expected number of rapid-eye-movement bursts in the epoch.
EVIDENCE_COLUMNS: tuple[str, ...] = ("so_fraction", "spindles", "kcomplexes", "arousal",
                                     "eyes_closed", "rem_bursts")
_SO_PP_UV = 75.0  # peak-to-peak amplitude of an AASM slow wave, uV
_SCORING_FS = 50.0  # rate of the frontal lead the slow-wave evidence is measured on

# ---------------------------------------------------------------------------------------------
# Stage physiology: one value per stage (W, N1, N2, N3, REM). EEG values describe a central lead
# (C4-M1) of an average subject; subject factors and lead weights scale them.
# ---------------------------------------------------------------------------------------------
_EEG_P1 = (30.0, 55.0, 150.0, 400.0, 50.0)  # aperiodic PSD at 1 Hz, uV^2/Hz
_EEG_EXPONENT = (1.2, 1.6, 2.0, 2.4, 1.6)  # aperiodic exponent beta
_EEG_KNEE = (0.4, 0.5, 0.6, 0.7, 0.5)  # knee frequency of the aperiodic part, Hz
_ALPHA = (12.0, 2.4, 0.7, 0.35, 1.2)  # occipital alpha peak, uV^2/Hz (eyes closed in W)
_THETA = (1.0, 3.6, 1.8, 1.2, 3.0)  # theta peak at ~6 Hz, uV^2/Hz
_BETA = (0.5, 0.14, 0.025, 0.01, 0.12)  # beta bump at ~20 Hz, uV^2/Hz
_SIGMA = (0.0, 0.1, 1.0, 0.4, 0.0)  # continuous sigma activity at the spindle frequency, uV^2/Hz
_SPINDLE_RATE = (0.0, 0.1, 1.0, 0.4, 0.0)  # x subject spindle density (per minute)
_KC_RATE = (0.0, 0.3, 1.5, 0.6, 0.0)  # per minute
_SO_DUTY = (0.0, 0.0, 0.06, 0.45, 0.0)  # fraction of time covered by slow-wave trains
_SAW_DUTY = (0.0, 0.0, 0.0, 0.0, 0.06)  # fraction of time covered by sawtooth trains
_VERTEX_RATE = (0.0, 2.0, 0.3, 0.0, 0.0)  # per minute
_CHIN_TONE = (1.0, 0.6, 0.45, 0.4, 0.12)  # x subject chin tone
_SEM = (0.0, 1.0, 0.15, 0.0, 0.0)  # slow eye movements (W before sleep handled apart)
_REM_BURSTS = (0.0, 0.0, 0.0, 0.0, 1.0)  # x subject REM burst density
_HR_FACTOR = (1.08, 1.03, 1.0, 0.95, 1.04)
_RSA = (0.6, 0.8, 1.0, 1.1, 0.6)
_HRV_LF = (2.5, 2.0, 1.2, 0.8, 3.0)  # bpm, slow heart-rate fluctuations
_BR_RATE = (1.08, 1.0, 0.97, 0.95, 1.08)
_BR_RATE_VAR = (0.12, 0.10, 0.05, 0.03, 0.15)
_BR_AMP = (1.0, 0.9, 0.85, 0.9, 0.8)
_BR_AMP_VAR = (0.2, 0.15, 0.07, 0.05, 0.2)
_THORAX_SHARE = (1.0, 1.0, 1.0, 1.0, 0.7)  # intercostal atonia in REM
_EVENT_WEIGHT = (0.0, 1.0, 1.0, 0.4, 2.0)  # where respiratory events happen
_AROUSAL_WEIGHT = (0.0, 1.0, 1.0, 0.3, 1.0)  # where spontaneous arousals happen


@dataclass
class SyntheticConfig:
    """What to generate; every field is keyword and has a default.

    Parameters
    ----------
    duration_h : float, default=8.0
        Recording length in hours; ``duration_h * 3600`` must be a whole number of 30 s epochs
        (a 30-min nap is ``0.5``).
    montage : str, default='clinical'
        Key of :data:`MONTAGES`. ``'clinical'`` is 6 EEG + 2 EOG + chin and 2 leg EMG + ECG +
        airflow, nasal pressure, thorax, abdomen and SpO2.
    ahi : float, optional
        Apnea-hypopnea index (events per hour of sleep). ``None`` draws one per subject, from
        ``severity`` when given, else from a clinical-population mix.
    severity : {'none', 'mild', 'moderate', 'severe'}, optional
        Range to draw the AHI from when ``ahi`` is ``None``.
    artefact_rate : float, default=0.0
        Artefacts (movement bursts, electrode pops, sweat drifts, line noise) per hour.
    sample_rates : dict of str to float, optional
        Overrides of :data:`DEFAULT_SAMPLE_RATES` by channel kind, e.g. ``{"eeg": 512}``. Each
        rate times 30 s must be a whole number of samples.
    line_freq : float, default=50.0
        Mains frequency of line-noise artefacts, Hz.
    age : float, optional
        Age in years of every subject; ``None`` draws one per subject.
    sex : {'M', 'F'}, optional
        Sex of every subject; ``None`` draws one per subject.
    age_range : tuple of (float, float), optional
        When ``age`` is ``None``, draw each subject's age uniformly from this range (years)
        instead of the default clinical mix (normal, mean 48, SD 15, clipped to 18-85).
    severity_mix : tuple of 4 floats, optional
        When ``ahi`` and ``severity`` are ``None``, the probabilities of the severity grades
        none, mild, moderate and severe (normalised to sum to 1); default ``(0.4, 0.3, 0.2,
        0.1)``.
    fragmentation : float, default=1.0
        Multiplies each subject's wake-after-sleep-onset propensity and spontaneous arousal
        index: above 1 gives more awakenings, N1 and arousals (fragmented sleep).
    n3_scale : float, default=1.0
        Multiplies each subject's amount of N3 (below 1: less slow-wave sleep).
    """

    duration_h: float = 8.0
    montage: str = "clinical"
    ahi: float | None = None
    severity: str | None = None
    artefact_rate: float = 0.0
    sample_rates: dict[str, float] | None = None
    line_freq: float = 50.0
    age: float | None = None
    sex: str | None = None
    age_range: tuple[float, float] | None = None
    severity_mix: tuple[float, float, float, float] | None = None
    fragmentation: float = 1.0
    n3_scale: float = 1.0

    def rates(self) -> dict[str, float]:
        """Sampling rate of every kind, defaults merged with :attr:`sample_rates`."""
        return {**DEFAULT_SAMPLE_RATES, **{k: float(v) for k, v in (self.sample_rates or {}).items()}}


@dataclass
class SyntheticNight:
    """One generated recording with its ground truth.

    Attributes
    ----------
    record_id : str
    signals : dict of str to ndarray
        Channel name -> float64 samples in physical units (:attr:`units`).
    sample_rates : dict of str to float
        Channel name -> Hz.
    units : dict of str to str
        Channel name -> unit (``uV``, ``%`` or ``a.u.``).
    stages : ndarray of int8
        One stage per 30 s epoch from t=0 (0=W, 1=N1, 2=N2, 3=N3, 4=REM).
    events : pandas.DataFrame
        Columns ``onset``, ``duration`` (seconds) and ``type`` (one of :data:`EVENT_TYPES`).
    subject : dict
        Subject-level facts (``subject_id``, ``age``, ``sex``, ``ahi``, ``severity``, ...) and a
        few night-level ones (``tst_h``, ``ahi_generated``).
    kinds : dict of str to str
        Channel name -> kind (``eeg``, ``eog``, ``emg``, ``ecg``, ``resp``, ``spo2``).
    artefacts : pandas.DataFrame
        Injected artefacts: ``onset``, ``duration``, ``type``, ``channel`` (``'*'`` = several).
    evidence : pandas.DataFrame
        What a human scorer would see in each epoch, from the generator's plan: one row per
        epoch, the columns of :data:`EVIDENCE_COLUMNS` (described there). The same for every
        montage and sampling rate of a seed. Empty for nights not made by the generator.
    """

    record_id: str
    signals: dict[str, np.ndarray]
    sample_rates: dict[str, float]
    units: dict[str, str]
    stages: np.ndarray
    events: pd.DataFrame
    subject: dict
    kinds: dict[str, str] = field(default_factory=dict)
    artefacts: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["onset", "duration", "type", "channel"]))
    evidence: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(EVIDENCE_COLUMNS)))

    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds (a whole number of epochs)."""
        return float(len(self.stages) * EPOCH_S)

    @property
    def channel_names(self) -> list[str]:
        """Channel names in montage order."""
        return list(self.signals)

    def __repr__(self) -> str:
        rates = sorted(set(self.sample_rates.values()))
        rate = f"{rates[0]:g} Hz" if len(rates) == 1 else f"{rates[0]:g}–{rates[-1]:g} Hz"
        return (f"<SyntheticNight {self.record_id} | {len(self.signals)} ch, "
                f"{self.duration_s / 3600:.2f} h, {rate}, AHI {self.subject['ahi']:.1f}>")

    def pick(self, channels: Sequence[str]) -> "SyntheticNight":
        """A copy holding only ``channels`` (a smaller montage)."""
        missing = [c for c in channels if c not in self.signals]
        if missing:
            raise KeyError(f"{self.record_id}: no channel {missing}; channels are {self.channel_names}.")
        keep = [c for c in self.signals if c in channels]
        return replace(self, signals={c: self.signals[c] for c in keep},
                       sample_rates={c: self.sample_rates[c] for c in keep},
                       units={c: self.units[c] for c in keep}, kinds={c: self.kinds[c] for c in keep})

    def crop(self, start_s: float, stop_s: float) -> "SyntheticNight":
        """A copy cut to ``[start_s, stop_s)`` (whole 30 s epochs); events and artefacts that start
        inside are kept, with onsets relative to the new start."""
        if start_s % EPOCH_S or stop_s % EPOCH_S or not 0 <= start_s < stop_s <= self.duration_s:
            raise ValueError(f"crop {start_s}–{stop_s} s must be whole epochs within "
                             f"0–{self.duration_s:g} s.")

        def table(df: pd.DataFrame) -> pd.DataFrame:
            inside = df[(df["onset"] >= start_s) & (df["onset"] < stop_s)]
            return inside.assign(onset=inside["onset"] - start_s).reset_index(drop=True)

        signals = {c: x[int(start_s * self.sample_rates[c]):int(stop_s * self.sample_rates[c])]
                   for c, x in self.signals.items()}
        first, last = int(start_s // EPOCH_S), int(stop_s // EPOCH_S)
        return replace(self, signals=signals, stages=self.stages[first:last],
                       events=table(self.events), artefacts=table(self.artefacts),
                       evidence=self.evidence.iloc[first:last].reset_index(drop=True))

    def to_mne(self, channels: Sequence[str] | None = None):
        """The chosen channels as an :class:`mne.io.RawArray` (volts for electrical signals).

        Parameters
        ----------
        channels : list of str, optional
            Channel names; default is every channel at the rate of the first one.

        Returns
        -------
        mne.io.RawArray

        Raises
        ------
        SignalError
            When the chosen channels have different sampling rates.
        """
        import mne

        names = list(channels) if channels is not None else [
            c for c in self.signals if self.sample_rates[c] == self.sample_rates[self.channel_names[0]]]
        missing = [c for c in names if c not in self.signals]
        if missing:
            raise KeyError(f"{self.record_id}: no channel {missing}; channels are {self.channel_names}.")
        rates = {self.sample_rates[c] for c in names}
        if len(rates) != 1:
            raise SignalError(f"{self.record_id}: channels {names} have different sampling rates "
                              f"{sorted(rates)}; pick channels of one rate or resample first.")
        mne_types = {"eeg": "eeg", "eog": "eog", "emg": "emg", "ecg": "ecg", "resp": "resp",
                     "spo2": "bio"}
        scale = {"eeg": 1e-6, "eog": 1e-6, "emg": 1e-6, "ecg": 1e-6}
        data = np.stack([self.signals[c] * scale.get(self.kinds[c], 1.0) for c in names])
        info = mne.create_info(names, rates.pop(), [mne_types[self.kinds[c]] for c in names])
        return mne.io.RawArray(data, info, verbose=False)


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def generate_night(config: SyntheticConfig | None = None, *, seed: int = 0,
                   record_id: str | None = None) -> SyntheticNight:
    """Generate one synthetic PSG night.

    Parameters
    ----------
    config : SyntheticConfig, optional
        What to generate; default is an 8-h clinical montage.
    seed : int, default=0
        Non-negative seed; the same seed and config give bit-identical signals. Without
        artefacts, a channel's samples do not depend on which other channels the montage holds.
    record_id : str, optional
        Default ``f"SYN{seed:04d}"``.

    Returns
    -------
    SyntheticNight

    Raises
    ------
    SignalError
        Duration not a whole number of 30 s epochs, or a sampling rate that cannot be used.
    ValueError
        Another invalid config value (unknown montage, negative AHI, ...).

    Examples
    --------
    >>> night = generate_night(SyntheticConfig(duration_h=0.5, montage="staging"), seed=1)
    >>> night.stages.shape, night.sample_rates["C4-M1"]
    ((60,), 256.0)
    """
    config = config or SyntheticConfig()
    _validate(config, seed)
    subject = _draw_subject(config, (seed, 0), f"SYN{seed:04d}")
    return _generate(config, subject, (seed, 0, 0), record_id or f"SYN{seed:04d}")


def generate_cohort(n: int, config: SyntheticConfig | None = None, *, seed: int = 0,
                    nights_per_subject: int = 1) -> Iterator[SyntheticNight]:
    """Generate nights of ``n`` synthetic subjects, lazily, one night at a time.

    Subjects differ in age, sex, AHI, EEG amplitude, alpha frequency, spindle density, heart and
    breathing rate...; nights of one subject share these facts but not their randomness.

    Parameters
    ----------
    n : int
        Number of subjects.
    config : SyntheticConfig, optional
        Shared by all nights; fields left ``None`` (``ahi``, ``age``, ``sex``) are drawn per subject.
    seed : int, default=0
        Cohort seed; subject ``i`` night ``k`` depends only on ``(seed, i, k)``. The first night of
        the first subject equals ``generate_night(config, seed=seed)`` apart from its record id.
    nights_per_subject : int, default=1

    Yields
    ------
    SyntheticNight
        Record ids ``SYN{i:04d}_N{k}`` (k from 1); ``subject["subject_id"]`` is ``SYN{i:04d}``.
    """
    config = config or SyntheticConfig()
    check_type("n", n, int)
    check_type("nights_per_subject", nights_per_subject, int)
    if n < 0 or nights_per_subject < 1:
        raise ValueError(f"need n >= 0 and nights_per_subject >= 1, got n={n}, "
                         f"nights_per_subject={nights_per_subject}.")
    _validate(config, seed)
    for i in range(n):
        subject = _draw_subject(config, (seed, i), f"SYN{i:04d}")
        for k in range(nights_per_subject):
            yield _generate(config, dict(subject), (seed, i, k), f"SYN{i:04d}_N{k + 1}")


def write_night(night: SyntheticNight, directory: str | Path, *, fmt: str = "edf") -> dict[str, Path]:
    """Write a night as EDF/BDF plus its stage and event labels.

    Files: ``<record_id>.edf`` (or ``.bdf``), ``<record_id>.csv`` (SleepFM stage CSV: columns
    ``Start,Stop,StageName,StageNumber``, one row per 30 s epoch) and ``<record_id>.events.csv``
    (``onset,duration,type``). The EDF patient field is a synthetic identity
    (``"<subject_id> <sex> 01-JAN-1970 Synthetic_Subject"``) so tests can check that header
    identity never leaks into outputs.

    Parameters
    ----------
    night : SyntheticNight
    directory : path-like
        Created when missing; existing files of the same record are replaced.
    fmt : {'edf', 'bdf'}, default='edf'

    Returns
    -------
    dict
        ``{"edf": Path, "stages": Path, "events": Path}``.
    """
    check_option("fmt", fmt, ("edf", "bdf"))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = night.channel_names
    rates = [night.sample_rates[c] for c in names]
    record = next((r for r in (1.0, 2.0, 5.0, 10.0, 30.0)
                   if all(float(fs * r).is_integer() for fs in rates)), None)
    if record is None:
        raise SignalError(f"{night.record_id}: sampling rates {sorted(set(rates))} do not fit a data "
                          "record of 1, 2, 5, 10 or 30 s; use rates that are multiples of 1/30 Hz.")
    sid = re.sub(r"\s+", "_", str(night.subject.get("subject_id", "X")))
    paths = {"edf": directory / f"{night.record_id}.{fmt}",
             "stages": directory / f"{night.record_id}.csv",
             "events": directory / f"{night.record_id}.events.csv"}
    write_edf(paths["edf"], [night.signals[c] for c in names], rates, names,
              units=[night.units[c] for c in names], record_duration=record, fmt=fmt,
              patient_id=f"{sid} {night.subject.get('sex', 'X')} 01-JAN-1970 Synthetic_Subject")
    Hypnogram(night.stages).to_csv(paths["stages"])
    write_events_csv(paths["events"], night.events)
    logger.info("wrote %s (%d channels) and its labels to %s", paths["edf"].name, len(names), directory)
    return paths


# ---------------------------------------------------------------------------------------------
# Validation, seeds, subjects
# ---------------------------------------------------------------------------------------------
def _validate(cfg: SyntheticConfig, seed) -> None:
    check_type("config", cfg, SyntheticConfig)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    check_option("montage", cfg.montage, MONTAGES)
    epochs = cfg.duration_h * 3600.0 / EPOCH_S
    if not np.isfinite(epochs) or epochs < 1 or abs(epochs - round(epochs)) > 1e-6:
        raise SignalError(f"duration_h={cfg.duration_h} is not a positive whole number of 30 s "
                          "epochs; use a multiple of 30 s (e.g. 0.5 or 8.0 h).")
    if cfg.ahi is not None and not (np.isfinite(cfg.ahi) and 0 <= cfg.ahi <= 120):
        raise ValueError(f"ahi must lie in [0, 120] events/hour, got {cfg.ahi!r}.")
    if cfg.severity is not None:
        check_option("severity", cfg.severity, SEVERITY_RANGES)
    if not (np.isfinite(cfg.artefact_rate) and cfg.artefact_rate >= 0):
        raise ValueError(f"artefact_rate must be >= 0 per hour, got {cfg.artefact_rate!r}.")
    if cfg.age is not None and not 1 <= cfg.age <= 110:
        raise ValueError(f"age must lie in [1, 110] years, got {cfg.age!r}.")
    if cfg.sex is not None:
        check_option("sex", cfg.sex, ("M", "F"))
    if cfg.age_range is not None and not (
            len(cfg.age_range) == 2 and 1 <= cfg.age_range[0] <= cfg.age_range[1] <= 110):
        raise ValueError(f"age_range must be (low, high) years with 1 <= low <= high <= 110, got "
                         f"{cfg.age_range!r}.")
    if cfg.severity_mix is not None:
        mix = np.asarray(cfg.severity_mix, dtype=float)
        if mix.shape != (len(SEVERITY_NAMES),) or not (np.all(mix >= 0) and mix.sum() > 0):
            raise ValueError(f"severity_mix must hold {len(SEVERITY_NAMES)} non-negative "
                             f"probabilities of {SEVERITY_NAMES}, got {cfg.severity_mix!r}.")
    for name, low in (("fragmentation", 0.0), ("n3_scale", -1e-12)):
        value = getattr(cfg, name)
        if not (np.isfinite(value) and low < value <= 5):
            interval = "(0, 5]" if low == 0 else "[0, 5]"
            raise ValueError(f"{name} must be a factor in {interval} (1 = the default "
                             f"population), got {value!r}.")
    if not cfg.line_freq > 0:
        raise ValueError(f"line_freq must be positive, got {cfg.line_freq!r}.")
    for kind in cfg.sample_rates or {}:
        check_option("sample_rates key", kind, KINDS)
    for kind, fs in cfg.rates().items():
        if not (np.isfinite(fs) and fs >= _MIN_RATES[kind]):
            raise SignalError(f"sample rate of {kind!r} channels is {fs} Hz; it must be at least "
                              f"{_MIN_RATES[kind]} Hz.")
        if abs(fs * EPOCH_S - round(fs * EPOCH_S)) > 1e-9:
            raise SignalError(f"sample rate of {kind!r} channels ({fs} Hz) does not give a whole "
                              "number of samples per 30 s epoch.")


def _rng(key: tuple[int, ...], name: str) -> np.random.Generator:
    """Independent generator for one named aspect of a subject or night."""
    return np.random.default_rng(np.random.SeedSequence(
        int(key[0]), spawn_key=tuple(int(k) for k in key[1:]) + (zlib.crc32(name.encode()),)))


def _draw_subject(cfg: SyntheticConfig, key: tuple[int, ...], subject_id: str) -> dict:
    rng = _rng(key, "subject")
    if cfg.age is not None:
        age = float(cfg.age)
    elif cfg.age_range is not None:
        age = float(rng.uniform(*cfg.age_range))
    else:
        age = float(np.clip(rng.normal(48, 15), 18, 85))
    sex = cfg.sex or ("M" if rng.random() < 0.5 else "F")
    if cfg.ahi is not None:
        ahi = float(cfg.ahi)
        severity = next(s for s, (lo, hi) in SEVERITY_RANGES.items() if ahi < hi or s == "severe")
    else:
        mix = ([0.4, 0.3, 0.2, 0.1] if cfg.severity_mix is None
               else np.asarray(cfg.severity_mix, dtype=float) / np.sum(cfg.severity_mix))
        severity = cfg.severity or str(rng.choice(list(SEVERITY_RANGES), p=mix))
        lo, hi = SEVERITY_RANGES[severity]
        ahi = float(rng.uniform(lo, hi))
    old = (age - 20.0) / 50.0  # 0 at 20 y, 1 at 70 y

    def lognorm(sigma: float) -> float:
        return float(np.exp(rng.normal(0.0, sigma)))

    return {
        "subject_id": subject_id,
        "age": round(age, 1),
        "sex": sex,
        "bmi": round(float(np.clip(24 + 0.12 * ahi + rng.normal(0, 3), 17, 50)), 1),
        "ahi": round(ahi, 2),
        "severity": severity,
        "central_fraction": float(rng.uniform(0.0, 0.2)),
        "eeg_gain": lognorm(0.2) * (1.0 - 0.15 * old),
        "alpha_freq": float(np.clip(rng.normal(10.0 - 0.3 * old, 0.6), 8.3, 11.8)),
        "alpha_power": lognorm(0.45),
        "spindle_density": float(np.clip(rng.normal(5.5 - 1.2 * old, 1.0), 1.5, 9.0)),
        "spindle_freq": float(np.clip(rng.normal(13.2, 0.6), 11.5, 15.0)),
        "spindle_amp": float(np.clip(rng.normal(16.0, 3.5), 8.0, 28.0)),
        "so_amp": float(np.clip(rng.normal(55.0 - 15.0 * old, 8.0), 25.0, 90.0)),
        "n3_factor": float(np.clip(rng.normal(1.25 - 0.45 * old - 0.005 * ahi, 0.15), 0.3, 1.6))
        * cfg.n3_scale,
        "waso_factor": float(np.clip(rng.normal(1.0 + 0.5 * old + 0.01 * ahi, 0.3), 0.3, 2.5))
        * cfg.fragmentation,
        "sleep_latency_min": float(np.clip(rng.lognormal(np.log(15.0), 0.4), 3.0, 50.0)),
        "chin_tone": lognorm(0.3) * 14.0,
        "rem_density": lognorm(0.3),
        "ecg_in_emg": float(rng.uniform(0.002, 0.012)),
        "blink_rate": float(np.clip(rng.normal(15.0, 4.0), 5.0, 30.0)),
        "hr_base": float(np.clip(rng.normal(63.0, 6.0), 48.0, 85.0)),
        "rsa_bpm": float(np.clip(rng.normal(6.0 - 3.0 * old, 1.2), 1.0, 10.0)),
        "ecg_gain": lognorm(0.25) * 1000.0,
        "resp_rate": float(np.clip(rng.normal(0.25, 0.025), 0.18, 0.33)),
        "spo2_base": float(np.clip(rng.normal(96.5 - 0.04 * ahi, 0.8), 92.0, 98.5)),
        "plm_index": float(rng.uniform(5.0, 40.0)) if rng.random() < 0.25 else 0.0,
        "arousal_index": float(np.clip(rng.normal(8.0 + 4.0 * old, 3.0), 2.0, 25.0))
        * cfg.fragmentation,
    }


# ---------------------------------------------------------------------------------------------
# The night plan: stages, events and slow control signals shared by every channel
# ---------------------------------------------------------------------------------------------
@dataclass
class _RespEvent:
    """One apnea or hypopnea and the desaturation it causes (times in s from the start)."""

    onset: float
    duration: float
    kind: str  # "apnea" or "hypopnea"
    central: bool
    desat: float  # depth in % (0 when no desaturation)
    lag: float  # seconds from event to SpO2 response
    recovery: float  # seconds of SpO2 recovery after the nadir
    reduction: float  # fraction of airflow lost

    @property
    def end(self) -> float:
        return self.onset + self.duration


@dataclass
class _Night:
    """What every channel generator shares: seed key, subject, stages, event plan and slow control
    signals on a 10 Hz grid, plus a cache of derived signals (curves, phases, brain leads)."""

    key: tuple[int, ...]
    cfg: SyntheticConfig
    subject: dict
    stages: np.ndarray
    t: np.ndarray  # control grid times, s
    stage_ctrl: np.ndarray  # stage index at each control time
    resp_events: list[_RespEvent]
    arousals: np.ndarray  # (k, 2) onset, duration
    arousal: np.ndarray  # 0..1 on the control grid
    swa: np.ndarray  # homeostatic slow-wave factor on the control grid
    _cache: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.stages) * EPOCH_S

    def rng(self, name: str) -> np.random.Generator:
        return _rng(self.key, name)

    def curve(self, name: str, per_stage: Sequence[float], *, jitter: float = 0.0,
              rho: float = 0.7, smooth_s: float = 20.0) -> np.ndarray:
        """Stage-dependent value on the control grid, with per-epoch log-normal micro-variation
        (AR(1) across epochs) and transitions smoothed over ``smooth_s`` seconds."""
        if name in self._cache:
            return self._cache[name]
        values = np.asarray(per_stage, dtype=float)[self.stages]
        if jitter:
            values = values * np.exp(jitter * _ar1(self.rng("curve/" + name), len(values), rho))
        out = _smooth_epochs(values, self.t, smooth_s)
        self._cache[name] = out
        return out

    def times(self, fs: float, n: int) -> np.ndarray:
        """Sample times (s) of ``n`` samples at rate ``fs`` (cached)."""
        key = ("times", fs, n)
        if key not in self._cache:
            self._cache[key] = np.arange(n) / fs
        return self._cache[key]

    def at(self, values: np.ndarray, fs: float, n: int) -> np.ndarray:
        """Control-grid values interpolated at the ``n`` sample times of rate ``fs``."""
        return np.interp(self.times(fs, n), self.t, values)


def _white(rng: np.random.Generator, n: int, rms: float) -> np.ndarray:
    """Fast white noise with the given RMS (uniform samples: amplifier noise needs no more)."""
    x = rng.random(n, dtype=np.float32).astype(np.float64)
    x -= 0.5
    x *= rms * math.sqrt(12.0)
    return x


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """Stationary AR(1) sequence with unit variance."""
    burn = int(math.ceil(5.0 / max(1.0 - rho, 1e-3)))
    e = rng.standard_normal(n + burn)
    return sps.lfilter([math.sqrt(1.0 - rho * rho)], [1.0, -rho], e)[burn:]


def _smooth_noise(rng: np.random.Generator, n: int, fs: float, tau: float) -> np.ndarray:
    """Unit-variance low-pass noise with correlation time ``tau`` seconds."""
    return _ar1(rng, n, math.exp(-1.0 / (fs * tau)))


def _smooth_epochs(values: np.ndarray, t: np.ndarray, smooth_s: float) -> np.ndarray:
    """Piecewise-constant epoch values, smoothed at 1 s resolution and sampled at times ``t``."""
    steps = np.repeat(values, int(EPOCH_S))
    width = max(int(smooth_s), 1)
    if width > 1:
        kernel = np.hanning(width + 2)[1:-1]
        kernel /= kernel.sum()
        pad = width // 2 + 1
        padded = np.pad(steps, pad, mode="edge")
        steps = np.convolve(padded, kernel, mode="same")[pad:-pad]
    return np.interp(t, np.arange(len(steps)) + 0.5, steps)


def _generate(cfg: SyntheticConfig, subject: dict, key: tuple[int, ...],
              record_id: str) -> SyntheticNight:
    tic = time.perf_counter()
    n_epochs = int(round(cfg.duration_h * 3600.0 / EPOCH_S))
    stages = _hypnogram(n_epochs, subject, _rng(key, "hypnogram"))
    night = _plan(cfg, subject, key, stages)
    rates = cfg.rates()
    montage = MONTAGES[cfg.montage]
    kinds = dict(montage)
    signals: dict[str, np.ndarray] = {}
    by_kind: dict[str, list[str]] = {}
    for name, kind in montage:
        by_kind.setdefault(kind, []).append(name)
    for kind, names in by_kind.items():
        fs = rates[kind]
        n = int(round(night.duration_s * fs))
        signals.update(_KIND_GENERATORS[kind](night, names, fs, n))
    evidence = _epoch_evidence(night)
    artefacts = _add_artefacts(night, signals, kinds, rates)
    signals = {name: np.ascontiguousarray(signals[name], dtype=np.float64) for name, _ in montage}
    tst_h = sleep_hours(stages)
    subject["tst_h"] = round(tst_h, 3)
    subject["ahi_generated"] = round(ahi(len(night.resp_events), tst_h), 2) if tst_h > 0 else 0.0
    out = SyntheticNight(
        record_id=record_id,
        signals=signals,
        sample_rates={name: rates[kind] for name, kind in montage},
        units={name: UNITS[kind] for name, kind in montage},
        stages=stages.astype(np.int8),
        events=_events_table(night),
        subject=subject,
        kinds=kinds,
        artefacts=artefacts,
        evidence=evidence,
    )
    logger.info("generated %r in %.2f s", out, time.perf_counter() - tic)
    return out


def _epoch_evidence(night: _Night) -> pd.DataFrame:
    """The per-epoch scoring evidence of :data:`EVIDENCE_COLUMNS`.

    Slow waves are measured on a frontal lead (F4-M1 model) synthesised at 50 Hz for this
    purpose alone, so the table is the same whatever the montage and rates; transients, arousals,
    eye state and the REM burst rate come from the plan (named generators: nothing else
    changes)."""
    fs = _SCORING_FS
    n = int(round(night.duration_s * fs))
    n_epochs = len(night.stages)
    lead = replace(_eeg_lead("F4-M1"), key="scoring/F4-M1")
    frontal = _brain(night, [lead], fs, n)[0]
    sos = sps.butter(2, [0.5, 2.0], "bandpass", fs=fs, output="sos")
    swing = 2.0 * np.abs(sps.hilbert(sps.sosfiltfilt(sos, frontal)))  # peak to peak, uV
    waves, _ = _transients(night, fs, n)
    per_epoch = int(round(EPOCH_S * _CTRL_FS))

    def epoch_mean(values: np.ndarray, k: int) -> np.ndarray:
        return values[:n_epochs * k].reshape(n_epochs, k).mean(axis=1)

    def count(name: str) -> np.ndarray:
        centres = np.array([(s0 + len(w) // 2) / fs for nm, s0, w in waves if nm == name])
        idx = (centres // EPOCH_S).astype(int) if len(centres) else np.zeros(0, int)
        return np.bincount(idx[(idx >= 0) & (idx < n_epochs)], minlength=n_epochs)

    rem_rate = (night.curve("rem_bursts", _REM_BURSTS, jitter=0.4) * night.subject["rem_density"]
                * 3.5 / 60.0)
    return pd.DataFrame({
        "so_fraction": epoch_mean((swing >= _SO_PP_UV).astype(float), int(EPOCH_S * fs)).round(4),
        "spindles": count("spindle"),
        "kcomplexes": count("kc"),
        "arousal": epoch_mean(night.arousal, per_epoch).round(4),
        "eyes_closed": epoch_mean(_eyes_closed(night), per_epoch).round(4),
        "rem_bursts": (epoch_mean(rem_rate, per_epoch) * EPOCH_S).round(4),
    })


def _hypnogram(n_epochs: int, subject: dict, rng: np.random.Generator) -> np.ndarray:
    """Stage sequence: sleep-onset latency, ~90-min NREM/REM cycles with N3 early and REM late,
    brief awakenings (more with age and sleep apnea) and a final awakening on full nights."""
    seq: list[int] = []

    def add(stage: int, minutes: float) -> None:
        seq.extend([stage] * max(int(round(minutes * 2.0)), 0))

    add(_W, rng.lognormal(np.log(subject["sleep_latency_min"]), 0.3))
    add(_N1, rng.uniform(2.0, 7.0))
    n3_plan = (40.0, 24.0, 10.0, 3.0)
    rem_plan = (12.0, 22.0, 28.0, 32.0, 32.0)
    waso = subject["waso_factor"]
    cycle = 0
    while len(seq) < n_epochs:
        length = float(np.clip(rng.normal(95.0, 10.0), 70.0, 125.0))
        n3 = max(0.0, rng.normal(n3_plan[cycle], 5.0) * subject["n3_factor"]) if cycle < 4 else 0.0
        rem = max(3.0, rng.normal(rem_plan[min(cycle, 4)], 5.0))
        if cycle == 0 and rng.random() < 0.15:
            rem = 0.0  # skipped first REM period
        n2 = max(length - n3 - rem, 10.0)
        descent = n2 * rng.uniform(0.55, 0.8)
        add(_N2, descent)
        block = np.full(int(round(n3 * 2.0)), _N3)
        block[rng.random(len(block)) < 0.05] = _N2  # lighter epochs inside slow-wave sleep
        seq.extend(block.tolist())
        add(_N2, n2 - descent)
        if rem and rng.random() < 0.5:
            add(_N1, rng.uniform(0.5, 1.5))
        block = np.full(int(round(rem * 2.0)), _REM)
        for i in np.flatnonzero(rng.random(len(block)) < 0.006 * waso):
            block[i:i + 2] = (_W, _N1)[:len(block) - i]  # brief awakening from REM
        seq.extend(block.tolist())
        if rng.random() < min(0.45 * waso + 0.1 * cycle, 0.95):
            add(_W, float(np.clip(rng.lognormal(np.log(4.0), 0.7), 0.5, 30.0)))
            add(_N1, rng.uniform(1.0, 3.0))
        cycle += 1
    stages = np.array(seq[:n_epochs], dtype=np.int8)
    # Brief awakenings and N1 shifts inside N2 runs.
    i = 0
    while i < n_epochs:
        if stages[i] == _N2 and i > 0:
            u = rng.random()
            if u < 0.012 * waso:
                k = int(rng.integers(1, 5))
                stages[i:i + k] = _W
                stages[i + k:i + k + int(rng.integers(1, 4))] = _N1
                i += k + 3
                continue
            if u < 0.012 * waso + 0.03:
                stages[i] = _N1
        i += 1
    if n_epochs * EPOCH_S >= 5 * 3600:
        stages[n_epochs - int(rng.integers(4, 41)):] = _W
    return stages


def _poisson_times(rng: np.random.Generator, t: np.ndarray, rate: np.ndarray,
                   min_gap: float = 0.0) -> np.ndarray:
    """Event times of an inhomogeneous Poisson process with ``rate`` (per s) on grid ``t``."""
    dt = t[1] - t[0]
    cum = np.concatenate([[0.0], np.cumsum(rate) * dt])
    total = cum[-1]
    if total <= 0:
        return np.zeros(0)
    u = np.sort(rng.uniform(0.0, total, rng.poisson(total)))
    times = np.interp(u, cum, np.concatenate([t, [t[-1] + dt]]))
    if min_gap > 0 and len(times) > 1:
        keep = np.concatenate([[True], np.diff(times) >= min_gap])
        times = times[keep]
    return times


def _plan(cfg: SyntheticConfig, subject: dict, key: tuple[int, ...], stages: np.ndarray) -> _Night:
    duration = len(stages) * EPOCH_S
    t = np.arange(int(round(duration * _CTRL_FS)) + 1) / _CTRL_FS
    stage_ctrl = stages[np.minimum((t // EPOCH_S).astype(int), len(stages) - 1)]
    sleep_start = float(np.argmax(stages != _W) * EPOCH_S) if (stages != _W).any() else duration
    swa = 0.75 + 0.55 * np.exp(-np.maximum(t - sleep_start, 0.0) / (2.5 * 3600.0))
    resp_events = _respiratory_events(stages, subject, _rng(key, "resp_events"))
    rng = _rng(key, "arousals")
    # Spontaneous arousals, then one after most respiratory events.
    weight = np.asarray(_AROUSAL_WEIGHT)[stage_ctrl]
    onsets = list(_poisson_times(rng, t, weight * subject["arousal_index"] / 3600.0, min_gap=20.0))
    durations = list(np.clip(rng.lognormal(np.log(6.0), 0.4, len(onsets)), 3.0, 14.5))
    for ev in resp_events:
        if rng.random() < (0.8 if ev.kind == "apnea" else 0.65) or ev.desat < 3.0:
            onsets.append(ev.end + rng.uniform(-2.0, 2.0))
            durations.append(float(np.clip(rng.lognormal(np.log(7.0), 0.35), 3.0, 14.5)))
    arousals = np.array(sorted(zip(onsets, durations)), dtype=float).reshape(-1, 2)
    # Keep arousals that start and end in sleep and do not overlap an earlier one.
    kept, last_end = [], -np.inf
    for onset, dur in arousals:
        e0, e1 = int(onset // EPOCH_S), int(min(onset + dur, duration - 1e-6) // EPOCH_S)
        if onset < 0 or onset + dur > duration or onset < last_end + 3.0:
            continue
        if stages[e0] == _W or stages[e1] == _W:
            continue
        kept.append((round(onset, 2), round(dur, 2)))
        last_end = onset + dur
    arousals = np.array(kept, dtype=float).reshape(-1, 2)
    box = np.zeros_like(t)
    for onset, dur in arousals:
        box[int(onset * _CTRL_FS):int((onset + dur) * _CTRL_FS)] = 1.0
    kernel = np.hanning(int(1.5 * _CTRL_FS))
    arousal = np.clip(np.convolve(box, kernel / kernel.sum(), mode="same"), 0.0, 1.0)
    return _Night(key, cfg, subject, stages, t, stage_ctrl, resp_events, arousals, arousal, swa)


def _respiratory_events(stages: np.ndarray, subject: dict, rng: np.random.Generator) -> list[_RespEvent]:
    """Place ``round(AHI x hours of sleep)`` apneas and hypopneas inside sleep, separated by
    recovery breathing, more often in REM and less in N3."""
    tst_h = sleep_hours(stages)
    n_target = int(round(subject["ahi"] * tst_h))
    if n_target == 0:
        return []
    p_apnea = {"none": 0.25, "mild": 0.3, "moderate": 0.4, "severe": 0.5}[subject["severity"]]
    sec_stage = np.repeat(stages, int(EPOCH_S))
    weight = np.asarray(_EVENT_WEIGHT)[sec_stage]
    occupied = weight == 0  # per second: cannot hold an event
    events: list[_RespEvent] = []
    cdf = np.cumsum(weight)
    cdf /= cdf[-1]
    attempts = 0
    while len(events) < n_target and attempts < 50 * n_target:
        attempts += 1
        is_apnea = rng.random() < p_apnea
        dur = float(np.clip(rng.lognormal(np.log(20.0 if is_apnea else 24.0), 0.3), 10.0, 90.0))
        onset = int(np.searchsorted(cdf, rng.random()))
        gap = int(rng.uniform(8.0, 20.0))
        lo, hi = onset - gap, onset + int(math.ceil(dur)) + gap
        if lo < 0 or hi > len(occupied) or occupied[lo:hi].any():
            continue
        occupied[lo:hi] = True
        if is_apnea:
            desat = float(np.clip(2.5 + 0.15 * dur + rng.normal(0, 1.5), 3.0, 25.0))
            reduction = float(rng.uniform(0.92, 0.99))
        else:
            desat = float(np.clip(rng.normal(3.8, 1.0), 3.0, 8.0)) if rng.random() < 0.8 else 0.0
            reduction = float(rng.uniform(0.35, 0.7))
        events.append(_RespEvent(
            onset=float(onset + rng.uniform(0.0, 1.0)), duration=round(dur, 2),
            kind="apnea" if is_apnea else "hypopnea",
            central=bool(is_apnea and rng.random() < subject["central_fraction"]),
            desat=desat, lag=float(rng.uniform(20.0, 30.0)), recovery=float(rng.uniform(10.0, 18.0)),
            reduction=reduction))
    if len(events) < n_target:
        warnings.warn(f"AHI {subject['ahi']} asks for {n_target} respiratory events but only "
                      f"{len(events)} fit in {tst_h:.2f} h of sleep; the night has fewer.",
                      DataWarning, stacklevel=5)
    events.sort(key=lambda e: e.onset)
    return events


def _events_table(night: _Night) -> pd.DataFrame:
    rows = []
    for ev in night.resp_events:
        rows.append((ev.onset, ev.duration, ev.kind))
        if ev.desat >= 3.0:
            start = ev.onset + ev.lag
            if start < night.duration_s:
                rows.append((start, min(ev.duration + ev.recovery, night.duration_s - start),
                             "desaturation"))
    rows += [(float(o), float(d), "arousal") for o, d in night.arousals]
    df = pd.DataFrame(rows, columns=["onset", "duration", "type"])
    df["onset"] = df["onset"].astype(float).round(2)
    df["duration"] = df["duration"].astype(float).round(2)
    return df.sort_values(["onset", "type"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Brain activity (EEG and the EEG part of EOG)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Lead:
    """Where a lead picks up brain activity: shared-source mixing and per-component weights
    (spectral weights act on power, transient weights on amplitude)."""

    key: str
    side: str  # "L", "R" or "M"
    region: str  # "F", "C" or "O"
    gain: float = 1.0
    delta: float = 1.0
    alpha: float = 0.3
    theta: float = 1.0
    beta: float = 1.0
    muscle: float = 1.0
    spindle: float = 1.0
    kc: float = 1.0
    so: float = 1.0
    saw: float = 1.0
    vertex: float = 1.0


_REGION_WEIGHTS = {
    "F": dict(delta=1.3, alpha=0.15, theta=1.1, beta=1.1, muscle=1.6, spindle=0.8, kc=1.15, so=1.2,
              saw=0.9, vertex=0.8),
    "C": dict(delta=1.0, alpha=0.3, theta=1.0, beta=1.0, muscle=1.0, spindle=1.0, kc=1.0, so=1.0,
              saw=1.0, vertex=1.0),
    "O": dict(delta=0.6, alpha=1.0, theta=0.8, beta=0.8, muscle=0.8, spindle=0.45, kc=0.5, so=0.6,
              saw=0.5, vertex=0.5),
}
_ELECTRODE = re.compile(r"(fp|af|fc|ft|f|cp|c|tp|t|po|p|o|a|m)(\d{1,2}|z)")


def _eeg_lead(name: str) -> _Lead:
    """Lead model from a derivation name such as ``C4-M1``, ``EEG Fpz-Cz`` or ``O1``."""
    norm = normalize_name(name)
    norm = norm[3:] if norm.startswith("eeg") else norm
    found = _ELECTRODE.findall(norm)
    first = found[0] if found else ("c", "z")
    region = {"fp": "F", "af": "F", "f": "F", "fc": "F", "ft": "F", "c": "C", "cp": "C", "t": "C",
              "tp": "O", "p": "O", "po": "O", "o": "O", "a": "C", "m": "C"}[first[0]]
    side = "M" if first[1] == "z" else ("L" if int(first[1]) % 2 else "R")
    bipolar = len(found) > 1 and found[1][0] not in ("a", "m")
    return _Lead(key=name, side=side, region=region, gain=0.65 if bipolar else 1.0,
                 **_REGION_WEIGHTS[region])


def _brain_leads(night: _Night, fs: float, n: int) -> dict[str, np.ndarray]:
    """Brain signals of every EEG channel and EOG leak recorded at rate ``fs``, synthesised
    together (shared sources make them correlated) and cached; keyed by channel name."""
    key = ("brain", fs, n)
    if key not in night._cache:
        rates = night.cfg.rates()
        leads = [_eeg_lead(name) for name, kind in MONTAGES[night.cfg.montage]
                 if kind == "eeg" and rates["eeg"] == fs]
        leads += [_eog_spec(name)[2] for name, kind in MONTAGES[night.cfg.montage]
                  if kind == "eog" and rates["eog"] == fs]
        night._cache[key] = dict(zip([ld.key for ld in leads], _brain(night, leads, fs, n)))
    return night._cache[key]


def _brain(night: _Night, leads: list[_Lead], fs: float, n: int) -> np.ndarray:
    """Brain signals (uV) of several leads: 1/f background and rhythms synthesised in 4 s frames
    overlap-added with a sqrt-Hann window, plus transient waveforms; shape ``(len(leads), n)``."""
    subj = night.subject
    frame = 2 * int(round(2.0 * fs))  # 4 s frames, 50 % overlap
    hop = frame // 2
    n_frames = n // hop + 2
    frame_t = np.arange(n_frames) * hop / fs
    freqs = np.fft.rfftfreq(frame, 1.0 / fs)
    freqs = freqs[freqs <= min(100.0, fs / 2)].astype(np.float32)  # nothing above is synthesised

    def at(values: np.ndarray) -> np.ndarray:
        return np.interp(frame_t, night.t, values)

    # Frame-level spectral parameters.
    arousal = at(night.arousal)
    wake = at(night.curve("wake", (1.0, 0.0, 0.0, 0.0, 0.0)))
    eyes = at(_eyes_closed(night))
    nrem = at(night.curve("deep_nrem", (0.0, 0.0, 1.0, 1.0, 0.0)))
    p1 = (at(night.curve("eeg_p1", _EEG_P1, jitter=0.18)) * (1.0 + nrem * (at(night.swa) - 1.0))
          * (1.0 - 0.4 * arousal))
    exponent = at(night.curve("eeg_exp", _EEG_EXPONENT, jitter=0.04)) - 0.3 * arousal
    knee = at(night.curve("eeg_knee", _EEG_KNEE))
    alpha = subj["alpha_power"] * (at(night.curve("alpha", _ALPHA, jitter=0.3))
                                   * (1.0 - wake * 0.8 * (1.0 - eyes)) + 6.0 * arousal)
    alpha_f = subj["alpha_freq"] - 0.8 * at(night.curve("drowsy", (0.0, 1.0, 0.5, 0.5, 0.5)))
    theta = at(night.curve("theta", _THETA, jitter=0.25))
    beta = at(night.curve("beta", _BETA, jitter=0.25)) * (1.0 + 4.0 * arousal)
    sigma = at(night.curve("sigma", _SIGMA, jitter=0.25)) * subj["spindle_density"] / 5.0
    muscle = 0.002 * (at(_chin_tone(night)) / 14.0) ** 2 * (0.3 + 0.7 * wake)
    hw = (freqs / 0.3) ** 2 / (1.0 + (freqs / 0.3) ** 2) / (1.0 + (freqs / min(70.0, 0.4 * fs)) ** 8)
    low = 1.0 / (1.0 + (freqs / 4.0) ** 2)
    logf = np.log(np.maximum(freqs, 1e-3))
    g_theta = np.exp(-0.5 * ((freqs - 6.0) / 1.3) ** 2) * hw
    g_beta = np.exp(-0.5 * ((freqs - 20.0) / 5.0) ** 2) * hw
    g_sigma = np.exp(-0.5 * ((freqs - subj["spindle_freq"]) / 1.0) ** 2) * hw
    g_muscle = (freqs / 30.0) ** 2 / (1.0 + (freqs / 30.0) ** 2) * hw
    floor = 0.01  # amplifier noise, uV^2/Hz

    share = {"global": 0.45, "hemi": 0.15, "region": 0.2, "own": 0.2}  # of source power
    needed = {"global"} | {"hemi/" + ld.side for ld in leads if ld.side != "M"} | {
        "region/" + ld.region for ld in leads} | {"own/" + ld.key for ld in leads}
    source_rng = {s: night.rng("eeg_source/" + s) for s in sorted(needed)}
    window = np.sqrt(np.hanning(frame + 1)[:-1]).astype(np.float32)
    out = np.zeros((len(leads), (n_frames + 1) * hop))
    scale = math.sqrt(fs * frame / 2.0) * subj["eeg_gain"]
    chunk = 256
    for c0 in range(0, n_frames, chunk):
        sl = slice(c0, min(c0 + chunk, n_frames))
        m = sl.stop - sl.start
        z = {}
        for s, r in source_rng.items():
            u = r.random((m, len(freqs), 2), dtype=np.float32)
            u -= 0.5
            u *= math.sqrt(6.0 * share[s.split("/")[0]])
            z[s] = u.view(np.complex64)[..., 0]
        ex = exponent[sl, None].astype(np.float32)
        lk = np.log(knee[sl, None]).astype(np.float32)
        amp = (p1[sl, None] * (1.0 + np.exp(-ex * lk))).astype(np.float32)
        ap = amp / (1.0 + np.exp(ex * (logf - lk))) * hw
        ap_low = ap * low
        g_alpha = (alpha[sl, None] * np.exp(-0.5 * ((freqs - alpha_f[sl, None]) / 0.7) ** 2)
                   ).astype(np.float32) * hw
        th = theta[sl, None].astype(np.float32) * g_theta
        be = beta[sl, None].astype(np.float32) * g_beta
        si = sigma[sl, None].astype(np.float32) * g_sigma
        mu = muscle[sl, None].astype(np.float32) * g_muscle
        for i, ld in enumerate(leads):
            spec = ap + (ld.delta - 1.0) * ap_low
            spec += ld.alpha * g_alpha
            spec += ld.theta * th
            spec += ld.beta * be
            spec += ld.spindle ** 2 * si
            spec += ld.muscle * mu
            spec *= ld.gain ** 2
            spec += floor / subj["eeg_gain"] ** 2
            np.sqrt(spec, out=spec)
            zl = z["global"] + z["region/" + ld.region] + z["own/" + ld.key]
            if ld.side != "M":
                zl += z["hemi/" + ld.side]
            else:
                zl *= 1.0 / math.sqrt(1.0 - share["hemi"])
            zl *= spec
            x = fft.irfft(zl, n=frame, axis=1)
            x *= window * np.float32(scale)
            x = x.reshape(m, 2, hop)
            seg = out[i, c0 * hop:(c0 + m + 1) * hop].reshape(m + 1, hop)
            seg[:-1] += x[:, 0]
            seg[1:] += x[:, 1]
    brain = out[:, hop:hop + n]
    waves, trains = _transients(night, fs, n)
    for row, ld in zip(brain, leads):
        gain = subj["eeg_gain"] * ld.gain
        for name, s0, wave in waves:
            a, b = max(s0, 0), min(s0 + len(wave), n)
            row[a:b] += (gain * getattr(ld, name)) * wave[a - s0:b - s0]
        for name, train in trains.items():
            row += (gain * getattr(ld, name)) * train
    return brain


def _eyes_closed(night: _Night) -> np.ndarray:
    """0..1 on the control grid: eyes closed (alpha on, blinks and saccades off) in W. Eyes are
    mostly closed around sleep onset and awakenings, open for longer stretches otherwise."""
    if "eyes" in night._cache:
        return night._cache["eyes"]
    near_sleep = night.curve("near_sleep", (0.0, 1.0, 1.0, 1.0, 1.0), smooth_s=240.0)
    p_closed = 0.35 + 0.55 * np.clip(near_sleep * 2.0, 0.0, 1.0)
    noise = _smooth_noise(night.rng("eyes"), len(night.t), _CTRL_FS, 6.0)
    closed = (special.ndtr(noise) < p_closed).astype(float)
    kernel = np.hanning(int(1.0 * _CTRL_FS))
    out = np.convolve(closed, kernel / kernel.sum(), mode="same")
    night._cache["eyes"] = out
    return out


def _chin_tone(night: _Night) -> np.ndarray:
    """Chin EMG RMS (uV) on the control grid: stage tone, micro-variation, arousal rises."""
    if "chin" in night._cache:
        return night._cache["chin"]
    tone = night.curve("chin_tone", _CHIN_TONE, jitter=0.2, smooth_s=12.0) * night.subject["chin_tone"]
    drift = np.exp(0.15 * _smooth_noise(night.rng("chin_drift"), len(night.t), _CTRL_FS, 60.0))
    out = tone * drift * (1.0 + 1.5 * night.arousal)
    night._cache["chin"] = out
    return out


def _transients(night: _Night, fs: float, n: int
                ) -> tuple[list[tuple[str, int, np.ndarray]], dict[str, np.ndarray]]:
    """Transient activity (uV, central lead, before subject gain), cached per rate.

    Returns ``(waves, trains)``: ``waves`` lists ``(lead weight name, first sample, waveform)``
    for spindles, K-complexes and vertex waves; ``trains`` maps ``"so"`` and ``"saw"`` to
    full-length slow-wave and sawtooth trains.
    """
    key = ("transients", fs, n)
    if key in night._cache:
        return night._cache[key]
    subj, t = night.subject, night.t
    awake_free = 1.0 - night.arousal
    waves: list[tuple[str, int, np.ndarray]] = []
    trains: dict[str, np.ndarray] = {}

    def place(name: str, times: np.ndarray, shapes) -> None:
        for t0, wave in zip(times, shapes):
            waves.append((name, int(round(t0 * fs)) - len(wave) // 2, wave))

    # Spindles: waxing-waning 11-16 Hz, 0.5-2 s.
    rng = night.rng("spindles")
    rate = night.curve("spindle_rate", _SPINDLE_RATE, jitter=0.25) * subj["spindle_density"] / 60.0
    times = _poisson_times(rng, t, rate * awake_free, min_gap=1.5)
    durs = np.clip(rng.lognormal(np.log(0.9), 0.3, len(times)), 0.5, 2.0)
    freqs = subj["spindle_freq"] + rng.normal(0.0, 0.5, len(times))
    amps = subj["spindle_amp"] * rng.lognormal(0.0, 0.25, len(times))
    phases = rng.uniform(0, 2 * np.pi, len(times))
    place("spindle", times, (
        a * np.sin(np.pi * tt / d) ** 2 * np.sin(2 * np.pi * f * tt + p)
        for d, f, a, p in zip(durs, freqs, amps, phases)
        for tt in [np.arange(int(d * fs)) / fs]))

    # K-complexes: small positive, sharp negative, slower positive wave; also at some arousals.
    rng = night.rng("kcomplexes")
    rate = night.curve("kc_rate", _KC_RATE, jitter=0.3) / 60.0
    times = np.concatenate([_poisson_times(rng, t, rate * awake_free, min_gap=3.0),
                            night.arousals[rng.random(len(night.arousals)) < 0.3, 0]])
    tt = np.arange(int(1.6 * fs)) / fs
    shape = (0.15 * np.exp(-0.5 * ((tt - 0.3) / 0.06) ** 2) - np.exp(-0.5 * ((tt - 0.55) / 0.11) ** 2)
             + 0.45 * np.exp(-0.5 * ((tt - 0.95) / 0.2) ** 2))
    place("kc", times, (a * shape for a in rng.uniform(45.0, 90.0, len(times))))

    # Vertex sharp waves in N1.
    rng = night.rng("vertex")
    times = _poisson_times(rng, t, night.curve("vertex_rate", _VERTEX_RATE) / 60.0, min_gap=4.0)
    tt = np.arange(int(0.6 * fs)) / fs - 0.3
    shape = -np.exp(-0.5 * (tt / 0.06) ** 2) * (1 - 2 * tt)
    place("vertex", times, (a * shape for a in rng.uniform(30.0, 60.0, len(times))))

    # Slow-wave trains (N3, a little N2) and sawtooth trains (REM): gated oscillations built on a
    # 50 Hz grid, then interpolated.
    grid_fs = 50.0
    grid_t = np.arange(int(night.duration_s * grid_fs) + 1) / grid_fs
    for name, duty_table, f_mean, amp in (("so", _SO_DUTY, 0.85, subj["so_amp"]),
                                          ("saw", _SAW_DUTY, 3.0, 22.0)):
        duty = night.curve("duty/" + name, duty_table, jitter=0.2)
        level = np.full_like(t, amp)
        if name == "so":
            duty = np.clip(duty * night.swa, 0.0, 0.9)
            duty = np.where(night.stage_ctrl == _N3, np.maximum(duty, 0.28), duty)
            level = level * np.sqrt(night.swa)
        rng = night.rng("train/" + name)
        noise = special.ndtr(_smooth_noise(rng, len(t), _CTRL_FS, 2.5))  # uniform, correlated
        gate = (noise < duty * awake_free).astype(float)
        kernel = np.hanning(int(0.6 * _CTRL_FS))
        gate = np.convolve(gate, kernel / kernel.sum(), mode="same")
        f_inst = f_mean * np.exp(0.25 * _smooth_noise(rng, len(t), _CTRL_FS, 1.5))
        phase = np.interp(grid_t, t, 2 * np.pi * np.cumsum(f_inst) / _CTRL_FS)
        level = level * np.exp(0.2 * _smooth_noise(rng, len(t), _CTRL_FS, 3.0)) * gate
        if name == "so":
            wave = -np.cos(phase)
        else:
            frac = (phase / (2 * np.pi)) % 1.0
            wave = np.where(frac < 0.75, frac / 0.75, (1.0 - frac) / 0.25) * 2.0 - 1.0
        train = np.interp(grid_t, t, level) * wave
        trains[name] = np.interp(night.times(fs, n), grid_t, train)
    night._cache[key] = waves, trains
    return waves, trains


def _gen_eeg(night: _Night, names: list[str], fs: float, n: int) -> dict[str, np.ndarray]:
    brain = _brain_leads(night, fs, n)
    return {name: brain[name] for name in names}


# ---------------------------------------------------------------------------------------------
# EOG
# ---------------------------------------------------------------------------------------------
def _eog_spec(name: str) -> tuple[float, float, _Lead]:
    """(horizontal weight, vertical weight, EEG leak lead) of an EOG derivation."""
    norm = normalize_name(name)
    if "horiz" in norm:
        leak = _Lead(key=name, side="M", region="F", gain=0.3, **_REGION_WEIGHTS["F"])
        return 2.0, 0.15, leak
    right = norm.startswith(("e2", "roc", "eogr", "reog")) or "right" in norm
    weights = dict(_REGION_WEIGHTS["F"], delta=1.5, alpha=0.1, spindle=0.5, muscle=2.0)
    leak = _Lead(key=name, side="R" if right else "L", region="F", gain=0.6, **weights)
    return (-1.0, 1.0, leak) if right else (1.0, -0.6, leak)


def _gen_eog(night: _Night, names: list[str], fs: float, n: int) -> dict[str, np.ndarray]:
    brain = _brain_leads(night, fs, n)
    horizontal, vertical = _eye_movements(night, fs, n)
    out = {}
    for name in names:
        h, v, _ = _eog_spec(name)
        x = brain[name]  # the EOG's own leak row: completed in place
        x += h * horizontal
        x += v * vertical
        x += _white(night.rng("eog_noise/" + name), n, 1.5)
        out[name] = x
    return out


def _eye_movements(night: _Night, fs: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal (saccades, slow rolling movements) and vertical (blinks) eye signals in uV,
    AC-coupled like an EOG amplifier."""
    subj = night.subject
    t = night.t
    eyes_open = 1.0 - _eyes_closed(night)
    wake = night.curve("wake", (1.0, 0.0, 0.0, 0.0, 0.0))
    rng = night.rng("saccades")
    # Rapid eye movements: bursts in REM, scanning saccades in W with eyes open.
    rem_rate = night.curve("rem_bursts", _REM_BURSTS, jitter=0.4) * subj["rem_density"] * 3.5 / 60.0
    bursts = _poisson_times(rng, t, rem_rate, min_gap=2.0)
    times = [b + np.cumsum(rng.uniform(0.25, 1.2, rng.geometric(0.25))) for b in bursts]
    times.append(_poisson_times(rng, t, wake * eyes_open * 0.6 * (1.0 - night.arousal) + 0.0, 0.3))
    sac_t = np.sort(np.concatenate(times)) if times else np.zeros(0)
    sac_t = sac_t[sac_t < n / fs]
    pos = 0.0
    steps = np.empty(len(sac_t))
    for i in range(len(sac_t)):
        target = rng.normal(0.0, 120.0)
        steps[i] = target - pos
        pos = target
    impulses = np.zeros(n)
    np.add.at(impulses, (sac_t * fs).astype(int), steps)
    kernel = np.hanning(max(int(0.05 * fs), 3))
    velocity = sps.oaconvolve(impulses, kernel / kernel.sum(), mode="same")
    horizontal = np.cumsum(velocity)
    # Slow rolling eye movements at sleep onset and in N1.
    sem_level = night.curve("sem", _SEM, jitter=0.3, smooth_s=60.0)
    drowsy_w = wake * night.curve("near_sleep", (0.0, 1.0, 1.0, 1.0, 1.0), smooth_s=240.0)
    sem_level = (sem_level + 0.8 * np.clip(drowsy_w * 2.0, 0.0, 1.0)) * (1.0 - night.arousal)
    sem = _smooth_noise(rng, len(t), _CTRL_FS, 1.0)
    sem = sps.sosfiltfilt(sps.butter(2, [0.1, 0.6], "bandpass", fs=_CTRL_FS, output="sos"), sem)
    sem *= 90.0 / max(np.std(sem), 1e-9)
    horizontal += night.at(sem * sem_level, fs, n)
    # Blinks in W with eyes open.
    blink_rate = wake * eyes_open * subj["blink_rate"] / 60.0
    rng = night.rng("blinks")
    blink_t = _poisson_times(rng, t, blink_rate, min_gap=0.8)
    impulses = np.zeros(n)
    np.add.at(impulses, np.minimum((blink_t * fs).astype(int), n - 1),
              rng.uniform(100.0, 250.0, len(blink_t)))
    tt = np.arange(int(0.5 * fs)) / fs
    template = np.where(tt < 0.1, np.sin(np.pi * tt / 0.2), np.exp(-((tt - 0.1) / 0.12) ** 2))
    vertical = sps.oaconvolve(impulses, template, mode="full")[:n]
    # AC coupling (0.3 Hz first-order high-pass) for both.
    b, a = sps.butter(1, 0.3, "highpass", fs=fs)
    return sps.lfilter(b, a, horizontal), sps.lfilter(b, a, vertical)


# ---------------------------------------------------------------------------------------------
# EMG
# ---------------------------------------------------------------------------------------------
def _muscle_noise(rng: np.random.Generator, fs: float, n: int) -> np.ndarray:
    """Unit-RMS broadband muscle noise (10-100 Hz, capped below Nyquist)."""
    hi = min(100.0, 0.4 * fs)
    x = rng.random(n, dtype=np.float32)
    x -= 0.5
    sos = sps.butter(4, [10.0, hi], "bandpass", fs=fs, output="sos")
    y = sps.sosfilt(sos, x).astype(np.float64)
    return y / max(float(np.std(y)), 1e-12)


def _gen_emg(night: _Night, names: list[str], fs: float, n: int) -> dict[str, np.ndarray]:
    out = {}
    ecg = None
    for name in names:
        norm = normalize_name(name)
        if any(k in norm for k in ("leg", "tib", "lat", "rat")):
            out[name] = _leg_emg(night, name, fs, n)
            continue
        if ecg is None:
            ecg = _ecg_wave(night, fs, n)
        env = night.at(_chin_tone(night), fs, n)
        env += _twitches(night, fs, n)
        noise = _muscle_noise(night.rng("emg_noise/" + name), fs, n)
        floor = _white(night.rng("emg_floor/" + name), n, 0.5)
        out[name] = noise * env + night.subject["ecg_in_emg"] * ecg + floor
    return out


def _twitches(night: _Night, fs: float, n: int) -> np.ndarray:
    """Phasic REM twitches as an RMS envelope (uV) at the sample rate."""
    rng = night.rng("twitches")
    rate = night.curve("twitch_rate", (0.0, 0.0, 0.0, 0.0, 4.0), jitter=0.4) / 60.0
    times = _poisson_times(rng, night.t, rate, min_gap=0.5)
    impulses = np.zeros(n)
    np.add.at(impulses, np.minimum((times * fs).astype(int), n - 1),
              rng.uniform(0.4, 1.5, len(times)) * night.subject["chin_tone"])
    kernel = np.hanning(max(int(0.2 * fs), 3))
    return sps.oaconvolve(impulses, kernel, mode="same")


def _leg_emg(night: _Night, name: str, fs: float, n: int) -> np.ndarray:
    """Leg EMG: low tone, movements in W and at arousals, periodic limb movements in sleep."""
    subj = night.subject
    rng = night.rng("limb_movements")  # shared by both legs
    t = night.t
    onsets: list[np.ndarray] = []
    sides: list[np.ndarray] = []
    if subj["plm_index"] > 0:
        n2 = night.curve("plm_stage", (0.0, 1.0, 1.0, 0.2, 0.05))
        series_rate = n2 * subj["plm_index"] / 12.0 / 3600.0  # about 12 movements per series
        for start in _poisson_times(rng, t, series_rate, min_gap=300.0):
            period = rng.uniform(15.0, 40.0)
            k = int(rng.integers(4, 20))
            times = start + np.arange(k) * period + rng.normal(0.0, 2.0, k)
            onsets.append(times)
            sides.append(np.full(len(times), rng.integers(0, 3)))
    wake = night.curve("wake", (1.0, 0.0, 0.0, 0.0, 0.0))
    move = _poisson_times(rng, t, wake * 40.0 / 3600.0, min_gap=5.0)
    with_arousal = night.arousals[rng.random(len(night.arousals)) < 0.3, 0]
    for times in (move, with_arousal):
        onsets.append(times)
        sides.append(rng.integers(0, 3, len(times)))
    all_t = np.concatenate(onsets) if onsets else np.zeros(0)
    all_side = np.concatenate(sides).astype(int) if sides else np.zeros(0, int)
    durations = np.clip(rng.lognormal(np.log(1.5), 0.5, len(all_t)), 0.5, 10.0)
    amps = rng.uniform(8.0, 25.0, len(all_t))
    norm = normalize_name(name)
    side = 1 if ("r" in norm.replace("leg", "")[:2] or norm.startswith("r")) else 0
    env = np.full(n, 2.0) * night.at(1.0 + 0.6 * wake, fs, n)
    for t0, dur, amp, s in zip(all_t, durations, amps, all_side):
        if s != 2 and s != side:
            continue
        a, b = int(t0 * fs), min(int((t0 + dur) * fs), n)
        if 0 <= a < b:
            env[a:b] += amp * 2.0 * np.hanning(b - a + 2)[1:-1]
    return _muscle_noise(night.rng("emg_noise/" + name), fs, n) * env


# ---------------------------------------------------------------------------------------------
# Cardiorespiratory
# ---------------------------------------------------------------------------------------------
def _resp_drive(night: _Night) -> dict[str, np.ndarray]:
    """Breathing phase and gains on the control grid (shared by resp, ECG and SpO2)."""
    if "resp" in night._cache:
        return night._cache["resp"]
    subj, t = night.subject, night.t
    rng = night.rng("breathing")
    rate_var = night.curve("br_rate_var", _BR_RATE_VAR)
    rate = (subj["resp_rate"] * night.curve("br_rate", _BR_RATE)
            * np.exp(rate_var * _smooth_noise(rng, len(t), _CTRL_FS, 8.0)))
    phase = 2 * np.pi * np.cumsum(rate) / _CTRL_FS
    amp_var = night.curve("br_amp_var", _BR_AMP_VAR)
    amp = night.curve("br_amp", _BR_AMP) * np.exp(amp_var * _smooth_noise(rng, len(t), _CTRL_FS, 6.0))
    flow = np.ones_like(t)
    effort = np.ones_like(t)
    paradox = np.zeros_like(t)
    flatten = np.zeros_like(t)
    hr_dip = np.zeros_like(t)
    for ev in night.resp_events:
        i0, i1 = int(ev.onset * _CTRL_FS), int(ev.end * _CTRL_FS)
        i2 = min(int((ev.end + rng.uniform(6.0, 12.0)) * _CTRL_FS), len(t))
        ramp = np.linspace(0.0, 1.0, max(i1 - i0, 1))
        flow[i0:i1] = 1.0 - ev.reduction
        if ev.kind == "apnea" and ev.central:
            effort[i0:i1] = 0.05
        elif ev.kind == "apnea":
            effort[i0:i1] = 0.8 + 0.5 * ramp
            paradox[i0:i1] = np.pi * np.minimum(ramp * 2.0, 0.9)
        else:
            effort[i0:i1] = 0.8
            paradox[i0:i1] = 0.3 * np.pi * ramp
            flatten[i0:i1] = 1.0
        flow[i1:i2] = 1.8
        effort[i1:i2] = 1.5
        hr_dip[i0:i1] = -4.0 * ramp
    kernel = np.hanning(int(1.5 * _CTRL_FS))
    kernel /= kernel.sum()
    out = {"phase": phase, "amp": amp, "thorax_share": night.curve("thorax_share", _THORAX_SHARE)}
    for name, x in (("flow", flow), ("effort", effort), ("paradox", paradox), ("flatten", flatten),
                    ("hr_dip", hr_dip)):
        out[name] = np.convolve(x, kernel, mode="same")
    night._cache["resp"] = out
    return out


def _volume(phase: np.ndarray) -> np.ndarray:
    """Lung volume 0..1 over a breath: inspiration over 40 % of the cycle, expiration after."""
    frac = (phase / (2 * np.pi)) % 1.0
    warped = np.where(frac < 0.4, frac / 0.4 * 0.5, 0.5 + (frac - 0.4) / 0.6 * 0.5)
    return 0.5 - 0.5 * np.cos(2 * np.pi * warped)


def _flow(phase: np.ndarray) -> np.ndarray:
    """Airflow over a breath (derivative of :func:`_volume`): inspiration peaks at 1, the longer
    expiration at -2/3."""
    frac = (phase / (2 * np.pi)) % 1.0
    inspiration = frac < 0.4
    warped = np.where(inspiration, frac / 0.4 * 0.5, 0.5 + (frac - 0.4) / 0.6 * 0.5)
    return np.sin(2 * np.pi * warped) * np.where(inspiration, 1.0, 0.4 / 0.6)


def _heart(night: _Night) -> dict[str, np.ndarray]:
    """Heart rate (bpm) and cardiac phase on the control grid."""
    if "heart" in night._cache:
        return night._cache["heart"]
    subj, t = night.subject, night.t
    drive = _resp_drive(night)
    rng = night.rng("heart")
    hr = subj["hr_base"] * night.curve("hr", _HR_FACTOR, jitter=0.03)
    hr = hr + subj["rsa_bpm"] * night.curve("rsa", _RSA) * np.sin(drive["phase"] - 0.5)
    hr = hr + night.curve("hrv_lf", _HRV_LF) * _smooth_noise(rng, len(t), _CTRL_FS, 10.0)
    hr = hr + 12.0 * night.arousal + drive["hr_dip"]
    hr = np.clip(hr, 35.0, 160.0)
    phase = 2 * np.pi * np.cumsum(hr / 60.0) / _CTRL_FS + rng.uniform(0, 2 * np.pi)
    out = {"hr": hr, "phase": phase}
    night._cache["heart"] = out
    return out


def _ecg_wave(night: _Night, fs: float, n: int) -> np.ndarray:
    """Noise-free PQRST waveform (uV) at rate ``fs``: Gaussian waves placed in time from each
    R peak, with P and T positions following the RR interval (Bazett). Cached per rate."""
    key = ("ecg", fs, n)
    if key in night._cache:
        return night._cache[key]
    heart = _heart(night)
    beat = night.at(heart["phase"] / (2 * np.pi), fs, n)
    rr = (60.0 / night.at(heart["hr"], fs, n)).astype(np.float32)
    dt = (((beat + 0.35) % 1.0) - 0.35).astype(np.float32) * rr  # seconds from the nearest R
    sq = np.sqrt(rr)
    ecg = np.zeros(n, dtype=np.float32)
    for amp, mu, sigma in ((0.12, -0.17 * sq, 0.025), (-0.1, -0.025, 0.01), (1.0, 0.0, 0.011),
                           (-0.22, 0.03, 0.012), (0.28, 0.25 * sq, 0.045)):
        z = (dt - mu) * np.float32(1.0 / sigma)
        z *= z
        z *= np.float32(-0.5)
        ecg += np.float32(amp) * np.exp(z)
    out = ecg.astype(np.float64) * night.subject["ecg_gain"]
    night._cache[key] = out
    return out


def _gen_ecg(night: _Night, names: list[str], fs: float, n: int) -> dict[str, np.ndarray]:
    wave = _ecg_wave(night, fs, n)
    drive = _resp_drive(night)
    wander = night.at(40.0 * np.sin(drive["phase"]), fs, n)
    out = {}
    for name in names:
        rng = night.rng("ecg_noise/" + name)
        drift = night.at(30.0 * _smooth_noise(rng, len(night.t), _CTRL_FS, 20.0), fs, n)
        out[name] = wave + wander + drift + _white(rng, n, 8.0)
    return out


def _gen_resp(night: _Night, names: list[str], fs: float, n: int) -> dict[str, np.ndarray]:
    drive = _resp_drive(night)
    phase = night.at(drive["phase"], fs, n)
    amp = night.at(drive["amp"], fs, n)
    flow_gain = night.at(drive["flow"], fs, n) * amp
    effort_gain = night.at(drive["effort"], fs, n) * amp
    paradox = night.at(drive["paradox"], fs, n)
    flatten = night.at(drive["flatten"], fs, n)
    cardiac = night.at(_heart(night)["phase"], fs, n)
    out = {}
    for name in names:
        norm = normalize_name(name)
        rng = night.rng("resp_noise/" + name)
        drift = night.at(_smooth_noise(rng, len(night.t), _CTRL_FS, 30.0), fs, n)
        if any(k in norm for k in ("press", "ptaf", "cannula", "nprs")):
            flow = _flow(phase)
            flow = np.where(flow > 0, np.minimum(flow, 1.0 - 0.45 * flatten), flow)  # flow limitation
            x = flow * flow_gain + 0.02 * np.sin(cardiac) * (1.0 - flow_gain).clip(0) + 0.05 * drift
        elif any(k in norm for k in ("thor", "chest", "vth")):
            share = night.at(drive["thorax_share"], fs, n)
            x = (_volume(phase) - 0.5) * effort_gain * share + 0.1 * drift
        elif any(k in norm for k in ("abd", "vab")):
            x = (_volume(phase - 0.15 - paradox) - 0.5) * effort_gain + 0.1 * drift
        else:  # thermistor airflow
            x = (_volume(phase - 0.3) - 0.5) * flow_gain + 0.03 * np.sin(cardiac) + 0.03 * drift
        out[name] = x + 0.01 * rng.standard_normal(n)
    return out


def _gen_spo2(night: _Night, names: list[str], fs: float, n: int) -> dict[str, np.ndarray]:
    """SpO2 (%): subject baseline, slightly lower in REM, with a desaturation after each event
    that falls until ``lag`` s after the event end and recovers over ``recovery`` s."""
    subj = night.subject
    rng = night.rng("spo2")
    base = subj["spo2_base"] - 0.4 * night.at(night.curve("spo2_rem", (0, 0, 0, 0, 1.0)), fs, n)
    spo2 = base + 0.3 * night.at(_smooth_noise(rng, len(night.t), _CTRL_FS, 120.0), fs, n)
    for ev in night.resp_events:
        if ev.desat <= 0:
            continue
        start, nadir = ev.onset + ev.lag, ev.end + ev.lag
        a, b = int(math.ceil(start * fs)), min(int((nadir + ev.recovery) * fs) + 1, n)
        if a >= b:
            continue
        t = np.arange(a, b) / fs
        fall = np.clip((t - start) / (nadir - start), 0.0, 1.0)
        rise = np.clip((t - nadir) / ev.recovery, 0.0, 1.0)
        shape = np.where(t < nadir, 0.5 - 0.5 * np.cos(np.pi * fall), 0.5 + 0.5 * np.cos(np.pi * rise))
        spo2[a:b] -= (ev.desat + 0.3) * shape
    spo2 = np.clip(spo2 + 0.1 * rng.standard_normal(n), 50.0, 100.0)
    return {name: spo2.copy() for name in names}


_KIND_GENERATORS = {"eeg": _gen_eeg, "eog": _gen_eog, "emg": _gen_emg, "ecg": _gen_ecg,
                    "resp": _gen_resp, "spo2": _gen_spo2}


# ---------------------------------------------------------------------------------------------
# Artefacts
# ---------------------------------------------------------------------------------------------
def _add_artefacts(night: _Night, signals: dict[str, np.ndarray], kinds: dict[str, str],
                   rates: dict[str, float]) -> pd.DataFrame:
    """Add movement bursts, electrode pops, sweat drifts and line noise in place; return a table."""
    columns = ["onset", "duration", "type", "channel"]
    rate = night.cfg.artefact_rate
    electrical = [c for c in signals if kinds[c] in ("eeg", "eog")]
    if rate <= 0 or not signals:
        return pd.DataFrame(columns=columns)
    rng = night.rng("artefacts")
    count = rng.poisson(rate * night.duration_s / 3600.0)
    onsets = np.sort(rng.uniform(0.0, night.duration_s - 30.0, count))
    rows = []
    for onset in onsets:
        kind = rng.choice(["movement", "pop", "sweat", "line"], p=[0.45, 0.25, 0.15, 0.15])
        if kind != "movement" and not electrical:
            kind = "movement"
        if kind == "movement":
            dur = float(rng.uniform(2.0, 15.0))
            for c, x in signals.items():
                fs = rates[kinds[c]]
                a, b = int(onset * fs), min(int((onset + dur) * fs), len(x))
                if b - a < 2:
                    continue
                env = np.hanning(b - a)
                if kinds[c] in ("eeg", "eog", "emg"):
                    slow = np.cumsum(rng.standard_normal(b - a)) * (80.0 / math.sqrt(fs))
                    slow -= np.linspace(slow[0], slow[-1], b - a)
                    burst = _muscle_noise(rng, fs, b - a) * rng.uniform(20.0, 80.0)
                    x[a:b] += env * (slow + burst)
                elif kinds[c] in ("resp", "ecg"):
                    walk = rng.standard_normal(b - a).cumsum() / math.sqrt(b - a)
                    x[a:b] += env * walk * np.std(x[a:b])
            rows.append((onset, dur, "movement", "*"))
        elif kind == "pop":
            c = electrical[int(rng.integers(len(electrical)))]
            fs, x = rates[kinds[c]], signals[c]
            tau = float(rng.uniform(0.2, 0.8))
            dur = 5.0 * tau
            a, b = int(onset * fs), min(int((onset + dur) * fs), len(x))
            tt = np.arange(b - a) / fs
            step = rng.choice([-1, 1]) * rng.uniform(150.0, 600.0)
            x[a:b] += step * (np.exp(-tt / tau) - np.exp(-5.0))
            rows.append((onset, dur, "pop", c))
        elif kind == "sweat":
            c = electrical[int(rng.integers(len(electrical)))]
            fs, x = rates[kinds[c]], signals[c]
            dur = float(rng.uniform(30.0, 300.0))
            a, b = int(onset * fs), min(int((onset + dur) * fs), len(x))
            tt = np.arange(b - a) / fs
            x[a:b] += (rng.uniform(40.0, 150.0) * np.hanning(b - a)
                       * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * tt + rng.uniform(0, 2 * np.pi)))
            rows.append((onset, dur, "sweat", c))
        else:
            c = electrical[int(rng.integers(len(electrical)))]
            fs, x = rates[kinds[c]], signals[c]
            dur = float(rng.uniform(60.0, 1200.0))
            if night.cfg.line_freq >= fs / 2:
                continue  # not representable at this rate
            a, b = int(onset * fs), min(int((onset + dur) * fs), len(x))
            tt = np.arange(a, b) / fs
            x[a:b] += rng.uniform(5.0, 40.0) * np.sin(2 * np.pi * night.cfg.line_freq * tt)
            rows.append((onset, dur, "line", c))
    df = pd.DataFrame(rows, columns=columns)
    df["onset"] = df["onset"].astype(float).round(2)
    df["duration"] = df["duration"].astype(float).round(2)
    return df

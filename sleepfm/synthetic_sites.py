"""Synthetic benchmark sites: simulated human scorers and recording sites that differ.

On nights of the plain generator (:mod:`sleepfm.synthetic`) labels are the generator's exact
truth and every night comes from one "site", so staging methods all look excellent and cannot be
ranked. Real benchmarks are hard for two reasons this module simulates:

1. **Scorers disagree.** :func:`score_night` gives the hypnogram a simulated human scorer
   (:data:`SCORERS`) assigns to a generated night, from its true stages and the per-epoch evidence
   the generator records (:attr:`~sleepfm.synthetic.SyntheticNight.evidence`).
2. **Test nights come from another site.** :data:`SITE_PROFILES` holds :class:`SiteProfile` s: the
   training site ``"A"`` and a new site ``"B"`` with other channel names, sampling rates,
   amplifier gain, noise, mains frequency and artefacts, and an older, more apnoeic population
   with fragmented sleep and less N3. :func:`generate_site_night` makes one night of a site and
   :func:`write_site_cohort` writes a folder the pipeline reads, labelled by one scorer.

Everything is **synthetic** and derived from seeds: the same arguments give the same files.

The scorer model
----------------
For each epoch of true stage ``s`` and each neighbouring stage ``k`` a *support* (log-odds that
the scorer calls the epoch ``k``) is computed from what makes that epoch ambiguous:

- stage changes: an epoch of stage ``k`` 1 (full weight) or 2 (half weight) epochs away, so
  boundaries move by an epoch or two;
- sleep onset: the W/N1 epochs within 2 of the first sleep epoch;
- N2/N3: the fraction of the epoch in which a frontal lead swings >= 75 uV at 0.5-2 Hz
  (``evidence["so_fraction"]``) against the scorer's threshold (the AASM 20 % rule; 20 % and
  23 % for the two scorers), on a 5 %-wide logistic scale;
- N1/N2: an N2 epoch without spindle or K-complex, an N1 epoch that holds some;
- W/N1 and REM/N1: arousals in the epoch, eyes closed in drowsy W, few rapid eye movements in
  REM.

Only moves between neighbouring stages get support (W/N1, N1/N2, N1/REM, N2/N3, N2/REM, and W
from N2 or REM at arousals); W/N3 or N3/REM never happen. Evidence alone never makes a move more
likely than not (support is capped at 0 log-odds): the scorer also sees what the summary leaves
out. To the support each scorer adds

- their bias per target stage: ``scorer0`` scores more N1 (+0.25) and less W (-0.2) with the
  20 % N3 rule; ``scorer1`` scores more W (+0.3), less N1 (-0.2) and less N3 (-0.2, 23 % rule);
- their lapses: one AR(1) sequence per target stage (SD 1.3 log-odds, correlation 0.9 from one
  epoch to the next), so a doubtful stretch is scored alike for a few epochs;
- the AASM continuation rules: after an epoch they scored N2 or REM, +1 to keep that stage.

Each epoch gets the stage of largest support when that support is above 0, else its true stage.

Measured agreement (Cohen's kappa pooled over epochs; 8-h nights of :func:`generate_site_night`,
seed 0, subjects 0-15 — the same 8-h nights give the same scores with any montage, since
stages and evidence do not depend on it; subjects 0-39 in brackets):

================  ==============  ==============
Cohen's kappa     site A          site B
================  ==============  ==============
scorer0~scorer1   0.825 (0.814)   0.766 (0.766)
scorer0~truth     0.866 (0.850)   0.804 (0.808)
scorer1~truth     0.877 (0.872)   0.844 (0.841)
================  ==============  ==============

Per night, scorer0~scorer1 ranges 0.72-0.88 (A) and 0.70-0.82 (B). Site B agrees less: older
subjects with fragmented sleep have more N1, more transitions and more borderline N3. Over the 40
nights of site A, 94 % of the scorer0/scorer1 disagreements involve N1 or are N2 against N3,
59 % lie within 2 epochs of a true stage change; scorer0 scores 7.0 % N1 and 16.1 % N3, scorer1
5.0 % and 14.2 % (truth 6.1 % and 14.6 %). Errors against the truth come in runs (mean 1.7
epochs); fewer than 1 in 5 wrong epochs is an isolated flip inside a stretch of one stage.
Short nights from lights-off agree a little less (six 2-h nights: 0.73-0.78 between scorers
over 12 seeds).

Examples
--------
>>> from sleepfm.synthetic_sites import generate_site_night, score_night
>>> night = generate_site_night("B", 0, hours=0.5)
>>> night.channel_names[:3]
['EEG C3-A2', 'EEG C4-A1', 'EEG O1-A2']
>>> labels = score_night(night, 1)
>>> len(labels) == len(night.stages)
True
"""
from __future__ import annotations

import logging
import re
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal as sps

from .channels import DEFAULT_CHANNEL_MAP
from .eval.metrics import cohen_kappa
from .exceptions import DataWarning
from .io.cohort import COHORT_NAME, merge_cohorts, read_cohort, write_cohort
from .io.hypnogram import Hypnogram
from .io.labels import read_stages
from .synthetic import (EVIDENCE_COLUMNS, MONTAGES, SyntheticConfig, SyntheticNight,
                        generate_night, write_night)
from .utils import check_option, check_type, write_json_atomic
from .vocab import EPOCH_S, record_id

logger = logging.getLogger(__name__)

_W, _N1, _N2, _N3, _REM = range(5)
_MAX_SUPPORT = 0.0  # evidence alone never makes a move more likely than not
_CONTINUED = (_N2, _REM)  # the stages AASM continuation rules extend
SCORERS_DIR = "scorers"
AGREEMENT_NAME = "agreement.json"


# ---------------------------------------------------------------------------------------------
# Simulated scorers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScorerProfile:
    """How a simulated human scorer departs from the true stages.

    Parameters
    ----------
    name : str
        Also seeds the scorer's lapses (two profiles of one name lapse alike).
    bias : tuple of 5 floats, default=(0, 0, 0, 0, 0)
        Log-odds added to every move *to* W, N1, N2, N3 and REM (positive: scores more of it).
    n3_threshold : float, default=0.20
        Fraction of an epoch holding >= 75 uV slow waves from which this scorer calls N3.
    lapse_sd : float, default=1.3
        Standard deviation of the scorer's lapses, in log-odds.
    persistence : float, default=0.9
        Correlation of the lapses from one epoch to the next (longer runs when closer to 1).
    continuation : float, default=1.0
        Log-odds added to keeping N2 or REM after an epoch the scorer gave that stage (the AASM
        continuation rules: N2 and REM go on until something clearly changes them).
    """

    name: str
    bias: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    n3_threshold: float = 0.20
    lapse_sd: float = 1.3
    persistence: float = 0.9
    continuation: float = 1.0

    def __post_init__(self):
        if len(self.bias) != 5 or not np.all(np.isfinite(self.bias)):
            raise ValueError(f"scorer {self.name!r}: bias needs 5 finite log-odds (W, N1, N2, N3, "
                             f"REM), got {self.bias!r}.")
        if not (0 < self.n3_threshold < 1 and self.lapse_sd >= 0 and 0 <= self.persistence < 1
                and self.continuation >= 0):
            raise ValueError(f"scorer {self.name!r}: need 0 < n3_threshold < 1, lapse_sd >= 0, "
                             "0 <= persistence < 1 and continuation >= 0.")


#: The simulated scorers, by index (``scorer=0`` is the first).
SCORERS: tuple[ScorerProfile, ...] = (
    ScorerProfile("scorer0", bias=(-0.2, 0.25, 0.0, 0.0, 0.0), n3_threshold=0.20),
    ScorerProfile("scorer1", bias=(0.3, -0.2, 0.0, -0.2, 0.0), n3_threshold=0.23),
)


def _profile(scorer) -> ScorerProfile:
    if isinstance(scorer, ScorerProfile):
        return scorer
    if isinstance(scorer, (bool, np.bool_)) or not isinstance(scorer, (int, np.integer)):
        raise TypeError(f"scorer must be an index into SCORERS or a ScorerProfile, got {scorer!r}.")
    check_option("scorer", int(scorer), range(len(SCORERS)))
    return SCORERS[int(scorer)]


def _near(stages: np.ndarray, stage: int) -> np.ndarray:
    """1 where an epoch 1 away has ``stage``, 0.5 where one 2 away has, else 0."""
    hit = np.pad(stages == stage, 2)
    one = hit[1:-3] | hit[3:-1]
    two = hit[:-4] | hit[4:]
    return np.where(one, 1.0, np.where(two, 0.5, 0.0))


def _support(stages: np.ndarray, ev: pd.DataFrame, n3_threshold: float) -> np.ndarray:
    """Log-odds ``(n_epochs, 5)`` that a neutral scorer moves each epoch to each stage (-inf for
    its own stage and for moves no scorer makes)."""
    n = len(stages)
    near = {k: _near(stages, k) for k in range(5)}
    sleep = np.flatnonzero(stages >= _N1)
    onset = np.zeros(n)
    if len(sleep):
        onset[max(sleep[0] - 2, 0):sleep[0] + 3] = 1.0
    so = ev["so_fraction"].to_numpy(float)
    graphoelements = (ev["spindles"] + ev["kcomplexes"]).to_numpy(float)
    arousal = ev["arousal"].to_numpy(float)
    eyes = ev["eyes_closed"].to_numpy(float)
    rems = ev["rem_bursts"].to_numpy(float)
    near_sleep = np.maximum.reduce([near[_N1], near[_N2], near[_REM]])
    lighter = np.maximum(near[_N1], near[_W])
    bare = (graphoelements == 0).astype(float)
    margin = 0.05
    table = {
        (_W, _N1): -4.0 + 2.5 * near_sleep + 1.0 * eyes * near_sleep + 1.0 * onset,
        (_N1, _W): -2.2 + 1.5 * near[_W] + 3.0 * arousal + 0.5 * onset,
        (_N1, _N2): -2.2 + 1.5 * near[_N2] + 0.6 * np.minimum(graphoelements, 3.0),
        (_N1, _REM): -2.5 + 2.0 * near[_REM] + 0.5 * np.minimum(rems, 2.0),
        (_N2, _N1): -3.2 + 1.5 * lighter + 1.2 * bare + 3.0 * arousal,
        (_N2, _N3): (so - n3_threshold) / margin + 0.8 * near[_N3],
        (_N2, _W): -5.0 + 4.0 * arousal + 1.0 * near[_W],
        (_N2, _REM): -4.5 + 2.0 * near[_REM] + 0.5 * bare,
        (_N3, _N2): (n3_threshold - so) / margin + 0.8 * near[_N2],
        (_REM, _N1): -3.2 + 1.5 * lighter + 1.0 * np.clip(1.0 - rems, 0.0, 1.0) + 3.0 * arousal,
        (_REM, _W): -5.0 + 4.0 * arousal + 1.0 * near[_W],
        (_REM, _N2): -4.5 + 2.0 * near[_N2],
    }
    out = np.full((n, 5), -np.inf)
    for (true, scored), values in table.items():
        rows = stages == true
        out[rows, scored] = np.minimum(values[rows], _MAX_SUPPORT)
    return out


def _ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float) -> np.ndarray:
    """Unit-variance AR(1) sequences along the last axis."""
    burn = int(np.ceil(5.0 / max(1.0 - rho, 1e-3)))
    e = rng.standard_normal((shape[0], shape[1] + burn))
    return sps.lfilter([np.sqrt(1.0 - rho * rho)], [1.0, -rho], e, axis=1)[:, burn:]


def _kappa(a, b) -> float:
    """Cohen's kappa of two stage sequences over the epochs both scored
    (:func:`sleepfm.eval.cohen_kappa`)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    keep = (a >= 0) & (b >= 0)
    return cohen_kappa(a[keep], b[keep])


def score_night(night: SyntheticNight, scorer: int | ScorerProfile = 0, *,
                seed: int = 0) -> Hypnogram:
    """The hypnogram a simulated human scorer gives a generated night.

    Parameters
    ----------
    night : SyntheticNight
        A night of :func:`sleepfm.synthetic.generate_night` (or of this module), with its
        :attr:`~sleepfm.synthetic.SyntheticNight.evidence`.
    scorer : int or ScorerProfile, default=0
        Index into :data:`SCORERS`, or a profile of your own.
    seed : int, default=0
        With the night's record id and the scorer's name, seeds the scorer's lapses: the same
        arguments give the same hypnogram.

    Returns
    -------
    Hypnogram
        AASM stages (0-4) per 30 s epoch; unscored epochs of the night stay -1.

    Raises
    ------
    ValueError
        The night has no evidence table of its length (it was not made by the generator), or
        the seed is negative.

    Notes
    -----
    The model, its parameters and the agreement it gives are in the module docstring.
    """
    profile = _profile(scorer)
    check_type("night", night, SyntheticNight)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    ev = night.evidence
    missing = [c for c in EVIDENCE_COLUMNS if c not in ev.columns]
    if missing or len(ev) != len(night.stages):
        raise ValueError(f"{night.record_id}: no per-epoch evidence to score from (columns "
                         f"{missing} missing or {len(ev)} rows for {len(night.stages)} epochs); "
                         "score nights made by sleepfm.synthetic.generate_night or "
                         "generate_site_night, cropped with SyntheticNight.crop.")
    stages = night.stages.astype(np.int64)
    logits = _support(stages, ev, profile.n3_threshold) + np.asarray(profile.bias)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(
        zlib.crc32(night.record_id.encode()), zlib.crc32(profile.name.encode()))))
    logits += profile.lapse_sd * _ar1(rng, (5, len(stages)), profile.persistence).T
    return Hypnogram(_decide(stages, logits, profile.continuation))


def _decide(stages: np.ndarray, logits: np.ndarray, continuation: float) -> np.ndarray:
    """Epoch by epoch: the stage of largest log-odds when above 0 (else the true one); after an
    epoch scored N2 or REM, that stage is favoured by ``continuation``."""
    scored = stages.astype(np.int8)
    previous = -1
    for e, (true, row) in enumerate(zip(stages.tolist(), logits.tolist())):
        if true < 0:
            previous = -1
            continue
        if previous in _CONTINUED and previous != true and row[previous] > -np.inf:
            row[previous] += continuation
        best = max(range(5), key=row.__getitem__)
        if row[best] > 0:
            scored[e] = best
        previous = int(scored[e])
    return scored


# ---------------------------------------------------------------------------------------------
# Sites
# ---------------------------------------------------------------------------------------------
_ELECTRICAL = ("eeg", "eog", "emg", "ecg")
_SITE_NAME = re.compile(r"[A-Za-z0-9]{1,16}")


@dataclass(frozen=True)
class SiteProfile:
    """A recording site: its montage and amplifiers, and the population it records.

    Parameters
    ----------
    name : str
        Letters and digits; prefixes the site's record and subject ids (``SITE<name>_0003``).
    description : str
    montage : tuple of (str, str)
        ``(channel name at this site, channel of the 'clinical' montage of
        :data:`sleepfm.synthetic.MONTAGES`)``: which generated channel each recorded one is, in
        the order the site writes them. The project's channel map must read each name as the
        kind of the channel it stands for.
    sample_rates : tuple of (str, float), default=()
        Rate overrides by channel kind (``(("eeg", 200.0),)``), as in
        :class:`~sleepfm.synthetic.SyntheticConfig`.
    gain_range : tuple of (float, float), default=(1.0, 1.0)
        Amplifier gain of each channel (SpO2 excepted), drawn per night, log-uniformly.
    noise_uv : float, default=0.0
        RMS of white noise added to EEG, EOG, EMG and ECG channels, uV.
    hum_uv : tuple of (float, float), default=(0.0, 0.0)
        Range of the amplitude of mains hum (at ``line_freq``) on the same channels, drawn per
        channel and night, uV.
    line_freq : float, default=50.0
        Mains frequency, Hz (also that of line-noise artefacts).
    artefact_rate : float, default=0.0
        Artefacts per hour (see :class:`~sleepfm.synthetic.SyntheticConfig`).
    age_range, severity_mix : optional
        The population (see :class:`~sleepfm.synthetic.SyntheticConfig`); ``None`` is the
        generator's clinical mix.
    fragmentation, n3_scale : float, default=1.0
        Sleep fragmentation and amount of N3 (see :class:`~sleepfm.synthetic.SyntheticConfig`).
    """

    name: str
    description: str
    montage: tuple[tuple[str, str], ...]
    sample_rates: tuple[tuple[str, float], ...] = ()
    gain_range: tuple[float, float] = (1.0, 1.0)
    noise_uv: float = 0.0
    hum_uv: tuple[float, float] = (0.0, 0.0)
    line_freq: float = 50.0
    artefact_rate: float = 0.0
    age_range: tuple[float, float] | None = None
    severity_mix: tuple[float, float, float, float] | None = None
    fragmentation: float = 1.0
    n3_scale: float = 1.0

    def __post_init__(self):
        if not _SITE_NAME.fullmatch(str(self.name)):
            raise ValueError(f"site name {self.name!r} must be 1-16 letters or digits (it goes "
                             "into record ids).")
        clinical = dict(MONTAGES["clinical"])
        unknown = [src for _, src in self.montage if src not in clinical]
        names = [name for name, _ in self.montage]
        if not self.montage or unknown or len(set(names)) != len(names):
            raise ValueError(f"site {self.name}: montage must map distinct channel names to "
                             f"channels of the clinical montage {list(clinical)}; unknown "
                             f"{unknown}.")
        misread = [name for name, src in self.montage
                   if DEFAULT_CHANNEL_MAP.kind(name) != clinical[src]]
        if misread:
            raise ValueError(f"site {self.name}: the channel map does not read {misread} as the "
                             "kind of the channels they stand for; pick names it recognises "
                             "(sleepfm.channels.DEFAULT_CHANNEL_MAP.kind).")
        if not 0 < self.gain_range[0] <= self.gain_range[1]:
            raise ValueError(f"site {self.name}: gain_range must be 0 < low <= high, got "
                             f"{self.gain_range!r}.")
        if not (self.noise_uv >= 0 and 0 <= self.hum_uv[0] <= self.hum_uv[1]):
            raise ValueError(f"site {self.name}: noise_uv and hum_uv must be >= 0 (hum as "
                             "(low, high)).")

    @property
    def channel_names(self) -> list[str]:
        """The site's channel names, in montage order."""
        return [name for name, _ in self.montage]

    def config(self, hours: float) -> SyntheticConfig:
        """The generator config of a night of ``hours`` at this site (clinical montage)."""
        return SyntheticConfig(
            duration_h=hours, montage="clinical", sample_rates=dict(self.sample_rates) or None,
            artefact_rate=self.artefact_rate, line_freq=self.line_freq, age_range=self.age_range,
            severity_mix=self.severity_mix, fragmentation=self.fragmentation,
            n3_scale=self.n3_scale)


#: The benchmark's sites. ``"A"`` is the training site: the generator's clinical montage, AASM
#: channel names, 256 Hz, 50 Hz mains, its default population, 2 artefacts per hour. ``"B"`` is
#: a new site: A1/A2-referenced names and no frontal EEG, 200 Hz electrophysiology and 25 Hz
#: respiration, amplifier gain x0.5-x2 per channel and night, a 3 uV white-noise floor, 60 Hz
#: hum of 2-15 uV, 8 artefacts per hour, and an older (55-85 y), more apnoeic population
#: (severity mix 10/25/35/30 %) with 1.6x the fragmentation and 0.6x the N3.
SITE_PROFILES: dict[str, SiteProfile] = {
    "A": SiteProfile(
        "A", "training site: clinical montage, AASM names, usual clinical population",
        montage=tuple((name, name) for name, _ in MONTAGES["clinical"]), artefact_rate=2.0),
    "B": SiteProfile(
        "B", "new site: other names and rates, variable gain, noise and 60 Hz hum, older and "
             "more apnoeic population with fragmented sleep and less N3",
        montage=(("EEG C3-A2", "C3-M2"), ("EEG C4-A1", "C4-M1"), ("EEG O1-A2", "O1-M2"),
                 ("EEG O2-A1", "O2-M1"), ("EOG(L)", "E1-M2"), ("EOG(R)", "E2-M1"),
                 ("EMG Chin", "Chin"), ("EMG LAT", "Leg L"), ("EMG RAT", "Leg R"), ("EKG", "ECG"),
                 ("Thermistor", "Airflow"), ("PTAF", "Nasal Pressure"), ("Chest", "Thorax"),
                 ("ABD", "Abdomen"), ("SaO2", "SpO2")),
        sample_rates=(("eeg", 200.0), ("eog", 200.0), ("emg", 200.0), ("ecg", 200.0),
                      ("resp", 25.0)),
        gain_range=(0.5, 2.0), noise_uv=3.0, hum_uv=(2.0, 15.0), line_freq=60.0,
        artefact_rate=8.0, age_range=(55.0, 85.0), severity_mix=(0.1, 0.25, 0.35, 0.3),
        fragmentation=1.6, n3_scale=0.6),
}


def _site(site) -> SiteProfile:
    if isinstance(site, SiteProfile):
        return site
    check_option("site", site, SITE_PROFILES)
    return SITE_PROFILES[site]


def site_ids(site: str, subject: int) -> tuple[str, str]:
    """``(record_id, subject_id)`` of a site's subject: ``SITEB_0003_N1`` and ``SITEB_0003``."""
    subject_id = f"SITE{site}_{subject:04d}"
    return f"{subject_id}_N1", subject_id


def generate_site_night(site: str | SiteProfile = "A", subject: int = 0, *, hours: float = 1.0,
                        seed: int = 0) -> SyntheticNight:
    """One night of a site's subject, as that site records it.

    Parameters
    ----------
    site : str or SiteProfile, default='A'
        A key of :data:`SITE_PROFILES`, or a profile of your own.
    subject : int, default=0
        Subject number within the site (its ids come from :func:`site_ids`).
    hours : float, default=1.0
        Length from lights-off; a whole number of 30 s epochs.
    seed : int, default=0
        With the site's name and ``subject``, determines the night: the same arguments give
        bit-identical signals; sites and subjects differ.

    Returns
    -------
    SyntheticNight
        The site's channel names, rates, gain, noise and hum; ``stages`` are the true stages and
        ``evidence`` what scorers see. ``subject`` adds ``site`` and ``gains`` (channel ->
        amplifier gain).

    Raises
    ------
    InvalidParameterError
        Unknown site.
    ValueError, SignalError
        A negative subject or seed, or hours that are not whole epochs.
    """
    profile = _site(site)
    for name, value in (("subject", subject), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    rid, sid = site_ids(profile.name, int(subject))
    night_seed = int(np.random.SeedSequence(
        [int(seed), zlib.crc32(profile.name.encode()), int(subject)]).generate_state(1)[0])
    with warnings.catch_warnings():
        # a short night of a severe subject holds fewer events than its AHI asks for
        warnings.filterwarnings("ignore", "AHI .* asks for", DataWarning)
        night = generate_night(profile.config(hours), seed=night_seed, record_id=rid)
    rng = np.random.default_rng(np.random.SeedSequence(night_seed, spawn_key=(1,)))
    signals, rates, units, kinds, gains = {}, {}, {}, {}, {}
    lo, hi = np.log(profile.gain_range)
    for name, source in profile.montage:
        x, kind, fs = night.signals[source], night.kinds[source], night.sample_rates[source]
        gain = 1.0 if kind == "spo2" else float(np.exp(rng.uniform(lo, hi)))
        x = x * gain
        if kind in _ELECTRICAL:
            if profile.noise_uv > 0:
                x += rng.normal(0.0, profile.noise_uv, len(x))
            hum = rng.uniform(*profile.hum_uv)
            if hum > 0 and profile.line_freq < fs / 2:
                x += hum * np.sin(2 * np.pi * profile.line_freq * np.arange(len(x)) / fs
                                  + rng.uniform(0, 2 * np.pi))
        signals[name], rates[name], units[name], kinds[name] = x, fs, night.units[source], kind
        gains[name] = round(gain, 4)
    rename = {source: name for name, source in profile.montage}
    artefacts = night.artefacts[night.artefacts["channel"].isin([*rename, "*"])]
    artefacts = artefacts.assign(channel=artefacts["channel"].map(lambda c: rename.get(c, c)))
    subject_facts = {**night.subject, "subject_id": sid, "site": profile.name, "gains": gains}
    return replace(night, signals=signals, sample_rates=rates, units=units, kinds=kinds,
                   subject=subject_facts, artefacts=artefacts.reset_index(drop=True))


# ---------------------------------------------------------------------------------------------
# Writing a site's cohort
# ---------------------------------------------------------------------------------------------
COHORT_COLUMNS = ("record_id", "subject_id", "site", "age", "sex", "ahi")


def write_site_cohort(directory, n_subjects: int, *, site: str | SiteProfile = "A",
                      hours: float = 1.0, seed: int = 0, scorer: int = 0, first_subject: int = 0,
                      channels: list[str] | None = None,
                      excerpt_of: float | None = None) -> pd.DataFrame:
    """Write one night per subject of a site, labelled by a simulated scorer.

    Files, per night: ``<record_id>.edf`` and ``<record_id>.events.csv`` as
    :func:`~sleepfm.synthetic.write_night` writes them, and ``<record_id>.csv``, the stages
    scorer ``scorer`` gives (SleepFM CSV). Beside them, ``scorers/<record_id>.scorer<k>.csv`` for
    every scorer of :data:`SCORERS` (the labelling one included) and
    ``scorers/<record_id>.truth.csv`` (the generator's stages); ``cohort.csv`` (columns of
    :data:`COHORT_COLUMNS`, merged with the rows of other records already there, so two sites
    can share a folder); and ``scorers/agreement.json``, Cohen's kappa and accuracy between
    the scorers and of each with the truth, per site and overall, over every night the folder
    holds.

    Parameters
    ----------
    directory : path-like
        Created when missing; files of the same records are replaced.
    n_subjects : int
    site : str or SiteProfile, default='A'
    hours : float, default=1.0
        Length of each recording: the night from lights-off, or an excerpt (``excerpt_of``).
    seed : int, default=0
        The folder is a function of ``site``, ``hours``, ``seed`` and the subject numbers; the
        scorers' lapses are seeded by ``seed`` too.
    scorer : int, default=0
        Index into :data:`SCORERS` of the scorer whose stages are the labels.
    first_subject : int, default=0
        Subjects ``first_subject`` .. ``first_subject + n_subjects - 1`` are written (add nights
        to a folder without rewriting the first ones).
    channels : list of str, optional
        Keep only these of the site's channels (default: all).
    excerpt_of : float, optional
        Generate nights of this many hours and keep a window of ``hours`` at a random whole
        epoch (drawn per night from ``seed``), so that short recordings hold the stage mix of
        whole nights (REM comes late: the first hour after lights-off has almost none). The
        start is the ``excerpt_start_h`` column of ``cohort.csv``.

    Returns
    -------
    pandas.DataFrame
        The cohort rows of the nights written (columns :data:`COHORT_COLUMNS`, and
        ``excerpt_start_h`` with ``excerpt_of``); ``ahi`` is the subject's AHI, which the night's
        events follow.

    Raises
    ------
    InvalidParameterError
        Unknown site, scorer or channel (the message lists the known ones).

    Examples
    --------
    >>> write_site_cohort("runs/sites", 4, site="A", hours=0.5)  # doctest: +SKIP
    >>> write_site_cohort("runs/sites", 4, site="B", hours=0.5)  # doctest: +SKIP
    """
    profile = _site(site)
    check_type("scorer", scorer, int)
    _profile(scorer)
    check_type("n_subjects", n_subjects, int)
    check_type("first_subject", first_subject, int)
    if n_subjects < 1 or first_subject < 0:
        raise ValueError(f"need n_subjects >= 1 and first_subject >= 0, got {n_subjects} and "
                         f"{first_subject}.")
    for name in channels or ():
        check_option(f"channel of site {profile.name}", name, profile.channel_names)
    if excerpt_of is not None and not excerpt_of >= hours:
        raise ValueError(f"excerpt_of={excerpt_of} h must be at least hours={hours} h.")
    directory = Path(directory)
    (directory / SCORERS_DIR).mkdir(parents=True, exist_ok=True)
    rows = []
    for subject in range(first_subject, first_subject + n_subjects):
        night = generate_site_night(profile, subject, hours=excerpt_of or hours, seed=seed)
        start = 0.0
        if excerpt_of is not None:
            rng = np.random.default_rng([seed, zlib.crc32(profile.name.encode()), subject, 1])
            keep = int(round(hours * 3600 / EPOCH_S))
            start = float(rng.integers(0, len(night.stages) - keep + 1)) * EPOCH_S
            night = night.crop(start, start + keep * EPOCH_S)
        if channels:
            night = night.pick(channels)
        rid = night.record_id
        if record_id(f"{rid}.edf") != rid:
            raise ValueError(f"record id {rid!r} does not survive sleepfm.vocab.record_id; "
                             "rename the site.")
        hypnograms = {f"scorer{k}": score_night(night, k, seed=seed) for k in range(len(SCORERS))}
        write_night(replace(night, stages=hypnograms[f"scorer{scorer}"].stages), directory)
        for who, hyp in {**hypnograms, "truth": Hypnogram(night.stages)}.items():
            hyp.to_csv(directory / SCORERS_DIR / f"{rid}.{who}.csv")
        rows.append({"record_id": rid, "subject_id": night.subject["subject_id"],
                     "site": profile.name, "age": night.subject["age"],
                     "sex": night.subject["sex"], "ahi": night.subject["ahi"],
                     **({"excerpt_start_h": start / 3600} if excerpt_of is not None else {})})
    new = pd.DataFrame(rows, columns=list(COHORT_COLUMNS) + (
        ["excerpt_start_h"] if excerpt_of is not None else []))
    path = directory / COHORT_NAME
    cohort = merge_cohorts(read_cohort(path), new) if path.is_file() else new
    write_cohort(cohort, path)
    write_json_atomic(directory / SCORERS_DIR / AGREEMENT_NAME, scorer_agreement(directory))
    logger.info("wrote %d nights of site %s (labels of scorer %d) to %s", len(new), profile.name,
                scorer, directory)
    return new


def scorer_agreement(directory) -> dict:
    """Agreement of the scorers of a folder written by :func:`write_site_cohort`.

    Parameters
    ----------
    directory : path-like
        Holds ``cohort.csv`` and ``scorers/``.

    Returns
    -------
    dict
        ``{"sites": {site: stats}, "all": stats}``; ``stats`` holds ``records``, ``epochs``,
        ``kappa`` and ``accuracy``, each of the latter two keyed ``"scorer0~scorer1"``,
        ``"scorer0~truth"``, ... (epochs pooled over the nights).
    """
    directory = Path(directory)
    cohort = read_cohort(directory / COHORT_NAME)
    if "site" not in cohort.columns:
        cohort["site"] = ""
    who = [f"scorer{k}" for k in range(len(SCORERS))] + ["truth"]
    stages: dict[str, dict[str, list]] = {}
    for rid, site in zip(cohort["record_id"], cohort["site"].astype(str)):
        files = {w: directory / SCORERS_DIR / f"{rid}.{w}.csv" for w in who}
        if all(f.is_file() for f in files.values()):
            per_site = stages.setdefault(site, {w: [] for w in who})
            for w, f in files.items():
                per_site[w].append(read_stages(f).stages)

    def stats(groups: list[dict]) -> dict:
        joined = {w: np.concatenate([s for g in groups for s in g[w]]) for w in who}
        pairs = [(a, b) for i, a in enumerate(who) for b in who[i + 1:]]
        return {"records": sum(len(g["truth"]) for g in groups), "epochs": len(joined["truth"]),
                "kappa": {f"{a}~{b}": round(_kappa(joined[a], joined[b]), 4)
                          for a, b in pairs},
                "accuracy": {f"{a}~{b}": round(float(np.mean(joined[a] == joined[b])), 4)
                             for a, b in pairs}}

    out = {"description": "Cohen's kappa and accuracy over 30 s epochs pooled across nights; "
                          "truth = the generator's stages.",
           "sites": {site: stats([g]) for site, g in sorted(stages.items())}}
    out["all"] = stats(list(stages.values())) if stages else {}
    return out

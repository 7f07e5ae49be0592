"""Settings of every stage, one dataclass each, and the one typed loader that reads them.

A stage takes its settings as a dataclass, a YAML file (``sleepfm <stage> --config FILE``) or
keyword overrides; :func:`load_config` accepts all three. Every field is checked for its type and
allowed values when a config is built, so ``batch_size: big`` fails with
"batch_size must be an integer, got 'big'" before any work starts. The command line is built from
these dataclasses (:func:`cli_options`): each field is an option, its help and choices come from
the field's metadata.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from .exceptions import InvalidParameterError
from .utils import check_option
from .vocab import EPOCH_TASKS, SCHEMES

#: Ways to train a staging or events head (``sleepfm finetune staging|events --mode``).
MODES: tuple[str, ...] = ("lstm", "linear", "fewshot", "finetune")
#: Disease models (``sleepfm finetune disease --mode``): Cox heads on the embeddings, or the
#: demographics-only baseline.
DISEASE_MODES: tuple[str, ...] = ("lstm", "mlp", "linear", "demographics")


def setting(default=dataclasses.MISSING, help: str = "", *, choices=None, minimum=None,
            flag: str | None = None, const: tuple[str, Any, str] | None = None,
            default_factory=dataclasses.MISSING):
    """A config field with its help text, allowed values, lower bound and command-line flag.

    ``const`` adds a second flag that sets a fixed value, e.g.
    ``("--allow-truncated", "warn", "read truncated EDFs ...")``.
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "flag": flag,
                "const": const}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------------------------
# type checks
# --------------------------------------------------------------------------------------------
def _describe(hint) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a mapping", tuple: "a list", list: "a list"}
    return names.get(typing.get_origin(hint) or hint, str(hint))


def _check_value(name: str, value, hint):
    """``value`` checked against the type ``hint`` (ints are accepted as floats, lists as tuples)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return _check_value(name, value, option)
            except InvalidParameterError:
                continue
    elif hint is bool and isinstance(value, bool):
        return value
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is str and isinstance(value, str):
        return value
    elif (origin or hint) is dict and isinstance(value, Mapping):
        return dict(value)
    elif (origin or hint) in (tuple, list) and isinstance(value, (list, tuple)):
        return (origin or hint)(value)
    raise InvalidParameterError(f"{name} must be {_describe(hint)}, got {value!r}.")


def parse_text(name: str, text: str, hint):
    """A command-line string as a value of type ``hint`` (mappings and lists are read as YAML)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] \
        if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    if len(options) < len(typing.get_args(hint)) and text.lower() in ("none", "null"):
        return None
    for option in options:
        try:
            if option is int:
                return int(text)
            if option is float:
                return float(text)
            if option is str:
                return text
            value = yaml.safe_load(text)
            if option in (list, tuple) and not isinstance(value, (list, tuple)):
                value = [v.strip() for v in text.split(",") if v.strip()]  # a, b, c
            return _check_value(name, value, option)
        except (ValueError, yaml.YAMLError):
            continue
    raise InvalidParameterError(f"{name} must be {_describe(hint)}, got {text!r}.")


class _Settings:
    """Base of the stage configs: every field is checked when the config is built."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _check_value(f.name, getattr(self, f.name), hints[f.name])
            if f.metadata.get("choices") is not None:
                check_option(f.name, value, f.metadata["choices"])
            low = f.metadata.get("minimum")
            if low is not None and value is not None and value < low:
                raise InvalidParameterError(f"{f.name} must be at least {low}, got {value!r}.")
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (what ``run.json`` records)."""
        return json.loads(json.dumps(asdict(self), default=str))


# --------------------------------------------------------------------------------------------
# the stages' settings
# --------------------------------------------------------------------------------------------
@dataclass
class PreprocessConfig(_Settings):
    """Settings of ``sleepfm preprocess`` (EDF/BDF → HDF5 at 128 Hz).

    Attributes
    ----------
    sample_rate : float, default=128.0
        Output rate in Hz.
    filter_order : int, default=8
        Butterworth order of the anti-alias low-pass (applied forward and backward: zero phase,
        twice the attenuation in dB).
    cutoff_ratio : float, default=0.7
        Low-pass corner as a fraction of the new Nyquist frequency (0.7 × 64 Hz = 44.8 Hz): with
        order 8 applied twice, everything above 64 Hz is attenuated by at least 49 dB while 30 Hz
        keeps 99.9 % of its amplitude.
    clip : float, default=20.0
        Clip z-scored signals to ±clip robust standard deviations (artefact spikes).
    dtype : {'float16', 'float32'}, default='float16'
        Storage type (float16 keeps ~3 significant digits of a z-scored signal).
    compression : {'lzf', 'gzip', None}, default='lzf'
    on_truncated : {'raise', 'warn'}, default='raise'
        A truncated EDF fails, or is read up to its last complete record.
    on_label_mismatch : {'trim', 'raise'}, default='trim'
        Labels longer/shorter than the recording are trimmed/padded with a warning, or fail.
    workers : int, default=1
        Recordings processed in parallel (processes).
    channel_map : str, optional
        YAML file extending the channel alias table (``aliases: {name: kind}``, ``ignore: [...]``).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://HOST:PORT``): each recording is one task
        on its workers, which must see the input folder and the run directory (a shared file
        system). Without it, ``workers`` local processes.
    """

    sample_rate: float = setting(128.0, "output sampling rate (Hz)", minimum=1.0)
    filter_order: int = setting(8, "Butterworth order of the anti-alias low-pass", minimum=1)
    cutoff_ratio: float = setting(0.7, "low-pass corner as a fraction of the new Nyquist rate",
                                  minimum=0.01)
    clip: float = setting(20.0, "clip standardised signals to ±clip", minimum=0.0)
    dtype: str = setting("float16", "storage type", choices=("float16", "float32"))
    compression: str | None = setting("lzf", "HDF5 compression", choices=("lzf", "gzip", None))
    on_truncated: str = setting(
        "raise", "truncated EDFs fail, or are read up to their last complete record",
        choices=("raise", "warn"),
        const=("--allow-truncated", "warn",
               "read truncated EDFs up to their last complete record instead of failing"))
    on_label_mismatch: str = setting("trim", "labels longer/shorter than the recording",
                                     choices=("trim", "raise"))
    workers: int = setting(1, "recordings processed in parallel (processes)", minimum=1)
    channel_map: str | None = setting(None, "YAML extending the channel alias table")
    scheduler: str | None = setting(None, "address of a Dask scheduler (tcp://HOST:PORT) to run "
                                    "the recordings on; the run directory must be shared")

    def key(self) -> str:
        """Settings that change the output; a record preprocessed under other settings is redone."""
        ignored = ("on_label_mismatch", "on_truncated", "workers", "channel_map", "scheduler")
        return json.dumps({k: v for k, v in asdict(self).items() if k not in ignored}, sort_keys=True)


@dataclass
class PretrainConfig(_Settings):
    """Settings of ``sleepfm pretrain`` (self-supervised pre-training with Lightning).

    Attributes
    ----------
    encoder : str, default='sleepfm_base'
        Registered encoder name; ``encoder_overrides`` change its config fields.
    objective : str, default='loo_contrastive'
        Registered objective name; ``objective_kwargs`` are passed to it (e.g. ``temperature``).
    window_s : float, default=300
        Context window in seconds (60 tokens of 5 s).
    batch_size, lr, weight_decay, warmup_fraction, grad_clip : training hyper-parameters
        AdamW with linear warm-up over ``warmup_fraction`` of the steps, then cosine decay.
    max_epochs, max_steps, patience : when to stop (early stopping on ``val/loss``).
    val_fraction : float, default=0.1
        Subjects held out for validation.
    channel_dropout : float, default=0.1
        Probability of dropping each channel in training windows (channel-agnostic learning).
    max_channels : int, optional
        Keep at most this many channels per modality.
    num_workers : int, default=0
        DataLoader worker processes.
    seed : int, default=0
    devices, num_nodes, accelerator, strategy, precision, accumulate : passed to Lightning.
    """

    encoder: str = setting("sleepfm_base", "registered encoder name")
    encoder_overrides: dict = setting(help="encoder config fields to change (YAML mapping)",
                                      default_factory=dict)
    objective: str = setting("loo_contrastive", "registered pre-training objective")
    objective_kwargs: dict = setting(help="options of the objective (YAML mapping)",
                                     default_factory=dict)
    window_s: float = setting(300.0, "context window in seconds", minimum=1.0)
    batch_size: int = setting(32, "windows per step", minimum=1)
    lr: float = setting(1e-3, "peak learning rate", minimum=0.0)
    weight_decay: float = setting(0.05, "AdamW weight decay", minimum=0.0)
    warmup_fraction: float = setting(0.05, "fraction of steps of linear warm-up", minimum=0.0)
    grad_clip: float = setting(1.0, "gradient norm clip", minimum=0.0)
    max_epochs: int = setting(20, "training epochs", minimum=1)
    max_steps: int = setting(-1, "stop after this many steps (-1: no limit)", minimum=-1)
    patience: int = setting(5, "early-stopping patience in epochs (0: off)", minimum=0)
    val_fraction: float = setting(0.1, "fraction of subjects held out for validation",
                                  minimum=0.0)
    channel_dropout: float = setting(0.1, "probability of dropping each training channel",
                                     minimum=0.0)
    max_channels: int | None = setting(None, "at most this many channels per modality", minimum=1)
    num_workers: int = setting(0, "DataLoader worker processes", minimum=0, flag="--workers")
    seed: int = setting(0, "seed of the split, the model and the data order")
    devices: int | str = setting("auto", "Lightning devices (e.g. 1, 4, auto)")
    num_nodes: int = setting(1, "Lightning nodes", minimum=1)
    accelerator: str = setting("auto", "cpu, gpu or auto")
    strategy: str = setting("auto", "auto, ddp, ddp_spawn, ...")
    precision: str = setting("32-true", "32-true, bf16-mixed, 16-mixed")
    accumulate: int = setting(1, "gradient accumulation batches", minimum=1)


@dataclass
class EmbedConfig(_Settings):
    """Settings of ``sleepfm embed`` (store → per-epoch, window and night embeddings).

    Attributes
    ----------
    batch_size : int, default=16
        Windows per forward pass (across records).
    device : str, default='cpu'
        ``cpu`` or ``cuda``; on CUDA the forward pass runs under bf16 autocast.
    num_workers : int, default=0
        DataLoader worker processes.
    keep_tokens : bool, default=False
        Also keep the 5 s token embeddings.
    overwrite : bool, default=False
        Embed again records already embedded with this encoder.
    scheduler : str, optional
        Address of a Dask distributed scheduler: each record is one task on its workers (each
        loads the encoder once), which must see the run directory. Windows are batched within a
        record, so a record's embedding is the same wherever it is computed.
    """

    batch_size: int = setting(16, "windows per forward pass", minimum=1)
    device: str = setting("cpu", "cpu or cuda (bf16 autocast on cuda)")
    num_workers: int = setting(0, "DataLoader worker processes", minimum=0, flag="--workers")
    keep_tokens: bool = setting(False, "also keep the 5 s token embeddings", flag="--tokens")
    overwrite: bool = setting(False, "re-embed records already done")
    scheduler: str | None = setting(None, "address of a Dask scheduler (tcp://HOST:PORT) to run "
                                    "the records on; the run directory must be shared")


def _check_fraction(value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise InvalidParameterError(f"'label_fraction' must be in (0, 1], got {value}.")


@dataclass
class FinetuneConfig(_Settings):
    """Settings of ``sleepfm finetune`` (a staging or events head on a run's embeddings).

    Attributes
    ----------
    mode : {"lstm", "linear", "fewshot", "finetune"}, default="lstm"
        ``lstm``/``linear`` head on frozen embeddings, ``fewshot`` (the LSTM head on ``shots``
        nights or epochs per class), or ``finetune`` (the encoder unfrozen, end to end; staging).
    scheme : {"aasm5", "osf4"}, default="aasm5"
        Stage classes (staging): the five AASM stages or W / light / deep / REM.
    embedding : str, default="fused"
        Which epoch embedding to train on: ``fused`` or a modality (``BAS``, ``ECG``, ...).
    label_fraction : float, default=1.0
        Fraction of the training *subjects* whose labels are used (0 < f <= 1).
    shots : int, optional
        Few-shot size (``mode="fewshot"``): nights, or labelled epochs per class.
    shot_unit : {"nights", "epochs"}, default="nights"
    test_size, val_size : float, default=0.2 and 0.1
        Fractions of subjects held out for testing and for early stopping.
    seed : int, default=0
        Seed of the split, the subsets and the training.
    bidirectional : bool, default=False
        Bidirectional LSTM (offline staging with future context).
    epochs : int, optional
        Training epochs of the head (default: the head's own; 3 for ``finetune``).
    hidden : int, optional
        Hidden size of the head (default: the head's own; 64 for ``finetune``).
    lr : float, optional
        Learning rate (default: the head's own; 1e-4 for the encoder in ``finetune``).
    batch_size : int, default=8
        Windows per step (``finetune``).
    skip_unlabelled : bool, default=False
        Skip records with embeddings but no usable label file (reported) instead of failing.
    device : str, default="cpu"
    """

    mode: str = setting("lstm", "lstm/linear head on frozen embeddings, fewshot, or finetune "
                        "(encoder unfrozen, end to end)", choices=MODES)
    scheme: str = setting("aasm5", "stage classes", choices=tuple(SCHEMES))
    embedding: str = setting("fused", "fused or a modality (BAS, ECG, EMG, RESP)")
    label_fraction: float = setting(1.0, "fraction of training subjects whose labels are used")
    shots: int | None = setting(None, "few-shot size (--mode fewshot)")
    shot_unit: str = setting("nights", "--shots counts nights, or labelled epochs per class",
                             choices=("nights", "epochs"))
    test_size: float = setting(0.2, "fraction of subjects for testing", minimum=0.0)
    val_size: float = setting(0.1, "fraction of subjects for early stopping", minimum=0.0)
    seed: int = setting(0, "seed of the split, the subsets and the training")
    bidirectional: bool = setting(False, "bidirectional LSTM")
    epochs: int | None = setting(None, "training epochs of the head", minimum=1)
    hidden: int | None = setting(None, "hidden size of the head", minimum=1)
    lr: float | None = setting(None, "learning rate", minimum=0.0)
    batch_size: int = setting(8, "windows per step (--mode finetune)", minimum=1)
    skip_unlabelled: bool = setting(False, "leave out records without usable labels (reported) "
                                    "instead of failing")
    device: str = setting("cpu", "torch device")

    def validate(self, task: str) -> None:
        """Check the settings that depend on each other and on the task."""
        check_option("task", task, EPOCH_TASKS)
        _check_fraction(self.label_fraction)
        if self.mode == "fewshot" and (self.shots is None or self.shots < 1):
            raise InvalidParameterError(
                "mode 'fewshot' needs shots >= 1 (--shots K): K nights, or K epochs per class "
                "with --shot-unit epochs.")
        if self.mode != "fewshot" and self.shots is not None:
            raise InvalidParameterError(
                f"'shots' is only used by mode 'fewshot' (got mode {self.mode!r}); use "
                "--label-fraction for the other modes.")
        if task == "events" and self.mode == "finetune":
            raise InvalidParameterError(
                "mode 'finetune' (end-to-end encoder training) is available for the staging "
                "task only; use --mode lstm or linear for events.")
        if task == "events" and self.mode == "fewshot" and self.shot_unit == "epochs":
            raise InvalidParameterError(
                "few-shot by epochs per class applies to staging; use --shot-unit nights for "
                "events.")


@dataclass
class EvaluateConfig(_Settings):
    """Settings of ``sleepfm evaluate`` (held-out test subjects → reports).

    Attributes
    ----------
    n_boot : int, default=1000
        Bootstrap resamples of test subjects for the 95 % intervals.
    seed : int, default=0
        Seed of the bootstrap.
    n_hypnograms : int, default=4
        Test nights drawn in ``hypnograms.png``.
    figures : bool, default=True
        Write the PNG figures.
    """

    n_boot: int = setting(1000, "bootstrap resamples of subjects", minimum=1)
    seed: int = setting(0, "seed of the bootstrap")
    n_hypnograms: int = setting(4, "test nights drawn in hypnograms.png", minimum=1)
    figures: bool = setting(True, "write the PNG figures")


@dataclass
class DiseaseConfig(_Settings):
    """Settings of ``sleepfm finetune disease`` (Cox heads for many phenotypes at once).

    Attributes
    ----------
    outcomes : str, optional
        Outcomes folder: SleepFM's wide tables (``is_event.csv``, ``time_to_event.csv``,
        ``demographics.csv``) or the long ones (``subjects.csv``, ``diagnoses.csv``); see
        :mod:`sleepfm.io.outcomes`. It is copied into ``RUN/outcomes`` (wide); without it, that
        copy is used.
    mode : {"lstm", "mlp", "linear", "demographics"}, default="lstm"
        ``lstm``: SleepFM's recipe, a 2-layer bidirectional LSTM over the night's ``level``
        embeddings, mean over steps, with a demographics embedding; ``mlp``/``linear``: on the
        night embedding; ``demographics``: the demographics-only baseline (a linear Cox model of
        age and sex).
    embedding : str, default="fused"
        ``fused`` or a modality.
    level : {"window", "epoch", "token"}, default="window"
        Steps of the LSTM: 5-minute windows, 30 s epochs or 5 s tokens (``embed --tokens``).
    demographics : bool, default=True
        Give the heads age and sex beside the embeddings.
    baseline : bool, default=True
        Also fit the demographics-only baseline on the same split, so reports compare the two.
    phenotypes : list of str, optional
        Only these phenotypes (columns of the outcome tables); default all with an event.
    penalizer : float, optional
        Ridge penalty (lifelines' meaning; default 0.1 for linear heads, 0.01 for mlp/lstm).
    ties : {"efron", "breslow"}, default="efron"
    hidden : int, optional
        Hidden width of the mlp/lstm (default 64).
    max_iter : int, optional
        Optimiser steps (default: the head's own).
    lr : float, optional
        Adam learning rate of the mlp/lstm (default 1e-2).
    label_fraction : float, default=1.0
        Fraction of the training *subjects* whose outcomes are used.
    test_size, val_size : float, default=0.2 and 0.1
        Fractions of subjects held out for testing and for early stopping.
    test_site : str, optional
        Site transfer: test on every subject of this site (``site`` in the demographics or
        cohort table) and train on the others.
    seed : int, default=0
    device : str, default="cpu"
    """

    outcomes: str | None = setting(None, "outcomes folder (wide or long tables; default: the "
                                   "run's outcomes/ from an earlier call)")
    mode: str = setting("lstm", "LSTM over the night (SleepFM), mlp/linear on the night "
                        "embedding, or the demographics-only baseline", choices=DISEASE_MODES)
    embedding: str = setting("fused", "fused or a modality (BAS, ECG, EMG, RESP)")
    level: str = setting("window", "steps of the LSTM", choices=("window", "epoch", "token"))
    demographics: bool = setting(True, "add age and sex to the embeddings")
    baseline: bool = setting(True, "also fit the demographics-only baseline on the same split")
    phenotypes: list | None = setting(None, "only these phenotypes (comma-separated)")
    penalizer: float | None = setting(None, "ridge penalty (default: 0.1 linear, 0.01 mlp/lstm)",
                                      minimum=0.0)
    ties: str = setting("efron", "tied event times", choices=("efron", "breslow"))
    hidden: int | None = setting(None, "hidden width of the mlp/lstm", minimum=1)
    max_iter: int | None = setting(None, "optimiser steps", minimum=1)
    lr: float | None = setting(None, "Adam learning rate of the mlp/lstm (default 1e-2)",
                               minimum=0.0)
    label_fraction: float = setting(1.0, "fraction of training subjects whose outcomes are used")
    test_size: float = setting(0.2, "fraction of subjects for testing", minimum=0.0)
    val_size: float = setting(0.1, "fraction of subjects for early stopping", minimum=0.0)
    test_site: str | None = setting(None, "test on this site, train on the others (site "
                                    "transfer)")
    seed: int = setting(0, "seed of the split, the subsets and the training")
    device: str = setting("cpu", "torch device")

    def validate(self) -> None:
        """Check the settings that depend on each other."""
        _check_fraction(self.label_fraction)
        if self.mode == "demographics" and not self.demographics:
            raise InvalidParameterError("mode 'demographics' is the demographics-only baseline; "
                                        "it cannot run with --no-demographics.")


@dataclass
class DiseaseEvaluateConfig(_Settings):
    """Settings of ``sleepfm evaluate disease`` (survival metrics, fairness, enrichment,
    attribution on the held-out subjects).

    Attributes
    ----------
    horizon : float, default=6.0
        Years: the time-dependent AUROC, the enrichment outcome and the fairness AUROC.
    n_boot : int, default=1000
        Subject bootstrap resamples of every interval.
    seed : int, default=0
    stratify : {None, "age_decile"}, default=None
        Draw the bootstrap within age deciles.
    alpha : float, default=0.05
        1 - the confidence level, and the false discovery rate of the significance column.
    min_events : int, default=10
        Subgroups with fewer events are listed as too small, not scored.
    fairness : bool, default=True
        Write ``fairness.csv`` (sex, race, age band and site, where known).
    quantiles : list of float, default=[0.05, 0.1, 0.2, 0.3, 0.5]
        Top fractions of the ranking whose enrichment factor is reported.
    candidates_phenotype : str, optional
        Phenotype whose ranked candidates are exported (default: the first).
    min_age, max_age : float, optional
        Inclusion filters of the enrichment (inclusive).
    sex : str, optional
        Inclusion filter of the enrichment.
    site : list of str, optional
        Inclusion filter of the enrichment: only these sites.
    attribution : bool, default=True
        Per-modality ablation: ΔC-index and each subject's Δrisk without each modality.
    figures : bool, default=True
    """

    horizon: float = setting(6.0, "years: AUROC, enrichment and fairness horizon", minimum=0.0)
    n_boot: int = setting(1000, "bootstrap resamples of subjects", minimum=1)
    seed: int = setting(0, "seed of the bootstrap")
    stratify: str | None = setting(None, "draw the bootstrap within age deciles",
                                   choices=(None, "age_decile"))
    alpha: float = setting(0.05, "1 - confidence level; false discovery rate", minimum=0.0)
    min_events: int = setting(10, "subgroups with fewer events are listed as too small",
                              minimum=1)
    fairness: bool = setting(True, "subgroup report (sex, race, age band, site)")
    quantiles: list = setting(help="top fractions for the enrichment factor",
                              default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5])
    candidates_phenotype: str | None = setting(None, "phenotype of the ranked candidate list "
                                               "(default: the first)")
    min_age: float | None = setting(None, "enrichment inclusion: minimum age")
    max_age: float | None = setting(None, "enrichment inclusion: maximum age")
    sex: str | None = setting(None, "enrichment inclusion: this sex only")
    site: list | None = setting(None, "enrichment inclusion: these sites only")
    attribution: bool = setting(True, "per-modality ablation (ΔC-index, Δrisk)")
    figures: bool = setting(True, "write the PNG figures")


@dataclass
class PredictConfig(_Settings):
    """Settings of ``sleepfm predict`` (a new recording → a hypnogram CSV).

    Attributes
    ----------
    keep_work_dir : bool, default=False
        Keep the temporary run directory (preprocessed store + embeddings) for inspection.
    probabilities : bool, default=True
        Add a ``P_<stage>`` column per class.
    on_truncated : {'raise', 'warn'}, optional
        Overrides the run's preprocessing setting for this recording.
    channel_map : str, optional
        A channel map for this recording (default: the one the run was preprocessed with).
    """

    keep_work_dir: bool = setting(False, "keep the temporary preprocessed store and embeddings")
    probabilities: bool = setting(True, "add a probability column per stage")
    on_truncated: str | None = setting(
        None, "truncated EDFs fail, or are read up to their last complete record (default: the "
        "run's preprocessing setting)", choices=(None, "raise", "warn"),
        const=("--allow-truncated", "warn",
               "read a truncated EDF up to its last complete record instead of failing"))
    channel_map: str | None = setting(None, "YAML extending the channel alias table (default: "
                                      "the run's own)")


@dataclass
class DemoConfig(_Settings):
    """Settings of ``sleepfm demo`` (the whole pipeline on a data folder).

    Attributes
    ----------
    encoder : str, default='sleepfm_base'
        Registered encoder name.
    epochs : int, default=3
        Pre-training epochs.
    max_steps : int, default=100
        At most this many pre-training steps (-1: no limit).
    subjects : int, default=300
        Subjects of the synthetic cohort generated into ``RUN/demo_cohort`` (0: none, and no
        disease head).
    minutes : float, default=30
        Length of each cohort night.
    n_boot : int, default=1000
        Bootstrap resamples of the confidence intervals.
    workers : int, default=2
        Preprocessing processes.
    seed : int, default=0
        Seed of the cohort, the splits and the training.
    dashboard : bool, default=True
        ``sleepfm demo`` ends by starting the dashboard on the run (``--no-dashboard``: not).
    """

    encoder: str = setting("sleepfm_base", "registered encoder name")
    epochs: int = setting(3, "pre-training epochs", minimum=1)
    max_steps: int = setting(100, "at most this many pre-training steps (-1: no limit)",
                             minimum=-1)
    subjects: int = setting(300, "subjects of the synthetic demo cohort (0: none)", minimum=0)
    minutes: float = setting(30.0, "minutes of each cohort night", minimum=5.0)
    n_boot: int = setting(1000, "bootstrap resamples of the CIs", minimum=1)
    workers: int = setting(2, "preprocessing processes", minimum=1)
    seed: int = setting(0, "seed of the cohort, the splits and the training")
    dashboard: bool = setting(True, "start the dashboard on the run at the end (the CLI)")


@dataclass
class DashboardConfig(_Settings):
    """Settings of ``sleepfm dashboard`` (the Streamlit app on a run directory).

    Attributes
    ----------
    port : int, default=8501
    address : str, default='127.0.0.1'
        Address the server binds to; anything but a loopback address exposes the run's data to
        the network (a warning says so).
    """

    port: int = setting(8501, "port of the server", minimum=1)
    address: str = setting("127.0.0.1", "address to bind (default: this machine only)")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise InvalidParameterError(f"{path}: config file not found; pass the path of a YAML "
                                    "file with the stage's settings.")
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InvalidParameterError(f"{path}: not valid YAML{line}; fix the file (settings are "
                                    "'name: value' lines).") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InvalidParameterError(f"{path}: expected 'name: value' settings, got a "
                                    f"{type(values).__name__}.")
    return values


def load_config(cls: type, source=None, /, **overrides):
    """A config dataclass from a YAML file, a dict or another config, plus keyword overrides.

    Parameters
    ----------
    cls : type
        One of the config dataclasses of this module.
    source : path-like, dict or ``cls`` instance, optional
        The settings; absent ones keep their defaults.
    **overrides
        Settings that replace those of ``source``.

    Returns
    -------
    cls instance

    Raises
    ------
    InvalidParameterError
        A missing or invalid YAML file, an unknown setting, a wrong type or a value that is not
        allowed; the message names the file and the setting.
    """
    where = ""
    if source is None:
        values = {}
    elif isinstance(source, cls):
        values = {f.name: getattr(source, f.name) for f in fields(cls)}
    elif isinstance(source, Mapping):
        values = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        where = f"{source}: "
        values = _read_yaml(Path(source))
    else:
        raise InvalidParameterError(f"settings must be a {cls.__name__}, a dict or a YAML path, "
                                    f"got {type(source).__name__}.")
    values.update(overrides)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidParameterError(f"{where}unknown settings {unknown}; known: {known}.")
    try:
        return cls(**values)
    except InvalidParameterError as err:
        raise InvalidParameterError(f"{where}{err}") from None


@dataclass(frozen=True)
class CLIOption:
    """How one config field appears on the command line."""

    dest: str
    flag: str
    help: str
    default: Any
    choices: tuple | None
    is_bool: bool
    parse: Callable[[str], Any]
    const: tuple[str, Any, str] | None


def cli_options(cls: type) -> list[CLIOption]:
    """The command-line options of a config dataclass, one per field."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(CLIOption(
            dest=f.name, flag=f.metadata.get("flag") or "--" + f.name.replace("_", "-"),
            help=f.metadata.get("help", ""), default=default, choices=f.metadata.get("choices"),
            is_bool=hints[f.name] is bool,
            parse=lambda text, name=f.name, hint=hints[f.name]: parse_text(name, text, hint),
            const=f.metadata.get("const")))
    return out

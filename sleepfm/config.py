"""Settings of every stage, one dataclass each.

A stage takes its settings as a dataclass, a YAML file (``sleepfm <stage> --config FILE``) or
keyword overrides; :func:`~sleepfm.settings.load_config` accepts all three. Every field is checked
for its type and allowed values when a config is built, so ``batch_size: big`` fails with
"batch_size must be an integer, got 'big'" before any work starts. The command line is built from
these dataclasses (:func:`~sleepfm.settings.cli_options`): each field is an option, its help and
choices come from the field's metadata. The machinery is :mod:`sleepfm.settings`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .channels import LEAD_CONDITIONS
from .exceptions import InvalidParameterError
from .settings import CLIOption, Settings, cli_options, load_config, parse_text, setting
from .utils import check_option
from .vocab import EPOCH_TASKS, SCHEMES

__all__ = ["CLIOption", "cli_options", "load_config", "parse_text", "setting"]  # re-exported

#: Ways to train a staging or events head (``sleepfm finetune staging|events --mode``).
MODES: tuple[str, ...] = ("auto", "lstm", "linear", "mlp", "fewshot", "finetune")
#: Staging heads on frozen inputs, the candidates of ``--mode auto`` (simplest first).
STAGING_HEADS: tuple[str, ...] = ("linear", "mlp", "lstm")
#: Inputs of a head (``--features``): epoch embeddings, spectral features of the store, or both.
FEATURES: tuple[str, ...] = ("auto", "embedding", "spectral", "both")
#: Disease models (``sleepfm finetune disease --mode``): Cox heads on the embeddings, or the
#: demographics-only baseline.
DISEASE_MODES: tuple[str, ...] = ("lstm", "mlp", "linear", "demographics")


# --------------------------------------------------------------------------------------------
# the stages' settings
# --------------------------------------------------------------------------------------------
@dataclass
class PreprocessConfig(Settings):
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
class PretrainConfig(Settings):
    """Settings of ``sleepfm pretrain`` (self-supervised pre-training with Lightning).

    Attributes
    ----------
    encoder : str, default='sleepfm_base'
        Registered encoder name; ``encoder_overrides`` change its config fields.
    objective : str, default='loo_contrastive'
        Registered objective name; ``objective_kwargs`` are passed to it (e.g. ``temperature``).
    window_s : float, default=300
        Context window in seconds (60 tokens of 5 s).
    batch_size, lr, weight_decay, warmup_fraction, grad_clip, betas : training hyper-parameters
        AdamW (``betas``) with linear warm-up over ``warmup_fraction`` of the steps, then cosine
        decay. A ViT-1D encoder (``osf_*``) is trained on single 30 s epochs of the 12 OSF leads
        (``batch_size`` epochs per step); ``window_s``, ``channel_dropout`` and ``max_channels``
        then do not apply (its objectives augment the leads themselves).
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
    betas: tuple = setting((0.9, 0.999), "AdamW betas (e.g. 0.9,0.95)")
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

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            betas = ()
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise InvalidParameterError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        self.betas = betas


@dataclass
class EmbedConfig(Settings):
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
class FinetuneConfig(Settings):
    """Settings of ``sleepfm finetune`` (a staging or events head on a run's embeddings).

    Attributes
    ----------
    mode : {"auto", "lstm", "linear", "mlp", "fewshot", "finetune"}, default="auto"
        ``auto`` (staging): the head and input with the best validation macro-F1 among
        ``candidates`` x inputs (cross-validated over subjects in a small cohort; see
        :mod:`sleepfm.stages.head_select`); for events, the LSTM event head.
        ``lstm``/``linear``/``mlp``: that head on frozen inputs; ``fewshot`` (the LSTM head on
        ``shots`` nights or epochs per class); ``finetune`` (the encoder unfrozen, end to end;
        staging).
    features : {"auto", "embedding", "spectral", "both"}, default="auto"
        The head's input per epoch: the encoder's embeddings, spectral features of the store
        records (:mod:`sleepfm.spectral`: band powers and time-domain statistics of EEG, EOG
        and chin EMG), or both side by side. ``auto``: with ``mode="auto"``, every one that is
        available is a candidate; otherwise the embeddings (the spectral features without
        embeddings).
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
    candidates : tuple of str, default=("linear", "mlp", "lstm")
        Heads ``mode="auto"`` chooses among.
    cv_folds : int, default=5
        Folds (by subject) of the cross-validation ``mode="auto"`` uses when the split has
        fewer than ``min_val_subjects`` validation subjects.
    min_val_subjects : int, default=10
        Validation subjects from which ``mode="auto"`` trusts the split's validation nights
        instead of cross-validating.
    min_steps : int, default=200
        With ``epochs`` unset, train a staging head for at least this many optimiser steps (on
        a few nights one pass over the data is a single step).
    """

    mode: str = setting("auto", "auto (the head with the best validation macro-F1), a lstm/"
                        "linear/mlp head on frozen inputs, fewshot, or finetune (encoder "
                        "unfrozen, end to end)", choices=MODES)
    features: str = setting("auto", "the head's input: epoch embeddings, spectral features of "
                            "the store, both, or auto (candidates of --mode auto)",
                            choices=FEATURES)
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
    candidates: tuple = setting(STAGING_HEADS, "heads --mode auto chooses among (e.g. "
                                "linear,mlp)")
    cv_folds: int = setting(5, "cross-validation folds of --mode auto in a small cohort",
                            minimum=2)
    min_val_subjects: int = setting(10, "validation subjects from which --mode auto uses the "
                                    "split's validation nights instead of cross-validating",
                                    minimum=1)
    min_steps: int = setting(200, "with --epochs unset, train a staging head for at least this "
                             "many optimiser steps", minimum=1)

    def validate(self, task: str) -> None:
        """Check the settings that depend on each other and on the task."""
        check_option("task", task, EPOCH_TASKS)
        _check_fraction(self.label_fraction)
        if not self.candidates:
            raise InvalidParameterError(f"'candidates' is empty; name some of {STAGING_HEADS}.")
        for name in self.candidates:
            check_option("candidates", name, STAGING_HEADS)
        if self.mode == "finetune" and self.features in ("spectral", "both"):
            raise InvalidParameterError(
                "mode 'finetune' trains the encoder end to end on the signals; it takes no "
                f"features={self.features!r}. Use --mode auto, linear, mlp or lstm for a head "
                "on spectral features.")
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
class EvaluateConfig(Settings):
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
class DiseaseConfig(Settings):
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
class DiseaseEvaluateConfig(Settings):
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
class PredictConfig(Settings):
    """Settings of ``sleepfm predict`` (a new recording → a hypnogram CSV).

    Attributes
    ----------
    probabilities : bool, default=True
        Add a ``P_<stage>`` column per class.
    on_truncated : {'raise', 'warn'}, optional
        Overrides the run's preprocessing setting for this recording.
    channel_map : str, optional
        A channel map for this recording (default: the one the run was preprocessed with).
    batch_size : int, default=4
        Encoder windows per forward pass.
    device : str, default='cpu'
        Where the encoder runs (bf16 autocast on CUDA).
    threads : int, default=1
        Channels preprocessed at once: more is faster on idle cores, and each holds about
        50 MB more at 256 Hz over 8 h.
    """

    probabilities: bool = setting(True, "add a probability column per stage")
    on_truncated: str | None = setting(
        None, "truncated EDFs fail, or are read up to their last complete record (default: the "
        "run's preprocessing setting)", choices=(None, "raise", "warn"),
        const=("--allow-truncated", "warn",
               "read a truncated EDF up to its last complete record instead of failing"))
    channel_map: str | None = setting(None, "YAML extending the channel alias table (default: "
                                      "the run's own)")
    batch_size: int = setting(4, "encoder windows per forward pass", minimum=1)
    device: str = setting("cpu", "cpu or cuda (bf16 autocast on cuda)")
    threads: int = setting(1, "channels preprocessed at once (faster; more memory)", minimum=1)


@dataclass
class DemoConfig(Settings):
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


#: Settings of ``sleepfm bench``: linear probing, full fine-tuning, few-shot probing.
BENCH_SETTINGS: tuple[str, ...] = ("linear", "finetune", "fewshot")
#: Baselines of ``sleepfm bench``: YASA's shipped model, YASA's features + LightGBM retrained on
#: the training subjects, and the backbone trained supervised from scratch.
BENCH_BASELINES: tuple[str, ...] = ("yasa", "yasa_lgbm", "scratch")


def _numbers(name: str, values, kind: type, low: float, high: float) -> tuple:
    try:
        out = tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        out = None
    if out is None or any(not low <= v <= high for v in out) or \
            (kind is int and any(float(v) != int(float(v)) for v in values)):
        raise InvalidParameterError(f"{name} must be a list of {'integers' if kind is int else 'numbers'} "
                                    f"in [{low:g}, {high:g}], got {values!r}.")
    return out


@dataclass
class BenchConfig(Settings):
    """Settings of ``sleepfm bench`` (pre-training objectives compared on the same data, tasks
    and budget).

    Attributes
    ----------
    objectives : list of str
        Registered objectives that train a ViT-1D, each pre-trained with the same steps, batch
        and records.
    tasks : list of str
        ``stage`` (= ``stage5`` and ``stage4``), ``arousal``, ``hypopnea``, ``desaturation``.
    settings : list of str
        ``linear`` (frozen backbone, OSF's linear probe), ``finetune`` (end to end), ``fewshot``
        (the linear probe on ``shots`` labelled epochs per class and ``shot_nights`` nights).
    conditions : list of str
        Lead conditions at inference (:data:`sleepfm.channels.LEAD_CONDITIONS`).
    baselines : list of str
        ``yasa``, ``yasa_lgbm`` and/or ``scratch``.
    scaling : list of float
        Fractions of the pre-training records for the data-scaling study of
        ``scaling_objective`` (0: an untrained backbone); empty: no study.
    label_fractions : list of float
        Fractions of the training subjects whose labels the linear probe (and the retrained
        baseline) may use.
    encoder, encoder_overrides : the backbone (an ``osf_*`` name and config changes).
    steps, batch_size, lr : the pre-training budget, the same for every objective.
    probe_epochs : int
        Epochs of the linear probe.
    finetune_steps, finetune_lr : the fine-tuning budget.
    test_size, val_size : float
        Fractions of subjects held out for testing and for model selection.
    test_site : str, optional
        A site of ``cohort.csv`` whose nights form the "new site" test split (never trained on).
    source : str, optional
        Folder of the original recordings for the YASA baselines (default: the folder the run
        was preprocessed from); each file is checked against the checksum the store records.
    n_boot : int
        Subject-bootstrap resamples of the confidence intervals.
    seed, device, num_workers : as elsewhere.
    """

    objectives: tuple = setting(("loo_contrastive", "simclr", "dino", "mae", "vqvae", "ar"),
                                "pre-training objectives to compare")
    tasks: tuple = setting(("stage", "arousal", "hypopnea", "desaturation"), "tasks")
    settings: tuple = setting(BENCH_SETTINGS, "evaluation settings")
    conditions: tuple = setting(tuple(LEAD_CONDITIONS), "lead conditions at inference")
    baselines: tuple = setting(BENCH_BASELINES, "baselines in the same table")
    scaling: tuple = setting((0.0, 0.25, 0.5, 1.0), "fractions of pre-training records for the "
                             "data-scaling study (empty: none)")
    scaling_objective: str = setting("dino", "objective of the data-scaling study")
    label_fractions: tuple = setting((1.0,), "fractions of training subjects with labels")
    shots: tuple = setting((1, 5, 10), "few-shot: labelled epochs per class")
    shot_nights: tuple = setting((1,), "few-shot: labelled nights")
    encoder: str = setting("osf_nano", "backbone (an osf_* encoder)")
    encoder_overrides: dict = setting(help="backbone config changes (YAML mapping)",
                                      default_factory=dict)
    steps: int = setting(200, "pre-training steps of each objective", minimum=1)
    batch_size: int = setting(64, "epochs per step", minimum=2)
    lr: float = setting(5e-4, "peak pre-training learning rate", minimum=0.0)
    probe_epochs: int = setting(30, "epochs of the linear probe", minimum=1)
    finetune_steps: int = setting(100, "steps of full fine-tuning", minimum=1)
    finetune_lr: float = setting(1e-4, "backbone learning rate of fine-tuning", minimum=0.0)
    test_size: float = setting(0.3, "fraction of subjects for testing", minimum=0.0)
    val_size: float = setting(0.15, "fraction of subjects for model selection", minimum=0.0)
    test_site: str | None = setting(None, "site whose nights are the new-site test split")
    source: str | None = setting(None, "folder of the original recordings (YASA baselines)")
    n_boot: int = setting(200, "bootstrap resamples of the CIs", minimum=0)
    seed: int = setting(0, "seed of the split, the subsets and the training")
    device: str = setting("cpu", "torch device")
    num_workers: int = setting(0, "DataLoader worker processes", minimum=0, flag="--workers")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in (("settings", BENCH_SETTINGS), ("baselines", BENCH_BASELINES),
                              ("conditions", tuple(LEAD_CONDITIONS))):
            for value in getattr(self, name):
                check_option(name, value, allowed)
        self.scaling = _numbers("scaling", self.scaling, float, 0.0, 1.0)
        self.label_fractions = _numbers("label_fractions", self.label_fractions, float, 1e-9, 1.0)
        self.shots = _numbers("shots", self.shots, int, 1, 1e9)
        self.shot_nights = _numbers("shot_nights", self.shot_nights, int, 1, 1e9)


@dataclass
class DashboardConfig(Settings):
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



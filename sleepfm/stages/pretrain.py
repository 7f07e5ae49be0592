"""``sleepfm pretrain``: self-supervised pre-training of the encoder on the run's store.

Writes::

    RUN_DIR/checkpoints/encoder/          best encoder (artefact: model.safetensors + config.json)
    RUN_DIR/checkpoints/lightning/last.ckpt   full training state, for resuming after a kill
    RUN_DIR/logs/pretrain/version_N/metrics.csv   train/val loss and learning rate per step/epoch;
                                          each invocation (a resume too) adds a version, see
                                          :func:`read_pretrain_metrics`
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerFn

from ..artifacts import save_encoder
from ..channels import ChannelMap
from ..config import PretrainConfig, load_config
from ..data import WindowDataModule
from ..lead_data import LeadEpochDataModule
from ..exceptions import ConvergenceWarning, InvalidParameterError, SleepFMError, StoreError
from ..io.store import Store
from ..models import ViT1D, create_encoder
from ..models.precision import checked_precision
from ..rundir import RunDir
from ..ssl.base import OBJECTIVES
from ..train import PretrainModule
from .resume import (AtomicCheckpoint, RNGState, changed_settings, read_metrics, record_settings,
                     resumable)

logger = logging.getLogger(__name__)


class _ExportBest(Callback):
    """Export the encoder as safetensors + JSON whenever a training epoch improves the validation
    loss (or the training loss when there is no validation split).

    The validation of the untrained encoder before fitting is the baseline: it is recorded, never
    exported. The best loss and the baseline are kept in ``last.ckpt``, so a resumed run goes on
    comparing with them. With ``ranked=False`` (an objective whose loss moves with its schedules,
    :attr:`~sleepfm.ssl.Objective.loss_ranks_encoders`) the latest encoder is exported instead.
    """

    def __init__(self, directory: Path, metadata: dict, *, ranked: bool = True):
        self.directory = directory
        self.metadata = metadata
        self.ranked = ranked
        self.best = math.inf
        self.baseline: float | None = None
        self.exported: dict | None = None

    def state_dict(self) -> dict:
        return {"best": self.best, "baseline": self.baseline, "exported": self.exported}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.baseline, self.exported = state["best"], state["baseline"], state["exported"]

    def on_validation_end(self, trainer: L.Trainer, module: PretrainModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.state.fn != TrainerFn.FITTING:
            self.baseline = None if loss is None else float(loss)
        elif not trainer.sanity_checking:
            self._maybe_export(trainer, module, loss)

    def on_train_epoch_end(self, trainer: L.Trainer, module: PretrainModule) -> None:
        if not trainer.val_dataloaders:
            self._maybe_export(trainer, module, trainer.callback_metrics.get("train/loss"))

    def _maybe_export(self, trainer, module, loss) -> None:
        if loss is not None and (float(loss) < self.best or not self.ranked):
            self.best = float(loss) if self.ranked else min(self.best, float(loss))
            self.export(trainer, module, float(loss))

    def export(self, trainer, module, loss: float | None) -> None:
        """Save the encoder now, recording the epoch, step and loss it was exported at."""
        if not trainer.is_global_zero:
            return
        self.exported = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                         "monitored_loss": loss}
        save_encoder(module.export_encoder(), self.directory, metadata={**self.metadata, **self.exported})


def objective_encoder_config(config: PretrainConfig) -> dict:
    """The encoder overrides of ``config`` joined with what its objective requires (e.g. causal
    attention for ``ar``); a contradiction is an error."""
    needed = OBJECTIVES[config.objective].encoder_requirements
    clash = {k: v for k, v in needed.items()
             if k in config.encoder_overrides and config.encoder_overrides[k] != v}
    if clash:
        raise InvalidParameterError(
            f"objective {config.objective!r} needs the encoder's {clash}; remove those fields "
            "from encoder_overrides.")
    return {**config.encoder_overrides, **needed}


def stop_within_first_epoch(n_batches: int, max_steps: int, accumulate: int) -> int | None:
    """The training batch at which a ``max_steps`` run stops, when that comes before the end of
    the first epoch (Lightning validates at epoch ends, so such a run would never validate and
    never export its best encoder); None otherwise."""
    batches = max_steps * accumulate if max_steps and max_steps > 0 else 0
    return batches if 0 < batches < n_batches else None


def read_pretrain_metrics(run_dir) -> pd.DataFrame:
    """The loss log of a run's pre-training: one row per logged step and epoch, oldest first.

    Each invocation (a resume too) logs a version of its own (``version`` column); the steps a
    resumed invocation redid after a kill replace the killed one's, so every step appears once.
    Empty when nothing was logged.
    """
    return read_metrics(RunDir(run_dir).log_dir("pretrain"))


def _global_rank_zero() -> bool:
    """True in the process that started the run (Lightning's DDP processes of other ranks, which
    run the same command again, must not take the run's lock)."""
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK",
                                                        "SLURM_PROCID"))


def pretrain(run_dir, config: PretrainConfig | str | None = None, *, resume: bool = True,
             progress: bool = True, **overrides):
    """Pre-train an encoder on every record of the run's store; returns the exported encoder dir.

    Parameters
    ----------
    run_dir : path-like or RunDir
        A run directory after ``sleepfm preprocess``.
    config : PretrainConfig, dict or YAML path, optional
        Settings; ``**overrides`` replace single fields (e.g. ``max_epochs=2``).
    resume : bool, default=True
        Continue from ``checkpoints/lightning/last.ckpt`` when it exists (read with
        ``weights_only=True``: tensors and plain values only).
    progress : bool, default=True
        Show Lightning's progress bar.

    Returns
    -------
    Path
        ``RUN_DIR/checkpoints/encoder``: the encoder with the best validation loss.

    Raises
    ------
    StoreError
        No store, records at another sampling rate than the encoder's, or an unreadable
        ``last.ckpt``.
    InvalidParameterError
        An unknown encoder or objective, or settings Lightning rejects.

    Examples
    --------
    >>> pretrain("runs/demo", encoder="sleepfm_tiny", max_epochs=2)
    PosixPath('runs/demo/checkpoints/encoder')
    """
    config = load_config(PretrainConfig, config, **overrides)
    run = RunDir(run_dir)
    with run.lock("pretrain") if _global_rank_zero() else contextlib.nullcontext():
        store = run.store()
        outcome = train_encoder(store, config, PretrainPaths.of_run(run),
                                subjects=run.subjects(store.record_ids),
                                channel_map=run.channel_map(), resume=resume, progress=progress,
                                metadata={"run_dir": str(run.path)})
        if outcome is not None:
            run.record_stage("pretrain", {"config": config.to_dict(),
                                          "encoder": str(run.encoder_dir), **outcome})
        return run.encoder_dir


@dataclass(frozen=True)
class PretrainPaths:
    """Where a pre-training writes: the exported encoder, Lightning's ``last.ckpt``, the record of
    the settings it was started with, and the loss logs (``<logs>/pretrain/version_N``)."""

    encoder: Path
    lightning: Path
    settings: Path
    logs: Path

    @classmethod
    def of_run(cls, run: RunDir) -> PretrainPaths:
        """A run directory's places (``checkpoints/encoder``, ``checkpoints/lightning``...)."""
        return cls(run.encoder_dir, run.lightning_dir, run.pretrain_settings,
                   run.log_dir("pretrain").parent)

    @property
    def last(self) -> Path:
        return self.lightning / "last.ckpt"


def train_encoder(store: Store, config: PretrainConfig, paths: PretrainPaths, *,
                  subjects: dict[str, str], record_ids: list[str] | None = None,
                  channel_map: ChannelMap | None = None, resume: bool = True,
                  progress: bool = True, metadata: dict | None = None,
                  arrays: dict | None = None) -> dict | None:
    """Pre-train one encoder on a store's records (or ``record_ids``) and export it to
    ``paths.encoder``; the work of :func:`pretrain`, reusable elsewhere (``sleepfm bench``, which
    passes the ViT-1D's epochs already read as ``arrays``, see
    :class:`~sleepfm.lead_data.LeadEpochDataModule`).

    Returns the summary a stage records (epochs, steps, losses, exported step, records), on the
    process of global rank zero; None on the others.
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    encoder = create_encoder(config.encoder, **objective_encoder_config(config))
    if isinstance(encoder, ViT1D):
        datamodule = LeadEpochDataModule(
            store, subjects=subjects, rate=encoder.config.sampling_rate,
            batch_size=config.batch_size, num_workers=config.num_workers,
            val_fraction=config.val_fraction, seed=config.seed, record_ids=record_ids,
            channel_map=channel_map, arrays=arrays)
    else:
        store.check_sample_rate(encoder.config.sampling_rate)
        datamodule = WindowDataModule(store, subjects=subjects, window_s=config.window_s,
                                      batch_size=config.batch_size,
                                      num_workers=config.num_workers,
                                      val_fraction=config.val_fraction,
                                      channel_dropout=config.channel_dropout,
                                      max_channels=config.max_channels, seed=config.seed,
                                      record_ids=record_ids)
    module = PretrainModule(encoder.config.to_dict(), architecture=type(encoder).__name__,
                            objective=config.objective,
                            objective_kwargs=config.objective_kwargs, lr=config.lr,
                            weight_decay=config.weight_decay,
                            warmup_fraction=config.warmup_fraction, betas=config.betas)
    records = record_ids or store.record_ids
    export_meta = {"training": {**(metadata or {}), "n_records": len(records),
                                "records": records, "config": config.to_dict()}}
    ranked = module.objective.loss_ranks_encoders
    export = _ExportBest(paths.encoder, export_meta, ranked=ranked)
    callbacks = [
        AtomicCheckpoint(dirpath=paths.lightning, filename="last", monitor=None, save_top_k=1,
                         enable_version_counter=False, every_n_epochs=1),
        export, RNGState(),
    ]
    if config.val_fraction > 0 and config.patience > 0 and ranked:
        callbacks.append(EarlyStopping(monitor="val/loss", patience=config.patience, mode="min",
                                       check_on_train_epoch_end=False))
    device = "cuda" if config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()) else "cpu"
    precision = checked_precision(config.precision, device)
    single = config.num_nodes == 1 and (config.devices == 1 or (
        config.devices == "auto" and device == "cpu"))
    validate_at = None
    if single and config.val_fraction > 0 and config.max_steps > 0:
        try:
            datamodule.setup("fit")
        except StoreError:
            pass  # no training window: fit says so, after the settings and checkpoint checks
        else:
            validate_at = stop_within_first_epoch(len(datamodule.train_dataloader()),
                                                  config.max_steps, config.accumulate)
    try:
        trainer = L.Trainer(
            default_root_dir=paths.lightning, max_epochs=config.max_epochs,
            max_steps=config.max_steps, accelerator=config.accelerator, devices=config.devices,
            num_nodes=config.num_nodes, strategy=config.strategy, precision=precision,
            accumulate_grad_batches=config.accumulate, gradient_clip_val=config.grad_clip,
            logger=CSVLogger(paths.logs, name="pretrain", flush_logs_every_n_steps=10),
            callbacks=callbacks, enable_progress_bar=progress, enable_model_summary=False,
            log_every_n_steps=1, num_sanity_val_steps=0,
            **({"val_check_interval": validate_at} if validate_at else {}),
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        raise InvalidParameterError(f"the trainer settings are not usable here: {err}") from None
    last = paths.last
    ckpt_path = str(last) if resume and last.is_file() else None
    settings = dict(module.hparams)
    if ckpt_path and not resumable(last, paths.settings, settings):
        changed = (changed_settings(paths.settings, settings)
                   if paths.settings.is_file() else ["the record of them"])
        raise SleepFMError(f"{ckpt_path} was written with other settings ({', '.join(changed)} "
                           "differ); pass --restart to start again, or use the original config.")
    record_settings(paths.settings, settings)
    if ckpt_path:
        logger.info("resuming from %s", last)
    elif config.val_fraction > 0:
        # The untrained encoder's validation loss: the baseline pre-training has to beat.
        datamodule.setup("validate")
        if len(datamodule.val_set):
            trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return None
    if export.exported is None or not ranked:  # nothing monitored, or the latest
        export.export(trainer, module, None)
    beat = None if not ranked else export.baseline is None or export.best < export.baseline
    last_terms = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith("train/")}
    diagnosis = module.objective.diagnose(last_terms)
    if diagnosis:
        warnings.warn(f"{paths.encoder}: {config.objective}: {diagnosis}.", ConvergenceWarning,
                      stacklevel=3)
    if beat is False:
        warnings.warn(
            f"{paths.encoder}: pre-training did not beat the untrained encoder (best validation "
            f"loss {export.best:.4f}, {export.baseline:.4f} before training); the exported "
            f"encoder (epoch {export.exported['epoch']}) is trained but no better than a "
            "random one. Train longer, change the learning rate, or check the data.",
            ConvergenceWarning, stacklevel=3)
    return {"precision": precision, "epochs": trainer.current_epoch, "steps": trainer.global_step,
            "initial_val_loss": export.baseline,
            "best_val_loss": export.best if math.isfinite(export.best) else None,
            "beat_untrained": beat, "exported": export.exported, "last_terms": last_terms,
            "diagnosis": diagnosis,
            "train_records": datamodule.train_ids, "val_records": datamodule.val_ids}

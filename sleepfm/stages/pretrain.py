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
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerFn

from ..artifacts import save_encoder
from ..config import PretrainConfig, load_config
from ..data import WindowDataModule
from ..exceptions import ConvergenceWarning, InvalidParameterError, SleepFMError, StoreError
from ..models import create_encoder
from ..models.precision import checked_precision
from ..rundir import RunDir
from ..train import PretrainModule
from .resume import (AtomicCheckpoint, RNGState, changed_settings, read_metrics, record_settings,
                     resumable)

logger = logging.getLogger(__name__)


class _ExportBest(Callback):
    """Export the encoder as safetensors + JSON whenever a training epoch improves the validation
    loss (or the training loss when there is no validation split).

    The validation of the untrained encoder before fitting is the baseline: it is recorded, never
    exported. The best loss and the baseline are kept in ``last.ckpt``, so a resumed run goes on
    comparing with them.
    """

    def __init__(self, directory: Path, metadata: dict):
        self.directory = directory
        self.metadata = metadata
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
        if loss is not None and float(loss) < self.best:
            self.best = float(loss)
            self.export(trainer, module, self.best)

    def export(self, trainer, module, loss: float | None) -> None:
        """Save the encoder now, recording the epoch, step and loss it was exported at."""
        if not trainer.is_global_zero:
            return
        self.exported = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                         "monitored_loss": loss}
        save_encoder(module.encoder, self.directory, metadata={**self.metadata, **self.exported})


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
        L.seed_everything(config.seed, workers=True, verbose=False)
        encoder = create_encoder(config.encoder, **config.encoder_overrides)
        store.check_sample_rate(encoder.config.sampling_rate)
        module = PretrainModule(encoder.config.to_dict(), objective=config.objective,
                                objective_kwargs=config.objective_kwargs, lr=config.lr,
                                weight_decay=config.weight_decay, warmup_fraction=config.warmup_fraction)
        datamodule = WindowDataModule(store, subjects=run.subjects(store.record_ids),
                                      window_s=config.window_s, batch_size=config.batch_size,
                                      num_workers=config.num_workers, val_fraction=config.val_fraction,
                                      channel_dropout=config.channel_dropout,
                                      max_channels=config.max_channels, seed=config.seed)
        metadata = {"training": {"run_dir": str(run.path), "n_records": len(store),
                                 "records": store.record_ids, "config": config.to_dict()}}
        export = _ExportBest(run.encoder_dir, metadata)
        callbacks = [
            AtomicCheckpoint(dirpath=run.lightning_dir, filename="last", monitor=None, save_top_k=1,
                             enable_version_counter=False, every_n_epochs=1),
            export, RNGState(),
        ]
        if config.val_fraction > 0 and config.patience > 0:
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
                default_root_dir=run.path, max_epochs=config.max_epochs, max_steps=config.max_steps,
                accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
                strategy=config.strategy, precision=precision,
                accumulate_grad_batches=config.accumulate, gradient_clip_val=config.grad_clip,
                logger=CSVLogger(run.log_dir("pretrain").parent, name="pretrain",
                                 flush_logs_every_n_steps=10),
                callbacks=callbacks, enable_progress_bar=progress, enable_model_summary=False,
                log_every_n_steps=1, num_sanity_val_steps=0,
                **({"val_check_interval": validate_at} if validate_at else {}),
            )
        except (MisconfigurationException, ValueError, RuntimeError) as err:
            raise InvalidParameterError(f"the trainer settings are not usable here: {err}") from None
        last = run.last_checkpoint
        ckpt_path = str(last) if resume and last.is_file() else None
        settings = dict(module.hparams)
        if ckpt_path and not resumable(last, run.pretrain_settings, settings):
            changed = (changed_settings(run.pretrain_settings, settings)
                       if run.pretrain_settings.is_file() else ["the record of them"])
            raise SleepFMError(f"{ckpt_path} was written with other settings ({', '.join(changed)} "
                               "differ); pass --restart to start again, or use the original config.")
        record_settings(run.pretrain_settings, settings)
        if ckpt_path:
            logger.info("resuming from %s", last)
        elif config.val_fraction > 0:
            # The untrained encoder's validation loss: the baseline pre-training has to beat.
            datamodule.setup("validate")
            if len(datamodule.val_set):
                trainer.validate(module, datamodule=datamodule, verbose=False)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if trainer.is_global_zero:
            if export.exported is None:  # no finite loss was ever monitored
                export.export(trainer, module, None)
            beat = export.baseline is None or export.best < export.baseline
            if not beat:
                warnings.warn(
                    f"{run.path}: pre-training did not beat the untrained encoder (best validation "
                    f"loss {export.best:.4f}, {export.baseline:.4f} before training); the exported "
                    f"encoder (epoch {export.exported['epoch']}) is trained but no better than a "
                    "random one. Train longer, change the learning rate, or check the data.",
                    ConvergenceWarning, stacklevel=2)
            run.record_stage("pretrain", {
                "config": config.to_dict(), "encoder": str(run.encoder_dir),
                "precision": precision, "epochs": trainer.current_epoch,
                "steps": trainer.global_step,
                "initial_val_loss": export.baseline,
                "best_val_loss": export.best if math.isfinite(export.best) else None,
                "beat_untrained": beat, "exported": export.exported,
                "train_records": datamodule.train_ids, "val_records": datamodule.val_ids})
        return run.encoder_dir

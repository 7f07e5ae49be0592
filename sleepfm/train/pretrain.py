"""Self-supervised pre-training of the SleepFM encoder with PyTorch Lightning.

``PretrainModule`` holds the loop (loss, logging, optimiser, schedule); the encoder and the objective
are plain modules built from their registries. Multi-GPU and multi-node runs go through Lightning's
DDP (``devices``, ``num_nodes``, ``strategy``), mixed precision through ``precision``.

Run directory outputs::

    RUN_DIR/checkpoints/encoder/          best encoder: model.safetensors + config.json (no pickle)
    RUN_DIR/checkpoints/lightning/last.ckpt   full training state, for resuming after a kill
    RUN_DIR/logs/pretrain/version_N/metrics.csv   train/val loss and learning rate per step/epoch;
                                          each invocation (a resume too) adds a version, see
                                          :func:`read_pretrain_metrics`
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ..checkpoint import save_checkpoint
from ..data import WindowDataModule
from ..exceptions import SleepFMError
from ..io.store import Store
from ..models import SleepFMConfig, SleepFMEncoder, create_encoder
from ..runinfo import update_run_json
from ..ssl import create_objective
from ..utils import write_text_atomic

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Pre-training settings (``sleepfm pretrain --config FILE`` reads them from YAML).

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
        Records held out for validation.
    channel_dropout : float, default=0.1
        Probability of dropping each channel in training windows (channel-agnostic learning).
    devices, num_nodes, accelerator, strategy, precision, accumulate : passed to Lightning.
    """

    encoder: str = "sleepfm_base"
    encoder_overrides: dict = field(default_factory=dict)
    objective: str = "loo_contrastive"
    objective_kwargs: dict = field(default_factory=dict)
    window_s: float = 300.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    max_epochs: int = 20
    max_steps: int = -1
    patience: int = 5
    val_fraction: float = 0.1
    channel_dropout: float = 0.1
    max_channels: int | None = None
    num_workers: int = 0
    seed: int = 0
    devices: int | str = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    accumulate: int = 1


class PretrainModule(L.LightningModule):
    """Encoder + objective + optimiser; logs ``train/loss``, ``val/loss`` and ``lr``.

    Parameters
    ----------
    encoder_config : dict
        :class:`~sleepfm.models.SleepFMConfig` fields (``save_hyperparameters`` stores them so a
        Lightning checkpoint rebuilds the model).
    objective : str
    objective_kwargs : dict
    lr, weight_decay, warmup_fraction : float
    """

    def __init__(self, encoder_config: dict, *, objective: str = "loo_contrastive",
                 objective_kwargs: dict | None = None, lr: float = 1e-3, weight_decay: float = 0.01,
                 warmup_fraction: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = SleepFMEncoder(SleepFMConfig.from_dict(encoder_config))
        self.objective = create_objective(objective, **(objective_kwargs or {}))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        out = self.encoder(batch["x"], batch["mask"])
        loss, terms = self.objective.compute(self.objective.pool(out.tokens), out.present)
        n = len(batch["record_id"])
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, batch_size=n, sync_dist=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch["record_id"]))
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "train_set"):
            datamodule.train_set.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(int(self.hparams.warmup_fraction * total), 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _AtomicCheckpoint(ModelCheckpoint):
    """Lightning's checkpoint, written to a temporary file and renamed: a kill while saving leaves
    the previous ``last.ckpt`` intact."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class _ExportBest(Callback):
    """Export the encoder as safetensors + JSON whenever validation loss improves (or every epoch
    when there is no validation split)."""

    def __init__(self, directory: Path, metadata: dict):
        self.directory = directory
        self.metadata = metadata
        self.best = math.inf

    def on_validation_end(self, trainer: L.Trainer, module: PretrainModule) -> None:
        self._maybe_export(trainer, module, trainer.callback_metrics.get("val/loss"))

    def on_train_epoch_end(self, trainer: L.Trainer, module: PretrainModule) -> None:
        if not trainer.val_dataloaders:
            self._maybe_export(trainer, module, trainer.callback_metrics.get("train/loss"))

    def _maybe_export(self, trainer, module, loss) -> None:
        if trainer.sanity_checking or loss is None or not trainer.is_global_zero:
            return
        loss = float(loss)
        if loss < self.best:
            self.best = loss
            meta = {**self.metadata, "epoch": trainer.current_epoch, "step": trainer.global_step,
                    "monitored_loss": loss}
            save_checkpoint(module.encoder, self.directory, metadata=meta)


def read_pretrain_metrics(run_dir) -> pd.DataFrame:
    """Loss curves of every pre-training invocation of a run, oldest first (``version`` column).

    A resumed run logs into a new version, so the curve of a killed and resumed run is the
    concatenation (steps continue where the checkpoint left off). Empty when nothing was logged.
    """
    root = Path(run_dir) / "logs" / "pretrain"
    files = sorted(root.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    frames = [pd.read_csv(f).assign(version=int(f.parent.name.split("_")[1])) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _check_resumable(path: Path, hparams, ckpt_path: str | None) -> None:
    """Record the module's settings beside ``last.ckpt``; refuse to resume under other settings
    (the saved weights would not fit, or would silently continue a different experiment)."""
    current = json.loads(json.dumps(dict(hparams), default=str))
    if ckpt_path and path.is_file():
        saved = json.loads(path.read_text())
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise SleepFMError(f"{ckpt_path} was written with other settings ({', '.join(changed)} "
                               "differ); pass --restart to start again, or use the original config.")
    write_text_atomic(path, json.dumps(current, indent=2))


def _best(callbacks) -> float | None:
    best = next(c.best for c in callbacks if isinstance(c, _ExportBest))
    return best if math.isfinite(best) else None


def pretrain(run_dir, config: PretrainConfig | None = None, *, resume: bool = True,
             progress: bool = True) -> Path:
    """Pre-train an encoder on every record of ``RUN_DIR/hdf5``; returns the exported encoder dir.

    With ``resume=True`` an existing ``checkpoints/lightning/last.ckpt`` continues the run where it
    stopped (loaded with ``weights_only=True``: tensors and plain values only).
    """
    config = config or PretrainConfig()
    run_dir = Path(run_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    encoder = create_encoder(config.encoder, **config.encoder_overrides)
    module = PretrainModule(encoder.config.to_dict(), objective=config.objective,
                            objective_kwargs=config.objective_kwargs, lr=config.lr,
                            weight_decay=config.weight_decay, warmup_fraction=config.warmup_fraction)
    datamodule = WindowDataModule(run_dir, window_s=config.window_s, batch_size=config.batch_size,
                                  num_workers=config.num_workers, val_fraction=config.val_fraction,
                                  channel_dropout=config.channel_dropout,
                                  max_channels=config.max_channels, seed=config.seed)
    store = Store(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    export_dir = ckpt_dir / "encoder"
    metadata = {"training": {"run_dir": str(run_dir), "n_records": len(store),
                             "records": store.record_ids, "config": asdict(config)}}
    callbacks = [
        _AtomicCheckpoint(dirpath=ckpt_dir / "lightning", filename="last", monitor=None, save_top_k=1,
                          enable_version_counter=False, every_n_epochs=1),
        _ExportBest(export_dir, metadata),
    ]
    if config.val_fraction > 0 and config.patience > 0:
        callbacks.append(EarlyStopping(monitor="val/loss", patience=config.patience, mode="min",
                                       check_on_train_epoch_end=False))
    trainer = L.Trainer(
        default_root_dir=run_dir, max_epochs=config.max_epochs, max_steps=config.max_steps,
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=config.strategy, precision=config.precision,
        accumulate_grad_batches=config.accumulate, gradient_clip_val=config.grad_clip,
        logger=CSVLogger(run_dir / "logs", name="pretrain", flush_logs_every_n_steps=10),
        callbacks=callbacks, enable_progress_bar=progress, enable_model_summary=False,
        log_every_n_steps=1, num_sanity_val_steps=0,
    )
    last = ckpt_dir / "lightning" / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    _check_resumable(ckpt_dir / "pretrain_module.json", module.hparams, ckpt_path)
    initial_val_loss = None
    if ckpt_path:
        logger.info("resuming from %s", last)
    elif config.val_fraction > 0:
        # The untrained encoder's validation loss: the baseline pre-training has to beat.
        datamodule.setup("validate")
        if len(datamodule.val_set):
            initial_val_loss = float(trainer.validate(module, datamodule=datamodule,
                                                      verbose=False)[0]["val/loss"])
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.is_global_zero:
        if not (export_dir / "config.json").is_file():
            save_checkpoint(module.encoder, export_dir, metadata=metadata)
        update_run_json(run_dir, "pretrain", {"config": asdict(config), "encoder": str(export_dir),
                                              "epochs": trainer.current_epoch,
                                              "steps": trainer.global_step,
                                              "initial_val_loss": initial_val_loss,
                                              "best_val_loss": _best(callbacks),
                                              "train_records": datamodule.train_ids,
                                              "val_records": datamodule.val_ids})
    return export_dir

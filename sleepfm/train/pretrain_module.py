"""The Lightning module of pre-training: encoder + objective + optimiser and schedule.

The encoder and the objective are plain modules built from their registries; this module holds the
loop (loss, logging of ``train/loss``, ``val/loss`` and ``lr``), AdamW with linear warm-up and
cosine decay, and calls the objective's hooks (``after_step`` after each optimiser step, e.g. to
move an EMA teacher). Multi-GPU and multi-node runs go through Lightning's DDP, mixed precision
through ``precision`` (see :func:`sleepfm.stages.pretrain.pretrain`).
"""
from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from ..models import ARCHITECTURES
from ..ssl import create_objective


class PretrainModule(L.LightningModule):
    """Encoder + objective + optimiser; logs ``train/loss``, ``val/loss`` and ``lr``.

    Parameters
    ----------
    encoder_config : dict
        The encoder's config fields (``save_hyperparameters`` stores them so a Lightning
        checkpoint rebuilds the model).
    architecture : str, default="SleepFMEncoder"
        Registered architecture of the encoder (``SleepFMEncoder`` or ``ViT1D``).
    objective : str
    objective_kwargs : dict
    lr, weight_decay, warmup_fraction : float
    betas : (float, float), default=(0.9, 0.999)
        AdamW's betas.
    """

    def __init__(self, encoder_config: dict, *, architecture: str = "SleepFMEncoder",
                 objective: str = "loo_contrastive", objective_kwargs: dict | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.01, warmup_fraction: float = 0.05,
                 betas: tuple[float, float] = (0.9, 0.999)):
        super().__init__()
        self.save_hyperparameters()
        model_cls = ARCHITECTURES[architecture]
        self.encoder = model_cls(model_cls.config_class.from_dict(encoder_config))
        self.objective = create_objective(objective, **(objective_kwargs or {}))
        self.objective.bind(self.encoder)

    @property
    def progress(self) -> float:
        """Fraction of the training steps done (0 outside a fit)."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        return min(self.global_step / max(int(trainer.estimated_stepping_batches), 1), 1.0)

    def export_encoder(self) -> nn.Module:
        """The encoder to save as the pre-trained one (the objective decides: DINO's teacher)."""
        return self.objective.export(self.encoder)

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        loss, terms = self.objective.loss(self.encoder, batch["x"], batch["mask"],
                                          progress=self.progress)
        n = len(batch["record_id"])
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, batch_size=n, sync_dist=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch["record_id"]))
        return self._step(batch, "train")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.objective.after_step(self.encoder, progress=self.progress)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "train_set"):
            datamodule.train_set.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        trained = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in trained if p.ndim >= 2]
        no_decay = [p for n, p in trained if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr,
                                betas=tuple(self.hparams.betas))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(int(self.hparams.warmup_fraction * total), 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

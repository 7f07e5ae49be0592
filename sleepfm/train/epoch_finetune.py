"""Full fine-tuning of a ViT-1D on labelled 30 s epochs: backbone + a linear layer on its epoch
embedding, trained end to end (the benchmark's ``finetune`` setting, and supervised training from
scratch when the backbone is untrained)."""
from __future__ import annotations

import copy
import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from ..eval.metrics import macro_auroc


class EpochClassifier(nn.Module):
    """A backbone and a linear layer on its epoch embedding: ``[B, L, T]`` → ``[B, n_classes]``
    logits."""

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder, self.n_classes = encoder, n_classes
        self.head = nn.Linear(encoder.embed_dim, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(x, mask))


class EpochFinetuneModule(L.LightningModule):
    """Weighted cross-entropy on labelled epochs (-1 ignored); AdamW with ``head_lr`` for the
    linear layer and ``lr`` for the backbone, linear warm-up over ``warmup`` of the steps then
    cosine decay. Validation logs ``val/auroc`` (macro one-vs-rest).

    Parameters
    ----------
    net : EpochClassifier
    lr, head_lr : float, default=1e-4, 1e-3
    weight_decay : float, default=0.05
    warmup : float, default=0.1
    class_weight : array-like, optional
    """

    def __init__(self, net: EpochClassifier, *, lr: float = 1e-4, head_lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup: float = 0.1, class_weight=None):
        super().__init__()
        self.net = net
        self.lr, self.head_lr, self.weight_decay, self.warmup = lr, head_lr, weight_decay, warmup
        self.register_buffer("class_weight", None if class_weight is None
                             else torch.as_tensor(class_weight, dtype=torch.float32))
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, _):
        loss = nn.functional.cross_entropy(self.net(batch["x"], batch["mask"]), batch["y"],
                                           weight=self.class_weight, ignore_index=-1)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch, _):
        proba = self.net(batch["x"], batch["mask"]).float().softmax(-1)
        self._val.append((batch["y"].cpu(), proba.cpu()))

    def on_validation_epoch_end(self):
        if self._val:
            y = torch.cat([a for a, _ in self._val]).numpy()
            p = torch.cat([b for _, b in self._val]).numpy()
            score = macro_auroc(y, p)
            self.log("val/auroc", score if math.isfinite(score) else 0.0)
        self._val = []

    def configure_optimizers(self):
        opt = torch.optim.AdamW([{"params": self.net.encoder.parameters(), "lr": self.lr},
                                 {"params": self.net.head.parameters(), "lr": self.head_lr}],
                                weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warm = max(1, int(self.warmup * total))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min((step - warm) / max(total - warm, 1), 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class KeepBest(Callback):
    """Keep, in memory, the network weights of the validation with the highest ``monitor``."""

    def __init__(self, monitor: str = "val/auroc") -> None:
        self.monitor, self.best, self.state = monitor, -math.inf, None

    def on_validation_end(self, trainer: L.Trainer, module: EpochFinetuneModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        if float(value) > self.best:
            self.best = float(value)
            self.state = copy.deepcopy(module.net.state_dict())

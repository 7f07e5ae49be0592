"""The Lightning module of end-to-end fine-tuning: the whole encoder and a staging LSTM trained on
labelled windows (:class:`~sleepfm.models.heads.WindowStagingNet`)."""
from __future__ import annotations

import lightning as L
import torch
from torch import nn

from ..eval.metrics import macro_f1
from ..models.heads import WindowStagingNet


class StagingFinetuneModule(L.LightningModule):
    """Cross-entropy on every labelled epoch of each window; AdamW, smaller lr for the encoder.

    Logs ``train/loss`` and ``val/macro_f1``.

    Parameters
    ----------
    net : WindowStagingNet
    lr : float, default=1e-4
        Learning rate of the encoder.
    head_lr : float, default=1e-3
        Learning rate of the LSTM head.
    class_weight : array-like, optional
        Loss weight per class.
    """

    def __init__(self, net: WindowStagingNet, *, lr: float = 1e-4, head_lr: float = 1e-3,
                 class_weight=None):
        super().__init__()
        self.net = net
        self.lr, self.head_lr = lr, head_lr
        self.register_buffer("class_weight", None if class_weight is None
                             else torch.as_tensor(class_weight, dtype=torch.float32))
        self._val = []

    def training_step(self, batch, _):
        logits = self.net(batch["x"], batch["mask"])
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           batch["y"].reshape(-1), weight=self.class_weight,
                                           ignore_index=-1)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch, _):
        pred = self.net(batch["x"], batch["mask"]).argmax(-1)
        self._val.append((batch["y"].reshape(-1).cpu(), pred.reshape(-1).cpu()))

    def on_validation_epoch_end(self):
        if self._val:
            t = torch.cat([a for a, _ in self._val]).numpy()
            p = torch.cat([b for _, b in self._val]).numpy()
            self.log("val/macro_f1", macro_f1(t, p, n_classes=self.net.n_classes))
        self._val = []

    def configure_optimizers(self):
        enc = [p for n, p in self.net.named_parameters() if n.startswith("encoder.")]
        head = [p for n, p in self.net.named_parameters() if not n.startswith("encoder.")]
        return torch.optim.AdamW([{"params": enc, "lr": self.lr},
                                  {"params": head, "lr": self.head_lr}], weight_decay=1e-4)

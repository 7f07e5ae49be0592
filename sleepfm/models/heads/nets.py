"""Networks of the heads (tensors in, logits out): an LSTM over a night's epochs, a per-epoch MLP,
and the end-to-end staging network (encoder + epoch pooling + LSTM)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...exceptions import StoreError
from ..factory import ConfiguredEncoder
from ..sleepfm import pool_epochs


class LSTMStagingNet(nn.Module):
    """LSTM over the sequence of 30 s epoch embeddings of a night, then a linear classifier.

    Parameters
    ----------
    n_features : int
        Embedding size ``D``.
    n_classes : int, default=5
        Outputs per epoch.
    hidden : int, default=128
        LSTM hidden size (per direction).
    num_layers : int, default=2
        Stacked LSTM layers.
    bidirectional : bool, default=False
        Also read the night backwards (uses future context; whole nights are needed at once).
    dropout : float, default=0.2
        Dropout on the inputs, between LSTM layers and before the classifier.

    Notes
    -----
    Input ``x`` is ``[B, T, D]``; ``mask`` ``[B, T]`` is True on valid epochs and must be a
    prefix of each row (right padding). Padded positions do not affect valid outputs.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int = 5,
        *,
        hidden: int = 128,
        num_layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            n_features,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(hidden * (2 if bidirectional else 1), n_classes)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-epoch LSTM outputs ``[B, T, hidden * directions]`` (zeros at padding)."""
        x = self.dropout(x)
        if mask is None or bool(mask.all()):
            return self.lstm(x)[0]
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                     total_length=x.shape[1])
        return out

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, n_classes]`` from :meth:`forward_features` output."""
        return self.classifier(self.dropout(features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, n_classes]``."""
        return self.forward_head(self.forward_features(x, mask))


class EpochMLP(nn.Module):
    """Per-epoch classifier: linear, or a 2-layer MLP when ``hidden`` is given.

    Parameters
    ----------
    n_features : int
        Embedding size ``D``.
    n_outputs : int
        Outputs per epoch.
    hidden : int or None, default=256
        Hidden width; ``None`` gives a single linear layer (logistic regression).
    dropout : float, default=0.2
        Dropout after the hidden layer.

    Notes
    -----
    Accepts ``[..., D]`` inputs (e.g. ``[B, T, D]``); the ``mask`` argument is accepted for a
    uniform interface with :class:`LSTMStagingNet` and unused, as epochs are independent.
    """

    def __init__(self, n_features: int, n_outputs: int, *, hidden: int | None = 256,
                 dropout: float = 0.2):
        super().__init__()
        if hidden is None:
            self.net = nn.Linear(n_features, n_outputs)
        else:
            self.net = nn.Sequential(
                nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout),
                nn.Linear(hidden, n_outputs),
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[..., n_outputs]``."""
        return self.net(x)


class WindowStagingNet(nn.Module):
    """Encoder + epoch pooling + LSTM over the 30 s epochs of a window → stage logits.

    Parameters
    ----------
    encoder : ConfiguredEncoder
        A SleepFM-family encoder: ours (``sleepfm_*``) or the released one (``sleepfm_reference``).
    n_classes : int, default=5
    hidden : int, default=64
    bidirectional : bool, default=False
    dropout : float, default=0.1

    Notes
    -----
    Input as the encoder's (``x``, ``mask`` dicts of ``[B, C, T]`` windows); output
    ``[B, n_epochs, n_classes]`` logits, one per 30 s epoch of the window.
    """

    head_name = "window_staging"

    def __init__(self, encoder: ConfiguredEncoder, n_classes: int = 5, *, hidden: int = 64,
                 bidirectional: bool = False, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.n_classes = n_classes
        self.params = {"n_classes": n_classes, "hidden": hidden, "bidirectional": bidirectional,
                       "dropout": dropout}
        self.norm = nn.LayerNorm(encoder.embed_dim)
        self.lstm = LSTMStagingNet(encoder.embed_dim, n_classes, hidden=hidden,
                                   bidirectional=bidirectional, dropout=dropout)

    def forward(self, x, mask=None) -> torch.Tensor:
        fused = self.encoder(x, mask).fused
        return self.lstm(self.norm(pool_epochs(fused, self.encoder.config.tokens_per_epoch)))

    def get_state(self) -> tuple[dict, dict]:
        """Head weights and options (the encoder is saved apart, as an encoder artefact)."""
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()
                   if not k.startswith("encoder.")}
        return tensors, {"head": self.head_name, "version": 1, "params": self.params}

    @classmethod
    def from_state(cls, tensors, meta, encoder: ConfiguredEncoder) -> "WindowStagingNet":
        """Rebuild the network around a loaded (fine-tuned) encoder."""
        net = cls(encoder, **meta["params"])
        missing = net.load_state_dict(tensors, strict=False)
        bad = [k for k in missing.missing_keys if not k.startswith("encoder.")]
        if bad or missing.unexpected_keys:
            raise StoreError(f"the head weights do not match the network ({bad[:3]}, "
                             f"{missing.unexpected_keys[:3]}); fine-tune again.")
        return net.eval()

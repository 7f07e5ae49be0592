"""SimCLR: two augmented views of an epoch must find each other among the batch's views."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import InvalidParameterError
from .augment import check_span, make_view
from .base import Objective, projection_mlp, register_objective

__all__ = ["SimCLR"]


@register_objective("simclr")
class SimCLR(Objective):
    """NT-Xent over two views per epoch (Chen et al., 2020).

    Both views are made by OSF's augmentation (:func:`~sleepfm.ssl.augment.make_view`); a
    2-layer projection maps the backbone's epoch embedding to ``proj_dim``. With ``z`` the
    L2-normalised projections of the ``2B`` views, view ``i``'s term is
    ``-log exp(z_i·z_j / tau) / sum_{k != i} exp(z_i·z_k / tau)`` where ``j`` is its partner; the
    loss is the mean over all ``2B`` terms.

    Parameters
    ----------
    temperature : float, default=0.1
    proj_dim : int, default=128
    hidden_dim : int, optional
        Hidden width of the projection (default: the backbone's width).
    lead_drop : float, default=0.5
    span : (float, float), default=(0.3, 0.6)

    Notes
    -----
    Logged term: ``top1``, the fraction of views whose partner scores highest.
    """

    def __init__(self, *, temperature: float = 0.1, proj_dim: int = 128,
                 hidden_dim: int | None = None, lead_drop: float = 0.5, span=(0.3, 0.6)) -> None:
        super().__init__()
        if not temperature > 0:
            raise InvalidParameterError(f"temperature must be > 0, got {temperature}.")
        self.temperature, self.proj_dim, self.hidden_dim = float(temperature), proj_dim, hidden_dim
        self.span, self.lead_drop = check_span(span, lead_drop), float(lead_drop)

    def bind(self, encoder: nn.Module) -> None:
        super().bind(encoder)
        width = encoder.embed_dim
        self.projection = projection_mlp(width, self.hidden_dim or width, self.proj_dim, 2)

    def loss(self, encoder, x, mask, *, progress: float = 0.0):
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        b = x.shape[0]
        views = [make_view(x, mask, p_drop=self.lead_drop, span=self.span) for _ in range(2)]
        z = self.projection(encoder(torch.cat([v.x for v in views]),
                                    torch.cat([v.mask for v in views])))
        z = F.normalize(z.float(), dim=-1)
        logits = (z @ z.T / self.temperature).fill_diagonal_(float("-inf"))
        partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
        loss = F.cross_entropy(logits, partner)
        top1 = (logits.argmax(dim=1) == partner).float().mean()
        return loss, {"top1": top1.detach()}

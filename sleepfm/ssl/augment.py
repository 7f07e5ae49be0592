"""Views of a batch of epochs for objectives that compare augmented views (DINO, SimCLR).

OSF's channel-invariance recipe makes each view in two steps: per sample, every present lead is
dropped with probability ``p`` (at least one present lead is kept), then, per remaining lead, a
contiguous time span of 30–60 % of the epoch is zeroed. A dropped lead is masked, so the backbone
sees exactly what a recording without that lead gives it. Random draws use torch's generator, so
they follow ``seed_everything`` and a resumed run's saved random state.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..exceptions import InvalidParameterError

__all__ = ["View", "check_span", "drop_leads", "make_view", "zero_spans"]


class View(NamedTuple):
    """An augmented batch: signals ``[B, L, T]`` and the lead mask ``[B, L]``."""

    x: Tensor
    mask: Tensor


def check_span(span, p_drop: float) -> tuple[float, float]:
    """Validated ``(low, high)`` span fractions and lead-dropout probability."""
    low, high = (float(v) for v in span)
    if not 0.0 <= low <= high < 1.0:
        raise InvalidParameterError(f"span must be (low, high) with 0 <= low <= high < 1, got "
                                    f"{tuple(span)}.")
    if not 0.0 <= p_drop < 1.0:
        raise InvalidParameterError(f"lead_drop must be in [0, 1), got {p_drop}.")
    return low, high


def drop_leads(mask: Tensor, p: float) -> Tensor:
    """Drop each present lead with probability ``p``, keeping at least one present lead per
    sample (a random one of its present leads when all were drawn)."""
    keep = mask & (torch.rand(mask.shape, device=mask.device) >= p)
    lost = mask.any(dim=1) & ~keep.any(dim=1)
    if lost.any():
        scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0)
        rescue = torch.zeros_like(mask)
        rescue[torch.arange(len(mask), device=mask.device), scores.argmax(dim=1)] = True
        keep = keep | (rescue & lost[:, None])
    return keep


def zero_spans(x: Tensor, span: tuple[float, float]) -> Tensor:
    """Zero one contiguous span per sample and lead, its length a uniform fraction of ``span``."""
    b, leads, t = x.shape
    low, high = span
    length = (torch.empty(b, leads, 1, device=x.device).uniform_(low, high) * t).long()
    start = (torch.rand(b, leads, 1, device=x.device) * (t - length + 1)).long()
    pos = torch.arange(t, device=x.device)
    hit = (pos >= start) & (pos < start + length)
    return x.masked_fill(hit, 0.0)


def make_view(x: Tensor, mask: Tensor, *, p_drop: float = 0.5,
              span: tuple[float, float] = (0.3, 0.6)) -> View:
    """One augmented view: lead dropout, then a zeroed span per lead (OSF's recipe)."""
    return View(zero_spans(x, span), drop_leads(mask, p_drop))

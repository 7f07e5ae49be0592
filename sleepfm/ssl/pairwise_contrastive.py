"""CLIP-style contrastive objective over every pair of modalities."""
from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import torch
from torch import Tensor

from ..exceptions import InvalidParameterError
from .base import ModalityObjective, masked_info_nce, register_objective, stack_modalities

__all__ = ["PairwiseContrastive"]


@register_objective("pairwise_contrastive")
class PairwiseContrastive(ModalityObjective):
    """Symmetric InfoNCE (CLIP) between every pair of modalities.

    For each pair ``(i, j)`` the records where both are present form the batch: ``z_i^k`` must
    pick ``z_j^k`` among the ``z_j`` of those records and vice versa (cosine similarity of the
    L2-normalised embeddings over ``tau``). The loss is the mean over all terms of all pairs,
    both directions. A record takes part in the pairs of its present modalities only, so a record
    with fewer than two present modalities contributes nothing.

    Parameters
    ----------
    temperature : float, default=0.1
        Softmax temperature ``tau`` (fixed).

    Notes
    -----
    Logged terms: ``loss_<A>_<B>`` per pair (0 when the pair never co-occurs), ``top1`` and
    ``n_terms`` (anchors per direction).
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise InvalidParameterError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def compute(
        self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        names, z, p = stack_modalities(embeddings, present)          # [M, B, D], [M, B]
        pairs = list(combinations(range(len(names)), 2))
        first = torch.tensor([a for a, _ in pairs], dtype=torch.long, device=z.device)
        second = torch.tensor([b for _, b in pairs], dtype=torch.long, device=z.device)
        valid = p[first] & p[second]                                  # [P, B]
        with torch.autocast(z.device.type, enabled=False):               # similarities in fp32
            logits = torch.einsum("pbd,pcd->pbc", z[first], z[second]) / self.temperature
        loss_ab, correct_ab = masked_info_nce(logits, valid)
        loss_ba, correct_ba = masked_info_nce(logits.transpose(1, 2), valid)
        per_pair = 0.5 * (loss_ab.sum(dim=1) + loss_ba.sum(dim=1))
        n_rows = valid.sum(dim=1).to(z.dtype)
        n_terms = n_rows.sum()
        total = per_pair.sum() / n_terms.clamp_min(1.0)
        terms = {
            f"loss_{names[a]}_{names[b]}": (per_pair[k] / n_rows[k].clamp_min(1.0)).detach()
            for k, (a, b) in enumerate(pairs)
        }
        terms["top1"] = (0.5 * (correct_ab.sum() + correct_ba.sum()) / n_terms.clamp_min(1.0)).detach()
        terms["n_terms"] = n_terms.detach()
        return total, terms

"""Leave-one-out contrastive objective of SleepFM (Thapa et al.)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..exceptions import InvalidParameterError
from .base import ModalityObjective, masked_info_nce, register_objective, stack_modalities

__all__ = ["LeaveOneOutContrastive"]


@register_objective("loo_contrastive")
class LeaveOneOutContrastive(ModalityObjective):
    """Each modality against the mean of the other modalities, InfoNCE over the batch.

    For record ``k`` and modality ``i`` let ``z_i^k`` be the L2-normalised embedding and
    ``o_i^k`` the L2-normalised mean of ``z_j^k`` over the *other present* modalities ``j``. The
    term of ``(i, k)`` is

    ``-log exp(cos(z_i^k, o_i^k) / tau) / sum_m exp(cos(z_i^k, o_i^m) / tau)``

    where ``m`` runs over the records of the batch in which modality ``i`` is present together
    with at least one other modality (the same set the anchors ``k`` come from). The loss is the
    mean of all terms, as in the paper (one direction, anchors = single modalities).
    ``symmetric=True`` adds the reverse direction (the leave-one-out mean as anchor, the single
    modality as candidates) and averages both.

    Masking: an absent modality has no term, is left out of the other modalities' means and is
    never a candidate; a record with fewer than two present modalities contributes nothing.
    Absent rows are never multiplied into the loss, so they may hold any value (NaN included).

    Parameters
    ----------
    temperature : float, default=0.1
        Softmax temperature ``tau`` (fixed).
    symmetric : bool, default=False
        Also contrast in the reverse direction.

    Notes
    -----
    Logged terms: ``loss_<MOD>`` (mean term of each modality, 0 when it has none), ``top1``
    (fraction of anchors whose positive scores highest) and ``n_terms``.
    """

    def __init__(self, *, temperature: float = 0.1, symmetric: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise InvalidParameterError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)

    def compute(
        self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        names, z, p = stack_modalities(embeddings, present)          # [M, B, D], [M, B]
        pf = p.to(z.dtype)
        count = pf.sum(dim=0)                                         # present modalities per record
        others = (z.sum(dim=0) - z) / (count - pf).clamp_min(1.0)[..., None]
        others = torch.nn.functional.normalize(others, dim=-1)
        valid = p & (count >= 2)                                      # [M, B]
        with torch.autocast(z.device.type, enabled=False):               # similarities in fp32
            logits = torch.einsum("mbd,mcd->mbc", z, others) / self.temperature
        loss, correct = masked_info_nce(logits, valid)
        n_rows = valid.sum(dim=1).to(z.dtype)                         # terms per modality
        per_modality = loss.sum(dim=1)
        if self.symmetric:
            loss_rev, _ = masked_info_nce(logits.transpose(1, 2), valid)
            per_modality = 0.5 * (per_modality + loss_rev.sum(dim=1))
        n_terms = n_rows.sum()
        total = per_modality.sum() / n_terms.clamp_min(1.0)
        terms = {f"loss_{n}": (per_modality[i] / n_rows[i].clamp_min(1.0)).detach()
                 for i, n in enumerate(names)}
        terms["top1"] = (correct.sum() / n_terms.clamp_min(1.0)).detach()
        terms["n_terms"] = n_terms.detach()
        return total, terms

"""The pre-training objective interface, its registry, and helpers shared by objectives.

An objective turns the encoder's per-modality outputs into one scalar loss::

    out = encoder(x, mask)                               # SleepFMOutput
    embeddings = objective.pool(out.tokens)              # default: mean over time -> [B, D]
    loss, terms = objective.compute(embeddings, out.present)

``objective(embeddings, present)`` returns the loss alone. ``terms`` holds detached values worth
logging (per-modality losses, retrieval accuracy). An objective that needs token-level outputs
overrides :meth:`Objective.pool` (for example to return the tokens unchanged).

Adding an objective touches its own file and the registry only::

    @register_objective("my_objective")
    class MyObjective(Objective):
        def compute(self, embeddings, present): ...
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ..registry import Registry

__all__ = [
    "Objective",
    "create_objective",
    "list_objectives",
    "masked_info_nce",
    "register_objective",
    "stack_modalities",
]


class Objective(nn.Module):
    """Base class of pre-training objectives.

    Subclasses implement :meth:`compute`; they may override :meth:`pool` to choose what they
    receive from the encoder. The registry name is available as ``name``.
    """

    name: str = ""

    def pool(self, tokens: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Turn encoder tokens (per modality ``[B, T, D]``) into this objective's inputs.

        The default averages over time, giving one ``[B, D]`` embedding per modality and record
        (a 5-minute window embedding when ``T = 60``).
        """
        return {name: tok.mean(dim=1) for name, tok in tokens.items()}

    def compute(
        self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the scalar loss and a dict of detached terms to log.

        Parameters
        ----------
        embeddings : dict of str to Tensor
            Per modality, ``[B, D]`` (or what :meth:`pool` returns). Rows of absent records may hold
            anything, NaN included; they never reach the loss.
        present : dict of str to Tensor
            Per modality, ``[B]`` bool. A modality missing from both dicts is absent everywhere.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute().")

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """Scalar loss; see :meth:`compute`."""
        return self.compute(embeddings, present)[0]

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def stack_modalities(
    embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor], *, normalize: bool = True
) -> tuple[list[str], Tensor, Tensor]:
    """Check and stack per-modality embeddings, zeroing absent rows.

    Parameters
    ----------
    embeddings : dict of str to Tensor
        Per modality, ``[B, D]``.
    present : dict of str to Tensor
        Per modality, ``[B]`` bool; must have the same keys as ``embeddings``.
    normalize : bool, default=True
        L2-normalise each embedding.

    Returns
    -------
    names : list of str
        Modality order of the stacked tensors.
    z : Tensor
        ``[M, B, D]`` embeddings (float32 at least), exactly zero where absent.
    p : Tensor
        ``[M, B]`` bool presence.

    Raises
    ------
    ValueError
        Mismatched keys or shapes.
    """
    if set(embeddings) != set(present):
        raise ValueError(
            f"embeddings and present must name the same modalities, got {sorted(embeddings)} and "
            f"{sorted(present)}; pass present[m] = torch.zeros(B, dtype=torch.bool) for an absent one."
        )
    if not embeddings:
        raise ValueError("embeddings is empty; pass at least one modality.")
    names = list(embeddings)
    first = embeddings[names[0]]
    for name in names:
        emb, pres = embeddings[name], present[name]
        if emb.ndim != 2 or emb.shape != first.shape:
            raise ValueError(
                f"embeddings[{name!r}] must be [batch, dim] like the others {tuple(first.shape)}, "
                f"got {tuple(emb.shape)}; pool tokens first (Objective.pool)."
            )
        if pres.dtype != torch.bool or tuple(pres.shape) != (emb.shape[0],):
            raise ValueError(
                f"present[{name!r}] must be a bool tensor of shape ({emb.shape[0]},), "
                f"got {tuple(pres.shape)} {pres.dtype}."
            )
    dtype = torch.promote_types(first.dtype, torch.float32)
    p = torch.stack([present[n] for n in names])
    z = torch.stack([embeddings[n].to(dtype) for n in names])
    z = torch.where(p[..., None], z, 0.0)
    if normalize:
        z = nn.functional.normalize(z, dim=-1)
    return names, z, p


def masked_info_nce(logits: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """InfoNCE per row with positives on the diagonal, over valid rows and columns only.

    Parameters
    ----------
    logits : Tensor
        ``[..., N, N]`` scores of anchor ``i`` (row) against candidate ``j`` (column).
    valid : Tensor
        ``[..., N]`` bool: which items take part (as anchors and as candidates).

    Returns
    -------
    loss : Tensor
        ``[..., N]`` cross-entropy of each valid row against its diagonal, 0 for invalid rows.
    correct : Tensor
        ``[..., N]`` bool: the diagonal is the row's arg-max (False for invalid rows).
    """
    pair = valid[..., :, None] & valid[..., None, :]
    scores = logits.masked_fill(~pair, float("-inf"))
    scores = torch.where(valid[..., :, None], scores, 0.0)  # invalid rows: finite, then dropped
    diag = scores.diagonal(dim1=-2, dim2=-1)
    loss = torch.where(valid, scores.logsumexp(dim=-1) - diag, 0.0)
    correct = valid & (scores.argmax(dim=-1) == torch.arange(scores.shape[-1], device=scores.device))
    return loss, correct


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
_O = TypeVar("_O", bound=type[Objective])
OBJECTIVES = Registry("objective", attribute="name")
list_objectives = OBJECTIVES.names


def register_objective(name: str) -> Callable[[_O], _O]:
    """Class decorator: register an :class:`Objective` subclass under ``name``."""

    def decorator(cls: _O) -> _O:
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"register_objective({name!r}) expects an Objective subclass, got {cls!r}.")
        return OBJECTIVES.register(name)(cls)

    return decorator


def create_objective(name: str, **cfg: Any) -> Objective:
    """Build a registered objective with keyword options ``cfg``.

    Raises
    ------
    InvalidParameterError
        Unknown name (the message lists the known ones) or options the objective does not take.
    """
    return OBJECTIVES.create(name, **cfg)

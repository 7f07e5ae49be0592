"""The pre-training objective interface, its registry, and helpers shared by objectives.

An objective turns a batch of inputs into one scalar loss, calling the encoder as it needs::

    objective.bind(encoder)                                # once: heads sized to the encoder
    loss, terms = objective.loss(encoder, x, mask, progress=step / total_steps)
    objective.after_step(encoder, progress=...)            # after each optimiser step (EMA)
    objective.export(encoder)                              # the encoder to save

``terms`` holds detached values worth logging. ``x`` and ``mask`` are what the encoder takes: per
modality ``[B, C, T]`` windows for the SleepFM encoder, ``[B, 12, 1920]`` epochs for a ViT-1D.
The ViT-1D also takes ``keep`` (the patch tokens that enter the transformer), the hook masked
autoencoders need between the patch embedding and the blocks.

The contrastive objectives of SleepFM subclass :class:`ModalityObjective`: they contrast one
embedding per modality (:func:`modality_embeddings`) and implement :meth:`ModalityObjective.compute`.

Adding an objective touches its own file and the registry only::

    @register_objective("my_objective")
    class MyObjective(Objective):
        def loss(self, encoder, x, mask, *, progress=0.0): ...
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..channels import KIND_TO_MODALITY, OSF_LEAD_KINDS, OSF_LEADS
from ..exceptions import InvalidParameterError
from ..models import SleepFMEncoder, ViT1D
from ..registry import Registry

__all__ = [
    "ModalityObjective",
    "Objective",
    "create_objective",
    "list_objectives",
    "masked_info_nce",
    "modality_embeddings",
    "projection_mlp",
    "register_objective",
    "stack_modalities",
]


class Objective(nn.Module):
    """Base class of pre-training objectives.

    Subclasses implement :meth:`loss`; those with parts sized to the encoder build them in
    :meth:`bind`. The registry name is available as ``name``.

    Attributes
    ----------
    architectures : tuple of str
        Encoder architectures the objective trains.
    encoder_requirements : dict
        Encoder config fields the objective needs (e.g. ``{"causal": True}``); pre-training
        builds the encoder with them.
    loss_ranks_encoders : bool
        True when a lower validation loss means a better encoder, so pre-training exports the
        best one, stops early and compares it with the untrained encoder; False when the loss
        moves with schedules (DINO's temperatures): the latest encoder is exported.
    """

    name: str = ""
    architectures: ClassVar[tuple[str, ...]] = ("ViT1D",)
    encoder_requirements: ClassVar[dict[str, Any]] = {}
    loss_ranks_encoders: ClassVar[bool] = True

    def bind(self, encoder: nn.Module) -> None:
        """Check that ``encoder`` suits the objective and build the parts sized to it.

        Raises
        ------
        InvalidParameterError
            Another architecture, or a config lacking :attr:`encoder_requirements`.
        """
        arch = type(encoder).__name__
        if arch not in self.architectures:
            raise InvalidParameterError(
                f"objective {self.name!r} trains {', '.join(self.architectures)} encoders, not "
                f"{arch}; choose an encoder of those families (e.g. osf_nano).")
        wrong = {k: v for k, v in self.encoder_requirements.items()
                 if getattr(encoder.config, k, None) != v}
        if wrong:
            raise InvalidParameterError(
                f"objective {self.name!r} needs an encoder with {wrong}; create it with these "
                "config fields (sleepfm pretrain sets them).")

    def loss(self, encoder: nn.Module, x, mask, *, progress: float = 0.0
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The scalar loss of one batch and a dict of detached terms to log.

        Parameters
        ----------
        encoder : nn.Module
            The encoder being trained (bound with :meth:`bind`).
        x, mask
            The batch's inputs, as the encoder takes them.
        progress : float, default=0.0
            Fraction of the training steps done (schedules: temperatures, momenta).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement loss().")

    def after_step(self, encoder: nn.Module, *, progress: float) -> None:
        """Called after each optimiser step (e.g. to move an EMA teacher); nothing by default."""

    def export(self, encoder: nn.Module) -> nn.Module:
        """The encoder to save as the pre-trained one (default: ``encoder`` itself)."""
        return encoder

    def diagnose(self, terms: Mapping[str, float]) -> str | None:
        """What the last logged terms of a training say went wrong (e.g. a collapse), or None.

        Pre-training warns with it and records it; ``sleepfm bench`` puts it in its notes.
        """
        return None

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def modality_embeddings(encoder: nn.Module, x, mask, pool: Callable | None = None
                        ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One embedding per modality and record, and which records have the modality.

    For the SleepFM encoder: its per-modality tokens, pooled by ``pool`` (default: mean over
    time). For a ViT-1D: its epoch embedding of each modality's leads alone (the other leads
    masked), all modalities in one forward pass.

    Returns
    -------
    embeddings : dict of str to Tensor
        Per modality, ``[B, D]``.
    present : dict of str to Tensor
        Per modality, ``[B]`` bool.
    """
    if isinstance(encoder, SleepFMEncoder):
        out = encoder(x, mask)
        pooled = pool(out.tokens) if pool else {m: t.mean(dim=1) for m, t in out.tokens.items()}
        return pooled, out.present
    if not isinstance(encoder, ViT1D) or not encoder.modalities:
        raise InvalidParameterError(f"per-modality embeddings need a SleepFM encoder or a ViT-1D "
                                    f"over the 12 OSF leads, got {type(encoder).__name__}.")
    lead_modality = [KIND_TO_MODALITY[OSF_LEAD_KINDS[lead]] for lead in OSF_LEADS]
    mask = mask if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    names = list(encoder.modalities)
    masks = [mask & torch.tensor([m == mod for m in lead_modality], device=mask.device)
             for mod in names]
    out = encoder(x.repeat(len(names), 1, 1), torch.cat(masks)).split(x.shape[0])
    return dict(zip(names, out)), {mod: sub.any(dim=1) for mod, sub in zip(names, masks)}


class ModalityObjective(Objective):
    """Objectives over one embedding per modality (SleepFM's contrastive learning).

    :meth:`loss` computes :func:`modality_embeddings` (pooled by :meth:`pool` for the SleepFM
    encoder) and hands them to :meth:`compute`; ``objective(embeddings, present)`` returns the
    loss alone.
    """

    architectures = ("SleepFMEncoder", "ViT1D")

    def pool(self, tokens: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Turn SleepFM encoder tokens (per modality ``[B, T, D]``) into this objective's inputs.

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

    def loss(self, encoder, x, mask, *, progress: float = 0.0):
        return self.compute(*modality_embeddings(encoder, x, mask, self.pool))

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """Scalar loss; see :meth:`compute`."""
        return self.compute(embeddings, present)[0]


def projection_mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` linear layers with GELU between them: ``in_dim → hidden … → out_dim``
    (weights truncated normal σ 0.02, biases zero, as DINO initialises its head)."""
    if layers < 1:
        raise InvalidParameterError(f"a projection needs at least one layer, got {layers}.")
    sizes = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        nn.init.trunc_normal_(linear.weight, std=0.02)
        nn.init.zeros_(linear.bias)
        modules += [linear] + ([nn.GELU()] if i < layers - 1 else [])
    return nn.Sequential(*modules)


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

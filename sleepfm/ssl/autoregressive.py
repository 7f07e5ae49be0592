"""Autoregressive pre-training: each patch token predicts the next patch of its lead group."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from .base import Objective, register_objective
from .mae import masked_mse

__all__ = ["ARPrediction", "Autoregressive"]


class ARPrediction(NamedTuple):
    """One batch through :meth:`Autoregressive.predict`, laid out ``[B, G, Nt - 1, P]``: lead
    group, time patch of the predicting token, sample.

    Attributes
    ----------
    prediction : Tensor
        Predicted values of patch ``(g, t + 1)`` from the token of patch ``(g, t)``.
    target : Tensor
        The raw values of patch ``(g, t + 1)`` (0 where absent).
    present : Tensor
        bool: the target sample belongs to a present lead.
    """

    prediction: Tensor
    target: Tensor
    present: Tensor


@register_objective("ar")
class Autoregressive(Objective):
    """Next-patch prediction with a causal ViT-1D.

    The encoder runs with causal attention over time (a patch token sees the tokens of its own
    and earlier time patches only), so no token sees its target. A linear head maps the token of
    lead group ``g`` at time patch ``t`` to ``ŷ[g, t]``, the ``P`` raw samples of the patch of the
    same group at ``t + 1``; tokens of the last time patch have no target. With ``y`` the patch
    values (:meth:`~sleepfm.models.ViT1D.patch_values`),

    ``loss = sum over (b, g, t < Nt - 1, p) in S of (ŷ[b, g, t, p] - y[b, g, t + 1, p])² / |S|``

    where ``S`` holds the target samples of present leads (0 when ``S`` is empty).

    Raises
    ------
    InvalidParameterError
        At :meth:`bind`: an encoder that is not a ViT-1D with ``causal=True`` and
        ``pool="mean"``.

    Notes
    -----
    The CLS token is never attended to by patch tokens under causal attention, so it gets no
    training signal; the epoch embedding is the mean of the patch tokens (``pool="mean"``).
    Logged term: ``target_fraction``, the fraction of target samples from present leads.

    Examples
    --------
    >>> encoder = create_encoder("osf_nano", causal=True, pool="mean")
    >>> objective = create_objective("ar")
    >>> objective.bind(encoder)
    >>> loss, terms = objective.loss(encoder, torch.randn(2, 12, 1920), None)
    """

    architectures = ("ViT1D",)
    encoder_requirements = {"causal": True, "pool": "mean"}

    def __init__(self) -> None:
        super().__init__()

    def bind(self, encoder: nn.Module) -> None:
        super().bind(encoder)
        c = encoder.config
        per_patch = (c.patch_size_ch if c.lead_wise else c.num_leads) * c.patch_size_time
        self.head = nn.Linear(encoder.embed_dim, per_patch)

    def predict(self, encoder: nn.Module, x: Tensor, mask: Tensor | None) -> ARPrediction:
        """Predictions of every next patch and their targets.

        Parameters
        ----------
        encoder : ViT1D
            The bound (causal) encoder.
        x, mask
            ``[B, 12, 1920]`` signals and ``[B, 12]`` bool lead mask (None: all present).

        Returns
        -------
        ARPrediction
        """
        nt = encoder.config.num_patches_time
        values, present = encoder.patch_values(x, mask)
        b, n, p = values.shape
        tokens = encoder.forward_features(x, mask)[:, 1:]
        prediction = self.head(tokens).reshape(b, n // nt, nt, p)[:, :, :-1]
        values = values.reshape(b, n // nt, nt, p)[:, :, 1:]
        present = present.reshape(b, n // nt, nt, p)[:, :, 1:]
        return ARPrediction(prediction, values, present)

    def loss(self, encoder, x, mask, *, progress: float = 0.0):
        out = self.predict(encoder, x, mask)
        loss = masked_mse(out.prediction, out.target, out.present)
        return loss, {"target_fraction": out.present.float().mean().detach()}

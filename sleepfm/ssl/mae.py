"""Masked autoencoder on the ViT-1D's patch tokens (He et al., 2022)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..exceptions import InvalidParameterError
from .base import Objective, register_objective

__all__ = ["MAE", "MAEOutput", "PatchDecoder", "check_int", "masked_mse"]


def check_int(name: str, value, low: int) -> int:
    """``value`` as an int, or an :class:`InvalidParameterError` when it is not an integer
    ``>= low`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidParameterError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def masked_mse(prediction: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean of ``(prediction - target) ** 2`` over the elements where ``weight`` (bool) is True.

    Elements outside ``weight`` never enter the sum (NaN there is harmless); with none selected
    the result is 0 and still back-propagates (zero gradients).
    """
    sq = torch.where(weight, (prediction.float() - target.float()) ** 2, 0.0)
    return sq.sum() / weight.sum().clamp_min(1)


class PatchDecoder(nn.Module):
    """Light transformer decoder from tokens to the raw values of every patch.

    A linear map from ``in_dim`` to ``dim``, optionally a learned mask token put at the
    positions the input lacks, learned positional embeddings (one per patch token), ``depth``
    pre-norm transformer layers (GELU MLP of width ``4 * dim``, no dropout), a LayerNorm and a
    linear map to ``out_dim`` samples per patch.

    Parameters
    ----------
    in_dim : int
        Width of the input tokens.
    num_tokens : int
        Patch tokens per input (the ViT-1D's ``config.num_patches``).
    out_dim : int
        Samples per patch ``P``.
    dim : int, default=128
    depth : int, default=2
    heads : int, default=4
        Attention heads; must divide ``dim``.
    mask_token : bool, default=False
        Learn a mask token, so that :meth:`forward` takes ``index``.
    """

    def __init__(self, in_dim: int, num_tokens: int, out_dim: int, *, dim: int = 128,
                 depth: int = 2, heads: int = 4, mask_token: bool = False) -> None:
        super().__init__()
        self.num_tokens, self.dim = num_tokens, dim
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, tokens: Tensor, index: Tensor | None = None) -> Tensor:
        """Patch values ``[B, num_tokens, out_dim]`` from ``tokens`` ``[B, K, in_dim]``.

        Without ``index`` the tokens are all ``num_tokens`` patches in order; with it
        (``[B, K]`` long) token ``k`` sits at position ``index[:, k]`` and every other position
        holds the mask token.
        """
        z = self.embed(tokens)
        if index is not None:
            if self.mask_token is None:
                raise InvalidParameterError("this decoder has no mask token; build it with "
                                            "mask_token=True to decode a subset of the patches.")
            full = self.mask_token.to(z.dtype).expand(z.shape[0], self.num_tokens, -1)
            z = full.scatter(1, index[:, :, None].expand(-1, -1, self.dim), z)
        z = z + self.pos_embed
        for layer in self.layers:
            z = layer(z)
        return self.head(self.norm(z))


def normalize_patches(values: Tensor, present: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch minus its mean, over the square root of its variance plus ``eps``, both over
    its present samples (variance divided by their count); absent samples are 0."""
    n = present.sum(dim=-1, keepdim=True).clamp_min(1)
    values = torch.where(present, values.float(), 0.0)
    mean = values.sum(dim=-1, keepdim=True) / n
    var = torch.where(present, (values - mean) ** 2, 0.0).sum(dim=-1, keepdim=True) / n
    return torch.where(present, (values - mean) / (var + eps).sqrt(), 0.0)


class MAEOutput(NamedTuple):
    """One batch through :meth:`MAE.reconstruct`; every tensor ``[B, N, ...]`` in token order.

    Attributes
    ----------
    prediction : Tensor
        ``[B, N, P]`` decoded patch values (every patch, hidden or not).
    target : Tensor
        ``[B, N, P]`` raw (or, with ``norm_target``, normalised) patch values, 0 where absent.
    hidden : Tensor
        ``[B, N]`` bool: the patch token was hidden from the encoder.
    present : Tensor
        ``[B, N, P]`` bool: the sample belongs to a present lead.
    """

    prediction: Tensor
    target: Tensor
    hidden: Tensor
    present: Tensor


@register_objective("mae")
class MAE(Objective):
    """Masked autoencoder on the patch tokens of a ViT-1D.

    Per sample, ``n_hidden = N - max(1, int(N * (1 - mask_ratio)))`` of the ``N`` patch tokens,
    drawn uniformly at random (torch's generator), are hidden: only the visible ones enter the
    encoder (``forward_features(x, mask, keep=visible)``). A light decoder
    (:class:`PatchDecoder` with a mask token) maps the visible tokens to ``decoder_dim``, puts
    the mask token at the hidden positions and reconstructs the ``P`` raw samples of every
    patch. With ``y`` the patch values (:meth:`~sleepfm.models.ViT1D.patch_values`) and ``ŷ`` the
    reconstruction,

    ``loss = sum over (b, j, p) in S of (ŷ[b, j, p] - y[b, j, p])² / |S|``

    where ``S`` holds the samples ``p`` of hidden patches ``j`` that belong to present leads
    (0 when ``S`` is empty). Visible patches and masked leads never enter the loss.
    ``norm_target=True`` replaces each ``y[b, j]`` by its standardised version over its present
    samples (MAE's normalised-pixel loss; see :func:`normalize_patches`).

    Parameters
    ----------
    mask_ratio : float, default=0.75
        Fraction of the patch tokens hidden, in (0, 1).
    decoder_dim : int, default=128
    decoder_depth : int, default=2
        Transformer layers of the decoder (>= 1).
    decoder_heads : int, default=4
        Must divide ``decoder_dim``.
    norm_target : bool, default=False

    Raises
    ------
    InvalidParameterError
        An option out of range; at :meth:`bind`, an encoder that is not a ViT-1D with
        ``pool="mean"`` and ``causal=False``.

    Notes
    -----
    The CLS token's output gets no training signal from reconstruction, so the objective asks for
    ``pool="mean"``: the epoch embedding is the mean of the patch tokens. Logged term:
    ``masked_fraction``, the fraction of patch tokens hidden.

    Examples
    --------
    >>> encoder = create_encoder("osf_nano", pool="mean")
    >>> objective = create_objective("mae", mask_ratio=0.75)
    >>> objective.bind(encoder)
    >>> loss, terms = objective.loss(encoder, torch.randn(2, 12, 1920), None)
    """

    architectures = ("ViT1D",)
    encoder_requirements = {"pool": "mean"}

    def __init__(self, *, mask_ratio: float = 0.75, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 4,
                 norm_target: bool = False) -> None:
        super().__init__()
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) \
                or not 0.0 < mask_ratio < 1.0:
            raise InvalidParameterError(f"mask_ratio must be in (0, 1), got {mask_ratio!r}.")
        self.decoder_dim = check_int("decoder_dim", decoder_dim, 1)
        self.decoder_depth = check_int("decoder_depth", decoder_depth, 1)
        self.decoder_heads = check_int("decoder_heads", decoder_heads, 1)
        if decoder_dim % decoder_heads:
            raise InvalidParameterError(f"decoder_heads={decoder_heads} must divide "
                                        f"decoder_dim={decoder_dim}.")
        if not isinstance(norm_target, bool):
            raise InvalidParameterError(f"norm_target must be true or false, got {norm_target!r}.")
        self.mask_ratio, self.norm_target = float(mask_ratio), norm_target

    def bind(self, encoder: nn.Module) -> None:
        super().bind(encoder)
        if encoder.config.causal:
            raise InvalidParameterError(f"objective {self.name!r} needs an encoder with "
                                        "causal=False: dropped tokens cannot be combined with "
                                        "causal attention.")
        c = encoder.config
        per_patch = (c.patch_size_ch if c.lead_wise else c.num_leads) * c.patch_size_time
        self.decoder = PatchDecoder(encoder.embed_dim, c.num_patches, per_patch,
                                    dim=self.decoder_dim, depth=self.decoder_depth,
                                    heads=self.decoder_heads, mask_token=True)

    def num_visible(self, num_patches: int) -> int:
        """Patch tokens the encoder sees out of ``num_patches``."""
        return max(1, int(num_patches * (1.0 - self.mask_ratio)))

    def random_visible(self, batch: int, num_patches: int, device=None) -> Tensor:
        """``[batch, K]`` sorted indices of the visible patch tokens, drawn per sample."""
        order = torch.rand(batch, num_patches, device=device).argsort(dim=1)
        return order[:, :self.num_visible(num_patches)].sort(dim=1).values

    def reconstruct(self, encoder: nn.Module, x: Tensor, mask: Tensor | None) -> MAEOutput:
        """Draw the hidden tokens, encode the visible ones and decode every patch.

        Parameters
        ----------
        encoder : ViT1D
            The bound encoder.
        x, mask
            ``[B, 12, 1920]`` signals and ``[B, 12]`` bool lead mask (None: all present).

        Returns
        -------
        MAEOutput
            What :meth:`loss` reduces; the same torch seed gives the same hidden tokens.
        """
        values, present = encoder.patch_values(x, mask)
        b, n = values.shape[:2]
        visible = self.random_visible(b, n, device=values.device)
        tokens = encoder.forward_features(x, mask, keep=visible)[:, 1:]
        prediction = self.decoder(tokens, visible)
        hidden = torch.ones(b, n, dtype=torch.bool, device=values.device)
        hidden.scatter_(1, visible, False)
        target = normalize_patches(values, present) if self.norm_target else values
        return MAEOutput(prediction, target, hidden, present)

    def loss(self, encoder, x, mask, *, progress: float = 0.0):
        out = self.reconstruct(encoder, x, mask)
        loss = masked_mse(out.prediction, out.target, out.present & out.hidden[:, :, None])
        return loss, {"masked_fraction": out.hidden.float().mean().detach()}

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, mask_ratio={self.mask_ratio}, "
                f"norm_target={self.norm_target}")

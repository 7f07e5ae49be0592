"""VQ-VAE: the ViT-1D's patch tokens quantised to a learned codebook of discrete tokens."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import InvalidParameterError
from .base import Objective, register_objective
from .mae import PatchDecoder, check_int, masked_mse

__all__ = ["VQOutput", "VQVAE"]


class VQOutput(NamedTuple):
    """One batch through :meth:`VQVAE.quantize`; every tensor ``[B, N, ...]`` in token order.

    Attributes
    ----------
    z_e : Tensor
        ``[B, N, code_dim]`` L2-normalised projections of the encoder's patch tokens.
    z_q : Tensor
        ``[B, N, code_dim]`` their nearest L2-normalised codes (no gradient to ``z_e``).
    index : Tensor
        ``[B, N]`` long: the code of each token.
    valid : Tensor
        ``[B, N]`` bool: the token covers at least one present lead.
    prediction : Tensor
        ``[B, N, P]`` patch values decoded from the quantised tokens (straight-through).
    target : Tensor
        ``[B, N, P]`` raw patch values, 0 where absent.
    present : Tensor
        ``[B, N, P]`` bool: the sample belongs to a present lead.
    """

    z_e: Tensor
    z_q: Tensor
    index: Tensor
    valid: Tensor
    prediction: Tensor
    target: Tensor
    present: Tensor


@register_objective("vqvae")
class VQVAE(Objective):
    """Discrete patch tokens: a vector-quantised autoencoder on the ViT-1D's patch tokens.

    Every patch token of the encoder is projected to ``code_dim`` and L2-normalised (``z_e``),
    then replaced by the nearest of ``codebook_size`` L2-normalised codes (``z_q``; nearest in
    Euclidean distance, i.e. highest cosine). A light decoder
    (:class:`~sleepfm.ssl.mae.PatchDecoder` without mask token) reconstructs the ``P`` raw
    samples of every patch from ``z_e + sg(z_q - z_e)`` (straight-through estimator; ``sg``
    stops the gradient). With ``y`` the patch values and ``ŷ`` the reconstruction,

    ``loss = recon + codebook + beta * commitment``

    * ``recon = sum over (b, j, p) in S of (ŷ[b, j, p] - y[b, j, p])² / |S|``, ``S`` the
      samples of present leads;
    * ``codebook = mean over valid tokens and code dimensions of (z_q - sg(z_e))²``;
    * ``commitment = mean over valid tokens and code dimensions of (z_e - sg(z_q))²``;

    a valid token covers at least one present lead (tokens of fully absent lead groups are
    neither counted nor quantised into the loss). Each term is 0 when it has nothing to average.

    Codebook usage is kept healthy by restarts: after each optimiser step (:meth:`after_step`),
    a code unused by any valid token for ``dead_after`` consecutive steps is replaced by one of
    the ``z_e`` kept from the latest training batch (a random subset of at most
    ``codebook_size`` of its valid tokens), drawn with torch's generator. Usage counts, idle
    steps and those recent ``z_e`` are buffers, saved with the model.

    Parameters
    ----------
    codebook_size : int, default=512
        Number of codes ``K`` (>= 2).
    code_dim : int, default=64
    beta : float, default=0.25
        Weight of the commitment loss (>= 0).
    decoder_dim : int, default=128
    decoder_depth : int, default=2
    decoder_heads : int, default=4
        Must divide ``decoder_dim``.
    dead_after : int, default=100
        Idle steps after which a code is restarted; 0 never restarts.

    Raises
    ------
    InvalidParameterError
        An option out of range; at :meth:`bind`, an encoder that is not a ViT-1D with
        ``pool="mean"``.

    Notes
    -----
    Logged terms: ``recon``, ``codebook``, ``commitment``, ``perplexity`` (exp of the entropy of
    the code usage over the batch's valid tokens: 1 when one code takes all, ``K`` when all are
    used equally), ``codes_used`` (distinct codes in the batch) and ``codes_restarted`` (total
    restarts so far). The epoch embedding is the mean of the patch tokens (``pool="mean"``).

    Examples
    --------
    >>> encoder = create_encoder("osf_nano", pool="mean")
    >>> objective = create_objective("vqvae", codebook_size=256)
    >>> objective.bind(encoder)
    >>> loss, terms = objective.loss(encoder, torch.randn(2, 12, 1920), None)
    """

    architectures = ("ViT1D",)
    encoder_requirements = {"pool": "mean"}

    def __init__(self, *, codebook_size: int = 512, code_dim: int = 64, beta: float = 0.25,
                 decoder_dim: int = 128, decoder_depth: int = 2, decoder_heads: int = 4,
                 dead_after: int = 100) -> None:
        super().__init__()
        self.codebook_size = check_int("codebook_size", codebook_size, 2)
        self.code_dim = check_int("code_dim", code_dim, 1)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise InvalidParameterError(f"beta must be a number >= 0, got {beta!r}.")
        self.decoder_dim = check_int("decoder_dim", decoder_dim, 1)
        self.decoder_depth = check_int("decoder_depth", decoder_depth, 1)
        self.decoder_heads = check_int("decoder_heads", decoder_heads, 1)
        if decoder_dim % decoder_heads:
            raise InvalidParameterError(f"decoder_heads={decoder_heads} must divide "
                                        f"decoder_dim={decoder_dim}.")
        self.dead_after = check_int("dead_after", dead_after, 0)
        self.beta = float(beta)
        self.codebook = nn.Parameter(F.normalize(torch.randn(codebook_size, code_dim), dim=-1))
        self.register_buffer("usage", torch.zeros(codebook_size))
        self.register_buffer("idle", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("recent", torch.zeros(codebook_size, code_dim))
        self.register_buffer("recent_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def bind(self, encoder: nn.Module) -> None:
        super().bind(encoder)
        c = encoder.config
        per_patch = (c.patch_size_ch if c.lead_wise else c.num_leads) * c.patch_size_time
        self.projection = nn.Linear(encoder.embed_dim, self.code_dim)
        self.decoder = PatchDecoder(self.code_dim, c.num_patches, per_patch,
                                    dim=self.decoder_dim, depth=self.decoder_depth,
                                    heads=self.decoder_heads)

    def codes(self) -> Tensor:
        """``[K, code_dim]`` the L2-normalised codebook."""
        return F.normalize(self.codebook, dim=-1)

    def quantize(self, encoder: nn.Module, x: Tensor, mask: Tensor | None) -> VQOutput:
        """Encode, quantise and decode one batch.

        Parameters
        ----------
        encoder : ViT1D
            The bound encoder.
        x, mask
            ``[B, 12, 1920]`` signals and ``[B, 12]`` bool lead mask (None: all present).

        Returns
        -------
        VQOutput
        """
        values, present = encoder.patch_values(x, mask)
        tokens = encoder.forward_features(x, mask)[:, 1:]
        z_e = F.normalize(self.projection(tokens).float(), dim=-1)
        codes = self.codes().float()
        index = (z_e.detach() @ codes.T).argmax(dim=-1)          # nearest unit vector
        z_q = codes[index]
        prediction = self.decoder(z_e + (z_q - z_e).detach())
        return VQOutput(z_e, z_q, index, present.any(dim=-1), prediction, values, present)

    def loss(self, encoder, x, mask, *, progress: float = 0.0):
        out = self.quantize(encoder, x, mask)
        valid = out.valid[:, :, None].expand_as(out.z_e)
        recon = masked_mse(out.prediction, out.target, out.present)
        codebook = masked_mse(out.z_q, out.z_e.detach(), valid)
        commitment = masked_mse(out.z_e, out.z_q.detach(), valid)
        loss = recon + codebook + self.beta * commitment
        counts = torch.bincount(out.index[out.valid], minlength=self.codebook_size).float()
        if self.training:
            self._remember(counts, out.z_e[out.valid])
        p = counts / counts.sum().clamp_min(1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum()
        terms = {"recon": recon, "codebook": codebook, "commitment": commitment,
                 "perplexity": entropy.exp(), "codes_used": (counts > 0).sum(),
                 "codes_restarted": self.restarts}
        return loss, {k: v.detach().float() for k, v in terms.items()}

    @torch.no_grad()
    def _remember(self, counts: Tensor, z_e: Tensor) -> None:
        """Add the batch's code usage and keep a random subset of its ``z_e`` for restarts."""
        self.usage.add_(counts)
        n = min(len(z_e), len(self.recent))
        if n:
            pick = torch.randperm(len(z_e), device=z_e.device)[:n]
            self.recent[:n] = z_e[pick].detach().to(self.recent.dtype)
        self.recent_count.fill_(n)

    @torch.no_grad()
    def after_step(self, encoder: nn.Module, *, progress: float) -> None:
        """Count idle steps per code and restart the codes idle for ``dead_after`` steps.

        Under DDP the usage is summed across devices and the codebook broadcast from rank 0,
        so every replica restarts the same codes to the same vectors.
        """
        usage = self.usage.clone()
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(usage)
        self.usage.zero_()
        self.idle.add_(1).masked_fill_(usage > 0, 0)
        if not self.dead_after:
            return
        dead = (self.idle >= self.dead_after).nonzero().flatten()
        if not len(dead):
            return
        count = int(self.recent_count)
        if count:
            pick = torch.randint(count, (len(dead),), device=self.recent.device)
            self.codebook.data[dead] = self.recent[pick].to(self.codebook.dtype)
            self.idle[dead] = 0
            self.restarts.add_(len(dead))
        if distributed:
            dist.broadcast(self.codebook.data, src=0)
            dist.broadcast(self.idle, src=0)
            dist.broadcast(self.restarts, src=0)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, codebook_size={self.codebook_size}, "
                f"code_dim={self.code_dim}, beta={self.beta}")

"""SleepFM encoder: convolutional tokenizer, channel attention pool, temporal transformer.

One encoder per modality (BAS, ECG, EMG, RESP) turns every 5 s of every channel into a token,
pools the channels of a modality into one token with masked attention, and runs a small transformer
over time. Follows the SleepFM paper (Thapa et al., 2024/2025) but is built for throughput:

* the tokenizer reaches a 128-D token in 6 strided convolutions whose early layers use large strides,
  with BatchNorm folded into the convolution at inference and no LayerNorm over time; at inference
  its activations are channels-last and its last layers, whose kernels span their whole input, are
  matrix products;
* the channel pool is one learned query attending over the channel tokens (8 heads, masked softmax),
  computed in a factorised form whose cost per channel token is ``2 * dim * heads`` multiply-adds;
  it always runs, so a record's embedding never depends on what it is batched with;
* the temporal transformer uses rotary position embeddings computed on the fly, so any number of
  tokens works (the training context is 60 tokens = 5 minutes);
* shapes are static (padding channels are masked, never dropped), so the model compiles with
  ``torch.compile`` and runs under bf16 autocast.

The encoder of each modality has its own weights: signals of the four modalities differ in spectrum
and morphology (EEG up to ~35 Hz, respiration below 1 Hz), and the contrastive objectives align
separate towers. The cost of separate weights is parameters only, not compute.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..channels import MODALITIES
from ..exceptions import InvalidParameterError
from .factory import ConfiguredEncoder, register_architecture, register_encoder

__all__ = [
    "SleepFMConfig",
    "SleepFMEncoder",
    "SleepFMOutput",
    "ConvTokenizer",
    "ChannelAttentionPool",
    "TemporalTransformer",
    "count_parameters",
    "fuse_modalities",
    "pool_epochs",
    "pool_windows",
]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SleepFMConfig:
    """Everything needed to rebuild a :class:`SleepFMEncoder` exactly.

    Parameters
    ----------
    modalities : tuple of str, default=("BAS", "ECG", "EMG", "RESP")
        Modalities with an encoder, each from :data:`sleepfm.channels.MODALITIES`.
    sampling_rate : float, default=128.0
        Sampling rate (Hz) the model expects; signals must be resampled to it.
    token_seconds : float, default=5.0
        Seconds of signal per token.
    embed_dim : int, default=128
        Token dimension.
    conv_channels, conv_kernels, conv_strides : tuple of int
        Output channels, kernel sizes and strides of the tokenizer's convolutions (one entry per
        layer). Each layer pads by ``(kernel - stride) // 2``. The last entry of ``conv_channels``
        must equal ``embed_dim``; positions left after the last layer are averaged.
    pool_heads : int, default=8
        Heads of the channel attention pool.
    depth : int, default=2
        Temporal transformer blocks.
    num_heads : int, default=8
        Heads of the temporal transformer.
    ffn_dim : int, default=1600
        Hidden width of the transformer's feed-forward layers.
    dropout : float, default=0.3
        Dropout of the temporal transformer (attention weights and residual branches).
    context_tokens : int, default=60
        Tokens per training window (5 minutes). Inference accepts any number of tokens.
    tokens_per_epoch : int, default=6
        Tokens per 30 s scoring epoch.
    rope_base : float, default=10000.0
        Base of the rotary position embedding's frequencies.
    """

    modalities: tuple[str, ...] = MODALITIES
    sampling_rate: float = 128.0
    token_seconds: float = 5.0
    embed_dim: int = 128
    conv_channels: tuple[int, ...] = (16, 32, 64, 64, 128, 128)
    conv_kernels: tuple[int, ...] = (16, 8, 4, 2, 5, 1)
    conv_strides: tuple[int, ...] = (8, 4, 2, 2, 5, 1)
    pool_heads: int = 8
    depth: int = 2
    num_heads: int = 8
    ffn_dim: int = 1600
    dropout: float = 0.3
    context_tokens: int = 60
    tokens_per_epoch: int = 6
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("modalities", "conv_channels", "conv_kernels", "conv_strides"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    @property
    def samples_per_token(self) -> int:
        """Samples in one token (``sampling_rate * token_seconds``)."""
        return int(round(self.sampling_rate * self.token_seconds))

    def conv_lengths(self) -> list[int]:
        """Sequence length after each tokenizer convolution, starting from ``samples_per_token``."""
        lengths = [self.samples_per_token]
        for k, s in zip(self.conv_kernels, self.conv_strides):
            pad = (k - s) // 2
            lengths.append((lengths[-1] + 2 * pad - k) // s + 1)
        return lengths

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SleepFMConfig:
        """Rebuild a config from :meth:`to_dict` output (unknown keys raise
        :class:`~sleepfm.exceptions.InvalidParameterError`)."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidParameterError(
                f"Unknown SleepFMConfig field(s) {unknown}. Valid fields are: {', '.join(known)}."
            )
        return cls(**dict(data))

    def _validate(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise InvalidParameterError(
                f"modalities must be distinct names from {MODALITIES}, got {self.modalities}."
            )
        n = len(self.conv_channels)
        if n == 0 or len(self.conv_kernels) != n or len(self.conv_strides) != n:
            raise InvalidParameterError(
                "conv_channels, conv_kernels and conv_strides need one entry per layer and the same "
                f"length; got {len(self.conv_channels)}, {len(self.conv_kernels)} and "
                f"{len(self.conv_strides)}."
            )
        if self.conv_channels[-1] != self.embed_dim:
            raise InvalidParameterError(
                f"The last tokenizer layer must output embed_dim={self.embed_dim} channels, "
                f"got conv_channels[-1]={self.conv_channels[-1]}."
            )
        if min(self.conv_kernels) < 1 or min(self.conv_strides) < 1:
            raise InvalidParameterError("conv_kernels and conv_strides must be positive.")
        if min(self.conv_lengths()) < 1:
            raise InvalidParameterError(
                f"The tokenizer shrinks {self.samples_per_token} samples below one position "
                f"(lengths {self.conv_lengths()}); use smaller strides or longer tokens."
            )
        for name in ("pool_heads", "num_heads"):
            heads = getattr(self, name)
            if heads < 1 or self.embed_dim % heads:
                raise InvalidParameterError(f"embed_dim={self.embed_dim} must be divisible by {name}={heads}.")
        if (self.embed_dim // self.num_heads) % 2:
            raise InvalidParameterError(
                "Rotary position embeddings need an even head dimension; "
                f"embed_dim / num_heads = {self.embed_dim // self.num_heads}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidParameterError(f"dropout must be in [0, 1), got {self.dropout}.")
        for name in ("depth", "ffn_dim", "context_tokens", "tokens_per_epoch"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name} must be >= 1, got {getattr(self, name)}.")


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
class _ConvBNELU(nn.Module):
    """Conv1d (no bias) → BatchNorm → ELU, with padding-aware statistics and folded inference.

    In training, BatchNorm statistics are computed over the *valid* tokens only (padding channels
    would otherwise pull them towards zero). In eval mode the normalisation is folded into the
    convolution's weight and bias (:meth:`fused`), so inference costs one convolution and one ELU.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, *,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.stride = stride
        self.padding = (kernel - stride) // 2
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bn_weight = nn.Parameter(torch.ones(out_ch))
        self.bn_bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("running_mean", torch.zeros(out_ch))
        self.register_buffer("running_var", torch.ones(out_ch))

    def fused(self) -> tuple[Tensor, Tensor]:
        """Convolution weight ``[out_ch, in_ch, kernel]`` and bias with the running BatchNorm
        statistics folded in."""
        scale = self.bn_weight * torch.rsqrt(self.running_var + self.eps)
        return self.weight * scale[:, None, None], self.bn_bias - self.running_mean * scale

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """Map ``[N, in_ch, L]`` to ``[N, out_ch, L']``; ``valid`` ``[N]`` marks real tokens."""
        if not self.training:
            weight, bias = self.fused()
            y = F.conv1d(x, weight, bias, stride=self.stride, padding=self.padding)
            return F.elu(y, inplace=True)
        y = F.conv1d(x, self.weight, stride=self.stride, padding=self.padding)
        yf = y.float()
        w = valid.to(torch.float32)[:, None, None]
        count = w.sum() * y.shape[-1]
        denom = count.clamp_min(1.0)
        mean = (yf * w).sum(dim=(0, 2)) / denom
        centred = yf - mean[:, None]
        var = (centred.square() * w).sum(dim=(0, 2)) / denom
        with torch.no_grad():
            m = self.momentum
            unbiased = var * count / (count - 1.0).clamp_min(1.0)
            seen = count > 1
            self.running_mean.copy_(torch.where(seen, (1 - m) * self.running_mean + m * mean,
                                                self.running_mean))
            self.running_var.copy_(torch.where(seen, (1 - m) * self.running_var + m * unbiased,
                                               self.running_var))
        out = centred * (torch.rsqrt(var + self.eps) * self.bn_weight)[:, None] + self.bn_bias[:, None]
        return F.elu(out.to(y.dtype), inplace=True)


class ConvTokenizer(nn.Module):
    """Turn each token's raw samples (one channel) into a ``embed_dim`` vector.

    Parameters
    ----------
    config : SleepFMConfig
        Uses ``conv_channels``, ``conv_kernels``, ``conv_strides``, ``embed_dim`` and
        ``samples_per_token``.

    Attributes
    ----------
    cpu_chunk : int
        Tokens per chunk at inference on CPU (default 512); see :meth:`forward`.

    Notes
    -----
    Default layers (samples → positions × channels): 640 → 80×16 (k16 s8) → 20×32 (k8 s4) →
    10×64 (k4 s2) → 5×64 (k2 s2) → 1×128 (k5 s5) → 1×128 (k1), about 0.28 M multiply-adds per
    token, then LayerNorm. The reference tokenizer (k5 s2 throughout, 4→128 channels, LayerNorm
    over time after every layer) needs about 0.8 M and much more memory traffic.
    """

    def __init__(self, config: SleepFMConfig) -> None:
        super().__init__()
        chans = (1, *config.conv_channels)
        self.samples_per_token = config.samples_per_token
        self.layers = nn.ModuleList(
            _ConvBNELU(ci, co, k, s)
            for ci, co, k, s in zip(chans[:-1], chans[1:], config.conv_kernels, config.conv_strides)
        )
        self.norm = nn.LayerNorm(config.embed_dim)
        self.cpu_chunk = 512
        # A layer whose kernel spans its whole unpadded input is a matrix product.
        self._spans_input = [layer.padding == 0 and k == length for layer, k, length
                             in zip(self.layers, config.conv_kernels, config.conv_lengths())]

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """Map ``[N, samples_per_token]`` to ``[N, embed_dim]``; ``valid`` ``[N]`` bool.

        In eval mode the BatchNorms are folded into the convolutions once per call, activations
        are kept channels-last (``[N, C, 1, L]`` in ``channels_last`` memory, which oneDNN
        convolves in place instead of reordering them to and from a blocked layout around every
        layer), and a layer whose kernel spans its whole input is a matrix product. On CPU, tokens are processed in chunks of ``cpu_chunk`` so that
        intermediate activations stay small: fresh multi-megabyte allocations cost page faults
        that can dominate the run time. Tokens are independent at inference, so neither changes
        the result. (``torch.compile`` unrolls the chunks: compiling on CPU takes longer, running
        does not.)
        """
        if self.training:
            h = x.unsqueeze(1)
            for layer in self.layers:
                h = layer(h, valid)
            return self.norm(h.mean(dim=-1))
        weights = self._inference_weights()
        if x.device.type != "cpu":
            return self._infer(x, weights)
        return torch.cat([self._infer(part, weights) for part in x.split(self.cpu_chunk)])

    def _inference_weights(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the folded weight in the form :meth:`_infer` applies it, and the bias."""
        out = []
        for layer, spans in zip(self.layers, self._spans_input):
            weight, bias = layer.fused()
            if spans:  # [N, C, 1, L] channels-last flattens position-major, channel-minor
                weight = weight.permute(0, 2, 1).reshape(weight.shape[0], -1)
            else:
                weight = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            out.append((weight, bias))
        return out

    def _infer(self, x: Tensor, weights: list[tuple[Tensor, Tensor]]) -> Tensor:
        n = x.shape[0]
        h = x.reshape(n, 1, 1, -1)
        for layer, (weight, bias) in zip(self.layers, weights):
            if weight.ndim == 2:
                y = F.linear(h.permute(0, 2, 3, 1).reshape(n, -1), weight, bias).view(n, -1, 1, 1)
            else:
                y = F.conv2d(h, weight, bias, stride=(1, layer.stride), padding=(0, layer.padding))
            h = F.elu(y, inplace=True)
        return self.norm(h.mean(dim=(2, 3)))


class ChannelAttentionPool(nn.Module):
    """Pool a variable set of channel tokens into one token with a learned query (masked MHA).

    Equivalent to ``nn.MultiheadAttention(query=learned, key=value=channel tokens)`` followed by
    LayerNorm (the learned query already lives in key space, so there is no query projection, and
    no key bias, which would cancel in the softmax). It is computed in a factorised form: with one
    fixed query, every head's attention logit is a dot product of the channel token with a vector
    ``u_h = W_k,h^T q_h / sqrt(d_h)``, and the value projection can be applied after the weighted
    sum. This costs ``2 * dim * heads`` multiply-adds per channel token instead of ``2 * dim^2``.
    Permutation-invariant over channels; masked channels get zero weight. Attention runs for any
    number of channels, one included.

    Parameters
    ----------
    dim : int
        Token dimension.
    heads : int
        Attention heads (``dim`` must be divisible by it).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.k_proj = nn.Linear(dim, dim, bias=False)  # a key bias shifts all logits of a head equally
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Pool ``tokens`` ``[B, C, T, D]`` over channels where ``mask`` ``[B, C]`` is True.

        Returns ``[B, T, D]``. Rows without any channel give finite values the caller discards.
        """
        d, h, hd = tokens.shape[-1], self.heads, self.head_dim
        q = self.query.view(h, hd)
        u = torch.einsum("hed,he->dh", self.k_proj.weight.view(h, hd, d), q) / math.sqrt(hd)
        logits = (tokens @ u.to(tokens.dtype)).float()                      # [B, C, T, H]
        keep = mask | ~mask.any(dim=1, keepdim=True)                       # all-masked rows: no NaN
        logits = logits.masked_fill(~keep[:, :, None, None], float("-inf"))
        attn = logits.softmax(dim=1).to(tokens.dtype)
        pooled = torch.einsum("bcth,bctd->bthd", attn, tokens)              # [B, T, H, D]
        w_v = self.v_proj.weight.view(h, hd, d).to(pooled.dtype)
        values = torch.einsum("bthd,hed->bthe", pooled, w_v)
        values = values.flatten(2) + self.v_proj.bias.to(pooled.dtype)
        return self.norm(self.out_proj(values))


def _rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of the last dimension of ``x`` by the given angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class _Block(nn.Module):
    """Pre-norm transformer block with rotary self-attention."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                               # [B, heads, T, head_dim]
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class TemporalTransformer(nn.Module):
    """Transformer over the token sequence of one modality, with rotary positions (any length).

    Parameters
    ----------
    config : SleepFMConfig
        Uses ``embed_dim``, ``depth``, ``num_heads``, ``ffn_dim``, ``dropout``, ``rope_base``.
    """

    def __init__(self, config: SleepFMConfig) -> None:
        super().__init__()
        half = config.embed_dim // config.num_heads // 2
        inv_freq = config.rope_base ** (-torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self.blocks = nn.ModuleList(
            _Block(config.embed_dim, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, T, D]`` to ``[B, T, D]``."""
        positions = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq                         # [T, head_dim / 2]
        cos, sin = angles.cos(), angles.sin()
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x)


class _ModalityEncoder(nn.Module):
    """Tokenizer → channel pool → temporal transformer for one modality."""

    def __init__(self, config: SleepFMConfig) -> None:
        super().__init__()
        self.tokenizer = ConvTokenizer(config)
        self.pool = ChannelAttentionPool(config.embed_dim, config.pool_heads)
        self.transformer = TemporalTransformer(config)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, c, n = x.shape
        spt = self.tokenizer.samples_per_token
        t = n // spt
        if self.training:  # padding must reach neither BatchNorm statistics nor weight gradients
            x = torch.where(mask[:, :, None], x, 0.0)
        valid = mask[:, :, None].expand(b, c, t).reshape(-1)
        tokens = self.tokenizer(x.reshape(b * c * t, spt), valid).view(b, c, t, -1)
        tokens = torch.where(mask[:, :, None, None], tokens, 0.0)
        return self.transformer(self.pool(tokens, mask))


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------
class SleepFMOutput(NamedTuple):
    """What :meth:`SleepFMEncoder.forward` returns.

    Attributes
    ----------
    tokens : dict of str to Tensor
        Per modality given, 5 s tokens ``[B, T, D]`` (zero for records where it is absent).
    present : dict of str to Tensor
        Per modality given, ``[B]`` bool: at least one channel present.
    fused : Tensor
        ``[B, T, D]`` mean of the present modalities' tokens (zero where none is present).
    """

    tokens: dict[str, Tensor]
    present: dict[str, Tensor]
    fused: Tensor


@register_architecture("SleepFMEncoder")
class SleepFMEncoder(ConfiguredEncoder):
    """Multi-modal PSG encoder: one tokenizer + channel pool + temporal transformer per modality.

    Parameters
    ----------
    config : SleepFMConfig, optional
        Architecture; the default is ``sleepfm_base``.

    Attributes
    ----------
    config : SleepFMConfig
    encoders : nn.ModuleDict
        One encoder per modality, keyed by modality name.

    Examples
    --------
    >>> enc = create_encoder("sleepfm_tiny").eval()
    >>> x = {"BAS": torch.randn(2, 3, 60 * 640), "ECG": torch.randn(2, 1, 60 * 640)}
    >>> out = enc(x)
    >>> out.fused.shape, pool_epochs(out.fused).shape
    (torch.Size([2, 60, 32]), torch.Size([2, 10, 32]))
    """

    config_class = SleepFMConfig

    def __init__(self, config: SleepFMConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else SleepFMConfig()
        self.encoders = nn.ModuleDict({m: _ModalityEncoder(self.config) for m in self.config.modalities})

    def forward_features(
        self, x: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Encode each modality into 5 s tokens.

        Parameters
        ----------
        x : dict of str to Tensor
            Per modality, signals ``[B, C, T * samples_per_token]`` at ``config.sampling_rate``
            (z-scored, as written by ``sleepfm preprocess``). Modalities may be left out; channel
            counts may differ between modalities. All modalities share ``B`` and ``T``.
        mask : dict of str to Tensor, optional
            Per modality, ``[B, C]`` bool, True where a channel is real (False for padding).
            A modality left out of ``mask`` has all its channels present.

        Returns
        -------
        dict of str to Tensor
            Per modality of ``x``, tokens ``[B, T, D]``; rows of records without any channel of that
            modality are zero (see :meth:`presence`).

        Raises
        ------
        ValueError
            Unknown modality, wrong shapes, or a length that is not a whole number of tokens.
        """
        mask = self._check_inputs(x, mask)
        param = next(self.parameters())
        out = {}
        for name, signal in x.items():
            m = mask[name]
            tokens = self.encoders[name](signal.to(param.dtype), m)
            out[name] = torch.where(m.any(dim=1)[:, None, None], tokens, 0.0)
        return out

    def forward(
        self, x: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None
    ) -> SleepFMOutput:
        """Encode and fuse; see :meth:`forward_features` for the arguments.

        Returns
        -------
        SleepFMOutput
            ``tokens`` and ``present`` per modality, and the ``fused`` tokens ``[B, T, D]``.
        """
        tokens = self.forward_features(x, mask)
        present = self.presence(x, mask)
        return SleepFMOutput(tokens, present, fuse_modalities(tokens, present))

    @staticmethod
    def presence(x: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Per modality of ``x``, ``[B]`` bool: True where the record has at least one channel.

        A modality missing from ``x`` is absent for every record and has no entry.
        """
        mask = mask or {}
        return {
            name: mask[name].any(dim=1) if name in mask
            else torch.ones(sig.shape[0], dtype=torch.bool, device=sig.device)
            for name, sig in x.items()
        }

    def _check_inputs(
        self, x: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None
    ) -> dict[str, Tensor]:
        if not x:
            raise ValueError(f"x is empty; pass signals for at least one of {self.modalities}.")
        mask = dict(mask or {})
        for name in (*x, *mask):
            if name not in self.encoders:
                raise ValueError(
                    f"Modality {name!r} has no encoder; this model knows {', '.join(self.modalities)}."
                )
        extra = sorted(set(mask) - set(x))
        if extra:
            raise ValueError(
                f"mask has modalities {extra} that x lacks; drop them from mask or add their signals."
            )
        spt = self.config.samples_per_token
        shapes = {}
        for name, sig in x.items():
            if sig.ndim != 3 or not torch.is_floating_point(sig):
                raise ValueError(
                    f"x[{name!r}] must be a float tensor [batch, channels, samples], "
                    f"got {tuple(sig.shape)} {sig.dtype}."
                )
            b, c, n = sig.shape
            if n == 0 or n % spt:
                raise ValueError(
                    f"x[{name!r}] has {n} samples, not a whole number of {spt}-sample tokens "
                    f"({self.config.token_seconds:g} s at {self.config.sampling_rate:g} Hz); "
                    "trim or pad the window to a multiple."
                )
            shapes[name] = (b, n)
            if name in mask:
                m = mask[name]
                if m.dtype != torch.bool or tuple(m.shape) != (b, c):
                    raise ValueError(
                        f"mask[{name!r}] must be a bool tensor of shape {(b, c)} "
                        f"(True = channel present), got {tuple(m.shape)} {m.dtype}."
                    )
            else:
                mask[name] = torch.ones(b, c, dtype=torch.bool, device=sig.device)
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{k}: batch {b}, {n} samples" for k, (b, n) in shapes.items())
            raise ValueError(f"All modalities must share batch size and length; got {listed}.")
        return mask


# --------------------------------------------------------------------------------------------------
# Pooling helpers
# --------------------------------------------------------------------------------------------------
def _mean_pool(tokens: Tensor, size: int, what: str) -> Tensor:
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [batch, tokens, dim], got shape {tuple(tokens.shape)}.")
    b, t, d = tokens.shape
    if size < 1 or t % size:
        raise ValueError(
            f"{t} tokens do not split into {what} of {size} tokens; "
            f"trim the sequence to a multiple of {size}."
        )
    return tokens.view(b, t // size, size, d).mean(dim=2)


def pool_epochs(tokens: Tensor, tokens_per_epoch: int = 6) -> Tensor:
    """Average 5 s tokens ``[B, T, D]`` into 30 s epochs ``[B, T // tokens_per_epoch, D]``.

    Raises ``ValueError`` when ``T`` is not a multiple of ``tokens_per_epoch``.
    """
    return _mean_pool(tokens, tokens_per_epoch, "epochs")


def pool_windows(tokens: Tensor, tokens_per_window: int = 60) -> Tensor:
    """Average 5 s tokens ``[B, T, D]`` into 5-minute windows ``[B, T // tokens_per_window, D]``.

    Raises ``ValueError`` when ``T`` is not a multiple of ``tokens_per_window``.
    """
    return _mean_pool(tokens, tokens_per_window, "windows")


def fuse_modalities(tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
    """Mean of the present modalities' tokens.

    Parameters
    ----------
    tokens : dict of str to Tensor
        Per modality, ``[B, T, D]`` (or ``[B, D]``).
    present : dict of str to Tensor
        Per modality, ``[B]`` bool.

    Returns
    -------
    Tensor
        Same shape as one entry of ``tokens``; zero for records with no modality present.
    """
    if not tokens:
        raise ValueError("tokens is empty; pass at least one modality.")
    total, count = None, None
    for name, tok in tokens.items():
        p = present[name].reshape(-1, *([1] * (tok.ndim - 1)))
        part = torch.where(p, tok, 0.0)
        total = part if total is None else total + part
        count = p.to(tok.dtype) if count is None else count + p.to(tok.dtype)
    return total / count.clamp_min(1.0)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------------
# Registered constructors
# --------------------------------------------------------------------------------------------------
_TINY: dict[str, Any] = dict(
    embed_dim=32, conv_channels=(8, 8, 16, 16, 32, 32), pool_heads=4, num_heads=4, ffn_dim=64
)


@register_encoder("sleepfm_base")
def sleepfm_base(**overrides: Any) -> SleepFMEncoder:
    """SleepFM encoder, about 4.4 M parameters (4 modalities, 128-D tokens)."""
    return SleepFMEncoder(SleepFMConfig.from_dict(overrides))


@register_encoder("sleepfm_tiny")
def sleepfm_tiny(**overrides: Any) -> SleepFMEncoder:
    """Small SleepFM encoder (32-D tokens, ~0.1 M parameters) for tests and CPU demos."""
    return SleepFMEncoder(SleepFMConfig.from_dict({**_TINY, **overrides}))

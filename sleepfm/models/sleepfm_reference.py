"""SleepFM as released: the architecture of the published checkpoint, and the map of its weights.

The public SleepFM implementation (Thapa et al., zou-group/sleepfm-clinical, class
``SetTransformer``, checkpoint ``model_base``) encodes each modality with one set of weights shared
by all four (BAS, ECG, EMG, RESP):

* tokenizer: every 5 s of one channel (640 samples at 128 Hz) passes six blocks of convolution
  (kernel 5, stride 2, padding 2) → BatchNorm → ELU → LayerNorm over ``[channels, positions]``
  (4 → 128 channels, 640 → 10 positions); the positions are averaged and a linear layer gives the
  token;
* channel pool: one post-norm transformer layer over the channels of each 5 s step (padding
  channels are never attended to), then the mean over the present channels. When the input has a
  single channel slot the layer is skipped and that channel's token is used as it is, as in the
  reference;
* fixed sinusoidal positions, LayerNorm, and a pre-norm transformer (6 layers) over time; its
  outputs are the 5 s tokens;
* window pool: one more post-norm transformer layer over the tokens, averaged over time, gives the
  5-minute embedding (:meth:`SleepFMReference.pool_window`).

Every transformer layer is a :class:`torch.nn.TransformerEncoderLayer` (ReLU, feed-forward 2048,
LayerNorm ε 1e-5), so imported weights reproduce the reference's outputs. The released file is
``{"state_dict": ..., "epoch": ..., ...}``, its keys prefixed ``module.`` by ``DataParallel``;
:func:`checkpoint_filter_fn` maps them onto this module and :func:`config_from_reference` reads the
architecture from the checkpoint's ``config.json``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..channels import MODALITIES
from ..checkpoint import key_mismatch
from ..exceptions import InvalidParameterError, StoreError
from ..settings import Settings, load_config, setting
from .factory import ConfiguredEncoder, register_architecture, register_encoder
from .sleepfm import SleepFMOutput, fuse_modalities

__all__ = [
    "SetPool",
    "SleepFMReference",
    "SleepFMReferenceConfig",
    "checkpoint_filter_fn",
    "config_from_reference",
    "reference_names",
    "sinusoidal_positions",
]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SleepFMReferenceConfig(Settings):
    """Everything needed to rebuild a :class:`SleepFMReference` exactly; the defaults are the
    released ``model_base``.

    Parameters
    ----------
    modalities : tuple of str, default=("BAS", "ECG", "EMG", "RESP")
        Modalities the encoder accepts (all share the weights).
    sampling_rate : float, default=128.0
        Sampling rate (Hz) the model expects.
    token_seconds : float, default=5.0
        Seconds per token (the reference's ``patch_size`` 640 at 128 Hz).
    embed_dim : int, default=128
        Token dimension.
    conv_channels : tuple of int, default=(4, 8, 16, 32, 64, 128)
        Output channels of the tokenizer's blocks; each halves the length, so the samples per
        token must be a multiple of ``2 ** len(conv_channels)``.
    num_heads : int, default=8
        Heads of the temporal transformer.
    num_layers : int, default=6
        Layers of the temporal transformer.
    pooling_heads : int, default=8
        Heads of the channel and window pools (the reference's ``pooling_head``).
    ffn_dim : int, default=2048
        Feed-forward width of every transformer layer.
    dropout : float, default=0.3
        Dropout of every transformer layer (training only).
    context_tokens : int, default=60
        Tokens per window (5 minutes): the length the model was trained on and the embed stage
        feeds it.
    tokens_per_epoch : int, default=6
        Tokens per 30 s scoring epoch.
    """

    modalities: tuple[str, ...] = setting(MODALITIES, "modalities the encoder accepts")
    sampling_rate: float = setting(128.0, "sampling rate (Hz)")
    token_seconds: float = setting(5.0, "seconds per token")
    embed_dim: int = setting(128, "token dimension", minimum=1)
    conv_channels: tuple[int, ...] = setting((4, 8, 16, 32, 64, 128), "tokenizer channels")
    num_heads: int = setting(8, "temporal transformer heads", minimum=1)
    num_layers: int = setting(6, "temporal transformer layers", minimum=1)
    pooling_heads: int = setting(8, "channel and window pool heads", minimum=1)
    ffn_dim: int = setting(2048, "feed-forward width", minimum=1)
    dropout: float = setting(0.3, "dropout", minimum=0.0)
    context_tokens: int = setting(60, "tokens per window", minimum=1)
    tokens_per_epoch: int = setting(6, "tokens per 30 s epoch", minimum=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise InvalidParameterError(
                f"modalities must be distinct names from {MODALITIES}, got {self.modalities}.")
        if not self.conv_channels or min(self.conv_channels) < 1:
            raise InvalidParameterError(
                f"conv_channels must be positive integers, got {self.conv_channels}.")
        scale = 2 ** len(self.conv_channels)
        if self.samples_per_token % scale or self.samples_per_token < 1:
            raise InvalidParameterError(
                f"{self.samples_per_token} samples per token ({self.token_seconds:g} s at "
                f"{self.sampling_rate:g} Hz) is not a multiple of {scale}, as "
                f"{len(self.conv_channels)} halving tokenizer blocks need.")
        for name in ("num_heads", "pooling_heads"):
            if self.embed_dim % getattr(self, name):
                raise InvalidParameterError(f"embed_dim={self.embed_dim} must be divisible by "
                                            f"{name}={getattr(self, name)}.")
        if self.dropout >= 1.0:
            raise InvalidParameterError(f"dropout must be in [0, 1), got {self.dropout}.")

    @property
    def samples_per_token(self) -> int:
        """Samples in one token (``sampling_rate * token_seconds``; 640)."""
        return round(self.sampling_rate * self.token_seconds)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SleepFMReferenceConfig:
        """Rebuild a config from :meth:`to_dict` output (unknown keys raise
        :class:`~sleepfm.exceptions.InvalidParameterError`)."""
        return load_config(cls, dict(data))


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
class _ConvBlock(nn.Module):
    """Conv1d (kernel 5, stride 2, padding 2) → BatchNorm → ELU → LayerNorm over [channels, length].
    """

    def __init__(self, in_ch: int, out_ch: int, out_length: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size=5, stride=2, padding=2)
        self.bn = nn.BatchNorm1d(out_ch)
        self.norm = nn.LayerNorm([out_ch, out_length])

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.elu(self.bn(self.conv(x))))


class _Tokenizer(nn.Module):
    """``[N, samples_per_token]`` single-channel segments → ``[N, embed_dim]`` tokens.

    In eval mode the segments go through in chunks of ``chunk`` (default 4096) so that the
    activations of a long or wide input are never all held at once; BatchNorm then uses its
    running statistics, so segments are independent and chunking changes the result only by
    float rounding (kernels sum in another order for another batch size).
    """

    def __init__(self, config: SleepFMReferenceConfig) -> None:
        super().__init__()
        chans = (1, *config.conv_channels)
        lengths = [config.samples_per_token // 2 ** (i + 1) for i in range(len(chans) - 1)]
        self.blocks = nn.ModuleList(
            _ConvBlock(ci, co, n) for ci, co, n in zip(chans[:-1], chans[1:], lengths))
        self.proj = nn.Linear(chans[-1], config.embed_dim)
        self.chunk = 4096

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self._tokenize(x)
        return torch.cat([self._tokenize(part) for part in x.split(self.chunk)])

    def _tokenize(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(1)
        for block in self.blocks:
            h = block(h)
        return self.proj(h.mean(dim=-1))


class SetPool(nn.Module):
    """A post-norm transformer layer over a set, then the mean of its present elements (the
    reference's attention pooling, over channels, modalities or tokens).

    Parameters
    ----------
    dim, heads : int
        Element size and attention heads.
    ffn_dim : int
        Feed-forward width of the layer.
    dropout : float
        Dropout of the layer while training.
    chunk : int, default=4096
        Sets pooled at once (bounds memory on long nights; outputs do not depend on it).
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, *,
                 chunk: int = 4096) -> None:
        super().__init__()
        self.chunk = chunk
        self.transformer_layer = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout,
                                                            batch_first=True)

    def forward(self, x: Tensor, present: Tensor | None = None) -> Tensor:
        """Pool ``x`` ``[N, L, D]`` to ``[N, D]``; ``present`` ``[N, L]`` bool masks elements.

        With a mask and a single element (``L == 1``) the layer is skipped, as in the reference.
        Rows without a present element return zero (the layer runs on them unmasked, so nothing
        becomes NaN, and the result is discarded).
        """
        if present is None:
            return torch.cat([self.transformer_layer(part).mean(dim=1)
                              for part in x.split(self.chunk)])
        if x.shape[1] == 1:
            return x[:, 0]
        padding = ~(present | ~present.any(dim=1, keepdim=True))
        out = torch.cat([self.transformer_layer(part, src_key_padding_mask=mask)
                         for part, mask in zip(x.split(self.chunk), padding.split(self.chunk))])
        weight = present.to(out.dtype).unsqueeze(-1)
        return (out * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """``[length, dim]`` fixed positions: sine on even, cosine on odd features (Vaswani et al.),
    computed in float32 on the CPU whatever the model's device, so they match the table the
    reference stores bit for bit."""
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freq
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------
@register_architecture("SleepFMReference")
class SleepFMReference(ConfiguredEncoder):
    """The released SleepFM encoder: one tokenizer, channel pool and transformer for every modality.

    Parameters
    ----------
    config : SleepFMReferenceConfig, optional
        Architecture; the default is the released ``model_base``.

    Attributes
    ----------
    config : SleepFMReferenceConfig
    tokenizer, channel_pool, norm, transformer, window_pool : nn.Module
        The parts, in the order they run (see the module docstring).

    Notes
    -----
    Input: z-scored signals at 128 Hz, as ``sleepfm preprocess`` writes them, cut into windows of
    ``config.context_tokens`` tokens (5 minutes): the released model was trained on such windows,
    and ``sleepfm embed`` feeds it those. Longer inputs run (positions are computed for any
    length), but attention then spans the whole input.

    The channel pool skips its transformer layer when the input has one channel slot (as the
    reference does), so a record with one channel of a modality is embedded differently when it is
    padded to more channel slots; ``sleepfm embed`` batches the windows of one record only, so a
    record's embedding does not depend on its batch partners.

    Examples
    --------
    >>> enc = create_encoder("sleepfm_reference").eval()
    >>> x = {"BAS": torch.randn(2, 3, 60 * 640), "ECG": torch.randn(2, 1, 60 * 640)}
    >>> out = enc(x)
    >>> out.fused.shape, enc.forward_windows(x)["BAS"].shape
    (torch.Size([2, 60, 128]), torch.Size([2, 128]))
    """

    config_class = SleepFMReferenceConfig

    def __init__(self, config: SleepFMReferenceConfig | None = None) -> None:
        super().__init__()
        if config is not None and not isinstance(config, SleepFMReferenceConfig):
            raise TypeError("config must be a SleepFMReferenceConfig, got "
                            f"{type(config).__name__}.")
        self.config = c = config if config is not None else SleepFMReferenceConfig()
        self.tokenizer = _Tokenizer(c)
        self.channel_pool = SetPool(c.embed_dim, c.pooling_heads, c.ffn_dim, c.dropout)
        self.norm = nn.LayerNorm(c.embed_dim)
        self.transformer = nn.ModuleList(
            nn.TransformerEncoderLayer(c.embed_dim, c.num_heads, c.ffn_dim, c.dropout,
                                       batch_first=True, norm_first=True)
            for _ in range(c.num_layers))
        self.window_pool = SetPool(c.embed_dim, c.pooling_heads, c.ffn_dim, c.dropout)

    def encode(self, signal: Tensor, present: Tensor) -> Tensor:
        """5 s tokens ``[B, T, D]`` of one modality's ``signal`` ``[B, C, T * samples_per_token]``;
        ``present`` ``[B, C]`` (bool) marks real channels. Masked channels are zeroed first, so
        their content never reaches the output. No input checks: use :meth:`forward_features`."""
        b, c, n = signal.shape
        spt = self.config.samples_per_token
        t = n // spt
        signal = torch.where(present[:, :, None], signal, 0.0)
        tokens = self.tokenizer(signal.reshape(b * c * t, spt)).view(b, c, t, -1)
        tokens = tokens.transpose(1, 2).reshape(b * t, c, -1)
        keep = present[:, None, :].expand(b, t, c).reshape(b * t, c)
        h = self.channel_pool(tokens, keep).view(b, t, -1)
        h = self.norm(h + sinusoidal_positions(t, h.shape[-1]).to(h))
        for layer in self.transformer:
            h = layer(h)
        return h

    def forward_features(self, x: Mapping[str, Tensor],
                         mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode each modality into 5 s tokens.

        Parameters
        ----------
        x : dict of str to Tensor
            Per modality, signals ``[B, C, T * samples_per_token]``. Modalities may be left out;
            channel counts may differ between modalities; all share ``B`` and ``T``.
        mask : dict of str to Tensor, optional
            Per modality, ``[B, C]`` bool, True where a channel is real (the reference's mask is
            the opposite: True for padding). A modality left out of ``mask`` has all channels.

        Returns
        -------
        dict of str to Tensor
            Per modality of ``x``, tokens ``[B, T, D]``; zero for records without a channel of it.

        Raises
        ------
        ValueError
            Unknown modality, wrong shapes or types, or a length that is not whole tokens.
        """
        mask = self._check_inputs(x, mask)
        dtype = self.norm.weight.dtype
        return {name: torch.where(mask[name].any(dim=1)[:, None, None],
                                  self.encode(signal.to(dtype), mask[name]), 0.0)
                for name, signal in x.items()}

    def forward(self, x: Mapping[str, Tensor],
                mask: Mapping[str, Tensor] | None = None) -> SleepFMOutput:
        """Encode and fuse (arguments as :meth:`forward_features`).

        Returns
        -------
        SleepFMOutput
            ``tokens`` ``{modality: [B, T, D]}``, ``present`` ``{modality: [B]}`` and ``fused``
            ``[B, T, D]``, the mean of the present modalities' tokens.
        """
        mask = self._check_inputs(x, mask)
        tokens = self.forward_features(x, mask)
        present = {name: mask[name].any(dim=1) for name in tokens}
        return SleepFMOutput(tokens, present, fuse_modalities(tokens, present))

    def pool_window(self, tokens: Tensor) -> Tensor:
        """The reference's window embedding of tokens ``[B, T, D]`` (from :meth:`forward`):
        ``[B, D]``, its attention pool over all ``T`` tokens (trained with ``T`` = 60, 5 min)."""
        return self.window_pool(tokens)

    @torch.inference_mode()
    def night_windows(self, tokens: np.ndarray) -> np.ndarray:
        """The 5-minute embeddings ``[n_windows, D]`` of one modality's tokens ``[n_tokens, D]``
        over a night: :meth:`pool_window` over each run of ``context_tokens`` tokens from the
        start (the windows the night is encoded in), the last run possibly shorter."""
        n = self.config.context_tokens
        t = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.norm.weight)
        full = len(t) // n
        parts = [self.pool_window(t[:full * n].view(full, n, -1))] if full else []
        if len(t) > full * n:
            parts.append(self.pool_window(t[full * n:][None]))
        return torch.cat(parts).float().cpu().numpy()

    def forward_windows(self, x: Mapping[str, Tensor],
                        mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Per modality of ``x``, the 5-minute embedding ``[B, D]`` of each input window (zero for
        records without a channel of it); arguments as :meth:`forward_features`."""
        out = self.forward(x, mask)
        return {name: torch.where(out.present[name][:, None], self.pool_window(tok), 0.0)
                for name, tok in out.tokens.items()}

    def _check_inputs(self, x: Mapping[str, Tensor],
                      mask: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        if not x:
            raise ValueError(f"x is empty; pass signals for at least one of {self.modalities}.")
        mask = dict(mask or {})
        for name in (*x, *mask):
            if name not in self.modalities:
                raise ValueError(f"Modality {name!r} is not one this encoder accepts "
                                 f"({', '.join(self.modalities)}).")
        if set(mask) - set(x):
            raise ValueError(f"mask has modalities {sorted(set(mask) - set(x))} that x lacks; "
                             "drop them from mask or add their signals.")
        spt = self.config.samples_per_token
        shapes = set()
        for name, sig in x.items():
            if sig.ndim != 3 or not torch.is_floating_point(sig) or 0 in sig.shape[:2] \
                    or sig.shape[2] == 0 or sig.shape[2] % spt:
                raise ValueError(
                    f"x[{name!r}] must be a float tensor [batch, channels >= 1, samples] with a "
                    f"whole number of {spt}-sample tokens ({self.config.token_seconds:g} s at "
                    f"{self.config.sampling_rate:g} Hz), got {tuple(sig.shape)} {sig.dtype}.")
            b, c, n = sig.shape
            shapes.add((b, n))
            m = mask.setdefault(name, torch.ones(b, c, dtype=torch.bool, device=sig.device))
            if m.dtype != torch.bool or tuple(m.shape) != (b, c):
                raise ValueError(f"mask[{name!r}] must be a bool tensor of shape {(b, c)} (True = "
                                 f"channel present), got {tuple(m.shape)} {m.dtype}.")
        if len(shapes) > 1:
            raise ValueError("All modalities must share batch size and length; got "
                             f"{', '.join(f'{k}: {tuple(v.shape)}' for k, v in x.items())}.")
        return mask


# --------------------------------------------------------------------------------------------------
# The released checkpoint
# --------------------------------------------------------------------------------------------------
#: Prefixes of this module's tensor names → the reference's. The tokenizer's names are computed
#: in ``_reference_name``: its blocks are positions of one ``nn.Sequential`` there.
_PREFIXES: dict[str, str] = {
    "channel_pool.transformer_layer.": "spatial_pooling.transformer_layer.",
    "norm.": "layer_norm.",
    "transformer.": "transformer_encoder.layers.",
    "window_pool.transformer_layer.": "temporal_pooling.transformer_layer.",
}
#: Offset of each part of a tokenizer block within the reference's Sequential (ELU is 2).
_BLOCK_PARTS: dict[str, int] = {"conv": 0, "bn": 1, "norm": 3}
#: The reference's table of positions: a buffer of its state dict, checked and dropped.
_POSITIONS = "positional_encoding.pe"


def _reference_name(name: str, n_blocks: int) -> str:
    found = re.match(r"tokenizer\.blocks\.(\d+)\.(\w+)\.(.*)$", name)
    if found:
        index, part, rest = found.groups()
        return f"patch_embedding.tokenizer.{4 * int(index) + _BLOCK_PARTS[part]}.{rest}"
    if name.startswith("tokenizer.proj."):  # after the blocks: average pool, flatten, linear
        return f"patch_embedding.tokenizer.{4 * n_blocks + 2}.{name[len('tokenizer.proj.'):]}"
    for ours, theirs in _PREFIXES.items():
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise RuntimeError(f"No reference name for SleepFMReference tensor {name!r}.")


def reference_names(model: SleepFMReference) -> dict[str, str]:
    """``{reference name: this module's name}`` for every tensor of ``model.state_dict()``.

    The reference's state dict also holds ``positional_encoding.pe`` (a fixed table that this
    module computes), which :func:`checkpoint_filter_fn` checks and drops.
    """
    n_blocks = len(model.config.conv_channels)
    return {_reference_name(name, n_blocks): name for name in model.state_dict()}


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: SleepFMReference, *,
                         source: str = "SleepFM checkpoint") -> dict[str, Tensor]:
    """Map a reference ``SetTransformer`` state dict onto ``model``'s names, failing loudly.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        The checkpoint's ``"state_dict"`` (``torch.load(path, weights_only=True)["state_dict"]``),
        in the reference's names; a ``module.`` prefix (``DataParallel``) is stripped.
    model : SleepFMReference
        The model it is for (its config decides the names and shapes expected).
    source : str, default="SleepFM checkpoint"
        What to call the checkpoint in messages (its file name).

    Returns
    -------
    dict of str to Tensor
        A state dict ``model.load_state_dict`` takes with ``strict=True``.

    Raises
    ------
    StoreError
        Keys missing, unknown or of another shape (the message lists some of each, in the
        checkpoint's names), or a table of positions other than the sinusoids this module adds.
    """
    state = {key.removeprefix("module."): value for key, value in state_dict.items()}
    expected = model.state_dict()
    wanted = reference_names(model)
    mapped, unexpected, shapes = {}, [], []
    for ref, tensor in state.items():
        if ref == _POSITIONS:
            continue
        if ref not in wanted:
            unexpected.append(ref)
        elif tuple(tensor.shape) != tuple(expected[wanted[ref]].shape):
            shapes.append(f"{ref}: file {tuple(tensor.shape)}, model "
                          f"{tuple(expected[wanted[ref]].shape)}")
        else:
            mapped[wanted[ref]] = tensor
    missing = sorted(set(wanted) - set(state))
    if missing or unexpected or shapes:
        raise StoreError(f"{source}: the state_dict does not fit the SleepFM reference encoder "
                         f"its config describes: keys {key_mismatch(missing, unexpected, shapes)}. "
                         "Pass the 'state_dict' of the released best.pt with its config.json.")
    positions = state.get(_POSITIONS)
    if positions is not None:
        table = positions.reshape(-1, positions.shape[-1]).float()
        if positions.shape[-1] != model.embed_dim or not torch.allclose(
                table, sinusoidal_positions(len(table), model.embed_dim), atol=1e-5):
            raise StoreError(f"{source}: {_POSITIONS} {tuple(positions.shape)} is not the "
                             f"sinusoidal table of width {model.embed_dim} this encoder adds; the "
                             "checkpoint comes from another architecture.")
    return mapped


def config_from_reference(config: Mapping[str, Any], *,
                          source: str = "config.json") -> SleepFMReferenceConfig:
    """The :class:`SleepFMReferenceConfig` of a reference checkpoint's ``config.json``.

    Parameters
    ----------
    config : dict
        The parsed ``config.json`` beside ``best.pt``: ``model`` ("SetTransformer"),
        ``in_channels`` (1), ``patch_size``, ``sampling_freq``, ``embed_dim``, ``num_heads``,
        ``num_layers``, ``pooling_head``, ``dropout``.
    source : str, default="config.json"
        What to call it in messages.

    Returns
    -------
    SleepFMReferenceConfig
        All four modalities (the weights are shared); the other fields from ``config``.

    Raises
    ------
    StoreError
        Another model, missing fields, or values that describe no valid encoder.
    """
    needed = ("patch_size", "sampling_freq", "embed_dim", "num_heads", "num_layers",
              "pooling_head", "dropout")
    missing = [name for name in needed if name not in config]
    if missing:
        raise StoreError(f"{source} lacks {missing}; pass the config.json saved beside the "
                         "SleepFM checkpoint.")
    kind = config.get("model", "SetTransformer"), config.get("in_channels", 1)
    if kind != ("SetTransformer", 1):
        raise StoreError(f"{source} describes model {kind[0]!r} with in_channels={kind[1]!r}; "
                         "only SetTransformer with in_channels=1 (the released encoder) is "
                         "supported.")
    try:
        rate = float(config["sampling_freq"])
        return SleepFMReferenceConfig(
            sampling_rate=rate, token_seconds=config["patch_size"] / rate,
            embed_dim=config["embed_dim"], num_heads=config["num_heads"],
            num_layers=config["num_layers"], pooling_heads=config["pooling_head"],
            dropout=config["dropout"])
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise StoreError(f"{source} describes no valid SleepFM encoder ({err}).") from None


# --------------------------------------------------------------------------------------------------
# Registered constructor
# --------------------------------------------------------------------------------------------------
@register_encoder("sleepfm_reference")
def sleepfm_reference(**overrides: Any) -> SleepFMReference:
    """The released SleepFM encoder (``model_base``): 128-D tokens, 6 layers, weights shared by the
    four modalities (about 4.8 M parameters)."""
    return SleepFMReference(SleepFMReferenceConfig.from_dict(overrides))

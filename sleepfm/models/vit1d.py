"""OSF ViT-1D: the backbone of the OSF sleep foundation models, and the map of OSF's weights on it.

OSF (Shuai et al., 2026, "OSF: On Pre-training and Scaling of Sleep Foundation Models") encodes one
30 s epoch of 12 PSG leads at 64 Hz (``[B, 12, 1920]``, leads in the order of
:data:`sleepfm.channels.OSF_LEADS`) with a plain vision transformer over patches:

* with ``lead_wise=1`` (the released checkpoint) a bias-free 2-D convolution cuts the input into
  groups of ``patch_size_ch`` leads × ``patch_size_time`` samples: 3 lead groups × 30 time patches =
  90 tokens, ordered lead group first; with ``lead_wise=0`` a 1-D convolution covers all leads at
  once: 30 tokens;
* a learned CLS token is put in front, learned positional embeddings are added;
* pre-norm transformer blocks (LayerNorm → multi-head attention with ``dim_head`` 64 per head,
  whatever the width; LayerNorm → MLP with exact GELU), then a final LayerNorm.

Everything is computed in the reference implementation's order (attention as
``softmax(q kᵀ · dim_head^-½) v``, LayerNorm ε 1e-5), so imported weights reproduce its outputs.
A lead that a recording lacks is masked: it is zeroed before the patch embedding, as OSF's own
preprocessing zero-fills absent channels, so the output never depends on what a masked lead holds.

The released payload is ``{"metadata": {...}, "state_dict": {...}}`` in the reference's module
names; :func:`checkpoint_filter_fn` maps those names onto this module's (see :data:`OSF_KEY_MAP`)
and fails on any key that does not fit. Reading the file is
:func:`sleepfm.io.weights.read_osf_payload`; :func:`sleepfm.artifacts.read_osf_checkpoint` joins
the two.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..channels import KIND_TO_MODALITY, MODALITIES, OSF_LEAD_KINDS, OSF_LEADS
from ..checkpoint import key_mismatch
from ..exceptions import InvalidParameterError, StoreError
from ..utils import check_option
from .factory import register_architecture, register_encoder

__all__ = [
    "OSF_KEY_MAP",
    "ViT1D",
    "ViT1DConfig",
    "checkpoint_filter_fn",
    "osf_config",
    "vit1d_from_osf",
]


#: Epoch embeddings a ViT-1D can return (:attr:`ViT1DConfig.pool`).
POOLS: tuple[str, ...] = ("cls", "mean")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViT1DConfig:
    """Everything needed to rebuild a :class:`ViT1D` exactly.

    Parameters
    ----------
    num_leads : int, default=12
        Input leads (the 12 of :data:`sleepfm.channels.OSF_LEADS`, in that order).
    seq_len : int, default=1920
        Samples per input (30 s at 64 Hz).
    sampling_rate : float, default=64.0
        Sampling rate (Hz) the model expects; signals must be resampled to it.
    patch_size_time : int, default=64
        Samples per patch (1 s at 64 Hz).
    patch_size_ch : int, default=4
        Leads per patch with ``lead_wise=1`` (ignored with ``lead_wise=0``).
    lead_wise : int, default=1
        1: patches over groups of ``patch_size_ch`` leads × time (2-D patch convolution);
        0: patches over time with all leads at once.
    width : int, default=768
        Token dimension ``D``.
    depth : int, default=12
        Transformer blocks.
    heads : int, default=12
        Attention heads.
    dim_head : int, default=64
        Dimension of each head; the attention's inner width is ``heads * dim_head``.
    mlp_dim : int, default=3072
        Hidden width of each block's MLP.
    qkv_bias : bool, default=True
        Bias in the query/key/value projection.
    dropout, attn_dropout, drop_path_rate : float, default=0.0
        Dropout on the embeddings and residual branches, on the attention weights, and the
        stochastic-depth rate of the last block (linear from 0 over the blocks); training only.
    pool : {"cls", "mean"}, default="cls"
        The epoch embedding :meth:`ViT1D.forward` returns: the CLS token (OSF) or the mean of the
        patch tokens (objectives that never train the CLS token: MAE, AR).
    causal : bool, default=False
        Causal attention over time (autoregressive pre-training): a patch token attends to the
        tokens of its own and earlier time patches, never to later ones nor to the CLS token;
        the CLS token attends to every token.

    Notes
    -----
    The defaults are ``osf_base`` as released: ``lead_wise=1``. The reference implementation's
    ``ViT`` class and its pre-training script default to ``lead_wise=0``, but the released
    checkpoint's metadata says 1; :func:`osf_config` reads it from the payload.
    """

    num_leads: int = 12
    seq_len: int = 1920
    sampling_rate: float = 64.0
    patch_size_time: int = 64
    patch_size_ch: int = 4
    lead_wise: int = 1
    width: int = 768
    depth: int = 12
    heads: int = 12
    dim_head: int = 64
    mlp_dim: int = 3072
    qkv_bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path_rate: float = 0.0
    pool: str = "cls"
    causal: bool = False

    def __post_init__(self) -> None:
        self._validate()

    @property
    def num_patches_time(self) -> int:
        """Time patches per input (30)."""
        return self.seq_len // self.patch_size_time

    @property
    def num_patches(self) -> int:
        """Patch tokens per input, CLS excluded (90 with ``lead_wise=1``, 30 with 0)."""
        groups = self.num_leads // self.patch_size_ch if self.lead_wise else 1
        return groups * self.num_patches_time

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities covered by the OSF leads (empty for a custom number of leads)."""
        if self.num_leads != len(OSF_LEADS):
            return ()
        covered = {KIND_TO_MODALITY[kind] for kind in OSF_LEAD_KINDS.values()}
        return tuple(m for m in MODALITIES if m in covered)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViT1DConfig:
        """Rebuild a config from :meth:`to_dict` output (unknown keys raise
        :class:`~sleepfm.exceptions.InvalidParameterError`)."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidParameterError(
                f"Unknown ViT1DConfig field(s) {unknown}. Valid fields are: {', '.join(known)}."
            )
        return cls(**dict(data))

    def _validate(self) -> None:
        for name in ("num_leads", "seq_len", "patch_size_time", "patch_size_ch", "width", "depth",
                     "heads", "dim_head", "mlp_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.lead_wise not in (0, 1) or isinstance(self.lead_wise, bool):
            raise InvalidParameterError(f"lead_wise must be 0 or 1, got {self.lead_wise!r}.")
        if self.seq_len % self.patch_size_time:
            raise InvalidParameterError(
                f"seq_len={self.seq_len} is not a multiple of patch_size_time="
                f"{self.patch_size_time}.")
        if self.lead_wise and self.num_leads % self.patch_size_ch:
            raise InvalidParameterError(
                f"With lead_wise=1, num_leads={self.num_leads} must be a multiple of "
                f"patch_size_ch={self.patch_size_ch}.")
        if not self.sampling_rate > 0:
            raise InvalidParameterError(f"sampling_rate must be > 0, got {self.sampling_rate}.")
        check_option("pool", self.pool, POOLS)
        if not isinstance(self.causal, bool):
            raise InvalidParameterError(f"causal must be true or false, got {self.causal!r}.")
        for name in ("dropout", "attn_dropout", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InvalidParameterError(f"{name} must be in [0, 1), got {getattr(self, name)}.")


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
class _DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample in training (rescaled)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class _Attention(nn.Module):
    """Multi-head self-attention with a fixed head dimension (inner width ``heads * dim_head``)."""

    def __init__(self, config: ViT1DConfig) -> None:
        super().__init__()
        inner = config.heads * config.dim_head
        self.heads = config.heads
        self.scale = config.dim_head ** -0.5
        self.qkv = nn.Linear(config.width, 3 * inner, bias=config.qkv_bias)
        self.attn_drop = nn.Dropout(config.attn_dropout)
        # One head as wide as the tokens needs no output projection (as in the reference).
        identity = config.heads == 1 and config.dim_head == config.width
        self.proj = nn.Identity() if identity else nn.Linear(inner, config.width)
        self.proj_drop = nn.Identity() if identity else nn.Dropout(config.dropout)

    def forward(self, x: Tensor, allowed: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))            # [B, heads, N, dim_head]
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if allowed is not None:                                      # [N, N] bool, True = attend
            scores = scores.masked_fill(~allowed, float("-inf"))
        attn = scores.softmax(dim=-1)
        out = torch.matmul(self.attn_drop(attn), v).transpose(1, 2).reshape(b, n, -1)
        return self.proj_drop(self.proj(out))


class _Mlp(nn.Module):
    def __init__(self, config: ViT1DConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.width, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.width)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class _Block(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: ViT1DConfig, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width)
        self.attn = _Attention(config)
        self.norm2 = nn.LayerNorm(config.width)
        self.mlp = _Mlp(config)
        self.drop_path = _DropPath(drop_path)

    def forward(self, x: Tensor, allowed: Tensor | None = None) -> Tensor:
        x = self.drop_path(self.attn(self.norm1(x), allowed)) + x
        return self.drop_path(self.mlp(self.norm2(x))) + x


# --------------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------------
@register_architecture("ViT1D")
class ViT1D(nn.Module):
    """OSF's ViT-1D backbone over one 30 s epoch of the 12 OSF leads.

    Parameters
    ----------
    config : ViT1DConfig, optional
        Architecture; the default is ``osf_base`` with ``lead_wise=1``, as released.

    Raises
    ------
    TypeError
        ``config`` is not a :class:`ViT1DConfig` (build one with ``ViT1DConfig.from_dict``).

    Attributes
    ----------
    config : ViT1DConfig
    patch_embed : nn.Conv2d or nn.Conv1d
        Bias-free patch convolution (2-D over leads × time with ``lead_wise=1``).
    cls_token : nn.Parameter
        ``[1, 1, D]``.
    pos_embed : nn.Parameter
        ``[1, 1 + num_patches, D]`` (CLS first).
    blocks : nn.ModuleList
        The transformer blocks.
    norm : nn.LayerNorm
        Final norm, applied to every token.

    Notes
    -----
    Input: z-scored signals ``[B, num_leads, seq_len]`` at ``config.sampling_rate`` (64 Hz), leads
    in the order of :data:`sleepfm.channels.OSF_LEADS` (see
    :func:`sleepfm.channels.osf_lead_slots`).
    Fresh weights: CLS token and positional embeddings truncated normal (σ 0.02), other layers
    PyTorch's defaults, as in the reference.

    Examples
    --------
    >>> vit = create_encoder("osf_nano").eval()
    >>> cls, patches = vit.forward_encoding(torch.randn(2, 12, 1920))
    >>> cls.shape, patches.shape
    (torch.Size([2, 128]), torch.Size([2, 90, 128]))
    """

    config_class = ViT1DConfig

    def __init__(self, config: ViT1DConfig | None = None) -> None:
        super().__init__()
        if config is not None and not isinstance(config, ViT1DConfig):
            raise TypeError(f"config must be a ViT1DConfig, got {type(config).__name__}; build "
                            "one with ViT1DConfig.from_dict or create_encoder('osf_base', ...).")
        self.config = c = config if config is not None else ViT1DConfig()
        if c.lead_wise:
            self.patch_embed: nn.Module = nn.Conv2d(
                1, c.width, kernel_size=(c.patch_size_ch, c.patch_size_time),
                stride=(c.patch_size_ch, c.patch_size_time), bias=False)
        else:
            self.patch_embed = nn.Conv1d(c.num_leads, c.width, kernel_size=c.patch_size_time,
                                         stride=c.patch_size_time, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.num_patches, c.width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.embed_drop = nn.Dropout(c.dropout)
        rates = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList(_Block(c, rate) for rate in rates)
        self.norm = nn.LayerNorm(c.width)

    @property
    def embed_dim(self) -> int:
        """Token dimension ``D``."""
        return self.config.width

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities the input leads cover."""
        return self.config.modalities

    def patchify(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Patch tokens ``[B, num_patches, D]`` of ``x`` (masked leads zeroed), before the CLS
        token and the positional embeddings; see :meth:`forward_encoding` for the arguments."""
        x = self._check_inputs(x, mask)
        if mask is not None:
            x = torch.where(mask[:, :, None], x, 0.0)
        if self.config.lead_wise:
            x = self.patch_embed(x.unsqueeze(1)).flatten(2)               # [B, D, groups * Nt]
        else:
            x = self.patch_embed(x)                                       # [B, D, Nt]
        return x.transpose(1, 2)

    def forward_features(self, x: Tensor, mask: Tensor | None = None, *,
                         keep: Tensor | None = None) -> Tensor:
        """All normalised tokens ``[B, 1 + num_patches, D]``, CLS first.

        Parameters
        ----------
        x, mask
            As :meth:`forward_encoding`.
        keep : Tensor, optional
            ``[B, K]`` long indices of the patch tokens that enter the transformer (each with
            its own positional embedding); the others are dropped, as masked autoencoders do.
            The output is then ``[B, 1 + K]``, CLS first, in the order of ``keep``. Not with
            ``causal=True``.
        """
        tokens = self.patchify(x, mask)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        if keep is None:
            x = torch.cat([cls, tokens], dim=1)
            x = self.embed_drop(x + self.pos_embed)
        else:
            if self.config.causal:
                raise InvalidParameterError("keep (dropped tokens) cannot be combined with "
                                            "causal attention.")
            tokens = tokens + self.pos_embed[:, 1:]
            index = keep[:, :, None].expand(-1, -1, tokens.shape[-1])
            x = torch.cat([cls + self.pos_embed[:, :1], tokens.gather(1, index)], dim=1)
            x = self.embed_drop(x)
        allowed = self.causal_mask(x.device) if self.config.causal else None
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    @property
    def token_times(self) -> Tensor:
        """``[num_patches]`` time-patch index of each patch token (lead group major order)."""
        return torch.arange(self.config.num_patches) % self.config.num_patches_time

    def causal_mask(self, device=None) -> Tensor:
        """``[1 + N, 1 + N]`` bool, True where attention is allowed with ``causal=True``: a patch
        token sees the tokens of its own and earlier time patches; CLS sees every token."""
        t = self.token_times.to(device)
        allowed = torch.ones(1 + len(t), 1 + len(t), dtype=torch.bool, device=device)
        allowed[1:, 1:] = t[None, :] <= t[:, None]
        allowed[1:, 0] = False
        return allowed

    def patch_values(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The raw samples under each patch token, the targets of reconstruction objectives.

        Returns
        -------
        values : Tensor
            ``[B, num_patches, P]`` with ``P = leads per patch × patch_size_time``, in token order.
        present : Tensor
            ``[B, num_patches, P]`` bool: the sample belongs to a present lead.
        """
        c = self.config
        x = self._check_inputs(x, mask)
        present = (mask if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool,
                                                               device=x.device))
        present = present[:, :, None].expand_as(x)
        groups = c.num_leads // c.patch_size_ch if c.lead_wise else 1
        per = c.num_leads // groups

        def split(t: Tensor) -> Tensor:
            t = t.reshape(t.shape[0], groups, per, c.num_patches_time, c.patch_size_time)
            return t.permute(0, 1, 3, 2, 4).reshape(t.shape[0], c.num_patches, -1)

        return split(torch.where(present, x, 0.0)), split(present)

    def forward_encoding(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode epochs into the CLS embedding and the patch embeddings.

        Parameters
        ----------
        x : Tensor
            ``[B, num_leads, seq_len]`` float signals (``[B, 12, 1920]``: 30 s at 64 Hz).
        mask : Tensor, optional
            ``[B, num_leads]`` bool, True where the recording has the lead. Masked leads are
            zeroed before the patch embedding, so their content never reaches the output.

        Returns
        -------
        cls : Tensor
            ``[B, D]`` epoch embedding.
        patches : Tensor
            ``[B, num_patches, D]`` patch embeddings (lead group major with ``lead_wise=1``).

        Raises
        ------
        ValueError
            ``x`` or ``mask`` of the wrong shape or type.
        """
        x = self.forward_features(x, mask)
        return x[:, 0], x[:, 1:]

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The epoch embedding ``[B, D]``: the CLS token, or the mean of the patch tokens with
        ``pool="mean"`` (arguments as :meth:`forward_encoding`)."""
        x = self.forward_features(x, mask)
        return x[:, 0] if self.config.pool == "cls" else x[:, 1:].mean(dim=1)

    def _check_inputs(self, x: Tensor, mask: Tensor | None) -> Tensor:
        c = self.config
        if x.ndim != 3 or not torch.is_floating_point(x) or tuple(x.shape[1:]) != (
                c.num_leads, c.seq_len):
            raise ValueError(
                f"x must be a float tensor [batch, {c.num_leads} leads, {c.seq_len} samples] "
                f"({c.seq_len / c.sampling_rate:g} s at {c.sampling_rate:g} Hz), got "
                f"{tuple(x.shape)} {x.dtype}.")
        if mask is not None and (mask.dtype != torch.bool
                                 or tuple(mask.shape) != (x.shape[0], c.num_leads)):
            raise ValueError(
                f"mask must be a bool tensor of shape {(x.shape[0], c.num_leads)} (True = lead "
                f"present), got {tuple(mask.shape)} {mask.dtype}.")
        return x.to(self.pos_embed.dtype)


# --------------------------------------------------------------------------------------------------
# OSF's published weights
# --------------------------------------------------------------------------------------------------
#: Reference (OSF) state-dict names → this module's; ``{i}`` is a block index. A reference name
#: mapped to ``None`` is known and dropped: ``lead_emb`` exists in the released ``lead_wise=1``
#: checkpoint but is unused by the reference's ``forward_encoding``.
OSF_KEY_MAP: dict[str, str | None] = {
    "to_patch_embedding.weight": "patch_embed.weight",
    "cls_token": "cls_token",
    "pos_embedding": "pos_embed",
    "lead_emb.weight": None,
    "block{i}.attn.norm.weight": "blocks.{i}.norm1.weight",
    "block{i}.attn.norm.bias": "blocks.{i}.norm1.bias",
    "block{i}.attn.fn.to_qkv.weight": "blocks.{i}.attn.qkv.weight",
    "block{i}.attn.fn.to_qkv.bias": "blocks.{i}.attn.qkv.bias",
    "block{i}.attn.fn.to_out.0.weight": "blocks.{i}.attn.proj.weight",
    "block{i}.attn.fn.to_out.0.bias": "blocks.{i}.attn.proj.bias",
    "block{i}.ff.norm.weight": "blocks.{i}.norm2.weight",
    "block{i}.ff.norm.bias": "blocks.{i}.norm2.bias",
    "block{i}.ff.fn.net.0.weight": "blocks.{i}.mlp.fc1.weight",
    "block{i}.ff.fn.net.0.bias": "blocks.{i}.mlp.fc1.bias",
    "block{i}.ff.fn.net.3.weight": "blocks.{i}.mlp.fc2.weight",
    "block{i}.ff.fn.net.3.bias": "blocks.{i}.mlp.fc2.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)") + "$")


_FORWARD = [(_pattern(ref), ours) for ref, ours in OSF_KEY_MAP.items()]
_BACKWARD = [(_pattern(ours), ref) for ref, ours in OSF_KEY_MAP.items() if ours is not None]


def _rename(key: str, table) -> tuple[bool, str | None]:
    """``(known, new name)`` of ``key`` under ``table``; ``(False, None)`` when nothing matches."""
    for pattern, target in table:
        found = pattern.match(key)
        if found:
            index = found.groupdict().get("i")
            return True, None if target is None else target.replace("{i}", index or "")
    return False, None


def _examples(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "")


def _metadata_int(metadata: Mapping[str, Any], name: str, source: str) -> int:
    if name not in metadata:
        raise StoreError(f"{source}: the payload's metadata lacks {name!r} (it has "
                         f"{_examples(map(str, metadata), 8) or 'nothing'}); an OSF backbone "
                         "payload records num_leads, seq_len, patch_size_time, patch_size_ch and "
                         "lead_wise.")
    value = metadata[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"{source}: metadata[{name!r}] must be an integer, got {value!r}.")
    return value


def osf_config(metadata: Mapping[str, Any], state_dict: Mapping[str, Tensor], *,
               source: str = "OSF payload") -> ViT1DConfig:
    """The :class:`ViT1DConfig` of an OSF payload: patching from its metadata, sizes from tensors.

    Parameters
    ----------
    metadata : dict
        The payload's ``"metadata"``: ``num_leads``, ``seq_len``, ``patch_size_time``,
        ``patch_size_ch``, ``lead_wise`` (required); ``sample_rate``, ``width``, ``depth``,
        ``heads``, ``dim_head`` (optional, checked against the tensors).
    state_dict : dict of str to Tensor
        The payload's ``"state_dict"``, in the reference's names.
    source : str, default="OSF payload"
        What to call the payload in messages (its file name).

    Returns
    -------
    ViT1DConfig

    Raises
    ------
    StoreError
        Missing or invalid metadata, tensors the sizes cannot be read from, or sizes that
        contradict the metadata.
    """
    fields = {name: _metadata_int(metadata, name, source)
              for name in ("num_leads", "seq_len", "patch_size_time", "patch_size_ch",
                           "lead_wise")}
    rate = metadata.get("sample_rate", ViT1DConfig.sampling_rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise StoreError(f"{source}: metadata['sample_rate'] must be a number, got {rate!r}.")
    fields["sampling_rate"] = float(rate)
    dim_head = (_metadata_int(metadata, "dim_head", source) if "dim_head" in metadata
                else ViT1DConfig.dim_head)

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise StoreError(f"{source}: the state_dict lacks {key!r}, so the backbone's size "
                             "cannot be read; it is not an OSF ViT backbone payload.")
        return tuple(state_dict[key].shape)

    width = shape("cls_token")[-1]
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"^block(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else 0
    inner = shape("block0.attn.fn.to_qkv.weight")[0] // 3
    mlp_dim = shape("block0.ff.fn.net.0.weight")[0]
    if inner % dim_head:
        raise StoreError(f"{source}: attention width {inner} is not a multiple of dim_head "
                         f"{dim_head}; set metadata['dim_head'] to the one it was trained with.")
    sizes = {"width": width, "depth": depth, "heads": inner // dim_head, "dim_head": dim_head,
             "mlp_dim": mlp_dim, "qkv_bias": "block0.attn.fn.to_qkv.bias" in state_dict}
    for name in ("width", "depth", "heads"):
        if name in metadata and metadata[name] != sizes[name]:
            raise StoreError(f"{source}: metadata says {name}={metadata[name]!r} but the tensors "
                             f"have {name}={sizes[name]}; the payload is inconsistent.")
    try:
        return ViT1DConfig(**fields, **sizes)
    except InvalidParameterError as err:
        raise StoreError(f"{source}: the payload describes no valid ViT-1D ({err}).") from None


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: ViT1D, *,
                         source: str = "OSF payload") -> dict[str, Tensor]:
    """Map an OSF state dict onto ``model``'s names (:data:`OSF_KEY_MAP`), failing loudly.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        Tensors in the reference implementation's names.
    model : ViT1D
        The model they are for (its config decides the keys and shapes expected).
    source : str, default="OSF payload"
        What to call the payload in messages.

    Returns
    -------
    dict of str to Tensor
        A state dict ``model.load_state_dict`` takes with ``strict=True``.

    Raises
    ------
    StoreError
        Keys missing, unknown or of another shape; the message lists some of each, in the
        payload's names.
    """
    expected = model.state_dict()
    wanted = {}
    for ours in expected:
        known, ref = _rename(ours, _BACKWARD)
        if not known:  # a module this map does not cover: a bug here, not in the file
            raise RuntimeError(f"OSF_KEY_MAP does not cover ViT1D parameter {ours!r}.")
        wanted[ref] = ours
    mapped, unexpected, shapes = {}, [], []
    for ref, tensor in state_dict.items():
        known, ours = _rename(ref, _FORWARD)
        if known and ours is None:
            continue  # known and unused (lead_emb)
        if not known or ref not in wanted:
            unexpected.append(ref)
            continue
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            shapes.append(f"{ref}: file {tuple(tensor.shape)}, backbone "
                          f"{tuple(expected[ours].shape)}")
            continue
        mapped[ours] = tensor
    missing = sorted(set(wanted) - set(state_dict))
    if missing or unexpected or shapes:
        raise StoreError(f"{source}: the state_dict does not fit the OSF ViT-1D backbone its "
                         f"metadata describes: keys {key_mismatch(missing, unexpected, shapes)}. "
                         "Pass the backbone payload as released ({'metadata': ..., "
                         "'state_dict': ...}).")
    return mapped


def vit1d_from_osf(metadata: Mapping[str, Any], state_dict: Mapping[str, Tensor], *,
                   source: str = "OSF payload") -> ViT1D:
    """A :class:`ViT1D` holding the weights of an OSF payload, in eval mode.

    Parameters
    ----------
    metadata, state_dict
        The payload's two parts (see :func:`osf_config`).
    source : str, default="OSF payload"
        What to call the payload in messages.

    Returns
    -------
    ViT1D

    Raises
    ------
    StoreError
        See :func:`osf_config` and :func:`checkpoint_filter_fn`.
    """
    model = ViT1D(osf_config(metadata, state_dict, source=source))
    model.load_state_dict(checkpoint_filter_fn(state_dict, model, source=source))
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Registered constructors (the published sizes)
# --------------------------------------------------------------------------------------------------
_SIZES: dict[str, dict[str, int]] = {
    "nano": {"width": 128, "depth": 6, "heads": 4, "mlp_dim": 512},
    "tiny": {"width": 192, "depth": 12, "heads": 3, "mlp_dim": 768},
    "small": {"width": 384, "depth": 12, "heads": 6, "mlp_dim": 1536},
    "base": {"width": 768, "depth": 12, "heads": 12, "mlp_dim": 3072},
}


def _build(size: str, overrides: Mapping[str, Any]) -> ViT1D:
    return ViT1D(ViT1DConfig.from_dict({**_SIZES[size], **overrides}))


@register_encoder("osf_nano")
def osf_nano(**overrides: Any) -> ViT1D:
    """OSF ViT-1D nano: width 128, 6 blocks, 4 heads, MLP 512 (about 1.6 M parameters)."""
    return _build("nano", overrides)


@register_encoder("osf_tiny")
def osf_tiny(**overrides: Any) -> ViT1D:
    """OSF ViT-1D tiny: width 192, 12 blocks, 3 heads, MLP 768 (about 5.4 M parameters)."""
    return _build("tiny", overrides)


@register_encoder("osf_small")
def osf_small(**overrides: Any) -> ViT1D:
    """OSF ViT-1D small: width 384, 12 blocks, 6 heads, MLP 1536 (about 21.4 M parameters)."""
    return _build("small", overrides)


@register_encoder("osf_base")
def osf_base(**overrides: Any) -> ViT1D:
    """OSF ViT-1D base, the released OSF backbone: width 768, 12 blocks, 12 heads, MLP 3072
    (about 85.3 M parameters)."""
    return _build("base", overrides)

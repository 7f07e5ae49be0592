"""SleepFM's released heads on 5 s token embeddings, reproduced output for output.

The public SleepFM implementation (zou-group/sleepfm-clinical) releases two heads that read the
encoder's 128-d embedding of every modality and 5 s token of a night:

- :class:`ReferenceStagingNet` (``SleepEventLSTMClassifier``): modalities pooled per token by one
  attention layer, sinusoidal positions, a pre-norm transformer, a bidirectional LSTM and a
  linear layer: five stage logits per 5 s token.
- :class:`ReferenceDiagnosisNet` (``DiagnosisFinetuneFullLSTMCOXPHWithDemo``): the same pooling, a
  bidirectional LSTM averaged over the night, joined with an embedding of age and sex: one Cox
  log-hazard per phenotype (1,065 released, named in the release's ``label_mapping.csv``).

Parameter names equal the reference's state-dict keys; :func:`checkpoint_filter_fn` maps a
released state dict onto a net and :meth:`ReferenceNet.reference_state_dict` goes back. Nets save
in the head artefact format (``get_state`` / ``from_state``) and run one night at a time through
:func:`stage_probabilities`, :func:`token_stage_probabilities` and :func:`phenotype_risks`.

Conventions kept from the reference
-----------------------------------
- Input ``tokens [B, M, S, D]``; ``present [B, M]`` (True = the modality was recorded) and
  ``lengths [B]`` (valid tokens per night) give the reference's padding mask ``[B, M, S]``
  (1 = padding). Masked values are set to zero, as the reference's batching leaves them.
- Modality slots: :data:`MODALITY_ORDER` (our names of the reference's BAS, EKG, EMG, RESP, the
  order its staging loader stacks them in). The pooling has no slot positions, so any order
  gives the same outputs up to rounding (the reference's disease loader shuffles them).
- Stage classes: the reference's ``StageNumber`` 0..4 (Wake, Stage 1, 2, 3, REM), i.e.
  :data:`sleepfm.vocab.STAGE_NAMES`; it trained with unscored tokens as Wake.
- Nights longer than ``max_seq_length`` tokens (staging 8196 = 11.4 h, disease 6480 = 9 h) are cut
  to their start, as the reference's batching does; the functions warn.
- Staging padding: the reference's LSTM also reads padded tokens, so a night's logits in a padded
  batch depend on the padding's length; the functions run each night alone (the reference at
  batch size 1). Its transformer gets a 0/1 float padding mask, which PyTorch's fused inference
  path treats as boolean (padding excluded, as here) but its training path adds to the attention
  logits.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...channels import MODALITIES
from ...checkpoint import state_mismatch
from ...exceptions import DataWarning, InvalidParameterError, StoreError
from ...vocab import EPOCH_S, STAGE_NAMES
from ..sleepfm_reference import SetPool, sinusoidal_positions

__all__ = [
    "MODALITY_ORDER",
    "REFERENCE_NETS",
    "TOKENS_PER_EPOCH",
    "AGE_SCALE",
    "TOKEN_S",
    "ReferenceDiagnosisConfig",
    "ReferenceDiagnosisNet",
    "ReferenceNet",
    "ReferenceStagingConfig",
    "ReferenceStagingNet",
    "checkpoint_filter_fn",
    "epoch_probabilities",
    "phenotype_risks",
    "stage_probabilities",
    "token_stage_probabilities",
]

#: Length of a token, in seconds (640 samples at 128 Hz).
TOKEN_S = 5.0
#: Tokens per 30 s scoring epoch.
TOKENS_PER_EPOCH = int(EPOCH_S // TOKEN_S)
#: Modality slots of the stacked input ``[B, M, S, D]``: sleepfm's modality order, which is the
#: reference staging loader's (BAS, EKG = our ECG, EMG, RESP).
MODALITY_ORDER: tuple[str, ...] = MODALITIES

#: Age enters the published disease head as years times this. The reference does not publish
#: how it scaled age; this is sleepfm's assumption, so treat its risks as a ranking.
AGE_SCALE = 0.01

_STATE_VERSION = 1
#: Feed-forward width of the reference heads' pooling layer (PyTorch's default there).
_FFN_DIM = 2048


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
class _ConfigMixin:
    """Checks, ``to_dict`` and ``from_dict`` shared by the two frozen configs."""

    #: Fields ``embed_dim`` must be a multiple of (attention heads).
    _head_fields: ClassVar[tuple[str, ...]] = ("pooling_head",)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "dropout":
                if not 0.0 <= value < 1.0:
                    raise InvalidParameterError(f"dropout must be in [0, 1), got {value!r}.")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"{field.name} must be an integer >= 1, got {value!r}.")
        if self.embed_dim % 2 or any(self.embed_dim % getattr(self, f) for f in self._head_fields):
            raise InvalidParameterError(f"embed_dim={self.embed_dim} must be even and a multiple "
                                        f"of {' and '.join(self._head_fields)}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (the reference's ``model_params``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Config from :meth:`to_dict` output or a reference ``config.json``'s ``model_params``.

        Raises
        ------
        InvalidParameterError
            Unknown fields (the message lists the valid ones) or invalid values.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidParameterError(f"Unknown {cls.__name__} field(s) {unknown}. Valid fields "
                                        f"are: {', '.join(known)}.")
        return cls(**dict(data))


@dataclass(frozen=True)
class ReferenceStagingConfig(_ConfigMixin):
    """Shape of :class:`ReferenceStagingNet`; the defaults are the released staging model's.

    Parameters
    ----------
    embed_dim : int, default=128
        Token embedding size ``D``.
    num_heads : int, default=4
        Attention heads of the temporal transformer.
    num_layers : int, default=1
        Transformer layers, and LSTM layers.
    num_classes : int, default=5
        Stages per token (W, N1, N2, N3, REM; no other value is allowed).
    pooling_head : int, default=4
        Attention heads of the modality pooling.
    dropout : float, default=0.3
        Dropout while training.
    max_seq_length : int, default=8196
        Longest night in tokens (11.4 h); longer nights are cut.
    """

    _head_fields: ClassVar[tuple[str, ...]] = ("pooling_head", "num_heads")

    embed_dim: int = 128
    num_heads: int = 4
    num_layers: int = 1
    num_classes: int = 5
    pooling_head: int = 4
    dropout: float = 0.3
    max_seq_length: int = 8196

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes != len(STAGE_NAMES):
            raise InvalidParameterError(f"num_classes must be {len(STAGE_NAMES)} (the stages "
                                        f"{', '.join(STAGE_NAMES)}), got {self.num_classes}.")


@dataclass(frozen=True)
class ReferenceDiagnosisConfig(_ConfigMixin):
    """Shape of :class:`ReferenceDiagnosisNet`; the defaults are the released disease model's.

    Parameters
    ----------
    embed_dim : int, default=128
        Token embedding size ``D``.
    num_heads : int, default=8
        Unused by the network; kept because the reference's constructor and config take it.
    num_layers : int, default=2
        LSTM layers.
    num_classes : int, default=1065
        Phenotypes (outputs).
    pooling_head : int, default=8
        Attention heads of the modality pooling.
    dropout : float, default=0.3
        Dropout on the demographics embedding while training.
    max_seq_length : int, default=6480
        Longest night in tokens (9 h); longer nights are cut.
    """

    embed_dim: int = 128
    num_heads: int = 8
    num_layers: int = 2
    num_classes: int = 1065
    pooling_head: int = 8
    dropout: float = 0.3
    max_seq_length: int = 6480


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def _bilstm(config, *, dropout: float) -> nn.LSTM:
    return nn.LSTM(config.embed_dim, config.embed_dim // 2, num_layers=config.num_layers,
                   batch_first=True, dropout=dropout, bidirectional=True)


def _check_state(net: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    mismatch = state_mismatch(net.state_dict(), state)
    if mismatch:
        raise StoreError(f"{source}: the weights do not fit {type(net).__name__} with config "
                         f"{net.config.to_dict()}: keys {mismatch}. Pass the weights saved for "
                         "this model, with the config it was trained with.")


class ReferenceNet(nn.Module):
    """What the two reference nets share: the modality pooling, masks, saving and the key map."""

    head_name: ClassVar[str]
    config_class: ClassVar[type]
    #: Reference keys of modules the reference builds but never uses.
    unused_reference_keys: ClassVar[tuple[str, ...]] = ("positional_encoding.pe",)

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise InvalidParameterError(f"config must be a {self.config_class.__name__}, got "
                                        f"{type(config).__name__}.")
        self.config = config
        self.spatial_pooling = SetPool(config.embed_dim, config.pooling_head, _FFN_DIM,
                                       config.dropout)

    def _pool(self, tokens: Tensor, present: Tensor,
              lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """Zero the masked values, pool the modalities: ``([B, S, D], padding [B, S])``."""
        if tokens.ndim != 4 or tokens.shape[-1] != self.config.embed_dim:
            raise InvalidParameterError(f"tokens must be [batch, modalities, tokens, "
                                        f"{self.config.embed_dim}], got {tuple(tokens.shape)}.")
        b, m, s, d = tokens.shape
        present = present.to(device=tokens.device, dtype=torch.bool)
        if tuple(present.shape) != (b, m):
            raise InvalidParameterError(f"present must be [{b}, {m}], got {tuple(present.shape)}.")
        if lengths is None:
            lengths = torch.full((b,), s)
        padding = torch.arange(s, device=tokens.device) >= lengths.to(tokens.device)[:, None]
        valid = present[:, :, None] & ~padding[:, None, :]
        tokens = tokens.masked_fill(~valid.unsqueeze(-1), 0.0)
        rows = present.repeat_interleave(s, dim=0)  # one row per (night, token)
        pooled = self.spatial_pooling(tokens.transpose(1, 2).reshape(b * s, m, d), rows)
        return pooled.view(b, s, d), padding

    # ---- saving --------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {}

    def get_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Weights (contiguous CPU tensors) and a JSON-able record (``head``, ``version``,
        ``config`` and the output names), for :func:`sleepfm.artifacts.save_heads`."""
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        meta = {"head": self.head_name, "version": _STATE_VERSION,
                "config": self.config.to_dict(), **self._meta()}
        return tensors, meta

    @classmethod
    def _from_meta(cls, config, meta: Mapping[str, Any]) -> ReferenceNet:
        return cls(config)

    @classmethod
    def from_state(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> ReferenceNet:
        """Rebuild a net from :meth:`get_state` output, in eval mode.

        Raises
        ------
        StoreError
            Another head, another state version, or weights that do not fit the config.
        """
        if meta.get("head") != cls.head_name or meta.get("version") != _STATE_VERSION:
            raise StoreError(f"the state is for head {meta.get('head')!r} version "
                             f"{meta.get('version')!r}, not {cls.head_name!r} version "
                             f"{_STATE_VERSION}; save it again with this sleepfm.")
        net = cls._from_meta(cls.config_class.from_dict(meta["config"]), meta)
        _check_state(net, tensors, f"head {cls.head_name!r}")
        net.load_state_dict(tensors)
        return net.eval()

    # ---- the reference's files -----------------------------------------------------------
    def reference_state_dict(self) -> dict[str, Tensor]:
        """The weights under the reference's keys, as its ``torch.save(model.state_dict())``
        writes them (unused modules included; without DataParallel's ``module.`` prefix)."""
        state = dict(self.state_dict())
        d, n = self.config.embed_dim, self.config.max_seq_length
        unused = {"positional_encoding.pe": sinusoidal_positions(n, d)[None],
                  "layer_norm.weight": torch.ones(d), "layer_norm.bias": torch.zeros(d)}
        state.update({k: unused[k] for k in self.unused_reference_keys})
        return state

    @classmethod
    def from_reference_state_dict(cls, state_dict: Mapping[str, Tensor], config=None, *,
                                  source: str = "reference state dict", **options) -> ReferenceNet:
        """A net holding the weights of a reference state dict, in eval mode.

        Parameters
        ----------
        state_dict : dict of str to Tensor
            As the reference saves it (``best.pth``; a ``module.`` prefix is removed).
        config : config of the net, optional
            Default: the released model's; else from the reference's ``config.json``:
            ``ReferenceStagingConfig.from_dict(config["model_params"])``.
        source : str, default="reference state dict"
            What to call it in messages (e.g. the file).
        **options
            Further constructor arguments (``phenotypes`` of :class:`ReferenceDiagnosisNet`).

        Raises
        ------
        StoreError
            As :func:`checkpoint_filter_fn`.
        """
        net = cls(config or cls.config_class(), **options)
        net.load_state_dict(checkpoint_filter_fn(state_dict, net, source=source))
        return net.eval()


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], net: ReferenceNet, *,
                         source: str = "reference state dict") -> dict[str, Tensor]:
    """Map a reference state dict onto ``net``'s names, failing loudly.

    A ``module.`` prefix (``nn.DataParallel``) is removed and the reference's unused tensors
    (its position table, recomputed here, and the disease model's unused layer norm) are dropped.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        Tensors in the reference's names.
    net : ReferenceStagingNet or ReferenceDiagnosisNet
        The net they are for (its config decides the keys and shapes expected).
    source : str, default="reference state dict"
        What to call the state dict in messages.

    Returns
    -------
    dict of str to Tensor
        A state dict ``net.load_state_dict`` takes with ``strict=True``.

    Raises
    ------
    StoreError
        Keys missing, unknown or of another shape; the message lists some of each.
    """
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    state = {k: v for k, v in state.items() if k not in net.unused_reference_keys}
    _check_state(net, state, source)
    return state


# --------------------------------------------------------------------------------------------
# the two nets
# --------------------------------------------------------------------------------------------
class ReferenceStagingNet(ReferenceNet):
    """SleepFM's released staging head: five stage logits per 5 s token.

    Parameters
    ----------
    config : ReferenceStagingConfig, optional
        Default: the released model's.

    Notes
    -----
    ``forward(tokens [B, M, S, D], present [B, M], lengths [B] = None) -> [B, S, 5]``: modality
    pooling, ``LayerNorm(x + positions)``, pre-norm transformer (padding masked), bidirectional
    LSTM over every position (padding included, as in the reference), linear layer.
    """

    head_name = "sleepfm_reference_staging"
    config_class = ReferenceStagingConfig
    classes: tuple[str, ...] = STAGE_NAMES

    def __init__(self, config: ReferenceStagingConfig | None = None):
        config = config or ReferenceStagingConfig()
        super().__init__(config)
        d = config.embed_dim
        self.layer_norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, dropout=config.dropout,
                                           batch_first=True, norm_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, config.num_layers,
                                                         enable_nested_tensor=False)
        self.lstm = _bilstm(config, dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.fc = nn.Linear(d, config.num_classes)

    def forward(self, tokens: Tensor, present: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Stage logits ``[B, S, 5]`` (W, N1, N2, N3, REM) per token."""
        x, padding = self._pool(tokens, present, lengths)
        x = self.layer_norm(x + sinusoidal_positions(x.shape[1], x.shape[2]).to(x))
        x = self.transformer_encoder(x, src_key_padding_mask=padding)
        return self.fc(self.lstm(x)[0])

    def _meta(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    def predict_proba(self, tokens) -> np.ndarray:
        """Stage probabilities ``[n_epochs, 5]`` of one night's tokens
        (:func:`stage_probabilities`; ``tokens`` ``{modality: [n_tokens, D]}``)."""
        return stage_probabilities(self, tokens)


class ReferenceDiagnosisNet(ReferenceNet):
    """SleepFM's released disease head: one Cox log-hazard per phenotype from a night and
    age and sex.

    Parameters
    ----------
    config : ReferenceDiagnosisConfig, optional
        Default: the released model's.
    phenotypes : dict of str to str, optional
        Output id → readable name, in output order (the released ones:
        :func:`sleepfm.io.outcomes.read_label_mapping`). Default: ids ``"0"``, ``"1"``…

    Notes
    -----
    ``forward(tokens [B, M, S, D], present [B, M], demographics [B, 2], lengths [B] = None) ->
    [B, K]``: modality pooling, bidirectional LSTM over the valid tokens, their mean, joined with
    ``ReLU(Linear(demographics))``, linear layer. ``demographics`` is ``[age, sex]`` encoded as the
    reference's demographics table (``Study ID, age, gender``) holds them: both normalised before
    training; the released model's scaling is not published. Higher output = higher hazard.
    """

    head_name = "sleepfm_reference_diagnosis"
    config_class = ReferenceDiagnosisConfig
    unused_reference_keys = ("positional_encoding.pe", "layer_norm.weight", "layer_norm.bias")

    def __init__(self, config: ReferenceDiagnosisConfig | None = None, *,
                 phenotypes: Mapping[str, str] | None = None):
        config = config or ReferenceDiagnosisConfig()
        super().__init__(config)
        if phenotypes is None:
            phenotypes = {str(i): str(i) for i in range(config.num_classes)}
        if len(phenotypes) != config.num_classes:
            raise InvalidParameterError(f"{len(phenotypes)} phenotype names were given for "
                                        f"{config.num_classes} outputs; pass one per output.")
        self.phenotypes = dict(phenotypes)
        d, demo = config.embed_dim, config.embed_dim // 4
        self.lstm = _bilstm(config, dropout=0.0)
        self.demo_embedding = nn.Sequential(nn.Linear(2, demo), nn.ReLU(),
                                            nn.Dropout(config.dropout))
        self.disease_heads = nn.Linear(d + demo, config.num_classes)

    def forward(self, tokens: Tensor, present: Tensor, demographics: Tensor,
                lengths: Tensor | None = None) -> Tensor:
        """Log-hazards ``[B, K]``."""
        x, padding = self._pool(tokens, present, lengths)
        n = (~padding).sum(dim=1).cpu()
        packed = pack_padded_sequence(x, n, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        night = out.sum(dim=1) / n.to(out)[:, None]
        return self.disease_heads(torch.cat([night, self.demo_embedding(demographics)], dim=1))

    def _meta(self) -> dict[str, Any]:
        return {"phenotype_ids": list(self.phenotypes),
                "phenotype_names": list(self.phenotypes.values())}

    @classmethod
    def _from_meta(cls, config, meta: Mapping[str, Any]) -> ReferenceDiagnosisNet:
        return cls(config, phenotypes=dict(zip(meta["phenotype_ids"], meta["phenotype_names"])))


#: The reference nets by head name (for :func:`sleepfm.models.heads.head_from_state`).
REFERENCE_NETS: dict[str, type[ReferenceNet]] = {
    net.head_name: net for net in (ReferenceStagingNet, ReferenceDiagnosisNet)}


# --------------------------------------------------------------------------------------------
# one night, arrays in and out
# --------------------------------------------------------------------------------------------
@contextmanager
def _evaluating(net: nn.Module):
    training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        net.train(training)


def _night(net: ReferenceNet, expected: type, tokens, present) -> tuple[Tensor, Tensor]:
    """One night as ``([1, M, S, D], present [1, M])`` on the net's device, cut to its
    ``max_seq_length``."""
    if not isinstance(net, expected):
        raise InvalidParameterError(f"net must be a {expected.__name__}, got {type(net).__name__}.")
    if isinstance(tokens, Mapping):
        unknown = sorted(set(tokens) - set(MODALITY_ORDER))
        if unknown or not tokens:
            raise InvalidParameterError(f"tokens has modalities {unknown or 'none'}; use "
                                        f"{', '.join(MODALITY_ORDER)}.")
        if present is not None:
            raise InvalidParameterError("with tokens given per modality, the modalities present "
                                        "are its keys; leave present=None.")
        lengths = {np.shape(v)[0] if np.ndim(v) == 2 else None for v in tokens.values()}
        if len(lengths) != 1 or None in lengths:
            raise InvalidParameterError(f"each modality's tokens must be [n_tokens, D] with the "
                                        f"same n_tokens, got shapes "
                                        f"{ {k: np.shape(v) for k, v in tokens.items()} }.")
        s = lengths.pop()
        d = net.config.embed_dim
        array = np.stack([np.asarray(tokens[m], dtype=np.float32) if m in tokens else
                          np.zeros((s, d), np.float32) for m in MODALITY_ORDER])
        present = np.array([m in tokens for m in MODALITY_ORDER])
    else:
        array = np.asarray(tokens, dtype=np.float32)
        if array.ndim != 3:
            raise InvalidParameterError(f"tokens must be [modalities, n_tokens, D] or a dict of "
                                        f"[n_tokens, D] arrays, got shape {array.shape}.")
        present = np.ones(len(array), bool) if present is None else np.asarray(present, bool)
        if present.shape != array.shape[:1]:
            raise InvalidParameterError(f"present must hold one flag per modality slot "
                                        f"({array.shape[0]}), got shape {present.shape}.")
    if not np.any(present) or array.shape[1] == 0:
        raise InvalidParameterError("the night has no tokens or no modality present.")
    limit = net.config.max_seq_length
    if array.shape[1] > limit:
        hours = array.shape[1] * TOKEN_S / 3600
        warnings.warn(f"the night has {array.shape[1]} tokens ({hours:.1f} h); the reference "
                      f"model reads the first {limit} ({limit * TOKEN_S / 3600:.1f} h) and so "
                      "does this one: the rest is ignored.", DataWarning, stacklevel=3)
        array = array[:, :limit]
    device = next(net.parameters()).device
    return (torch.from_numpy(np.ascontiguousarray(array))[None].to(device),
            torch.from_numpy(present)[None].to(device))


def token_stage_probabilities(net: ReferenceStagingNet, tokens, present=None) -> np.ndarray:
    """Stage probabilities of every 5 s token of a night, as the reference scores them.

    Parameters
    ----------
    net : ReferenceStagingNet
        Run in eval mode (its mode is restored afterwards).
    tokens : dict of str to ndarray, or ndarray
        ``{modality: [n_tokens, D]}`` (modalities of :data:`MODALITY_ORDER`; missing ones are
        absent) or ``[M, n_tokens, D]`` in :data:`MODALITY_ORDER`.
    present : array-like of bool, optional
        With an array: which of its ``M`` slots were recorded (default all).

    Returns
    -------
    ndarray, shape (n_tokens, 5)
        Softmax over W, N1, N2, N3, REM; at most ``max_seq_length`` rows.

    Raises
    ------
    InvalidParameterError
        Another net, malformed tokens, or no modality present.

    Warns
    -----
    DataWarning
        The night is longer than ``max_seq_length`` tokens and was cut.
    """
    x, present = _night(net, ReferenceStagingNet, tokens, present)
    with _evaluating(net):
        return torch.softmax(net(x, present)[0].float(), dim=-1).cpu().numpy()


def epoch_probabilities(token_probabilities: np.ndarray, *,
                        tokens_per_epoch: int = TOKENS_PER_EPOCH) -> np.ndarray:
    """Mean of the token probabilities of every whole 30 s epoch ``[n_tokens // 6, C]``; a
    trailing part-epoch is dropped."""
    probs = np.asarray(token_probabilities)
    n = len(probs) // tokens_per_epoch
    return probs[:n * tokens_per_epoch].reshape(n, tokens_per_epoch, -1).mean(axis=1)


def stage_probabilities(net: ReferenceStagingNet, tokens, present=None) -> np.ndarray:
    """Stage probabilities per 30 s epoch of a night: the mean of its six tokens' probabilities.

    The reference scores each 5 s token on its own (its labels repeat an epoch's stage six
    times); this averages them into epochs aligned to the recording start. Parameters, errors and
    warnings as :func:`token_stage_probabilities`.

    Returns
    -------
    ndarray, shape (n_epochs, 5)
        Columns W, N1, N2, N3, REM (:data:`sleepfm.vocab.STAGE_NAMES`); ``n_tokens // 6`` rows.

    Examples
    --------
    >>> net = ReferenceStagingNet()
    >>> stage_probabilities(net, {"BAS": bas, "ECG": ecg}).argmax(axis=1)  # [n_tokens, 128] each
    """
    return epoch_probabilities(token_stage_probabilities(net, tokens, present))


def phenotype_risks(net: ReferenceDiagnosisNet, tokens, present=None, *, age: float,
                    sex: float) -> np.ndarray:
    """Cox log-hazards of every phenotype from a night, age and sex.

    Parameters
    ----------
    net : ReferenceDiagnosisNet
        Run in eval mode (its mode is restored afterwards).
    tokens, present
        As :func:`token_stage_probabilities`.
    age, sex : float
        As the model was trained on them (the reference's ``age`` and ``gender`` columns, both
        normalised; see :class:`ReferenceDiagnosisNet`).

    Returns
    -------
    ndarray, shape (num_classes,)
        Log-hazards in the order of ``net.phenotypes`` (higher = higher risk).

    Raises
    ------
    InvalidParameterError
        Another net, malformed tokens, no modality present, or a non-finite age or sex.

    Warns
    -----
    DataWarning
        The night is longer than ``max_seq_length`` tokens and was cut.
    """
    demographics = np.array([[age, sex]], dtype=np.float32)
    if not np.isfinite(demographics).all():
        raise InvalidParameterError(f"age and sex must be finite numbers, got {age!r}, {sex!r}.")
    x, present = _night(net, ReferenceDiagnosisNet, tokens, present)
    with _evaluating(net):
        return net(x, present, torch.from_numpy(demographics).to(x.device))[0].float().cpu().numpy()

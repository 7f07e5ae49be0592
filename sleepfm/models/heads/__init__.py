"""Heads on 30 s epoch embeddings: staging, event detection, AHI, and the end-to-end staging net.

- :class:`LinearProbe` and :class:`MLPHead` classify each epoch on its own (``MLPHead`` is also
  the distilled student: ``fit`` accepts soft targets ``[n_epochs, n_classes]``).
- :class:`StagingHead` is SleepFM's 2-layer LSTM over the sequence of a night's epochs
  (:class:`LSTMStagingNet`); it trains on random crops of nights and predicts whole nights.
- :class:`EventHead` detects several binary events per epoch (apnea/hypopnea, arousal,
  desaturation); :class:`AHIRegressor` turns its apnea/hypopnea probabilities into an AHI.
- :class:`WindowStagingNet` is the encoder itself with an LSTM on top, trained end to end.
- :class:`CoxHead` predicts future disease: log-hazards of many phenotypes at once from a night's
  embedding or its sequence of window embeddings (Cox partial likelihood, full-cohort risk sets).
- :class:`ReferenceStagingNet` and :class:`ReferenceDiagnosisNet` are SleepFM's released staging
  and disease heads on 5 s token embeddings, reproduced exactly (:mod:`.reference`).

Weights and options are saved with ``get_state()`` (tensors for safetensors + a JSON-able dict)
and restored with :func:`head_from_state`; nothing is pickled.
"""
from torch import nn

from .ahi import AHIRegressor, expected_event_rate
from .base import (HEADS, STATE_VERSION, BaseHead, balanced_class_weights, create_head, list_heads,
                   register_head)
from .cox import CoxHead
from .events import EventHead
from .nets import EpochMLP, LSTMStagingNet, WindowStagingNet
from .reference import REFERENCE_NETS, ReferenceDiagnosisNet, ReferenceStagingNet
from .staging import LinearProbe, MLPHead, StagingHead


def head_from_state(tensors: dict, meta: dict, *, encoder: nn.Module | None = None):
    """Rebuild a fitted head from its ``get_state()`` output, dispatching on its saved name.

    ``encoder`` is the (fine-tuned) encoder a :class:`WindowStagingNet` is built around.
    """
    name = meta.get("head")
    if name == WindowStagingNet.head_name:
        return WindowStagingNet.from_state(tensors, meta, encoder)
    if name == AHIRegressor.head_name:
        return AHIRegressor.from_state(tensors, meta)
    if name == CoxHead.head_name:
        return CoxHead.from_state(tensors, meta)
    if name in REFERENCE_NETS:
        return REFERENCE_NETS[name].from_state(tensors, meta)
    return HEADS[name].from_state(tensors, meta)


__all__ = [
    "AHIRegressor",
    "BaseHead",
    "CoxHead",
    "EpochMLP",
    "EventHead",
    "HEADS",
    "LSTMStagingNet",
    "LinearProbe",
    "MLPHead",
    "ReferenceDiagnosisNet",
    "ReferenceStagingNet",
    "STATE_VERSION",
    "StagingHead",
    "WindowStagingNet",
    "balanced_class_weights",
    "create_head",
    "expected_event_rate",
    "head_from_state",
    "list_heads",
    "register_head",
]
